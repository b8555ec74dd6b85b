"""Framing: PublicMessage/PrivateMessage protection refuses tampering and never half-updates state."""

from __future__ import annotations

import pytest

from ciris_av_plugin.mls.codec import DecodeError
from ciris_av_plugin.mls.crypto import CipherSuite
from ciris_av_plugin.mls.errors import CryptoError, ProtocolError, SecretTreeError
from ciris_av_plugin.mls.framing import (
    ContentType,
    FramedContent,
    MLSMessage,
    PublicMessage,
    Sender,
    SenderType,
    _decode_private_content,
    protect_private,
    protect_public,
    sign_content,
    unprotect_private,
    unprotect_public,
)
from ciris_av_plugin.mls.messages import GroupContext
from ciris_av_plugin.mls.proposal_structs import Commit, Proposal, Remove
from ciris_av_plugin.mls.registries import WireFormat
from ciris_av_plugin.mls.secret_tree import RatchetType, SecretTree

CS = CipherSuite(1)
SIG_PRIV, SIG_PUB = CS.generate_signature_key_pair()
GC = GroupContext(1, b"group", 5, b"\x01" * 32, b"\x02" * 32, [])
MEMBERSHIP_KEY = b"\x03" * 32
ENC_SECRET = b"\x04" * 32
SDS = b"\x05" * 32
LEAF = 1


def _keys(leaf: int) -> bytes | None:
    return SIG_PUB if leaf == LEAF else None


def _content(body) -> FramedContent:
    return FramedContent(GC.group_id, GC.epoch, Sender.member(LEAF), b"ad", body)


def _proposal() -> Proposal:
    return Proposal(Remove(0))


def _public(body=None) -> PublicMessage:
    ac = sign_content(CS, WireFormat.PUBLIC_MESSAGE, _content(body or _proposal()), SIG_PRIV, GC)
    return protect_public(CS, ac, MEMBERSHIP_KEY, GC)


def test_public_roundtrip_through_mlsmessage() -> None:
    wire = MLSMessage(_public()).to_bytes()
    msg = MLSMessage.from_bytes(wire)
    assert msg.wire_format == WireFormat.PUBLIC_MESSAGE
    ac = unprotect_public(CS, msg.body, MEMBERSHIP_KEY, GC, SIG_PUB)
    assert ac.content.body == _proposal()
    # a keyless relay checks the signature only
    assert unprotect_public(CS, msg.body, None, GC, SIG_PUB) == ac


def test_public_tampering_detected() -> None:
    msg = _public()
    with pytest.raises(CryptoError):
        unprotect_public(CS, msg, b"\x00" * 32, GC, SIG_PUB)
    with pytest.raises(CryptoError):
        unprotect_public(CS, msg, MEMBERSHIP_KEY, GC, CS.generate_signature_key_pair()[1])
    msg.content.authenticated_data = b"changed"
    with pytest.raises(CryptoError):
        unprotect_public(CS, msg, MEMBERSHIP_KEY, GC, SIG_PUB)
    with pytest.raises(CryptoError):
        unprotect_public(CS, msg, None, GC, SIG_PUB)


def test_public_wrong_epoch_or_group() -> None:
    msg = _public()
    for gc in (
        GroupContext(1, b"group", 6, GC.tree_hash, GC.confirmed_transcript_hash, []),
        GroupContext(1, b"other", 5, GC.tree_hash, GC.confirmed_transcript_hash, []),
    ):
        with pytest.raises(ProtocolError):
            unprotect_public(CS, msg, MEMBERSHIP_KEY, gc, SIG_PUB)


def test_application_data_never_public() -> None:
    with pytest.raises(ProtocolError):
        sign_content(CS, WireFormat.PUBLIC_MESSAGE, _content(b"hello"), SIG_PRIV, GC)


def test_commit_needs_confirmation_tag() -> None:
    ac = sign_content(CS, WireFormat.PUBLIC_MESSAGE, _content(Commit()), SIG_PRIV, GC)
    with pytest.raises(ProtocolError):
        protect_public(CS, ac, MEMBERSHIP_KEY, GC)
    ac.auth.confirmation_tag = b"\x09" * 32
    msg = protect_public(CS, ac, MEMBERSHIP_KEY, GC)
    back = MLSMessage.from_bytes(MLSMessage(msg).to_bytes()).body
    assert unprotect_public(CS, back, MEMBERSHIP_KEY, GC, SIG_PUB).auth.confirmation_tag == b"\x09" * 32


def _private(body=b"hello", padding: int = 0, tree: SecretTree | None = None):
    ac = sign_content(CS, WireFormat.PRIVATE_MESSAGE, _content(body), SIG_PRIV, GC)
    return protect_private(CS, ac, tree or SecretTree(CS, ENC_SECRET, 2), SDS, padding=padding)


