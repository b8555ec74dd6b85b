"""The delivery-service skeleton: registration, join requests, commit sequencing, Welcomes, restart.

The keyless PublicGroup is not here yet, so a small fake group view stands in for it and a fake
checker says what each commit does; the framing, Welcomes, GroupInfos and KeyPackages are real
MLS bytes, and the directory and SQLite store are the real ones.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import pytest
from support_key_packages import NOW, SUITE, Joiner

from ciris_av_plugin.mls.codec import DecodeError
from ciris_av_plugin.mls.framing import (
    ContentType,
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    SenderType,
)
from ciris_av_plugin.mls.messages import GroupContext
from ciris_av_plugin.mls.proposal_structs import Commit, GroupContextExtensions, Proposal, Remove
from ciris_av_plugin.mls.registries import ProposalType
from ciris_av_plugin.mls.tree_structs import HPKECiphertext
from ciris_av_plugin.mls.welcome_structs import EncryptedGroupSecrets, GroupInfo, Welcome
from ciris_av_plugin.relay.delivery import (
    MAX_PROPOSAL_SIZE,
    MAX_PROPOSALS_PER_EPOCH,
    MAX_SUBMISSION_SIZE,
    WELCOME_TTL_S,
    DeliveryService,
)
from ciris_av_plugin.relay.delivery_errors import (
    AlreadyMember,
    BadGroupInfo,
    DuplicateIdentity,
    ExternalCommit,
    ExternalProposal,
    FutureCommit,
    InvalidCommit,
    JoinQueueFull,
    NotACommit,
    NotAMember,
    NotAProposal,
    NoWelcome,
    PrivateHandshake,
    ProposalNotAllowed,
    RateLimited,
    SenderMismatch,
    StaleCommit,
    StreamExists,
    SubmissionTooLarge,
    TooManyProposals,
    UnknownStream,
    WelcomeMismatch,
)
from ciris_av_plugin.relay.delivery_events import (
    CommitAccepted,
    JoinRequested,
    Notify,
    ProposalReceived,
    RecoveryRequested,
    WelcomeExpired,
    WelcomeReady,
)
from ciris_av_plugin.relay.directory import KeyPackageDirectory, NotAdmissible
from ciris_av_plugin.relay.group_view import CommitEffect
from ciris_av_plugin.relay.join_queue import JOIN_REQUEST_BURST, JOIN_REQUEST_REFILL_S, JOIN_REQUEST_TTL_S
from ciris_av_plugin.store import SQLiteStore

GROUP = b"group-of-stream-7"
STREAM = 7
A, B = b"A" * 16, b"B" * 16  # creator (leaf 0) and a subscriber (leaf 1)


# --- the stand-in for PublicGroup -------------------------------------------------------------------


@dataclass
class FakeGroup:
    """Epoch and roster, serialisable: what the delivery service needs from PublicGroup."""

    epoch: int
    members: dict[int, bytes] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return msgpack.packb([self.epoch, sorted(self.members.items())])

    def ratchet_tree(self) -> bytes:
        return b"tree:" + self.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> FakeGroup:
        epoch, members = msgpack.unpackb(data)
        return cls(epoch, {i: m for i, m in members})


class FakeChecker:
    """Maps commit bytes to what the commit does (what PublicGroup.process will compute)."""

    def __init__(self) -> None:
        self.effects: dict[bytes, tuple[tuple[tuple[bytes, bytes], ...], tuple[bytes, ...]]] = {}
        self.invalid: set[bytes] = set()

    def plan(self, commit: bytes, added: list[tuple[bytes, bytes]] = (), removed: list[bytes] = (),
             by_reference: bool = False) -> bytes:
        """``by_reference``: the Removes are proposals the relay holds (a leave), not the committer's own."""
        by_value = (ProposalType.ADD,) * len(added) + (() if by_reference else (ProposalType.REMOVE,) * len(removed))
        self.effects[commit] = (tuple(added), tuple(removed), by_value)
        return commit

    def __call__(self, group: FakeGroup, commit: bytes, now: float) -> CommitEffect:
        if commit in self.invalid:
            raise DecodeError("bad signature (fake)")
        added, removed, by_value = self.effects.get(commit, ((), (), ()))
        members = {i: m for i, m in group.members.items() if m not in removed}
        for _, identity in added:
            members[next(i for i in range(len(members) + 1) if i not in members)] = identity
        return CommitEffect(added, removed, FakeGroup(group.epoch + 1, members), tuple(int(t) for t in by_value))


