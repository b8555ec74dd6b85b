"""Signature schemes of the MLS cipher suites (Ed25519, Ed448, ECDSA over the NIST curves), raw-byte keys.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519

from .errors import CryptoError
from .kem import CURVE_ORDERS, ec_point, ec_private_key


class SignatureScheme(Protocol):
    """What a cipher suite needs from its signature algorithm (raw-byte keys)."""

    def generate(self) -> tuple[bytes, bytes]: ...
    def public_key(self, priv: bytes) -> bytes: ...
    def sign(self, priv: bytes, message: bytes) -> bytes: ...
    def verify(self, pub: bytes, message: bytes, signature: bytes) -> bool: ...


class _EdDSAScheme:
    """EdDSA (RFC 8032) with raw private seed and public key; a subclass names the curve's
    ``cryptography`` key classes and sizes."""

    curve_name: str
    private_cls: type
    public_cls: type
    n_priv: int
    n_pub: int

    def generate(self) -> tuple[bytes, bytes]:
        key = self.private_cls.generate()
        return key.private_bytes_raw(), key.public_key().public_bytes_raw()

    def _priv(self, priv: bytes):
        if len(priv) != self.n_priv:
            raise CryptoError(f"{self.curve_name} private key must be {self.n_priv} bytes, got {len(priv)}")
        return self.private_cls.from_private_bytes(priv)

    def public_key(self, priv: bytes) -> bytes:
        return self._priv(priv).public_key().public_bytes_raw()

    def sign(self, priv: bytes, message: bytes) -> bytes:
        return self._priv(priv).sign(message)

    def verify(self, pub: bytes, message: bytes, signature: bytes) -> bool:
        if len(pub) != self.n_pub:
            return False
        try:
            self.public_cls.from_public_bytes(pub).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class Ed25519Scheme(_EdDSAScheme):
    """Ed25519 (RFC 8032); raw 32-byte private seed and public key, 64-byte signatures."""

    name = "ed25519"
    n_priv = 32
    n_pub = 32
    curve_name = "Ed25519"
    private_cls = ed25519.Ed25519PrivateKey
    public_cls = ed25519.Ed25519PublicKey


class Ed448Scheme(_EdDSAScheme):
    """Ed448 (RFC 8032, empty context); raw 57-byte keys, 114-byte signatures."""

    n_priv = 57
    n_pub = 57
    curve_name = "Ed448"
    private_cls = ed448.Ed448PrivateKey
    public_cls = ed448.Ed448PublicKey


class EcdsaScheme:
    """ECDSA over a NIST curve (§5.1.1): big-endian scalar private key, uncompressed point public
    key, DER-encoded signatures (the TLS 1.3 SignatureScheme encoding MLS inherits)."""

    def __init__(self, curve: ec.EllipticCurve, hash_alg: hashes.HashAlgorithm, n_priv: int) -> None:
        self.curve = curve
        self.hash_alg = hash_alg
        self.n_priv = n_priv
        self.n_pub = 1 + 2 * n_priv
        self.order = CURVE_ORDERS[curve.name]

    def generate(self) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(self.curve)
        return key.private_numbers().private_value.to_bytes(self.n_priv, "big"), ec_point(key.public_key())

    def _priv(self, priv: bytes) -> ec.EllipticCurvePrivateKey:
        return ec_private_key(self.curve, self.order, self.n_priv, priv)

    def public_key(self, priv: bytes) -> bytes:
        return ec_point(self._priv(priv).public_key())

    def sign(self, priv: bytes, message: bytes) -> bytes:
        return self._priv(priv).sign(message, ec.ECDSA(self.hash_alg))

    def verify(self, pub: bytes, message: bytes, signature: bytes) -> bool:
        if len(pub) != self.n_pub:
            return False
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(self.curve, pub)
            key.verify(signature, message, ec.ECDSA(self.hash_alg))
        except (InvalidSignature, ValueError):
            return False
        return True


__all__ = [
    "SignatureScheme",
    "Ed25519Scheme",
    "Ed448Scheme",
    "EcdsaScheme",
]
