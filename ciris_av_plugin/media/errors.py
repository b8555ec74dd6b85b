"""Typed errors of the media layer."""

from ..errors import MediaError


class HeaderError(MediaError):
    """A forwarding or fragment header is malformed, truncated or of an unknown version."""


class FragmentError(MediaError):
    """A fragment's offsets or lengths are inconsistent or out of range."""


class ReassemblyError(MediaError):
    """Reassembly refused a fragment (limits, overlap conflicts)."""


class SFrameError(MediaError):
    """SFrame header decoding, unknown key or authentication failure."""


class ReplayError(SFrameError):
    """A frame counter was already seen (or is too old) for its KID."""


class UnknownKeyError(SFrameError):
    """The KID names no key we hold (yet): the caller may hold the frame briefly."""