def group_info(signer: int, epoch: int = 0, group_id: bytes = GROUP) -> bytes:
    gc = GroupContext(1, group_id, epoch, b"\x00" * 32, b"\x00" * 32)
    return MLSMessage(GroupInfo(gc, [], b"\x00" * 32, signer, b"\x00" * 64)).to_bytes()


def commit_msg(epoch: int, sender_leaf: int, *, tag: bytes = b"", group_id: bytes = GROUP,
               sender_type: SenderType = SenderType.MEMBER) -> bytes:
    sender = Sender(sender_type, sender_leaf)
    content = FramedContent(group_id, epoch, sender, tag, Commit())
    membership = b"\x00" * 32 if sender_type == SenderType.MEMBER else None
    return MLSMessage(PublicMessage(content, FramedContentAuthData(b"\x00" * 64, b"\x00" * 32), membership)).to_bytes()


def proposal_msg(epoch: int, sender_leaf: int, body: object, *,
                 sender_type: SenderType = SenderType.MEMBER, aad: bytes = b"") -> bytes:
    content = FramedContent(GROUP, epoch, Sender(sender_type, sender_leaf), aad, Proposal(body))
    membership = b"\x00" * 32 if sender_type == SenderType.MEMBER else None
    return MLSMessage(PublicMessage(content, FramedContentAuthData(b"\x00" * 64), membership)).to_bytes()


def welcome_msg(*refs: bytes) -> bytes:
    secrets = [EncryptedGroupSecrets(r, HPKECiphertext(b"k", b"c")) for r in refs]
    return MLSMessage(Welcome(1, secrets, b"encrypted group info")).to_bytes()


def info_loader(members: dict[int, bytes]):
    def load(gi: bytes) -> FakeGroup:
        return FakeGroup(MLSMessage.from_bytes(gi).body.group_context.epoch, dict(members))

    return load


@pytest.fixture(scope="module")
def alice() -> Joiner:
    return Joiner()


@pytest.fixture(scope="module")
def bob() -> Joiner:
    return Joiner()


@dataclass
class Relay:
    store: SQLiteStore
    directory: KeyPackageDirectory
    ds: DeliveryService
    checker: FakeChecker


def make_relay(path: Path, members: dict[int, bytes] | None = None, checker: FakeChecker | None = None,
               **kw: object) -> Relay:
    store = SQLiteStore(path)
    checker = checker or FakeChecker()
    ds = DeliveryService(store, load_group=FakeGroup.from_bytes, group_from_info=info_loader(members or {0: A, 1: B}),
                         check_commit=checker, check_proposal=lambda group, proposal, now: group, **kw)
    directory = KeyPackageDirectory(store, ds.may_fetch, suites={SUITE})
    ds.directory = directory
    return Relay(store, directory, ds, checker)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    r = make_relay(tmp_path / "relay.db")
    r.ds.register_stream(STREAM, A, group_info(signer=0))
    yield r
    r.store.close()


def snapshot(store: SQLiteStore) -> list[str]:
    raw = sqlite3.connect(store._path)
    try:
        return list(raw.iterdump())
    finally:
        raw.close()


def admit(relay: Relay, joiner: Joiner, now: float = NOW) -> tuple[bytes, bytes]:
    """Joiner publishes and asks; the admitter fetches. Returns (ref, KeyPackage)."""
    relay.directory.publish(joiner.publishable(), now)
    relay.ds.request_join(STREAM, joiner.hash, now)
    got = relay.directory.fetch(A, joiner.hash, SUITE, now)
    return got.ref, got.key_package


# --- registration ------------------------------------------------------------------------------------


