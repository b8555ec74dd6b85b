"""PublicGroup: the relay's keyless view — policy refusals, sequencing helpers, persistence."""

from __future__ import annotations

import dataclasses
import os

import pytest
from support_mls_group import NOW, SUITE, clock, ident

from ciris_av_plugin.mls import (
    CommitProcessed,
    Group,
    InvalidTreeError,
    KeyPackageBundle,
    Policy,
    PolicyRefusedError,
    ProposalReceived,
    PublicGroup,
    UnknownSenderError,
    UnsupportedMessageError,
)
from ciris_av_plugin.mls.framing import (
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PublicMessage,
    Sender,
    SenderType,
    protect_public,
    sign_content,
)
from ciris_av_plugin.mls.messages import Credential, Extension, ExternalSender, encode_external_senders
from ciris_av_plugin.mls.proposal_structs import (
    Commit,
    ExternalInit,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalOrRef,
    ReInit,
    Remove,
)
from ciris_av_plugin.mls.registries import ExtensionType, PSKType, WireFormat


def setup(n: int = 3) -> tuple[list[Group], PublicGroup]:
    creator = Group.create(b"relay-test", ident(0), SUITE, clock=clock)
    public = PublicGroup.from_group_info(creator.group_info(), clock=clock)
    bundles = [KeyPackageBundle.generate(ident(i), SUITE, clock=clock) for i in range(1, n)]
    pending = creator.commit(adds=[b.key_package for b in bundles])
    public.process(pending.commit)
    creator.merge_pending()
    return [creator] + [Group.join(pending.welcome, [b], clock=clock) for b in bundles], public


def member_proposal(g: Group, proposal: Proposal) -> bytes:
    """A member's PublicMessage proposal built by hand (Group has no API for PSK/ReInit proposals)."""
    e = g._e
    content = FramedContent(g.group_id, g.epoch, Sender.member(g.leaf_index), b"", proposal)
    ac = sign_content(SUITE, WireFormat.PUBLIC_MESSAGE, content, g._sig_priv, e.public.group_context)
    return MLSMessage(protect_public(SUITE, ac, e.secrets.membership_key, e.public.group_context)).to_bytes()


def test_relay_refuses_psk_reinit_and_external_init_proposals() -> None:
    groups, public = setup()
    psk = PreSharedKeyID(PSKType.EXTERNAL, os.urandom(SUITE.Nh), psk_id=b"ext")
    for proposal in (
        Proposal(PreSharedKey(psk)),
        Proposal(ReInit(b"new-group", 1)),
        Proposal(ExternalInit(b"\x01" * 32)),
    ):
        raw = member_proposal(groups[1], proposal)
        before = public.to_bytes()
        with pytest.raises(PolicyRefusedError):
            public.process(raw)
        assert public.to_bytes() == before
    # a permissive PublicGroup takes the PSK proposal (as the vectors' full client does)
    permissive = PublicGroup(PublicGroup.from_bytes(public.to_bytes())._s, Policy(), clock=clock)
    ev = permissive.process(member_proposal(groups[1], Proposal(PreSharedKey(psk))))
    assert isinstance(ev, ProposalReceived)
    with pytest.raises(UnsupportedMessageError):
        permissive.process(member_proposal(groups[1], Proposal(ReInit(b"new-group", 1))))


def test_relay_refuses_external_commits_and_private_handshakes() -> None:
    groups, public = setup()
    content = FramedContent(
        public.group_id, public.epoch, Sender(SenderType.NEW_MEMBER_COMMIT), b"",
        Commit([ProposalOrRef(proposal=Proposal(ExternalInit(b"\x01" * 32)))]),
    )
    ext = MLSMessage(PublicMessage(content, FramedContentAuthData(b"\x00" * 64, b"\x00" * 32))).to_bytes()
    with pytest.raises(PolicyRefusedError):
        public.process(ext)
    private = groups[1].leave(private=True)
    with pytest.raises(PolicyRefusedError):
        public.process(private)
    with pytest.raises(UnsupportedMessageError):
        public.process(groups[0].group_info())


def test_validate_does_not_change_state_and_welcome_matches_adds() -> None:
    groups, public = setup()
    joiner = KeyPackageBundle.generate(ident(9), SUITE, clock=clock)
    pending = groups[1].commit(adds=[joiner.key_package])
    before = public.to_bytes()
    staged = public.validate(pending.commit)
    assert public.to_bytes() == before
    assert public.welcome_matches(staged, pending.welcome)
    other = KeyPackageBundle.generate(ident(10), SUITE, clock=clock)
    groups[2].commit(adds=[other.key_package])
    assert not public.welcome_matches(staged, groups[2].pending.welcome)
    assert not public.welcome_matches(staged, b"garbage")
    ev = public.process(pending.commit)
    assert isinstance(ev, CommitProcessed) and ev.added == {3: ident(9)}
    assert public.epoch == 2 and public.members[3] == ident(9)


def test_proposals_survive_restart_and_are_committed_by_reference() -> None:
    groups, public = setup(4)
    leave = groups[3].leave()
    ev = public.process(leave)
    assert isinstance(ev, ProposalReceived) and ev.removed == ident(3) and ev.sender == 3
    public = PublicGroup.from_bytes(public.to_bytes(), clock=clock)
    for g in groups[:3]:
        g.process(leave)
    pending = groups[2].commit()
    ev = public.process(pending.commit)
    assert ev.removed == {3: ident(3)}
    groups[2].merge_pending()
    assert public.group_context == groups[2].group_context


