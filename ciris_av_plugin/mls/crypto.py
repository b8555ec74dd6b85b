"""MLS cipher suites (RFC 9420 §5.1, §17.1) over ``cryptography``.

A :class:`CipherSuite` is built from a table of :class:`SuiteSpec` entries. Each entry names a KEM, a
KDF hash, an AEAD and a signature scheme; the KEM and the signature scheme are small classes, so adding
a suite (the CIRIS edge's X-Wing suite 0x004D, say) means a table entry plus, if new, a KEM class
(the :class:`KEM` protocol: ``derive_key_pair``, ``generate``, key decoding, ``encap``/``decap``, and
the ``cryptography`` HPKE enum when that library has the KEM) — nothing else here changes. All keys cross this API as raw bytes (RFC 9420 test-vector conventions): X25519 and Ed25519
raw encodings for suite 1; big-endian scalars and uncompressed points for the NIST-curve suites.

Implemented: all seven RFC 9420 suites. HPKE goes through ``cryptography``'s Rust HPKE where it
has the KEM and through :class:`SoftHPKE` (RFC 9180 in Python over the same primitives) for X448
(suites 4 and 6) and for the secret export that external init (§8.3) needs.

Every failure on bad input (wrong key length, failed AEAD or HPKE open) raises :class:`CryptoError`;
an unknown suite id raises :class:`UnsupportedSuite`.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.bindings._rust import openssl as _rust_openssl
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, x448, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .codec import Writer
from .errors import CryptoError, UnsupportedSuite

__all__ = [
    "CipherSuite",
    "SuiteSpec",
    "SUITES",
    "MLS_LABEL_PREFIX",
    "CryptoError",
    "UnsupportedSuite",
]

# RFC 9420 §5.1.2, §5.1.3, §8: every labelled derivation, signature and encryption prepends this.
MLS_LABEL_PREFIX = b"MLS 1.0 "

# RFC 9420 §5.2 reference labels (already complete: RefHash does not add the prefix).
KEY_PACKAGE_REF_LABEL = b"MLS 1.0 KeyPackage Reference"
PROPOSAL_REF_LABEL = b"MLS 1.0 Proposal Reference"

# HKDF-Expand can produce at most 255 hash blocks (RFC 5869 §2.3); asking for more is a caller bug
# we report as CryptoError rather than letting a library ValueError escape.
HKDF_MAX_BLOCKS = 255

# The private hpke helpers accept a non-empty AAD; cryptography's public Suite.encrypt does not.
_hpke_encrypt_with_aad = _rust_openssl.hpke._encrypt_with_aad
_hpke_decrypt_with_aad = _rust_openssl.hpke._decrypt_with_aad


# --------------------------------------------------------------------------------------------------
# HKDF over a named hash (stdlib hmac: small inputs, so avoiding object setup matters for the ratchets)


_DIGEST_SIZES: dict[str, int] = {}


def _digest_size(hash_name: str) -> int:
    """Output length of a named hash, cached: ``hashlib.new`` per ratchet step costs more than the HMAC."""
    size = _DIGEST_SIZES.get(hash_name)
    if size is None:
        size = _DIGEST_SIZES[hash_name] = hashlib.new(hash_name).digest_size
    return size


def _hkdf_extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 Extract; an empty salt means a block of zeros of the hash length."""
    return hmac.digest(salt or bytes(_digest_size(hash_name)), ikm, hash_name)