def test_register_binds_the_stream_to_the_group_info_signer(tmp_path: Path) -> None:
    r = make_relay(tmp_path / "r.db")
    with pytest.raises(BadGroupInfo):
        r.ds.register_stream(STREAM, B, group_info(signer=0))  # leaf 0 is A, not B
    with pytest.raises(BadGroupInfo):
        r.ds.register_stream(STREAM, A, welcome_msg())
    with pytest.raises(BadGroupInfo):
        r.ds.register_stream(STREAM, A, b"\x00\x01garbage")
    with pytest.raises(SubmissionTooLarge):
        r.ds.register_stream(STREAM, A, group_info(signer=0) + b"\x00" * MAX_SUBMISSION_SIZE)
    assert r.store.stream_ids() == []
    group = r.ds.register_stream(STREAM, A, group_info(signer=0))
    assert group.members == {0: A, 1: B}
    with pytest.raises(StreamExists):
        r.ds.register_stream(STREAM, A, group_info(signer=0, group_id=b"other"))
    with pytest.raises(StreamExists):
        r.ds.register_stream(STREAM + 1, A, group_info(signer=0))  # same MLS group, second stream
    assert r.ds.is_member(STREAM, B) and not r.ds.is_member(STREAM, b"C" * 16)
    assert not r.ds.is_member(99, A)
    r.store.close()


# --- join requests --------------------------------------------------------------------------------


def test_join_request_notifies_the_admitter_and_opens_fetching(relay: Relay, alice: Joiner) -> None:
    relay.directory.publish(alice.publishable(), NOW)
    with pytest.raises(Exception) as ei:
        relay.directory.fetch(A, alice.hash, SUITE, NOW)  # no join request yet
    assert ei.value.code == "not-authorised"
    notes = relay.ds.request_join(STREAM, alice.hash, NOW)
    assert notes == [Notify(A, JoinRequested(STREAM, alice.hash))]
    assert relay.ds.join_requests(STREAM, B, NOW) == [alice.hash]
    with pytest.raises(NotAMember):
        relay.ds.join_requests(STREAM, alice.hash, NOW)
    # members may fetch; the joiner itself and strangers may not
    assert relay.ds.may_fetch(B, alice.hash, NOW)
    assert not relay.ds.may_fetch(alice.hash, alice.hash, NOW)
    assert not relay.ds.may_fetch(b"C" * 16, alice.hash, NOW)
    # the request lapses, or is withdrawn
    assert not relay.ds.may_fetch(A, alice.hash, NOW + JOIN_REQUEST_TTL_S)
    assert relay.ds.withdraw_join(STREAM, alice.hash)
    assert not relay.ds.may_fetch(A, alice.hash, NOW)


def test_join_request_refusals(relay: Relay) -> None:
    with pytest.raises(UnknownStream):
        relay.ds.request_join(99, b"C" * 16, NOW)
    with pytest.raises(AlreadyMember):
        relay.ds.request_join(STREAM, B, NOW)


def test_join_requests_are_rate_limited_per_identity(relay: Relay) -> None:
    c = b"C" * 16
    for _ in range(JOIN_REQUEST_BURST):
        relay.ds.request_join(STREAM, c, NOW)
    with pytest.raises(RateLimited) as ei:
        relay.ds.request_join(STREAM, c, NOW + 1)
    assert ei.value.code == "rate-limited"
    assert 0 < ei.value.retry_after <= JOIN_REQUEST_REFILL_S
    relay.ds.request_join(STREAM, b"D" * 16, NOW + 1)  # others are not affected
    relay.ds.request_join(STREAM, c, NOW + 1 + JOIN_REQUEST_REFILL_S)  # refilled


def test_join_queue_is_bounded_per_stream_against_many_identities(tmp_path: Path) -> None:
    r = make_relay(tmp_path / "r.db", max_pending_joins=5)
    r.ds.register_stream(STREAM, A, group_info(signer=0))
    for i in range(5):
        r.ds.request_join(STREAM, bytes([i]) * 16, NOW)
    before = snapshot(r.store)
    with pytest.raises(JoinQueueFull):
        r.ds.request_join(STREAM, b"\xee" * 16, NOW)
    assert snapshot(r.store) == before
    r.ds.request_join(STREAM, bytes([0]) * 16, NOW + 1)  # a refresh still goes through
    assert r.ds.tick(NOW + JOIN_REQUEST_TTL_S + 2) == []
    r.ds.request_join(STREAM, b"\xee" * 16, NOW + JOIN_REQUEST_TTL_S + 2)  # lapsed ones freed the queue
    r.store.close()


# --- commits --------------------------------------------------------------------------------------


