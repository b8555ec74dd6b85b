"""Publisher and subscriber clients without RNS: the RelayClient underneath is replaced by a fake."""

from __future__ import annotations

import os

import RNS

from ciris_av_plugin.media.frames import FrameDecrypted, FrameOpener, FrameSealer
from ciris_av_plugin.protocol.media_wire import KIND_AUDIO, KIND_VIDEO, PT_RECEIVER_REPORT, ForwardingHeader
from ciris_av_plugin.protocol.reports import decode_receiver_report
from ciris_av_plugin.transport.control import Event
from ciris_av_plugin.transport.media_clients import PublisherClient, SubscriberClient

STREAM = 77
BASE_KEY = os.urandom(16)


class FakeClient:
    def __init__(self, mdu: int) -> None:
        self.mdu = mdu
        self.sent: list[bytes] = []
        self.clock = lambda: 0.0

    def send(self, data: bytes) -> bool:
        assert len(data) <= self.mdu
        self.sent.append(data)
        return True


def _publisher(mdu: int) -> tuple[PublisherClient, FakeClient]:
    sealer = FrameSealer()
    sealer.set_epoch(1, BASE_KEY, 2, 0)
    pub = PublisherClient(RNS.Identity(), b"r" * 16, STREAM, sealer)
    fake = FakeClient(mdu)
    pub.client = fake  # type: ignore[assignment]
    return pub, fake


def _fh(track: int, seq: int, key: bool = False) -> ForwardingHeader:
    kind = KIND_AUDIO if track == 0 else KIND_VIDEO
    return ForwardingHeader(STREAM, track, kind, seq, seq // 30, seq * 33_000, keyframe=key)


def test_publisher_cuts_frames_to_the_link_mdu_and_remembers_keyframe_requests() -> None:
    pub, fake = _publisher(431)
    assert pub.send_frame(_fh(1, 0, key=True), bytes(8000)) == len(fake.sent) >= 19
    assert not pub.take_keyframe_request(1)
    pub._on_event(Event(1, "KeyframeRequested", {"stream_id": STREAM, "track_id": 1}))
    pub._on_event(Event(2, "KeyframeRequested", {"stream_id": STREAM + 1, "track_id": 2}))  # not ours
    assert pub.take_keyframe_request(1) and not pub.take_keyframe_request(1)
    assert not pub.take_keyframe_request(2)
    assert pub.keyframe_requests == 1


def test_subscriber_decrypts_and_reports_progress_and_loss() -> None:
    pub, fake = _publisher(16303)
    for seq in range(6):
        if seq == 3:
            pub.sealer.seal(_fh(1, seq), b"lost")  # sealed but never sent: a gap at seq 3
            continue
        pub.send_frame(_fh(1, seq, key=seq == 0), b"frame %d" % seq)
    pub.send_frame(_fh(0, 0), b"audio")
    opener = FrameOpener()
    now = [10.0]
    opener.install_epoch(1, BASE_KEY, 2, now[0])
    got: list[FrameDecrypted] = []
    sub = SubscriberClient(RNS.Identity(), b"r" * 16, STREAM, opener, got.append, clock=lambda: now[0],
                           recovery=False)
    for packet in fake.sent:
        sub._on_packet(packet)
        now[0] += 0.01
    now[0] += 2.0  # past any reorder wait: seq 3 is given up
    packets = sub._on_tick(now[0])
    reports = [decode_receiver_report(p) for p in packets if p[0] == PT_RECEIVER_REPORT]
    assert len(reports) == 1 and reports[0].stream_id == STREAM
    by_track = {t.track_id: t for t in reports[0].tracks}
    assert by_track[1].highest_seq == 5 and by_track[1].lost == 1
    assert by_track[0].highest_seq == 0 and by_track[0].lost == 0
    assert [(f.header.track_id, f.header.frame_seq) for f in got if f.header.track_id == 1] == [
        (1, 0), (1, 1), (1, 2), (1, 4), (1, 5)]
    # Loss is reported once: the next report carries no new loss.
    again = [decode_receiver_report(p) for p in sub._on_tick(now[0] + 0.1) if p[0] == PT_RECEIVER_REPORT]
    assert {t.track_id: t.lost for t in again[0].tracks}[1] == 0


