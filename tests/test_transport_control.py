"""The control plane's pure parts: bodies, typed errors, rate limits and the long-poll event queue."""

from __future__ import annotations

import threading

import msgpack
import pytest

from ciris_av_plugin.errors import TransportError
from ciris_av_plugin.transport import control
from ciris_av_plugin.transport.control import Event, EventQueue, RequestLimiter
from ciris_av_plugin.transport.errors import ControlError


def test_body_round_trip_and_typed_error_reply() -> None:
    body = {"stream_id": 5, "tracks": [1, 2], "blob": b"\x00\xff"}
    assert control.unpack_body(control.pack_body(body)) == body
    reply = control.unpack_body(control.error_reply(control.ERR_RATE_LIMITED, "slow down"))
    with pytest.raises(ControlError) as info:
        control.check_reply(reply)
    assert info.value.code == control.ERR_RATE_LIMITED
    assert isinstance(info.value, TransportError)
    assert control.check_reply({"ok": 1}) == {"ok": 1}


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc1",  # never-used msgpack byte
        msgpack.packb([1, 2, 3]),  # not a map
        msgpack.packb({1: 2}),  # non-string keys are fine for msgpack but body keys are strings
        b"\x81",  # truncated map
        "text",  # not bytes at all
        bytes(control.MAX_REQUEST_SIZE + 1),
    ],
)
def test_malformed_bodies_raise_bad_request(raw: object) -> None:
    try:
        body = control.unpack_body(raw)
    except ControlError as exc:
        assert exc.code == control.ERR_BAD_REQUEST
    else:
        # The only accepted case is the int-keyed map, which then fails field validation.
        with pytest.raises(ControlError):
            control.require_int(body, "stream_id")


@pytest.mark.parametrize("value", [None, -1, "5", True, 1 << 64, 2.0])
def test_require_int_rejects_out_of_range_and_wrong_types(value: object) -> None:
    with pytest.raises(ControlError) as info:
        control.require_int({"stream_id": value}, "stream_id")
    assert info.value.code == control.ERR_BAD_REQUEST


def test_limiter_isolates_links_and_caps_globally() -> None:
    limiter = RequestLimiter(link_rate=1, link_burst=3, global_rate=1, global_burst=5)
    assert [limiter.allow(b"a", 0.0) for _ in range(4)] == [True, True, True, False]
    # Link b has its own budget, but only two global tokens are left.
    assert [limiter.allow(b"b", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.refused == 2
    limiter.forget(b"a")
    assert limiter.allow(b"a", 0.0) is False  # the global cap still holds


def test_event_queue_sequences_acks_and_bounds() -> None:
    q = EventQueue(max_pending=3)
    for i in range(5):
        q.put("KeyframeRequested", {"track_id": i})
    assert q.dropped == 2
    events = q.poll(ack=0, hold=0)
    assert [e.seq for e in events] == [3, 4, 5]
    assert [e.data["track_id"] for e in events] == [2, 3, 4]
    assert [e.seq for e in q.poll(ack=4, hold=0)] == [5]
    assert q.poll(ack=5, hold=0) == []
    wire = Event.from_wire(events[0].to_wire())
    assert wire == events[0]


class _SteppingClock:
    """A clock for EventQueue.poll that reads ``times`` in turn (the last one forever after)."""

    def __init__(self, *times: float) -> None:
        self.times = list(times)
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.times[min(self.reads, len(self.times)) - 1]


def test_event_poll_times_out_empty_only_once_its_clock_passes_the_hold() -> None:
    q = EventQueue()
    # deadline 0 + 0.1; at 0.04 and 0.08 time remains (each a short real wait), 0.1 ends the poll
    clock = _SteppingClock(0.0, 0.04, 0.08, 0.1, 99.0)
    assert q.poll(ack=0, hold=0.1, clock=clock) == []
    assert clock.reads == 4  # it kept waiting until the clock reached the deadline, not longer


def _parked_poll(q: EventQueue) -> tuple[threading.Thread, list[list[Event]]]:
    """A poll on another thread, returned once it is waiting in the queue.

    Its clock is frozen, so its hold never runs out: only an event, a newer poll or close ends it.
    """
    waiting = threading.Event()
    reads = 0

    def clock() -> float:
        nonlocal reads
        reads += 1
        if reads > 1:  # the first read sets the deadline; each later one comes right before a wait
            waiting.set()
        return 0.0

    results: list[list[Event]] = []
    poller = threading.Thread(target=lambda: results.append(q.poll(ack=0, hold=3600.0, clock=clock)), daemon=True)
    poller.start()
    assert waiting.wait(10.0), "the poll never started waiting"
    return poller, results


def _ended_by_itself(q: EventQueue, poller: threading.Thread) -> bool:
    """Whether the poll ended within 10 s; if not, it is released (close) so the test fails, not hangs."""
    poller.join(10.0)
    if not poller.is_alive():
        return True
    q.close()
    poller.join(10.0)
    return False


def test_event_poll_is_woken_by_an_event() -> None:
    q = EventQueue()
    poller, results = _parked_poll(q)
    q.put("SubscriberStalled", {"stream_id": 1})
    assert _ended_by_itself(q, poller)
    assert [[e.kind for e in r] for r in results] == [["SubscriberStalled"]]


def test_newer_poll_supersedes_a_parked_one() -> None:
    q = EventQueue()
    poller, results = _parked_poll(q)
    assert q.poll(ack=0, hold=0) == []
    assert _ended_by_itself(q, poller)
    assert results == [[]]


@pytest.mark.parametrize("item", [[1], {"seq": "1", "kind": "x"}, {"seq": 1, "kind": 2}, {"seq": 1, "kind": "x", "data": 3}])
def test_malformed_wire_events_are_typed_errors(item: object) -> None:
    with pytest.raises(ControlError):
        Event.from_wire(item)
