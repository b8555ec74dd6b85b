"""Error classes of the MLS core shared across modules (all under :class:`MLSError`).

Decoding failures are :class:`ciris_av_plugin.mls.codec.DecodeError`; the classes here cover the
cryptographic layer and protocol checks that are not a matter of syntax.
"""

from __future__ import annotations

from ..errors import MLSError

__all__ = ["MLSError", "UnsupportedSuite", "CryptoError", "ProtocolError", "SecretTreeError"]


class UnsupportedSuite(MLSError):
    """A cipher suite id this build has no primitives for (RFC 9420 §17.1)."""


class CryptoError(MLSError):
    """A cryptographic operation failed: AEAD/HPKE decryption, bad key encoding, signature check."""


class ProtocolError(MLSError):
    """Well-formed input that breaks an RFC 9420 rule (wrong epoch, bad tag, bad sender...)."""


class SecretTreeError(MLSError):
    """A secret-tree key was requested that is out of range, already used or beyond the window (§9)."""