def test_commit_with_welcome_is_accepted_fanned_out_and_fetchable(relay: Relay, alice: Joiner) -> None:
    ref, _ = admit(relay, alice)
    commit = relay.checker.plan(commit_msg(0, 0, tag=b"add-alice"), added=[(ref, alice.hash)])
    welcome = welcome_msg(ref)
    acc = relay.ds.submit_commit(STREAM, A, commit, welcome, NOW)
    assert acc.epoch == 1
    assert set(acc.notifications) == {
        Notify(B, CommitAccepted(STREAM, 0, commit)),
        Notify(alice.hash, WelcomeReady(STREAM, 1)),
    }
    assert relay.ds.members_of(STREAM) == [A, B, alice.hash]
    assert relay.ds.fetch_welcome(STREAM, alice.hash, NOW) == welcome
    with pytest.raises(NoWelcome):
        relay.ds.fetch_welcome(STREAM, B, NOW)  # nobody else's
    assert relay.ds.join_requests(STREAM, A, NOW) == []  # satisfied
    assert not relay.directory.is_admissible(ref, alice.hash, NOW)  # used
    assert [c.message for c in relay.ds.commits_since(STREAM, B, 0)] == [commit]
    assert relay.ds.ack_welcome(STREAM, alice.hash)
    with pytest.raises(NoWelcome):
        relay.ds.fetch_welcome(STREAM, alice.hash, NOW)


def test_first_commit_of_the_epoch_wins(relay: Relay) -> None:
    first = relay.checker.plan(commit_msg(0, 0, tag=b"1"))
    second = relay.checker.plan(commit_msg(0, 1, tag=b"2"))
    relay.ds.submit_commit(STREAM, A, first, None, NOW)
    before = snapshot(relay.store)
    with pytest.raises(StaleCommit):
        relay.ds.submit_commit(STREAM, B, second, None, NOW)
    assert snapshot(relay.store) == before
    with pytest.raises(FutureCommit):
        relay.ds.submit_commit(STREAM, B, relay.checker.plan(commit_msg(5, 1)), None, NOW)


def test_a_retried_accepted_commit_is_confirmed_again_not_refused(relay: Relay, alice: Joiner) -> None:
    """A reply lost on the way must not make the committer discard a commit the relay accepted."""
    ref, _ = admit(relay, alice)
    commit = relay.checker.plan(commit_msg(0, 0, tag=b"add"), added=[(ref, alice.hash)])
    first = relay.ds.submit_commit(STREAM, A, commit, welcome_msg(ref), NOW)
    relay.ds.submit_commit(STREAM, B, relay.checker.plan(commit_msg(1, 1, tag=b"next")), None, NOW)
    before = snapshot(relay.store)
    again = relay.ds.submit_commit(STREAM, A, commit, welcome_msg(ref), NOW + 1)
    assert again.repeat and again.epoch == first.epoch == 1 and again.notifications == ()
    assert snapshot(relay.store) == before
    with pytest.raises(SenderMismatch):  # only its committer learns it was accepted this way
        relay.ds.submit_commit(STREAM, B, commit, welcome_msg(ref), NOW + 1)
    with pytest.raises(StaleCommit):  # a different commit of that epoch lost
        relay.ds.submit_commit(STREAM, A, relay.checker.plan(commit_msg(0, 0, tag=b"other")), None, NOW + 1)


def test_racing_submissions_exactly_one_accepted(relay: Relay) -> None:
    commits = [relay.checker.plan(commit_msg(0, leaf, tag=b"race-%d" % i)) for i, leaf in enumerate([0, 1] * 4)]
    who = [A, B] * 4
    results: list[object] = []
    barrier = threading.Barrier(len(commits))

    def submit(i: int) -> None:
        barrier.wait()
        try:
            results.append(relay.ds.submit_commit(STREAM, who[i], commits[i], None, NOW))
        except StaleCommit as e:
            results.append(e)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(commits))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(not isinstance(r, StaleCommit) for r in results) == 1
    assert relay.ds.group(STREAM).epoch == 1
    assert len(relay.ds.commits_since(STREAM, A, 0)) == 1


