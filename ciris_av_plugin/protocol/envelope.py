"""The KeyPackage publish envelope: a KeyPackage signed by its publisher's RNS identity.

Why an envelope: an MLS KeyPackage is signed with the member's own MLS key, which says nothing about
which RNS identity published it. The directory binds the two by requiring the KeyPackage's
``BasicCredential.identity`` to equal the hash of the RNS identity that signed this envelope, and the
envelope also carries what MLS has no field for: whether the KeyPackage is a last-resort one.

Wire format (msgpack, strict)::

    envelope = {"body": bytes, "sig": bytes(64)}
    body     = msgpack {"kp": bytes, "last_resort": bool, "identity_pub": bytes(64), "ts": int}
    sig      = Ed25519(RNS identity signing key, ENVELOPE_SIGNATURE_LABEL || body)

The signature covers ``body`` exactly as received, so no canonical re-encoding is needed and any
msgpack encoder may produce it. ``kp`` is the MLSMessage-framed KeyPackage; ``ts`` is the
publisher's wall-clock Unix time in seconds.

RNS-compatibility (checked against ``RNS/Identity.py`` of rns 1.5.7): an RNS public key is 64 bytes,
the 32-byte X25519 encryption key followed by the 32-byte Ed25519 signing key; ``Identity.sign`` is
plain Ed25519 over the message with the second key; the identity hash is SHA-256 of the 64-byte
public key truncated to 16 bytes. This module verifies with ``cryptography`` alone, because the core
must not import RNS; the tests check it against a real ``RNS.Identity`` both ways.

The signed bytes begin with a label so that a signature made for an envelope can never pass as one
of the other things an RNS identity signs (announces, link proofs), nor the reverse.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import RelayError
from . import codes

log = logging.getLogger(__name__)

__all__ = [
    "ENVELOPE_SIGNATURE_LABEL",
    "IDENTITY_PUBLIC_KEY_LEN",
    "IDENTITY_HASH_LEN",
    "SIGNATURE_LEN",
    "MAX_KEY_PACKAGE_SIZE",
    "MAX_ENVELOPE_SIZE",
    "EnvelopeError",
    "MalformedEnvelope",
    "OversizedEnvelope",
    "BadEnvelopeSignature",
    "KeyPackageEnvelope",
    "identity_hash",
    "verify_identity_signature",
    "seal_envelope",
    "open_envelope",
]

# Domain separation for the envelope signature (see the module docstring). Versioned so a future
# envelope layout cannot be confused with this one.
ENVELOPE_SIGNATURE_LABEL = b"CIRIS-AV KeyPackage envelope v1\x00"

# RNS Identity.KEYSIZE is 512 bits: X25519 public key (32) || Ed25519 public key (32).
IDENTITY_PUBLIC_KEY_LEN = 64
X25519_PUBLIC_KEY_LEN = 32
# RNS Reticulum.TRUNCATED_HASHLENGTH is 128 bits.
IDENTITY_HASH_LEN = 16
# Ed25519 signatures (RNS Identity.SIGLENGTH is 512 bits).
SIGNATURE_LEN = 64

# Largest KeyPackage accepted. A suite-1 KeyPackage with a basic credential is ~300 B; with the
# X-Wing suite (0x004D) the init and encryption keys are 1,216 B each, ~2.7 KB in all. 8 KiB leaves
# room for extensions and capabilities while keeping a flood of publishes cheap to refuse.
MAX_KEY_PACKAGE_SIZE = 8 * 1024
# The envelope adds the 64-byte public key, signature, timestamp and msgpack framing (~190 B);
# 512 B of headroom over the KeyPackage limit.
MAX_ENVELOPE_SIZE = MAX_KEY_PACKAGE_SIZE + 512

_OUTER_KEYS = frozenset({"body", "sig"})
_BODY_KEYS = frozenset({"kp", "last_resort", "identity_pub", "ts"})
# ``ts`` must fit the directory's integer columns and mean a real time.
_MAX_TS = (1 << 63) - 1


class EnvelopeError(RelayError):
    """A publish envelope was refused; ``code`` says why, for the typed error reply."""

    code = codes.ERR_BAD_ENVELOPE


class MalformedEnvelope(EnvelopeError):
    """Not a well-formed envelope: bad msgpack, missing, extra or duplicate keys, wrong types or lengths."""

    code = codes.ERR_MALFORMED_ENVELOPE


class OversizedEnvelope(EnvelopeError):
    """The envelope or its KeyPackage exceeds :data:`MAX_ENVELOPE_SIZE` / :data:`MAX_KEY_PACKAGE_SIZE`."""

    code = codes.ERR_OVERSIZED


class BadEnvelopeSignature(EnvelopeError):
    """The signature does not verify under the envelope's ``identity_pub`` (forged or altered)."""

    code = codes.ERR_BAD_SIGNATURE


@dataclass(frozen=True)
class KeyPackageEnvelope:
    """A decoded envelope whose signature has been verified (only :func:`open_envelope` makes one)."""

    key_package: bytes
    """MLSMessage-framed KeyPackage bytes, as signed."""
    last_resort: bool
    """Publisher's marking: reusable fallback rather than one-time."""
    identity_pub: bytes
    """64-byte RNS public key of the signer (X25519 || Ed25519)."""
    ts: int
    """Publisher's wall-clock Unix time (seconds) when it signed."""
    signature: bytes
    """The 64-byte Ed25519 signature."""
    raw: bytes
    """The whole envelope as received, kept so fetchers can re-verify it themselves."""

    @property
    def identity_hash(self) -> bytes:
        """RNS identity hash of the signer: what the KeyPackage credential must carry."""
        return identity_hash(self.identity_pub)


