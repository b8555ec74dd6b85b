"""MLS cipher suites (RFC 9420 §5.1, §17.1) over ``cryptography``.

A :class:`CipherSuite` is built from a table of :class:`SuiteSpec` entries. Each entry names a KEM, a
KDF hash, an AEAD and a signature scheme; the KEM and the signature scheme are small classes, so adding
a suite (the CIRIS edge's X-Wing suite 0x004D, say) means a table entry plus, if new, a KEM class
(the :class:`KEM` protocol: ``derive_key_pair``, ``generate``, key decoding, ``encap``/``decap``, and
the ``cryptography`` HPKE enum when that library has the KEM) — nothing else here changes. All keys
cross this API as raw bytes (RFC 9420 test-vector conventions): X25519 and Ed25519 raw encodings for
suite 1; big-endian scalars and uncompressed points for the NIST-curve suites.

The primitives live beside it, one family a module: :mod:`.kdf` (HKDF), :mod:`.kem` (HPKE KEMs),
:mod:`.signatures`, :mod:`.hpke_soft` (AEAD parameters and HPKE in Python).

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

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ec

from .codec import Writer
from .errors import CryptoError, UnsupportedSuite
from .hpke_soft import AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305, AeadSpec, SoftHPKE
from .kdf import hkdf_expand, hkdf_extract
from .kem import DHKEMX448, DHKEMX25519, KEM, DHKEMNist
from .signatures import EcdsaScheme, Ed448Scheme, Ed25519Scheme, SignatureScheme

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
        return hkdf_extract(self.spec.hash_name, salt, ikm)

    def kdf_expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        return hkdf_expand(self.spec.hash_name, prk, info, length)

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
        """SealBase; returns (enc, ciphertext).

        ``cryptography``'s public HPKE takes no AAD. MLS never passes one (§5.1.3 EncryptWithLabel
        seals with an empty AAD), so that is the path MLS takes; a non-empty AAD, and KEMs that
        library lacks, go through :class:`SoftHPKE` (the two are cross-checked in the tests).
        """
        if self._hpke_suite is None or aad:
            return self.soft_hpke.seal(pub, info, aad, pt)
        try:
            out = self._hpke_suite.encrypt(pt, self.spec.kem.public_key_obj(pub), info)
        except ValueError as exc:  # e.g. a low-order X25519 point
            raise CryptoError("HPKE seal failed") from exc
        n_enc = self.spec.kem.n_enc
        return out[:n_enc], out[n_enc:]

    def hpke_open(self, priv: bytes, enc: bytes, info: bytes, aad: bytes, ct: bytes) -> bytes:
        """OpenBase; any failure (bad enc, wrong key, tag) raises CryptoError."""
        if len(enc) != self.spec.kem.n_enc:
            raise CryptoError(f"HPKE enc must be {self.spec.kem.n_enc} bytes, got {len(enc)}")
        if self._hpke_suite is None or aad:
            return self.soft_hpke.open(priv, enc, info, aad, ct)
        try:
            return self._hpke_suite.decrypt(enc + ct, self.spec.kem.private_key(priv), info)
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
