"""A client's RNS binding: one link to a relay, identified, with requests, events and media packets.

``RelayClient`` is role-agnostic plumbing; ``media_clients.py`` puts a publisher or subscriber
on top. What it guarantees:

* **Set-up order.** Resolve a path to the relay destination, open a Link, ``link.identify()``,
  then the ``identify-confirm`` request before anything else (identify is one unreliable packet;
  the confirmation proves it arrived). Then the roles (``publish``/``subscribe``) are applied.
* **Events.** A long-poll thread keeps one ``events`` request open; the relay answers when it has
  something (keyframe requests, stall notices) or after ``EVENTS_POLL_HOLD`` with nothing. Each
  poll acknowledges the highest sequence number seen.
* **Periodic work.** A ticker calls ``on_tick`` every ``TICK_INTERVAL_S`` (receiver reports are
  due every ~100 ms) and sends what it returns.
* **Keepalive.** The long poll puts traffic on the link every few seconds in both directions, on
  top of RNS's own link keepalive, so an idle subscriber's link never reaches RNS's ~10 s stale
  time.
* **Reconnect.** When the link closes without :meth:`close`, a supervisor re-opens it with
  backoff and re-applies the roles; the engine then treats the link as a new subscriber
  (keyframe request upstream) and the receiver resumes at the next keyframe.
* **Bounded responses.** A request above the link MDU is sent as an uncompressed Resource (the
  relay refuses compressed ones); a response Resource is admitted only uncompressed, unsplit and
  within ``control.MAX_RESPONSE_SIZE`` (``resource_guard``), so a relay cannot balloon a member.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import RNS

from ..protocol.control import APP_NAME, RELAY_ASPECT
from . import control
from .control import Event
from .errors import ControlError, LinkDown, PacketTooLarge, RelayUnreachable
from .hook import MODE_AUTO, attach_receiver, resolve_mode
from .loss import LossInjector
from .resource_guard import KIND_RESPONSE, ResourceGuard, check_rns_internals, send_request

log = logging.getLogger(__name__)

# Waiting for a path to the relay: an announce or path response arrives within ms on loopback and
# within seconds over slow hops; RNS's own path-request timeout is 15 s.
PATH_TIMEOUT_S = 15.0
# Interval between path requests while waiting for one (RNS rate-limits answers to bursts).
PATH_REREQUEST_S = 3.0
# Link establishment (a request and a proof, ~3 ms on loopback; RNS allows 6 s per hop itself).
LINK_TIMEOUT_S = 10.0
# Ordinary control requests (one round trip, or a Resource for large bodies).
REQUEST_TIMEOUT_S = 10.0
# Receiver reports are due every ~100 ms (ARCHITECTURE.md); the ticker runs at that rate.
TICK_INTERVAL_S = 0.1
# Reconnect backoff: first retry quickly (a relay restart takes ~0.2 s), then back off so a dead
# relay is not hammered.
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0

PacketCallback = Callable[[bytes], None]
EventCallback = Callable[[Event], None]
TickCallback = Callable[[float], list[bytes]]


class RelayClient:
    """One identified link to a relay, kept up until :meth:`close`."""

    def __init__(
        self,
        identity: RNS.Identity,
        relay_hash: bytes,
        *,
        receive_mode: str = MODE_AUTO,
        on_packet: PacketCallback | None = None,
        on_event: EventCallback | None = None,
        on_tick: TickCallback | None = None,
        on_reconnect: Callable[[RelayClient], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        loss_out: LossInjector | None = None,
        loss_in: LossInjector | None = None,
    ) -> None:
        self.identity = identity
        self.relay_hash = relay_hash
        # The loss-injection seam (transport/loss.py), for tests and benchmarks only: media
        # packets this client sends or receives are dropped as a lossy hop would.
        self.loss_out = loss_out
        self.loss_in = loss_in
        self.receive_mode = resolve_mode(receive_mode)
        self.on_packet = on_packet
        self.on_event = on_event
        self.on_tick = on_tick
        self.on_reconnect = on_reconnect
        self.clock = clock
        self._link: RNS.Link | None = None
        self._claim_response: Callable[[bytes], None] = lambda _rid: None
        self._roles: list[tuple[str, dict[str, Any]]] = []
        self._closing = threading.Event()
        self._lost = threading.Event()
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_ack = 0
        self.reconnects = 0
        self.sent_packets = 0
        self.send_failures = 0
        self.received_packets = 0
        # Responses larger than a link MDU arrive as RNS Resources: refuse what RNS would trust
        # blindly (compressed, split, over MAX_RESPONSE_SIZE...), as the relay does for requests.
        self.resource_guard = ResourceGuard(KIND_RESPONSE, control.MAX_RESPONSE_SIZE)

    # ---- connection ------------------------------------------------------------------------

    @property
    def link(self) -> RNS.Link:
        link = self._link
        if link is None or link.status != RNS.Link.ACTIVE:
            raise LinkDown("no active link to the relay")
        return link

    @property
    def mdu(self) -> int:
        return int(self.link.mdu)

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def connect(self, timeout: float = PATH_TIMEOUT_S) -> None:
        """Open, identify and confirm the link, then start the background threads."""
        check_rns_internals()
        self._open(timeout)
        for target, name in (
            (self._poll_events, "events"),
            (self._tick_loop, "tick"),
            (self._supervise, "supervisor"),
        ):
            thread = threading.Thread(target=target, name=f"relay-client-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _open(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        asked = -PATH_REREQUEST_S
        while not RNS.Transport.has_path(self.relay_hash):
            if time.monotonic() > deadline:
                raise RelayUnreachable(f"no path to relay {self.relay_hash.hex()}")
            if time.monotonic() - asked >= PATH_REREQUEST_S:
                # Re-ask now and then: a request sent before the relay was up is simply lost.
                RNS.Transport.request_path(self.relay_hash)
                asked = time.monotonic()
            time.sleep(0.05)
        relay_identity = RNS.Identity.recall(self.relay_hash)
        if relay_identity is None:
            raise RelayUnreachable("relay identity unknown after path resolution")
        destination = RNS.Destination(relay_identity, RNS.Destination.OUT, RNS.Destination.SINGLE, APP_NAME, RELAY_ASPECT)
        established = threading.Event()
        link = RNS.Link(
            destination,
            established_callback=lambda _link: established.set(),
            closed_callback=self._on_closed,
        )
        if not established.wait(min(LINK_TIMEOUT_S, max(0.1, deadline - time.monotonic()))):
            link.teardown()
            raise RelayUnreachable("link to relay not established in time")
        self.resource_guard.attach(link)
        attach_receiver(link, self._on_data, self.receive_mode)
        self._claim_response = _guard_early_responses(link)
        self._link = link
        self._lost.clear()
        try:
            link.identify(self.identity)
            try:
                self.request(control.PATH_IDENTIFY_CONFIRM, {})
            except ControlError as exc:
                if exc.code != control.ERR_NOT_IDENTIFIED:
                    raise
                # identify() is one unreliable packet; send it again once before giving up.
                link.identify(self.identity)
                self.request(control.PATH_IDENTIFY_CONFIRM, {})
            for path, body in self._roles:
                self.request(path, body)
        except Exception:
            # Half set up is no use: close it, so the relay frees it and a retry starts clean.
            link.teardown()
            raise
        if link.status != RNS.Link.ACTIVE:
            raise LinkDown("link closed while it was being set up")
        self._last_ack = 0
        self._ready.set()
        log.info("link %s to relay up, mdu %d", link.link_id.hex(), link.mdu)

    def _on_closed(self, link: RNS.Link) -> None:
        if link is self._link:
            self._ready.clear()
            self._lost.set()

    def close(self) -> None:
        self._closing.set()
        self._ready.clear()
        link = self._link
        if link is not None:
            try:
                link.teardown()
            except Exception:
                log.debug("teardown failed", exc_info=True)
        self._lost.set()

    def _supervise(self) -> None:
        delay = RECONNECT_MIN_S
        while not self._closing.is_set():
            self._lost.wait()
            if self._closing.is_set():
                return
            time.sleep(delay)
            try:
                self._open(PATH_TIMEOUT_S)
            except Exception as exc:
                log.info("reconnect failed: %s", exc)
                delay = min(RECONNECT_MAX_S, delay * 2)
                self._lost.set()
                continue
            delay = RECONNECT_MIN_S
            self.reconnects += 1
            if self.on_reconnect is not None:
                try:
                    self.on_reconnect(self)
                except Exception:
                    log.exception("on_reconnect failed")

    # ---- control ---------------------------------------------------------------------------

    def request(self, path: str, body: dict[str, Any], timeout: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
        """Send one control request and wait for its reply; refusals raise :class:`ControlError`."""
        link = self._link
        if link is None or link.status != RNS.Link.ACTIVE:
            raise LinkDown("no active link to the relay")
        done = threading.Event()
        box: dict[str, Any] = {}

        def on_response(receipt: RNS.RequestReceipt) -> None:
            box["response"] = receipt.response
            done.set()

        receipt = send_request(
            link,
            path,
            control.pack_body(body),
            response_callback=on_response,
            failed_callback=lambda _r: done.set(),
            timeout=timeout,
            max_response_size=control.MAX_RESPONSE_SIZE,
        )
        if receipt is False:
            raise LinkDown(f"request {path} could not be sent")
        self._claim_response(receipt.request_id)
        if not done.wait(timeout + 1.0) or "response" not in box:
            raise LinkDown(f"request {path} got no response")
        return control.check_reply(control.unpack_body(box["response"]))

    def publish(self, stream_id: int) -> dict[str, Any]:
        return self._add_role(control.PATH_PUBLISH, {"stream_id": stream_id})

    def subscribe(self, stream_id: int) -> dict[str, Any]:
        return self._add_role(control.PATH_SUBSCRIBE, {"stream_id": stream_id})

    def _add_role(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = self.request(path, body)
        self._roles.append((path, body))
        return reply

    def _poll_events(self) -> None:
        while not self._closing.is_set():
            if not self._ready.wait(0.5):
                continue
            try:
                reply = self.request(
                    control.PATH_EVENTS, {"ack": self._last_ack}, timeout=control.EVENTS_REQUEST_TIMEOUT
                )
            except Exception as exc:
                log.debug("events poll failed: %s", exc)
                self._closing.wait(0.2)
                continue
            for item in reply.get("events", ()):
                try:
                    event = Event.from_wire(item)
                except ControlError:
                    continue
                if event.seq <= self._last_ack:
                    continue
                self._last_ack = event.seq
                if self.on_event is not None:
                    try:
                        self.on_event(event)
                    except Exception:
                        log.exception("on_event failed")

    # ---- media -----------------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Send one unreliable link packet; False when the link is down (the caller drops it)."""
        link = self._link
        if link is None or link.status != RNS.Link.ACTIVE:
            self.send_failures += 1
            return False
        if len(data) > link.mdu:
            raise PacketTooLarge(f"{len(data)} bytes > link MDU {link.mdu}")
        if self.loss_out is not None and self.loss_out.drop(self.clock()):
            self.sent_packets += 1  # "sent" and lost on the hop
            return True
        try:
            ok = RNS.Packet(link, data, create_receipt=False).send() is not False
        except Exception:
            log.debug("send failed", exc_info=True)
            ok = False
        if ok:
            self.sent_packets += 1
        else:
            self.send_failures += 1
        return ok

    def _on_data(self, data: bytes) -> None:
        if self.loss_in is not None and self.loss_in.drop(self.clock()):
            return
        self.received_packets += 1
        if self.on_packet is not None:
            self.on_packet(data)

    def _tick_loop(self) -> None:
        next_at = time.monotonic()
        while not self._closing.is_set():
            next_at += TICK_INTERVAL_S
            delay = next_at - time.monotonic()
            if delay > 0:
                self._closing.wait(delay)
            else:
                next_at = time.monotonic()
            if self.on_tick is None or not self._ready.is_set():
                continue
            try:
                packets = self.on_tick(self.clock())
            except Exception:
                log.exception("on_tick failed")
                continue
            for data in packets:
                self.send(data)


