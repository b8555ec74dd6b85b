"""FrameSealer -> packets -> FrameOpener: the whole sans-I/O media path."""

import os
import random
from dataclasses import replace

import pytest

from ciris_av_plugin.media import frames as F
from ciris_av_plugin.media.errors import KeyRingError, SealError
from ciris_av_plugin.media.frames import FrameDecrypted, FrameDropped, FrameHeld, FrameOpener, FrameSealer
from ciris_av_plugin.media.keyring import FUTURE_HOLD_S, RECEIVE_GRACE_S, EpochKeys
from ciris_av_plugin.media.kid import decode_kid, encode_kid
from ciris_av_plugin.media.ordering import REORDER_WAIT_S
from ciris_av_plugin.media.reassembly import REASSEMBLY_DEADLINE_S
from ciris_av_plugin.media.sframe import decode_header
from ciris_av_plugin.protocol import media_wire as wire
from ciris_av_plugin.protocol.media_wire import FH_LEN, ForwardingHeader, decode_fragment

STREAM = 0xC1515
KEY = {e: bytes([e % 250 + 1]) * 16 for e in range(600)}


def fh(seq, track=1, kind=wire.KIND_VIDEO, keyframe=False, **kw):
    return ForwardingHeader(
        stream_id=STREAM,
        track_id=track,
        kind=kind,
        frame_seq=seq,
        gop_id=seq // 30,
        capture_ts_us=seq * 33_333,
        keyframe=keyframe,
        **kw,
    )


def pair(epoch=1, leaf_count=4, leaf=2):
    s = FrameSealer()
    s.set_epoch(epoch, KEY[epoch], leaf_count, leaf)
    o = FrameOpener()
    o.install_epoch(epoch, KEY[epoch], leaf_count, now=0.0)
    return s, o


def deliver(o, packets, now=0.0, settle=True):
    """Feed packets at ``now``; with ``settle`` also let the reorder wait run out."""
    events = []
    for p in packets:
        events += o.receive_packet(p, now)
    if settle:
        events += o.expire(now + REORDER_WAIT_S)
    return events


def decrypted(events):
    return [e for e in events if isinstance(e, FrameDecrypted)]


def dropped(events):
    return [e for e in events if isinstance(e, FrameDropped)]


def test_seal_layout():
    s, _ = pair(epoch=3, leaf_count=8, leaf=5)
    sealed = s.seal(fh(0, track=2, keyframe=True), b"hello")
    assert sealed.frame_object[:FH_LEN] == sealed.header.encode()
    sh = decode_header(sealed.frame_object[FH_LEN:])
    assert sh.kid == sealed.kid == encode_kid(2, 5, 3, 8) and sh.ctr == 0
    parts = decode_kid(sealed.kid, 8)
    assert (parts.context, parts.sender_leaf, parts.epoch_low) == (2, 5, 3)
    pk = sealed.packets(431)
    h, _ = decode_fragment(pk[0])
    assert h.kid == sealed.kid and h.keyframe and not h.audio and h.total_len == len(sealed.frame_object)


def test_counters_per_kid_strictly_increase_and_high_water():
    s, _ = pair()
    ctrs = {1: [], 2: []}
    for i in range(20):
        for track in (1, 2):
            ctrs[track].append(s.seal(fh(i, track=track), b"x").ctr)
    assert ctrs[1] == list(range(20)) and ctrs[2] == list(range(20))
    assert s.high_water_mark == 19
    restored = FrameSealer(ctr_floor=s.high_water_mark + 1)
    restored.set_epoch(1, KEY[1], 4, 2)
    assert restored.seal(fh(20), b"x").ctr == 20


