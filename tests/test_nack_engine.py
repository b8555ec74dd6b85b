"""Loss recovery inside the relay engine: answering subscribers' NACKs, NACKing the publisher.

Helpers come from tests/test_relay_engine.py (frames cut with ``wire.split``, a fake clock).
"""

from __future__ import annotations

from support_relay_engine import (
    AUDIO,
    PUB,
    SID,
    SMALL_MDU,
    VIDEO,
    audio_frame,
    drain,
    engine_with,
    feed,
    frame,
    keep_alive,
    reassemble,
)

from ciris_av_plugin.media.nack import NACK_REORDER_GUARD_S
from ciris_av_plugin.protocol.media_wire import FLAG_RETRANSMISSION, decode_fragment
from ciris_av_plugin.protocol.nack import NACK_TO_END, Nack, NackRange, decode_nack, encode_nack
from ciris_av_plugin.relay.engine_config import DROP_REASONS, EngineConfig
from ciris_av_plugin.relay.events import KeyframeRequested, NackUpstream

SUB = b"sub-0"


def nack(*ranges: tuple[int, int, int, int], sid: int = SID) -> bytes:
    return encode_nack(Nack(sid, tuple(NackRange(*r) for r in ranges)))


def test_a_subscriber_nack_is_answered_from_the_ring_with_the_retransmission_flag() -> None:
    eng = engine_with(1, mdu=SMALL_MDU)
    pkts = frame(0, 0, 3000, key=True)
    feed(eng, pkts, 0.0)
    sent = drain(eng, SUB, 0.0)
    lost = sent[3]
    h = decode_fragment(lost)[0]
    eng.receive_packet(SUB, nack((VIDEO, 0, h.offset, h.offset + 10)), 0.05)
    repair = drain(eng, SUB, 0.05)
    assert len(repair) == 1
    rh, chunk = decode_fragment(repair[0])
    assert (
        rh.flags & FLAG_RETRANSMISSION
        and rh.offset == h.offset
        and bytes(chunk) == bytes(decode_fragment(lost)[1])
    )
    assert reassemble(sent[:3] + sent[4:] + repair)[(VIDEO, 0)] == reassemble(sent)[(VIDEO, 0)]
    s = eng.stats()
    assert s["retransmit"]["nacks_in"] == 1 and s["retransmit"]["packets_retransmitted"] == 1
    assert s["subscribers"][SUB.hex()]["retransmitted"] == 1


def test_repairs_jump_the_queue_within_their_priority_class() -> None:
    eng = engine_with(1)
    feed(eng, frame(0, 0, 500, key=True), 0.0)
    feed(eng, audio_frame(0), 0.0)
    drain(eng, SUB, 0.0)
    feed(eng, frame(1, 0, 500), 0.01)
    feed(eng, audio_frame(1), 0.01)
    eng.receive_packet(SUB, nack((VIDEO, 0, 0, NACK_TO_END), (AUDIO, 0, 0, NACK_TO_END)), 0.01)
    order = [
        (h.track_id, h.frame_seq, bool(h.flags & FLAG_RETRANSMISSION))
        for h in (decode_fragment(p)[0] for p in drain(eng, SUB, 0.01))
    ]
    # Audio first (the repair before the new frame), then the keyframe class, then the rest.
    assert order == [(AUDIO, 0, True), (AUDIO, 1, False), (VIDEO, 0, True), (VIDEO, 1, False)]


def test_repairs_respect_the_subscribers_queue_age_bound() -> None:
    cfg = EngineConfig()
    eng = engine_with(1, config=cfg)
    feed(eng, frame(0, 0, 500, key=True), 0.0)
    drain(eng, SUB, 0.0)
    keep_alive(eng, [SUB], cfg.video_max_age)
    eng.receive_packet(SUB, nack((VIDEO, 0, 0, NACK_TO_END)), cfg.video_max_age)
    assert drain(eng, SUB, cfg.video_max_age) == []
    s = eng.stats()
    assert s["drops"] == {"nack_expired": 1}
    sub = s["subscribers"][SUB.hex()]
    assert sub["nack_refused"] == {"nack_expired": 1} and sub["drops"] == {}  # no media was dropped


