"""The control plane's pure parts: bodies, typed errors, rate limits and the long-poll event queue."""

from __future__ import annotations

import threading
import time

import msgpack
import pytest

from ciris_av_plugin.errors import TransportError
from ciris_av_plugin.transport import control
from ciris_av_plugin.transport.control import Event, EventQueue, RequestLimiter, TokenBucket
from ciris_av_plugin.transport.errors import ControlError

LONG_HOLD_S = 30.0
"""A hold far longer than the wake-up being tested (~ms): a poll returning before half of it was woken,
however loaded the machine; one that runs to its end took the hold, which is the bug."""


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


def test_token_bucket_allows_burst_then_refills_at_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    assert [bucket.allow(0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert not bucket.allow(0.05)  # half a token
    assert bucket.allow(0.1)
    assert [bucket.allow(10.0) for _ in range(6)].count(True) == 5  # capped at burst


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


def test_event_poll_waits_for_an_event_and_times_out_empty() -> None:
    q = EventQueue()
    t0 = time.monotonic()
    assert q.poll(ack=0, hold=0.1) == []
    assert time.monotonic() - t0 >= 0.09
    threading.Timer(0.05, lambda: q.put("SubscriberStalled", {"stream_id": 1})).start()
    t0 = time.monotonic()
    got = q.poll(ack=0, hold=LONG_HOLD_S)
    assert [e.kind for e in got] == ["SubscriberStalled"]
    assert time.monotonic() - t0 < LONG_HOLD_S / 2, "the event ended the hold; the hold did not run out"


def test_newer_poll_supersedes_a_parked_one() -> None:
    q = EventQueue()
    results: list[list[Event]] = []
    first = threading.Thread(target=lambda: results.append(q.poll(ack=0, hold=LONG_HOLD_S)))
    first.start()
    # The first poll is parked once it took its generation (it waits on the condition it holds).
    deadline = time.monotonic() + LONG_HOLD_S
    while q._poll_generation < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    t0 = time.monotonic()
    assert q.poll(ack=0, hold=0.05) == []
    first.join(LONG_HOLD_S)
    assert not first.is_alive() and results == [[]]
    assert time.monotonic() - t0 < LONG_HOLD_S / 2, "superseded at once, not at the end of its hold"


@pytest.mark.parametrize("item", [[1], {"seq": "1", "kind": "x"}, {"seq": 1, "kind": 2}, {"seq": 1, "kind": "x", "data": 3}])
def test_malformed_wire_events_are_typed_errors(item: object) -> None:
    with pytest.raises(ControlError):
        Event.from_wire(item)
