"""RFC 9420 structures: GREASE survives, closed selectors refuse unknown values, signatures bind."""

from __future__ import annotations

import dataclasses

import pytest
from support_mls_tree import SUITE, new_member

from ciris_av_plugin.errors import MLSError
from ciris_av_plugin.mls.codec import DecodeError
from ciris_av_plugin.mls.messages import (
    ApplicationId,
    Capabilities,
    Credential,
    Extension,
    ExternalPub,
    ExternalSender,
    GroupContext,
    RequiredCapabilities,
    decode_external_senders,
    encode_external_senders,
)
from ciris_av_plugin.mls.proposal_structs import PreSharedKeyID, Proposal, ProposalOrRef
from ciris_av_plugin.mls.registries import CredentialType, LeafNodeSource, ProtocolVersion
from ciris_av_plugin.mls.struct import Struct
from ciris_av_plugin.mls.tree_structs import KeyPackage, LeafNode, decode_ratchet_tree
from ciris_av_plugin.mls.welcome_structs import GroupInfo, GroupSecrets

GREASE = 0x0A0A  # §13.5 GREASE values are 0x?A?A


def test_grease_values_round_trip_in_capabilities_and_extensions() -> None:
    caps = Capabilities([1, GREASE], [1, GREASE], [GREASE], [GREASE], [1, GREASE])
    data = caps.to_bytes()
    back = Capabilities.from_bytes(data)
    assert back == caps and back.to_bytes() == data
    assert back.versions[0] is ProtocolVersion.MLS10 and back.versions[1] == GREASE
    ext = Extension(GREASE, b"\x01\x02")
    assert Extension.from_bytes(ext.to_bytes()).extension_type == GREASE


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (Credential, b"\x00\x07\x01a"),  # unknown credential type: no length prefix to skip it
        (Proposal, b"\x00\x09\x00"),  # unknown proposal type
        (ProposalOrRef, b"\x03\x00"),
        (PreSharedKeyID, b"\x03\x00"),
        (PreSharedKeyID, b"\x02\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),  # bad usage
        (GroupSecrets, b"\x00\x02"),  # optional presence byte 2
    ],
)
def test_closed_selectors_refuse_unknown_values(cls: type[Struct], data: bytes) -> None:
    with pytest.raises(DecodeError):
        cls.from_bytes(data)


def test_unknown_node_type_and_leaf_source_are_decode_errors() -> None:
    leaf = new_member(b"a").key_package.leaf_node
    raw = bytearray(leaf.to_bytes())
    pos = len(leaf.encryption_key) + 1 + len(leaf.signature_key) + 1
    pos += len(leaf.credential.to_bytes()) + len(leaf.capabilities.to_bytes())
    assert raw[pos] == LeafNodeSource.KEY_PACKAGE
    raw[pos] = 9
    with pytest.raises(DecodeError):
        LeafNode.from_bytes(bytes(raw))
    with pytest.raises(DecodeError):
        decode_ratchet_tree(b"\x02\x01\x03")


def test_key_package_create_signs_both_layers_and_ref_is_stable() -> None:
    member = new_member(b"alice")
    kp = KeyPackage.from_bytes(member.key_package.to_bytes())
    assert kp.verify(SUITE) and kp.leaf_node.verify(SUITE)
    assert kp.ref(SUITE) == member.key_package.ref(SUITE) and len(kp.ref(SUITE)) == SUITE.Nh
    assert kp.init_key != kp.leaf_node.encryption_key
    forged = dataclasses.replace(kp, init_key=SUITE.generate_hpke_key_pair()[1])
    assert not forged.verify(SUITE)


def test_update_leaf_signature_binds_group_and_position() -> None:
    member = new_member(b"bob")
    leaf = dataclasses.replace(member.key_package.leaf_node, leaf_node_source=LeafNodeSource.UPDATE, lifetime=None)
    leaf.sign(SUITE, member.sig_priv, b"group", 3)
    assert leaf.verify(SUITE, b"group", 3)
    assert not leaf.verify(SUITE, b"group", 4)
    assert not leaf.verify(SUITE, b"other", 3)
    assert not leaf.verify(SUITE)  # no context: cannot be checked, so not valid
    with pytest.raises(MLSError):
        leaf.sign(SUITE, member.sig_priv)


def test_group_info_signature() -> None:
    member = new_member(b"carol")
    gc = GroupContext(1, b"g", 7, b"t" * 32, b"c" * 32)
    gi = GroupInfo(gc, [], b"tag", 0)
    gi.sign(SUITE, member.sig_priv)
    back = GroupInfo.from_bytes(gi.to_bytes())
    assert back.verify(SUITE, member.key_package.leaf_node.signature_key)
    back.signer = 1
    assert not back.verify(SUITE, member.key_package.leaf_node.signature_key)


def test_external_senders_and_required_capabilities_bodies() -> None:
    senders = [ExternalSender(b"k" * 32, Credential.basic(b"relay"))]
    assert decode_external_senders(encode_external_senders(senders)) == senders
    rc = RequiredCapabilities([GREASE], [GREASE], [1])
    assert RequiredCapabilities.from_bytes(rc.to_bytes()) == rc


def test_x509_credential_kept_as_opaque_chain() -> None:
    cred = Credential(CredentialType.X509, certificates=[b"cert1", b"cert2"])
    assert Credential.from_bytes(cred.to_bytes()) == cred


def test_external_pub_and_application_id_bodies() -> None:
    pub = ExternalPub(b"x" * 32)
    assert ExternalPub.from_bytes(pub.to_bytes()) == pub
    app = ApplicationId(b"rns-identity-hash")
    assert ApplicationId.from_bytes(app.to_bytes()) == app
    with pytest.raises(DecodeError):
        ExternalPub.from_bytes(pub.to_bytes() + b"\x00")