def test_bad_nacks_are_counted_drops_never_exceptions() -> None:
    eng = engine_with(2)
    eng.add_publisher(b"pub-other", SID + 1, 0.0)
    eng.add_subscriber(b"sub-other", SID + 1, 16303, 0.0)
    feed(eng, frame(5, 0, 500, key=True), 0.0)
    good = nack((VIDEO, 5, 0, NACK_TO_END))
    eng.receive_packet(b"stranger", good, 0.0)  # not a subscriber
    eng.receive_packet(PUB, good, 0.0)  # a publisher is not a subscriber either
    eng.receive_packet(b"sub-other", good, 0.0)  # subscribed, but to another stream
    eng.receive_packet(SUB, good[:-1], 0.0)  # truncated
    eng.receive_packet(SUB, nack((VIDEO, 900, 0, NACK_TO_END)), 0.0)  # never sent
    eng.receive_packet(SUB, nack((7, 5, 0, NACK_TO_END)), 0.0)  # no such track
    drops = eng.stats()["drops"]
    assert drops == {
        "nack_not_subscriber": 2,
        "nack_other_stream": 1,
        "bad_nack": 1,
        "nack_never_sent": 1,
        "nack_unknown_track": 1,
    }
    assert set(drops) <= set(DROP_REASONS)


def test_a_nack_flood_is_cut_per_link() -> None:
    eng = engine_with(2)
    feed(eng, frame(0, 0, 500, key=True), 0.0)
    drain(eng, SUB, 0.0)
    drain(eng, b"sub-1", 0.0)
    for _ in range(500):
        eng.receive_packet(SUB, nack((VIDEO, 0, 0, NACK_TO_END)), 0.001)
    s = eng.stats()
    assert s["drops"]["nack_rate"] >= 450
    assert s["retransmit"]["packets_retransmitted"] <= 40
    eng.receive_packet(b"sub-1", nack((VIDEO, 0, 0, NACK_TO_END)), 0.001)
    assert len(drain(eng, b"sub-1", 0.001)) == 1  # the other link is unaffected


def test_a_subscriber_waiting_for_a_keyframe_or_stalled_gets_no_repairs() -> None:
    cfg = EngineConfig()
    eng = engine_with(1, config=cfg)
    feed(eng, frame(0, 0, 500, key=True), 0.0)
    drain(eng, SUB, 0.0)
    eng.add_subscriber(b"late", SID, 16303, 0.0)  # waits for the next keyframe
    eng.receive_packet(b"late", nack((VIDEO, 0, 0, NACK_TO_END)), 0.01)
    eng.tick(cfg.stall_timeout + 0.1)  # SUB stalls: it sent no report
    eng.receive_packet(SUB, nack((VIDEO, 0, 0, NACK_TO_END)), cfg.stall_timeout + 0.1)
    assert eng.stats()["drops"].get("nack_refused") == 1
    assert eng.stats()["drops"].get("nack_stalled") == 1


def test_fragments_lost_on_the_publisher_hop_are_nacked_upstream_and_repaired_for_everyone() -> None:
    eng = engine_with(2, mdu=SMALL_MDU)
    feed(eng, frame(0, 0, 500, key=True), 0.0)
    pkts = frame(1, 0, 3000, mdu=SMALL_MDU)
    feed(eng, pkts[:2] + pkts[3:], 0.01)  # the third fragment lost on the way in
    assert [e for e in eng.tick(0.01 + NACK_REORDER_GUARD_S / 2) if isinstance(e, NackUpstream)] == []
    feed(eng, frame(2, 0, 500), 0.02)
    events = [e for e in eng.tick(0.01 + NACK_REORDER_GUARD_S) if isinstance(e, NackUpstream)]
    assert len(events) == 1 and events[0].link_id == PUB and events[0].stream_id == SID
    h = decode_fragment(pkts[2])[0]
    assert [(r.track_id, r.frame_seq, r.start) for r in decode_nack(events[0].packet).ranges] == [
        (VIDEO, 1, h.offset)
    ]
    repaired = bytearray(pkts[2])
    repaired[1] |= FLAG_RETRANSMISSION
    feed(eng, [bytes(repaired)], 0.04)
    for link in (SUB, b"sub-1"):
        assert (VIDEO, 1) in reassemble(drain(eng, link, 0.04))
    assert eng.stats()["retransmit"]["upstream"]["recovered"] == 1


def test_an_unrepaired_upstream_loss_falls_back_to_one_keyframe_request() -> None:
    cfg = EngineConfig(nack_deadline=0.2)
    eng = engine_with(1, config=cfg)
    feed(eng, frame(0, 0, 500, key=True), 0.0)
    feed(eng, frame(2, 0, 500), 0.01)  # frame 1 lost whole
    t = 0.0
    nacks = kf = 0
    while t < 1.0:
        keep_alive(eng, [SUB], t)
        for e in eng.tick(t):
            nacks += isinstance(e, NackUpstream)
            kf += isinstance(e, KeyframeRequested)
        t = round(t + 0.005, 3)
    assert 2 <= nacks <= 5 and kf == 1
    assert eng.stats()["retransmit"]["upstream"]["gave_up"] == 1