def test_round_trip_mixed_mdus_out_of_order():
    s, o = pair()
    sent = []
    packets = []
    seqs = {1: 0, 2: 0}
    for i in range(60):
        track, kind = (2, wire.KIND_AUDIO) if i % 3 == 0 else (1, wire.KIND_VIDEO)
        seq = seqs[track]
        seqs[track] += 1
        payload = os.urandom(8000 if seq == 0 else random.Random(i).randint(50, 2500))
        sealed = s.seal(fh(seq, track=track, kind=kind, keyframe=(seq == 0)), payload)
        sent.append((track, seq, payload))
        packets += sealed.packets(431 if i % 2 else 16_303)
    # Local reordering, as RNS's thread-per-packet delivery produces: each packet moves up to
    # ~40 places (a couple of frames), never across the whole stream.
    rng = random.Random(0)
    packets = [p for _, p in sorted(enumerate(packets), key=lambda ip: ip[0] + rng.uniform(0, 40))]
    events = deliver(o, packets)
    got = decrypted(events)
    assert not dropped(events)
    # Every frame, byte-identical, and per track in frame_seq order despite the shuffle.
    for track in (1, 2):
        mine = [(e.header.track_id, e.header.frame_seq, e.payload) for e in got if e.header.track_id == track]
        assert mine == [x for x in sent if x[0] == track]
    assert all(e.epoch == 1 and e.sender_leaf == 2 and e.decodable for e in got)
    st = o.track_stats(STREAM, 1)
    assert (st.highest_seq, st.frames_lost, st.frames_late, st.frames_completed) == (39, 0, 0, 40)


def test_keyframe_gating_late_join_and_gap():
    s, o = pair()
    ev = []
    for i in range(5):
        ev += deliver(o, s.seal(fh(i, keyframe=(i == 3)), b"v%d" % i).packets(1000))
    assert [e.decodable for e in decrypted(ev)] == [False, False, False, True, True]
    assert not o.waiting_for_keyframe(STREAM, 1)
    s.seal(fh(5), b"lost")  # never delivered
    ev = deliver(o, s.seal(fh(6), b"v6").packets(1000))
    assert [e.decodable for e in decrypted(ev)] == [False]
    assert o.waiting_for_keyframe(STREAM, 1)
    st = o.track_stats(STREAM, 1)
    assert (st.highest_seq, st.frames_lost, st.frames_completed) == (6, 1, 6)
    ev = deliver(o, s.seal(fh(7, keyframe=True), b"v7").packets(1000))
    assert [e.decodable for e in decrypted(ev)] == [True]
    # audio never waits
    ev = deliver(o, s.seal(fh(0, track=9, kind=wire.KIND_AUDIO), b"a").packets(1000))
    assert [e.decodable for e in decrypted(ev)] == [True]
    assert not o.waiting_for_keyframe(STREAM, 9)
    assert o.waiting_for_keyframe(STREAM, 42)  # unseen track


def test_replayed_packets_dropped():
    s, o = pair()
    pk = s.seal(fh(0, keyframe=True), b"frame").packets(1000)
    assert len(decrypted(deliver(o, pk))) == 1
    # Same frame again: reassembly sees a duplicate of a completed frame (silently ignored).
    assert deliver(o, pk) == []
    # Once the reassembler has forgotten it, the replay window still refuses it.
    o.reassembler._recent.clear()
    ev = deliver(o, pk)
    assert [d.reason for d in dropped(ev)] == [F.DROP_REPLAY]
    assert o.counters[F.DROP_REPLAY] == 1
    assert o.drops == {F.DROP_REPLAY: 1}


def test_tampered_payload_and_header_dropped():
    s, o = pair()
    sealed = s.seal(fh(0), b"secret payload")
    obj = bytearray(sealed.frame_object)
    obj[-1] ^= 1
    h = sealed.fragment_header()
    ev = deliver(o, [h.encode() + bytes(obj)])
    assert [d.reason for d in dropped(ev)] == [F.DROP_AUTH]
    # A relay flips the keyframe flag in the forwarding header (AAD): authentication fails.
    sealed = s.seal(fh(1), b"x")
    obj = bytearray(sealed.frame_object)
    obj[1] |= wire.FLAG_KEYFRAME
    ev = deliver(o, [sealed.fragment_header().encode() + bytes(obj)])
    assert [d.reason for d in dropped(ev)] == [F.DROP_AUTH]


def test_fragment_vs_frame_header_mismatches():
    s, o = pair()
    sealed = s.seal(fh(0), b"x")
    h = sealed.fragment_header()
    ev = deliver(o, [replace(h, frame_seq=99).encode() + sealed.frame_object])
    assert [d.reason for d in dropped(ev)] == [F.DROP_FH_MISMATCH]
    ev = deliver(o, [replace(h, kid=h.kid + 256 * 4).encode() + sealed.frame_object])
    assert [d.reason for d in dropped(ev)] == [F.DROP_KID_MISMATCH]
    # A KID whose context is another track than the forwarding header's.
    other = s.seal(fh(1, track=2), b"y")
    obj = fh(1, track=1).encode() + other.frame_object[FH_LEN:]
    hh = replace(other.fragment_header(), track_id=1)
    ev = deliver(o, [hh.encode() + obj])
    assert [d.reason for d in dropped(ev)] == [F.DROP_CONTEXT]
    ev = deliver(o, [b"\x01garbage", b""])
    assert [d.reason for d in dropped(ev)] == [F.DROP_MALFORMED] * 2