def identity_hash(public_key: bytes) -> bytes:
    """RNS identity hash: SHA-256 of the 64-byte public key, truncated to 16 bytes."""
    if len(public_key) != IDENTITY_PUBLIC_KEY_LEN:
        raise MalformedEnvelope(f"RNS public key must be {IDENTITY_PUBLIC_KEY_LEN} bytes, got {len(public_key)}")
    return hashlib.sha256(public_key).digest()[:IDENTITY_HASH_LEN]


def verify_identity_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is RNS ``Identity.sign(message)`` by the identity with ``public_key``."""
    if len(public_key) != IDENTITY_PUBLIC_KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(public_key[X25519_PUBLIC_KEY_LEN:])
        key.verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def seal_envelope(
    key_package: bytes,
    *,
    last_resort: bool,
    identity_pub: bytes,
    ts: int,
    sign: Callable[[bytes], bytes],
) -> bytes:
    """Build a signed envelope; ``sign`` is the publisher's ``RNS.Identity.sign`` (or equivalent).

    Taking a callable keeps RNS out of the core: the client passes its identity's bound method.
    """
    if len(identity_pub) != IDENTITY_PUBLIC_KEY_LEN:
        raise ValueError(f"identity_pub must be {IDENTITY_PUBLIC_KEY_LEN} bytes")
    if len(key_package) > MAX_KEY_PACKAGE_SIZE:
        raise OversizedEnvelope(f"KeyPackage of {len(key_package)} B exceeds {MAX_KEY_PACKAGE_SIZE} B")
    body = msgpack.packb(
        {"kp": bytes(key_package), "last_resort": bool(last_resort), "identity_pub": bytes(identity_pub), "ts": ts},
        use_bin_type=True,
    )
    signature = sign(ENVELOPE_SIGNATURE_LABEL + body)
    return msgpack.packb({"body": body, "sig": bytes(signature)}, use_bin_type=True)


def _strict_map(data: bytes, keys: frozenset[str], what: str) -> dict[str, object]:
    """Decode one msgpack map with exactly ``keys``: no trailing bytes, no duplicates, no extras."""
    try:
        pairs = msgpack.unpackb(
            data,
            raw=False,
            object_pairs_hook=list,
            strict_map_key=True,
            max_bin_len=MAX_ENVELOPE_SIZE,
            max_str_len=32,
            max_array_len=0,
            max_map_len=len(keys),
            max_ext_len=0,
        )
    except Exception as e:  # msgpack raises ValueError, ExtraData, FormatError, StackError, TypeError...
        raise MalformedEnvelope(f"{what}: not one msgpack map ({type(e).__name__})") from None
    if not isinstance(pairs, list):
        raise MalformedEnvelope(f"{what}: not a map")
    out = dict(pairs)
    if len(out) != len(pairs):
        raise MalformedEnvelope(f"{what}: duplicate keys")
    if set(out) != keys:
        raise MalformedEnvelope(f"{what}: keys {sorted(map(str, out))}, expected {sorted(keys)}")
    return out


def open_envelope(data: bytes) -> KeyPackageEnvelope:
    """Decode ``data`` strictly and verify its signature; raise an :class:`EnvelopeError` otherwise.

    This is the only way to obtain a :class:`KeyPackageEnvelope`, so holding one means the signature
    was good. It does not look inside the KeyPackage: the directory does that.
    """
    if len(data) > MAX_ENVELOPE_SIZE:
        raise OversizedEnvelope(f"envelope of {len(data)} B exceeds {MAX_ENVELOPE_SIZE} B")
    outer = _strict_map(data, _OUTER_KEYS, "envelope")
    body, sig = outer["body"], outer["sig"]
    if not isinstance(body, bytes) or not isinstance(sig, bytes) or len(sig) != SIGNATURE_LEN:
        raise MalformedEnvelope("envelope: body must be bytes and sig 64 bytes")
    fields = _strict_map(body, _BODY_KEYS, "envelope body")
    kp, last_resort, pub, ts = fields["kp"], fields["last_resort"], fields["identity_pub"], fields["ts"]
    if not isinstance(kp, bytes) or not kp:
        raise MalformedEnvelope("envelope body: kp must be non-empty bytes")
    if len(kp) > MAX_KEY_PACKAGE_SIZE:
        raise OversizedEnvelope(f"KeyPackage of {len(kp)} B exceeds {MAX_KEY_PACKAGE_SIZE} B")
    if not isinstance(last_resort, bool):
        raise MalformedEnvelope("envelope body: last_resort must be a bool")
    if not isinstance(pub, bytes) or len(pub) != IDENTITY_PUBLIC_KEY_LEN:
        raise MalformedEnvelope(f"envelope body: identity_pub must be {IDENTITY_PUBLIC_KEY_LEN} bytes")
    if type(ts) is not int or not 0 <= ts <= _MAX_TS:
        raise MalformedEnvelope("envelope body: ts must be a non-negative integer")
    if not verify_identity_signature(pub, sig, ENVELOPE_SIGNATURE_LABEL + body):
        raise BadEnvelopeSignature("envelope signature does not verify under identity_pub")
    return KeyPackageEnvelope(
        key_package=kp, last_resort=last_resort, identity_pub=pub, ts=ts, signature=sig, raw=bytes(data)
    )