def test_retransmission_off_keeps_no_ring_and_refuses_nacks() -> None:
    eng = engine_with(1, config=EngineConfig(retransmit=False))
    feed(eng, frame(0, 0, 500, key=True), 0.0)
    feed(eng, frame(2, 0, 500), 0.01)
    eng.receive_packet(SUB, nack((VIDEO, 0, 0, NACK_TO_END)), 0.01)
    assert not [e for e in eng.tick(0.5) if isinstance(e, NackUpstream)]
    s = eng.stats()
    assert s["drops"]["nack_unsupported"] == 1 and s["retransmit"]["ring_bytes"] == 0


def test_the_ring_stays_bounded_under_a_long_stream() -> None:
    eng = engine_with(1)
    t = 0.0
    for seq in range(3000):  # 100 s at 30 fps, 10 kB frames
        feed(eng, frame(seq, seq // 30, 10_000, key=seq % 30 == 0), t)
        drain(eng, SUB, t)
        keep_alive(eng, [SUB], t)
        t += 1 / 30
    assert eng.stats()["retransmit"]["ring_bytes"] <= 10_100 * 32  # ~1 s of frames


def test_a_congested_subscriber_gets_no_repairs() -> None:
    cfg = EngineConfig(max_queued_bytes=20_000)
    eng = engine_with(1, config=cfg)
    feed(eng, frame(0, 0, 500, key=True), 0.0)
    drain(eng, SUB, 0.0)
    for seq in range(1, 7):
        feed(eng, frame(seq, 0, 2000), 0.001)  # 12 kB queued, more than half the cap
    eng.receive_packet(SUB, nack((VIDEO, 0, 0, NACK_TO_END)), 0.002)
    assert eng.stats()["subscribers"][SUB.hex()]["nack_refused"] == {"nack_congested": 1}


def test_fragments_the_relay_refused_on_purpose_are_not_nacked_upstream() -> None:
    eng = engine_with(1)
    eng.set_frame_filter(lambda _link, h, _now: "old_epoch" if h.frame_seq == 1 else None)
    feed(eng, frame(0, 0, 500, key=True), 0.0)
    feed(eng, frame(1, 0, 500), 0.01)
    feed(eng, frame(2, 0, 500), 0.02)
    assert not [e for e in eng.tick(0.5) if isinstance(e, NackUpstream)]
    assert eng.stats()["drops"]["old_epoch"] == 1


def test_frames_from_before_a_subscriber_joined_or_resumed_are_not_resent() -> None:
    cfg = EngineConfig()
    eng = engine_with(1, config=cfg)
    feed(eng, frame(0, 0, 500, key=True), 0.0)
    feed(eng, audio_frame(0), 0.0)
    drain(eng, SUB, 0.0)
    eng.add_subscriber(b"late", SID, 16303, 0.05)  # joins after frame 0 went by
    feed(eng, frame(30, 1, 500, key=True), 0.1)
    feed(eng, audio_frame(1), 0.1)
    keep_alive(eng, [SUB, b"late"], 0.1)
    drain(eng, b"late", 0.1)
    eng.receive_packet(b"late", nack((VIDEO, 0, 0, NACK_TO_END), (AUDIO, 0, 0, NACK_TO_END)), 0.11)
    assert drain(eng, b"late", 0.11) == []
    assert eng.stats()["subscribers"][b"late".hex()]["nack_refused"] == {"nack_before_start": 2}
    # A subscriber back from a stall does not get what went by meanwhile either.
    eng.tick(0.1 + cfg.stall_timeout + 0.01)  # SUB stalls (its last report was at 0.1)
    feed(eng, audio_frame(2), 0.5)
    keep_alive(eng, [SUB], 0.6)  # resumes
    eng.receive_packet(SUB, nack((AUDIO, 2, 0, NACK_TO_END)), 0.61)
    assert eng.stats()["subscribers"][SUB.hex()]["nack_refused"] == {"nack_before_start": 1}


def test_a_repair_the_relay_did_not_need_is_not_fanned_out() -> None:
    eng = engine_with(2)
    pkts = frame(0, 0, 500, key=True)
    feed(eng, pkts, 0.0)
    drain(eng, SUB, 0.0)
    drain(eng, b"sub-1", 0.0)
    repaired = bytearray(pkts[0])
    repaired[1] |= FLAG_RETRANSMISSION
    feed(eng, [bytes(repaired)], 0.01)
    assert drain(eng, SUB, 0.01) == [] and drain(eng, b"sub-1", 0.01) == []
    assert eng.stats()["drops"] == {"repair_not_needed": 1}
