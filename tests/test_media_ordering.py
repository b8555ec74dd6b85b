"""In-order release per track, loss accounting, keyframe gating and bounds of FrameOrderer."""

from ciris_av_plugin.media.events import FrameDecrypted
from ciris_av_plugin.media.ordering import FrameOrderer
from ciris_av_plugin.protocol.media_wire import KIND_AUDIO, KIND_VIDEO, ForwardingHeader

W = 0.1


def ev(seq, track=1, kind=KIND_VIDEO, keyframe=False, size=10, stream=1, eos=False):
    fh = ForwardingHeader(
        stream_id=stream,
        track_id=track,
        kind=kind,
        frame_seq=seq,
        gop_id=0,
        capture_ts_us=0,
        keyframe=keyframe,
        end_of_stream=eos,
    )
    return FrameDecrypted(
        header=fh, payload=bytes([seq % 256]) * size, kid=1, epoch=1, ctr=seq, sender_leaf=0
    )


def seqs(events):
    return [e.header.frame_seq for e in events]


def test_reordered_frames_released_in_order_without_waiting_once_gap_fills():
    o = FrameOrderer(wait=W)
    out = o.push(ev(0, keyframe=True), 0.0)
    assert seqs(out) == [0]
    assert o.push(ev(2), 0.01) == []  # 1 is missing: hold 2
    assert o.next_expiry() == 0.01 + W
    assert seqs(o.push(ev(1), 0.02)) == [1, 2]
    assert o.next_expiry() is None and o.pending_bytes == 0
    st = o.stats(1, 1)
    assert (st.frames_lost, st.frames_late, st.highest_seq) == (0, 0, 2)


def test_gap_skipped_after_wait_counts_loss_and_waits_for_keyframe():
    o = FrameOrderer(wait=W)
    o.push(ev(0, keyframe=True), 0.0)
    o.push(ev(3), 1.0)
    o.push(ev(4), 1.05)
    assert o.expire(1.0 + W - 0.001) == []
    out = o.expire(o.next_expiry())
    assert seqs(out) == [3, 4] and [e.decodable for e in out] == [False, False]
    assert o.stats(1, 1).frames_lost == 2 and o.waiting_for_keyframe(1, 1)
    out = o.push(ev(5, keyframe=True), 1.2) + o.push(ev(6), 1.3)
    assert [e.decodable for e in out] == [True, True]
    # The lost frame 1 shows up long after: late, released at once, not decodable.
    late = o.push(ev(1), 1.4)
    assert seqs(late) == [1] and not late[0].decodable and o.stats(1, 1).frames_late == 1


def test_track_starting_on_a_delta_waits_keyframe_or_audio_start_at_once():
    o = FrameOrderer(wait=W)
    assert o.push(ev(10), 0.0) == []
    assert seqs(o.push(ev(9), 0.01)) == []  # overtaken at the start: still in order
    out = o.expire(W)
    assert seqs(out) == [9, 10] and not any(e.decodable for e in out)
    assert seqs(o.push(ev(50, track=2, keyframe=True), 0.0)) == [50]
    assert seqs(o.push(ev(7, track=3, kind=KIND_AUDIO), 0.0)) == [7]
    assert not o.waiting_for_keyframe(1, 3) and o.waiting_for_keyframe(1, 99)


def test_audio_always_decodable_even_after_loss():
    o = FrameOrderer(wait=0.0)  # no reordering: gaps are skipped at once
    out = o.push(ev(0, kind=KIND_AUDIO), 0.0) + o.push(ev(5, kind=KIND_AUDIO), 0.0)
    assert seqs(out) == [0, 5] and all(e.decodable for e in out)
    assert o.stats(1, 1).frames_lost == 4


def test_end_of_stream_makes_next_frames_wait_for_keyframe():
    o = FrameOrderer(wait=0.0)
    out = o.push(ev(0, keyframe=True), 0) + o.push(ev(1, eos=True), 0) + o.push(ev(2), 0)
    assert [e.decodable for e in out] == [True, True, False]


def test_per_track_frame_bound_skips_the_gap():
    o = FrameOrderer(wait=10.0, max_frames=4)
    o.push(ev(0, keyframe=True), 0)
    for s in range(2, 6):
        assert o.push(ev(s), 0) == []
    out = o.push(ev(6), 0)  # fifth frame behind the gap: give up on 1
    assert seqs(out) == [2, 3, 4, 5, 6] and o.stats(1, 1).frames_lost == 1


def test_global_byte_bound():
    o = FrameOrderer(wait=10.0, max_bytes=5000)
    for track in range(1, 20):
        o.push(ev(0, track=track, keyframe=True), 0)
        o.push(ev(2, track=track, size=1000), 0)
        assert o.pending_bytes <= 5000


def test_flush_stream_releases_everything_waiting():
    o = FrameOrderer(wait=10.0)
    o.push(ev(0, keyframe=True, stream=4), 0)
    o.push(ev(3, stream=4), 0)
    o.push(ev(0, keyframe=True, stream=5), 0)
    o.push(ev(2, stream=5), 0)
    assert seqs(o.flush_stream(4, 0)) == [3]
    assert o.pending_bytes == 10


def test_tracks_bounded():
    o = FrameOrderer(max_tracks=3, wait=10.0)
    o.push(ev(0, track=1, keyframe=True), 0)
    o.push(ev(2, track=1), 0)  # waiting behind a gap when its track is evicted: released
    out = []
    for t in range(2, 6):
        out += o.push(ev(0, track=t, keyframe=True), 0)
    assert len(o.all_stats()) == 3
    assert (1, 2) in [(e.header.track_id, e.header.frame_seq) for e in out]
    assert o.pending_bytes == 0


def test_restarted_publisher_keyframe_resets_the_sequence():
    o = FrameOrderer(wait=W)
    for seq in range(1000, 1005):
        o.push(ev(seq, keyframe=seq == 1000), 0.0)
    assert seqs(o.push(ev(1, keyframe=True), 0.1)) == [1]  # far behind, a keyframe: a restart
    out = o.push(ev(2), 0.2)
    assert seqs(out) == [2] and out[0].decodable
    assert o.stats(1, 1).highest_seq == 2
    # A delta frame that far behind is only late.
    late = o.push(ev(0), 0.3)
    assert seqs(late) == [0] and not late[0].decodable


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 60), st.randoms(use_true_random=False), st.integers(0, 6))
def test_bounded_reordering_always_comes_out_complete_and_in_order(n, rng, spread):
    """Any arrival order where frames move at most `spread` places: all released, in order."""
    order = sorted(range(n), key=lambda i: i + rng.uniform(0, spread))
    o = FrameOrderer(wait=10.0, max_frames=16)
    out = []
    for t, seq in enumerate(order):
        out += o.push(ev(seq, keyframe=seq == 0), t * 0.001)
    out += o.expire(100.0)
    stats = o.stats(1, 1)
    assert seqs(out) == list(range(n))
    assert (stats.frames_lost, stats.frames_late) == (0, 0)
    assert all(e.decodable for e in out)  # keyframe 0 first, nothing skipped


def test_start_waits_only_until_the_earliest_frame_is_a_keyframe():
    o = FrameOrderer(wait=10.0)
    assert o.push(ev(1), 0.0) == []  # a delta first: wait for what may precede it
    assert seqs(o.push(ev(0, keyframe=True), 0.01)) == [0, 1]  # keyframe 0 arrived: go