def _hkdf_expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 Expand."""
    nh = _digest_size(hash_name)
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


# --------------------------------------------------------------------------------------------------
# KEMs: one class per KEM, so a post-quantum KEM slots in beside DHKEM(X25519)


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


class SignatureScheme(Protocol):
    """What a cipher suite needs from its signature algorithm (raw-byte keys)."""

    def generate(self) -> tuple[bytes, bytes]: ...
    def public_key(self, priv: bytes) -> bytes: ...
    def sign(self, priv: bytes, message: bytes) -> bytes: ...
    def verify(self, pub: bytes, message: bytes, signature: bytes) -> bool: ...


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
        return _hkdf_extract(self.hash_name, salt, b"HPKE-v1" + self._suite_id() + label + ikm)

    def _labeled_expand(self, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        labeled_info = struct.pack(">H", length) + b"HPKE-v1" + self._suite_id() + label + info
        return _hkdf_expand(self.hash_name, prk, labeled_info, length)


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


# RFC 9180 §7.1.3: DeriveKeyPair for the NIST curves retries at most this many candidates.
DKP_MAX_CANDIDATES = 256


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
        self.order = _CURVE_ORDERS[curve.name]

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
        return priv, _ec_point(key.public_key())

    def private_key(self, priv: bytes) -> ec.EllipticCurvePrivateKey:
        # The mlswg passive-client P-521 vectors carry a 65-byte encryption_priv.
        return _ec_private_key(self.curve, self.order, self.n_sk, priv)

    def public_key_obj(self, pub: bytes) -> ec.EllipticCurvePublicKey:
        if len(pub) != self.n_pk:
            raise CryptoError(f"{self.curve.name} public key must be {self.n_pk} bytes, got {len(pub)}")
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(self.curve, pub)
        except ValueError as exc:
            raise CryptoError("invalid curve point") from exc

    def public_key(self, priv: bytes) -> bytes:
        return _ec_point(self.private_key(priv).public_key())

    def _exchange(self, priv: bytes, pub: bytes) -> bytes:
        return self.private_key(priv).exchange(ec.ECDH(), self.public_key_obj(pub))


_CURVE_ORDERS = {
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


def _ec_private_key(curve: ec.EllipticCurve, order: int, n_priv: int, priv: bytes) -> ec.EllipticCurvePrivateKey:
    """A NIST-curve private key from a big-endian scalar of at most ``n_priv`` bytes. A shorter
    scalar is accepted: some implementations (and mlswg vectors, P-521) drop leading zero bytes;
    the integer is the same either way."""
    if not 0 < len(priv) <= n_priv:
        raise CryptoError(f"{curve.name} private key must be {n_priv} bytes, got {len(priv)}")
    value = int.from_bytes(priv, "big")
    if not 0 < value < order:
        raise CryptoError("private scalar out of range")
    return ec.derive_private_key(value, curve)


def _ec_point(key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed SEC1 point of a NIST-curve public key."""
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


# --------------------------------------------------------------------------------------------------
# Signature schemes


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
        self.order = _CURVE_ORDERS[curve.name]

    def generate(self) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(self.curve)
        return key.private_numbers().private_value.to_bytes(self.n_priv, "big"), _ec_point(key.public_key())

    def _priv(self, priv: bytes) -> ec.EllipticCurvePrivateKey:
        return _ec_private_key(self.curve, self.order, self.n_priv, priv)

    def public_key(self, priv: bytes) -> bytes:
        return _ec_point(self._priv(priv).public_key())

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


# --------------------------------------------------------------------------------------------------
# AEADs


@dataclass(frozen=True)
class AeadSpec:
    """An AEAD by its cryptography class, key and nonce lengths, and its HPKE enum."""

    cls: type
    nk: int
    nn: int
    hpke_aead: object
    aead_id: int
    """RFC 9180 §7.3 AEAD id (for the HPKE suite_id when HPKE runs in Python)."""


AES_128_GCM = AeadSpec(AESGCM, 16, 12, hpke.AEAD.AES_128_GCM, 0x0001)
AES_256_GCM = AeadSpec(AESGCM, 32, 12, hpke.AEAD.AES_256_GCM, 0x0002)
CHACHA20_POLY1305 = AeadSpec(ChaCha20Poly1305, 32, 12, hpke.AEAD.CHACHA20_POLY1305, 0x0003)

# RFC 9180 §7.2 KDF ids by hash.
HPKE_KDF_IDS = {"sha256": 0x0001, "sha384": 0x0002, "sha512": 0x0003}


@dataclass(frozen=True)
class SuiteSpec:
    """One row of the RFC 9420 §17.1 cipher-suite table, bound to concrete primitives."""

    suite_id: int
    name: str
    kem: KEM
    hash_name: str
    hpke_kdf: object
    aead: AeadSpec
    sig: SignatureScheme


