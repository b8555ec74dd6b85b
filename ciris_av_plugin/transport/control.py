"""The control plane's pure parts: request bodies, typed error replies, rate limits, event queues.

Nothing here touches RNS, so it is unit-tested with a fake clock. ``relay.py`` and ``client.py``
bind it to ``RNS.Link.request`` and ``Destination.register_request_handler``.

Wire conventions (ARCHITECTURE.md, "Transport (RNS) and the control plane"): every request and
reply body is a msgpack map packed to bytes (RNS packs the bytes again into its own request
envelope). A refusal is ``{"error": code, "message": text}``; success has no ``"error"`` key.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

# Request paths and error codes are the protocol's (protocol/control.py, protocol/codes.py); the
# names are re-exported because every handler here and in relay.py / client.py speaks them.
from ..protocol.codes import ERR_BAD_REQUEST as ERR_BAD_REQUEST
from ..protocol.codes import ERR_BUSY as ERR_BUSY
from ..protocol.codes import ERR_INTERNAL as ERR_INTERNAL
from ..protocol.codes import ERR_NOT_IDENTIFIED as ERR_NOT_IDENTIFIED
from ..protocol.codes import ERR_NOT_MEMBER as ERR_NOT_MEMBER
from ..protocol.codes import ERR_RATE_LIMITED as ERR_RATE_LIMITED
from ..protocol.codes import ERR_REFUSED as ERR_REFUSED
from ..protocol.codes import ERR_TOO_LARGE as ERR_TOO_LARGE
from ..protocol.codes import ERR_UNKNOWN_LINK as ERR_UNKNOWN_LINK
from ..protocol.control import PATH_EVENTS as PATH_EVENTS
from ..protocol.control import PATH_IDENTIFY_CONFIRM as PATH_IDENTIFY_CONFIRM
from ..protocol.control import PATH_PUBLISH as PATH_PUBLISH
from ..protocol.control import PATH_STATS as PATH_STATS
from ..protocol.control import PATH_SUBSCRIBE as PATH_SUBSCRIBE
from ..ratelimit import TokenBucket
from .errors import ControlError

# Largest control request body the relay accepts. Control bodies here are a few dozen bytes;
# later issues carry GroupInfo/Commit/Welcome (a 1,000-member ratchet tree is ~100 kB), so 256 KiB
# leaves room without letting one link make the relay buffer megabytes (RNS turns large requests
# into Resources, which it reassembles in memory before our handler runs).
MAX_REQUEST_SIZE = 256 * 1024

# Largest reply body: the same ceiling as a request (``unpack_body`` refuses a bigger body either
# way), so the relay answers a reply that would not fit with ``ERR_TOO_LARGE`` instead of sending it.
MAX_REPLY_SIZE = MAX_REQUEST_SIZE
# What RNS's response envelope adds to a reply: msgpack [16-byte request id, reply bytes].
RESPONSE_ENVELOPE = 32
# Largest response a client accepts, as RNS declares it (the reply inside RNS's envelope): clients
# refuse Resource advertisements above it before RNS allocates anything (``resource_guard``).
MAX_RESPONSE_SIZE = MAX_REPLY_SIZE + RESPONSE_ENVELOPE

# Per-link control budget: a client needs ~1 request/s in steady state (one long poll) and a
# handful when it (re)connects; 10/s sustained with a burst of 20 absorbs reconnect storms while
# a misbehaving link cannot make the relay spend much CPU on it.
LINK_REQUESTS_PER_S = 10.0
LINK_REQUEST_BURST = 20.0
# Global cap across all links (a relay serves at most a few hundred links on one core).
GLOBAL_REQUESTS_PER_S = 500.0
GLOBAL_REQUEST_BURST = 1000.0

# Events kept per client until acknowledged. Events are small and rare (keyframe requests are
# rate-limited upstream, commits are one per epoch); 256 covers many seconds of a client that is
# not polling, and beyond that the oldest are dropped and counted.
MAX_PENDING_EVENTS = 256
# How long a long poll is held open before an empty answer. It must stay well below the
# client's request timeout (``EVENTS_REQUEST_TIMEOUT``) so the request never times out.
EVENTS_POLL_HOLD = 3.0
EVENTS_REQUEST_TIMEOUT = EVENTS_POLL_HOLD + 7.0
# Events returned in one answer; keeps the response a single link packet in the common case.
MAX_EVENTS_PER_POLL = 32


def pack_body(body: dict[str, Any]) -> bytes:
    """Encode a request or reply body."""
    return msgpack.packb(body, use_bin_type=True)


def unpack_body(data: Any) -> dict[str, Any]:
    """Decode a request or reply body; anything but a msgpack map is a :class:`ControlError`."""
    if data is None:
        return {}
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ControlError(ERR_BAD_REQUEST, f"body must be bytes, got {type(data).__name__}")
    if len(data) > MAX_REQUEST_SIZE:
        raise ControlError(ERR_BAD_REQUEST, f"body of {len(data)} bytes exceeds {MAX_REQUEST_SIZE}")
    try:
        body = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise ControlError(ERR_BAD_REQUEST, f"undecodable body: {exc}") from None
    if not isinstance(body, dict):
        raise ControlError(ERR_BAD_REQUEST, "body must be a map")
    return body


def error_reply(code: str, message: str = "") -> bytes:
    return pack_body({"error": code, "message": message})


def check_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """Raise the typed error a reply carries, or return it unchanged."""
    if "error" in reply:
        raise ControlError(str(reply["error"]), str(reply.get("message", "")))
    return reply


def require_int(body: dict[str, Any], key: str, lo: int = 0, hi: int = (1 << 64) - 1) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ControlError(ERR_BAD_REQUEST, f"{key} must be an integer in [{lo}, {hi}]")
    return value


@dataclass
class RequestLimiter:
    """Per-link buckets under one global bucket: a flood on one link cannot starve the rest."""

    link_rate: float = LINK_REQUESTS_PER_S
    link_burst: float = LINK_REQUEST_BURST
    global_rate: float = GLOBAL_REQUESTS_PER_S
    global_burst: float = GLOBAL_REQUEST_BURST
    _links: dict[bytes, TokenBucket] = field(default_factory=dict)
    _global: TokenBucket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    refused: int = 0

    def allow(self, link_id: bytes, now: float) -> bool:
        with self._lock:
            if self._global is None:
                self._global = TokenBucket(self.global_rate, self.global_burst, now)
            bucket = self._links.get(link_id)
            if bucket is None:
                bucket = self._links[link_id] = TokenBucket(self.link_rate, self.link_burst, now)
            # Check the link first so one noisy link spends only its own tokens.
            ok = bucket.take(now) and self._global.take(now)
            if not ok:
                self.refused += 1
            return ok

    def forget(self, link_id: bytes) -> None:
        with self._lock:
            self._links.pop(link_id, None)


@dataclass(frozen=True, slots=True)
class Event:
    """One relay → client notification as delivered by the long poll."""

    seq: int
    """Per-client sequence number, starting at 1; the client acks the highest it has seen."""
    kind: str
    """What happened (``KeyframeRequested``, ``SubscriberStalled``, ...)."""
    data: dict[str, Any]
    """Event fields (msgpack-able)."""

    def to_wire(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "data": self.data}

    @classmethod
    def from_wire(cls, item: Any) -> Event:
        if not isinstance(item, dict):
            raise ControlError(ERR_BAD_REQUEST, "event must be a map")
        seq, kind, data = item.get("seq"), item.get("kind"), item.get("data", {})
        if not isinstance(seq, int) or not isinstance(kind, str) or not isinstance(data, dict):
            raise ControlError(ERR_BAD_REQUEST, "malformed event")
        return cls(seq, kind, data)


class EventQueue:
    """A client's bounded, acknowledged event queue, with a blocking wait for the long poll.

    Events stay until the client acknowledges them (at-least-once delivery: an answer lost on
    the way is re-sent in the next poll). When full the oldest event is dropped and counted.
    Thread-safe: the engine thread puts, RNS request threads wait.
    """

    def __init__(self, max_pending: int = MAX_PENDING_EVENTS) -> None:
        self._events: deque[Event] = deque()
        self._max = max_pending
        self._next_seq = 1
        self._cond = threading.Condition()
        self._poll_generation = 0
        self.dropped = 0

    def put(self, kind: str, data: dict[str, Any]) -> Event:
        with self._cond:
            event = Event(self._next_seq, kind, data)
            self._next_seq += 1
            self._events.append(event)
            while len(self._events) > self._max:
                self._events.popleft()
                self.dropped += 1
            self._cond.notify_all()
            return event

    def ack(self, seq: int) -> None:
        with self._cond:
            while self._events and self._events[0].seq <= seq:
                self._events.popleft()

    def pending(self) -> list[Event]:
        with self._cond:
            return list(self._events)

    def poll(self, ack: int, hold: float, clock: Callable[[], float] = time.monotonic) -> list[Event]:
        """Acknowledge ``ack``, then return pending events, waiting up to ``hold`` for some.

        A newer poll supersedes an older one still waiting (it returns empty at once), so a
        client that re-polls after a lost answer never has two requests parked here.
        """
        with self._cond:
            while self._events and self._events[0].seq <= ack:
                self._events.popleft()
            self._poll_generation += 1
            generation = self._poll_generation
            self._cond.notify_all()
            deadline = clock() + hold
            while not self._events and generation == self._poll_generation:
                remaining = deadline - clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if generation != self._poll_generation:
                return []
            return list(self._events)[:MAX_EVENTS_PER_POLL]

    def close(self) -> None:
        """Release any waiting poll (the link went away)."""
        with self._cond:
            self._poll_generation += 1
            self._cond.notify_all()
