"""The client session against the real delivery service, directory and SQLite store (no network).

Sessions speak to the relay's DeliveryPlane handlers through an in-process stand-in for RNS
(``support_session.Net``): join with admission policy, fan-out, leave, removal, a commit race, the
committer of last resort, keyframe requests by epoch, and restore without SFrame counter reuse.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support_session import GROUP_ID, STREAM, Net, Peer, make_plane, new_identity

from ciris_av_plugin.mls import CipherSuite, Group
from ciris_av_plugin.session import Session, SessionError
from ciris_av_plugin.session_admission import AllowList, admit_all
from ciris_av_plugin.session_events import AdmissionFailed, EpochChanged, Joined, KeyframeNeeded, Removed

_FUZZ_GROUP = Group.create(b"fuzz", b"m" * 16, CipherSuite(1))


def _setup(tmp_path: Path, policy=None, admitters=()):
    plane, store = make_plane(tmp_path / "relay.db")
    net = Net(plane)
    rns = new_identity()
    pub = net.add(Session(rns.hash, STREAM, publisher=True, policy=policy or admit_all,
                          signer=(rns.get_public_key(), rns.sign)), rns)
    net.run(pub, pub.session.create(GROUP_ID, net.now(), admitters))
    pub.media = net.relay.open_link(rns.hash, "publisher", STREAM)
    plane.enforcer.bind(pub.media.link_id, rns.hash, STREAM)
    return net, pub, store


def _join(net: Net, policy=None, rns=None) -> Peer:
    rns = rns or new_identity()
    peer = net.add(Session(rns.hash, STREAM, policy=policy or AllowList()), rns)
    net.run(peer, peer.session.publish_key_packages(net.now(), rns.get_public_key(), rns.sign))
    net.run(peer, peer.session.request_join())
    net.pump()
    return peer


def test_a_joiner_admitted_by_the_publisher_joins_the_same_epoch_and_asks_for_a_keyframe(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    assert pub.installed[-1].epoch == 0 and pub.installed[-1].send
    joiner = _join(net)
    assert joiner.session.epoch == pub.session.epoch == 1
    assert joiner.session.group.epoch_authenticator == pub.session.group.epoch_authenticator
    assert any(isinstance(a, Joined) for a in joiner.app)
    assert joiner.media is not None  # it subscribed once it was a leaf
    assert len(joiner.session.bundles) == 2  # the used KeyPackage's keys are dropped, the unused kept
    assert joiner.saved is not None and pub.saved is not None
    # the publisher keyframes on its epoch change and on the joiner's request for epoch 1
    kfs = [a for a in pub.app if isinstance(a, KeyframeNeeded)]
    assert kfs[-1].epoch == 1 and any(k.track_id == 1 for k in kfs)
    store.close()


def test_the_allow_list_decides_who_is_admitted(tmp_path: Path) -> None:
    allowed = AllowList()
    net, pub, store = _setup(tmp_path, policy=allowed)
    stranger = _join(net)
    assert stranger.session.group is None and pub.session.epoch == 0
    assert pub.session.counters["joins_not_admitted"] == 1
    allowed.identities.add(stranger.rns.hash)
    net.run(pub, pub.session.admit(stranger.rns.hash))  # its join request is still live
    net.pump()
    assert stranger.session.epoch == 1
    store.close()


def test_every_member_follows_commits_and_a_leaver_is_removed_and_its_links_closed(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    a, b = _join(net), _join(net)
    assert a.session.epoch == b.session.epoch == pub.session.epoch == 2
    media = b.media
    net.run(b, b.session.leave())
    net.pump()
    assert pub.session.epoch == a.session.epoch == 3
    assert any(isinstance(x, Removed) for x in b.app) and b.session.removed and b.saved is None
    assert media.link_id in net.relay.closed  # its subscription went with its leaf
    assert a.session.group.epoch_authenticator == pub.session.group.epoch_authenticator
    store.close()


def test_a_lagging_members_leave_is_proposed_again_on_the_new_epoch(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    a, b = _join(net), _join(net)
    net.run(pub, pub.session.rekey())  # epoch 3 at the relay; a and b have not heard of it yet
    assert b.session.epoch == 2
    net.run(b, b.session.leave())  # built on epoch 2: refused stale, b catches up and proposes again
    assert b.session.counters["refused.propose.stale-epoch"] == 1
    net.pump()
    assert b.session.removed and pub.session.epoch == a.session.epoch == 4
    assert not net.plane.ds.is_member(STREAM, b.rns.hash)
    store.close()


def test_a_member_removed_by_the_admitter_goes_dark(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    a, b = _join(net), _join(net)
    net.run(pub, pub.session.remove(b.rns.hash))
    net.pump()
    assert b.session.removed and not net.plane.ds.is_member(STREAM, b.rns.hash)
    ev = [x for x in a.app if isinstance(x, EpochChanged)][-1]
    assert ev.removed == (b.rns.hash,)
    store.close()


def test_two_members_race_for_one_epoch_one_wins_and_the_loser_retries(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    a = _join(net)
    # both build a commit for epoch 1 before either reaches the relay
    first = pub.session.rekey()
    second = a.session.rekey()
    net.run(a, second)  # a's wins
    net.run(pub, first)  # the publisher's is stale: it follows a's, then retries on top
    net.pump()
    assert a.session.counters["commits_won"] == 1
    assert pub.session.counters["commits_lost"] == 1 and pub.session.counters["commits_won"] == 2  # admit + retry
    assert pub.session.epoch == a.session.epoch == 3
    assert pub.session.group.epoch_authenticator == a.session.group.epoch_authenticator
    store.close()


def test_the_lowest_active_leaf_commits_when_the_creator_is_gone(tmp_path: Path) -> None:
    a_rns = new_identity()
    net, pub, store = _setup(tmp_path, admitters=[a_rns.hash])
    a = _join(net, policy=admit_all, rns=a_rns)
    b = _join(net)
    # the creator leaves: the relay asks the lowest remaining leaf (a) to commit its self-Remove
    net.run(pub, pub.session.leave())
    net.pump()
    assert pub.session.removed and a.session.epoch == b.session.epoch == 3
    assert net.plane.ds.admitter(STREAM) == a.rns.hash
    late = _join(net)  # a, named an admitter by the creator, admits by its own policy now
    assert late.session.epoch == 4 == a.session.epoch
    store.close()


def test_a_member_not_named_admitter_commits_a_leave_but_admits_nobody(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    a = _join(net, policy=admit_all)
    b = _join(net)
    net.run(pub, pub.session.leave())
    net.pump()
    # a commits the creator's self-Remove (by reference: any member may) ...
    assert pub.session.removed and a.session.epoch == b.session.epoch == 3
    # ... but it is no admitter: a join request reaches nobody, and its own Add would be refused
    late = _join(net)
    assert late.session.epoch is None and a.session.epoch == 3
    net.run(a, a.session.admit(late.rns.hash))
    net.pump()
    assert any(isinstance(x, AdmissionFailed) and x.code == "not-admitter" for x in a.app)
    assert late.session.epoch is None and a.session.epoch == 3
    store.close()


def test_keyframe_requests_are_honoured_only_at_the_requested_epoch_or_later(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    s = pub.session
    assert s.on_event("KeyframeWanted", {"stream_id": STREAM, "track_id": 1, "epoch": 5}, net.now()) == []
    out = s.on_event("KeyframeWanted", {"stream_id": STREAM, "track_id": 1, "epoch": 0}, net.now())
    assert out == [KeyframeNeeded(1, 0)]
    store.close()


def test_a_restored_publisher_commits_an_update_before_it_may_send(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    a = _join(net)
    saved = pub.saved
    # the publisher process restarts: a new session from the stored state, same identity
    restored = Session(pub.rns.hash, STREAM, publisher=True, policy=admit_all)
    peer = net.add(restored, pub.rns)
    actions = restored.restore(saved)
    assert not restored.may_send and actions[0].send is False
    net.run(peer, actions)
    net.pump()
    assert restored.may_send and restored.epoch == 2 == a.session.epoch
    assert [i.send for i in peer.installed] == [False, True]
    assert restored.group.epoch_authenticator == a.session.group.epoch_authenticator
    store.close()


def test_a_restarted_relay_keeps_the_group_and_a_second_joiner_joins(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    a = _join(net)
    store.close()
    plane, store = make_plane(tmp_path / "relay.db", net.relay)  # same links, new service over the same file
    net.plane = plane
    late = _join(net)
    assert late.session.epoch == 2 == a.session.epoch == pub.session.epoch
    store.close()


def test_session_verbs_refuse_the_wrong_state(tmp_path: Path) -> None:
    s = Session(new_identity().hash, STREAM)
    with pytest.raises(SessionError):
        s.leave()
    with pytest.raises(SessionError):
        s.request_join()  # no KeyPackages published


def test_malformed_or_foreign_events_are_counted_not_raised(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    s = pub.session
    now = net.now()
    assert s.on_event("CommitAccepted", {"stream_id": STREAM, "epoch": "x", "message": 3}, now) == []
    assert s.on_event("JoinRequested", {"stream_id": STREAM}, now) == []
    assert s.on_event("CommitAccepted", {"stream_id": STREAM + 1}, now) == []
    assert s.on_event("Whatever", {"stream_id": STREAM}, now) == []
    garbage = s.on_event("CommitAccepted", {"stream_id": STREAM, "epoch": 0, "message": b"\x00" * 40}, now)
    assert [a.path for a in garbage] == ["kp-publish", "commit-failed"]  # a fresh KeyPackage, then the report
    assert s.counters["events_malformed"] == 2 and s.epoch == 0
    store.close()


def test_an_admission_for_an_identity_without_key_packages_fails_cleanly(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    ghost = new_identity()
    net.run(pub, pub.session.admit(ghost.hash))  # never asked to join: the fetch is refused
    assert any(isinstance(a, AdmissionFailed) and a.code == "not-authorised" for a in pub.app)
    assert pub.session.epoch == 0
    store.close()


def test_requests_lost_to_a_link_outage_are_sent_again_after_reconnecting(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    rns = new_identity()
    s = Session(rns.hash, STREAM)
    peer = net.add(s, rns)
    publish = s.publish_key_packages(net.now(), rns.get_public_key(), rns.sign)
    join = s.request_join()
    for req in publish + join:  # the link was down: nothing reached the relay
        assert s.on_refused(req, "link-down", "no link", net.now()) == []
    assert s.epoch is None
    net.run(peer, s.resync())  # reconnected: the KeyPackages and the join request go out again
    net.pump()
    assert s.epoch == pub.session.epoch == 1
    store.close()


def test_a_commit_refused_for_now_waits_and_is_tried_again(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    s = pub.session
    (req,) = s.rekey()
    out = s.on_refused(req, "rate-limited", "too many requests", net.now())  # the relay's per-link budget
    assert [type(a).__name__ for a in out] == ["Backoff"] and s.group.pending is None
    assert s.rekey() == []  # queued behind the waiting one, nothing sent while paused
    net.run(pub, s.resume())
    assert s.epoch == 2 and s.counters["commits_won"] == 2
    store.close()


def test_an_admitter_that_missed_a_join_request_admits_it_after_reconnecting(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    rns = new_identity()
    peer = net.add(Session(rns.hash, STREAM), rns)
    net.run(peer, peer.session.publish_key_packages(net.now(), rns.get_public_key(), rns.sign))
    net.run(peer, peer.session.request_join())
    net.relay.events[pub.control.link_id].clear()  # the JoinRequested event died with the old link
    net.pump()
    assert peer.session.epoch is None
    net.run(pub, pub.session.resync())
    net.pump()
    assert peer.session.epoch == pub.session.epoch == 1
    store.close()


def test_a_member_that_cannot_process_a_commit_is_removed_and_re_added(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    a = _join(net)
    net.run(pub, pub.session.rekey())  # epoch 2; a's copy of the commit is damaged on the way
    (kind, data), = net.relay.events[a.control.link_id]
    net.relay.events[a.control.link_id].clear()
    bad = bytearray(data["message"])
    bad[-40] ^= 1  # in the membership tag: the relay cannot see it, the member can
    net.run(a, a.session.on_event(kind, dict(data, message=bytes(bad)), net.now()))
    assert a.refused == [] and a.session.counters["commits_failed"] == 1
    net.pump()  # RecoveryRequested -> the admitter removes and re-adds a -> a's Welcome
    assert a.session.epoch == pub.session.epoch == 3
    assert a.session.group.epoch_authenticator == pub.session.group.epoch_authenticator
    assert net.plane.ds.members_of(STREAM).count(a.rns.hash) == 1
    store.close()


_values = st.one_of(st.none(), st.integers(-5, 2**70), st.binary(max_size=64), st.text(max_size=8),
                    st.lists(st.binary(max_size=8), max_size=3), st.lists(st.tuples(st.integers(0, 3), st.binary()),
                                                                        max_size=3))


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["JoinRequested", "WelcomeReady", "CommitAccepted", "ProposalReceived",
                             "RecoveryRequested", "WelcomeExpired", "KeyframeWanted", "Other"]),
       data=st.dictionaries(st.sampled_from(["identity", "epoch", "message", "joiner", "track_id",
                                             "commit_requested"]), _values, max_size=5))
def test_arbitrary_relay_events_never_raise_nor_change_the_epoch(kind: str, data: dict) -> None:
    s = Session(b"m" * 16, STREAM, publisher=True, policy=admit_all)
    s.group = _FUZZ_GROUP.__class__.from_bytes(_FUZZ_GROUP.to_bytes())
    out = s.on_event(kind, {**data, "stream_id": STREAM}, 0.0)
    assert isinstance(out, list) and s.epoch == 0


@settings(max_examples=100, deadline=None)
@given(op=st.sampled_from(["register", "welcome", "commits", "kp-fetch", "commit", "join-requests"]),
       reply=st.dictionaries(st.sampled_from(["welcome", "commits", "key_package", "envelope", "identities",
                                              "admitter", "epoch"]), _values, max_size=4))
def test_arbitrary_replies_never_raise(op: str, reply: dict) -> None:
    from ciris_av_plugin.session_actions import Request
    from ciris_av_plugin.session_work import Work

    s = Session(b"m" * 16, STREAM, publisher=True, policy=admit_all)
    s.group = _FUZZ_GROUP.__class__.from_bytes(_FUZZ_GROUP.to_bytes())
    work = Work("admit", b"j" * 16)
    s._queue.busy = work
    out = s.on_reply(Request("x", {}, op, work), reply, 0.0)
    assert isinstance(out, list) and s.epoch == 0


def test_an_admitter_that_missed_a_leave_commits_it_after_reconnecting(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    a = _join(net)
    net.run(a, a.session.leave())
    net.relay.events[pub.control.link_id].clear()  # the ProposalReceived died with the old link
    net.pump()
    assert net.plane.ds.is_member(STREAM, a.rns.hash)
    net.run(pub, pub.session.resync())
    net.pump()
    assert a.session.removed and pub.session.epoch == 2 and not net.plane.ds.is_member(STREAM, a.rns.hash)
    store.close()


def test_a_ghost_whose_welcome_expired_unfetched_is_removed_by_the_admitter(tmp_path: Path) -> None:
    from ciris_av_plugin.relay.delivery import WELCOME_TTL_S

    net, pub, store = _setup(tmp_path)
    rns = new_identity()
    ghost = Session(rns.hash, STREAM)
    peer = net.add(ghost, rns)
    net.run(peer, ghost.publish_key_packages(net.now(), rns.get_public_key(), rns.sign))
    net.run(peer, ghost.request_join())
    del net.peers[rns.hash]  # the joiner vanishes: its WelcomeReady is never acted on
    net.pump()
    assert pub.session.epoch == 1 and net.plane.ds.is_member(STREAM, rns.hash)
    later = net.now() + WELCOME_TTL_S + 1
    net.plane.wall_clock = lambda: later
    net.plane.tick()  # the delivery ticker: the Welcome expired, the admitter is told
    net.pump()
    assert pub.session.epoch == 2 and not net.plane.ds.is_member(STREAM, rns.hash)
    store.close()