SUITES: dict[int, SuiteSpec] = {
    0x0001: SuiteSpec(
        0x0001,
        "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
        DHKEMX25519(),
        "sha256",
        hpke.KDF.HKDF_SHA256,
        AES_128_GCM,
        Ed25519Scheme(),
    ),
    0x0002: SuiteSpec(
        0x0002,
        "MLS_128_DHKEMP256_AES128GCM_SHA256_P256",
        DHKEMNist(0x0010, ec.SECP256R1(), "sha256", 32, 0xFF, hpke.KEM.P256),
        "sha256",
        hpke.KDF.HKDF_SHA256,
        AES_128_GCM,
        EcdsaScheme(ec.SECP256R1(), hashes.SHA256(), 32),
    ),
    0x0003: SuiteSpec(
        0x0003,
        "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519",
        DHKEMX25519(),
        "sha256",
        hpke.KDF.HKDF_SHA256,
        CHACHA20_POLY1305,
        Ed25519Scheme(),
    ),
    0x0004: SuiteSpec(
        0x0004,
        "MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448",
        DHKEMX448(),
        "sha512",
        hpke.KDF.HKDF_SHA512,
        AES_256_GCM,
        Ed448Scheme(),
    ),
    0x0005: SuiteSpec(
        0x0005,
        "MLS_256_DHKEMP521_AES256GCM_SHA512_P521",
        DHKEMNist(0x0012, ec.SECP521R1(), "sha512", 66, 0x01, hpke.KEM.P521),
        "sha512",
        hpke.KDF.HKDF_SHA512,
        AES_256_GCM,
        EcdsaScheme(ec.SECP521R1(), hashes.SHA512(), 66),
    ),
    0x0006: SuiteSpec(
        0x0006,
        "MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448",
        DHKEMX448(),
        "sha512",
        hpke.KDF.HKDF_SHA512,
        CHACHA20_POLY1305,
        Ed448Scheme(),
    ),
    0x0007: SuiteSpec(
        0x0007,
        "MLS_256_DHKEMP384_AES256GCM_SHA384_P384",
        DHKEMNist(0x0011, ec.SECP384R1(), "sha384", 48, 0xFF, hpke.KEM.P384),
        "sha384",
        hpke.KDF.HKDF_SHA384,
        AES_256_GCM,
        EcdsaScheme(ec.SECP384R1(), hashes.SHA384(), 48),
    ),
}


