"""Receiver reports (packet type ``PT_RECEIVER_REPORT``): a subscriber's ~10 Hz sign of life.

RNS gives no per-link backpressure (ARCHITECTURE.md, "Receiver reports and stalls"), so every
subscriber tells the relay, about every ``REPORT_INTERVAL_S``, how far it has got on each track of
a stream and how many frames it lost since its previous report. The relay uses the report as a
liveness signal (no report for ~300 ms: the subscriber is stalled) and a loss with video frames
lost triggers a keyframe request upstream. The subscriber side encodes with
:func:`encode_receiver_report`; the relay decodes with :func:`decode_receiver_report`.

Fixed layout, version 1, big-endian, ``11 + 8 * n`` bytes::

     0 u8  packet type (PT_RECEIVER_REPORT = 0x02)
     1 u8  version (1)
     2 u64 stream_id
    10 u8  n, the number of track entries (0..MAX_REPORT_TRACKS; 0 is a bare liveness report)
    11 n x track entry:
         0 u8  track_id             (unique within one report)
         1 u8  flags                bit 0 REPORT_FLAG_COMPLETED: highest_seq is meaningful;
                                    other bits reserved, must be zero
         2 u32 highest_seq          highest frame_seq completed on this track (0 unless COMPLETED)
         6 u16 lost                 frames lost since the previous report, saturating at 65535

"Lost" is the receiver's judgement (a gap in frame_seq, or a frame whose reassembly deadline
expired); the relay only compares it with zero. ``highest_seq`` must be the highest frame_seq the
receiver has fully reassembled on that track (serial order, u32 wrap): the relay compares it with
the frames it sent to bound how much media sits in flight on the link (``max_inflight_age`` in
``engine.py``), so a receiver that cannot tell should leave the track out of the report rather than
send a stale value. A report with no entries is a pure liveness signal.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import ReportError
from .media_wire import PT_RECEIVER_REPORT

REPORT_VERSION = 1
# A subscriber reports this often; the relay's stall timeout is three intervals, so one or two
# lost reports never stall a healthy subscriber (ARCHITECTURE.md: "every ~100 ms").
REPORT_INTERVAL_S = 0.1
# Track entries per report. A call carries a handful of tracks per stream (audio, camera, screen,
# simulcast layers); 16 leaves room and keeps a report at 139 bytes, far inside the smallest RNS
# link MDU (431 bytes). A stream with more tracks is reported in several packets.
MAX_REPORT_TRACKS = 16
# Largest value the u16 loss counter holds; larger losses saturate (the relay only tests > 0).
MAX_REPORTED_LOSS = 0xFFFF

REPORT_FLAG_COMPLETED = 0x01

_HEAD = struct.Struct(">BBQB")
_ENTRY = struct.Struct(">BBIH")
REPORT_HEADER_LEN = _HEAD.size
REPORT_ENTRY_LEN = _ENTRY.size
assert REPORT_HEADER_LEN == 11 and REPORT_ENTRY_LEN == 8


@dataclass(frozen=True, slots=True)
class TrackReport:
    """How far a subscriber got on one track."""

    track_id: int
    "The track (0..255) within the report's stream."
    highest_seq: int | None
    "Highest frame_seq completed on this track, or None if no frame has completed yet."
    lost: int = 0
    "Frames lost since the previous report (saturates at MAX_REPORTED_LOSS when encoded)."


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """One receiver report: a stream and up to ``MAX_REPORT_TRACKS`` track entries."""

    stream_id: int
    "The stream the report is about."
    tracks: tuple[TrackReport, ...] = ()
    "Per-track progress; track ids are unique."


def encode_receiver_report(report: ReceiverReport) -> bytes:
    """Encode ``report`` as a link packet; raises :class:`ReportError` for out-of-range fields."""
    if len(report.tracks) > MAX_REPORT_TRACKS:
        raise ReportError(f"{len(report.tracks)} track entries > {MAX_REPORT_TRACKS}")
    seen: set[int] = set()
    parts: list[bytes] = []
    try:
        parts.append(_HEAD.pack(PT_RECEIVER_REPORT, REPORT_VERSION, report.stream_id, len(report.tracks)))
        for tr in report.tracks:
            if tr.track_id in seen:
                raise ReportError(f"duplicate track {tr.track_id} in report")
            seen.add(tr.track_id)
            if tr.lost < 0:
                raise ReportError("negative loss count")
            if tr.highest_seq is None:
                flags, seq = 0, 0
            else:
                flags, seq = REPORT_FLAG_COMPLETED, tr.highest_seq
            parts.append(_ENTRY.pack(tr.track_id, flags, seq, min(tr.lost, MAX_REPORTED_LOSS)))
    except struct.error as exc:
        raise ReportError(f"report field out of range: {exc}") from None
    return b"".join(parts)


def decode_receiver_report(packet: bytes | memoryview) -> ReceiverReport:
    """Decode one receiver-report packet; any deviation from the layout raises :class:`ReportError`."""
    n_bytes = len(packet)
    if n_bytes < REPORT_HEADER_LEN:
        raise ReportError(f"report truncated ({n_bytes} < {REPORT_HEADER_LEN} bytes)")
    pt, version, stream_id, count = _HEAD.unpack_from(packet, 0)
    if pt != PT_RECEIVER_REPORT:
        raise ReportError(f"not a receiver report (packet type {pt:#x})")
    if version != REPORT_VERSION:
        raise ReportError(f"unknown receiver report version {version}")
    if count > MAX_REPORT_TRACKS:
        raise ReportError(f"{count} track entries > {MAX_REPORT_TRACKS}")
    expected = REPORT_HEADER_LEN + count * REPORT_ENTRY_LEN
    if n_bytes != expected:
        raise ReportError(f"report of {count} tracks must be {expected} bytes, got {n_bytes}")
    tracks: list[TrackReport] = []
    seen: set[int] = set()
    for i in range(count):
        track_id, flags, seq, lost = _ENTRY.unpack_from(packet, REPORT_HEADER_LEN + i * REPORT_ENTRY_LEN)
        if flags & ~REPORT_FLAG_COMPLETED:
            raise ReportError(f"reserved report flags set: {flags:#x}")
        if track_id in seen:
            raise ReportError(f"duplicate track {track_id} in report")
        seen.add(track_id)
        if flags & REPORT_FLAG_COMPLETED:
            tracks.append(TrackReport(track_id, seq, lost))
        elif seq:
            raise ReportError("highest_seq set without the COMPLETED flag")
        else:
            tracks.append(TrackReport(track_id, None, lost))
    return ReceiverReport(stream_id, tuple(tracks))
