"""Fuzzing the framing decoders (and MLSMessage) with random and mutated-valid bytes.

The only exceptions allowed out of a decoder are MLSError subclasses (DecodeError among them); a
decode that succeeds must re-encode to the same bytes (the codec is strict and byte-exact).
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support_vectors import load_mls

from ciris_av_plugin.errors import MLSError
from ciris_av_plugin.mls.codec import Reader, decode_all
from ciris_av_plugin.mls.framing import (
    AuthenticatedContent,
    ContentType,
    FramedContent,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    SenderData,
    _decode_private_content,
)

MAX_EXAMPLES = 300


def _seeds() -> dict[str, list[bytes]]:
    """Valid encodings from the mlswg vectors, grouped by the decoder that reads them."""
    seeds: dict[str, list[bytes]] = {"mls": [], "ac": []}
    for case in load_mls("message-protection"):
        for key in ("proposal_pub", "proposal_priv", "commit_pub", "commit_priv", "application_priv"):
            seeds["mls"].append(bytes.fromhex(case[key]))
    for case in load_mls("messages")[:20]:
        for key in ("public_message_application", "public_message_proposal", "public_message_commit",
                    "private_message", "mls_welcome", "mls_group_info", "mls_key_package"):
            if key in case:
                seeds["mls"].append(bytes.fromhex(case[key]))
    for case in load_mls("transcript-hashes"):
        seeds["ac"].append(bytes.fromhex(case["authenticated_content"]))
    return seeds


SEEDS = _seeds()


def _bodies_of(kind: type) -> list[bytes]:
    """Bodies (without the MLSMessage header) of the seed messages of one framing type."""
    out = []
    for raw in SEEDS["mls"]:
        msg = MLSMessage.from_bytes(raw)
        if isinstance(msg.body, kind):
            out.append(msg.body.to_bytes())
    return out


DECODERS: dict[str, tuple[Callable[[Reader], object], list[bytes]]] = {
    "mls": (MLSMessage.decode, SEEDS["mls"]),
    "authenticated_content": (AuthenticatedContent.decode, SEEDS["ac"]),
    "public_message": (PublicMessage.decode, _bodies_of(PublicMessage)),
    "private_message": (PrivateMessage.decode, _bodies_of(PrivateMessage)),
    "framed_content": (
        FramedContent.decode,
        [decode_all(b, AuthenticatedContent.decode).content.to_bytes() for b in SEEDS["ac"]],
    ),
    "sender": (Sender.decode, [b"\x01\x00\x00\x00\x01", b"\x03", b"\x04"]),
    "sender_data": (SenderData.decode, [bytes(12)]),
}


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        pos = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xBF, 0xC0, 0xFF]))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos]
    return bytes(data)


def _check(fn: Callable[[Reader], object], data: bytes) -> None:
    try:
        value = decode_all(data, fn)
    except MLSError:
        return
    assert value.to_bytes() == data  # type: ignore[attr-defined]


_fuzz = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(st.sampled_from(sorted(DECODERS)), st.data())
def test_mutated_valid_inputs(name: str, data: st.DataObject) -> None:
    fn, seeds = DECODERS[name]
    _check(fn, data.draw(mutated(seeds)))


@_fuzz
@given(st.sampled_from(sorted(DECODERS)), st.binary(max_size=512))
def test_random_inputs(name: str, blob: bytes) -> None:
    _check(DECODERS[name][0], blob)


@_fuzz
@given(st.sampled_from(list(ContentType)[1:]), st.binary(max_size=256))
def test_private_message_content(content_type: ContentType, blob: bytes) -> None:
    try:
        _decode_private_content(blob, content_type)
    except MLSError:
        pass


# Seeds per decoder: every message-protection case gives 5 messages and each of the first 20
# messages cases all 7 keys; the bodies are those of the MLSMessage seeds of that framing type.
SEED_COUNTS = {"mls": 7 * 5 + 20 * 7, "authenticated_content": 7, "public_message": 74, "private_message": 41,
               "framed_content": 7, "sender": 3, "sender_data": 1}


def test_seeds_decode() -> None:
    assert {name: len(seeds) for name, (_, seeds) in DECODERS.items()} == SEED_COUNTS
    for _name, (fn, seeds) in DECODERS.items():
        for raw in seeds:
            _check(fn, raw)
            decode_all(raw, fn)


# --- unprotecting mutated messages: only MLSError, never a half-consumed key --------------------

_MP = next(c for c in load_mls("message-protection") if c["cipher_suite"] == 1)


def _unprotect_any(wire: bytes) -> None:
    from ciris_av_plugin.mls.crypto import CipherSuite
    from ciris_av_plugin.mls.framing import unprotect_private, unprotect_public
    from ciris_av_plugin.mls.messages import GroupContext
    from ciris_av_plugin.mls.secret_tree import SecretTree

    cs = CipherSuite(1)
    h = bytes.fromhex
    gc = GroupContext(1, h(_MP["group_id"]), _MP["epoch"], h(_MP["tree_hash"]), h(_MP["confirmed_transcript_hash"]), [])
    sig_pub = h(_MP["signature_pub"])
    msg = MLSMessage.from_bytes(wire).body
    if isinstance(msg, PublicMessage):
        unprotect_public(cs, msg, h(_MP["membership_key"]), gc, sig_pub)
    elif isinstance(msg, PrivateMessage):
        tree = SecretTree(cs, h(_MP["encryption_secret"]), 2)
        unprotect_private(cs, msg, tree, h(_MP["sender_data_secret"]), gc, lambda leaf: sig_pub if leaf < 2 else None)


_PROTECTED = [bytes.fromhex(_MP[k]) for k in ("proposal_pub", "commit_pub", "proposal_priv", "commit_priv", "application_priv")]


def test_protected_seeds_unprotect() -> None:
    for wire in _PROTECTED:
        _unprotect_any(wire)


@_fuzz
@given(mutated(_PROTECTED))
def test_unprotect_mutated_messages(wire: bytes) -> None:
    try:
        _unprotect_any(wire)
    except MLSError:
        pass
