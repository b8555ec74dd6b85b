"""Reassembly: order, duplicates, conflicts, lying lengths, limits, floods, deadline, re-split."""

import os
import random

import pytest

from ciris_av_plugin.media.errors import ReassemblyError
from ciris_av_plugin.media.reassembly import (
    MAX_BUFFERED_BYTES,
    MAX_PENDING_FRAMES,
    REASSEMBLY_DEADLINE_S,
    FrameAbandoned,
    FrameComplete,
    Reassembler,
)
from ciris_av_plugin.protocol import media_wire as wire
from ciris_av_plugin.protocol.media_wire import FragmentHeader, decode_fragment, split


def hdr(total, seq=1, stream=7, track=1, kid=0x105, offset=0):
    return FragmentHeader(
        stream_id=stream, track_id=track, frame_seq=seq, gop_id=0, offset=offset, total_len=total, kid=kid
    )


def packets_of(data, mdu, **kw):
    return split(hdr(len(data), **kw), data, mdu)


def feed(r, packets, now=0.0):
    events = []
    for p in packets:
        h, chunk = decode_fragment(p)
        events += r.add(h, chunk, now)
    return events


def completes(events):
    return [e for e in events if isinstance(e, FrameComplete)]


def test_in_order_and_shuffled_reassemble_exactly():
    data = os.urandom(10_000)
    for seed in range(5):
        pkts = packets_of(data, 431)
        random.Random(seed).shuffle(pkts)
        r = Reassembler()
        done = completes(feed(r, pkts))
        assert len(done) == 1 and done[0].data == data
        assert done[0].header.offset == 0 and done[0].header.total_len == len(data)
        assert len(r) == 0 and r.buffered_bytes == 0


def test_single_packet_frame_fast_path():
    r = Reassembler()
    done = completes(feed(r, packets_of(b"abc", 1000)))
    assert [d.data for d in done] == [b"abc"]
    assert feed(r, packets_of(b"abc", 1000)) == []  # straggler duplicate is ignored
    assert r.counters["duplicate"] == 1


def test_duplicates_tolerated_and_counted():
    data = os.urandom(3000)
    pkts = packets_of(data, 500)
    r = Reassembler()
    events = feed(r, pkts[:3] + pkts[:3] + pkts[3:])
    assert [d.data for d in completes(events)] == [data]
    assert r.counters["duplicate"] == 3
    assert feed(r, pkts[1:2]) == []  # after completion: a duplicate, not a new frame
    assert len(r) == 0


def test_overlapping_identical_bytes_accepted_conflicting_refused():
    data = bytes(range(256)) * 8
    r = Reassembler()
    h = hdr(len(data))
    assert r.add(h.with_range(0), data[0:1000], 0.0) == []
    assert r.add(h.with_range(500), data[500:1500], 0.0) == []  # overlaps identically, adds 1000..1500
    before = (r.buffered_bytes, len(r))
    bad = bytearray(data[1200:1800])
    bad[10] ^= 0xFF
    with pytest.raises(ReassemblyError):
        r.add(h.with_range(1200), bytes(bad), 0.0)
    assert (r.buffered_bytes, len(r)) == before  # the refused fragment changed nothing
    done = completes(r.add(h.with_range(1500), data[1500:], 0.0))
    assert [d.data for d in done] == [data]


def test_fragment_inside_a_gap_between_two_pieces():
    data = os.urandom(900)
    r = Reassembler()
    h = hdr(900)
    r.add(h.with_range(0), data[:300], 0.0)
    r.add(h.with_range(600), data[600:], 0.0)
    done = completes(r.add(h.with_range(100), data[100:800], 0.0))
    assert [d.data for d in done] == [data]


def test_lying_total_len_and_kid_are_typed_errors():
    r = Reassembler()
    r.add(hdr(1000), b"x" * 100, 0.0)
    with pytest.raises(ReassemblyError):
        r.add(hdr(2000, offset=100), b"y" * 100, 0.0)
    with pytest.raises(ReassemblyError):
        r.add(hdr(1000, offset=100, kid=0x999), b"y" * 100, 0.0)
    assert len(r) == 1 and r.buffered_bytes > 0


@pytest.mark.parametrize(
    "total,offset,size",
    [(0, 0, 1), (wire.MAX_FRAME_SIZE + 1, 0, 10), (100, 95, 10), (100, 0, 0)],
)
def test_out_of_range_refused(total, offset, size):
    r = Reassembler()
    with pytest.raises(ReassemblyError):
        r.add(hdr(total, offset=offset), b"z" * size, 0.0)
    assert len(r) == 0 and r.buffered_bytes == 0


