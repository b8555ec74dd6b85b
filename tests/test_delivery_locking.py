"""The threading model of the relay's two cores: one lock each, owned by the transport.

The delivery core (DeliveryService, KeyPackageDirectory, their store) is single-threaded and called
only under ``DeliveryPlane.lock``; the forwarding engine has its own lock and its publisher hook
never takes the delivery lock, so inline forwarding cannot wait behind a commit being validated.
"""

from __future__ import annotations

import functools
import inspect
import threading
from pathlib import Path

from support_session import STREAM, FakeRelay, Net, make_plane, new_identity

from ciris_av_plugin.relay.delivery import DeliveryService
from ciris_av_plugin.relay.directory import KeyPackageDirectory
from ciris_av_plugin.relay.engine import ForwardingEngine
from ciris_av_plugin.session import Session
from ciris_av_plugin.session_admission import admit_all

WAIT_S = 10.0
"""Bound on waiting for a thread that should finish in microseconds; only a deadlock runs it out."""


def _guard_public_methods(obj: object, lock: threading.Lock, calls: list[str], unlocked: list[str]) -> None:
    """Wrap every public method of ``obj`` to record whether it ran with ``lock`` held."""
    for name, method in inspect.getmembers(obj, inspect.ismethod):
        if name.startswith("_"):
            continue

        def wrapper(*args, __m=method, __n=name, **kwargs):
            calls.append(__n)
            if not lock.locked():
                unlocked.append(__n)
            return __m(*args, **kwargs)

        setattr(obj, name, functools.wraps(method)(wrapper))


def test_the_delivery_core_is_only_called_under_the_planes_lock(tmp_path: Path) -> None:
    plane, store = make_plane(tmp_path / "relay.db")
    calls: list[str] = []
    unlocked: list[str] = []
    _guard_public_methods(plane.ds, plane.lock, calls, unlocked)
    _guard_public_methods(plane.directory, plane.lock, calls, unlocked)
    net = Net(plane)
    rns = new_identity()
    pub = net.add(Session(rns.hash, STREAM, publisher=True, policy=admit_all,
                          signer=(rns.get_public_key(), rns.sign)), rns)
    net.run(pub, pub.session.create(b"locking", net.now()))
    peers = []
    for _ in range(2):
        ident = new_identity()
        peer = net.add(Session(ident.hash, STREAM), ident)
        net.run(peer, peer.session.publish_key_packages(net.now(), ident.get_public_key(), ident.sign))
        net.run(peer, peer.session.request_join())
        net.pump()
        peers.append(peer)
    assert plane.authorize_role(peers[0].rns.hash, "subscriber", STREAM)
    net.run(peers[1], peers[1].session.leave())
    net.pump()
    plane.tick()
    plane.stats()
    assert peers[1].session.removed and pub.session.epoch == 3
    # every kind of entry ran: requests, ticks, link authorisation, status
    assert {"register_stream", "request_join", "submit_commit", "submit_proposal", "publish", "fetch", "tick",
            "check_links", "is_member"} <= set(calls)
    assert unlocked == []
    store.close()


def test_the_engines_publisher_hook_never_waits_for_the_delivery_lock(tmp_path: Path) -> None:
    relay = FakeRelay()
    relay.engine = ForwardingEngine()
    plane, store = make_plane(tmp_path / "relay.db", relay)
    ident = new_identity()
    link = relay.open_link(ident.hash)  # the publisher role is what the engine grants here
    done = threading.Event()

    def publish() -> None:
        relay.engine.add_publisher(link.link_id, STREAM, 0.0)  # calls the plane's _bind_publisher
        done.set()

    with plane.lock:  # a commit being validated holds the delivery lock
        worker = threading.Thread(target=publish, daemon=True)
        worker.start()
        finished = done.wait(WAIT_S)
    assert finished, "the engine's publisher hook waited for the delivery lock"
    assert link.link_id in set(plane.enforcer.bound_links())
    store.close()


def test_the_delivery_core_holds_no_lock_of_its_own(tmp_path: Path) -> None:
    plane, store = make_plane(tmp_path / "relay.db")
    for core in (plane.ds, plane.directory):
        held = [k for k, v in vars(core).items() if isinstance(v, type(threading.Lock()))]
        assert held == [], f"{type(core).__name__} keeps its own lock: {held}"
    assert isinstance(plane.ds, DeliveryService) and isinstance(plane.directory, KeyPackageDirectory)
    store.close()
