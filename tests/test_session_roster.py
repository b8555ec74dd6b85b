"""Client sessions under the relay's roster rules (no network; the real delivery plane and SQLite).

A member's proposal to remove someone else is never committed by the admitter's session; a process
restarted with the same identity rejoins (its stale leaf removed in the commit that re-adds it);
a member the relay has not heard from for the configured time is removed by the admitter; a member
too far behind for the commit log asks to be removed and re-added.
"""

from __future__ import annotations

from pathlib import Path

from support_session import GROUP_ID, STREAM, Net, Peer, make_plane, new_identity

from ciris_av_plugin.protocol import codes
from ciris_av_plugin.protocol import control as wire
from ciris_av_plugin.session import Session
from ciris_av_plugin.session_actions import Request
from ciris_av_plugin.session_admission import admit_all
from ciris_av_plugin.session_work import Work


def _setup(tmp_path: Path):
    plane, store = make_plane(tmp_path / "relay.db")
    net = Net(plane)
    rns = new_identity()
    pub = net.add(Session(rns.hash, STREAM, publisher=True, policy=admit_all,
                          signer=(rns.get_public_key(), rns.sign)), rns)
    net.run(pub, pub.session.create(GROUP_ID, net.now()))
    return net, pub, store


def _join(net: Net, rns=None) -> Peer:
    rns = rns or new_identity()
    peer = net.add(Session(rns.hash, STREAM, signer=(rns.get_public_key(), rns.sign)), rns)
    net.run(peer, peer.session.publish_key_packages(net.now(), rns.get_public_key(), rns.sign))
    net.run(peer, peer.session.request_join())
    net.pump()
    return peer


def _die(net: Net, peer: Peer) -> None:
    """The process is gone: its links close, its session with them."""
    for link in (peer.control, peer.media):
        if link is not None:
            net.relay.close_link(link.link_id)


def test_the_admitter_never_commits_a_members_remove_of_another(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    a, b = _join(net), _join(net)
    forged = a.session.group.propose_remove(b.rns.hash)
    # the relay refuses it; were it delivered anyway, the admitter's session would not commit it
    net.run(a, [Request(wire.PATH_PROPOSE, {"stream_id": STREAM, "proposal": forged}, "propose")])
    assert a.refused == ["propose:remove-not-own"]
    out = pub.session.on_event(wire.EVENT_PROPOSAL_RECEIVED, {
        "stream_id": STREAM, "epoch": pub.session.epoch, "message": forged, "commit_requested": True,
    }, net.now())
    assert out == [] and pub.session.group.pending_proposals == []
    assert pub.session.counters["proposals_refused"] == 1
    assert b.rns.hash in pub.session.group.members.values()
    store.close()


def test_a_member_restarted_three_times_rejoins_each_time(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    clock = [net.now()]
    net.now = net.plane.wall_clock = lambda: clock[0]  # type: ignore[method-assign]
    rns = new_identity()
    watcher = _join(net, rns)
    assert watcher.session.epoch == 1
    for _ in range(3):
        _die(net, watcher)  # no leave: its leaf stays, its unused KeyPackages stay published
        clock[0] += 10.0  # a restart takes a while (and join requests are rate-limited per identity)
        watcher = _join(net, rns)  # a new process, same identity, fresh KeyPackages
        assert watcher.session.epoch == pub.session.epoch, watcher.refused
        members = list(pub.session.group.members.values())
        assert sorted(members) == sorted([pub.rns.hash, rns.hash])  # the stale leaf went with the re-add
    store.close()


def test_a_member_the_relay_does_not_hear_is_removed_by_the_admitter(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    a, b = _join(net), _join(net)
    net.plane.ds.member_link_timeout = 3.0
    mono = [100.0]
    net.relay.clock = lambda: mono[0]  # type: ignore[method-assign]
    net.plane.tick()
    _die(net, b)  # killed: its links go without a leave
    for t in (101.0, 102.9):
        mono[0] = t
        net.plane.tick()
        net.pump()
        assert pub.session.epoch == 2  # not yet
    mono[0] = 103.0
    net.plane.tick()
    net.pump()
    assert pub.session.epoch == 3 and b.rns.hash not in pub.session.group.members.values()
    assert a.session.epoch == 3
    store.close()


def test_a_member_too_far_behind_for_the_log_asks_to_be_re_added(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    a = _join(net)
    out = a.session.on_refused(Request(wire.PATH_COMMITS, {"stream_id": STREAM, "since": 0}, "commits"),
                               codes.ERR_SINCE_OUT_OF_RANGE, "pruned", net.now())
    assert [r.path for r in out if isinstance(r, Request)] == [wire.PATH_KP_PUBLISH, wire.PATH_COMMIT_FAILED]
    store.close()


def test_commits_out_of_range_is_a_typed_refusal_on_the_wire(tmp_path: Path) -> None:
    import pytest

    from ciris_av_plugin.transport.control import ControlError

    net, pub, store = _setup(tmp_path)
    handler = net.plane.handlers[wire.PATH_COMMITS]
    for since in (1, (1 << 64) - 1):  # ahead of the stream; beyond what SQLite can even bind
        with pytest.raises(ControlError) as exc:
            net.plane.call(handler, pub.rns.hash, {"stream_id": STREAM, "since": since})
        assert exc.value.code == "since-out-of-range"
    assert net.plane.call(handler, pub.rns.hash, {"stream_id": STREAM, "since": 0}) == {"commits": []}
    store.close()


def test_a_rejoin_whose_stale_leaf_was_removed_meanwhile_is_a_plain_add(tmp_path: Path) -> None:
    net, pub, store = _setup(tmp_path)
    rns = new_identity()
    first = _join(net, rns)
    _die(net, first)
    again = Session(rns.hash, STREAM, signer=(rns.get_public_key(), rns.sign))
    peer = net.add(again, rns)
    net.run(peer, again.publish_key_packages(net.now(), rns.get_public_key(), rns.sign))
    pub.session._queue.paused = True  # the admitter is busy (a backoff) while the request arrives
    net.run(peer, again.request_join())
    net.pump()
    assert [(w.what, w.identity) for w in pub.session._queue.items] == [("recover", rns.hash)]  # a rejoin: Remove + Add
    # ... but the ghost removal (no link for too long) is committed first
    pub.session._queue.items.appendleft(Work("remove", rns.hash))
    net.run(pub, pub.session.resume())
    net.pump()
    assert again.epoch == pub.session.epoch == 3, peer.refused
    assert sorted(pub.session.group.members.values()) == sorted([pub.rns.hash, rns.hash])
    store.close()
