"""Round trips of the Group state machine with 2..32 members, followed by a PublicGroup.

After every epoch every member (and the relay's PublicGroup) must agree: epoch, GroupContext,
roster, epoch authenticator and exporter output.
"""

from __future__ import annotations

import random

import pytest
from support_mls_group import SUITE, bundle, clock, ident

from ciris_av_plugin.mls import (
    ApplicationMessage,
    CommitProcessed,
    DuplicateMemberError,
    FutureEpochError,
    Group,
    GroupInactiveError,
    InvalidCommitError,
    OwnCommitError,
    PendingCommitError,
    Policy,
    ProposalReceived,
    PublicGroup,
    StaleEpochError,
    UnknownMemberError,
)

GROUP_ID = b"\x42" * 16


class World:
    """Members keyed by identity, a relay PublicGroup, and the delivery of each commit to all."""

    def __init__(self) -> None:
        self.members: dict[bytes, Group] = {}
        creator = Group.create(GROUP_ID, ident(0), SUITE, clock=clock)
        self.members[ident(0)] = creator
        self.public = PublicGroup.from_group_info(creator.group_info(), clock=clock)
        self.next_id = 1

    def commit(self, by: bytes, **kw) -> CommitProcessed:
        """``by`` commits; the relay follows, the others process, joiners join; all must agree."""
        g = self.members[by]
        new = kw.pop("new", 0)
        bundles = [bundle(self.next_id + i) for i in range(new)]
        self.next_id += new
        pending = g.commit(adds=[b.key_package for b in bundles], **kw)
        self.public.process(pending.commit)
        event = g.merge_pending()
        for other_id, other in list(self.members.items()):
            if other_id == by:
                continue
            ev = other.process(pending.commit)
            assert isinstance(ev, CommitProcessed)
            if ev.self_removed:
                assert not other.active
                del self.members[other_id]
        if bundles:
            assert pending.welcome is not None
            for b in bundles:
                joined = Group.join(pending.welcome, [b], clock=clock)
                self.members[b.identity] = joined
        else:
            assert pending.welcome is None
        self.check()
        return event

    def check(self) -> None:
        groups = list(self.members.values())
        ref = groups[0]
        secret = ref.export_secret(b"test", b"ctx", 32)
        for g in groups:
            assert g.epoch == ref.epoch
            assert g.group_context == ref.group_context
            assert g.epoch_authenticator == ref.epoch_authenticator
            assert g.export_secret(b"test", b"ctx", 32) == secret
            assert g.members == ref.members
            assert g.members[g.leaf_index] == g.identity
        assert set(ref.members.values()) == set(self.members)
        assert self.public.group_context.to_bytes() == ref.group_context.to_bytes()
        assert self.public.members == ref.members


def grow(world: World, n: int, batch: int) -> None:
    while len(world.members) < n:
        committer = sorted(world.members)[len(world.members) % len(world.members)]
        world.commit(committer, new=min(batch, n - len(world.members)))