def test_oversized_frame_from_the_wire_is_refused_at_decode():
    packet = hdr(wire.MAX_FRAME_SIZE + 1).encode() + b"q"
    with pytest.raises(wire.FragmentError):
        decode_fragment(packet)


def test_deadline_drops_incomplete_frames():
    r = Reassembler()
    data = os.urandom(2000)
    pkts = packets_of(data, 500)
    feed(r, pkts[:-1], now=5.0)
    assert r.expire(5.0 + REASSEMBLY_DEADLINE_S - 0.001) == []
    gone = r.expire(5.0 + REASSEMBLY_DEADLINE_S)
    assert len(gone) == 1 and gone[0].reason == "deadline" and gone[0].total_len == 2000
    assert r.buffered_bytes == 0 and r.counters["deadline"] == 1
    # The last fragment arrives after the deadline: a late straggler, not a new partial frame.
    assert feed(r, pkts[-1:], now=6.5) == []
    assert len(r) == 0 and r.counters["late"] == 1


def test_flood_of_never_completing_frames_stays_bounded():
    r = Reassembler()
    rng = random.Random(1)
    evicted = 0
    for i in range(3000):
        total = rng.choice([wire.MAX_FRAME_SIZE, 50_000, 2_000])
        size = rng.randint(1, 1500)
        off = rng.randint(0, total - size)
        events = r.add(
            hdr(total, seq=i, stream=rng.randint(0, 5), offset=off), os.urandom(size), now=i * 1e-4
        )
        evicted += sum(isinstance(e, FrameAbandoned) for e in events)
        assert r.buffered_bytes <= MAX_BUFFERED_BYTES
        assert len(r) <= MAX_PENDING_FRAMES
        for sid in range(6):
            assert r.stream_bytes(sid) <= r.max_bytes_per_stream
    assert evicted > 0 and r.counters["evicted"] == evicted


def test_one_byte_fragment_flood_of_one_huge_frame_is_bounded():
    r = Reassembler(max_bytes=200_000, max_bytes_per_stream=100_000)
    r.add(hdr(5000, stream=9), b"b" * 100, now=0.0)  # another stream's frame in progress
    total = wire.MAX_FRAME_SIZE
    for i in range(0, 20_000, 2):  # every other byte: never completes, never merges
        r.add(hdr(total, offset=i), b"a", now=0.0)
        assert r.buffered_bytes <= 100_000 + r.stream_bytes(9)
        assert r.stream_bytes(7) <= 100_000
    assert r.counters["evicted"] == 1  # the flooded frame, given up once; later pieces are late
    assert r.stream_bytes(9) > 0  # the other stream's frame was never touched


def test_per_stream_frame_count_bound():
    r = Reassembler(max_frames_per_stream=4)
    for seq in range(10):
        events = r.add(hdr(1000, seq=seq), b"x", now=seq * 0.001)
        assert len(r) <= 4
        if seq >= 4:
            assert [e.key[2] for e in events] == [seq - 4]  # the oldest goes first


def test_flood_on_one_stream_does_not_evict_another_streams_frame():
    r = Reassembler()
    good = os.urandom(5000)
    good_pkts = packets_of(good, 1000, stream=1, seq=1)
    feed(r, good_pkts[:2])
    for i in range(500):
        r.add(hdr(50_000, seq=i, stream=2), os.urandom(1000), now=0.0)
    done = completes(feed(r, good_pkts[2:]))
    assert [d.data for d in done] == [good]


def test_resplit_for_smaller_mdu_reassembles_identically():
    data = os.urandom(20_000)
    upstream = packets_of(data, 16_303)
    downstream = []
    for p in upstream:  # what a relay does for a 431-byte subscriber: cut-through re-split
        h, chunk = decode_fragment(p)
        downstream += split(h, chunk, 431)
    assert all(len(p) <= 431 for p in downstream)
    random.Random(3).shuffle(downstream)
    r = Reassembler()
    assert [d.data for d in completes(feed(r, downstream))] == [data]
    # Mixed: some pieces from the big split, others from the small one, overlapping.
    r2 = Reassembler()
    mixed = downstream[: len(downstream) // 2] + upstream
    assert [d.data for d in completes(feed(r2, mixed))] == [data]


def test_abandon_stream_frees_its_frames():
    r = Reassembler()
    r.add(hdr(1000, stream=1), b"x" * 10, 0.0)
    r.add(hdr(1000, stream=2), b"x" * 10, 0.0)
    gone = r.abandon_stream(1)
    assert [g.key[0] for g in gone] == [1] and len(r) == 1
