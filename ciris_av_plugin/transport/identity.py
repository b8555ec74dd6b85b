"""Turning the identity store's raw key bytes into an ``RNS.Identity``.

``store/identity.py`` keeps identities as the 64 bytes RNS itself writes (X25519 private key ||
Ed25519 seed) without importing RNS; this is the one step that needs RNS, so it lives here.
"""

from __future__ import annotations

import RNS

from ..errors import TransportError

RNS_PRIVATE_KEY_LEN = RNS.Identity.KEYSIZE // 8
"""64 bytes: what ``RNS.Identity.get_private_key()`` returns."""


def rns_identity_from_private_key(private_key: bytes) -> RNS.Identity:
    """An ``RNS.Identity`` for stored key bytes; raises :class:`TransportError` if RNS rejects them."""
    if len(private_key) != RNS_PRIVATE_KEY_LEN:
        raise TransportError(f"RNS private key is {len(private_key)} bytes, expected {RNS_PRIVATE_KEY_LEN}")
    identity = RNS.Identity.from_bytes(private_key)
    if identity is None:
        raise TransportError("RNS refused the private key bytes")
    return identity
