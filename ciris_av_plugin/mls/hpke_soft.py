"""AEAD parameters of the suites and :class:`SoftHPKE`: RFC 9180 base mode in Python over a :class:`~.kem.KEM`,
for KEMs ``cryptography``'s HPKE lacks and for the secret export (§8.3) its single-shot API does not give.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .errors import CryptoError
from .kdf import hkdf_expand, hkdf_extract
from .kem import KEM


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


HPKE_KDF_IDS = {"sha256": 0x0001, "sha384": 0x0002, "sha512": 0x0003}
"""RFC 9180 §7.2 KDF ids by hash."""


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
        return hkdf_extract(self.hash_name, salt, b"HPKE-v1" + self.suite_id + label + ikm)

    def _expand(self, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        labeled = struct.pack(">H", length) + b"HPKE-v1" + self.suite_id + label + info
        return hkdf_expand(self.hash_name, prk, labeled, length)

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


__all__ = [
    "AeadSpec",
    "AES_128_GCM",
    "AES_256_GCM",
    "CHACHA20_POLY1305",
    "HPKE_KDF_IDS",
    "SoftHPKE",
]