class SoftHPKE:
    """RFC 9180 base-mode HPKE (single-shot seal/open and the secret export) written over a
    :class:`KEM`'s ``encap``/``decap``, the suite's HKDF and its AEAD.

    Used for KEMs ``cryptography``'s HPKE does not offer (X448), and in tests as an independent
    implementation to check the library path against. It also exposes the exporter secret, which
    ``cryptography``'s single-shot API does not (§8.3 external init needs it).
    """

    MODE_BASE = 0x00

    def __init__(self, kem: KEM, hash_name: str, aead: AeadSpec) -> None:
        self.kem = kem
        self.hash_name = hash_name
        self.aead = aead
        self.nh = hashlib.new(hash_name).digest_size
        self.suite_id = b"HPKE" + struct.pack(">HHH", kem.kem_id, HPKE_KDF_IDS[hash_name], aead.aead_id)

    def _extract(self, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return _hkdf_extract(self.hash_name, salt, b"HPKE-v1" + self.suite_id + label + ikm)

    def _expand(self, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        labeled = struct.pack(">H", length) + b"HPKE-v1" + self.suite_id + label + info
        return _hkdf_expand(self.hash_name, prk, labeled, length)

    def key_schedule(self, shared_secret: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
        """RFC 9180 §5.1 KeySchedule (mode_base, no PSK): (key, base_nonce, exporter_secret)."""
        context = (
            bytes([self.MODE_BASE])
            + self._extract(b"", b"psk_id_hash", b"")
            + self._extract(b"", b"info_hash", info)
        )
        secret = self._extract(shared_secret, b"secret", b"")
        return (
            self._expand(secret, b"key", context, self.aead.nk),
            self._expand(secret, b"base_nonce", context, self.aead.nn),
            self._expand(secret, b"exp", context, self.nh),
        )

    def seal(self, pub: bytes, info: bytes, aad: bytes, pt: bytes) -> tuple[bytes, bytes]:
        shared, enc = self.kem.encap(pub)
        key, nonce, _ = self.key_schedule(shared, info)
        return enc, self.aead.cls(key).encrypt(nonce, pt, aad)  # sequence 0: nonce = base_nonce

    def open(self, priv: bytes, enc: bytes, info: bytes, aad: bytes, ct: bytes) -> bytes:
        key, nonce, _ = self.key_schedule(self.kem.decap(enc, priv), info)
        try:
            return self.aead.cls(key).decrypt(nonce, ct, aad)
        except (InvalidTag, ValueError) as exc:
            raise CryptoError("HPKE open failed") from exc

    def export_sender(self, pub: bytes, info: bytes, exporter_context: bytes, length: int) -> tuple[bytes, bytes]:
        """SetupBaseS then Export: (enc, exported secret), RFC 9180 §5.3."""
        shared, enc = self.kem.encap(pub)
        _, _, exporter_secret = self.key_schedule(shared, info)
        return enc, self._expand(exporter_secret, b"sec", exporter_context, length)

    def export_receiver(self, priv: bytes, enc: bytes, info: bytes, exporter_context: bytes, length: int) -> bytes:
        """SetupBaseR then Export, RFC 9180 §5.3."""
        _, _, exporter_secret = self.key_schedule(self.kem.decap(enc, priv), info)
        return self._expand(exporter_secret, b"sec", exporter_context, length)


def _labeled(label: bytes) -> bytes:
    return MLS_LABEL_PREFIX + label


class CipherSuite:
    """The MLS operations of one cipher suite (RFC 9420 §5.1, §5.2, §8)."""

    __slots__ = ("id", "spec", "Nh", "Nk", "Nn", "_hpke_suite", "soft_hpke")

    def __init__(self, suite_id: int) -> None:
        spec = SUITES.get(suite_id)
        if spec is None:
            raise UnsupportedSuite(f"cipher suite 0x{suite_id:04x} is not implemented")
        self.id = suite_id
        self.spec = spec
        self.Nh = hashlib.new(spec.hash_name).digest_size
        self.Nk = spec.aead.nk
        self.Nn = spec.aead.nn
        self.soft_hpke = SoftHPKE(spec.kem, spec.hash_name, spec.aead)
        self._hpke_suite = (
            None
            if spec.kem.hpke_kem is None
            else hpke.Suite(spec.kem.hpke_kem, spec.hpke_kdf, spec.aead.hpke_aead)
        )

    def __repr__(self) -> str:
        return f"CipherSuite(0x{self.id:04x} {self.spec.name})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CipherSuite) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # ---------------------------------------------------------------- hash, KDF, MAC

    def hash(self, data: bytes) -> bytes:
        return hashlib.new(self.spec.hash_name, data).digest()

    def kdf_extract(self, salt: bytes, ikm: bytes) -> bytes:
        return _hkdf_extract(self.spec.hash_name, salt, ikm)

    def kdf_expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        return _hkdf_expand(self.spec.hash_name, prk, info, length)

    def mac(self, key: bytes, data: bytes) -> bytes:
        """MAC = HMAC with the suite hash (§5.1; membership and confirmation tags)."""
        return hmac.digest(key, data, self.spec.hash_name)

    def expand_with_label(self, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
        """§8 ExpandWithLabel: KDFLabel { uint16 length; opaque label<V>; opaque context<V>; }."""
        if not 0 <= length <= 0xFFFF:
            raise CryptoError(f"ExpandWithLabel length {length} does not fit a uint16")
        info = Writer().u16(length).opaque(_labeled(label)).opaque(context).bytes()
        return self.kdf_expand(secret, info, length)

    def derive_secret(self, secret: bytes, label: bytes) -> bytes:
        """§8 DeriveSecret(Secret, Label) = ExpandWithLabel(Secret, Label, "", Nh)."""
        return self.expand_with_label(secret, label, b"", self.Nh)

    def derive_tree_secret(self, secret: bytes, label: bytes, generation: int, length: int) -> bytes:
        """§9 DeriveTreeSecret: the context is the generation as a uint32."""
        if not 0 <= generation <= 0xFFFFFFFF:
            raise CryptoError(f"generation {generation} does not fit a uint32")
        return self.expand_with_label(secret, label, struct.pack(">I", generation), length)

    def ref_hash(self, label: bytes, value: bytes) -> bytes:
        """§5.2 RefHash: Hash(RefHashInput { opaque label<V>; opaque value<V>; }); label taken as is."""
        return self.hash(Writer().opaque(label).opaque(value).bytes())

    def make_key_package_ref(self, kp_bytes: bytes) -> bytes:
        return self.ref_hash(KEY_PACKAGE_REF_LABEL, kp_bytes)

    def make_proposal_ref(self, authenticated_content_bytes: bytes) -> bytes:
        return self.ref_hash(PROPOSAL_REF_LABEL, authenticated_content_bytes)

    # ---------------------------------------------------------------- AEAD

    def _aead(self, key: bytes):
        if len(key) != self.Nk:
            raise CryptoError(f"AEAD key must be {self.Nk} bytes, got {len(key)}")
        return self.spec.aead.cls(key)

    def aead_encrypt(self, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        if len(nonce) != self.Nn:
            raise CryptoError(f"AEAD nonce must be {self.Nn} bytes, got {len(nonce)}")
        return self._aead(key).encrypt(nonce, plaintext, aad)

    def aead_decrypt(self, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        if len(nonce) != self.Nn:
            raise CryptoError(f"AEAD nonce must be {self.Nn} bytes, got {len(nonce)}")
        try:
            return self._aead(key).decrypt(nonce, ciphertext, aad)
        except (InvalidTag, ValueError) as exc:
            raise CryptoError("AEAD decryption failed") from exc

    # ---------------------------------------------------------------- signatures (§5.1.2)

    def _sign_content(self, label: bytes, content: bytes) -> bytes:
        return Writer().opaque(_labeled(label)).opaque(content).bytes()

    def sign_with_label(self, sig_priv: bytes, label: bytes, content: bytes) -> bytes:
        """§5.1.2 SignWithLabel over SignContent { opaque label<V>; opaque content<V>; }."""
        return self.spec.sig.sign(sig_priv, self._sign_content(label, content))

    def verify_with_label(self, sig_pub: bytes, label: bytes, content: bytes, signature: bytes) -> bool:
        return self.spec.sig.verify(sig_pub, self._sign_content(label, content), signature)

    def generate_signature_key_pair(self) -> tuple[bytes, bytes]:
        return self.spec.sig.generate()

    def signature_public_key(self, sig_priv: bytes) -> bytes:
        return self.spec.sig.public_key(sig_priv)

    # ---------------------------------------------------------------- HPKE (RFC 9180 base mode)

    def hpke_seal(self, pub: bytes, info: bytes, aad: bytes, pt: bytes) -> tuple[bytes, bytes]:
        """SealBase; returns (enc, ciphertext)."""
        if self._hpke_suite is None:
            return self.soft_hpke.seal(pub, info, aad, pt)
        try:
            out = _hpke_encrypt_with_aad(
                self._hpke_suite, pt, self.spec.kem.public_key_obj(pub), info=info, aad=aad
            )
        except ValueError as exc:  # e.g. a low-order X25519 point
            raise CryptoError("HPKE seal failed") from exc
        n_enc = self.spec.kem.n_enc
        return out[:n_enc], out[n_enc:]

    def hpke_open(self, priv: bytes, enc: bytes, info: bytes, aad: bytes, ct: bytes) -> bytes:
        """OpenBase; any failure (bad enc, wrong key, tag) raises CryptoError."""
        if len(enc) != self.spec.kem.n_enc:
            raise CryptoError(f"HPKE enc must be {self.spec.kem.n_enc} bytes, got {len(enc)}")
        if self._hpke_suite is None:
            return self.soft_hpke.open(priv, enc, info, aad, ct)
        try:
            return _hpke_decrypt_with_aad(
                self._hpke_suite, enc + ct, self.spec.kem.private_key(priv), info=info, aad=aad
            )
        except (InvalidTag, ValueError) as exc:
            raise CryptoError("HPKE open failed") from exc

    def hpke_export_sender(self, pub: bytes, info: bytes, exporter_context: bytes, length: int) -> tuple[bytes, bytes]:
        """SetupBaseS + Export (RFC 9180 §5.3): (kem_output, secret). §8.3 external init uses
        info "" and context "MLS 1.0 external init secret"."""
        return self.soft_hpke.export_sender(pub, info, exporter_context, length)

    def hpke_export_receiver(self, priv: bytes, enc: bytes, info: bytes, exporter_context: bytes, length: int) -> bytes:
        """SetupBaseR + Export (RFC 9180 §5.3)."""
        if len(enc) != self.spec.kem.n_enc:
            raise CryptoError(f"HPKE enc must be {self.spec.kem.n_enc} bytes, got {len(enc)}")
        return self.soft_hpke.export_receiver(priv, enc, info, exporter_context, length)

    def encrypt_with_label(
        self, hpke_pub: bytes, label: bytes, context: bytes, plaintext: bytes
    ) -> tuple[bytes, bytes]:
        """§5.1.3 EncryptWithLabel: SealBase with info = EncryptContext { label<V>; context<V>; }, aad ""."""
        info = Writer().opaque(_labeled(label)).opaque(context).bytes()
        return self.hpke_seal(hpke_pub, info, b"", plaintext)

    def decrypt_with_label(
        self, hpke_priv: bytes, label: bytes, context: bytes, kem_output: bytes, ciphertext: bytes
    ) -> bytes:
        info = Writer().opaque(_labeled(label)).opaque(context).bytes()
        return self.hpke_open(hpke_priv, kem_output, info, b"", ciphertext)

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """RFC 9180 §7.1.3 DeriveKeyPair of the suite's KEM; (priv, pub)."""
        return self.spec.kem.derive_key_pair(ikm)

    def generate_hpke_key_pair(self) -> tuple[bytes, bytes]:
        return self.spec.kem.generate()

    def hpke_public_key(self, priv: bytes) -> bytes:
        return self.spec.kem.public_key(priv)
