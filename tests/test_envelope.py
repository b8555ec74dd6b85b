"""The KeyPackage publish envelope, checked against a real RNS.Identity in both directions."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
import RNS
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from ciris_av_plugin.errors import RelayError
from ciris_av_plugin.protocol.envelope import (
    ENVELOPE_SIGNATURE_LABEL,
    MAX_ENVELOPE_SIZE,
    MAX_KEY_PACKAGE_SIZE,
    BadEnvelopeSignature,
    EnvelopeError,
    MalformedEnvelope,
    OversizedEnvelope,
    identity_hash,
    open_envelope,
    seal_envelope,
    verify_identity_signature,
)

KP = b"\x00\x01\x00\x05" + b"k" * 200  # opaque here: the envelope never parses the KeyPackage


@pytest.fixture(scope="module")
def rns_identity() -> RNS.Identity:
    return RNS.Identity()


class CryptographyIdentity:
    """An RNS-layout identity built only from ``cryptography`` (what a non-RNS signer would do)."""

    def __init__(self) -> None:
        self.x = X25519PrivateKey.generate()
        self.ed = Ed25519PrivateKey.generate()
        raw = (Encoding.Raw, PublicFormat.Raw)
        self.pub = self.x.public_key().public_bytes(*raw) + self.ed.public_key().public_bytes(*raw)

    def sign(self, data: bytes) -> bytes:
        return self.ed.sign(data)


def test_rns_signed_envelope_verifies_and_hash_matches_rns(rns_identity: RNS.Identity) -> None:
    env = seal_envelope(KP, last_resort=True, identity_pub=rns_identity.get_public_key(), ts=1_700_000_000,
                        sign=rns_identity.sign)
    opened = open_envelope(env)
    assert opened.key_package == KP
    assert opened.last_resort is True
    assert opened.ts == 1_700_000_000
    assert opened.identity_pub == rns_identity.get_public_key()
    assert opened.identity_hash == rns_identity.hash
    assert identity_hash(rns_identity.get_public_key()) == RNS.Identity.truncated_hash(rns_identity.get_public_key())
    assert opened.raw == env


def test_cryptography_signed_envelope_verifies_under_rns() -> None:
    me = CryptographyIdentity()
    env = seal_envelope(KP, last_resort=False, identity_pub=me.pub, ts=42, sign=me.sign)
    body = msgpack.unpackb(env)["body"]
    sig = msgpack.unpackb(env)["sig"]
    peer = RNS.Identity(create_keys=False)
    assert peer.load_public_key(me.pub)
    assert peer.validate(sig, ENVELOPE_SIGNATURE_LABEL + body)
    assert peer.hash == identity_hash(me.pub) == open_envelope(env).identity_hash


def test_verify_identity_signature_matches_rns_on_raw_messages(rns_identity: RNS.Identity) -> None:
    msg = b"arbitrary data RNS would sign"
    sig = rns_identity.sign(msg)
    assert verify_identity_signature(rns_identity.get_public_key(), sig, msg)
    assert not verify_identity_signature(rns_identity.get_public_key(), sig, msg + b"!")
    # the X25519 half is not the signing key: swapping halves must fail
    pub = rns_identity.get_public_key()
    assert not verify_identity_signature(pub[32:] + pub[:32], sig, msg)


def test_label_separates_envelope_signatures_from_plain_rns_signatures(rns_identity: RNS.Identity) -> None:
    """A signature RNS made over the bare body (say, for something else) is not an envelope signature."""
    env = seal_envelope(KP, last_resort=False, identity_pub=rns_identity.get_public_key(), ts=1,
                        sign=rns_identity.sign)
    body = msgpack.unpackb(env)["body"]
    forged = msgpack.packb({"body": body, "sig": rns_identity.sign(body)})
    with pytest.raises(BadEnvelopeSignature):
        open_envelope(forged)


def test_forged_signature_by_another_identity_is_refused(rns_identity: RNS.Identity) -> None:
    mallory = RNS.Identity()
    env = seal_envelope(KP, last_resort=False, identity_pub=rns_identity.get_public_key(), ts=1,
                        sign=mallory.sign)
    with pytest.raises(BadEnvelopeSignature) as ei:
        open_envelope(env)
    assert ei.value.code == "bad-signature"
    assert isinstance(ei.value, RelayError)


def _tamper(env: bytes, **changes: object) -> bytes:
    outer = msgpack.unpackb(env)
    body = msgpack.unpackb(outer["body"])
    body.update(changes)
    return msgpack.packb({"body": msgpack.packb(body), "sig": outer["sig"]})


@pytest.mark.parametrize(
    "change",
    [{"kp": KP + b"x"}, {"last_resort": True}, {"ts": 2}],
    ids=["kp", "last_resort", "ts"],
)
def test_any_altered_field_breaks_the_signature(rns_identity: RNS.Identity, change: dict) -> None:
    env = seal_envelope(KP, last_resort=False, identity_pub=rns_identity.get_public_key(), ts=1,
                        sign=rns_identity.sign)
    with pytest.raises(BadEnvelopeSignature):
        open_envelope(_tamper(env, **change))


def test_swapping_in_another_public_key_breaks_the_signature(rns_identity: RNS.Identity) -> None:
    env = seal_envelope(KP, last_resort=False, identity_pub=rns_identity.get_public_key(), ts=1,
                        sign=rns_identity.sign)
    with pytest.raises(BadEnvelopeSignature):
        open_envelope(_tamper(env, identity_pub=RNS.Identity().get_public_key()))


def _signed(body_map: dict, ident: CryptographyIdentity) -> bytes:
    body = msgpack.packb(body_map)
    return msgpack.packb({"body": body, "sig": ident.sign(ENVELOPE_SIGNATURE_LABEL + body)})


@pytest.mark.parametrize(
    "body",
    [
        {"kp": KP, "last_resort": False, "ts": 1},  # missing identity_pub (filled below when present)
        {"kp": KP, "last_resort": 0, "identity_pub": None, "ts": 1},  # int instead of bool
        {"kp": "text", "last_resort": False, "identity_pub": None, "ts": 1},  # str instead of bytes
        {"kp": b"", "last_resort": False, "identity_pub": None, "ts": 1},  # empty KeyPackage
        {"kp": KP, "last_resort": False, "identity_pub": None, "ts": -1},  # negative ts
        {"kp": KP, "last_resort": False, "identity_pub": None, "ts": 1.5},  # float ts
        {"kp": KP, "last_resort": False, "identity_pub": None, "ts": True},  # bool is not an int here
        {"kp": KP, "last_resort": False, "identity_pub": None, "ts": 1, "extra": 1},  # unknown key
        {"kp": KP, "last_resort": False, "identity_pub": b"short", "ts": 1},  # wrong key length
    ],
)
def test_malformed_bodies_are_refused_even_when_correctly_signed(body: dict) -> None:
    me = CryptographyIdentity()
    body = {k: (me.pub if v is None else v) for k, v in body.items()}
    with pytest.raises(MalformedEnvelope) as ei:
        open_envelope(_signed(body, me))
    assert ei.value.code == "malformed-envelope"


def test_duplicate_keys_and_trailing_bytes_are_refused() -> None:
    me = CryptographyIdentity()
    good = _signed({"kp": KP, "last_resort": False, "identity_pub": me.pub, "ts": 1}, me)
    open_envelope(good)
    with pytest.raises(MalformedEnvelope):
        open_envelope(good + b"\x00")
    # a map header claiming 3 pairs with "sig" twice
    outer = msgpack.unpackb(good)
    dup = b"\x83" + msgpack.packb("body") + msgpack.packb(outer["body"]) + (msgpack.packb("sig") + msgpack.packb(outer["sig"])) * 2
    with pytest.raises(MalformedEnvelope):
        open_envelope(dup)
    with pytest.raises(MalformedEnvelope):
        open_envelope(msgpack.packb([outer["body"], outer["sig"]]))


def test_oversized_envelope_and_key_package_are_refused() -> None:
    me = CryptographyIdentity()
    with pytest.raises(OversizedEnvelope) as ei:
        open_envelope(b"\x00" * (MAX_ENVELOPE_SIZE + 1))
    assert ei.value.code == "oversized"
    big = _signed({"kp": b"k" * (MAX_KEY_PACKAGE_SIZE + 1), "last_resort": False, "identity_pub": me.pub, "ts": 1}, me)
    assert len(big) <= MAX_ENVELOPE_SIZE
    with pytest.raises(OversizedEnvelope):
        open_envelope(big)
    with pytest.raises(OversizedEnvelope):
        seal_envelope(b"k" * (MAX_KEY_PACKAGE_SIZE + 1), last_resort=False, identity_pub=me.pub, ts=1, sign=me.sign)
    # the largest allowed KeyPackage still fits in an envelope
    open_envelope(seal_envelope(b"k" * MAX_KEY_PACKAGE_SIZE, last_resort=True, identity_pub=me.pub,
                                ts=2**40, sign=me.sign))


def test_identity_hash_is_truncated_sha256() -> None:
    pub = bytes(range(64))
    assert identity_hash(pub) == hashlib.sha256(pub).digest()[:16]
    with pytest.raises(EnvelopeError):
        identity_hash(pub[:63])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_envelope_errors(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope(data)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=255))
def test_any_single_byte_flip_is_refused(pos: int, xor: int) -> None:
    me = CryptographyIdentity()
    env = bytearray(seal_envelope(KP, last_resort=False, identity_pub=me.pub, ts=7, sign=me.sign))
    if xor == 0:
        xor = 1
    env[pos % len(env)] ^= xor
    with pytest.raises(EnvelopeError):
        open_envelope(bytes(env))
