"""The relay forwarding engine (relay/engine.py), driven with a fake clock and no network.

Each test reads as the scenario it proves. Publishers are simulated with ``wire.split``; what
subscribers receive is checked by reassembling it with a small helper built on
``wire.decode_fragment`` (independent of the engine's own header parsing).
"""

from __future__ import annotations

import json
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support_relay_engine import (
    AUDIO,
    BIG_MDU,
    PUB,
    SID,
    SMALL_MDU,
    VIDEO,
    audio_frame,
    drain,
    engine_with,
    feed,
    frame,
    headers,
    keep_alive,
    reassemble,
    report,
)

from ciris_av_plugin.errors import RelayError
from ciris_av_plugin.media.errors import MediaError
from ciris_av_plugin.protocol.media_wire import (
    FLAG_AUDIO,
    FLAG_KEYFRAME,
    FLAG_RETRANSMISSION,
    FRAG_HEADER_LEN,
    PT_KEEPALIVE,
    PT_NACK,
    FragmentHeader,
    decode_fragment,
)
from ciris_av_plugin.protocol.reports import TrackReport
from ciris_av_plugin.relay.engine import ForwardingEngine
from ciris_av_plugin.relay.engine_config import EngineConfig
from ciris_av_plugin.relay.errors import (
    InvalidMDUError,
    PublishNotAuthorizedError,
    SubscriberLimitError,
)
from ciris_av_plugin.relay.events import KeyframeRequested, NackUpstream, SubscriberResumed, SubscriberStalled

# ---------------------------------------------------------------- fan-out and re-splitting