@pytest.mark.parametrize("body", [b"hello", _proposal(), None])
def test_private_roundtrip(body) -> None:
    if body is None:
        ac0 = sign_content(CS, WireFormat.PRIVATE_MESSAGE, _content(Commit()), SIG_PRIV, GC, b"\x07" * 32)
        msg = protect_private(CS, ac0, SecretTree(CS, ENC_SECRET, 2), SDS, padding=100)
        body = Commit()
    else:
        msg = _private(body, padding=33)
    wire = MLSMessage(msg).to_bytes()
    back = MLSMessage.from_bytes(wire).body
    ac = unprotect_private(CS, back, SecretTree(CS, ENC_SECRET, 2), SDS, GC, _keys)
    assert ac.content.body == body
    assert ac.content.sender == Sender(SenderType.MEMBER, LEAF)
    assert ac.content.authenticated_data == b"ad"


def test_private_tamper_leaves_ratchet_untouched() -> None:
    msg = _private()
    receiver = SecretTree(CS, ENC_SECRET, 2)
    good_ct = msg.ciphertext
    msg.ciphertext = good_ct[:-1] + bytes([good_ct[-1] ^ 1])
    with pytest.raises(CryptoError):
        unprotect_private(CS, msg, receiver, SDS, GC, _keys)
    msg.ciphertext = good_ct
    msg.authenticated_data = b"xx"
    with pytest.raises(CryptoError):
        unprotect_private(CS, msg, receiver, SDS, GC, _keys)
    msg.authenticated_data = b"ad"
    assert receiver.ratchet(LEAF, RatchetType.APPLICATION).generation == 0
    assert unprotect_private(CS, msg, receiver, SDS, GC, _keys).content.body == b"hello"
    with pytest.raises(SecretTreeError):  # a replay finds its key deleted
        unprotect_private(CS, msg, receiver, SDS, GC, _keys)


def test_private_wrong_signature_key_keeps_key() -> None:
    msg = _private()
    receiver = SecretTree(CS, ENC_SECRET, 2)
    other = CS.generate_signature_key_pair()[1]
    with pytest.raises(CryptoError):
        unprotect_private(CS, msg, receiver, SDS, GC, lambda leaf: other)
    assert unprotect_private(CS, msg, receiver, SDS, GC, _keys).content.body == b"hello"


def test_private_blank_sender_leaf() -> None:
    with pytest.raises(ProtocolError):
        unprotect_private(CS, _private(), SecretTree(CS, ENC_SECRET, 2), SDS, GC, lambda leaf: None)


def test_private_wrong_sender_data_secret() -> None:
    with pytest.raises(CryptoError):
        unprotect_private(CS, _private(), SecretTree(CS, ENC_SECRET, 2), b"\x00" * 32, GC, _keys)


def test_padding_must_be_zero() -> None:
    plain = b"\x02hi" + b"\x00"  # application_data "hi", empty signature, then padding
    body, auth = _decode_private_content(plain + b"\x00\x00", ContentType.APPLICATION)
    assert body == b"hi" and auth.signature == b""
    with pytest.raises(DecodeError):
        _decode_private_content(plain + b"\x00\x01", ContentType.APPLICATION)


def test_padding_limit() -> None:
    with pytest.raises(ProtocolError):
        _private(padding=1 << 20)


def test_proposal_ref_is_stable() -> None:
    ac = _public().authenticated_content()
    assert ac.proposal_ref(CS) == CS.make_proposal_ref(ac.to_bytes())
    assert len(ac.proposal_ref(CS)) == CS.Nh


def test_mlsmessage_rejects_unknown_version_and_wire_format() -> None:
    wire = MLSMessage(_public()).to_bytes()
    with pytest.raises(DecodeError):
        MLSMessage.from_bytes(b"\x00\x02" + wire[2:])
    with pytest.raises(DecodeError):
        MLSMessage.from_bytes(wire[:2] + b"\x00\x09" + wire[4:])
    with pytest.raises(DecodeError):
        MLSMessage.from_bytes(wire + b"\x00")


def test_sender_type_content_rules() -> None:
    from ciris_av_plugin.mls.framing import check_sender_content
    from ciris_av_plugin.mls.proposal_structs import ExternalInit

    def content(sender: Sender, body) -> FramedContent:
        return FramedContent(GC.group_id, GC.epoch, sender, b"", body)

    check_sender_content(content(Sender(SenderType.EXTERNAL, 0), _proposal()))
    check_sender_content(content(Sender(SenderType.NEW_MEMBER_COMMIT), Commit()))
    for bad in (
        content(Sender(SenderType.EXTERNAL, 0), Proposal(ExternalInit(b"x"))),
        content(Sender(SenderType.EXTERNAL, 0), Commit()),
        content(Sender(SenderType.NEW_MEMBER_PROPOSAL), _proposal()),
        content(Sender(SenderType.NEW_MEMBER_COMMIT), _proposal()),
    ):
        with pytest.raises(ProtocolError):
            check_sender_content(bad)
    # enforced on receipt too: a relayed PublicMessage from an external sender with a commit
    ac = sign_content(CS, WireFormat.PUBLIC_MESSAGE, content(Sender.member(LEAF), _proposal()), SIG_PRIV, GC)
    msg = protect_public(CS, ac, MEMBERSHIP_KEY, GC)
    msg.content.sender = Sender(SenderType.NEW_MEMBER_PROPOSAL)
    with pytest.raises(ProtocolError):
        unprotect_public(CS, msg, None, GC, SIG_PUB)
