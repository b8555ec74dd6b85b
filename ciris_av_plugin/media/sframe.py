"""RFC 9605 SFrame: header codec, key derivation and frame encryption for suites 1-5.

Layout of an SFrame ciphertext (§4.2): ``header || AEAD.Encrypt(key, nonce, header || metadata,
plaintext)``. This module is pure: keys in, bytes out. Which KID a frame uses, counter
allocation and replay protection live in :mod:`.frames`, :mod:`.keyring` and :mod:`.replay`.

Decryption is split in two steps so a receiver can run its replay check between them:
:func:`parse_ciphertext` reads the header (KID and CTR in clear), then
:meth:`SFrameKey.open` authenticates and decrypts. :func:`sframe_decrypt` does both for callers
that have no replay window.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from .errors import DecryptError, SFrameError, SFrameHeaderError

# Both KID and CTR are 64-bit: the 3-bit length field encodes 1..8 bytes (§4.3) and the key
# label carries the KID as 8 bytes (§4.4.2).
MAX_KID = (1 << 64) - 1
MAX_CTR = (1 << 64) - 1
# Longest header: config byte + 8 KID bytes + 8 CTR bytes.
MAX_HEADER_LEN = 17


class CipherSuite(IntEnum):
    """SFrame cipher suite identifiers (RFC 9605 §8.1 IANA registry)."""

    AES_128_CTR_HMAC_SHA256_80 = 1
    AES_128_CTR_HMAC_SHA256_64 = 2
    AES_128_CTR_HMAC_SHA256_32 = 3
    AES_128_GCM_SHA256_128 = 4
    AES_256_GCM_SHA512_128 = 5


# ARCHITECTURE.md: the media plane uses suite 4, with base_key = MLS-Exporter(..., 16) = Nk.
MEDIA_SUITE = CipherSuite.AES_128_GCM_SHA256_128


@dataclass(frozen=True, slots=True)
class SuiteParams:
    """The constants of RFC 9605 §4.5 (cipher suite table) for one suite."""

    suite: CipherSuite
    hash_name: str
    nh: int
    nka: int  # 0 for the GCM suites (no compound key)
    nk: int
    nn: int
    nt: int

    @property
    def ctr_hmac(self) -> bool:
        return self.nka > 0

    def hash_algorithm(self) -> hashes.HashAlgorithm:
        return hashes.SHA256() if self.hash_name == "sha256" else hashes.SHA512()


SUITES: dict[int, SuiteParams] = {
    p.suite: p
    for p in (
        SuiteParams(CipherSuite.AES_128_CTR_HMAC_SHA256_80, "sha256", 32, 16, 48, 12, 10),
        SuiteParams(CipherSuite.AES_128_CTR_HMAC_SHA256_64, "sha256", 32, 16, 48, 12, 8),
        SuiteParams(CipherSuite.AES_128_CTR_HMAC_SHA256_32, "sha256", 32, 16, 48, 12, 4),
        SuiteParams(CipherSuite.AES_128_GCM_SHA256_128, "sha256", 32, 0, 16, 12, 16),
        SuiteParams(CipherSuite.AES_256_GCM_SHA512_128, "sha512", 64, 0, 32, 12, 16),
    )
}


def suite_params(suite: int) -> SuiteParams:
    try:
        return SUITES[suite]
    except KeyError:
        raise SFrameError(f"unsupported SFrame cipher suite {suite}") from None


# --- header (§4.3) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SFrameHeader:
    """A decoded SFrame header and how many bytes it took."""

    kid: int
    ctr: int
    length: int


def _uint_len(value: int) -> int:
    return max(1, (value.bit_length() + 7) // 8)


def encode_header(kid: int, ctr: int) -> bytes:
    """Encode KID and CTR with the minimal encoding §4.3 requires."""
    if not 0 <= kid <= MAX_KID:
        raise SFrameHeaderError(f"KID {kid} outside 0..2^64-1")
    if not 0 <= ctr <= MAX_CTR:
        raise SFrameHeaderError(f"CTR {ctr} outside 0..2^64-1")
    config = 0
    tail = b""
    if kid < 8:
        config |= kid << 4
    else:
        n = _uint_len(kid)
        config |= 0x80 | ((n - 1) << 4)
        tail += kid.to_bytes(n, "big")
    if ctr < 8:
        config |= ctr
    else:
        n = _uint_len(ctr)
        config |= 0x08 | (n - 1)
        tail += ctr.to_bytes(n, "big")
    return bytes((config,)) + tail


def _read_field(data: bytes, pos: int, extended: bool, bits: int, what: str) -> tuple[int, int]:
    if not extended:
        return bits, pos
    n = bits + 1
    if len(data) < pos + n:
        raise SFrameHeaderError(f"SFrame header truncated in the {what} ({len(data) - pos} < {n} bytes)")
    value = int.from_bytes(data[pos : pos + n], "big")
    # §4.3: values 0-7 go in the config byte; larger ones "MUST be encoded with the minimum
    # number of bytes". Anything else is a second encoding of the same header, refused so the
    # authenticated header bytes have exactly one form.
    if value < 8 or (value.bit_length() + 7) // 8 != n:
        raise SFrameHeaderError(f"{what} {value} not minimally encoded in {n} bytes")
    return value, pos + n


def decode_header(data: bytes | memoryview, offset: int = 0) -> SFrameHeader:
    """Read the SFrame header at ``data[offset:]`` (ciphertext may follow).

    ``length`` in the result counts from ``offset``.
    """
    head = bytes(data[offset : offset + MAX_HEADER_LEN])  # small copy: fast indexing below
    if not head:
        raise SFrameHeaderError("SFrame header truncated (empty)")
    config = head[0]
    kid, pos = _read_field(head, 1, bool(config & 0x80), (config >> 4) & 0x07, "KID")
    ctr, pos = _read_field(head, pos, bool(config & 0x08), config & 0x07, "CTR")
    return SFrameHeader(kid=kid, ctr=ctr, length=pos)


def parse_ciphertext(data: bytes | memoryview) -> tuple[SFrameHeader, memoryview]:
    """Split an SFrame ciphertext into its header and the AEAD output (ciphertext || tag)."""
    header = decode_header(data)
    return header, memoryview(data)[header.length :]


# --- key derivation (§4.4.2) ----------------------------------------------------------------


def _hkdf_extract(params: SuiteParams, salt: bytes, ikm: bytes) -> bytes:
    # RFC 5869 §2.2: an absent salt is HashLen zeros; HMAC pads an empty key with zeros to
    # the block size, so b"" and HashLen zeros give the same PRK.
    return hmac.new(salt, ikm, params.hash_name).digest()


def _hkdf_expand(params: SuiteParams, prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(params.hash_algorithm(), length, info).derive(prk)


def key_label(kid: int, suite: int) -> bytes:
    """``"SFrame 1.0 Secret key " + KID (8 bytes BE) + cipher_suite (2 bytes BE)``."""
    return b"SFrame 1.0 Secret key " + kid.to_bytes(8, "big") + suite.to_bytes(2, "big")


def salt_label(kid: int, suite: int) -> bytes:
    """``"SFrame 1.0 Secret salt " + KID (8 bytes BE) + cipher_suite (2 bytes BE)``."""
    return b"SFrame 1.0 Secret salt " + kid.to_bytes(8, "big") + suite.to_bytes(2, "big")


def derive_key_salt(suite: int, base_key: bytes, kid: int) -> tuple[bytes, bytes, bytes]:
    """Return ``(sframe_secret, sframe_key, sframe_salt)`` for one KID (§4.4.2)."""
    params = suite_params(suite)
    if not 0 <= kid <= MAX_KID:
        raise SFrameError(f"KID {kid} outside 0..2^64-1")
    secret = _hkdf_extract(params, b"", bytes(base_key))
    key = _hkdf_expand(params, secret, key_label(kid, params.suite), params.nk)
    salt = _hkdf_expand(params, secret, salt_label(kid, params.suite), params.nn)
    return secret, key, salt


# --- AEAD (§4.5, §4.5.1) ---------------------------------------------------------------------


def _ctr_hmac_tag(params: SuiteParams, auth_key: bytes, nonce: bytes, aad: bytes, ct: bytes) -> bytes:
    auth_data = (
        len(aad).to_bytes(8, "big")
        + len(ct).to_bytes(8, "big")
        + params.nt.to_bytes(8, "big")
        + nonce
        + aad
        + ct
    )
    return hmac.new(auth_key, auth_data, hashlib.sha256 if params.nh == 32 else hashlib.sha512).digest()[
        : params.nt
    ]


def _aes_ctr(enc_key: bytes, nonce: bytes, data: bytes) -> bytes:
    # §4.5.1: the initial counter block is the 12-byte nonce followed by four zero bytes.
    ctx = Cipher(algorithms.AES(enc_key), modes.CTR(nonce + b"\x00\x00\x00\x00")).encryptor()
    return ctx.update(data) + ctx.finalize()


def aead_encrypt(suite: int, key: bytes, nonce: bytes, aad: bytes, pt: bytes) -> bytes:
    """``AEAD.Encrypt`` of the suite; for CTR suites the compound AEAD of §4.5.1."""
    params = suite_params(suite)
    if params.ctr_hmac:
        enc_key, auth_key = key[: params.nka], key[params.nka :]
        ct = _aes_ctr(enc_key, nonce, bytes(pt))
        return ct + _ctr_hmac_tag(params, auth_key, nonce, bytes(aad), ct)
    return AESGCM(key).encrypt(nonce, bytes(pt), bytes(aad))


def aead_decrypt(suite: int, key: bytes, nonce: bytes, aad: bytes, ct: bytes) -> bytes:
    """``AEAD.Decrypt``; raises :class:`DecryptError` on any authentication failure."""
    params = suite_params(suite)
    if len(ct) < params.nt:
        raise DecryptError(f"ciphertext shorter than the {params.nt}-byte tag")
    if params.ctr_hmac:
        enc_key, auth_key = key[: params.nka], key[params.nka :]
        inner, tag = bytes(ct[: -params.nt]), bytes(ct[-params.nt :])
        if not hmac.compare_digest(tag, _ctr_hmac_tag(params, auth_key, nonce, bytes(aad), inner)):
            raise DecryptError("authentication failure")
        return _aes_ctr(enc_key, nonce, inner)
    try:
        return AESGCM(key).decrypt(nonce, bytes(ct), bytes(aad))
    except InvalidTag:
        raise DecryptError("authentication failure") from None


# --- per-KID context --------------------------------------------------------------------------


@dataclass(slots=True)
class SFrameKey:
    """The key and salt of one (base_key, KID, suite), ready to seal or open frames.

    Build with :meth:`derive`. The AEAD object is created once per key because GCM key setup
    is a measurable share of the cost of a small (audio) frame.
    """

    suite: CipherSuite
    kid: int
    key: bytes
    salt: bytes
    _gcm: AESGCM | None = field(default=None, repr=False)
    _salt_int: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        params = suite_params(self.suite)
        if len(self.key) != params.nk or len(self.salt) != params.nn:
            raise SFrameError("SFrame key or salt has the wrong length for its suite")
        self._salt_int = int.from_bytes(self.salt, "big")
        if not params.ctr_hmac:
            self._gcm = AESGCM(self.key)

    @classmethod
    def derive(cls, suite: int, base_key: bytes, kid: int) -> SFrameKey:
        """Derive the per-KID key and salt from a ``base_key`` (§4.4.2)."""
        params = suite_params(suite)
        _, key, salt = derive_key_salt(params.suite, base_key, kid)
        return cls(suite=params.suite, kid=kid, key=key, salt=salt)

    @property
    def params(self) -> SuiteParams:
        return SUITES[self.suite]

    def nonce(self, ctr: int) -> bytes:
        """§4.4.3: ``sframe_salt XOR encode_big_endian(CTR, Nn)``."""
        if not 0 <= ctr <= MAX_CTR:
            raise SFrameError(f"CTR {ctr} outside 0..2^64-1")
        return (self._salt_int ^ ctr).to_bytes(len(self.salt), "big")

    def seal(self, ctr: int, metadata: bytes | memoryview, plaintext: bytes | memoryview) -> bytes:
        """Encrypt one frame: ``header || ciphertext || tag`` (§4.4.3)."""
        header = encode_header(self.kid, ctr)
        aad = header + bytes(metadata)
        nonce = self.nonce(ctr)
        if self._gcm is not None:
            return header + self._gcm.encrypt(nonce, bytes(plaintext), aad)
        return header + aead_encrypt(self.suite, self.key, nonce, aad, plaintext)

    def open(
        self,
        header: SFrameHeader,
        header_bytes: bytes | memoryview,
        metadata: bytes | memoryview,
        body: bytes | memoryview,
    ) -> bytes:
        """Authenticate and decrypt ``body`` (ciphertext || tag) whose header was parsed already.

        ``header_bytes`` are the header exactly as received: they are the AAD, so a re-encoding
        could hide a tampered form (decode_header already refuses non-minimal ones).
        """
        if header.kid != self.kid:
            raise SFrameError(f"frame KID {header.kid} opened with the key of KID {self.kid}")
        aad = bytes(header_bytes) + bytes(metadata)
        nonce = self.nonce(header.ctr)
        if self._gcm is not None:
            if len(body) < self.params.nt:
                raise DecryptError(f"ciphertext shorter than the {self.params.nt}-byte tag")
            try:
                return self._gcm.decrypt(nonce, bytes(body), aad)
            except InvalidTag:
                raise DecryptError("authentication failure") from None
        return aead_decrypt(self.suite, self.key, nonce, aad, body)


def sframe_encrypt(
    key: SFrameKey, ctr: int, metadata: bytes | memoryview, plaintext: bytes | memoryview
) -> bytes:
    """SFrame encrypt (§4.4.3). The caller owns counter uniqueness (§9.1): never reuse ``ctr``."""
    return key.seal(ctr, metadata, plaintext)


@dataclass(frozen=True, slots=True)
class SFrameOpened:
    """Result of :func:`sframe_decrypt`."""

    kid: int
    ctr: int
    plaintext: bytes


def sframe_decrypt(
    key_lookup: Callable[[int], SFrameKey], metadata: bytes | memoryview, data: bytes | memoryview
) -> SFrameOpened:
    """SFrame decrypt (§4.4.4): parse the header, look the KID up, authenticate, decrypt.

    ``key_lookup(kid)`` returns the key or raises (an :class:`UnknownKeyError` lets the caller
    hold the frame until its key arrives, as §4.4.4 allows). No replay check happens here.
    """
    header, body = parse_ciphertext(data)
    key = key_lookup(header.kid)
    plaintext = key.open(header, memoryview(data)[: header.length], metadata, body)
    return SFrameOpened(kid=header.kid, ctr=header.ctr, plaintext=plaintext)