def test_wrong_key_dropped():
    s = FrameSealer()
    s.set_epoch(1, bytes(16), 4, 2)
    o = FrameOpener()
    o.install_epoch(1, KEY[1], 4, 0.0)
    ev = deliver(o, s.seal(fh(0), b"x").packets(500))
    assert [d.reason for d in dropped(ev)] == [F.DROP_AUTH]


def test_epoch_change_grace_then_stale():
    s, o = pair(epoch=1, leaf_count=2, leaf=1)
    old = s.seal(fh(0, keyframe=True), b"old epoch")
    s.set_epoch(2, KEY[2], 4, 1)  # tree grew: S changes 1 -> 2
    new = s.seal(fh(1), b"new epoch")
    assert o.install_epoch(2, KEY[2], 4, now=10.0) == []
    ev = deliver(o, old.packets(500) + new.packets(500), now=10.5)
    assert [(e.epoch, e.payload) for e in decrypted(ev)] == [(1, b"old epoch"), (2, b"new epoch")]
    s1 = FrameSealer(ctr_floor=100)
    s1.set_epoch(1, KEY[1], 2, 1)
    late_old = s1.seal(fh(2), b"too late")
    ev = deliver(o, late_old.packets(500), now=10.0 + RECEIVE_GRACE_S + 0.1)
    assert [d.reason for d in dropped(ev)] == [F.DROP_STALE_EPOCH]
    assert o.keyring.held_epochs == [2]


def test_future_epoch_held_then_released():
    s, o = pair(epoch=1)
    s.set_epoch(2, KEY[2], 4, 2)
    ev = deliver(o, s.seal(fh(0, keyframe=True), b"early").packets(500), now=1.0)
    assert [type(e) for e in ev] == [FrameHeld]
    ev = o.install_epoch(2, KEY[2], 4, now=1.2)  # a keyframe starts its track at once
    assert [(e.epoch, e.payload) for e in decrypted(ev)] == [(2, b"early")]
    assert len(o.hold) == 0


def test_future_epoch_hold_expires():
    s, o = pair(epoch=1)
    s.set_epoch(2, KEY[2], 4, 2)
    deliver(o, s.seal(fh(0), b"early").packets(500), now=1.0)
    ev = o.expire(1.0 + FUTURE_HOLD_S + 0.01)
    assert [d.reason for d in dropped(ev)] == [F.DROP_HOLD_EXPIRED]
    assert decrypted(o.install_epoch(2, KEY[2], 4, now=2.0)) == []
    assert o.counters[F.DROP_HOLD_EXPIRED] == 1


def test_joiner_holds_frames_before_its_first_epoch():
    s, _ = pair(epoch=5)
    o = FrameOpener()
    ev = deliver(o, s.seal(fh(0, keyframe=True), b"k").packets(500), now=0.0)
    assert [type(e) for e in ev] == [FrameHeld]
    assert [e.payload for e in decrypted(o.install_keys(EpochKeys(5, KEY[5], 4), now=0.3))] == [b"k"]


def test_reassembly_deadline_reported_as_drop():
    s, o = pair()
    pk = s.seal(fh(0), os.urandom(3000)).packets(500)
    deliver(o, pk[:-1], now=0.0)
    ev = o.expire(REASSEMBLY_DEADLINE_S + 0.01)
    assert [d.reason for d in dropped(ev)] == [F.DROP_DEADLINE]


def test_sealer_rules():
    s = FrameSealer()
    with pytest.raises(SealError):
        s.seal(fh(0), b"x")
    s.set_epoch(2, KEY[2], 4, 1)
    s.seal(fh(0), b"x")
    s.set_epoch(2, KEY[2], 4, 1)  # same: counters continue
    assert s.seal(fh(1), b"x").ctr == 1
    with pytest.raises(SealError):
        s.set_epoch(2, KEY[3], 4, 1)
    with pytest.raises(SealError):
        s.set_epoch(1, KEY[1], 4, 1)
    with pytest.raises(SealError):
        s.set_epoch(3, KEY[3], 4, 4)
    with pytest.raises(SealError):
        s.seal(fh(2), bytes(wire.MAX_FRAME_SIZE))
    assert s.seal(fh(2), b"x").ctr == 2  # the refused frame consumed no counter
    s.set_epoch(3, KEY[3], 4, 1)
    assert s.seal(fh(3), b"x").ctr == 0  # new epoch, new keys, counters restart