def test_refused_commits_are_typed_and_change_nothing(relay: Relay, alice: Joiner, bob: Joiner) -> None:
    ref, _ = admit(relay, alice)
    bob_ref, _ = admit(relay, bob)
    chk = relay.checker
    proposal = MLSMessage(PublicMessage(
        FramedContent(GROUP, 0, Sender.member(0), b"", Proposal(Remove(1))),
        FramedContentAuthData(b"\x00" * 64), b"\x00" * 32)).to_bytes()
    private = MLSMessage(PrivateMessage(GROUP, 0, ContentType.COMMIT, b"", b"sd", b"ct")).to_bytes()
    invalid = commit_msg(0, 0, tag=b"invalid")
    chk.invalid.add(invalid)
    cases = [
        ("non-member", NotAMember, b"C" * 16, chk.plan(commit_msg(0, 0, tag=b"x")), None),
        ("sender is not submitter", SenderMismatch, B, chk.plan(commit_msg(0, 0, tag=b"y")), None),
        ("private message", PrivateHandshake, A, private, None),
        ("external commit", ExternalCommit, A, commit_msg(0, 0, sender_type=SenderType.NEW_MEMBER_COMMIT), None),
        ("proposal", NotACommit, A, proposal, None),
        ("garbage", NotACommit, A, b"\x00\x01\x00\x01\xff", None),
        ("other group", InvalidCommit, A, commit_msg(0, 0, group_id=b"another"), None),
        ("publicly invalid", InvalidCommit, A, invalid, None),
        ("add without welcome", WelcomeMismatch, A,
         chk.plan(commit_msg(0, 0, tag=b"a1"), added=[(ref, alice.hash)]), None),
        ("welcome with an extra ref", WelcomeMismatch, A,
         chk.plan(commit_msg(0, 0, tag=b"a2"), added=[(ref, alice.hash)]), welcome_msg(ref, bob_ref)),
        ("welcome for someone else", WelcomeMismatch, A,
         chk.plan(commit_msg(0, 0, tag=b"a3"), added=[(ref, alice.hash)]), welcome_msg(bob_ref)),
        ("welcome is not a welcome", WelcomeMismatch, A,
         chk.plan(commit_msg(0, 0, tag=b"a4"), added=[(ref, alice.hash)]), group_info(0)),
        ("welcome without adds", WelcomeMismatch, A, chk.plan(commit_msg(0, 0, tag=b"a5")), welcome_msg(ref)),
        ("kp not in directory", NotAdmissible, A,
         chk.plan(commit_msg(0, 0, tag=b"a6"), added=[(b"\x01" * 32, alice.hash)]), welcome_msg(b"\x01" * 32)),
        ("kp of another identity", NotAdmissible, A,
         chk.plan(commit_msg(0, 0, tag=b"a7"), added=[(bob_ref, alice.hash)]), welcome_msg(bob_ref)),
        ("second leaf for a member", DuplicateIdentity, A,
         chk.plan(commit_msg(0, 0, tag=b"a8"), added=[(ref, B)]), welcome_msg(ref)),
        ("same identity added twice", DuplicateIdentity, A,
         chk.plan(commit_msg(0, 0, tag=b"a9"), added=[(ref, alice.hash), (ref, alice.hash)]), welcome_msg(ref, ref)),
    ]
    cases.append(("oversized", SubmissionTooLarge, A, commit_msg(0, 0, tag=b"x" * MAX_SUBMISSION_SIZE), None))
    cases.append(("oversized welcome", SubmissionTooLarge, A, chk.plan(commit_msg(0, 0, tag=b"big"),
                  added=[(ref, alice.hash)]), welcome_msg(ref) + b"\x00" * MAX_SUBMISSION_SIZE))
    before = snapshot(relay.store)
    for name, error, who, commit, welcome in cases:
        with pytest.raises(error) as ei:
            relay.ds.submit_commit(STREAM, who, commit, welcome, NOW)
        assert ei.value.code, name
        assert snapshot(relay.store) == before, f"{name} changed the store"
    # the directory still vouches for both KeyPackages, and a correct commit still goes through
    assert relay.directory.is_admissible(ref, alice.hash, NOW)
    ok = chk.plan(commit_msg(0, 0, tag=b"ok"), added=[(ref, alice.hash), (bob_ref, bob.hash)])
    assert relay.ds.submit_commit(STREAM, A, ok, welcome_msg(bob_ref, ref), NOW).epoch == 1


