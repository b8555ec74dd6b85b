"""The ``PT_NACK`` packet codec: missing byte ranges of frames, sent to the hop that sent them.

Both ends of every media hop speak it (a subscriber to its relay, a relay to its publisher or
upstream relay), so it lives with the other wire formats; the loss detector that decides *when*
to NACK is ``media/nack.py`` and the sender's answer is ``media/retransmit.py``.

Ranges are in bytes of the frame object, not packets, because a relay may re-split fragments for
a smaller MDU: a range names the same bytes on every hop.

NACK packet (packet type ``PT_NACK`` = 0x03), fixed layout, version 1, big-endian,
``11 + 14 * n`` bytes::

     0 u8  packet type (PT_NACK)
     1 u8  version (1)
     2 u64 stream_id
    10 u8  n, the number of ranges (1..MAX_NACK_RANGES)
    11 n x range:
         0 u8  track_id
         1 u8  flags            reserved, must be zero
         2 u32 frame_seq
         6 u32 start            first missing byte of the frame object
        10 u32 end              one past the last missing byte, > start; NACK_TO_END (0xFFFFFFFF)
                                means "to the end of the frame" (a whole frame lost: its length
                                is unknown to the receiver)

With ``MAX_NACK_RANGES`` = 24 a NACK is at most 347 bytes, inside the smallest RNS link MDU
(431 bytes). Ranges are listed most urgent first (audio, then keyframes, then the rest), so a
sender that stops early (rate limit, work bound) still repairs what matters most.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import HeaderError
from .media_wire import MAX_FRAME_SIZE, PT_NACK

NACK_VERSION = 1
# Ranges per NACK: 11 + 24 * 14 = 347 bytes fits the 431-byte minimum MDU with room to spare.
# 24 ranges cover a burst of ~0.8 s of 30 fps video lost frame by frame; more is a burst that a
# keyframe repairs more cheaply than retransmission.
MAX_NACK_RANGES = 24
# ``end`` value meaning "to the end of the frame" (whole frames lost: length unknown).
NACK_TO_END = 0xFFFFFFFF

_HEAD = struct.Struct(">BBQB")
_RANGE = struct.Struct(">BBIII")
NACK_HEADER_LEN = _HEAD.size
NACK_RANGE_LEN = _RANGE.size
MAX_NACK_LEN = NACK_HEADER_LEN + MAX_NACK_RANGES * NACK_RANGE_LEN
assert NACK_HEADER_LEN == 11 and NACK_RANGE_LEN == 14 and MAX_NACK_LEN <= 431


class NackError(HeaderError):
    """A NACK packet is truncated, of an unknown version, or has out-of-range fields."""


@dataclass(frozen=True, slots=True)
class NackRange:
    """Bytes ``[start, end)`` of one frame are missing (``end == NACK_TO_END``: to its end)."""

    track_id: int
    "Track (0..255) within the NACK's stream."
    frame_seq: int
    "The frame (u32)."
    start: int
    "First missing byte of the frame object."
    end: int
    "One past the last missing byte, or NACK_TO_END."


@dataclass(frozen=True, slots=True)
class Nack:
    """One NACK packet: a stream and 1..MAX_NACK_RANGES missing ranges, most urgent first."""

    stream_id: int
    "The stream the ranges belong to."
    ranges: tuple[NackRange, ...]
    "Missing ranges, most urgent first."


def encode_nack(nack: Nack) -> bytes:
    """Encode ``nack``; raises :class:`NackError` for an empty, oversized or out-of-range NACK."""
    n = len(nack.ranges)
    if not 1 <= n <= MAX_NACK_RANGES:
        raise NackError(f"a NACK carries 1..{MAX_NACK_RANGES} ranges, not {n}")
    parts = []
    try:
        parts.append(_HEAD.pack(PT_NACK, NACK_VERSION, nack.stream_id, n))
        for r in nack.ranges:
            _check_range(r.start, r.end)
            parts.append(_RANGE.pack(r.track_id, 0, r.frame_seq, r.start, r.end))
    except struct.error as exc:
        raise NackError(f"NACK field out of range: {exc}") from None
    return b"".join(parts)


def decode_nack(packet: bytes | memoryview) -> Nack:
    """Decode one NACK packet; any deviation from the layout raises :class:`NackError`.

    Work is bounded: the range count is checked before anything is parsed.
    """
    size = len(packet)
    if size < NACK_HEADER_LEN + NACK_RANGE_LEN:
        raise NackError(f"NACK truncated ({size} bytes)")
    pt, version, stream_id, n = _HEAD.unpack_from(packet, 0)
    if pt != PT_NACK:
        raise NackError(f"not a NACK (packet type {pt:#x})")
    if version != NACK_VERSION:
        raise NackError(f"unknown NACK version {version}")
    if not 1 <= n <= MAX_NACK_RANGES:
        raise NackError(f"{n} ranges outside 1..{MAX_NACK_RANGES}")
    if size != NACK_HEADER_LEN + n * NACK_RANGE_LEN:
        raise NackError(
            f"NACK of {n} ranges must be {NACK_HEADER_LEN + n * NACK_RANGE_LEN} bytes, got {size}"
        )
    ranges = []
    for i in range(n):
        tid, flags, seq, start, end = _RANGE.unpack_from(packet, NACK_HEADER_LEN + i * NACK_RANGE_LEN)
        if flags:
            raise NackError(f"reserved NACK range flags set: {flags:#x}")
        _check_range(start, end)
        ranges.append(NackRange(tid, seq, start, end))
    return Nack(stream_id, tuple(ranges))


def _check_range(start: int, end: int) -> None:
    if not 0 <= start < MAX_FRAME_SIZE:
        raise NackError(f"range start {start} outside the largest frame")
    if end <= start or (end != NACK_TO_END and end > MAX_FRAME_SIZE):
        raise NackError(f"range [{start}, {end}) is empty or past the largest frame")
