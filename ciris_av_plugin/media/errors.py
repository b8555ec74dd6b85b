"""Typed errors of the media layer (the wire-format ones, shared with the relay, are ``protocol/errors.py``)."""

from ..errors import MediaError
from ..protocol.errors import FragmentError, HeaderError

__all__ = [
    "HeaderError",
    "FragmentError",
    "ReassemblyError",
    "SFrameError",
    "ReplayError",
    "UnknownKeyError",
    "KidError",
    "DecryptError",
    "ExpiredKeyError",
    "KeyRingError",
    "SealError",
    "SFrameHeaderError",
]


class ReassemblyError(MediaError):
    """Reassembly refused a fragment (limits, overlap conflicts)."""


class SFrameError(MediaError):
    """SFrame header decoding, unknown key or authentication failure."""


class ReplayError(SFrameError):
    """A frame counter was already seen (or is too old) for its KID."""


class UnknownKeyError(SFrameError):
    """The KID names no key we hold (yet): the caller may hold the frame briefly."""


class KidError(MediaError):
    """A KID cannot be built or read with the given layout (bad leaf count, index or range)."""


class DecryptError(SFrameError):
    """The AEAD rejected a ciphertext: wrong key, tampered header, metadata or payload."""


class ExpiredKeyError(SFrameError):
    """The KID belongs to an epoch whose keys were wiped (or never held and in the past).

    Unlike :class:`UnknownKeyError` there is nothing to wait for: the frame is dropped.
    """


class KeyRingError(MediaError):
    """An epoch install that would break the key ring's rules (epoch going backwards, key change)."""


class SealError(MediaError):
    """The publisher cannot seal this frame (no epoch yet, frame too large, counter space exhausted)."""


class SFrameHeaderError(SFrameError):
    """An SFrame header (RFC 9605 §4.3) is truncated or not minimally encoded."""
