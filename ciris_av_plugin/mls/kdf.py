"""HKDF (RFC 5869) over ``hmac``: the one extract/expand every MLS and HPKE derivation here uses.

The stdlib ``hmac`` on small inputs: avoiding object setup matters for the secret-tree ratchets.
"""

from __future__ import annotations

import hashlib
import hmac

from .errors import CryptoError

_DIGEST_SIZES: dict[str, int] = {}

HKDF_MAX_BLOCKS = 255
"""HKDF-Expand can produce at most 255 hash blocks (RFC 5869 §2.3); asking for more is a caller bug,
reported as CryptoError rather than a library ValueError."""


def digest_size(hash_name: str) -> int:
    """Output length of a named hash, cached: ``hashlib.new`` per ratchet step costs more than the HMAC."""
    size = _DIGEST_SIZES.get(hash_name)
    if size is None:
        size = _DIGEST_SIZES[hash_name] = hashlib.new(hash_name).digest_size
    return size


def hkdf_extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 Extract; an empty salt means a block of zeros of the hash length."""
    return hmac.digest(salt or bytes(digest_size(hash_name)), ikm, hash_name)


def hkdf_expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 Expand."""
    nh = digest_size(hash_name)
    if length < 0 or length > HKDF_MAX_BLOCKS * nh:
        raise CryptoError(f"HKDF-Expand length {length} out of range")
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), hash_name)
        out += block
        counter += 1
    return out[:length]


__all__ = [
    "HKDF_MAX_BLOCKS",
    "digest_size",
    "hkdf_extract",
    "hkdf_expand",
]