def test_a_rejoin_is_remove_plus_add_in_one_commit(relay: Relay, alice: Joiner) -> None:
    ref, _ = admit(relay, alice)
    relay.ds.submit_commit(STREAM, A, relay.checker.plan(commit_msg(0, 0), added=[(ref, alice.hash)]),
                           welcome_msg(ref), NOW)
    # recovery (commit_failed): the member is removed and re-added with a fresh KeyPackage in one commit
    relay.directory.publish(alice.publishable(), NOW)
    entry = relay.store.take_one_time(alice.hash, SUITE, NOW, taken_by=A)
    relay.ds.request_join(STREAM, alice.hash, NOW, [entry.ref])  # a member may ask again, naming its KeyPackages
    rejoin = relay.checker.plan(commit_msg(1, 0, tag=b"rejoin"), added=[(entry.ref, alice.hash)],
                                removed=[alice.hash])
    acc = relay.ds.submit_commit(STREAM, A, rejoin, welcome_msg(entry.ref), NOW)
    assert acc.epoch == 2
    assert relay.ds.members_of(STREAM).count(alice.hash) == 1
    # the removed-and-re-added member was told about the commit (old leaf) and about its Welcome
    assert Notify(alice.hash, CommitAccepted(STREAM, 1, rejoin)) in acc.notifications
    assert Notify(alice.hash, WelcomeReady(STREAM, 2)) in acc.notifications


def test_commit_failed_leads_to_remove_and_re_add(relay: Relay, alice: Joiner) -> None:
    ref, _ = admit(relay, alice)
    relay.ds.submit_commit(STREAM, A, relay.checker.plan(commit_msg(0, 0, tag=b"add"), added=[(ref, alice.hash)]),
                           welcome_msg(ref), NOW)
    # alice cannot process the commit of epoch 1; she reports it and publishes a fresh KeyPackage
    with pytest.raises(FutureCommit):
        relay.ds.report_commit_failed(STREAM, alice.hash, 1, NOW)  # epoch 1 has no commit yet
    with pytest.raises(NotAMember):
        relay.ds.report_commit_failed(STREAM, b"C" * 16, 0, NOW)
    relay.ds.submit_commit(STREAM, A, relay.checker.plan(commit_msg(1, 0, tag=b"empty")), None, NOW)
    relay.directory.publish(alice.publishable(), NOW)
    notes = relay.ds.report_commit_failed(STREAM, alice.hash, 1, NOW)
    assert notes == [Notify(A, RecoveryRequested(STREAM, alice.hash, 1))]
    fresh = relay.directory.fetch(A, alice.hash, SUITE, NOW)  # allowed: the report opened fetching
    readd = relay.checker.plan(commit_msg(2, 0, tag=b"readd"), added=[(fresh.ref, alice.hash)], removed=[alice.hash])
    acc = relay.ds.submit_commit(STREAM, A, readd, welcome_msg(fresh.ref), NOW)
    assert acc.epoch == 3 and relay.ds.members_of(STREAM).count(alice.hash) == 1
    assert relay.ds.fetch_welcome(STREAM, alice.hash, NOW) == welcome_msg(fresh.ref)


def test_a_failed_admitter_hands_recovery_to_another_admitter(tmp_path: Path) -> None:
    r = make_relay(tmp_path / "named.db")
    r.ds.register_stream(STREAM, A, group_info(signer=0), admitters=[B])
    r.ds.submit_commit(STREAM, B, r.checker.plan(commit_msg(0, 1, tag=b"e")), None, NOW)
    assert r.ds.report_commit_failed(STREAM, A, 0, NOW) == [Notify(B, RecoveryRequested(STREAM, A, 0))]
    r.store.close()


def test_a_failed_admitter_with_no_other_admitter_tells_nobody(relay: Relay) -> None:
    # B is a member but no admitter: it could not commit the Remove + Add anyway
    relay.ds.submit_commit(STREAM, B, relay.checker.plan(commit_msg(0, 1, tag=b"e")), None, NOW)
    assert relay.ds.report_commit_failed(STREAM, A, 0, NOW) == []


# --- proposals ----------------------------------------------------------------------------------------


def test_a_leavers_self_remove_is_kept_for_the_epoch_and_fanned_out(relay: Relay) -> None:
    leave = proposal_msg(0, 1, Remove(1))
    assert relay.ds.submit_proposal(STREAM, B, leave, NOW) == [
        Notify(A, ProposalReceived(STREAM, 0, leave, commit_requested=True))
    ]
    assert relay.ds.proposals(STREAM, A) == [leave]
    with pytest.raises(NotAMember):
        relay.ds.proposals(STREAM, b"C" * 16)
    assert relay.ds.submit_proposal(STREAM, B, leave, NOW) == []  # a retry: kept once, fanned out once
    assert relay.ds.proposals(STREAM, A) == [leave]
    # the admitter commits it; the proposal dies with its epoch
    relay.ds.submit_commit(STREAM, A, relay.checker.plan(commit_msg(0, 0, tag=b"rm"), removed=[B]), None, NOW)
    assert relay.ds.proposals(STREAM, A) == []
    with pytest.raises(StaleCommit):
        relay.ds.submit_proposal(STREAM, A, proposal_msg(0, 0, Remove(0)), NOW)


