"""The relay's RNS binding: destination, links, control requests, and media in and out.

The forwarding decisions are the sans-I/O engine's (``relay/engine.py``); this module only moves
bytes between it and RNS:

* **In.** Media and receiver-report packets arrive in RNS's inbound worker (``hook.py``) and go
  straight into ``engine.receive_packet`` under one lock: the engine is not thread-safe and the
  lock is held for microseconds.
* **Out.** ``engine.next_packets`` is drained per subscriber link by a :class:`_Sender`. RNS
  gives no backpressure and its TCP interface blocks in ``sendall`` when a socket buffer is
  full, so no send may wait on one subscriber. *Inline* (the default where the kernel tells us a
  socket's queue, ``hook.congestion_probe``): the inbound worker sends right after the engine
  queued a packet (woken by the engine's ``on_pending``), skipping any link whose socket is
  congested, whose packets then wait in the engine and age out. No thread hand-off per packet:
  sub-millisecond relay latency and less CPU than a naive relay. *Threads* (fallback): one
  sender thread per link, so a blocked socket blocks only that thread.
* **Time.** A ticker calls ``engine.tick`` (stall detection, keyframe requests), routes the
  engine's events to the clients' long-poll queues and closes links that never identified.
* **Control.** Requests (``identify-confirm``, ``publish``, ``subscribe``, ``events``) run on
  RNS's request threads; each is rate-limited per link and globally and answers with a msgpack
  map or a typed error ``{"error": code, "message": text}``. A request larger than a link MDU
  arrives as an RNS Resource; ``resource_guard.ResourceGuard`` refuses its advertisement before
  RNS allocates anything unless it is an uncompressed, unsplit request within
  ``control.MAX_REQUEST_SIZE`` from a confirmed link, with per-link and per-node caps on
  transfers in flight (refusals counted as ``resource_refused_<reason>``).
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import RNS

from ..errors import AVError
from ..protocol.control import APP_NAME, RELAY_ASPECT
from . import control
from .control import ControlError, EventQueue, RequestLimiter
from .hook import MODE_AUTO, CongestionProbe, attach_receiver, congestion_probe, resolve_mode
from .resource_guard import KIND_REQUEST, ResourceGuard, check_rns_internals

log = logging.getLogger(__name__)


# A link must identify and confirm within this time or it is closed (ARCHITECTURE.md: "~2 s").
# Link set-up plus identify plus one request takes ~10 ms on loopback and < 1 s on slow radio hops.
IDENTIFY_DEADLINE_S = 2.0
# Engine clock resolution: stall detection works on ~300 ms, keyframe coalescing on ~100s of ms,
# so a 20 ms tick is ample and costs nothing measurable.
TICK_INTERVAL_S = 0.02
# Packets a sender thread takes from the engine per lock acquisition: big enough to amortise the
# lock, small enough that a higher-priority packet queued meanwhile waits at most one batch.
SENDER_BATCH = 16
# A sender with nothing to send re-checks this often even without a wake-up (belt and braces: the
# ticker already wakes senders whose queue has something after engine-internal timers fire).
SENDER_IDLE_WAIT_S = 0.5
# Minimum gap between two drains of one subscriber queue. Waking a thread per packet per
# subscriber costs more than the send itself at 431-byte MDUs; draining at most every 4 ms batches
# a few packets per wake-up and adds at most 4 ms of latency (the p99 budget is 20 ms).
SENDER_MIN_INTERVAL_S = 0.004

SEND_AUTO = "auto"
SEND_INLINE = "inline"
SEND_THREADS = "threads"

_PT_FRAGMENT = 0x01
_STREAM_ID = struct.Struct(">Q")


class Forwarder(Protocol):
    """What the relay needs from the forwarding engine (``relay/engine.py``'s ``ForwardingEngine``)."""

    def add_publisher(self, link_id: bytes, stream_id: int, now: float) -> Any: ...
    def add_subscriber(self, link_id: bytes, stream_id: int, mdu: int, now: float) -> Any: ...
    def remove_link(self, link_id: bytes, now: float) -> Any: ...
    def receive_packet(self, link_id: bytes, packet: bytes, now: float) -> Any: ...
    def next_packets(self, link_id: bytes, now: float, max_packets: int) -> list[bytes]: ...
    def has_pending(self, link_id: bytes) -> bool: ...
    def tick(self, now: float) -> list[Any]: ...
    def stats(self) -> Any: ...


PacketObserver = Callable[[str, bytes], None]
RequestHandler = Callable[["_LinkState", dict[str, Any], "RNS.Identity | None"], dict[str, Any]]
# ``authorize_role(identity_hash, role, stream_id) -> bool``: may this identity publish/subscribe?
RoleAuthorizer = Callable[[bytes, str, int], bool]


@dataclass(eq=False)
class _LinkState:
    link: RNS.Link
    link_id: bytes
    opened_at: float
    confirmed: bool = False
    identity_hash: bytes | None = None
    role: str | None = None
    stream_id: int | None = None
    sender: _Sender | None = None
    events: EventQueue = field(default_factory=EventQueue)


class _Sender:
    """Sends one subscriber link's engine queue; never blocks the caller on a full socket.

    Two ways to run (``RelayNode(send_mode=...)``):

    * **inline** (default where :func:`hook.congestion_probe` works): :meth:`drain` is called
      right after ``engine.receive_packet`` in RNS's inbound worker, and by the ticker for
      anything the engine releases later. Before each batch it asks the kernel how much of the
      link's TCP send buffer is in use (``SIOCOUTQ``); a link whose buffer is half full is skipped
      (its packets wait in the engine, which ages them out), so ``sendall`` cannot block and one
      slow subscriber cannot stall the others. No thread hand-off per packet: this is the cheap
      path.
    * **threads**: one thread per link waits for a wake-up and drains; a blocked socket blocks
      only that thread. The portable fallback.
    """

    def __init__(self, relay: RelayNode, state: _LinkState, probe: CongestionProbe | None) -> None:
        self._relay = relay
        self._state = state
        self._probe = probe
        self._lock = threading.Lock()
        self.wake = threading.Event()
        self._stop = False
        self.sent = 0
        self.deferred = 0  # drains skipped because the socket was congested
        self.busy = 0  # drains skipped because another thread was draining this link
        self._thread: threading.Thread | None = None
        if probe is None:
            self._thread = threading.Thread(
                target=self._run, name=f"relay-send-{state.link_id.hex()[:8]}", daemon=True
            )

    @property
    def inline(self) -> bool:
        return self._thread is None

    def start(self) -> None:
        if self._thread is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self.wake.set()

    def drain(self) -> None:
        """Inline mode: send what the engine has for this link, unless its socket is congested."""
        if not self._lock.acquire(blocking=False):
            self.busy += 1
            return  # another thread is draining this link right now; it sends these too
        try:
            probe, link = self._probe, self._state.link
            while not self._stop:
                batch = SENDER_BATCH
                if probe is not None and probe(batch * link.mdu):
                    # Not room for a whole batch of full-size packets: try one packet.
                    batch = 1
                    if probe(link.mdu):
                        self.deferred += 1
                        return
                if not self._send_batch(batch):
                    return
        finally:
            self._lock.release()

    def _run(self) -> None:
        link = self._state.link
        closed = RNS.Link.CLOSED
        min_interval = self._relay.sender_min_interval
        while not self._stop and link.status != closed:
            self.wake.wait(SENDER_IDLE_WAIT_S)
            if min_interval > 0:
                time.sleep(min_interval)  # let a few packets gather: one wake-up, one batch
            self.wake.clear()
            with self._lock:
                while not self._stop and self._send_batch(SENDER_BATCH):
                    pass

    def _send_batch(self, max_packets: int) -> bool:
        """Take one batch from the engine and send it; False when there was nothing."""
        relay, link, link_id = self._relay, self._state.link, self._state.link_id
        with relay.engine_lock:
            packets = relay.engine.next_packets(link_id, relay.clock(), max_packets)
        if not packets:
            return False
        observer = relay.observer
        mdu = link.mdu
        for data in packets:
            if len(data) > mdu:
                relay.count("tx_oversize_dropped")
                continue
            if observer is not None:
                observer("out", data)
            try:
                RNS.Packet(link, data, create_receipt=False).send()
            except Exception:
                relay.count("tx_errors")
                log.debug("send on %s failed", link_id.hex(), exc_info=True)
                continue
            self.sent += 1
        return True


class RelayNode:
    """One relay destination on this process's RNS instance, feeding a forwarding engine."""

    def __init__(
        self,
        identity: RNS.Identity,
        engine: Forwarder | Callable[[Callable[[bytes], None]], Forwarder],
        *,
        receive_mode: str = MODE_AUTO,
        observer: PacketObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        limiter: RequestLimiter | None = None,
        announce_app_data: bytes | None = None,
        sender_min_interval: float = SENDER_MIN_INTERVAL_S,
        send_mode: str = SEND_AUTO,
    ) -> None:
        self.identity = identity
        if not hasattr(engine, "receive_packet"):
            # A factory: give the engine our wake-up hook, so a sender is woken exactly when its
            # queue goes from empty to non-empty (ForwardingEngine's ``on_pending``).
            engine = engine(self._on_pending)
            self._precise_wake = True
        else:
            self._precise_wake = False
        self.engine: Forwarder = engine
        self.engine_lock = threading.Lock()
        self.clock = clock
        self.observer = observer
        self.sender_min_interval = sender_min_interval
        self.send_mode = send_mode
        self._due: list[bytes] = []
        self.receive_mode = resolve_mode(receive_mode)
        self._limiter = limiter or RequestLimiter()
        # Requests larger than a link MDU arrive as RNS Resources; the guard refuses advertisements
        # RNS would trust blindly (compressed, split, oversized...) and admits them only from links
        # that confirmed their identity.
        self.resource_guard = ResourceGuard(KIND_REQUEST, control.MAX_REQUEST_SIZE, may_transfer=self._may_transfer)
        self._links: dict[bytes, _LinkState] = {}
        self._links_lock = threading.Lock()
        self._by_stream: dict[int, set[_LinkState]] = {}
        self._counters: Counter[str] = Counter()
        self._counter_lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._announce_app_data = announce_app_data
        self.destination: RNS.Destination | None = None
        self.engine_events: Counter[str] = Counter()
        self._rx_packets = 0
        self._tx_closed = 0  # packets sent by senders of links that have gone
        self._deferred_closed = 0
        self._extra_handlers: dict[str, RequestHandler] = {}
        self.authorize_role: RoleAuthorizer | None = None
        """Checked before ``publish``/``subscribe`` (the delivery service's roster); None allows all."""

    def add_request_handler(self, path: str, fn: RequestHandler) -> None:
        """Register one more control request (before :meth:`start`); same gate, limits and typed errors."""
        if self.destination is not None:
            raise RuntimeError("add request handlers before start()")
        self._extra_handlers[path] = fn

    def link_identity(self, link_id: bytes) -> bytes | None:
        """The confirmed identity hash of a link (None if unknown or not confirmed)."""
        state = self._links.get(link_id)  # a dict read is atomic: callable under the engine lock
        return state.identity_hash if state is not None and state.confirmed else None

    def links_of(self, identity: bytes, role: str | None = None, stream_id: int | None = None) -> list[bytes]:
        """Confirmed links of ``identity``; ``role``/``stream_id`` narrow it (role \"control\": no media role)."""
        with self._links_lock:
            return [
                s.link_id
                for s in self._links.values()
                if s.confirmed
                and s.identity_hash == identity
                and (role is None or s.role == role or (role == "control" and s.role is None))
                and (stream_id is None or s.stream_id == stream_id)
            ]

    def silence(self) -> dict[bytes, float]:
        """Seconds since anything arrived from each identity with a confirmed link (its liveliest
        link). A link killed without a close (``kill -9``) stays open in RNS for minutes; silence
        is what tells it apart from a member that is still there."""
        with self._links_lock:
            states = [s for s in self._links.values() if s.confirmed and s.identity_hash is not None]
        out: dict[bytes, float] = {}
        for s in states:
            quiet = s.link.no_inbound_for()
            ident = s.identity_hash
            assert ident is not None
            out[ident] = min(quiet, out.get(ident, quiet))
        return out

    def push_event(self, link_id: bytes, kind: str, data: dict[str, Any]) -> bool:
        """Queue an event on one link's long poll (False if the link is gone)."""
        with self._links_lock:
            state = self._links.get(link_id)
        if state is None:
            return False
        state.events.put(kind, _wire_safe(data))
        return True

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        check_rns_internals()  # refuse to run a relay RNS could be made to balloon
        dest = RNS.Destination(self.identity, RNS.Destination.IN, RNS.Destination.SINGLE, APP_NAME, RELAY_ASPECT)
        dest.set_link_established_callback(self._on_link_established)
        dest.set_max_request_size(control.MAX_REQUEST_SIZE)
        handlers: dict[str, Callable[[_LinkState, dict[str, Any], RNS.Identity | None], dict[str, Any]]] = {
            control.PATH_IDENTIFY_CONFIRM: self._req_identify_confirm,
            control.PATH_PUBLISH: self._req_publish,
            control.PATH_SUBSCRIBE: self._req_subscribe,
            control.PATH_EVENTS: self._req_events,
            control.PATH_STATS: self._req_stats,
            **self._extra_handlers,
        }
        for path, fn in handlers.items():
            dest.register_request_handler(
                path, response_generator=self._wrap(path, fn), allow=RNS.Destination.ALLOW_ALL, auto_compress=False
            )
        self.destination = dest
        self._ticker = threading.Thread(target=self._tick_loop, name="relay-tick", daemon=True)
        self._ticker.start()
        self.announce()
        log.info("relay %s up (receive mode %s)", dest.hash.hex(), self.receive_mode)

    def announce(self) -> None:
        if self.destination is not None:
            self.destination.announce(app_data=self._announce_app_data)

    def stop(self) -> None:
        self._stop.set()
        with self._links_lock:
            states = list(self._links.values())
        for state in states:
            try:
                state.link.teardown()
            except Exception:
                log.debug("teardown failed", exc_info=True)
            self._forget(state)

    @property
    def destination_hash(self) -> bytes:
        assert self.destination is not None, "start() first"
        return self.destination.hash

    def close_link(self, link_id: bytes) -> bool:
        """Tear a link down (e.g. a member's removal took effect); False if it is not known."""
        with self._links_lock:
            state = self._links.get(link_id)
        if state is None:
            return False
        try:
            state.link.teardown()
        finally:
            self._forget(state)
        return True

    def links(self, role: str | None = None) -> list[bytes]:
        """Ids of the confirmed links, optionally only those with ``role`` (publisher/subscriber)."""
        with self._links_lock:
            return [s.link_id for s in self._links.values() if s.confirmed and (role is None or s.role == role)]

    # ---- counters --------------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        with self._counter_lock:
            self._counters[name] += n

    def counters(self) -> dict[str, int]:
        with self._counter_lock:
            out = dict(self._counters)
        out.update(self.resource_guard.counters())
        out["rx_packets"] = self._rx_packets
        with self._links_lock:
            senders = [s.sender for s in self._links.values() if s.sender is not None]
            out["tx_packets"] = self._tx_closed + sum(s.sent for s in senders)
            out["tx_deferred_congested"] = self._deferred_closed + sum(s.deferred for s in senders)
            out["senders_inline"] = sum(1 for s in senders if s.inline)
            out["tx_drain_busy"] = sum(s.busy for s in senders)
            out["links"] = len(self._links)
            out["links_confirmed"] = sum(1 for s in self._links.values() if s.confirmed)
        return out

    def engine_stats(self) -> Any:
        with self.engine_lock:
            return self.engine.stats()

    # ---- links -----------------------------------------------------------------------------

    def _on_link_established(self, link: RNS.Link) -> None:
        state = _LinkState(link=link, link_id=link.link_id, opened_at=self.clock())
        with self._links_lock:
            self._links[link.link_id] = state
        link.set_link_closed_callback(self._on_link_closed)
        self.resource_guard.attach(link)
        attach_receiver(link, lambda data, s=state: self._on_packet(s, data), self.receive_mode)
        self.count("links_opened")

    def _may_transfer(self, link: RNS.Link) -> bool:
        """Large requests only from links that confirmed their identity (``identify-confirm`` is small)."""
        state = self._links.get(link.link_id)  # a dict read is atomic
        return state is not None and state.confirmed

    def _on_link_closed(self, link: RNS.Link) -> None:
        with self._links_lock:
            state = self._links.get(link.link_id)
        if state is not None:
            self._forget(state)

    def _forget(self, state: _LinkState) -> None:
        with self._links_lock:
            if self._links.pop(state.link_id, None) is None:
                return
            if state.stream_id is not None:
                self._by_stream.get(state.stream_id, set()).discard(state)
        if state.sender is not None:
            state.sender.stop()
            self._tx_closed += state.sender.sent
            self._deferred_closed += state.sender.deferred
        state.events.close()
        self._limiter.forget(state.link_id)
        with self.engine_lock:
            try:
                self.engine.remove_link(state.link_id, self.clock())
            except AVError:
                log.debug("engine refused remove_link", exc_info=True)
        self.count("links_closed")

    def _on_packet(self, state: _LinkState, data: bytes) -> None:
        """Every media/report packet of every link, in RNS's inbound worker: keep it short."""
        if not state.confirmed:
            self.count("rx_unidentified_dropped")
            return
        if self.observer is not None:
            self.observer("in", data)
        try:
            with self.engine_lock:
                self.engine.receive_packet(state.link_id, data, self.clock())
                due, self._due = self._due, []
        except AVError:
            self.count("rx_refused")
            return
        except Exception:
            # A bug in the engine must not take the inbound worker (and every link) down.
            self.count("rx_engine_errors")
            log.exception("engine.receive_packet failed")
            return
        self._rx_packets += 1  # the inbound worker is one thread; no lock on the hot path
        for link_id in due:
            sub = self._links.get(link_id)
            if sub is not None and sub.sender is not None:
                sub.sender.drain()
        if not self._precise_wake and data and data[0] == _PT_FRAGMENT and len(data) >= 10:
            (stream_id,) = _STREAM_ID.unpack_from(data, 2)
            for sub in self._by_stream.get(stream_id, ()):
                if sub.sender is not None:
                    sub.sender.wake.set()

    def _on_pending(self, link_id: bytes) -> None:
        """Engine hook, called under ``engine_lock`` inside ``receive_packet``: wake one sender."""
        state = self._links.get(link_id)  # a dict read is atomic; no second lock under the engine's
        if state is None or state.sender is None:
            return
        if state.sender.inline:
            self._due.append(link_id)  # drained by _on_packet once the engine lock is released
        else:
            state.sender.wake.set()

    # ---- time ------------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        while not self._stop.wait(TICK_INTERVAL_S):
            try:
                self._tick_once(self.clock())
            except Exception:
                log.exception("relay tick failed")

    def _tick_once(self, now: float) -> None:
        """Engine timers and events, senders with released packets, unidentified links."""
        try:
            with self.engine_lock:
                events = self.engine.tick(now)
        except Exception:
            log.exception("engine.tick failed")
            events = []
        for event in events or ():
            self._route_event(event)
        with self._links_lock:
            states = list(self._links.values())
        senders = [s for s in states if s.sender is not None]
        if senders:
            # Only senders with something queued (e.g. a stall just ended) need waking.
            with self.engine_lock:
                due = [s for s in senders if self.engine.has_pending(s.link_id)]
            for state in due:
                sender = state.sender
                assert sender is not None
                if sender.inline:
                    sender.drain()
                else:
                    sender.wake.set()
        for state in states:
            if state.sender is None and not state.confirmed and now - state.opened_at > IDENTIFY_DEADLINE_S:
                self.count("links_unidentified_closed")
                try:
                    state.link.teardown()
                finally:
                    self._forget(state)

    def _route_event(self, event: Any) -> None:
        kind = event.KIND
        self.engine_events[kind] += 1
        link_id = getattr(event, "link_id", None)
        if link_id is None:
            return
        with self._links_lock:
            state = self._links.get(link_id)
        if state is None:
            return
        packet = getattr(event, "packet", None)
        if isinstance(packet, bytes):
            # A media-plane packet for this link (the engine's NackUpstream to a publisher):
            # sent unreliably like media, not queued as a long-poll event.
            self._send_media(state, packet)
            return
        data = dataclasses.asdict(event) if dataclasses.is_dataclass(event) else {}
        data.pop("link_id", None)
        state.events.put(kind, _wire_safe(data))

    def _send_media(self, state: _LinkState, packet: bytes) -> None:
        """One unreliable media packet to any link (e.g. a NACK to a publisher), from the ticker."""
        link = state.link
        if len(packet) > link.mdu:
            self.count("tx_oversize_dropped")
            return
        if self.observer is not None:
            self.observer("out", packet)
        try:
            RNS.Packet(link, packet, create_receipt=False).send()
            self.count("tx_upstream")
        except Exception:
            self.count("tx_errors")
            log.debug("send on %s failed", state.link_id.hex(), exc_info=True)

    # ---- control requests ------------------------------------------------------------------

    def _wrap(
        self, path: str, fn: Callable[[_LinkState, dict[str, Any], RNS.Identity | None], dict[str, Any]]
    ) -> Callable[..., bytes]:
        def generator(
            req_path: str, data: Any, request_id: bytes, link_id: bytes, remote_identity: Any, requested_at: float
        ) -> bytes:
            try:
                with self._links_lock:
                    state = self._links.get(link_id)
                if state is None:
                    raise ControlError(control.ERR_UNKNOWN_LINK, "link not known to the relay")
                if not self._limiter.allow(link_id, self.clock()):
                    raise ControlError(control.ERR_RATE_LIMITED, f"too many requests on {path}")
                body = control.unpack_body(data)
                if self.observer is not None and isinstance(data, bytes):
                    self.observer("ctl", data)
                if path != control.PATH_IDENTIFY_CONFIRM and not state.confirmed:
                    raise ControlError(control.ERR_NOT_IDENTIFIED, "identify and confirm first")
                reply = control.pack_body(fn(state, body, remote_identity))
                if len(reply) > control.MAX_REPLY_SIZE:
                    # Clients refuse a response that would need more than one RNS Resource segment.
                    raise ControlError(control.ERR_TOO_LARGE, f"reply of {len(reply)} bytes exceeds {control.MAX_REPLY_SIZE}")
                self.count(f"req_{path}")
                return reply
            except ControlError as exc:
                self.count(f"req_error_{exc.code}")
                return control.error_reply(exc.code, exc.message)
            except AVError as exc:
                self.count("req_error_refused")
                return control.error_reply(control.ERR_REFUSED, str(exc))
            except Exception as exc:
                log.exception("request %s failed", path)
                self.count("req_error_internal")
                return control.error_reply(control.ERR_INTERNAL, type(exc).__name__)

        return generator

    def _req_identify_confirm(
        self, state: _LinkState, body: dict[str, Any], remote_identity: RNS.Identity | None
    ) -> dict[str, Any]:
        if remote_identity is None:
            raise ControlError(control.ERR_NOT_IDENTIFIED, "link.identify() has not reached the relay")
        state.identity_hash = remote_identity.hash
        state.confirmed = True
        return {"identity": remote_identity.hash, "mdu": state.link.mdu}

    def _authorize(self, state: _LinkState, role: str, stream_id: int) -> None:
        check = self.authorize_role
        if check is not None and (state.identity_hash is None or not check(state.identity_hash, role, stream_id)):
            self.count(f"{role}_refused_not_member")
            raise ControlError(control.ERR_NOT_MEMBER, f"identity may not {role} stream {stream_id}")

    def _req_publish(self, state: _LinkState, body: dict[str, Any], _: RNS.Identity | None) -> dict[str, Any]:
        stream_id = control.require_int(body, "stream_id")
        if state.role is not None:
            raise ControlError(control.ERR_REFUSED, f"link already has role {state.role}")
        self._authorize(state, "publisher", stream_id)
        with self.engine_lock:
            self.engine.add_publisher(state.link_id, stream_id, self.clock())
        state.role, state.stream_id = "publisher", stream_id
        return {"stream_id": stream_id}

    def _req_subscribe(self, state: _LinkState, body: dict[str, Any], _: RNS.Identity | None) -> dict[str, Any]:
        stream_id = control.require_int(body, "stream_id")
        if state.role is not None:
            raise ControlError(control.ERR_REFUSED, f"link already has role {state.role}")
        self._authorize(state, "subscriber", stream_id)
        mdu = state.link.mdu
        with self.engine_lock:
            self.engine.add_subscriber(state.link_id, stream_id, mdu, self.clock())
        state.role, state.stream_id = "subscriber", stream_id
        probe = congestion_probe(state.link) if self.send_mode != SEND_THREADS else None
        if probe is None and self.send_mode == SEND_INLINE:
            log.warning("inline sending unavailable for this link; using a sender thread")
        state.sender = _Sender(self, state, probe)
        with self._links_lock:
            self._by_stream.setdefault(stream_id, set()).add(state)
        state.sender.start()
        return {"stream_id": stream_id, "mdu": mdu}

    def _req_events(self, state: _LinkState, body: dict[str, Any], _: RNS.Identity | None) -> dict[str, Any]:
        ack = body.get("ack", 0)
        if not isinstance(ack, int) or ack < 0:
            raise ControlError(control.ERR_BAD_REQUEST, "ack must be a non-negative integer")
        events = state.events.poll(ack, control.EVENTS_POLL_HOLD, self.clock)
        return {"events": [e.to_wire() for e in events]}

    def _req_stats(self, state: _LinkState, body: dict[str, Any], _: RNS.Identity | None) -> dict[str, Any]:
        return {"relay": self.counters()}


def _wire_safe(value: Any) -> Any:
    """Make engine event fields msgpack-able (enums to names, tuples to lists)."""
    if isinstance(value, dict):
        return {str(k): _wire_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_wire_safe(v) for v in value]
    if isinstance(value, bool | int | float | str | bytes) or value is None:
        return value
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else repr(value)
