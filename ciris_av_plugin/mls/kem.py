"""HPKE KEMs (RFC 9180 §4, §7.1) as the :class:`KEM` protocol the cipher-suite table names:
DHKEM over X25519, X448 and the NIST curves, with DeriveKeyPair as RFC 9180 §7.1.3 specifies.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Protocol

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import CryptoError
from .kdf import hkdf_expand, hkdf_extract


class KEM(Protocol):
    """What a cipher suite needs from its KEM; one class per KEM implements it."""

    kem_id: int
    hpke_kem: object | None
    """cryptography's HPKE enum for this KEM, or None to run HPKE in Python (:class:`SoftHPKE`)."""
    n_enc: int

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]: ...
    def generate(self) -> tuple[bytes, bytes]: ...
    def private_key(self, priv: bytes) -> object: ...
    def public_key_obj(self, pub: bytes) -> object: ...
    def public_key(self, priv: bytes) -> bytes: ...
    def encap(self, pub: bytes) -> tuple[bytes, bytes]: ...
    def decap(self, enc: bytes, priv: bytes) -> bytes: ...


class _DHKEM:
    """RFC 9180 §4.1 DHKEM over a subclass's Diffie-Hellman; LabeledExtract/LabeledExpand use the
    KEM's own suite_id = "KEM" || I2OSP(kem_id, 2) and hash."""

    kem_id: int
    hash_name: str
    n_secret: int

    def generate(self) -> tuple[bytes, bytes]:  # pragma: no cover - overridden
        raise NotImplementedError

    def public_key(self, priv: bytes) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def _exchange(self, priv: bytes, pub: bytes) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def _dh(self, priv: bytes, pub: bytes) -> bytes:
        """DH(sk, pk); a failed exchange or an all-zero result (small-order point) is refused."""
        try:
            out = self._exchange(priv, pub)
        except ValueError as exc:
            raise CryptoError("Diffie-Hellman failed") from exc
        if not any(out):
            raise CryptoError("Diffie-Hellman output is all zero")
        return out

    def _extract_and_expand(self, dh: bytes, kem_context: bytes) -> bytes:
        eae_prk = self._labeled_extract(b"", b"eae_prk", dh)
        return self._labeled_expand(eae_prk, b"shared_secret", kem_context, self.n_secret)

    def encap(self, pub: bytes) -> tuple[bytes, bytes]:
        """RFC 9180 §4.1 Encap: (shared_secret, enc) with a fresh ephemeral key."""
        sk_e, pk_e = self.generate()
        return self._extract_and_expand(self._dh(sk_e, pub), pk_e + pub), pk_e

    def decap(self, enc: bytes, priv: bytes) -> bytes:
        """RFC 9180 §4.1 Decap."""
        return self._extract_and_expand(self._dh(priv, enc), enc + self.public_key(priv))

    def _suite_id(self) -> bytes:
        return b"KEM" + struct.pack(">H", self.kem_id)

    def _labeled_extract(self, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        # RFC 9180 §4: LabeledExtract(salt, label, ikm) = Extract(salt, "HPKE-v1" || suite_id || label || ikm)
        return hkdf_extract(self.hash_name, salt, b"HPKE-v1" + self._suite_id() + label + ikm)

    def _labeled_expand(self, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        labeled_info = struct.pack(">H", length) + b"HPKE-v1" + self._suite_id() + label + info
        return hkdf_expand(self.hash_name, prk, labeled_info, length)


class _DHKEMMontgomery(_DHKEM):
    """DHKEM over X25519 or X448 (RFC 9180 §4.1 / §7.1): raw key encodings of one fixed size; a
    subclass names the curve's ``cryptography`` key classes and sizes."""

    curve_name: str
    private_cls: type
    public_cls: type
    n_sk: int
    n_pk: int
    n_enc: int

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """RFC 9180 §7.1.3 DeriveKeyPair: no rejection sampling (every Nsk bytes is a key)."""
        dkp_prk = self._labeled_extract(b"", b"dkp_prk", ikm)
        sk = self._labeled_expand(dkp_prk, b"sk", b"", self.n_sk)
        return sk, self.public_key(sk)

    def generate(self) -> tuple[bytes, bytes]:
        key = self.private_cls.generate()
        return key.private_bytes_raw(), key.public_key().public_bytes_raw()

    def private_key(self, priv: bytes):
        if len(priv) != self.n_sk:
            raise CryptoError(f"{self.curve_name} private key must be {self.n_sk} bytes, got {len(priv)}")
        return self.private_cls.from_private_bytes(priv)

    def public_key_obj(self, pub: bytes):
        if len(pub) != self.n_pk:
            raise CryptoError(f"{self.curve_name} public key must be {self.n_pk} bytes, got {len(pub)}")
        return self.public_cls.from_public_bytes(pub)

    def public_key(self, priv: bytes) -> bytes:
        return self.private_key(priv).public_key().public_bytes_raw()

    def _exchange(self, priv: bytes, pub: bytes) -> bytes:
        return self.private_key(priv).exchange(self.public_key_obj(pub))


class DHKEMX25519(_DHKEMMontgomery):
    """DHKEM(X25519, HKDF-SHA256), RFC 9180 §4.1 / §7.1. Keys are 32-byte raw encodings."""

    kem_id = 0x0020
    hpke_kem = hpke.KEM.X25519
    hash_name = "sha256"  # the KEM's own KDF, independent of the cipher suite's
    n_secret = 32
    n_sk = 32
    n_pk = 32
    n_enc = 32
    curve_name = "X25519"
    private_cls = x25519.X25519PrivateKey
    public_cls = x25519.X25519PublicKey


class DHKEMX448(_DHKEMMontgomery):
    """DHKEM(X448, HKDF-SHA512), RFC 9180 §4.1 / §7.1.3; 56-byte raw keys. cryptography's HPKE has
    no X448 KEM, so suites using it run HPKE through :class:`SoftHPKE`."""

    kem_id = 0x0021
    hpke_kem = None
    hash_name = "sha512"
    n_secret = 64
    n_sk = 56
    n_pk = 56
    n_enc = 56
    curve_name = "X448"
    private_cls = x448.X448PrivateKey
    public_cls = x448.X448PublicKey


DKP_MAX_CANDIDATES = 256
"""RFC 9180 §7.1.3: DeriveKeyPair for the NIST curves retries at most this many candidates."""


class DHKEMNist(_DHKEM):
    """DHKEM(P-256/P-384/P-521, HKDF-SHA2), RFC 9180 §4.1. Private keys are big-endian scalars of
    Nsk bytes, public keys (and enc) uncompressed SEC1 points."""

    def __init__(
        self, kem_id: int, curve: ec.EllipticCurve, hash_name: str, n_sk: int, bitmask: int, hpke_kem: object
    ) -> None:
        self.kem_id = kem_id
        self.curve = curve
        self.hash_name = hash_name
        self.n_sk = n_sk
        self.n_secret = hashlib.new(hash_name).digest_size
        self.n_pk = 1 + 2 * n_sk
        self.n_enc = self.n_pk
        self.bitmask = bitmask
        self.hpke_kem = hpke_kem
        self.order = CURVE_ORDERS[curve.name]

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """RFC 9180 §7.1.3 DeriveKeyPair with rejection sampling of the scalar."""
        dkp_prk = self._labeled_extract(b"", b"dkp_prk", ikm)
        for counter in range(DKP_MAX_CANDIDATES):
            cand = bytearray(self._labeled_expand(dkp_prk, b"candidate", bytes([counter]), self.n_sk))
            cand[0] &= self.bitmask
            sk = int.from_bytes(cand, "big")
            if 0 < sk < self.order:
                priv = bytes(cand)
                return priv, self.public_key(priv)
        raise CryptoError("DeriveKeyPair found no valid scalar")  # probability ~2^-(8*256)

    def generate(self) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(self.curve)
        priv = key.private_numbers().private_value.to_bytes(self.n_sk, "big")
        return priv, ec_point(key.public_key())

    def private_key(self, priv: bytes) -> ec.EllipticCurvePrivateKey:
        # The mlswg passive-client P-521 vectors carry a 65-byte encryption_priv.
        return ec_private_key(self.curve, self.order, self.n_sk, priv)

    def public_key_obj(self, pub: bytes) -> ec.EllipticCurvePublicKey:
        if len(pub) != self.n_pk:
            raise CryptoError(f"{self.curve.name} public key must be {self.n_pk} bytes, got {len(pub)}")
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(self.curve, pub)
        except ValueError as exc:
            raise CryptoError("invalid curve point") from exc

    def public_key(self, priv: bytes) -> bytes:
        return ec_point(self.private_key(priv).public_key())

    def _exchange(self, priv: bytes, pub: bytes) -> bytes:
        return self.private_key(priv).exchange(ec.ECDH(), self.public_key_obj(pub))


CURVE_ORDERS = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
    ),
    "secp521r1": int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
        "A51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}


def ec_private_key(curve: ec.EllipticCurve, order: int, n_priv: int, priv: bytes) -> ec.EllipticCurvePrivateKey:
    """A NIST-curve private key from a big-endian scalar of at most ``n_priv`` bytes. A shorter
    scalar is accepted: some implementations (and mlswg vectors, P-521) drop leading zero bytes;
    the integer is the same either way."""
    if not 0 < len(priv) <= n_priv:
        raise CryptoError(f"{curve.name} private key must be {n_priv} bytes, got {len(priv)}")
    value = int.from_bytes(priv, "big")
    if not 0 < value < order:
        raise CryptoError("private scalar out of range")
    return ec.derive_private_key(value, curve)


def ec_point(key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed SEC1 point of a NIST-curve public key."""
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


__all__ = [
    "KEM",
    "DHKEMX25519",
    "DHKEMX448",
    "DKP_MAX_CANDIDATES",
    "DHKEMNist",
    "CURVE_ORDERS",
    "ec_private_key",
    "ec_point",
]
