"""Roster authority at the relay, with real MLS clients and the keyless PublicGroup.

Only a stream's admitters (its registrant and the identities it named) may change the roster by
value; other members commit only what the relay holds (a leave, an Update) by reference, plus a
path. An Add needs a live join request; a member proposes only its own removal. Also: a rejoin
(the directory keeps only the KeyPackages the new process names), members without a link are
reported to the admitter after the configured time, and ``commits`` out of range is a typed error.
Every refusal is checked for its stable code and for leaving the stored state unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import RNS

from ciris_av_plugin.mls import CipherSuite, Group, KeyPackageBundle
from ciris_av_plugin.protocol.envelope import seal_envelope
from ciris_av_plugin.relay.delivery import COMMIT_LOG_KEEP, MAX_ADMITTERS, DeliveryService
from ciris_av_plugin.relay.delivery_errors import (
    AlreadyMember,
    BadAdmitters,
    NoJoinRequest,
    NotAnAdmitter,
    RemoveNotOwn,
    SinceOutOfRange,
)
from ciris_av_plugin.relay.delivery_events import JoinRequested, MemberUnreachable, Notify
from ciris_av_plugin.relay.directory import KeyPackageDirectory, ReplayedKeyPackage
from ciris_av_plugin.store import SQLiteStore

NOW = int(time.time())
SUITE = CipherSuite(1)
STREAM = 42
GROUP_ID = b"stream-42-roster"


@dataclass
class Call:
    """A relay with a stream of three members: the publisher (creator), ``a`` and ``b``."""

    ds: DeliveryService
    directory: KeyPackageDirectory
    store: SQLiteStore
    ids: dict[str, RNS.Identity]
    groups: dict[str, Group]

    def h(self, name: str) -> bytes:
        return self.ids[name].hash

    def snapshot(self) -> tuple[int, bytes, list]:
        record = self.store.get_stream(STREAM)
        return record.epoch, record.group_state, self.store.proposals(STREAM, record.epoch)

    def commit(self, name: str, pending) -> None:
        self.ds.submit_commit(STREAM, self.h(name), pending.commit, pending.welcome, NOW)
        self.groups[name].merge_pending()
        for other, g in self.groups.items():
            if other != name and g.active:
                g.process(pending.commit, now=NOW)


def publish(directory: KeyPackageDirectory, who: RNS.Identity, bundle, last_resort: bool = False,
            ts: int = NOW) -> bytes:
    env = seal_envelope(bundle.key_package, last_resort=last_resort, identity_pub=who.get_public_key(), ts=ts,
                        sign=who.sign)
    directory.publish(env, NOW, publisher=who.hash)
    return env


def admit(call: Call, admitter: str, name: str) -> None:
    """``name`` publishes, asks to join, the admitter adds it and it joins."""
    who = call.ids[name]
    bundle = KeyPackageBundle.generate(who.hash, SUITE, now=NOW)
    publish(call.directory, who, bundle)
    call.ds.request_join(STREAM, who.hash, NOW, [bundle.ref])
    fetched = call.directory.fetch(call.h(admitter), who.hash, 1, NOW)
    pending = call.groups[admitter].commit(adds=[fetched.key_package], now=NOW)
    call.ds.submit_commit(STREAM, call.h(admitter), pending.commit, pending.welcome, NOW)
    call.groups[admitter].merge_pending()
    for other, g in call.groups.items():
        if other != admitter:
            g.process(pending.commit, now=NOW)
    call.groups[name] = Group.join(pending.welcome, [bundle])


def make_call(tmp_path: Path, admitters: tuple[str, ...] = ()) -> Call:
    store = SQLiteStore(tmp_path / "relay.db")
    ds = DeliveryService(store)
    directory = KeyPackageDirectory(store, ds.may_fetch, suites={1})
    ds.directory = directory
    ids = {n: RNS.Identity() for n in ("pub", "a", "b", "c")}
    call = Call(ds, directory, store, ids, {"pub": Group.create(GROUP_ID, ids["pub"].hash, SUITE, now=NOW)})
    ds.register_stream(STREAM, call.h("pub"), call.groups["pub"].group_info(ratchet_tree=True),
                       [ids[n].hash for n in admitters])
    admit(call, "pub", "a")
    admit(call, "pub", "b")
    return call


@pytest.fixture
def call(tmp_path: Path) -> Iterator[Call]:
    c = make_call(tmp_path)
    yield c
    c.store.close()


# --- commits ---------------------------------------------------------------------------------------


def test_a_members_by_value_remove_commit_is_refused(call: Call) -> None:
    before = call.snapshot()
    pending = call.groups["a"].commit(removes=[call.h("b")], now=NOW)
    with pytest.raises(NotAnAdmitter) as exc:
        call.ds.submit_commit(STREAM, call.h("a"), pending.commit, None, NOW)
    assert exc.value.code == "not-admitter"
    assert call.snapshot() == before
    assert call.h("b") in call.ds.members_of(STREAM)
    # the registrant may remove by value
    call.groups["a"].discard_pending()
    call.commit("pub", call.groups["pub"].commit(removes=[call.h("b")], now=NOW))
    assert call.h("b") not in call.ds.members_of(STREAM)


def test_a_members_by_value_add_is_refused_even_with_a_join_request(call: Call) -> None:
    c = call.ids["c"]
    bundle = KeyPackageBundle.generate(c.hash, SUITE, now=NOW)
    publish(call.directory, c, bundle)
    call.ds.request_join(STREAM, c.hash, NOW, [bundle.ref])
    before = call.snapshot()
    fetched = call.directory.fetch(call.h("a"), c.hash, 1, NOW)  # any member may fetch (§16.8) ...
    pending = call.groups["a"].commit(adds=[fetched.key_package], now=NOW)
    with pytest.raises(NotAnAdmitter) as exc:  # ... but only an admitter may add
        call.ds.submit_commit(STREAM, call.h("a"), pending.commit, pending.welcome, NOW)
    assert exc.value.code == "not-admitter"
    assert call.snapshot() == before


def test_a_member_commits_a_leave_by_reference_and_an_empty_commit(call: Call) -> None:
    leave = call.groups["b"].leave()
    call.ds.submit_proposal(STREAM, call.h("b"), leave, NOW)
    for name in ("pub", "a"):
        call.groups[name].process(leave, now=NOW)
    call.commit("a", call.groups["a"].commit(now=NOW))  # b's self-Remove, by reference
    assert call.h("b") not in call.ds.members_of(STREAM)
    call.commit("a", call.groups["a"].commit(force_path=True, now=NOW))  # a path only
    assert call.ds.group(STREAM).epoch == 4


def test_a_named_admitter_may_change_the_roster(tmp_path: Path) -> None:
    call = make_call(tmp_path, admitters=("a",))
    assert call.ds.is_admitter(STREAM, call.h("a")) and not call.ds.is_admitter(STREAM, call.h("b"))
    call.commit("a", call.groups["a"].commit(removes=[call.h("b")], now=NOW))
    assert call.h("b") not in call.ds.members_of(STREAM)
    call.store.close()


def test_an_add_needs_a_live_join_request(call: Call) -> None:
    c = call.ids["c"]
    bundle = KeyPackageBundle.generate(c.hash, SUITE, now=NOW)
    publish(call.directory, c, bundle)
    call.ds.request_join(STREAM, c.hash, NOW, [bundle.ref])
    fetched = call.directory.fetch(call.h("pub"), c.hash, 1, NOW)
    call.ds.withdraw_join(STREAM, c.hash)  # the joiner gave up (or its request lapsed)
    before = call.snapshot()
    pending = call.groups["pub"].commit(adds=[fetched.key_package], now=NOW)
    with pytest.raises(NoJoinRequest) as exc:
        call.ds.submit_commit(STREAM, call.h("pub"), pending.commit, pending.welcome, NOW)
    assert exc.value.code == "no-join-request"
    assert call.snapshot() == before


def test_admitters_at_registration_are_checked(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    ds = DeliveryService(store)
    pub = RNS.Identity()
    info = Group.create(GROUP_ID, pub.hash, SUITE, now=NOW).group_info(ratchet_tree=True)
    for bad in ([b"short"], [bytes([i]) * 16 for i in range(MAX_ADMITTERS + 1)]):
        with pytest.raises(BadAdmitters) as exc:
            ds.register_stream(STREAM, pub.hash, info, bad)
        assert exc.value.code == "bad-admitters"
        assert store.get_stream(STREAM) is None
    ds.register_stream(STREAM, pub.hash, info, [b"n" * 16, pub.hash, b"n" * 16])
    assert store.get_stream(STREAM).admitters == (b"n" * 16,)  # the creator is implied; duplicates go
    store.close()


# --- proposals -------------------------------------------------------------------------------------


def test_a_member_may_not_propose_anothers_removal(call: Call) -> None:
    before = call.snapshot()
    forged = call.groups["a"].propose_remove(call.h("b"))
    with pytest.raises(RemoveNotOwn) as exc:
        call.ds.submit_proposal(STREAM, call.h("a"), forged, NOW)
    assert exc.value.code == "remove-not-own"
    assert call.snapshot() == before and call.ds.proposals(STREAM, call.h("pub")) == []
    # the registrant may not either: it removes by its own commit
    with pytest.raises(RemoveNotOwn):
        call.ds.submit_proposal(STREAM, call.h("pub"), call.groups["pub"].propose_remove(call.h("b")), NOW)


# --- rejoin ---------------------------------------------------------------------------------------


def test_a_restarted_member_rejoins_with_a_key_package_it_holds(call: Call) -> None:
    b = call.ids["b"]
    # b's first process left KeyPackages behind (one-time and last resort) and died
    old = [KeyPackageBundle.generate(b.hash, SUITE, now=NOW) for _ in range(3)]
    for bundle in old[:2]:
        publish(call.directory, b, bundle)
    old_lr = publish(call.directory, b, old[2], last_resort=True, ts=NOW - 10)
    # its new process: fresh KeyPackages, a join request naming them
    fresh = [KeyPackageBundle.generate(b.hash, SUITE, now=NOW) for _ in range(2)]
    publish(call.directory, b, fresh[0])
    publish(call.directory, b, fresh[1], last_resort=True)
    with pytest.raises(AlreadyMember):  # a member that names nothing is not rejoining
        call.ds.request_join(STREAM, b.hash, NOW)
    notes = call.ds.request_join(STREAM, b.hash, NOW, [x.ref for x in fresh])
    assert notes == [Notify(call.h("pub"), JoinRequested(STREAM, b.hash))]
    # the old ones are gone for good: their envelopes cannot come back
    for bundle in old:
        assert call.store.get_key_package(bundle.ref) is None
    with pytest.raises(ReplayedKeyPackage):
        call.directory.publish(old_lr, NOW, publisher=b.hash)
    # the admitter gets a fresh one, removes the stale leaf and re-adds b in one commit
    fetched = call.directory.fetch(call.h("pub"), b.hash, 1, NOW)
    assert fetched.ref in {x.ref for x in fresh}
    pending = call.groups["pub"].commit(adds=[fetched.key_package], removes=[b.hash], now=NOW)
    call.ds.submit_commit(STREAM, call.h("pub"), pending.commit, pending.welcome, NOW)
    joined = Group.join(pending.welcome, fresh)
    assert call.ds.members_of(STREAM).count(b.hash) == 1
    assert joined.epoch == call.ds.group(STREAM).epoch


# --- members without a link --------------------------------------------------------------------------


def test_a_member_without_a_link_is_reported_after_the_timeout(call: Call) -> None:
    call.ds.member_link_timeout = 3.0
    pub, a, b = call.h("pub"), call.h("a"), call.h("b")
    t = 1000.0
    assert call.ds.check_links(t, {pub: 0.0, a: 0.0, b: 0.0}) == []
    assert call.ds.check_links(t + 2.9, {pub: 0.0, a: 0.5, b: 2.9}) == []
    notes = call.ds.check_links(t + 3.0, {pub: 0.0, a: 0.5})  # b's link is gone altogether
    assert notes == [Notify(pub, MemberUnreachable(STREAM, b, pytest.approx(3.0)))]
    assert call.ds.check_links(t + 4.0, {pub: 0.0, a: 0.5}) == []  # told once per timeout
    assert [n.event.identity for n in call.ds.check_links(t + 6.0, {pub: 0.0, a: 0.5})] == [b]
    # heard from again: nothing more
    assert call.ds.check_links(t + 7.0, {pub: 0.0, a: 0.5, b: 0.1}) == []
    assert call.ds.check_links(t + 9.0, {pub: 0.0, a: 0.5, b: 0.1}) == []


def test_the_admitter_and_members_first_seen_get_the_full_time(call: Call) -> None:
    call.ds.member_link_timeout = 3.0
    # a relay that just started has heard from nobody: everyone gets 3 s from now
    assert call.ds.check_links(50.0, {}) == []
    notes = call.ds.check_links(53.0, {})
    # the admitter is never reported (nobody else may remove it)
    assert sorted(n.event.identity for n in notes) == sorted([call.h("a"), call.h("b")])
    assert {n.recipient for n in notes} == {call.h("pub")}


# --- commits log --------------------------------------------------------------------------------------


def test_commits_since_out_of_range_is_a_typed_error(call: Call) -> None:
    epoch = call.ds.group(STREAM).epoch
    assert call.ds.commits_since(STREAM, call.h("a"), epoch) == []
    assert [r.epoch for r in call.ds.commits_since(STREAM, call.h("a"), 0)] == list(range(epoch))
    for since in (epoch + 1, (1 << 64) - 1):
        with pytest.raises(SinceOutOfRange) as exc:
            call.ds.commits_since(STREAM, call.h("a"), since)
        assert exc.value.code == "since-out-of-range"


def test_commits_since_a_pruned_epoch_is_a_typed_error(call: Call) -> None:
    for _ in range(COMMIT_LOG_KEEP + 1):
        call.commit("pub", call.groups["pub"].commit(force_path=True, now=NOW))
    with pytest.raises(SinceOutOfRange):
        call.ds.commits_since(STREAM, call.h("a"), 0)
    epoch = call.ds.group(STREAM).epoch
    assert len(call.ds.commits_since(STREAM, call.h("a"), epoch - COMMIT_LOG_KEEP + 1)) == COMMIT_LOG_KEEP - 1