@pytest.mark.parametrize("n", [2, 3, 5, 8, 17, 32])
def test_round_trip_grow_churn_shrink(n: int) -> None:
    rng = random.Random(n)
    world = World()
    grow(world, n, batch=max(1, n // 3))
    assert len(world.members) == n
    # forced-path (empty) commits from different members
    for committer in rng.sample(sorted(world.members), min(3, n)):
        world.commit(committer, force_path=True)
    # removes by identity, batched, from a member that stays
    if n > 2:
        ids = sorted(world.members)
        committer = ids[0]
        victims = rng.sample(ids[1:], max(1, (n - 1) // 3))
        ev = world.commit(committer, removes=victims)
        assert set(ev.removed.values()) == set(victims)
    # remove + add in one commit, then regrow into the freed leaves (indices are reused)
    ids = sorted(world.members)
    if len(ids) > 1:
        before = set(world.members[ids[0]].members)
        world.commit(ids[-1], removes=[ids[0]] if ids[0] != ids[-1] else [], new=2)
        assert len(set(world.members[ids[-1]].members) & before) >= 1
    # a leave by proposal, committed by another member
    ids = sorted(world.members)
    if len(ids) > 2:
        leaver, committer = ids[1], ids[2]
        proposal = world.members[leaver].leave()
        world.public.process(proposal)
        for other_id, other in world.members.items():
            if other_id != leaver:
                ev = other.process(proposal)
                assert isinstance(ev, ProposalReceived) and ev.removed == leaver
        ev = world.commit(committer)
        assert leaver not in world.members and leaver in ev.removed.values()


def test_batched_adds_of_many_then_remove_most() -> None:
    world = World()
    world.commit(ident(0), new=31)
    assert len(world.members) == 32
    world.commit(ident(5), removes=[ident(i) for i in range(6, 30)])
    assert len(world.members) == 8
    assert world.members[ident(0)].leaf_count == 32  # leaves 30, 31 keep the tree wide
    world.commit(ident(31), removes=[ident(30)])
    world.commit(ident(1), removes=[ident(31)])
    assert world.members[ident(0)].leaf_count == 8  # truncated (§7.7)


def test_private_handshakes_and_application_messages() -> None:
    world = World()
    world.commit(ident(0), new=3)
    a, b = world.members[ident(0)], world.members[ident(2)]
    pending = b.commit(force_path=True, private=True)
    b.merge_pending()
    for i in (0, 1, 3):
        world.members[ident(i)].process(pending.commit)
    # the relay policy refuses a private handshake (typed), the permissive one cannot read it
    from ciris_av_plugin.mls import PolicyRefusedError

    with pytest.raises(PolicyRefusedError):
        world.public.process(pending.commit)
    msg = a.encrypt(b"hello", b"aad")
    for i in (1, 2, 3):
        ev = world.members[ident(i)].process(msg)
        assert ev == ApplicationMessage(a.leaf_index, b"hello", b"aad")
    # a private leave proposal, committed privately by reference
    leave = world.members[ident(3)].leave(private=True)
    for i in (0, 1, 2):
        assert world.members[ident(i)].process(leave).removed == ident(3)
    pending = world.members[ident(1)].commit(private=True)
    world.members[ident(1)].merge_pending()
    for i in (0, 2, 3):
        world.members[ident(i)].process(pending.commit)
    assert not world.members[ident(3)].active
    assert a.epoch_authenticator == world.members[ident(1)].epoch_authenticator == b.epoch_authenticator


def test_foreign_commit_for_pending_epoch_discards_ours() -> None:
    world = World()
    world.commit(ident(0), new=2)
    a, b = world.members[ident(0)], world.members[ident(1)]
    a.commit(force_path=True)
    won = b.commit(force_path=True)
    world.public.process(won.commit)
    b.merge_pending()
    ev = a.process(won.commit)
    assert isinstance(ev, CommitProcessed) and ev.discarded_pending
    assert a.pending is None
    world.members[ident(2)].process(won.commit)
    world.check()
    with pytest.raises(PendingCommitError):
        a.merge_pending()


def test_own_echo_pending_rules_and_unknown_removes() -> None:
    world = World()
    world.commit(ident(0), new=1)
    a = world.members[ident(0)]
    pending = a.commit(force_path=True)
    with pytest.raises(PendingCommitError):
        a.commit()
    with pytest.raises(OwnCommitError):
        a.process(pending.commit)
    a.discard_pending()
    with pytest.raises(PendingCommitError):
        a.discard_pending()
    with pytest.raises(UnknownMemberError):
        a.commit(removes=[b"nobody"])
    with pytest.raises(InvalidCommitError):
        a.commit(removes=[ident(0)])
    with pytest.raises(DuplicateMemberError):
        a.commit(adds=[bundle(1).key_package])  # identity 1 is already a member
    kp = bundle(9).key_package
    with pytest.raises(DuplicateMemberError):
        a.commit(adds=[kp, bundle(9).key_package])
    assert a.pending is None


def test_rejoin_is_remove_and_add_in_one_commit() -> None:
    world = World()
    world.commit(ident(0), new=2)
    a = world.members[ident(0)]
    fresh = bundle(1)  # identity 1 comes back with a new KeyPackage
    pending = a.commit(adds=[fresh.key_package], removes=[ident(1)])
    a.merge_pending()
    world.members[ident(2)].process(pending.commit)
    world.public.process(pending.commit)
    old = world.members[ident(1)]
    assert old.process(pending.commit).self_removed
    world.members[ident(1)] = Group.join(pending.welcome, [fresh], clock=clock)
    world.check()


def test_removed_member_cannot_process_anything_later() -> None:
    world = World()
    world.commit(ident(0), new=3)
    victim = world.members[ident(3)]
    snapshot = victim.to_bytes()
    world.commit(ident(0), removes=[ident(3)])
    assert not victim.active
    later = world.members[ident(1)].commit(force_path=True)
    with pytest.raises(GroupInactiveError):
        victim.process(later.commit)
    with pytest.raises(GroupInactiveError):
        victim.export_secret(b"x", b"", 16)
    # its retained pre-removal state never reaches the epochs after its removal
    retained = Group.from_bytes(snapshot, clock=clock)
    with pytest.raises(FutureEpochError):
        retained.process(later.commit)
    world.members[ident(1)].merge_pending()
    msg = world.members[ident(1)].encrypt(b"secret")
    with pytest.raises(FutureEpochError):
        retained.process(msg)


def test_member_restored_from_bytes_carries_on() -> None:
    world = World()
    world.commit(ident(0), new=4)
    # restore everyone and the relay, mid-group, and carry on
    for k, g in list(world.members.items()):
        world.members[k] = Group.from_bytes(g.to_bytes(), clock=clock)
    world.public = PublicGroup.from_bytes(world.public.to_bytes(), clock=clock)
    world.check()
    world.commit(ident(2), force_path=True)
    world.commit(ident(3), removes=[ident(1)], new=1)
    b = world.members[ident(4)]
    msg = b.encrypt(b"after restore")
    restored = Group.from_bytes(world.members[ident(0)].to_bytes(), clock=clock)
    assert restored.process(msg).data == b"after restore"
    # the ratchet step consumed by that decryption survives serialisation (no replay)
    again = Group.from_bytes(restored.to_bytes(), clock=clock)
    from ciris_av_plugin.mls import DecryptionError

    with pytest.raises(DecryptionError):
        again.process(msg)


def test_stale_and_future_commits() -> None:
    world = World()
    world.commit(ident(0), new=2)
    a, b, c = (world.members[ident(i)] for i in range(3))
    first = a.commit(force_path=True)
    a.merge_pending()
    second = a.commit(force_path=True)
    with pytest.raises(FutureEpochError) as info:
        b.process(second.commit)
    assert info.value.message_epoch == b.epoch + 1
    b.process(first.commit)
    with pytest.raises(StaleEpochError):
        b.process(first.commit)
    b.process(second.commit)
    a.merge_pending()
    c.process(first.commit)
    c.process(second.commit)
    for g in (a, b, c):
        assert g.epoch_authenticator == a.epoch_authenticator


def test_proposals_committed_by_reference_prefer_remove_over_update() -> None:
    world = World()
    world.commit(ident(0), new=3)
    a, b = world.members[ident(0)], world.members[ident(1)]
    p1 = b.propose_remove(ident(2))
    p2 = world.members[ident(3)].propose_remove(ident(2))  # the same leaf twice: only one is taken
    p3 = b.propose_add(bundle(7).key_package)
    for raw in (p1, p2, p3):
        world.public.process(raw)
        for k, g in world.members.items():
            if raw is p1 and k == ident(1) or raw is p2 and k == ident(3) or raw is p3 and k == ident(1):
                continue
            g.process(raw)
    pending = a.commit()
    a.merge_pending()
    assert set(pending.removed.values()) == {ident(2)}
    assert set(pending.added.values()) == {ident(7)}
    assert pending.welcome is not None


def test_update_proposals_by_reference_and_restart_in_between() -> None:
    world = World()
    world.commit(ident(0), new=3)
    b = world.members[ident(1)]
    old_key = b.tree.leaf(b.leaf_index).encryption_key
    proposal = b.propose_update()
    # b restarts before the commit lands: its proposed key survives in the state
    world.members[ident(1)] = b = Group.from_bytes(b.to_bytes(), clock=clock)
    world.public.process(proposal)
    for k, g in world.members.items():
        if k != ident(1):
            ev = g.process(proposal)
            assert isinstance(ev, ProposalReceived) and ev.sender == b.leaf_index
    ev = world.commit(ident(2))
    assert ev.updated == [b.leaf_index]
    assert b.tree.leaf(b.leaf_index).encryption_key != old_key
    # b can still follow path commits encrypted to its new leaf key
    world.commit(ident(3), force_path=True)
    world.commit(ident(0), removes=[ident(2)])


def test_update_proposal_by_the_committer_is_left_out() -> None:
    world = World()
    world.commit(ident(0), new=1)
    a = world.members[ident(0)]
    proposal = a.propose_update()
    world.members[ident(1)].process(proposal)
    pending = a.commit()
    assert pending.added == {} and pending.removed == {}
    a.discard_pending()


def _psk_proposal(g: Group, psk_id) -> bytes:
    """A PSK proposal sent by ``g`` (Group has no verb for it; the vectors and interop send them)."""
    from ciris_av_plugin.mls.proposal_structs import PreSharedKey, Proposal

    return g._propose(Proposal(PreSharedKey(psk_id)), False, b"")


def test_external_and_resumption_psks_in_commits_and_welcomes() -> None:
    import os

    from ciris_av_plugin.mls import MissingPSKError
    from ciris_av_plugin.mls.proposal_structs import PreSharedKeyID
    from ciris_av_plugin.mls.registries import PSKType, ResumptionPSKUsage

    world = World()
    world.commit(ident(0), new=2)
    a, b, c = (world.members[ident(i)] for i in range(3))
    psks = {b"shared-ext": b"\x07" * 32}

    def ext() -> PreSharedKeyID:
        return PreSharedKeyID(PSKType.EXTERNAL, os.urandom(SUITE.Nh), psk_id=b"shared-ext")

    res = PreSharedKeyID(PSKType.RESUMPTION, os.urandom(SUITE.Nh), usage=ResumptionPSKUsage.APPLICATION,
                         psk_group_id=GROUP_ID, psk_epoch=a.epoch)
    for raw in (_psk_proposal(b, ext()), _psk_proposal(b, res)):
        a.process(raw)
        c.process(raw)
    # without the external PSK the committer leaves that proposal out
    from ciris_av_plugin.mls.framing import MLSMessage

    pending = a.commit(force_path=True)
    assert len(MLSMessage.from_bytes(pending.commit).body.content.body.proposals) == 1
    a.discard_pending()
    pending = a.commit(psks=psks)
    assert len(MLSMessage.from_bytes(pending.commit).body.content.body.proposals) == 2
    a.merge_pending()
    b.process(pending.commit, psks)
    before = c.to_bytes()
    with pytest.raises(MissingPSKError):
        c.process(pending.commit)
    assert c.to_bytes() == before
    c.process(pending.commit, psks)
    assert a.epoch_authenticator == b.epoch_authenticator == c.epoch_authenticator
    # an external PSK in a commit that adds someone: the Welcome names it, the joiner must supply it
    raw = _psk_proposal(c, ext())
    a.process(raw)
    b.process(raw)
    joiner = bundle(9)
    pending = a.commit(adds=[joiner.key_package], psks=psks)
    a.merge_pending()
    b.process(pending.commit, psks)
    c.process(pending.commit, psks)
    with pytest.raises(MissingPSKError):
        Group.join(pending.welcome, [joiner], clock=clock)
    d = Group.join(pending.welcome, [joiner], psks=psks, clock=clock)
    assert a.epoch_authenticator == b.epoch_authenticator == c.epoch_authenticator == d.epoch_authenticator


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_keep_everyone_in_agreement(seed: int) -> None:
    """60 epochs of random adds, removes, leaves, updates, forced paths and private commits."""
    rng = random.Random(seed)
    world = World()
    for _ in range(60):
        ids = sorted(world.members)
        committer = rng.choice(ids)
        others = [i for i in ids if i != committer]
        op = rng.random()
        # proposals by others first, delivered to everyone and the relay
        if others and rng.random() < 0.4:
            proposer = rng.choice(others)
            g = world.members[proposer]
            raw = g.propose_update() if rng.random() < 0.5 else g.leave()
            world.public.process(raw)
            for k, other in world.members.items():
                if k != proposer:
                    other.process(raw)
        if op < 0.35 or len(ids) < 3:
            world.commit(committer, new=rng.randint(1, 3))
        elif op < 0.6 and others:
            world.commit(committer, removes=rng.sample(others, rng.randint(1, min(3, len(others)))))
        elif op < 0.75 and others:
            world.commit(committer, removes=[rng.choice(others)], new=1)
        else:
            world.commit(committer, force_path=True)
        if rng.random() < 0.1:
            k = rng.choice(sorted(world.members))
            world.members[k] = Group.from_bytes(world.members[k].to_bytes(), clock=clock)
    assert world.members


def test_the_public_api_of_issue_4_verbatim() -> None:
    from ciris_av_plugin.mls import CipherSuite, Group, KeyPackageBundle, PublicGroup

    bundle_ = KeyPackageBundle.generate(identity=b"joiner-identity!", suite=CipherSuite(1))
    assert isinstance(bundle_.key_package, bytes)
    group = Group.create(b"group-id", identity=b"creator-identity", suite=CipherSuite(1))
    public = PublicGroup.from_group_info(group.group_info(ratchet_tree=True), ratchet_tree=None)
    pending = group.commit(adds=[bundle_.key_package], removes=[], force_path=False)
    assert isinstance(pending.commit, bytes) and isinstance(pending.welcome, bytes)
    public.process(pending.commit)
    group.merge_pending()
    joined = Group.join(pending.welcome, [bundle_], ratchet_tree=None, psks=None)
    assert joined.export_secret(b"label", b"context", 16) == group.export_secret(b"label", b"context", 16)
    assert (joined.epoch, joined.epoch_authenticator) == (group.epoch, group.epoch_authenticator)
    assert (group.leaf_index, joined.leaf_index) == (0, 1)
    assert group.members == joined.members == public.members == {0: b"creator-identity", 1: b"joiner-identity!"}
    pending = joined.commit(removes=[b"creator-identity"])
    public.process(pending.commit)
    joined.merge_pending()
    assert group.process(pending.commit, psks=None).self_removed
    restored = Group.from_bytes(joined.to_bytes())
    assert restored.epoch == public.epoch == 2
    assert PublicGroup.from_bytes(public.to_bytes()).members == {1: b"joiner-identity!"}


@pytest.mark.parametrize("policy, kept", [(Policy.relay(), False), (Policy(), True)])
def test_persisted_state_keeps_past_resumption_psks_only_where_psks_are_allowed(policy: Policy, kept: bool) -> None:
    g = Group.create(b"resumption", ident(0), SUITE, clock=clock, policy=policy)
    past = []
    for _ in range(3):
        past.append(g._e.secrets.resumption_psk)  # noqa: SLF001 - the secret whose deletion is tested
        g.commit(force_path=True)
        g.merge_pending()
    state = g.to_bytes()
    assert [psk in state for psk in past] == [kept] * 3
    restored = Group.from_bytes(state, clock=clock, policy=policy)
    assert [psk in restored.to_bytes() for psk in past] == [kept] * 3