def test_tree_served_separately() -> None:
    groups, public = setup()
    info = groups[0].group_info(ratchet_tree=False)
    with pytest.raises(InvalidTreeError):
        PublicGroup.from_group_info(info, clock=clock)
    rebuilt = PublicGroup.from_group_info(info, public.ratchet_tree(), clock=clock)
    assert rebuilt.group_context == public.group_context
    assert rebuilt.leaf_of(ident(2)) == 2 and rebuilt.leaf_count == 4


def test_external_sender_remove_proposal_committed_by_reference() -> None:
    """A sender listed in external_senders (§12.1.8.1) proposes a Remove; a member commits it."""
    ext_priv, ext_pub = SUITE.generate_signature_key_pair()
    senders = encode_external_senders([ExternalSender(ext_pub, Credential.basic(b"relay"))])
    creator = Group.create(b"ext", ident(0), SUITE, extensions=[Extension(ExtensionType.EXTERNAL_SENDERS, senders)],
                           clock=clock)
    public = PublicGroup.from_group_info(creator.group_info(), clock=clock)
    bundles = [KeyPackageBundle.generate(ident(i), SUITE, clock=clock) for i in (1, 2)]
    pending = creator.commit(adds=[b.key_package for b in bundles])
    public.process(pending.commit)
    creator.merge_pending()
    b = Group.join(pending.welcome, [bundles[0]], clock=clock)
    content = FramedContent(creator.group_id, creator.epoch, Sender(SenderType.EXTERNAL, 0), b"",
                            Proposal(Remove(2)))
    ac = sign_content(SUITE, WireFormat.PUBLIC_MESSAGE, content, ext_priv, None)
    raw = MLSMessage(PublicMessage(ac.content, ac.auth)).to_bytes()
    for target in (creator, b, public):
        ev = target.process(raw)
        assert isinstance(ev, ProposalReceived) and ev.sender is None and ev.removed == ident(2)
    pending = b.commit()
    assert pending.removed == {2: ident(2)}
    public.process(pending.commit)
    creator.process(pending.commit)
    b.merge_pending()
    assert public.group_context == b.group_context == creator.group_context
    # a forged external sender index is refused
    content.sender = Sender(SenderType.EXTERNAL, 5)
    ac = sign_content(SUITE, WireFormat.PUBLIC_MESSAGE, dataclasses.replace(content, epoch=b.epoch), ext_priv, None)
    with pytest.raises(UnknownSenderError):
        b.process(MLSMessage(PublicMessage(ac.content, ac.auth)).to_bytes())


def test_relay_checks_key_package_lifetimes_with_its_clock() -> None:
    from ciris_av_plugin.mls import InvalidKeyPackageError

    groups, public = setup()
    proposal = groups[1].propose_add(KeyPackageBundle.generate(ident(50), SUITE, clock=clock).key_package)
    late = PublicGroup.from_bytes(public.to_bytes(), clock=lambda: NOW + 365 * 24 * 3600)
    with pytest.raises(InvalidKeyPackageError):
        late.process(proposal)
    with pytest.raises(InvalidKeyPackageError):
        public.process(proposal, now=NOW - 2 * 24 * 3600)
    assert isinstance(public.process(proposal), ProposalReceived)


def test_group_context_extensions_committed_then_used() -> None:
    """A member commits external_senders (GroupContextExtensions); the listed sender may then propose."""
    groups, public = setup(3)
    ext_priv, ext_pub = SUITE.generate_signature_key_pair()
    senders = encode_external_senders([ExternalSender(ext_pub, Credential.basic(b"relay"))])
    pending = groups[1].commit(extensions=[Extension(ExtensionType.EXTERNAL_SENDERS, senders)])
    public.process(pending.commit)
    groups[1].merge_pending()
    groups[0].process(pending.commit)
    groups[2].process(pending.commit)
    assert public.group_context == groups[0].group_context
    assert public.group_context.extensions[0].extension_type == ExtensionType.EXTERNAL_SENDERS
    content = FramedContent(public.group_id, public.epoch, Sender(SenderType.EXTERNAL, 0), b"", Proposal(Remove(2)))
    ac = sign_content(SUITE, WireFormat.PUBLIC_MESSAGE, content, ext_priv, None)
    raw = MLSMessage(PublicMessage(ac.content, ac.auth)).to_bytes()
    assert public.process(raw).removed == ident(2)
    assert groups[0].process(raw).removed == ident(2)
    # an extension type a member does not support cannot be committed
    from ciris_av_plugin.mls import InvalidProposalError

    with pytest.raises(InvalidProposalError):
        groups[0].commit(extensions=[Extension(0xFF01, b"")])
    assert groups[0].pending is None


def test_proposals_per_epoch_are_bounded(monkeypatch) -> None:
    from ciris_av_plugin.mls import ProposalLimitError, proposals

    monkeypatch.setattr(proposals, "MAX_PROPOSALS_PER_EPOCH", 3)
    groups, public = setup(2)
    for _ in range(3):
        public.process(groups[1].propose_update())
    with pytest.raises(ProposalLimitError):
        groups[1].propose_update()  # the sender's own cache is bounded too
    fourth = groups[0].propose_update()
    before = public.to_bytes()
    with pytest.raises(ProposalLimitError):
        public.process(fourth)
    assert public.to_bytes() == before
