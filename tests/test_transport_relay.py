"""RelayNode's control plane and packet path with fake links and a real engine (no RNS I/O).

RNS hands the relay a link and calls request handlers with (path, data, request_id, link_id,
remote_identity, requested_at); these tests call the same entry points directly.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest
import RNS
from support_links import FakeLink

from ciris_av_plugin.protocol.media_wire import FLAG_KEYFRAME, FragmentHeader
from ciris_av_plugin.relay.engine import ForwardingEngine
from ciris_av_plugin.relay.errors import RelayError
from ciris_av_plugin.relay.events import KeyframeRequested
from ciris_av_plugin.transport import control
from ciris_av_plugin.transport.control import RequestLimiter
from ciris_av_plugin.transport.relay import IDENTIFY_DEADLINE_S, RelayNode, _LinkState


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def relay() -> Any:
    clock = Clock()
    node = RelayNode(RNS.Identity(), lambda on_pending: ForwardingEngine(on_pending=on_pending), clock=clock,
                     send_mode="threads")
    node.test_clock = clock  # type: ignore[attr-defined]
    yield node
    node.stop()


def _add_link(relay: RelayNode, name: bytes, mdu: int = 431) -> _LinkState:
    link = FakeLink(name.ljust(16, b"_"), mdu)
    state = _LinkState(link=link, link_id=link.link_id, opened_at=relay.clock())  # type: ignore[arg-type]
    relay._links[link.link_id] = state
    return state


def _request(relay: RelayNode, path: str, state: _LinkState, body: Any, identity: Any = None) -> dict[str, Any]:
    handler = relay._wrap(path, {
        control.PATH_IDENTIFY_CONFIRM: relay._req_identify_confirm,
        control.PATH_PUBLISH: relay._req_publish,
        control.PATH_SUBSCRIBE: relay._req_subscribe,
        control.PATH_EVENTS: relay._req_events,
        control.PATH_STATS: relay._req_stats,
    }[path])
    data = body if isinstance(body, bytes) else control.pack_body(body)
    return control.unpack_body(handler(path, data, b"req", state.link_id, identity, time.time()))


def test_nothing_but_identify_confirm_before_identification(relay: RelayNode) -> None:
    state = _add_link(relay, b"a")
    assert _request(relay, "publish", state, {"stream_id": 1})["error"] == control.ERR_NOT_IDENTIFIED
    assert _request(relay, "identify-confirm", state, {})["error"] == control.ERR_NOT_IDENTIFIED
    ident = RNS.Identity()
    reply = _request(relay, "identify-confirm", state, {}, ident)
    assert reply["identity"] == ident.hash and reply["mdu"] == 431
    assert _request(relay, "publish", state, {"stream_id": 1}) == {"stream_id": 1}
    assert _request(relay, "subscribe", state, {"stream_id": 1})["error"] == control.ERR_REFUSED  # one role


def test_bad_bodies_unknown_links_and_engine_refusals_are_typed(relay: RelayNode) -> None:
    state = _add_link(relay, b"a")
    _request(relay, "identify-confirm", state, {}, RNS.Identity())
    assert _request(relay, "publish", state, b"\xc1")["error"] == control.ERR_BAD_REQUEST
    assert _request(relay, "publish", state, {"stream_id": -3})["error"] == control.ERR_BAD_REQUEST
    assert _request(relay, "events", state, {"ack": "x"})["error"] == control.ERR_BAD_REQUEST
    ghost = _LinkState(link=FakeLink(b"g" * 16), link_id=b"g" * 16, opened_at=0.0)  # type: ignore[arg-type]
    assert _request(relay, "stats", ghost, {})["error"] == control.ERR_UNKNOWN_LINK

    def refuse(*_: Any) -> None:
        raise RelayError("no")

    relay.engine.add_publisher = refuse  # type: ignore[method-assign]
    assert _request(relay, "publish", state, {"stream_id": 2})["error"] == control.ERR_REFUSED
    assert state.role is None, "a refused request changes nothing"
    counters = relay.counters()
    assert counters["req_error_bad-request"] == 3 and counters["req_error_refused"] == 1


def test_requests_are_rate_limited_per_link(relay: RelayNode) -> None:
    relay._limiter = RequestLimiter(link_rate=0.0001, link_burst=3)
    a, b = _add_link(relay, b"a"), _add_link(relay, b"b")
    for s in (a, b):
        _request(relay, "identify-confirm", s, {}, RNS.Identity())
    replies = [_request(relay, "stats", a, {}) for _ in range(3)]
    assert [r.get("error") for r in replies] == [None, None, control.ERR_RATE_LIMITED]
    assert "error" not in _request(relay, "stats", b, {}), "another link keeps its own budget"


def test_unidentified_data_is_dropped_and_identified_data_reaches_subscribers(relay: RelayNode) -> None:
    pub, sub = _add_link(relay, b"pub", 16303), _add_link(relay, b"sub", 431)
    frag = FragmentHeader(9, 1, 0, 0, 0, 1000, 1, FLAG_KEYFRAME).encode() + bytes(1000)
    relay._on_packet(pub, frag)
    assert relay.counters()["rx_unidentified_dropped"] == 1
    for s in (pub, sub):
        _request(relay, "identify-confirm", s, {}, RNS.Identity())
    _request(relay, "publish", pub, {"stream_id": 9})
    assert _request(relay, "subscribe", sub, {"stream_id": 9}) == {"stream_id": 9, "mdu": 431}
    relay._on_packet(pub, frag)
    stats = relay.engine_stats()
    assert stats["resplits"] == 1, "a 1,036-byte fragment is re-split for the 431-byte subscriber"
    assert stats["subscribers"][sub.link_id.hex()]["queued_packets"] + stats["packets_out"] == 3


def test_engine_events_reach_the_right_long_poll(relay: RelayNode) -> None:
    pub, other = _add_link(relay, b"pub"), _add_link(relay, b"other")
    for s in (pub, other):
        _request(relay, "identify-confirm", s, {}, RNS.Identity())
    got: list[dict[str, Any]] = []
    poller = threading.Thread(target=lambda: got.append(_request(relay, "events", pub, {"ack": 0})))
    poller.start()
    time.sleep(0.05)  # usually parks the poll first; an event queued before the poll is answered the same
    relay._route_event(KeyframeRequested(stream_id=9, track_id=1, link_id=pub.link_id))
    poller.join(20.0)
    assert not poller.is_alive()
    (reply,) = got
    (event,) = reply["events"]
    assert event["kind"] == "KeyframeRequested" and event["data"] == {"stream_id": 9, "track_id": 1}
    assert other.events.pending() == []
    # Acknowledged events are not sent again; unacknowledged ones are.
    assert _request(relay, "events", pub, {"ack": 0})["events"][0]["seq"] == event["seq"]
    relay._route_event(KeyframeRequested(stream_id=9, track_id=1, link_id=pub.link_id))
    assert [e["seq"] for e in _request(relay, "events", pub, {"ack": event["seq"]})["events"]] == [event["seq"] + 1]


def test_engine_events_go_out_under_their_kind_not_their_class_name(relay: RelayNode) -> None:
    """The wire name is the event's ``KIND``: renaming the class must not change what clients see."""
    pub = _add_link(relay, b"pub")
    _request(relay, "identify-confirm", pub, {}, RNS.Identity())
    renamed = dataclasses.dataclass(frozen=True)(type("KeyframeAsked", (KeyframeRequested,), {}))
    relay._route_event(renamed(stream_id=9, track_id=1, link_id=pub.link_id))
    (event,) = _request(relay, "events", pub, {"ack": 0})["events"]
    assert event["kind"] == "KeyframeRequested"
    assert relay.engine_events == {"KeyframeRequested": 1}


def test_links_that_never_identify_are_closed(relay: RelayNode) -> None:
    lazy, good = _add_link(relay, b"lazy"), _add_link(relay, b"good")
    _request(relay, "identify-confirm", good, {}, RNS.Identity())
    relay.test_clock.t += IDENTIFY_DEADLINE_S + 0.1  # type: ignore[attr-defined]
    relay._tick_once(relay.clock())
    assert lazy.link.torn_down and not good.link.torn_down  # type: ignore[attr-defined]
    assert relay.counters()["links_unidentified_closed"] == 1
