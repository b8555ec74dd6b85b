"""Fixed-layout wire formats of the media plane: the forwarding header and the fragment header.

Two headers, two jobs (ARCHITECTURE.md, "Frames and fragments"):

* The **forwarding header** (30 bytes, version 1) travels in clear in front of the SFrame
  ciphertext and is authenticated as SFrame AAD metadata (RFC 9605 §4.4.3), so a relay can read
  it but nobody can change it without the receiver noticing.
* The **fragment header** (36 bytes) is in front of every link packet. It is *outside* the AAD,
  because a relay rewrites it when it re-splits a fragment for a link with a smaller MDU. It
  repeats the fields the relay needs to schedule a fragment that arrives before the first one
  of its frame (priority, flags, group of pictures, KID).

A *frame object* is ``forwarding_header || sframe_ciphertext``; fragments carry byte ranges of
it. All integers are big-endian.

The first byte of every media link packet is its type: ``PT_FRAGMENT`` (below),
``PT_RECEIVER_REPORT`` (``protocol/reports.py``), ``PT_NACK`` (missing byte ranges of frames,
``protocol/nack.py``: fixed layout, at most 24 ranges, at most 347 bytes so it fits a 431-byte MDU)
and ``PT_KEEPALIVE``. A fragment resent in answer to a NACK carries ``FLAG_RETRANSMISSION``
(``media/retransmit.py``); receivers use it to measure the repair time.

Forwarding header v1::

     0 u8  version (1)
     1 u8  flags (FLAG_*)
     2 u64 stream_id
    10 u8  track_id
    11 u8  kind (KIND_AUDIO / KIND_VIDEO)
    12 u32 frame_seq        per track, +1 per frame
    16 u32 gop_id           increments at every keyframe
    20 u8  layers           spatial << 4 | temporal
    21 u8  priority         0 = most urgent
    22 u64 capture_ts_us    sender's media time; never compared across hosts

Fragment header (packet type 0x01)::

     0 u8  packet type (PT_FRAGMENT)
     1 u8  flags (FLAG_*; FLAG_AUDIO mirrors kind so the relay need not see offset 0 first)
     2 u64 stream_id
    10 u8  track_id
    11 u8  priority
    12 u32 frame_seq
    16 u32 gop_id
    20 u32 offset           byte offset of this chunk in the frame object
    24 u32 total_len        length of the whole frame object
    28 u64 kid              the SFrame KID of the frame (checked against the SFrame header)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from .errors import FragmentError, HeaderError

FH_VERSION = 1
FH_LEN = 30
FRAG_HEADER_LEN = 36

# First byte of every link packet on a media link says what it is.
PT_FRAGMENT = 0x01
PT_RECEIVER_REPORT = 0x02
PT_NACK = 0x03
PT_KEEPALIVE = 0x04

FLAG_KEYFRAME = 0x01
FLAG_DISCARDABLE = 0x02
FLAG_END_OF_STREAM = 0x04
FLAG_AUDIO = 0x08
FLAG_RETRANSMISSION = 0x10
_FH_FLAGS = FLAG_KEYFRAME | FLAG_DISCARDABLE | FLAG_END_OF_STREAM
_FRAG_FLAGS = _FH_FLAGS | FLAG_AUDIO | FLAG_RETRANSMISSION

KIND_AUDIO = 0
KIND_VIDEO = 1
_KINDS = (KIND_AUDIO, KIND_VIDEO)

# Largest frame object any party accepts. A 1080p keyframe of a screen share can reach a few
# hundred kB; WebRTC's default jitter buffer caps frames at 1 MB in practice, so we take 1 MiB.
MAX_FRAME_SIZE = 1 << 20

_FH = struct.Struct(">BBQBBIIBBQ")
_FRAG = struct.Struct(">BBQBBIIIIQ")
assert _FH.size == FH_LEN and _FRAG.size == FRAG_HEADER_LEN


@dataclass(frozen=True, slots=True)
class ForwardingHeader:
    """The clear, authenticated per-frame metadata a relay schedules by."""

    stream_id: int
    track_id: int
    kind: int
    frame_seq: int
    gop_id: int
    capture_ts_us: int
    keyframe: bool = False
    discardable: bool = False
    end_of_stream: bool = False
    spatial_layer: int = 0
    temporal_layer: int = 0
    priority: int = 128

    @property
    def flags(self) -> int:
        return (
            (FLAG_KEYFRAME if self.keyframe else 0)
            | (FLAG_DISCARDABLE if self.discardable else 0)
            | (FLAG_END_OF_STREAM if self.end_of_stream else 0)
        )

    def encode(self) -> bytes:
        if self.kind not in _KINDS:
            raise HeaderError(f"unknown kind {self.kind}")
        if not (0 <= self.spatial_layer < 16 and 0 <= self.temporal_layer < 16):
            raise HeaderError("layers must be 0..15")
        try:
            return _FH.pack(
                FH_VERSION,
                self.flags,
                self.stream_id,
                self.track_id,
                self.kind,
                self.frame_seq,
                self.gop_id,
                (self.spatial_layer << 4) | self.temporal_layer,
                self.priority,
                self.capture_ts_us,
            )
        except struct.error as exc:
            raise HeaderError(f"forwarding header field out of range: {exc}") from None

    @classmethod
    def decode(cls, data: bytes | memoryview) -> ForwardingHeader:
        """Parse the first ``FH_LEN`` bytes of ``data`` (a frame object may follow)."""
        if len(data) < FH_LEN:
            raise HeaderError(f"forwarding header truncated ({len(data)} < {FH_LEN} bytes)")
        ver, flags, sid, tid, kind, seq, gop, layers, prio, ts = _FH.unpack_from(data, 0)
        if ver != FH_VERSION:
            raise HeaderError(f"unknown forwarding header version {ver}")
        if flags & ~_FH_FLAGS:
            raise HeaderError(f"reserved forwarding header flags set: {flags:#x}")
        if kind not in _KINDS:
            raise HeaderError(f"unknown kind {kind}")
        return cls(
            stream_id=sid,
            track_id=tid,
            kind=kind,
            frame_seq=seq,
            gop_id=gop,
            capture_ts_us=ts,
            keyframe=bool(flags & FLAG_KEYFRAME),
            discardable=bool(flags & FLAG_DISCARDABLE),
            end_of_stream=bool(flags & FLAG_END_OF_STREAM),
            spatial_layer=layers >> 4,
            temporal_layer=layers & 0x0F,
            priority=prio,
        )


@dataclass(frozen=True, slots=True)
class FragmentHeader:
    """What every media link packet starts with; rewritten hop by hop when re-splitting."""

    stream_id: int
    track_id: int
    frame_seq: int
    gop_id: int
    offset: int
    total_len: int
    kid: int
    flags: int = 0
    priority: int = 128

    @property
    def keyframe(self) -> bool:
        return bool(self.flags & FLAG_KEYFRAME)

    @property
    def discardable(self) -> bool:
        return bool(self.flags & FLAG_DISCARDABLE)

    @property
    def audio(self) -> bool:
        return bool(self.flags & FLAG_AUDIO)

    def encode(self) -> bytes:
        try:
            return _FRAG.pack(
                PT_FRAGMENT,
                self.flags,
                self.stream_id,
                self.track_id,
                self.priority,
                self.frame_seq,
                self.gop_id,
                self.offset,
                self.total_len,
                self.kid,
            )
        except struct.error as exc:
            raise HeaderError(f"fragment header field out of range: {exc}") from None

    def with_range(self, offset: int) -> FragmentHeader:
        return replace(self, offset=offset)


def decode_fragment(packet: bytes | memoryview) -> tuple[FragmentHeader, memoryview]:
    """Split a link packet into its fragment header and chunk, checking the byte range.

    Raises :class:`HeaderError` for a short or unknown packet and :class:`FragmentError` when
    the chunk does not lie inside ``[0, total_len)`` or the frame is larger than allowed.
    """
    if len(packet) < FRAG_HEADER_LEN:
        raise HeaderError(f"fragment truncated ({len(packet)} < {FRAG_HEADER_LEN} bytes)")
    pt, flags, sid, tid, prio, seq, gop, off, total, kid = _FRAG.unpack_from(packet, 0)
    if pt != PT_FRAGMENT:
        raise HeaderError(f"not a fragment (packet type {pt:#x})")
    if flags & ~_FRAG_FLAGS:
        raise HeaderError(f"reserved fragment flags set: {flags:#x}")
    chunk = memoryview(packet)[FRAG_HEADER_LEN:]
    if total == 0 or total > MAX_FRAME_SIZE:
        raise FragmentError(f"frame length {total} outside 1..{MAX_FRAME_SIZE}")
    if not chunk:
        raise FragmentError("empty fragment")
    if off + len(chunk) > total:
        raise FragmentError(f"fragment [{off}, {off + len(chunk)}) beyond frame length {total}")
    header = FragmentHeader(
        stream_id=sid,
        track_id=tid,
        frame_seq=seq,
        gop_id=gop,
        offset=off,
        total_len=total,
        kid=kid,
        flags=flags,
        priority=prio,
    )
    return header, chunk


def fragment_flags(fh: ForwardingHeader) -> int:
    """Fragment flags derived from a forwarding header (the relay's scheduling copy)."""
    return fh.flags | (FLAG_AUDIO if fh.kind == KIND_AUDIO else 0)


def split(header: FragmentHeader, chunk: bytes | memoryview, mdu: int) -> list[bytes]:
    """Cut one fragment (header + chunk) into link packets of at most ``mdu`` bytes.

    Used by publishers on whole frame objects (``header.offset == 0``, chunk = whole frame) and
    by relays for cut-through re-splitting when the downstream MDU is smaller than upstream.
    """
    room = mdu - FRAG_HEADER_LEN
    if room <= 0:
        raise FragmentError(f"MDU {mdu} leaves no room after the {FRAG_HEADER_LEN}-byte header")
    if header.offset + len(chunk) > header.total_len:
        raise FragmentError("chunk extends past the frame length")
    if len(chunk) <= room:
        return [header.encode() + bytes(chunk)]
    view = memoryview(chunk)
    out = []
    for start in range(0, len(view), room):
        out.append(header.with_range(header.offset + start).encode() + bytes(view[start : start + room]))
    return out
