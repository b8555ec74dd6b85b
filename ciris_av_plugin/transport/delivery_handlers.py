"""The delivery service and KeyPackage directory on a relay's control plane (RNS binding).

:class:`DeliveryPlane` registers the MLS control requests on a :class:`~.relay.RelayNode` (before
it starts) and wires the relay's authorisation to the delivery service's roster:

* **Requests** (all from identified links, through the relay's rate limits and size cap; the
  identity is always the link's, never one named in the body): ``kp-publish``, ``kp-fetch``,
  ``register-stream``, ``join``, ``welcome``, ``welcome-ack``, ``tree``, ``commit``, ``propose``,
  ``commits``, ``commit-failed`` and ``keyframe`` (a keyframe request carrying the requester's epoch).
  Refusals answer the refusing error's stable ``code`` (``stale-commit``, ``fetch-not-authorised``...).
* **Events.** The delivery service's :class:`~ciris_av_plugin.relay.delivery_events.Notify` items go on the
  recipient's control links' long polls (links with no media role; every link of the identity if it
  has none), with the event's stable wire name (``KIND``, ``protocol/control.py``) as ``kind``.
* **Authorisation.** ``publish``/``subscribe`` only by a leaf of the stream's current tree (or a
  configured peer relay); every publishing link is bound to its identity for the frame filter
  (:class:`~ciris_av_plugin.relay.enforcement.EpochEnforcer`), which the engine runs per fragment.
  When an accepted commit removes a member, its media links on that stream are closed at once.
* **Time.** The directory and delivery service get wall-clock time (their deadlines are persisted and
  must survive a restart); the enforcer gets the relay's monotonic clock, like the engine. A ticker
  thread expires join requests and Welcomes and forgets links that went away.
* **Threads.** The delivery core (the :class:`DeliveryService`, the directory, their store) is
  single-threaded; this plane owns its one lock and holds it for every call in, from RNS request
  threads, the ticker and link authorisation. The forwarding engine has its own lock
  (``RelayNode.engine_lock``) and never takes this one: the publisher hook it calls under its lock
  (:meth:`_bind_publisher`) touches only the frame filter, so inline forwarding never waits behind a
  commit being validated. The only order ever taken is this lock, then the engine's (closing a
  removed member's links). The frame filter (:class:`EpochEnforcer`) is the seam both cores share and
  keeps its own small lock.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import RNS

from ..errors import RelayError
from ..protocol.control import (
    EVENT_KEYFRAME_WANTED,
    PATH_COMMIT,
    PATH_COMMIT_FAILED,
    PATH_COMMITS,
    PATH_JOIN,
    PATH_JOIN_REQUESTS,
    PATH_KEYFRAME,
    PATH_KP_FETCH,
    PATH_KP_PUBLISH,
    PATH_PROPOSALS,
    PATH_PROPOSE,
    PATH_REGISTER,
    PATH_TREE,
    PATH_WELCOME,
    PATH_WELCOME_ACK,
)
from ..relay.delivery import MAX_ADMITTERS, DeliveryService
from ..relay.delivery_errors import UnknownStream
from ..relay.delivery_events import Notify
from ..relay.directory import MAX_ONE_TIME_PER_IDENTITY, KeyPackageDirectory
from ..relay.enforcement import EpochEnforcer
from . import control
from .errors import ControlError
from .relay import RelayNode

log = logging.getLogger(__name__)

# The delivery service's tick expires join requests (120 s) and Welcomes (300 s) and sweeps the
# directory; once a second is far finer than any of those deadlines and costs one indexed query.
DELIVERY_TICK_S = 1.0

# Largest single bytes field the handlers accept. The transport already caps a whole request at
# control.MAX_REQUEST_SIZE; naming the field limit here refuses an oversized field with a typed
# error before any MLS parsing (the delivery service's own limits are the same size).
MAX_FIELD_BYTES = control.MAX_REQUEST_SIZE

# Member keyframe requests forwarded per (stream, track) and epoch at most this often. A keyframe is
# ~4x a delta frame, so a member asking at the control plane's 10 requests/s could turn the stream
# into keyframes only; the engine's own keyframe requests are rate-limited the same way (its
# keyframe_min_interval). A request for a newer epoch always passes: it is a joiner that needs one.
KEYFRAME_WANTED_MIN_INTERVAL_S = 0.5

# A KeyPackageRef is a hash of the suite's (SHA-256 to SHA-512): 64 bytes at most.
MAX_REF_BYTES = 64

# Identity hashes are 16 bytes (RNS truncated SHA-256).
IDENTITY_HASH_LEN = 16

Handler = Callable[[bytes, dict[str, Any], float], dict[str, Any]]


def require_bytes(body: dict[str, Any], key: str, max_len: int = MAX_FIELD_BYTES, *, exact: int | None = None) -> bytes:
    """A bytes field of a request body, or a ``bad-request`` refusal."""
    value = body.get(key)
    if not isinstance(value, bytes) or len(value) > max_len or (exact is not None and len(value) != exact):
        want = f"{exact} bytes" if exact is not None else f"at most {max_len} bytes"
        raise ControlError(control.ERR_BAD_REQUEST, f"{key} must be bytes ({want})")
    return value


class DeliveryPlane:
    """The delivery service, directory and media enforcement bound to one relay."""

    def __init__(
        self,
        relay: RelayNode,
        ds: DeliveryService,
        directory: KeyPackageDirectory,
        *,
        peer_relays: Iterable[bytes] = (),
        wall_clock: Callable[[], float] = time.time,
        member_link_timeout: float | None = None,
    ) -> None:
        """``member_link_timeout`` overrides the delivery service's (``realtime_av.member_link_timeout_secs``)."""
        self.relay = relay
        self.ds = ds
        self.directory = directory
        self.peer_relays = frozenset(peer_relays)
        self.wall_clock = wall_clock
        if member_link_timeout is not None:
            ds.member_link_timeout = member_link_timeout
        self.enforcer = EpochEnforcer()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.lock = threading.Lock()
        """The delivery core's lock (see the module docstring): held for every call into ``ds`` and ``directory``."""
        self.closed_for_removal = 0
        self._keyframe_sent: dict[tuple[int, int], tuple[float, int]] = {}
        handlers: dict[str, Handler] = {
            PATH_KP_PUBLISH: self._kp_publish,
            PATH_KP_FETCH: self._kp_fetch,
            PATH_REGISTER: self._register,
            PATH_JOIN: self._join,
            PATH_JOIN_REQUESTS: self._join_requests,
            PATH_WELCOME: self._welcome,
            PATH_WELCOME_ACK: self._welcome_ack,
            PATH_TREE: self._tree,
            PATH_COMMIT: self._commit,
            PATH_PROPOSE: self._propose,
            PATH_PROPOSALS: self._proposals,
            PATH_COMMITS: self._commits,
            PATH_COMMIT_FAILED: self._commit_failed,
            PATH_KEYFRAME: self._keyframe,
        }
        self.handlers = handlers
        for path, fn in handlers.items():
            relay.add_request_handler(path, self._adapt(fn))
        relay.authorize_role = self.authorize_role
        engine = relay.engine
        if hasattr(engine, "set_frame_filter"):
            engine.set_frame_filter(self.enforcer.filter)
            engine.set_authorize_publish(self._bind_publisher)
        # Streams restored from the store get their frame filter now, before any publisher binds:
        # the engine's hook must never need the delivery core.
        with self.lock:
            for stream_id in self.ds.stream_ids():
                self._sync_stream(stream_id)

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery ticker (call after ``relay.start()``)."""
        self._ticker = threading.Thread(target=self._tick_loop, name="delivery-tick", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        self._stop.set()

    def _tick_loop(self) -> None:
        while not self._stop.wait(DELIVERY_TICK_S):
            try:
                self.tick()
            except Exception:
                log.exception("delivery tick failed")

    def tick(self) -> None:
        with self.lock:
            self._notify(self.ds.tick(self.wall_clock()))
            # Liveness is judged on the relay's monotonic clock: a wall-clock step must not remove anyone.
            self._notify(self.ds.check_links(self.relay.clock(), self.relay.silence()))
        live = set(self.relay.links("publisher"))
        for link_id in list(self.enforcer.bound_links()):
            if link_id not in live:
                self.enforcer.unbind(link_id)

    def stats(self) -> dict[str, Any]:
        """The delivery core's counters, copied under its lock."""
        with self.lock:
            return {
                "delivery": dict(self.ds.counters),
                "directory": dict(self.directory.counters),
                "member_link_timeout_s": self.ds.member_link_timeout,
            }

    # ---- authorisation ---------------------------------------------------------------------

    def authorize_role(self, identity: bytes, role: str, stream_id: int) -> bool:
        """publish/subscribe: a leaf of the stream's current tree, or a configured peer relay."""
        if identity in self.peer_relays:
            return True
        with self.lock:
            return self.ds.is_member(stream_id, identity)

    def _bind_publisher(self, link_id: bytes, stream_id: int) -> bool:
        """The engine's ``authorize_publish``, called under the engine's lock: remember whose link this
        is for the frame filter. It must not take the delivery lock (see the module docstring); the
        filter already knows every stream (synced at start, registration and each commit)."""
        identity = self.relay.link_identity(link_id)
        if identity is None:
            return False
        self.enforcer.bind(link_id, identity, stream_id, peer=identity in self.peer_relays)
        return True

    def _sync_stream(self, stream_id: int) -> None:
        try:
            group = self.ds.group(stream_id)
        except UnknownStream:
            return
        leaf_count = getattr(group, "leaf_count", None) or _width(group.members)
        self.enforcer.set_epoch(stream_id, group.epoch, group.members, leaf_count, self.relay.clock())

    # ---- plumbing --------------------------------------------------------------------------

    def _adapt(self, fn: Handler) -> Callable[[Any, dict[str, Any], RNS.Identity | None], dict[str, Any]]:
        def handler(state: Any, body: dict[str, Any], _remote: RNS.Identity | None) -> dict[str, Any]:
            identity = state.identity_hash
            if identity is None:
                raise ControlError(control.ERR_NOT_IDENTIFIED, "identify and confirm first")
            return self.call(fn, identity, body)

        return handler

    def call(self, fn: Handler, identity: bytes, body: dict[str, Any]) -> dict[str, Any]:
        """Run one handler for ``identity``; a core refusal becomes a typed :class:`ControlError`."""
        try:
            with self.lock:
                return fn(identity, body, self.wall_clock())
        except RelayError as exc:
            raise ControlError(getattr(exc, "code", control.ERR_REFUSED), str(exc)) from None

    def _notify(self, notes: Iterable[Notify]) -> None:
        for note in notes:
            data = dataclasses.asdict(note.event)
            kind = note.event.KIND
            links = self.relay.links_of(note.recipient, role="control") or self.relay.links_of(note.recipient)
            for link_id in links:
                self.relay.push_event(link_id, kind, data)

    # ---- directory -------------------------------------------------------------------------

    def _kp_publish(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        result = self.directory.publish(require_bytes(body, "envelope"), now, publisher=identity)
        return {"ref": result.ref, "last_resort": result.last_resort, "duplicate": result.duplicate}

    def _kp_fetch(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        target = require_bytes(body, "target", exact=IDENTITY_HASH_LEN)
        suite = control.require_int(body, "suite", 0, 0xFFFF)
        got = self.directory.fetch(identity, target, suite, now)
        return {"ref": got.ref, "key_package": got.key_package, "envelope": got.envelope, "last_resort": got.last_resort}

    # ---- streams and joins -----------------------------------------------------------------

    def _register(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        stream_id = control.require_int(body, "stream_id")
        admitters = body.get("admitters", [])
        if not isinstance(admitters, list) or len(admitters) > MAX_ADMITTERS:
            raise ControlError(control.ERR_BAD_REQUEST, f"admitters must be a list of at most {MAX_ADMITTERS} identity hashes")
        group = self.ds.register_stream(stream_id, identity, require_bytes(body, "group_info"), admitters)
        self._sync_stream(stream_id)
        return {"stream_id": stream_id, "epoch": group.epoch}

    def _join(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        stream_id = control.require_int(body, "stream_id")
        refs = body.get("key_packages")
        if refs is not None and (
            not isinstance(refs, list) or not refs or len(refs) > MAX_ONE_TIME_PER_IDENTITY + 1
            or not all(isinstance(r, bytes) and 0 < len(r) <= MAX_REF_BYTES for r in refs)
        ):
            raise ControlError(control.ERR_BAD_REQUEST, "key_packages must be a non-empty list of KeyPackageRefs")
        self._notify(self.ds.request_join(stream_id, identity, now, refs))
        return {"stream_id": stream_id}

    def _join_requests(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        """Pending join requests, for a member catching up after a reconnect (its events were lost)."""
        stream_id = control.require_int(body, "stream_id")
        identities = self.ds.join_requests(stream_id, identity, now)
        return {"identities": identities, "admitter": self.ds.roster_admitter(stream_id) == identity}

    def _welcome(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        stream_id = control.require_int(body, "stream_id")
        return {"welcome": self.ds.fetch_welcome(stream_id, identity, now)}

    def _welcome_ack(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        return {"dropped": self.ds.ack_welcome(control.require_int(body, "stream_id"), identity)}

    def _tree(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        return {"tree": self.ds.ratchet_tree(control.require_int(body, "stream_id"), identity, now)}

    # ---- handshakes ------------------------------------------------------------------------

    def _commit(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        stream_id = control.require_int(body, "stream_id")
        commit = require_bytes(body, "commit")
        welcome = body.get("welcome")
        if welcome is not None:
            welcome = require_bytes(body, "welcome")
        # Under the delivery lock (``call``): the roster before and after belong to this commit.
        try:
            before = set(self.ds.members_of(stream_id))
        except UnknownStream:
            before = set()
        accepted = self.ds.submit_commit(stream_id, identity, commit, welcome, now)
        if not accepted.repeat:
            # The filter moves to the new epoch before the committer hears "accepted" (and merges).
            self._sync_stream(stream_id)
            removed = before - set(self.ds.members_of(stream_id))
        else:
            removed = set()
        self._notify(accepted.notifications)
        for gone in removed:
            self._close_member_links(stream_id, gone)
        return {"epoch": accepted.epoch, "repeat": accepted.repeat}

    def _close_member_links(self, stream_id: int, identity: bytes) -> None:
        """A removal took effect: the member's media links on the stream go (its control link stays,
        so it can still hear the commit that removed it and ask to join again)."""
        for role in ("publisher", "subscriber"):
            for link_id in self.relay.links_of(identity, role=role, stream_id=stream_id):
                self.enforcer.unbind(link_id)
                if self.relay.close_link(link_id):
                    self.closed_for_removal += 1
                    self.relay.count("links_closed_removed")
        log.info("stream %d: removed member %s, media links closed", stream_id, identity.hex())

    def _propose(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        stream_id = control.require_int(body, "stream_id")
        self._notify(self.ds.submit_proposal(stream_id, identity, require_bytes(body, "proposal"), now))
        return {"stream_id": stream_id}

    def _proposals(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        """The current epoch's proposals, for a member catching up (and whether it is to commit them)."""
        stream_id = control.require_int(body, "stream_id")
        proposals = self.ds.proposals(stream_id, identity)
        return {"proposals": proposals, "epoch": self.ds.group(stream_id).epoch,
                "admitter": self.ds.admitter(stream_id) == identity}

    def _commits(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        stream_id = control.require_int(body, "stream_id")
        since = control.require_int(body, "since")
        records = self.ds.commits_since(stream_id, identity, since)
        return {"commits": [[r.epoch, r.message] for r in records]}

    def _commit_failed(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        stream_id = control.require_int(body, "stream_id")
        epoch = control.require_int(body, "epoch")
        self._notify(self.ds.report_commit_failed(stream_id, identity, epoch, now))
        return {"stream_id": stream_id}

    def _keyframe(self, identity: bytes, body: dict[str, Any], now: float) -> dict[str, Any]:
        """A member asks the stream's publishers for a keyframe at its epoch or later."""
        stream_id = control.require_int(body, "stream_id")
        track_id = control.require_int(body, "track_id", 0, 0xFFFF)
        epoch = control.require_int(body, "epoch")
        if not self.ds.is_member(stream_id, identity):
            raise ControlError(control.ERR_NOT_MEMBER, "only members ask for keyframes")
        now_mono = self.relay.clock()
        last = self._keyframe_sent.get((stream_id, track_id))
        if last is not None and epoch <= last[1] and now_mono - last[0] < KEYFRAME_WANTED_MIN_INTERVAL_S:
            self.relay.count("keyframe_wanted_coalesced")
            return {"publishers": 0, "coalesced": True}
        self._keyframe_sent[(stream_id, track_id)] = (now_mono, max(epoch, last[1] if last else 0))
        data = {"stream_id": stream_id, "track_id": track_id, "epoch": epoch}
        sent = sum(self.relay.push_event(link, EVENT_KEYFRAME_WANTED, data) for link in self.enforcer.publishers(stream_id))
        return {"publishers": sent}


def _width(members: dict[int, bytes]) -> int:
    """Tree width in leaves (a power of two) from the highest leaf index, for views without it."""
    n = max(members, default=0) + 1
    return 1 << (n - 1).bit_length()