def test_fan_out_to_n_subscribers_is_byte_identical() -> None:
    eng = engine_with(5)
    sent: list[bytes] = []
    outs: list[list[bytes]] = [[] for _ in range(5)]
    for seq in range(30):
        pkts = frame(seq, seq // 10, 3000, key=seq % 10 == 0)
        sent += pkts
        feed(eng, pkts, 0.001 * seq)
        for i in range(5):
            outs[i] += drain(eng, b"sub-%d" % i, 0.001 * seq)
    for out in outs:
        assert out == sent
    s = eng.stats()
    assert s["fragments_in"] == len(sent)
    assert s["frames_in"] == 30
    assert s["packets_out"] == 5 * len(sent)
    assert s["frames_out"] == 5 * 30
    assert s["bytes_out"] == 5 * sum(map(len, sent))
    assert s["drops"] == {}


def test_smaller_mdu_gets_resplit_fragments_that_reassemble_to_the_same_frames() -> None:
    eng = ForwardingEngine()
    eng.add_publisher(PUB, SID, 0.0)
    eng.add_subscriber(b"big", SID, BIG_MDU, 0.0)
    eng.add_subscriber(b"small", SID, SMALL_MDU, 0.0)
    eng.add_subscriber(b"small2", SID, SMALL_MDU, 0.0)
    eng.add_subscriber(b"tiny", SID, FRAG_HEADER_LEN + 7, 0.0)
    sent: list[bytes] = []
    for seq in range(12):
        sent += frame(seq, 0, 8000 if seq == 0 else 1500 + seq, key=seq == 0)
    sent += audio_frame(0)
    feed(eng, sent, 0.0)
    big = drain(eng, b"big", 0.01)
    assert sorted(big) == sorted(sent)
    expected = reassemble(sent)
    for link, mdu in ((b"small", SMALL_MDU), (b"small2", SMALL_MDU), (b"tiny", FRAG_HEADER_LEN + 7)):
        out = drain(eng, link, 0.01)
        assert out and all(len(p) <= mdu for p in out)
        assert len(out) > len(sent)
        assert reassemble(out) == expected
    # One re-split per distinct smaller MDU per ingress packet, not per subscriber.
    over_small = len([p for p in sent if len(p) > SMALL_MDU])
    over_tiny = len([p for p in sent if len(p) > FRAG_HEADER_LEN + 7])
    assert eng.stats()["resplits"] == over_small + over_tiny


def test_publisher_fragments_already_within_mdu_are_not_reencoded() -> None:
    eng = engine_with(1, SMALL_MDU)
    pkts = frame(0, 0, 1200, key=True, mdu=SMALL_MDU)
    feed(eng, pkts, 0.0)
    out = drain(eng, b"sub-0", 0.0)
    assert all(a is b for a, b in zip(out, pkts, strict=True))


# ---------------------------------------------------------------- priority


def test_strict_priority_control_audio_keyframe_rest() -> None:
    eng = engine_with(1)
    # Start the video track so deltas are forwarded, then drain.
    feed(eng, frame(0, 0, 100, key=True), 0.0)
    drain(eng, b"sub-0", 0.0)
    feed(eng, frame(1, 0, 100), 0.01)  # rest
    feed(eng, frame(2, 0, 100, prio=10), 0.01)  # base layer
    feed(eng, frame(3, 0, 100, key=True, track=2), 0.01)  # keyframe (another video track)
    feed(eng, audio_frame(7), 0.01)  # audio
    assert eng.send_control(b"sub-0", b"\x04ctl", 0.01)
    out = eng.next_packets(b"sub-0", 0.02)
    assert out[0] == b"\x04ctl"
    hs = headers(out[1:])
    assert [(h.track_id, h.frame_seq) for h in hs] == [(AUDIO, 7), (VIDEO, 2), (2, 3), (VIDEO, 1)]


def test_next_packets_respects_max_packets() -> None:
    eng = engine_with(1)
    feed(eng, frame(0, 0, 5000, key=True, mdu=500), 0.0)
    total = eng.stats()["subscribers"][b"sub-0".hex()]["queued_packets"]
    assert total > 3
    assert len(eng.next_packets(b"sub-0", 0.0, 3)) == 3
    assert eng.has_pending(b"sub-0")
    assert len(drain(eng, b"sub-0", 0.0)) == total - 3
    assert not eng.has_pending(b"sub-0")
    assert eng.next_packets(b"sub-0", 0.0, 0) == []


# ---------------------------------------------------------------- age bound and drop policy


def test_drop_policy_discardable_first_then_rest_of_gop_then_resume_at_keyframe() -> None:
    cfg = EngineConfig()
    eng = engine_with(1, config=cfg)
    feed(eng, frame(0, 5, 500, key=True), 0.0)
    assert len(drain(eng, b"sub-0", 0.0)) == 1
    # The subscriber's sender falls behind: frames queue up.
    feed(eng, frame(1, 5, 500, disc=True), 0.0)
    feed(eng, frame(2, 5, 500), 0.0)
    feed(eng, frame(3, 5, 500, disc=True), 0.0)
    # Past the discardable bound but inside the video bound: only discardable frames go.
    t1 = cfg.discardable_max_age + 0.01
    keep_alive(eng, [b"sub-0"], t1)
    out = eng.next_packets(b"sub-0", t1, 1)
    assert [h.frame_seq for h in headers(out)] == [2]
    drops = eng.stats()["drops"]
    assert drops == {"age_discardable": 1}
    # Now a non-discardable frame waits past the video bound: the rest of gop 5 goes.
    feed(eng, frame(4, 5, 500), 0.3)
    feed(eng, frame(5, 5, 500), 0.3)
    t2 = 0.3 + cfg.video_max_age + 0.01
    keep_alive(eng, [b"sub-0"], t2)
    assert eng.next_packets(b"sub-0", t2) == []
    drops = eng.stats()["drops"]
    assert drops["age_gop"] == 2
    assert drops["age_discardable"] == 2  # frame 3 aged out too
    # Later deltas of the broken group are not forwarded; a keyframe is asked for.
    feed(eng, frame(6, 5, 500), t2)
    assert eng.next_packets(b"sub-0", t2) == []
    assert eng.stats()["drops"]["await_keyframe"] == 1
    events = eng.tick(t2)
    assert KeyframeRequested(SID, VIDEO, PUB) in events
    # The next keyframe restarts the track.
    feed(eng, frame(7, 6, 500, key=True), t2 + 0.05)
    feed(eng, frame(8, 6, 500), t2 + 0.05)
    assert [h.frame_seq for h in headers(drain(eng, b"sub-0", t2 + 0.06))] == [7, 8]


def test_every_fragment_of_a_dropped_frame_goes_including_later_arrivals() -> None:
    eng = engine_with(1)
    feed(eng, frame(0, 0, 100, key=True), 0.0)
    drain(eng, b"sub-0", 0.0)
    pkts = frame(1, 0, 3000, disc=True, mdu=1036)
    assert len(pkts) == 3
    feed(eng, pkts[:2], 0.0)
    keep_alive(eng, [b"sub-0"], 0.3)
    assert eng.next_packets(b"sub-0", 0.3) == []
    feed(eng, pkts[2:], 0.3)  # cut-through: the tail arrives after the head was dropped
    assert eng.next_packets(b"sub-0", 0.3) == []
    assert eng.stats()["drops"] == {"age_discardable": 2, "frame_dropped": 1}


def test_audio_ages_out_on_its_own_bound() -> None:
    cfg = EngineConfig()
    eng = engine_with(1, config=cfg)
    feed(eng, audio_frame(0), 0.0)
    feed(eng, audio_frame(1), 0.2)
    t = cfg.audio_max_age + 0.01
    keep_alive(eng, [b"sub-0"], t)
    assert [h.frame_seq for h in headers(eng.next_packets(b"sub-0", t))] == [1]
    assert eng.stats()["drops"] == {"age_audio": 1}


def test_audio_is_never_dropped_for_video() -> None:
    # Room for all the audio (199 x 136 B) but not for the video (~400 kB).
    cfg = EngineConfig(max_queued_bytes=40_000, max_queued_packets=10_000)
    eng = engine_with(1, config=cfg)
    feed(eng, frame(0, 0, 1000, key=True), 0.0)
    audio_sent = 0
    for seq in range(1, 200):
        gop = seq // 30
        feed(eng, frame(seq, gop, 2000, key=seq % 30 == 0, disc=seq % 3 == 2), 0.001 * seq)
        feed(eng, audio_frame(seq), 0.001 * seq)
        audio_sent += 1
        sub = eng.stats()["subscribers"][b"sub-0".hex()]
        assert sub["queued_bytes"] <= cfg.max_queued_bytes
    out = drain(eng, b"sub-0", 0.2)
    audio_out = [h for h in headers(out) if h.track_id == AUDIO]
    assert len(audio_out) == audio_sent
    drops = eng.stats()["drops"]
    assert drops["cap_discardable"] > 0 and drops["cap_gop"] > 0
    assert "cap_audio" not in drops and "age_audio" not in drops


def test_audio_alone_over_the_cap_sheds_oldest_audio() -> None:
    cfg = EngineConfig(max_queued_bytes=1000)
    eng = engine_with(1, config=cfg)
    for seq in range(20):
        feed(eng, audio_frame(seq), 0.0)
    sub = eng.stats()["subscribers"][b"sub-0".hex()]
    assert sub["queued_bytes"] <= 1000
    out = drain(eng, b"sub-0", 0.0)
    seqs = [h.frame_seq for h in headers(out)]
    assert seqs == list(range(20 - len(seqs), 20))
    assert eng.stats()["drops"]["cap_audio"] == 20 - len(seqs)


def test_newer_keyframe_sent_first_makes_late_older_group_stale() -> None:
    cfg = EngineConfig()
    eng = engine_with(1, config=cfg)
    feed(eng, frame(0, 0, 100, key=True), 0.0)
    drain(eng, b"sub-0", 0.0)
    feed(eng, frame(1, 0, 100), 0.0)
    feed(eng, frame(2, 0, 100), 0.0)
    t = cfg.discardable_max_age + 0.01
    feed(eng, frame(3, 1, 100, key=True), t)
    feed(eng, frame(4, 1, 100), t)
    keep_alive(eng, [b"sub-0"], t)
    out = drain(eng, b"sub-0", t)
    assert [h.frame_seq for h in headers(out)] == [3, 4]
    assert eng.stats()["drops"] == {"stale_gop": 2}


def test_a_keyframe_overtaking_fresh_deltas_leaves_them_for_the_receiver_to_reorder() -> None:
    eng = engine_with(1)
    feed(eng, frame(0, 0, 100, key=True), 0.0)
    drain(eng, b"sub-0", 0.0)
    for seq, gop, key in ((1, 0, False), (2, 0, False), (3, 1, True), (4, 1, False)):
        feed(eng, frame(seq, gop, 100, key=key), 0.01)
    out = drain(eng, b"sub-0", 0.02)
    assert [h.frame_seq for h in headers(out)] == [3, 1, 2, 4]
    assert eng.stats()["drops"] == {}


def test_tick_applies_age_bound_when_nobody_drains() -> None:
    eng = engine_with(1)
    feed(eng, frame(0, 0, 1000, key=True), 0.0)
    feed(eng, audio_frame(0), 0.0)
    keep_alive(eng, [b"sub-0"], 0.6)
    eng.tick(0.6)
    sub = eng.stats()["subscribers"][b"sub-0".hex()]
    assert sub["queued_packets"] == 0 and sub["queued_bytes"] == 0
    assert eng.stats()["drops"] == {"age_gop": 1, "age_audio": 1}


# ---------------------------------------------------------------- stalls


def test_stall_after_300ms_without_reports_then_resume_at_keyframe() -> None:
    cfg = EngineConfig()
    eng = engine_with(2, config=cfg)
    healthy, slow = b"sub-0", b"sub-1"
    sent_to_healthy: list[bytes] = []
    got: list[bytes] = []
    slow_out: list[bytes] = []
    t = 0.0
    seq = 0
    events: list = []
    stalled_at = resumed_at = None
    while t < 2.0:
        pkts = audio_frame(seq) + frame(seq, seq // 10, 1500, key=seq % 10 == 0)
        feed(eng, pkts, t)
        sent_to_healthy += pkts
        keep_alive(eng, [healthy], t)
        if not 0.2 < t < 1.0:
            keep_alive(eng, [slow], t)
        new = eng.tick(t)
        for ev in new:
            if isinstance(ev, SubscriberStalled):
                stalled_at = t
            if isinstance(ev, SubscriberResumed):
                resumed_at = t
        events += new
        got += drain(eng, healthy, t)
        slow_out += drain(eng, slow, t)
        if stalled_at is not None and resumed_at is None:
            assert eng.next_packets(slow, t) == []
            assert not eng.has_pending(slow)
            assert eng.stats()["subscribers"][slow.hex()]["queued_packets"] == 0
        t = round(t + 1 / 30, 6)
        seq += 1
    assert stalled_at is not None and 0.2 + cfg.stall_timeout <= stalled_at < 0.2 + cfg.stall_timeout + 0.05
    assert resumed_at is not None and 1.0 <= resumed_at < 1.05
    # The healthy subscriber lost nothing and got everything in order.
    assert got == sent_to_healthy
    assert eng.stats()["subscribers"][healthy.hex()]["drops"] == {}
    # The slow one restarted with a keyframe on the video track after resuming.
    video = [h for h in headers(slow_out) if h.track_id == VIDEO]
    first_after = [h for h in video if h.frame_seq * (1 / 30) > 1.0]
    assert first_after and first_after[0].flags & FLAG_KEYFRAME
    assert eng.stats()["subscribers"][slow.hex()]["drops"].get("stalled", 0) > 0
    assert any(isinstance(e, KeyframeRequested) for e in events)


def test_a_subscriber_that_never_reports_is_stalled_from_its_subscription() -> None:
    eng = engine_with(1)
    assert eng.tick(0.29) == []
    events = eng.tick(0.31)
    assert events == [SubscriberStalled(b"sub-0", 0.0, 0)]
    feed(eng, frame(0, 0, 100, key=True), 0.32)
    assert eng.next_packets(b"sub-0", 0.32) == []
    assert eng.stats()["drops"] == {"stalled": 1}
    assert eng.tick(0.5) == []  # stalled once, not again every tick


def test_resumed_subscriber_skips_the_group_in_flight() -> None:
    eng = engine_with(1)
    eng.tick(0.31)  # stalled
    feed(eng, frame(0, 3, 3000, key=True, mdu=1036)[:1], 0.32)  # keyframe head while stalled
    eng.receive_packet(b"sub-0", report(), 0.33)
    feed(eng, frame(0, 3, 3000, key=True, mdu=1036)[1:], 0.34)  # its tail after resuming
    feed(eng, frame(1, 3, 300), 0.34)
    assert eng.next_packets(b"sub-0", 0.34) == []
    feed(eng, frame(2, 4, 300, key=True), 0.35)
    assert [h.frame_seq for h in headers(drain(eng, b"sub-0", 0.35))] == [2]


# ---------------------------------------------------------------- keyframe requests


def test_new_subscriber_starts_at_a_keyframe_and_asks_for_one() -> None:
    eng = engine_with(1)
    feed(eng, frame(0, 0, 500, key=True), 0.0)
    for seq in range(1, 5):
        feed(eng, frame(seq, 0, 500), 0.01 * seq)
    drain(eng, b"sub-0", 0.05)
    eng.add_subscriber(b"late", SID, BIG_MDU, 0.05)
    events = eng.tick(0.05)
    assert events == [KeyframeRequested(SID, VIDEO, PUB)]
    feed(eng, frame(5, 0, 500), 0.06)
    feed(eng, audio_frame(5), 0.06)
    late = drain(eng, b"late", 0.06)
    assert [(h.track_id, h.frame_seq) for h in headers(late)] == [(AUDIO, 5)]
    feed(eng, frame(6, 1, 500, key=True), 0.07)
    feed(eng, frame(7, 1, 500), 0.08)
    assert [h.frame_seq for h in headers(drain(eng, b"late", 0.08))] == [6, 7]


def test_subscriber_before_any_video_waits_for_the_first_keyframe() -> None:
    eng = engine_with(1)
    feed(eng, frame(0, 0, 500), 0.0)  # a delta on a new track: not decodable alone
    feed(eng, frame(1, 1, 500, key=True), 0.01)
    assert [h.frame_seq for h in headers(drain(eng, b"sub-0", 0.01))] == [1]


def test_keyframe_requests_are_coalesced_and_rate_limited() -> None:
    cfg = EngineConfig()
    eng = engine_with(0, config=cfg)
    feed(eng, frame(0, 0, 100, key=True), 0.0)
    # Three joins within one tick: one request.
    for i in range(3):
        eng.add_subscriber(b"s%d" % i, SID, BIG_MDU, 0.01)
    assert eng.tick(0.01) == [KeyframeRequested(SID, VIDEO, PUB)]
    # A loss report while the request is outstanding: coalesced, nothing new.
    eng.receive_packet(b"s0", report(SID, TrackReport(VIDEO, 0, 2)), 0.05)
    assert eng.tick(0.05) == []
    kf = eng.stats()["keyframe_requests"]
    assert kf["sent"] == 1 and kf["coalesced"] == 3
    # The keyframe arrives; a new loss soon after must wait for the rate limit.
    feed(eng, frame(1, 1, 100, key=True), 0.1)
    keep_alive(eng, [b"s0", b"s1", b"s2"], 0.1)
    eng.receive_packet(b"s1", report(SID, TrackReport(VIDEO, 1, 1)), 0.15)
    eng.receive_packet(b"s2", report(SID, TrackReport(VIDEO, 1, 1)), 0.16)
    assert eng.tick(0.2) == []
    keep_alive(eng, [b"s0", b"s1", b"s2"], 0.4)
    assert eng.tick(0.4) == []
    keep_alive(eng, [b"s0", b"s1", b"s2"], 0.01 + cfg.keyframe_min_interval)
    assert eng.tick(0.01 + cfg.keyframe_min_interval) == [KeyframeRequested(SID, VIDEO, PUB)]
    kf = eng.stats()["keyframe_requests"]
    assert kf["sent"] == 2 and kf["coalesced"] == 4 and kf["rate_limited"] == 1


def test_unanswered_request_is_repeated_after_its_timeout_for_a_waiting_subscriber() -> None:
    cfg = EngineConfig()
    eng = engine_with(0, config=cfg)
    feed(eng, frame(0, 0, 100, key=True), 0.0)
    eng.add_subscriber(b"s", SID, BIG_MDU, 0.0)
    sent = []
    t = 0.0
    while t < 2.5:
        keep_alive(eng, [b"s"], t)
        sent += [(t, e) for e in eng.tick(t) if isinstance(e, KeyframeRequested)]
        t = round(t + 0.05, 6)
    times = [s[0] for s in sent]
    assert len(times) == 3  # publisher never answers: 0, ~timeout, ~2*timeout
    assert all(b - a >= cfg.keyframe_request_timeout - 1e-9 for a, b in zip(times, times[1:], strict=False))


def test_loss_report_on_audio_does_not_request_a_keyframe() -> None:
    eng = engine_with(1)
    feed(eng, audio_frame(0), 0.0)
    feed(eng, frame(0, 0, 100, key=True), 0.0)
    assert len(drain(eng, b"sub-0", 0.0)) == 2
    assert eng.tick(0.0) == []
    eng.receive_packet(b"sub-0", report(SID, TrackReport(AUDIO, 0, 5)), 1.0)
    assert eng.tick(1.0) == []
    eng.receive_packet(b"sub-0", report(SID, TrackReport(VIDEO, 0, 1)), 1.05)
    assert eng.tick(1.05) == [KeyframeRequested(SID, VIDEO, PUB)]
    assert eng.stats()["subscribers"][b"sub-0".hex()]["reported_lost"] == 6


def test_no_request_goes_to_a_vanished_publisher() -> None:
    eng = engine_with(1)
    feed(eng, frame(0, 0, 100, key=True), 0.0)
    eng.remove_link(PUB, 0.01)
    eng.add_subscriber(b"late", SID, BIG_MDU, 0.02)
    assert eng.tick(0.02) == []
    assert eng.stats()["keyframe_requests"]["no_publisher"] == 1
    # A re-connected publisher (new link) takes the track over and gets the request.
    eng.add_publisher(b"pub2", SID, 0.5)
    feed(eng, frame(1, 0, 100), 0.5, link=b"pub2")
    keep_alive(eng, [b"sub-0", b"late"], 1.2)
    assert KeyframeRequested(SID, VIDEO, b"pub2") in eng.tick(1.2)


# ---------------------------------------------------------------- cascade


def test_cascade_relay_to_relay_is_a_subscriber_upstream_and_a_publisher_downstream() -> None:
    upstream = engine_with(0)
    upstream.add_subscriber(b"relay-b", SID, BIG_MDU, 0.0)
    downstream = ForwardingEngine()
    downstream.add_publisher(b"to-relay-a", SID, 0.0)
    downstream.add_subscriber(b"leaf", SID, SMALL_MDU, 0.0)
    sent: list[bytes] = []
    for seq in range(10):
        sent += frame(seq, 0, 4000 if seq == 0 else 900, key=seq == 0)
    feed(upstream, sent, 0.0)
    feed(downstream, drain(upstream, b"relay-b", 0.0), 0.001, link=b"to-relay-a")
    assert reassemble(drain(downstream, b"leaf", 0.002)) == reassemble(sent)
    downstream.add_subscriber(b"leaf2", SID, BIG_MDU, 0.01)
    assert downstream.tick(0.01) == [KeyframeRequested(SID, VIDEO, b"to-relay-a")]


# ---------------------------------------------------------------- hooks and refusals


def test_authorize_publish_hook_refuses_without_changing_state() -> None:
    eng = ForwardingEngine(authorize_publish=lambda link, sid: link == PUB)
    with pytest.raises(PublishNotAuthorizedError) as info:
        eng.add_publisher(b"intruder", SID, 0.0)
    assert isinstance(info.value, RelayError)
    assert eng.stats()["streams"] == 0
    eng.add_publisher(PUB, SID, 0.0)
    eng.add_subscriber(b"s", SID, BIG_MDU, 0.0)
    feed(eng, frame(0, 0, 100, key=True), 0.0, link=b"intruder")
    assert eng.stats()["drops"] == {"not_publisher": 1}


def test_frame_filter_drops_with_its_reason() -> None:
    seen: list[FragmentHeader] = []

    def only_kid_0x101(link: bytes, h: FragmentHeader, now: float) -> str | None:
        seen.append(h)
        return None if h.kid == 0x101 else "wrong_sender_kid"

    eng = engine_with(1, frame_filter=only_kid_0x101)
    feed(eng, frame(0, 0, 100, key=True, track=1), 0.0)
    feed(eng, frame(0, 0, 100, key=True, track=2), 0.0)
    assert [h.frame_seq for h in headers(drain(eng, b"sub-0", 0.0))] == [0]
    assert eng.stats()["drops"] == {"wrong_sender_kid": 1}
    assert seen[0] == decode_fragment(frame(0, 0, 100, key=True, track=1)[0])[0]


def test_subscriber_limit_and_bad_mdu_raise_without_changing_state() -> None:
    eng = engine_with(2, config=EngineConfig(max_subscribers_per_stream=2))
    with pytest.raises(SubscriberLimitError):
        eng.add_subscriber(b"third", SID, BIG_MDU, 0.0)
    with pytest.raises(InvalidMDUError):
        eng.add_subscriber(b"fourth", SID + 1, FRAG_HEADER_LEN, 0.0)
    s = eng.stats()
    assert set(s["subscribers"]) == {b"sub-0".hex(), b"sub-1".hex()}
    assert s["streams"] == 1
    # Subscribing again only updates the MDU.
    eng.add_subscriber(b"sub-0", SID, SMALL_MDU, 0.0)
    assert eng.stats()["subscribers"][b"sub-0".hex()]["mdu"] == SMALL_MDU


# ---------------------------------------------------------------- bad input


def _bad_packets() -> dict[str, bytes]:
    good = frame(0, 0, 100, key=True)[0]

    def patch(fmt: str, offset: int, value: int) -> bytes:
        b = bytearray(good)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    return {
        "empty": b"",
        "truncated": good[: FRAG_HEADER_LEN - 1],
        "empty_fragment": good[:FRAG_HEADER_LEN],
        "bad_flags": patch(">B", 1, 0x80),
        "bad_length": patch(">I", 24, 0),
        "bad_offset": patch(">I", 20, 50),
        "unknown_stream": frame(0, 0, 100, key=True, sid=SID + 1)[0],
        "unknown_packet_type": b"\x7f" + good[1:],
        "bad_nack": bytes([PT_NACK]) + b"\x00" * 20,
        "bad_report": b"\x02\x01garbage",
    }


@pytest.mark.parametrize("reason", sorted(_bad_packets()))
def test_bad_input_is_a_counted_drop_never_an_exception(reason: str) -> None:
    eng = engine_with(1)
    eng.receive_packet(PUB, _bad_packets()[reason], 0.0)
    eng.receive_packet(b"sub-0", _bad_packets()[reason], 0.0)
    s = eng.stats()
    assert s["drops"] == {reason: 2}
    assert s["packets_in"] == 2 and s["fragments_in"] == 0
    assert not eng.has_pending(b"sub-0")


def test_data_from_a_subscriber_or_unknown_link_and_misplaced_reports_are_dropped() -> None:
    eng = engine_with(1)
    feed(eng, frame(0, 0, 100, key=True), 0.0, link=b"sub-0")
    feed(eng, frame(0, 0, 100, key=True), 0.0, link=b"nobody")
    eng.receive_packet(b"nobody", report(), 0.0)
    eng.receive_packet(b"sub-0", report(SID + 1), 0.0)
    eng.receive_packet(PUB, report(), 0.0)
    eng.receive_packet(b"sub-0", bytes([PT_KEEPALIVE]), 0.0)
    s = eng.stats()
    assert s["drops"] == {"not_publisher": 2, "report_not_subscriber": 3}
    assert s["keepalives_in"] == 1 and s["reports_in"] == 0


def test_a_track_fed_by_one_link_cannot_be_hijacked_and_keeps_its_kind() -> None:
    eng = engine_with(1)
    eng.add_publisher(b"pub2", SID, 0.0)
    feed(eng, frame(0, 0, 100, key=True), 0.0)
    feed(eng, frame(1, 0, 100), 0.0, link=b"pub2")
    feed(eng, frame(2, 0, 100, track=VIDEO, audio=True), 0.0)
    assert eng.stats()["drops"] == {"track_owned": 1, "kind_mismatch": 1}


def test_memoryview_and_bytearray_input_work() -> None:
    eng = engine_with(1)
    pkt = frame(0, 0, 100, key=True)[0]
    eng.receive_packet(PUB, bytearray(pkt), 0.0)
    eng.receive_packet(PUB, memoryview(pkt), 0.0)
    assert drain(eng, b"sub-0", 0.0) == [pkt, pkt]


def test_fragment_flood_to_a_subscriber_that_never_reads_stays_bounded() -> None:
    cfg = EngineConfig(max_queued_bytes=64 * 1024, max_queued_packets=512)
    eng = engine_with(2, config=cfg)
    rng = random.Random(1)
    for i in range(20_000):
        t = i * 1e-5
        seq = i // 4
        pkts = frame(seq, seq // 30, rng.randrange(40, 1400), key=seq % 30 == 0, disc=rng.random() < 0.3)
        feed(eng, pkts, t)
        if i % 50 == 0:
            drain(eng, b"sub-1", t)
            keep_alive(eng, [b"sub-0", b"sub-1"], t)
        if i % 97 == 0:
            _check_books(eng)
        sub = eng._subs[b"sub-0"]
        assert sub.qbytes <= cfg.max_queued_bytes and sub.qpkts <= cfg.max_queued_packets
    drops = eng.stats()["subscribers"][b"sub-0".hex()]["drops"]
    assert drops.get("cap_discardable", 0) > 0 and drops.get("cap_gop", 0) > 0
    # The reading subscriber was not harmed by its neighbour's overflow.
    assert eng.stats()["subscribers"][b"sub-1".hex()]["drops"] == {}


def test_link_vanishing_mid_frame_frees_everything() -> None:
    eng = engine_with(2)
    pkts = frame(0, 0, 5000, key=True, mdu=1000)
    feed(eng, pkts[:2], 0.0)
    eng.remove_link(b"sub-0", 0.01)
    assert b"sub-0".hex() not in eng.stats()["subscribers"]
    assert eng.stats()["drops"] == {"link_removed": 2}
    assert eng.next_packets(b"sub-0", 0.01) == [] and not eng.has_pending(b"sub-0")
    eng.remove_link(PUB, 0.02)  # publisher gone mid-frame
    feed(eng, pkts[2:], 0.03)
    assert eng.stats()["drops"]["not_publisher"] == len(pkts) - 2
    eng.remove_link(b"sub-1", 0.04)
    s = eng.stats()
    assert s["streams"] == 0 and s["subscribers"] == {}
    feed(eng, pkts, 0.05)
    assert eng.stats()["drops"]["unknown_stream"] == len(pkts)
    eng.remove_link(b"never-seen", 0.06)


def test_events_buffer_is_bounded_when_nobody_ticks() -> None:
    eng = engine_with(0)
    for i in range(3000):
        eng.add_subscriber(b"s%d" % i, i + 1000, BIG_MDU, 0.0)
    events = eng.tick(1.0)
    assert len(events) == 1024 and all(isinstance(e, SubscriberStalled) for e in events)
    assert eng.stats()["events_dropped"] == 3000 - len(events)


# ---------------------------------------------------------------- differential: engine parser vs wire


fields = st.tuples(
    st.integers(0, 0xFF),  # flags
    st.integers(0, 0xFF),  # track
    st.integers(0, 0xFF),  # priority
    st.integers(0, 2**32 - 1),  # frame_seq
    st.integers(0, 2**32 - 1),  # gop
    st.integers(0, 2**21),  # offset
    st.integers(0, 2**21),  # total
    st.integers(0, 2**64 - 1),  # kid
    st.integers(0, 600),  # payload length
)


@settings(max_examples=300, deadline=None)
@given(fields)
def test_engine_accepts_exactly_what_wire_decode_fragment_accepts(f) -> None:
    flags, track, prio, seq, gop, off, total, kid, n = f
    pkt = struct.pack(">BBQBBIIIIQ", 1, flags, SID, track, prio, seq, gop, off, total, kid) + b"\xab" * n
    try:
        decode_fragment(pkt)
        ok = True
    except MediaError:
        ok = False
    eng = engine_with(0)
    eng.add_subscriber(b"s", SID, BIG_MDU, 0.0)
    eng.receive_packet(PUB, pkt, 0.0)
    s = eng.stats()
    # A repair nobody asked for is well formed but not forwarded (loss recovery, test_nack_engine.py).
    unasked_repair = bool(flags & FLAG_RETRANSMISSION)
    assert s["fragments_in"] == (1 if ok and not unasked_repair else 0)
    if ok and unasked_repair:
        assert s["drops"] == {"repair_not_needed": 1}
    elif ok:
        out = drain(eng, b"s", 0.0)
        assert out in ([], [pkt])
        assert bool(out) == (bool(flags & FLAG_AUDIO) or bool(flags & FLAG_KEYFRAME))
    else:
        assert sum(s["drops"].values()) == 1


def test_queue_age_stats_follow_the_relay_clock() -> None:
    eng = engine_with(1)
    feed(eng, frame(0, 0, 100, key=True), 0.0)
    for seq in range(1, 11):
        feed(eng, frame(seq, 0, 100), 0.0)
    keep_alive(eng, [b"sub-0"], 0.0)
    for i in range(11):
        assert len(eng.next_packets(b"sub-0", i * 0.01, 1)) == 1
    age = eng.stats()["queue_age_ms"]
    assert age["samples"] == 11
    assert age["p50"] == pytest.approx(50.0)
    assert age["max"] == pytest.approx(100.0)


# ---------------------------------------------------------------- random operations keep the books straight


def _check_books(eng: ForwardingEngine) -> None:
    """Queue counters equal the queues' contents and stay inside the caps."""
    cfg = eng.config
    assert "internal_error" not in eng.stats()["drops"]
    for sub in eng._subs.values():
        items = [it for q in sub.queues for it in q]
        assert sub.qpkts == len(items)
        assert sub.qbytes == sum(len(it[1]) for it in items)
        assert sub.qbytes <= cfg.max_queued_bytes and sub.qpkts <= cfg.max_queued_packets
        assert all(len(it[1]) <= sub.mdu for it in items)
        if sub.stalled:
            assert not items


ops = st.lists(
    st.tuples(
        st.sampled_from(
            ["frame", "audio", "drain", "report", "loss", "tick", "join", "leave", "garbage", "wait"]
        ),
        st.integers(0, 3),  # subscriber index
        st.integers(0, 2**16),  # free parameter
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_random_operations_never_raise_and_keep_queues_consistent(script) -> None:
    cfg = EngineConfig(max_queued_bytes=12_000, max_queued_packets=40, max_subscribers_per_stream=3)
    eng = ForwardingEngine(cfg)
    eng.add_publisher(PUB, SID, 0.0)
    mdus = [SMALL_MDU, BIG_MDU, 100, 431]
    now = 0.0
    seq = 0
    for op, idx, arg in script:
        link = b"sub-%d" % idx
        if op == "frame":
            seq += 1
            feed(
                eng, frame(seq, arg % 7, 50 + arg % 3000, key=arg % 5 == 0, disc=arg % 3 == 0, mdu=1000), now
            )
        elif op == "audio":
            seq += 1
            feed(eng, audio_frame(seq, 20 + arg % 200), now)
        elif op == "drain":
            out = eng.next_packets(link, now, 1 + arg % 20)
            sub = eng._subs.get(link)
            assert all(len(p) <= sub.mdu for p in out) if sub else out == []
        elif op == "report":
            eng.receive_packet(link, report(), now)
        elif op == "loss":
            eng.receive_packet(link, report(SID, TrackReport(VIDEO, seq, arg % 4)), now)
        elif op == "tick":
            for ev in eng.tick(now):
                assert isinstance(ev, KeyframeRequested | SubscriberStalled | SubscriberResumed | NackUpstream)
        elif op == "join":
            try:
                eng.add_subscriber(link, SID, mdus[idx], now)
            except SubscriberLimitError:
                pass
        elif op == "leave":
            eng.remove_link(link if arg % 4 else PUB, now)
            if not arg % 4:
                eng.add_publisher(PUB, SID, now)
        elif op == "garbage":
            eng.receive_packet(link if arg % 2 else PUB, bytes([arg % 5]) + bytes(arg % 64), now)
        else:
            now += (arg % 400) / 1000
        _check_books(eng)
    eng.stats()


# ---------------------------------------------------------------- in-flight age from receiver reports


def test_media_stuck_in_the_path_skips_the_subscriber_to_the_next_keyframe() -> None:
    cfg = EngineConfig()
    eng = engine_with(2, config=cfg)
    fast, backed_up = b"sub-0", b"sub-1"
    t = 0.0
    seq = 0
    completed = {fast: -1, backed_up: -1}
    reset_at = None
    while t < 3.0:
        feed(eng, frame(seq, seq // 30, 1200, key=seq % 30 == 0), t)
        for link in (fast, backed_up):
            for h in headers(drain(eng, link, t)):
                # The backed-up subscriber's path delivers nothing after 0.5 s.
                if link == fast or t < 0.5:
                    completed[link] = max(completed[link], h.frame_seq)
        if round(t * 30) % 3 == 0:
            for link in (fast, backed_up):
                eng.receive_packet(link, report(SID, TrackReport(VIDEO, max(completed[link], 0))), t)
        eng.tick(t)
        if reset_at is None and eng.stats()["inflight_resets"]:
            reset_at = t
        seq += 1
        t = round(t + 1 / 30, 6)
    # Judged only once a frame has been unreported for max_inflight_age.
    assert (
        reset_at is not None and 0.5 + cfg.max_inflight_age <= reset_at <= 0.5 + cfg.max_inflight_age + 0.15
    )
    fast_stats = eng.stats()["subscribers"][fast.hex()]
    slow_stats = eng.stats()["subscribers"][backed_up.hex()]
    assert fast_stats["drops"] == {} and fast_stats["inflight_ms"] < 150
    assert slow_stats["drops"].get("await_keyframe", 0) > 0
    assert completed[fast] == seq - 1


def test_bare_liveness_reports_are_not_judged_for_in_flight_age() -> None:
    eng = engine_with(1)
    t = 0.0
    for seq in range(90):
        feed(eng, frame(seq, seq // 30, 500, key=seq % 30 == 0), t)
        drain(eng, b"sub-0", t)
        keep_alive(eng, [b"sub-0"], t)
        eng.tick(t)
        t += 1 / 30
    assert eng.stats()["inflight_resets"] == 0
    assert eng.stats()["drops"] == {}


def test_a_waiting_subscriber_does_not_spin_requests_for_a_track_nobody_feeds() -> None:
    eng = engine_with(1)
    feed(eng, frame(0, 0, 100), 0.0)  # delta first: sub-0 waits for a keyframe
    eng.remove_link(PUB, 0.0)
    t = 0.0
    while t < 1.0:
        keep_alive(eng, [b"sub-0"], t)
        assert eng.tick(t) == []
        t += 0.02
    kf = eng.stats()["keyframe_requests"]
    assert kf["sent"] == 0 and kf["no_publisher"] <= 1 and kf["pending"] == 0


def test_a_link_that_publishes_and_subscribes_never_gets_its_own_packets_back() -> None:
    eng = engine_with(1)
    eng.add_subscriber(PUB, SID, BIG_MDU, 0.0)
    pkts = frame(0, 0, 500, key=True)
    feed(eng, pkts, 0.0)
    assert drain(eng, PUB, 0.0) == []
    assert drain(eng, b"sub-0", 0.0) == pkts


def test_a_flood_on_one_stream_does_no_harm_to_another() -> None:
    cfg = EngineConfig(max_queued_bytes=32 * 1024, max_queued_packets=256)
    eng = engine_with(1, config=cfg)  # sub-0 on SID never reads
    other = SID + 1
    eng.add_publisher(b"pub-b", other, 0.0)
    eng.add_subscriber(b"viewer-b", other, SMALL_MDU, 0.0)
    sent_b: list[bytes] = []
    got_b: list[bytes] = []
    for seq in range(300):
        t = seq * 0.001
        feed(eng, frame(seq, seq // 30, 1400, key=seq % 30 == 0) * 5, t)  # every packet five times
        pkts = frame(seq, seq // 30, 900, key=seq % 30 == 0, sid=other, mdu=SMALL_MDU)
        sent_b += pkts
        feed(eng, pkts, t, link=b"pub-b")
        got_b += drain(eng, b"viewer-b", t)
    assert got_b == sent_b
    assert eng.stats()["subscribers"][b"viewer-b".hex()]["drops"] == {}
    assert eng.stats()["subscribers"][b"sub-0".hex()]["queued_bytes"] <= cfg.max_queued_bytes


def test_on_pending_fires_when_a_queue_becomes_non_empty() -> None:
    woken: list[bytes] = []
    eng = engine_with(2, on_pending=woken.append)
    feed(eng, frame(0, 0, 3000, key=True, mdu=1000), 0.0)
    assert sorted(woken) == [b"sub-0", b"sub-1"]  # once each, not once per packet
    drain(eng, b"sub-0", 0.0)
    feed(eng, frame(1, 0, 100), 0.01)
    assert woken[-1] == b"sub-0" and len(woken) == 3


def test_stats_show_each_subscriber_state_and_each_stream() -> None:
    eng = engine_with(2)
    feed(eng, frame(0, 4, 100, key=True), 0.0)
    feed(eng, audio_frame(0), 0.0)
    eng.add_subscriber(b"late", SID, BIG_MDU, 0.0)
    keep_alive(eng, [b"sub-0", b"late"], 0.35)
    eng.tick(0.35)
    s = eng.stats()
    states = {k: v["state"] for k, v in s["subscribers"].items()}
    assert states == {
        b"sub-0".hex(): "forwarding",
        b"sub-1".hex(): "stalled",
        b"late".hex(): "waiting_keyframe",
    }
    assert s["per_stream"][str(SID)] == {
        "publishers": 1,
        "subscribers": 3,
        "tracks": {
            str(VIDEO): {"audio": False, "fed": True, "gop": 4},
            str(AUDIO): {"audio": True, "fed": True, "gop": None},
        },
    }
    json.dumps(s)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"video_max_age": 0},
        {"stall_timeout": -1},
        {"max_queued_bytes": 0},
        {"discardable_max_age": 0.6, "video_max_age": 0.5},
        {"min_mdu": FRAG_HEADER_LEN},
    ],
)
def test_inconsistent_config_is_refused(kwargs) -> None:
    with pytest.raises(RelayError):
        EngineConfig(**kwargs)


def test_a_flooding_publisher_is_cut_at_its_ingress_rate_and_others_flow() -> None:
    cfg = EngineConfig(max_ingress_rate=200_000, max_ingress_burst=1 << 20)
    eng = engine_with(1, config=cfg)
    eng.add_publisher(b"pub-b", SID + 1, 0.0)
    eng.add_subscriber(b"viewer-b", SID + 1, BIG_MDU, 0.0)
    flood = frame(0, 0, 16000, key=True)
    honest_sent: list[bytes] = []
    honest_got: list[bytes] = []
    t = 0.0
    for step in range(1000):  # 10 s; the flood offers 1.6 MB/s, eight times its rate
        t = step * 0.01
        feed(eng, flood, t)
        pkts = frame(step, step // 30, 1000, key=step % 30 == 0, sid=SID + 1)
        feed(eng, pkts, t, link=b"pub-b")
        honest_sent += pkts
        honest_got += drain(eng, b"viewer-b", t)
        drain(eng, b"sub-0", t)
        keep_alive(eng, [b"sub-0"], t)
        eng.receive_packet(b"viewer-b", report(SID + 1), t)
    s = eng.stats()
    flood_accepted = s["bytes_in"] - sum(map(len, honest_sent))
    assert flood_accepted <= cfg.max_ingress_burst + cfg.max_ingress_rate * t
    assert flood_accepted >= cfg.max_ingress_rate * t * 0.9  # the rate is a rate, not a wall
    assert s["drops"] == {"ingress_rate": 1000 - flood_accepted // len(flood[0])}
    assert honest_got == honest_sent


def test_hooks_can_be_installed_after_construction() -> None:
    eng = engine_with(1)
    eng.set_frame_filter(lambda link, h, now: "old_epoch" if h.kid == 0x101 else None)
    feed(eng, frame(0, 0, 100, key=True), 0.0)
    assert eng.stats()["drops"] == {"old_epoch": 1}
    eng.set_frame_filter(None)
    feed(eng, frame(1, 1, 100, key=True), 0.0)
    assert len(drain(eng, b"sub-0", 0.0)) == 1
    eng.set_authorize_publish(lambda link, sid: False)
    with pytest.raises(PublishNotAuthorizedError):
        eng.add_publisher(b"other", SID, 0.0)
    eng.set_authorize_publish(None)
    eng.add_publisher(b"other", SID, 0.0)


def test_every_drop_reason_the_engine_counts_is_documented() -> None:
    import inspect
    import re

    from ciris_av_plugin.relay import egress, engine, engine_config, keyframes, repair

    # Every part of the engine that counts a drop or a refused NACK.
    source = "".join(inspect.getsource(m) for m in (engine, egress, keyframes, repair))
    # String literals passed to the drop helpers (calls may span lines and hold one level of
    # nested parentheses), plus reasons chosen into a variable first.
    call = r'(?:count_drop|drop_frame|drop_gop|purge|refuse)\((?:[^()"]|\([^()]*\))*"([a-z_]+)"'
    used = set(re.findall(call, source)) | set(re.findall(r'reason = "([a-z_]+)"', source))
    assert {"stale_gop", "cap_discardable", "ingress_rate", "age_gop", "stalled", "nack_congested"} <= used
    assert used <= set(engine_config.DROP_REASONS), used - set(engine_config.DROP_REASONS)


def test_losses_the_relay_caused_by_dropping_discardable_frames_ask_for_no_keyframe() -> None:
    cfg = EngineConfig()
    eng = engine_with(1, config=cfg)
    feed(eng, frame(0, 0, 100, key=True), 0.0)
    drain(eng, b"sub-0", 0.0)
    eng.tick(0.0)
    feed(eng, frame(1, 0, 100, disc=True), 0.0)
    feed(eng, frame(2, 0, 100, disc=True), 0.0)
    feed(eng, frame(3, 0, 100), 0.2)
    t = cfg.discardable_max_age + 0.01
    assert [h.frame_seq for h in headers(drain(eng, b"sub-0", t))] == [3]
    # The subscriber sees frames 1 and 2 missing: exactly what the relay dropped.
    eng.receive_packet(b"sub-0", report(SID, TrackReport(VIDEO, 3, 2)), t)
    assert eng.tick(t) == []
    assert eng.stats()["keyframe_requests"]["losses_excused"] == 1
    # A loss the relay did not cause still asks for one.
    eng.receive_packet(b"sub-0", report(SID, TrackReport(VIDEO, 5, 1)), t + 0.1)
    assert eng.tick(t + 0.1) == [KeyframeRequested(SID, VIDEO, PUB)]


def test_excused_losses_may_be_reported_in_parts_but_expire() -> None:
    cfg = EngineConfig()
    eng = engine_with(1, config=cfg)
    feed(eng, frame(0, 0, 100, key=True), 0.0)
    drain(eng, b"sub-0", 0.0)
    for seq in (1, 2, 3):
        feed(eng, frame(seq, 0, 100, disc=True), 0.0)
    t = cfg.discardable_max_age + 0.01
    assert drain(eng, b"sub-0", t) == []
    eng.receive_packet(b"sub-0", report(SID, TrackReport(VIDEO, 0, 1)), t)
    eng.receive_packet(b"sub-0", report(SID, TrackReport(VIDEO, 0, 1)), t + 0.1)
    assert eng.tick(t + 0.1) == []
    # The third excuse is stale by now: a loss reported this late is treated as a real one.
    eng.receive_packet(b"sub-0", report(SID, TrackReport(VIDEO, 0, 1)), t + 1.2)
    assert eng.tick(t + 1.2) == [KeyframeRequested(SID, VIDEO, PUB)]
    assert eng.stats()["keyframe_requests"]["losses_excused"] == 2


@pytest.mark.parametrize("bad", [-1, 1 << 64, "7", 1.5])
def test_stream_ids_must_be_u64(bad) -> None:
    eng = ForwardingEngine()
    with pytest.raises(RelayError):
        eng.add_publisher(PUB, bad, 0.0)
    with pytest.raises(RelayError):
        eng.add_subscriber(b"s", bad, BIG_MDU, 0.0)
    assert eng.stats()["streams"] == 0 and eng.stats()["subscribers"] == {}


def test_a_reconnected_publisher_restarting_its_numbering_resumes_at_its_first_keyframe() -> None:
    eng = engine_with(1)
    for seq in range(100):
        feed(eng, frame(seq, 500 + seq // 30, 200, key=seq % 30 == 0), seq / 30)
        drain(eng, b"sub-0", seq / 30)
    eng.remove_link(PUB, 3.4)  # link lost mid-group
    eng.add_publisher(b"pub-again", SID, 3.5)
    t = 3.5
    feed(eng, frame(0, 0, 200), t, link=b"pub-again")  # a delta first: not decodable here
    feed(eng, frame(1, 1, 200, key=True), t, link=b"pub-again")  # gop 1 < 500: numbering restarted
    feed(eng, frame(2, 1, 200), t, link=b"pub-again")
    keep_alive(eng, [b"sub-0"], t)
    assert [h.frame_seq for h in headers(drain(eng, b"sub-0", t))] == [1, 2]
    assert eng.stats()["drops"] == {"await_keyframe": 1}
