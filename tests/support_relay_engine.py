"""Relay forwarding-engine helpers shared by the engine tests: publisher frames, feeding, draining.

Publishers are simulated with ``wire.split``; what subscribers receive is reassembled with
``wire.decode_fragment`` (independent of the engine's own header parsing).
"""

from __future__ import annotations

from ciris_av_plugin.protocol.media_wire import (
    FLAG_AUDIO,
    FLAG_DISCARDABLE,
    FLAG_KEYFRAME,
    FragmentHeader,
    decode_fragment,
    split,
)
from ciris_av_plugin.protocol.reports import ReceiverReport, TrackReport, encode_receiver_report
from ciris_av_plugin.relay.engine import ForwardingEngine
from ciris_av_plugin.relay.engine_config import EngineConfig

SID = 0xC1C1
VIDEO = 1
AUDIO = 0
PUB = b"publisher-link-0"
BIG_MDU = 16303
SMALL_MDU = 431


def frame(
    seq: int,
    gop: int,
    size: int = 2000,
    *,
    track: int = VIDEO,
    key: bool = False,
    disc: bool = False,
    audio: bool = False,
    mdu: int = BIG_MDU,
    sid: int = SID,
    prio: int = 128,
) -> list[bytes]:
    """One frame object as a publisher would send it: fragments of at most ``mdu`` bytes."""
    flags = (FLAG_KEYFRAME if key else 0) | (FLAG_DISCARDABLE if disc else 0) | (FLAG_AUDIO if audio else 0)
    payload = bytes((seq * 7 + i) & 0xFF for i in range(size))
    header = FragmentHeader(sid, track, seq, gop, 0, size, kid=0x100 + track, flags=flags, priority=prio)
    return split(header, payload, mdu)


def audio_frame(seq: int, size: int = 100) -> list[bytes]:
    return frame(seq, 0, size, track=AUDIO, audio=True)


def reassemble(packets: list[bytes]) -> dict[tuple[int, int], bytes]:
    """(track, frame_seq) -> frame object, for frames whose every byte arrived."""
    bufs: dict[tuple[int, int], tuple[bytearray, set[int]]] = {}
    for p in packets:
        h, chunk = decode_fragment(p)
        buf, have = bufs.setdefault((h.track_id, h.frame_seq), (bytearray(h.total_len), set()))
        buf[h.offset : h.offset + len(chunk)] = chunk
        have.update(range(h.offset, h.offset + len(chunk)))
    return {k: bytes(b) for k, (b, have) in bufs.items() if len(have) == len(b)}


def headers(packets: list[bytes]) -> list[FragmentHeader]:
    return [decode_fragment(p)[0] for p in packets]


def report(sid: int = SID, *tracks: TrackReport) -> bytes:
    return encode_receiver_report(ReceiverReport(sid, tuple(tracks)))


def feed(engine: ForwardingEngine, packets: list[bytes], now: float, link: bytes = PUB) -> None:
    for p in packets:
        engine.receive_packet(link, p, now)


def drain(engine: ForwardingEngine, link: bytes, now: float) -> list[bytes]:
    out: list[bytes] = []
    while batch := engine.next_packets(link, now, 16):
        out.extend(batch)
    return out


def engine_with(
    n_subs: int, mdu: int = BIG_MDU, config: EngineConfig | None = None, **kw
) -> ForwardingEngine:
    eng = ForwardingEngine(config, **kw)
    eng.add_publisher(PUB, SID, 0.0)
    for i in range(n_subs):
        eng.add_subscriber(b"sub-%d" % i, SID, mdu, 0.0)
    return eng


def keep_alive(eng: ForwardingEngine, links: list[bytes], now: float) -> None:
    for link in links:
        eng.receive_packet(link, report(), now)
