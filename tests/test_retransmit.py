"""The retransmission ring and NACK responder (media/retransmit.py), shared by publisher and relay."""

from __future__ import annotations

import pytest

from ciris_av_plugin.media.reassembly import FrameComplete, Reassembler
from ciris_av_plugin.media.retransmit import (
    MAX_SCAN_PER_NACK,
    NACK_BURST,
    NACK_BYTES,
    NACK_EXPIRED,
    NACK_MISSING,
    NACK_NEVER_SENT,
    NACK_RATE,
    NACK_REFUSED,
    NACK_UNKNOWN_TRACK,
    NACK_WORK,
    NackResponder,
    RetransmitRing,
    as_retransmission,
)
from ciris_av_plugin.protocol.media_wire import (
    FLAG_AUDIO,
    FLAG_KEYFRAME,
    FLAG_RETRANSMISSION,
    FragmentHeader,
    decode_fragment,
    split,
)
from ciris_av_plugin.protocol.nack import MAX_NACK_RANGES, NACK_TO_END, Nack, NackRange

SID = 0xAB
VIDEO, AUDIO = 1, 0
BIG = 16303
LINK = b"link"


def frame(
    seq: int, size: int, mdu: int = BIG, *, key: bool = False, audio: bool = False
) -> tuple[bytes, list[bytes]]:
    flags = (FLAG_KEYFRAME if key else 0) | (FLAG_AUDIO if audio else 0)
    data = bytes((seq + i) & 0xFF for i in range(size))
    header = FragmentHeader(SID, AUDIO if audio else VIDEO, seq, 0, 0, size, kid=3, flags=flags)
    return data, split(header, data, mdu)


def ring_with(
    frames: range, size: int = 1000, mdu: int = BIG, t0: float = 0.0, dt: float = 0.01
) -> RetransmitRing:
    ring = RetransmitRing()
    for i, seq in enumerate(frames):
        for p in frame(seq, size, mdu)[1]:
            ring.add(seq, p, t0 + i * dt)
    return ring


def answer(resp: NackResponder, ring: RetransmitRing, ranges, now: float = 0.5, mdu: int = BIG, **kw):
    return resp.answer(LINK, Nack(SID, tuple(ranges)), {VIDEO: ring}.get, now, mdu, lambda _f: 1.0, **kw)


# ---------------------------------------------------------------- ring


def test_the_ring_is_bounded_by_age() -> None:
    ring = ring_with(range(300), dt=0.01)  # 3 s of frames
    assert ring.lookup(0, 0, 1, 3.0, 10.0) == NACK_EXPIRED
    assert isinstance(ring.lookup(299, 0, 1, 3.0, 10.0), tuple)
    assert len(ring) <= 101


def test_the_ring_is_bounded_by_bytes() -> None:
    ring = RetransmitRing(max_bytes=50_000)
    for seq in range(200):
        for p in frame(seq, 1000)[1]:
            ring.add(seq, p, 0.0)
        assert ring.bytes <= 50_000
    assert ring.lookup(0, 0, 1, 0.0, 1.0) == NACK_EXPIRED


def test_lookups_tell_never_sent_from_expired_from_missing() -> None:
    ring = ring_with(range(10, 20))
    assert ring.lookup(25, 0, 1, 0.2, 1.0) == NACK_NEVER_SENT
    assert RetransmitRing().lookup(1, 0, 1, 0.0, 1.0) == NACK_NEVER_SENT
    assert ring.lookup(5, 0, 1, 0.2, 1.0) == NACK_EXPIRED
    ring.add(22, frame(22, 100)[1][0], 0.2)  # 21 never arrived here
    assert ring.lookup(21, 0, 1, 0.2, 1.0) == NACK_MISSING
    assert ring.lookup(12, 0, 1, 0.2, 0.01) == NACK_EXPIRED  # older than the caller's bound


def test_lookup_returns_exactly_the_packets_overlapping_the_range() -> None:
    ring = RetransmitRing()
    _, pkts = frame(1, 2000, mdu=431)
    for p in pkts:
        ring.add(1, p, 0.0)
    t, got = ring.lookup(1, 400, 800, 0.0, 1.0)
    offsets = [decode_fragment(p)[0].offset for p in got]
    assert offsets == [395, 790]


def test_as_retransmission_sets_only_the_flag() -> None:
    p = frame(1, 100)[1][0]
    r = as_retransmission(p)
    h, chunk = decode_fragment(r)
    h0, chunk0 = decode_fragment(p)
    assert h.flags == h0.flags | FLAG_RETRANSMISSION and bytes(chunk) == bytes(chunk0) and len(r) == len(p)


# ---------------------------------------------------------------- responder


def test_a_nacked_range_is_answered_and_reassembles_with_what_arrived() -> None:
    data, pkts = frame(7, 3000, mdu=431)
    ring = RetransmitRing()
    for p in pkts:
        ring.add(7, p, 0.0)
    lost = {2, 5}
    reasm = Reassembler()
    for i, p in enumerate(pkts):
        if i not in lost:
            h, c = decode_fragment(p)
            assert reasm.add(h, c, 0.0) == []
    ranges = [
        NackRange(VIDEO, 7, decode_fragment(pkts[i])[0].offset, decode_fragment(pkts[i])[0].offset + 395)
        for i in sorted(lost)
    ]
    repairs = answer(NackResponder(), ring, ranges, now=0.1)
    assert [r.frame_seq for r in repairs] == [7, 7]
    events = []
    for r in repairs:
        assert r.flags & FLAG_RETRANSMISSION
        h, c = decode_fragment(r.packet)
        events += reasm.add(h, c, 0.1)
    assert isinstance(events[-1], FrameComplete) and events[-1].data == data


