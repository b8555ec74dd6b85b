"""NACK codec (protocol/nack.py) and the receiver-side loss detector (media/nack.py), with a fake clock.

The detector is fed fragment headers exactly as ``wire.split`` cuts them; each test reads as the
loss pattern it proves is found (or, for reordering, not NACKed).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ciris_av_plugin.errors import MediaError
from ciris_av_plugin.media.nack import (
    MAX_GAP_FRAMES,
    MAX_NACK_TRIES,
    NACK_REORDER_GUARD_S,
    NACK_TAIL_TIMEOUT_S,
    LossDetector,
)
from ciris_av_plugin.protocol.media_wire import (
    FLAG_AUDIO,
    FLAG_KEYFRAME,
    FLAG_RETRANSMISSION,
    PT_NACK,
    FragmentHeader,
    split,
)
from ciris_av_plugin.protocol.nack import (
    MAX_NACK_LEN,
    MAX_NACK_RANGES,
    NACK_TO_END,
    Nack,
    NackError,
    NackRange,
    decode_nack,
    encode_nack,
)

SID = 0x5EED
VIDEO = 1
AUDIO = 0
MDU = 431


def packets(
    seq: int, size: int, *, key: bool = False, audio: bool = False, track: int = VIDEO
) -> list[bytes]:
    flags = (FLAG_KEYFRAME if key else 0) | (FLAG_AUDIO if audio else 0)
    header = FragmentHeader(SID, track, seq, 0, 0, size, kid=7, flags=flags)
    return split(header, bytes(size), MDU)


def ranges_of(det: LossDetector, now: float) -> list[tuple[int, int, int, int]]:
    out = []
    for n in det.poll(now):
        out += [(r.track_id, r.frame_seq, r.start, r.end) for r in decode_nack(n.packet).ranges]
    return out


# ---------------------------------------------------------------- codec


def test_a_full_nack_round_trips_and_fits_the_smallest_mdu() -> None:
    ranges = tuple(NackRange(i % 3, 1000 + i, i * 395, i * 395 + 395) for i in range(MAX_NACK_RANGES))
    nack = Nack(SID, ranges)
    data = encode_nack(nack)
    assert data[0] == PT_NACK and len(data) == MAX_NACK_LEN <= 431
    assert decode_nack(data) == nack
    whole = Nack(SID, (NackRange(1, 5, 0, NACK_TO_END),))
    assert decode_nack(encode_nack(whole)) == whole


def _bad_nacks() -> dict[str, bytes]:
    good = encode_nack(Nack(SID, (NackRange(1, 5, 0, 100),)))

    def patch(fmt: str, offset: int, value: int, base: bytes = good) -> bytes:
        b = bytearray(base)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    return {
        "truncated": good[:-1],
        "header only": good[:11],
        "wrong type": patch(">B", 0, 0x01),
        "wrong version": patch(">B", 1, 9),
        "zero ranges": patch(">B", 10, 0),
        "count beyond the limit": patch(">B", 10, MAX_NACK_RANGES + 1) + bytes(14 * MAX_NACK_RANGES),
        "count disagrees with length": patch(">B", 10, 2),
        "trailing bytes": good + b"\x00",
        "reserved flags": patch(">B", 12, 1),
        "empty range": patch(">I", 21, 0, patch(">I", 17, 0)),
        "start past the largest frame": patch(">I", 17, 1 << 20),
        "end past the largest frame": patch(">I", 21, (1 << 20) + 1),
    }


@pytest.mark.parametrize("case", sorted(_bad_nacks()))
def test_malformed_nacks_are_refused_typed(case: str) -> None:
    with pytest.raises(NackError) as err:
        decode_nack(_bad_nacks()[case])
    assert isinstance(err.value, MediaError)


def test_encoding_refuses_what_decoding_would() -> None:
    with pytest.raises(NackError):
        encode_nack(Nack(SID, ()))
    with pytest.raises(NackError):
        encode_nack(Nack(SID, tuple(NackRange(1, i, 0, 1) for i in range(MAX_NACK_RANGES + 1))))
    with pytest.raises(NackError):
        encode_nack(Nack(SID, (NackRange(256, 1, 0, 1),)))
    with pytest.raises(NackError):
        encode_nack(Nack(SID, (NackRange(1, 1, 5, 5),)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_decode_or_raise_nack_error_only(data: bytes) -> None:
    try:
        nack = decode_nack(bytes([PT_NACK, 1]) + data)
    except NackError:
        return
    assert 1 <= len(nack.ranges) <= MAX_NACK_RANGES


# ---------------------------------------------------------------- detector


def feed(det: LossDetector, pkts: list[bytes], now: float) -> None:
    for p in pkts:
        det.observe_packet(p, now)


def test_nothing_lost_nothing_nacked() -> None:
    det = LossDetector()
    t = 0.0
    for seq in range(60):
        feed(det, packets(seq, 2000, key=seq % 30 == 0), t)
        t += 1 / 30
        assert det.poll(t) == []
    assert det.tracked_frames == 0


def test_a_hole_inside_a_frame_is_nacked_after_the_reorder_guard_by_bytes() -> None:
    det = LossDetector()
    pkts = packets(1, 2000)
    feed(det, pkts[:2] + pkts[3:], 0.0)
    assert det.poll(0.0) == []  # a reordered packet may still come
    start = 2 * (MDU - 36)
    assert ranges_of(det, NACK_REORDER_GUARD_S) == [(VIDEO, 1, start, start + MDU - 36)]


def test_a_reordered_packet_inside_the_guard_is_not_nacked() -> None:
    det = LossDetector()
    pkts = packets(1, 2000)
    feed(det, pkts[:2] + pkts[3:], 0.0)
    det.observe_packet(pkts[2], 0.005)
    assert ranges_of(det, 1.0) == []
    assert det.tracked_frames == 0


def test_a_lost_tail_is_found_by_the_next_frame_or_by_timeout() -> None:
    det = LossDetector()
    pkts = packets(1, 2000)
    feed(det, pkts[:-1], 0.0)
    feed(det, packets(2, 2000), 0.01)
    got = ranges_of(det, 0.01 + NACK_REORDER_GUARD_S)
    assert got == [(VIDEO, 1, (len(pkts) - 1) * (MDU - 36), 2000)]
    # The last frame before a pause: only the timeout can tell.
    det2 = LossDetector()
    feed(det2, pkts[:-1], 0.0)
    assert ranges_of(det2, NACK_TAIL_TIMEOUT_S / 2) == []
    assert ranges_of(det2, NACK_TAIL_TIMEOUT_S) == [(VIDEO, 1, (len(pkts) - 1) * (MDU - 36), 2000)]


def test_whole_lost_frames_are_nacked_to_the_end_and_audio_first() -> None:
    det = LossDetector()
    feed(det, packets(10, 100, audio=True, track=AUDIO), 0.0)
    feed(det, packets(1, 2000), 0.0)
    feed(det, packets(4, 2000), 0.01)  # video 2 and 3 lost whole
    feed(det, packets(12, 100, audio=True, track=AUDIO), 0.01)  # audio 11 lost
    got = ranges_of(det, 0.01 + NACK_REORDER_GUARD_S)
    assert got == [(AUDIO, 11, 0, NACK_TO_END), (VIDEO, 2, 0, NACK_TO_END), (VIDEO, 3, 0, NACK_TO_END)]


def test_frames_lost_before_a_keyframe_are_still_repaired() -> None:
    # Unrepaired, they would count as lost, freeze the picture and ask for another keyframe.
    det = LossDetector()
    feed(det, packets(1, 2000), 0.0)
    feed(det, packets(4, 8000, key=True), 0.001)  # 2 and 3 lost whole, then a new group starts
    assert ranges_of(det, 0.001 + NACK_REORDER_GUARD_S) == [
        (VIDEO, 2, 0, NACK_TO_END),
        (VIDEO, 3, 0, NACK_TO_END),
    ]


def test_a_repair_completes_the_frame_and_measures_the_round_trip() -> None:
    det = LossDetector()
    pkts = packets(1, 2000)
    feed(det, [pkts[0]] + pkts[2:], 0.0)
    assert len(ranges_of(det, 0.02)) == 1
    repaired = bytearray(pkts[1])
    repaired[1] |= FLAG_RETRANSMISSION
    det.observe_packet(bytes(repaired), 0.024)
    assert det.tracked_frames == 0 and det.counters["recovered"] == 1
    assert det.srtt < 0.05  # moved from the initial guess towards the 4 ms sample


def test_a_lost_repair_is_nacked_again_then_given_up_at_the_deadline() -> None:
    det = LossDetector(deadline=0.3)
    pkts = packets(1, 2000)
    feed(det, [pkts[0]] + pkts[2:], 0.0)
    times = []
    t = 0.0
    while t < 0.5:
        if ranges_of(det, t):
            times.append(t)
        t = round(t + 0.001, 3)
    assert 2 <= len(times) <= MAX_NACK_TRIES
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    assert det.counters["gave_up"] == 1 and det.tracked_frames == 0
    gave_up = det.take_gave_up()
    assert [(g.track_id, g.frame_seq, g.audio) for g in gave_up] == [(VIDEO, 1, False)]
    assert det.take_gave_up() == []


def test_a_huge_jump_is_not_a_loss_to_repair() -> None:
    det = LossDetector()
    feed(det, packets(1, 100), 0.0)
    feed(det, packets(2 + MAX_GAP_FRAMES + 1, 100), 0.01)
    assert ranges_of(det, 0.1) == [] and det.counters["gap_too_large"] == 1


def test_many_losses_are_spread_over_bounded_nack_packets() -> None:
    det = LossDetector(max_frames=10_000)
    t = 0.0
    for seq in range(0, 2000, 2):  # every other single-packet frame lost, on 200 tracks
        for track in range(200):
            det.observe(SID, track, seq, 0, 10, 10, 0, t)
    out = det.poll(t + 0.05)
    assert 0 < len(out) <= 4 and all(len(n.packet) <= 431 for n in out)
    assert det.next_due() is not None and det.next_due() <= t + 0.05


def test_tracked_frames_are_bounded() -> None:
    det = LossDetector(max_frames=64)
    for seq in range(0, 10_000, 2):
        det.observe(SID, VIDEO, seq, 0, 10, 20, 0, seq * 0.001)  # every frame half-received
        assert det.tracked_frames <= 64
    assert det.counters["evicted"] > 0


FUZZ_MAX_FRAMES = 8


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 5000), st.integers(1, 600), st.integers(1, 5000)),
        max_size=80,
    ),
    st.lists(st.floats(0, 0.5), max_size=10),
)
def test_arbitrary_fragments_never_raise_and_nacks_always_decode(frags, polls) -> None:
    # A small frame budget, so arbitrary input (up to 41 seqs on 3 tracks) reaches the bound.
    det = LossDetector(max_frames=FUZZ_MAX_FRAMES)
    t = 0.0
    for i, (seq, off, n, total) in enumerate(frags):
        if off + n <= total:
            det.observe(SID, i % 3, seq, off, n, total, FLAG_KEYFRAME if seq % 7 == 0 else 0, t)
        t += 0.003
        for p in polls[:1]:
            for out in det.poll(t + p):
                assert len(out.packet) <= MAX_NACK_LEN
                nack = decode_nack(out.packet)
                assert nack.stream_id == SID
                assert all(r.track_id < 3 and r.frame_seq <= 40 for r in nack.ranges)
        assert det.tracked_frames <= FUZZ_MAX_FRAMES


def test_a_sender_restarting_its_numbering_is_followed() -> None:
    det = LossDetector()
    for seq in range(1000, 1010):
        feed(det, packets(seq, 100), seq * 0.03)
    feed(det, packets(0, 100), 31.0)
    feed(det, packets(2, 100), 31.03)  # 1 lost after the restart
    assert ranges_of(det, 31.1) == [(VIDEO, 1, 0, NACK_TO_END)]
    assert det.counters["restarts"] == 1


def test_fragments_contradicting_the_frame_length_are_ignored() -> None:
    det = LossDetector()
    pkts = packets(1, 2000)
    feed(det, pkts[:1], 0.0)
    det.observe(SID, VIDEO, 1, 395, 100, 495, 0, 0.001)  # claims the frame is 495 bytes: ignored
    feed(det, pkts[1:], 0.002)
    assert det.tracked_frames == 0 and ranges_of(det, 1.0) == []


def test_many_tracks_of_partial_frames_stay_within_the_bound_oldest_first() -> None:
    det = LossDetector(max_frames=64)
    for i in range(5000):
        det.observe(SID, i % 200, i // 200, 0, 10, 20, 0, i * 0.0001)
        assert det.tracked_frames <= 64
    # The survivors are the newest frames.
    assert ranges_of(det, 0.5 + NACK_TAIL_TIMEOUT_S) and det.counters["evicted"] == 5000 - 64