def test_opener_install_errors_are_typed():
    o = FrameOpener()
    o.install_epoch(3, KEY[3], 4, 0.0)
    with pytest.raises(KeyRingError):
        o.install_epoch(2, KEY[2], 4, 0.0)


def test_replay_windows_forgotten_with_their_epoch():
    s, o = pair(epoch=1)
    deliver(o, s.seal(fh(0), b"x").packets(500))
    assert len(o.replay) == 1
    o.install_epoch(2, KEY[2], 4, now=1.0)
    o.expire(1.0 + RECEIVE_GRACE_S + 0.01)
    assert len(o.replay) == 0


def test_removed_member_cannot_open_frames_of_later_epochs():
    # Epoch 2 removes the member holding `removed`; the publisher and a remaining member move on.
    s, removed = pair(epoch=1)
    remaining = FrameOpener()
    remaining.install_epoch(1, KEY[1], 4, now=0.0)
    captured = []
    for seq in range(3):
        captured += s.seal(fh(seq, keyframe=seq == 0), b"epoch1-%d" % seq).packets(500)
    s.set_epoch(2, KEY[2], 2, 1)
    remaining.install_epoch(2, KEY[2], 2, now=0.1)
    for seq in range(3, 8):
        captured += s.seal(fh(seq, keyframe=seq == 3), b"epoch2-%d" % seq).packets(500)
    got_remaining = decrypted(deliver(remaining, captured, now=0.2))
    assert [e.epoch for e in got_remaining] == [1, 1, 1, 2, 2, 2, 2, 2]
    # The removed member's retained state sees the same ciphertext, counted by KID epoch.
    events = deliver(removed, captured, now=0.2) + removed.expire(5.0)
    opened_by_epoch = {}
    for e in decrypted(events):
        opened_by_epoch[e.epoch] = opened_by_epoch.get(e.epoch, 0) + 1
    assert opened_by_epoch == {1: 3}
    assert sum(1 for d in dropped(events) if d.reason == F.DROP_HOLD_EXPIRED) == 5
    # Guessing a key does not help either.
    guess = FrameOpener()
    guess.install_epoch(2, bytes(16), 2, now=5.0)
    again = deliver(guess, captured, now=5.1)
    assert decrypted(again) == []
    assert [d.reason for d in dropped(again)].count(F.DROP_AUTH) == 5


def test_link_lost_mid_frame_drops_partial_and_releases_waiting():
    s, o = pair()
    deliver(o, s.seal(fh(0, keyframe=True), b"k").packets(500))
    s.seal(fh(1), b"lost")
    waiting = deliver(o, s.seal(fh(2), b"behind a gap").packets(500), settle=False)
    assert decrypted(waiting) == []
    partial = s.seal(fh(3), os.urandom(2000)).packets(500)
    deliver(o, partial[:2], settle=False)
    ev = o.abandon_stream(STREAM, now=0.01)
    assert [d.reason for d in dropped(ev)] == [F.DROP_EVICTED]
    assert [(e.header.frame_seq, e.decodable) for e in decrypted(ev)] == [(2, False)]
    assert o.reassembler.buffered_bytes == 0 and o.next_expiry() is None


def test_follow_a_key_source():
    from ciris_av_plugin.media.keyring import StaticKeySource

    src = StaticKeySource()
    o = FrameOpener()
    assert o.follow(src, 0.0) == [] and o.keyring.current_epoch is None
    src.set(EpochKeys(3, KEY[3], 4, own_leaf=1))
    sealer = FrameSealer()
    sealer.set_keys(src.current_keys())
    held = deliver(o, sealer.seal(fh(0, keyframe=True), b"k").packets(500), settle=False)
    assert [type(e) for e in held] == [FrameHeld]
    assert [e.payload for e in decrypted(o.follow(src, 0.1))] == [b"k"]
    assert o.follow(src, 0.2) == [] and o.keyring.held_epochs == [3]
    with pytest.raises(SealError):
        FrameSealer().set_keys(EpochKeys(3, KEY[3], 4))  # receive-only keys cannot send