def test_a_whole_frame_nack_is_resplit_for_a_smaller_mdu() -> None:
    data, pkts = frame(3, 5000)  # one big packet upstream
    ring = RetransmitRing()
    ring.add(3, pkts[0], 0.0)
    repairs = answer(NackResponder(), ring, [NackRange(VIDEO, 3, 0, NACK_TO_END)], mdu=431)
    assert len(repairs) == 13 and all(len(r.packet) <= 431 for r in repairs)
    reasm = Reassembler()
    events = []
    for r in repairs:
        events += reasm.add(*decode_fragment(r.packet), 0.0)
    assert events[-1].data == data
    # A partial range gets only the pieces that overlap it.
    part = answer(NackResponder(), ring, [NackRange(VIDEO, 3, 1000, 1100)], mdu=431)
    assert [decode_fragment(r.packet)[0].offset for r in part] == [790]


def test_audio_then_keyframes_then_the_rest() -> None:
    rings = {VIDEO: RetransmitRing(), AUDIO: RetransmitRing()}
    for seq, key in ((1, False), (2, True)):
        for p in frame(seq, 500, key=key)[1]:
            rings[VIDEO].add(seq, p, 0.0)
    for p in frame(9, 80, audio=True)[1]:
        rings[AUDIO].add(9, p, 0.0)
    nack = Nack(
        SID,
        (
            NackRange(VIDEO, 1, 0, NACK_TO_END),
            NackRange(VIDEO, 2, 0, NACK_TO_END),
            NackRange(AUDIO, 9, 0, NACK_TO_END),
        ),
    )
    repairs = NackResponder().answer(LINK, nack, rings.get, 0.1, BIG, lambda _f: 1.0)
    assert [(r.track_id, r.frame_seq) for r in repairs] == [(AUDIO, 9), (VIDEO, 2), (VIDEO, 1)]


def test_bad_nacks_are_counted_refusals_with_bounded_work() -> None:
    ring = ring_with(range(100, 110), size=300)
    resp = NackResponder()
    refused: list[str] = []
    ranges = [
        NackRange(VIDEO, 500, 0, NACK_TO_END),  # never sent
        NackRange(VIDEO, 10, 0, NACK_TO_END),  # older than the ring
        NackRange(9, 101, 0, NACK_TO_END),  # a track this sender does not have
        NackRange(VIDEO, 103, 0, NACK_TO_END),  # vetoed by the caller
        NackRange(VIDEO, 104, 5000, 6000),  # bytes past what the frame has
    ]
    out = answer(resp, ring, ranges, now=0.2, allow=lambda _t, seq: seq != 103, refused=refused.append)
    assert out == []
    assert refused == [NACK_NEVER_SENT, NACK_EXPIRED, NACK_UNKNOWN_TRACK, NACK_REFUSED, NACK_MISSING]
    assert all(resp.counters[r] == 1 for r in refused)


def test_media_older_than_the_receivers_age_bound_is_not_resent() -> None:
    ring = ring_with(range(1, 3))
    refused: list[str] = []
    out = NackResponder().answer(
        LINK,
        Nack(SID, (NackRange(VIDEO, 1, 0, 10),)),
        {VIDEO: ring}.get,
        0.6,
        BIG,
        lambda _f: 0.4,
        refused=refused.append,
    )
    assert out == [] and refused == [NACK_EXPIRED]


def test_nack_floods_are_rate_limited_per_link() -> None:
    resp = NackResponder()
    admitted = sum(resp.admit(LINK, 0.0) for _ in range(1000))
    assert admitted == int(NACK_BURST) and resp.counters[NACK_RATE] == 1000 - admitted
    assert resp.admit(b"other link", 0.0)  # another link has its own bucket
    assert resp.admit(LINK, 1.0)  # refills with time


def test_retransmitted_bytes_are_budgeted_per_link() -> None:
    ring = RetransmitRing(max_bytes=10 << 20)
    for seq in range(100):
        for p in frame(seq, 10_000)[1]:
            ring.add(seq, p, 0.0)
    resp = NackResponder()
    total = 0
    for start in range(0, 100, MAX_NACK_RANGES):
        ranges = [
            NackRange(VIDEO, s, 0, NACK_TO_END) for s in range(start, min(100, start + MAX_NACK_RANGES))
        ]
        total += sum(len(r.packet) for r in answer(resp, ring, ranges, now=0.1))
    assert total <= resp.byte_burst + 0.1 * resp.byte_rate
    assert resp.counters[NACK_BYTES] > 0


def test_work_per_nack_is_bounded_whatever_the_ranges_name() -> None:
    ring = RetransmitRing()
    _, pkts = frame(1, 1 << 20, mdu=431)  # a maximum-size frame: ~2,650 packets
    for p in pkts:
        ring.add(1, p, 0.0)
    resp = NackResponder(byte_burst=1e12, byte_rate=1e12)
    ranges = [NackRange(VIDEO, 1, (1 << 20) - 10 - i, (1 << 20) - i) for i in range(MAX_NACK_RANGES)]
    answer(resp, ring, ranges, now=0.1)
    assert resp.counters[NACK_WORK] == MAX_NACK_RANGES - 1  # one frame's scan spends the budget
    assert len(pkts) > MAX_SCAN_PER_NACK


@pytest.mark.parametrize("mdu", [431, 1119, BIG])
def test_two_ranges_over_one_packet_resend_it_once(mdu: int) -> None:
    ring = ring_with(range(1, 2), size=300)
    out = answer(NackResponder(), ring, [NackRange(VIDEO, 1, 0, 10), NackRange(VIDEO, 1, 20, 30)], mdu=mdu)
    assert len(out) == 1