# Responses that arrived before their request was registered, kept per link at most this many.
# Only the race below parks anything, and each parked response is claimed microseconds later.
MAX_PARKED_RESPONSES = 16


def _guard_early_responses(link: RNS.Link) -> Callable[[bytes], None]:
    """Work around a race in rns 1.5.7's ``Link.request``.

    ``Link.request`` sends the request packet and only then appends the ``RequestReceipt`` to
    ``link.pending_requests``; a response handled (on its own thread) in between matches nothing
    and is dropped, so the request times out. On loopback that hit about one request in five.
    We wrap this link's ``handle_response``: a response for an unknown request id is parked, and
    :meth:`RelayClient.request` claims it right after ``link.request`` returns.
    """
    original = link.handle_response
    parked: dict[bytes, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    lock = threading.Lock()

    def handle_response(request_id: bytes, *args: Any, **kwargs: Any) -> None:
        with lock:
            known = any(r.request_id == request_id for r in list(link.pending_requests))
            if not known:
                parked[request_id] = (args, kwargs)
                while len(parked) > MAX_PARKED_RESPONSES:
                    parked.pop(next(iter(parked)))
                return
        original(request_id, *args, **kwargs)

    def claim(request_id: bytes) -> None:
        with lock:
            item = parked.pop(request_id, None)
        if item is not None:
            original(request_id, *item[0], **item[1])

    link.handle_response = handle_response
    return claim