def test_only_the_admitter_is_asked_to_commit_a_proposal(tmp_path: Path) -> None:
    c = b"C" * 16
    r = make_relay(tmp_path / "r.db", members={0: A, 1: B, 2: c})
    r.ds.register_stream(STREAM, A, group_info(signer=0))
    p = proposal_msg(0, 2, Remove(2))
    assert r.ds.submit_proposal(STREAM, c, p, NOW) == [
        Notify(A, ProposalReceived(STREAM, 0, p, commit_requested=True)),
        Notify(B, ProposalReceived(STREAM, 0, p, commit_requested=False)),
    ]
    # the admitter's own proposal goes to the next member in leaf order to commit
    q = proposal_msg(0, 0, Remove(0))
    assert r.ds.submit_proposal(STREAM, A, q, NOW) == [
        Notify(B, ProposalReceived(STREAM, 0, q, commit_requested=True)),
        Notify(c, ProposalReceived(STREAM, 0, q, commit_requested=False)),
    ]
    r.store.close()


def test_refused_proposals_are_typed_and_change_nothing(relay: Relay) -> None:
    before = snapshot(relay.store)
    cases = [
        ("group context extensions", ProposalNotAllowed, A, proposal_msg(0, 0, GroupContextExtensions([]))),
        ("external sender", ExternalProposal, A, proposal_msg(0, 0, Remove(1), sender_type=SenderType.EXTERNAL)),
        ("a commit", NotAProposal, A, commit_msg(0, 0)),
        ("garbage", NotAProposal, A, b"\x00\x01"),
        ("non-member", NotAMember, b"C" * 16, proposal_msg(0, 0, Remove(1))),
        ("sender is not submitter", SenderMismatch, B, proposal_msg(0, 0, Remove(1))),
        ("future epoch", FutureCommit, A, proposal_msg(3, 0, Remove(1))),
        ("oversized", SubmissionTooLarge, A, b"\x00" * (MAX_PROPOSAL_SIZE + 1)),
        ("private message", PrivateHandshake, A,
         MLSMessage(PrivateMessage(GROUP, 0, ContentType.PROPOSAL, b"", b"sd", b"ct")).to_bytes()),
    ]
    for name, error, who, msg in cases:
        with pytest.raises(error):
            relay.ds.submit_proposal(STREAM, who, msg, NOW)
        assert snapshot(relay.store) == before, name


def test_proposals_per_epoch_are_bounded(relay: Relay) -> None:
    for i in range(MAX_PROPOSALS_PER_EPOCH):
        relay.ds.submit_proposal(STREAM, A, proposal_msg(0, 0, Remove(0), aad=b"%d" % i), NOW)
    with pytest.raises(TooManyProposals):
        relay.ds.submit_proposal(STREAM, A, proposal_msg(0, 0, Remove(0), aad=b"last"), NOW)
    assert len(relay.ds.proposals(STREAM, B)) == MAX_PROPOSALS_PER_EPOCH


# --- time and restart ---------------------------------------------------------------------------


def test_unfetched_welcome_expires_and_the_admitter_is_told(relay: Relay, alice: Joiner) -> None:
    ref, _ = admit(relay, alice)
    relay.ds.submit_commit(STREAM, A, relay.checker.plan(commit_msg(0, 0), added=[(ref, alice.hash)]),
                           welcome_msg(ref), NOW)
    assert relay.ds.tick(NOW + WELCOME_TTL_S - 1) == []
    notes = relay.ds.tick(NOW + WELCOME_TTL_S)
    assert notes == [Notify(A, WelcomeExpired(STREAM, alice.hash, 1))]
    with pytest.raises(NoWelcome):
        relay.ds.fetch_welcome(STREAM, alice.hash, NOW + WELCOME_TTL_S)
    assert relay.ds.tick(NOW + WELCOME_TTL_S + 1) == []  # told once


