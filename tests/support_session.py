"""An in-process stand-in for the RNS seam: sessions talk to the real DeliveryPlane handlers.

:class:`FakeRelay` offers what :class:`~ciris_av_plugin.transport.delivery_handlers.DeliveryPlane`
needs from a ``RelayNode`` (handler registration, links by identity, event queues, link closing); each
identity has one control link and optional media links. :class:`Net` runs sessions against it: it
executes their actions, feeding replies and refusals back, and delivers queued events on ``pump``.
The relay side is the real delivery service, directory and SQLite store.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import RNS

from ciris_av_plugin.relay.delivery import DeliveryService
from ciris_av_plugin.relay.directory import KeyPackageDirectory
from ciris_av_plugin.session import Session
from ciris_av_plugin.session_actions import Backoff, DeleteState, InstallKeys, Request, SaveState, Subscribe
from ciris_av_plugin.store import SQLiteStore
from ciris_av_plugin.transport.control import ControlError
from ciris_av_plugin.transport.delivery_handlers import DeliveryPlane

STREAM = 77
GROUP_ID = b"test-stream-77"


@dataclass
class FakeLink:
    link_id: bytes
    identity: bytes
    role: str | None = None
    stream_id: int | None = None
    open: bool = True


class FakeRelay:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}
        self.authorize_role = None
        self.engine = object()
        self.links_by_id: dict[bytes, FakeLink] = {}
        self.events: dict[bytes, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self.counts: dict[str, int] = defaultdict(int)
        self.closed: list[bytes] = []
        self.destination = None
        self.quiet: dict[bytes, float] = {}
        """Seconds of silence to report per identity (default 0: just heard from)."""

    def clock(self) -> float:
        return time.monotonic()

    def add_request_handler(self, path: str, fn: Any) -> None:
        self.handlers[path] = fn

    def open_link(self, identity: bytes, role: str | None = None, stream_id: int | None = None) -> FakeLink:
        link = FakeLink(f"{identity.hex()}/{role}/{len(self.links_by_id)}".encode(), identity, role, stream_id)
        if role is not None and self.authorize_role is not None and not self.authorize_role(identity, role, stream_id):
            raise ControlError("not-member", "refused")
        self.links_by_id[link.link_id] = link
        return link

    def link_identity(self, link_id: bytes) -> bytes | None:
        link = self.links_by_id.get(link_id)
        return link.identity if link else None

    def links(self, role: str | None = None) -> list[bytes]:
        return [lk.link_id for lk in self.links_by_id.values() if lk.open and (role is None or lk.role == role)]

    def links_of(self, identity: bytes, role: str | None = None, stream_id: int | None = None) -> list[bytes]:
        return [
            lk.link_id
            for lk in self.links_by_id.values()
            if lk.open
            and lk.identity == identity
            and (role is None or lk.role == role or (role == "control" and lk.role is None))
            and (stream_id is None or lk.stream_id == stream_id)
        ]

    def silence(self) -> dict[bytes, float]:
        return {lk.identity: self.quiet.get(lk.identity, 0.0) for lk in self.links_by_id.values() if lk.open}

    def push_event(self, link_id: bytes, kind: str, data: dict[str, Any]) -> bool:
        if link_id not in self.links_by_id:
            return False
        self.events[link_id].append((kind, data))
        return True

    def close_link(self, link_id: bytes) -> bool:
        link = self.links_by_id.pop(link_id, None)
        if link is None:
            return False
        link.open = False
        self.closed.append(link_id)
        return True

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n


def make_plane(db: Path, relay: FakeRelay | None = None) -> tuple[DeliveryPlane, SQLiteStore]:
    store = SQLiteStore(db)
    ds = DeliveryService(store)
    directory = KeyPackageDirectory(store, ds.may_fetch, suites={1})
    ds.directory = directory
    return DeliveryPlane(relay or FakeRelay(), ds, directory), store


@dataclass
class Peer:
    rns: RNS.Identity
    session: Session
    control: FakeLink
    saved: bytes | None = None
    installed: list[InstallKeys] = field(default_factory=list)
    app: list[Any] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    media: FakeLink | None = None


class Net:
    """Runs sessions against a DeliveryPlane over a FakeRelay, single-threaded."""

    def __init__(self, plane: DeliveryPlane) -> None:
        self.plane = plane
        self.relay: FakeRelay = plane.relay  # type: ignore[assignment]
        self.peers: dict[bytes, Peer] = {}

    def add(self, session: Session, rns: RNS.Identity) -> Peer:
        peer = Peer(rns, session, self.relay.open_link(rns.hash))
        self.peers[rns.hash] = peer
        return peer

    def now(self) -> float:
        return time.time()

    def run(self, peer: Peer, actions: list[Any]) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, Request):
                handler = self.plane.handlers[action.path]
                try:
                    reply = self.plane.call(handler, peer.rns.hash, action.body)
                except ControlError as exc:
                    peer.refused.append(f"{action.path}:{exc.code}")
                    queue = peer.session.on_refused(action, exc.code, exc.message, self.now()) + queue
                    continue
                queue = peer.session.on_reply(action, reply, self.now()) + queue
            elif isinstance(action, SaveState):
                peer.saved = action.state
            elif isinstance(action, DeleteState):
                peer.saved = None
            elif isinstance(action, InstallKeys):
                peer.installed.append(action)
            elif isinstance(action, Backoff):
                peer.app.append(action)
                queue = peer.session.resume() + queue  # no real wait in-process
            elif isinstance(action, Subscribe):
                peer.media = self.relay.open_link(peer.rns.hash, "subscriber", action.stream_id)
            else:
                peer.app.append(action)

    def pump(self, rounds: int = 20) -> int:
        """Deliver queued events until none are left; returns how many were delivered."""
        delivered = 0
        for _ in range(rounds):
            moved = False
            for link_id, queue in list(self.relay.events.items()):
                link = self.relay.links_by_id.get(link_id)
                peer = self.peers.get(link.identity) if link else None
                while queue:
                    kind, data = queue.pop(0)
                    if peer is None:
                        continue
                    moved = True
                    delivered += 1
                    self.run(peer, peer.session.on_event(kind, data, self.now()))
            if not moved:
                break
        return delivered


def new_identity() -> RNS.Identity:
    return RNS.Identity()
