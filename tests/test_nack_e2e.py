"""Loss recovery end to end without a network: sealer + ring -> engine -> opener + detector.

Whatever packets the two hops lose on their first transmission (chosen by hypothesis), every
frame reaches the subscriber byte-identical and in order, as long as repairs get through: the
detector finds every loss and the rings hold every byte it asks for. The one exception by design:
a receiver cannot miss what it never knew was coming, so each track's first frame is not lost, nor
its last (nothing after it reveals the gap; a live track always has a next frame); and NACKs
themselves are lost at most twice (three in a row outlast the repair wait at the start).
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from ciris_av_plugin.media.frames import FrameDecrypted, FrameOpener, FrameSealer
from ciris_av_plugin.media.nack import LossDetector
from ciris_av_plugin.media.retransmit import RING_MAX_AGE_S, NackResponder, RetransmitRing
from ciris_av_plugin.protocol.media_wire import FLAG_RETRANSMISSION, KIND_AUDIO, KIND_VIDEO, ForwardingHeader
from ciris_av_plugin.protocol.nack import decode_nack
from ciris_av_plugin.protocol.reports import ReceiverReport, encode_receiver_report
from ciris_av_plugin.relay.engine import ForwardingEngine
from ciris_av_plugin.relay.events import NackUpstream

SID = 0xE2E
PUB, SUB = b"pub", b"sub"
MDU = 431
STEP = 0.005


def _frames(seconds: float) -> list[tuple[float, ForwardingHeader, bytes]]:
    out = []
    for seq in range(int(seconds * 30)):
        key = seq % 15 == 0
        fh = ForwardingHeader(
            SID, 1, KIND_VIDEO, seq, seq // 15, seq, keyframe=key, priority=64 if key else 128
        )
        out.append((seq / 30, fh, os.urandom(2500 if key else 300 + 37 * (seq % 20))))
    for seq in range(int(seconds * 50)):
        fh = ForwardingHeader(SID, 0, KIND_AUDIO, seq, 0, seq, priority=0)
        out.append((seq / 50, fh, os.urandom(80)))
    out.sort(key=lambda e: e[0])
    return out


@settings(max_examples=40, deadline=None)
@given(
    up=st.sets(st.integers(0, 299), max_size=40),
    down=st.sets(st.integers(0, 299), max_size=40),
    nacks=st.sets(st.integers(0, 30), max_size=2),  # two lost NACKs in a row are survivable
)
def test_any_first_time_loss_on_either_hop_is_repaired(up: set[int], down: set[int], nacks: set[int]) -> None:
    key = os.urandom(16)
    sealer = FrameSealer()
    sealer.set_epoch(1, key, 4, 0)
    rings: dict[int, RetransmitRing] = {}
    responder = NackResponder()
    engine = ForwardingEngine()
    engine.add_publisher(PUB, SID, 0.0)
    engine.add_subscriber(SUB, SID, MDU, 0.0)
    opener = FrameOpener()
    opener.install_epoch(1, key, 4, 0.0)
    base_wait = opener.orderer.wait
    detector = LossDetector(deadline=base_wait)
    got: list[FrameDecrypted] = []
    counts = {"up": 0, "down": 0, "nack": 0}

    def lossy(hop: str, packet: bytes, dropped: set[int]) -> bool:
        """True if the hop delivers it: first transmissions numbered, repairs always pass."""
        if packet[0] == 0x01 and (
            packet[1] & FLAG_RETRANSMISSION or int.from_bytes(packet[12:16], "big") in (0, last[packet[10]])
        ):
            return True  # a repair, or a fragment of a track's first or last frame
        counts[hop] += 1
        return counts[hop] - 1 not in dropped

    def to_subscriber(now: float) -> None:
        while batch := engine.next_packets(SUB, now, 64):
            for p in batch:
                if lossy("down", p, down):
                    got.extend(e for e in opener.receive_packet(p, now) if isinstance(e, FrameDecrypted))
                    detector.observe_packet(p, now)

    def subscriber_nacks(now: float) -> None:
        for out in detector.poll(now):
            if lossy("nack", out.packet, nacks):
                engine.receive_packet(SUB, out.packet, now)

    schedule = _frames(1.0)
    sent = {(fh.track_id, fh.frame_seq): payload for _, fh, payload in schedule}
    last = {track: max(seq for t, seq in sent if t == track) for track in (0, 1)}
    now = 0.0
    i = 0
    while now < 2.0:
        while i < len(schedule) and schedule[i][0] <= now:
            _, fh, payload = schedule[i]
            i += 1
            sealed = sealer.seal(fh, payload)
            ring = rings.setdefault(fh.track_id, RetransmitRing())
            for p in sealed.packets(MDU):
                ring.add(fh.frame_seq, p, now)
                if lossy("up", p, up):
                    engine.receive_packet(PUB, p, now)
        for ev in engine.tick(now):
            if isinstance(ev, NackUpstream):
                nack = decode_nack(ev.packet)
                assert responder.admit(PUB, now)
                for r in responder.answer(PUB, nack, rings.get, now, MDU, lambda _f: RING_MAX_AGE_S):
                    engine.receive_packet(PUB, r.packet, now)
        to_subscriber(now)
        subscriber_nacks(now)
        to_subscriber(now)
        got.extend(e for e in opener.expire(now) if isinstance(e, FrameDecrypted))
        # As SubscriberClient._on_tick: hold gaps open for the measured repair time.
        opener.orderer.wait = max(base_wait, detector.repair_wait())
        detector.deadline = opener.orderer.wait
        engine.receive_packet(SUB, encode_receiver_report(ReceiverReport(SID, ())), now)
        now = round(now + STEP, 6)

    by_frame = {(e.header.track_id, e.header.frame_seq): e for e in got}
    assert set(by_frame) == set(sent), sorted(set(sent) - set(by_frame))[:5]
    assert all(by_frame[k].payload == sent[k] for k in sent)
    for track in (0, 1):
        seqs = [e.header.frame_seq for e in got if e.header.track_id == track]
        assert seqs == sorted(seqs)
    assert all(e.decodable for e in got)