def test_removing_a_joiner_withdraws_its_unfetched_welcome(relay: Relay, alice: Joiner) -> None:
    ref, _ = admit(relay, alice)
    relay.ds.submit_commit(STREAM, A, relay.checker.plan(commit_msg(0, 0), added=[(ref, alice.hash)]),
                           welcome_msg(ref), NOW)
    relay.ds.submit_commit(STREAM, A, relay.checker.plan(commit_msg(1, 0, tag=b"rm"), removed=[alice.hash]),
                           None, NOW)
    with pytest.raises(NoWelcome):
        relay.ds.fetch_welcome(STREAM, alice.hash, NOW)


def test_proposals_fall_to_the_lowest_leaf_when_the_creator_left_but_joins_only_to_admitters(relay: Relay) -> None:
    # the creator's self-Remove, committed by reference by B
    relay.ds.submit_commit(STREAM, B, relay.checker.plan(commit_msg(0, 1), removed=[A], by_reference=True), None, NOW)
    assert relay.ds.admitter(STREAM) == B  # it commits pending proposals (by reference)
    assert relay.ds.roster_admitter(STREAM) is None
    assert relay.ds.request_join(STREAM, b"C" * 16, NOW) == []  # no admitter is left to tell
    with pytest.raises(NotAMember):
        relay.ds.submit_commit(STREAM, A, relay.checker.plan(commit_msg(1, 0)), None, NOW)


def test_a_named_admitter_takes_over_when_the_creator_left(tmp_path: Path) -> None:
    r = make_relay(tmp_path / "named.db")
    r.ds.register_stream(STREAM, A, group_info(signer=0), admitters=[B])
    r.ds.submit_commit(STREAM, B, r.checker.plan(commit_msg(0, 1), removed=[A], by_reference=True), None, NOW)
    assert r.ds.request_join(STREAM, b"C" * 16, NOW) == [Notify(B, JoinRequested(STREAM, b"C" * 16))]
    r.store.close()


def test_state_survives_a_restart_and_a_second_joiner_joins_after_it(tmp_path: Path, alice: Joiner,
                                                                       bob: Joiner) -> None:
    path = tmp_path / "relay.db"
    r = make_relay(path)
    r.ds.register_stream(STREAM, A, group_info(signer=0))
    ref, _ = admit(r, alice)
    r.ds.submit_commit(STREAM, A, r.checker.plan(commit_msg(0, 0), added=[(ref, alice.hash)]), welcome_msg(ref), NOW)
    r.directory.publish(bob.publishable(), NOW)
    r.directory.publish(bob.publishable(last_resort=True), NOW)
    r.ds.request_join(STREAM, bob.hash, NOW)
    leave = proposal_msg(1, 1, Remove(1))
    r.ds.submit_proposal(STREAM, B, leave, NOW)
    r.store.close()

    again = make_relay(path)
    assert again.ds.group(STREAM).epoch == 1
    assert again.ds.members_of(STREAM) == [A, B, alice.hash]
    assert again.ds.fetch_welcome(STREAM, alice.hash, NOW + 1) == welcome_msg(ref)
    assert again.ds.join_requests(STREAM, A, NOW + 1) == [bob.hash]
    assert again.ds.proposals(STREAM, A) == [leave]
    got = again.directory.fetch(A, bob.hash, SUITE, NOW + 1)
    assert not got.last_resort
    acc = again.ds.submit_commit(STREAM, A, again.checker.plan(commit_msg(1, 0), added=[(got.ref, bob.hash)]),
                                 welcome_msg(got.ref), NOW + 2)
    assert acc.epoch == 2 and again.ds.members_of(STREAM)[-1] == bob.hash
    # the used one-time ref stays refused after the restart too
    with pytest.raises(NotAdmissible):
        again.directory.check_admissible(ref, alice.hash, NOW + 2)
    again.store.close()


def test_every_refusal_code_is_unique_and_wire_shaped() -> None:
    """Codes go on the wire as the transport's typed error replies (kebab-case, like ``rate-limited``)."""
    import re

    from ciris_av_plugin.protocol import envelope
    from ciris_av_plugin.relay import delivery_errors, directory, storage

    classes = {
        obj
        for mod in (delivery_errors, directory, envelope, storage)
        for obj in vars(mod).values()
        if isinstance(obj, type) and issubclass(obj, Exception) and "code" in vars(obj)
    }
    codes = [c.code for c in classes]
    assert len(classes) >= 35
    assert len(set(codes)) == len(codes), sorted(codes)
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", c) for c in codes), codes
