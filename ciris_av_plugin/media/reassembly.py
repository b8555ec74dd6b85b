"""Reassembly of frame objects from fragments, with a deadline and bounded memory.

Fragments carry byte ranges of a frame object (``offset``, ``total_len``; see :mod:`.wire`),
so they can arrive in any order, duplicated, or re-split by a relay into smaller pieces along
different cut points. A frame is complete when every byte of ``[0, total_len)`` is present.

Memory is bounded whatever arrives: each partial frame is charged the bytes it holds plus a
fixed overhead per stored piece (so floods of one-byte fragments are charged for what they
really cost), and the totals are capped overall and per stream, as is the number of partial
frames. When a new fragment would break a bound the *oldest* partial frames are abandoned
first — of the same stream when that stream is over its own share, so one stream's flood does
not evict another's frames — since in realtime media the oldest frame is the one least likely
to still be useful. Frames that miss their deadline are abandoned on :meth:`Reassembler.expire`.

Fragments that contradict what a frame already holds (another ``total_len`` or KID, or bytes
that differ where ranges overlap) raise :class:`ReassemblyError` and change nothing.
"""

from __future__ import annotations

import bisect
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from ..protocol import media_wire as wire
from ..protocol.media_wire import FragmentHeader
from .errors import ReassemblyError

log = logging.getLogger(__name__)

MAX_FRAME_SIZE = wire.MAX_FRAME_SIZE
# How long a frame may take to complete after its first fragment arrives. Realtime video is
# useless after a few hundred ms of jitter buffer; 1 s covers a relay queue and one slow path
# (ARCHITECTURE.md, "Receivers reassemble with a deadline").
REASSEMBLY_DEADLINE_S = 1.0
# Partial frames held at once, overall and per stream. A healthy stream has one or two frames
# in flight per track (30 fps video, 50 fps audio, ~1 frame of reordering); 32 per stream is
# a second of video frames all incomplete at once, 128 overall is four such streams.
MAX_PENDING_FRAMES = 128
MAX_PENDING_FRAMES_PER_STREAM = 32
# Bytes held in partial frames. Per stream: two maximum-size frames (a big keyframe plus
# the next one starting). Overall: a few streams' worth, small for any host that runs video.
MAX_BUFFERED_BYTES_PER_STREAM = 2 * MAX_FRAME_SIZE + (256 << 10)
MAX_BUFFERED_BYTES = 8 << 20
# Charged per stored piece on top of its bytes: about what a small bytes object and its list
# slots cost CPython, so the byte budget also bounds the number of pieces.
PIECE_OVERHEAD = 96
# Keys of frames recently completed or abandoned, so late duplicates are recognised instead of
# opening a new partial frame that would only time out. ~4 s of a 60 fps stream per track.
RECENT_KEYS = 256

FrameKey = tuple[int, int, int]  # (stream_id, track_id, frame_seq)


@dataclass(frozen=True, slots=True)
class FrameComplete:
    """All bytes of a frame object arrived."""

    header: FragmentHeader
    """The fragment header of its first fragment to arrive, with ``offset = 0``."""
    data: bytes
    """The whole frame object: forwarding header || SFrame ciphertext."""


@dataclass(frozen=True, slots=True)
class FrameAbandoned:
    """A partial frame was given up: ``reason`` is ``"deadline"`` or ``"evicted"``."""

    key: FrameKey
    reason: str
    received: int
    """Bytes of it that had arrived."""
    total_len: int
    kid: int


ReassemblyEvent = FrameComplete | FrameAbandoned


@dataclass(slots=True)
class _Partial:
    header: FragmentHeader
    first_at: float
    starts: list[int] = field(default_factory=list)
    pieces: list[bytes] = field(default_factory=list)
    received: int = 0
    charge: int = 0

    def overlaps(self, off: int, chunk: bytes) -> tuple[list[tuple[int, int]], bool]:
        """Compare ``chunk`` at ``off`` with stored pieces: (uncovered ranges, conflict)."""
        end = off + len(chunk)
        gaps: list[tuple[int, int]] = []
        cursor = off
        i = max(0, bisect.bisect_right(self.starts, off) - 1)
        while i < len(self.starts) and self.starts[i] < end:
            s = self.starts[i]
            e = s + len(self.pieces[i])
            if e > off:
                lo, hi = max(s, off), min(e, end)
                if self.pieces[i][lo - s : hi - s] != chunk[lo - off : hi - off]:
                    return [], True
                if lo > cursor:
                    gaps.append((cursor, lo))
                cursor = max(cursor, hi)
            i += 1
        if cursor < end:
            gaps.append((cursor, end))
        return gaps, False

    def insert(self, start: int, data: bytes) -> None:
        i = bisect.bisect_left(self.starts, start)
        self.starts.insert(i, start)
        self.pieces.insert(i, data)
        self.received += len(data)

    def assemble(self) -> bytes:
        return b"".join(self.pieces)


class Reassembler:
    """Collects fragments by (stream_id, track_id, frame_seq) into whole frame objects."""

    def __init__(
        self,
        deadline: float = REASSEMBLY_DEADLINE_S,
        max_frames: int = MAX_PENDING_FRAMES,
        max_frames_per_stream: int = MAX_PENDING_FRAMES_PER_STREAM,
        max_bytes: int = MAX_BUFFERED_BYTES,
        max_bytes_per_stream: int = MAX_BUFFERED_BYTES_PER_STREAM,
        max_frame_size: int = MAX_FRAME_SIZE,
    ) -> None:
        self.deadline = deadline
        self.max_frames = max_frames
        self.max_frames_per_stream = max_frames_per_stream
        self.max_bytes = max_bytes
        self.max_bytes_per_stream = max_bytes_per_stream
        self.max_frame_size = max_frame_size
        self._partials: OrderedDict[FrameKey, _Partial] = OrderedDict()  # oldest first
        self._stream_frames: dict[int, int] = {}
        self._stream_bytes: dict[int, int] = {}
        self._recent: OrderedDict[FrameKey, int] = OrderedDict()  # key -> total_len
        self.buffered_bytes = 0
        self.counters: dict[str, int] = {
            "completed": 0,
            "duplicate": 0,
            "late": 0,
            "deadline": 0,
            "evicted": 0,
        }

    def __len__(self) -> int:
        return len(self._partials)

    def stream_bytes(self, stream_id: int) -> int:
        return self._stream_bytes.get(stream_id, 0)

    def next_expiry(self) -> float | None:
        if not self._partials:
            return None
        return next(iter(self._partials.values())).first_at + self.deadline

    def add(self, header: FragmentHeader, chunk: bytes | memoryview, now: float) -> list[ReassemblyEvent]:
        """Take one fragment; returns a completion and/or frames abandoned to make room.

        Raises :class:`ReassemblyError` (changing nothing) for a fragment that cannot belong
        to a valid frame or contradicts the partial frame it names.
        """
        data = bytes(chunk)
        off, total = header.offset, header.total_len
        if not data:
            raise ReassemblyError("empty fragment")
        if total < 1 or total > self.max_frame_size:
            raise ReassemblyError(f"frame length {total} outside 1..{self.max_frame_size}")
        if off < 0 or off + len(data) > total:
            raise ReassemblyError(f"fragment [{off}, {off + len(data)}) beyond frame length {total}")
        key: FrameKey = (header.stream_id, header.track_id, header.frame_seq)

        partial = self._partials.get(key)
        if partial is None:
            if key in self._recent:
                # A straggler of a frame already completed or abandoned: not a new frame.
                self.counters["late" if self._recent[key] else "duplicate"] += 1
                return []
            if off == 0 and len(data) == total:
                self._remember(key, 0)
                self.counters["completed"] += 1
                return [FrameComplete(header=header, data=data)]
            gaps = [(off, off + len(data))]
        else:
            ph = partial.header
            if ph.total_len != total:
                raise ReassemblyError(
                    f"frame {key}: total_len {total} contradicts {ph.total_len} of earlier fragments"
                )
            if ph.kid != header.kid:
                raise ReassemblyError(f"frame {key}: KID {header.kid} contradicts {ph.kid}")
            gaps, conflict = partial.overlaps(off, data)
            if conflict:
                raise ReassemblyError(f"frame {key}: overlapping bytes at {off} differ from those held")
            if not gaps:
                self.counters["duplicate"] += 1
                return []

        new_bytes = sum(b - a for a, b in gaps)
        charge = new_bytes + PIECE_OVERHEAD * len(gaps)
        if charge > self.max_bytes_per_stream or charge > self.max_bytes:
            raise ReassemblyError(f"fragment of {len(data)} bytes exceeds the reassembly budget")

        events: list[ReassemblyEvent] = []
        if partial is None:
            events += self._make_room(header.stream_id, charge, new_frame=True, keep=None)
            partial = _Partial(header=header.with_range(0), first_at=now)
            self._partials[key] = partial
            self._stream_frames[header.stream_id] = self._stream_frames.get(header.stream_id, 0) + 1
        else:
            events += self._make_room(header.stream_id, charge, new_frame=False, keep=key)
            if key not in self._partials:  # cannot happen: keep= protects it; stay safe anyway
                return events
        for a, b in gaps:
            partial.insert(a, data[a - off : b - off])
        partial.charge += charge
        self.buffered_bytes += charge
        self._stream_bytes[header.stream_id] = self._stream_bytes.get(header.stream_id, 0) + charge

        if partial.received == total:
            self._drop(key)
            self._remember(key, 0)
            self.counters["completed"] += 1
            events.append(FrameComplete(header=partial.header, data=partial.assemble()))
        return events

    def expire(self, now: float) -> list[FrameAbandoned]:
        """Abandon partial frames older than the deadline (oldest first)."""
        out: list[FrameAbandoned] = []
        while self._partials:
            key, partial = next(iter(self._partials.items()))
            if now < partial.first_at + self.deadline:
                break
            out.append(self._abandon(key, "deadline"))
        return out

    def abandon_stream(self, stream_id: int) -> list[FrameAbandoned]:
        """Drop every partial frame of one stream (its link went away mid-frame)."""
        return [self._abandon(k, "evicted") for k in [k for k in self._partials if k[0] == stream_id]]

    # -- internals ------------------------------------------------------------------------

    def _make_room(
        self, stream_id: int, charge: int, new_frame: bool, keep: FrameKey | None
    ) -> list[FrameAbandoned]:
        out: list[FrameAbandoned] = []
        add_frames = 1 if new_frame else 0

        def stream_over() -> bool:
            return (
                self._stream_frames.get(stream_id, 0) + add_frames > self.max_frames_per_stream
                or self._stream_bytes.get(stream_id, 0) + charge > self.max_bytes_per_stream
            )

        def global_over() -> bool:
            return (
                len(self._partials) + add_frames > self.max_frames
                or self.buffered_bytes + charge > self.max_bytes
            )

        while stream_over():
            victim = next((k for k in self._partials if k[0] == stream_id and k != keep), None)
            if victim is None:
                break
            out.append(self._abandon(victim, "evicted"))
        if keep is not None and stream_over():
            # The frame being extended is by itself over its stream's share: give it up
            # rather than evict other streams' frames for it.
            out.append(self._abandon(keep, "evicted"))
            return out
        while global_over():
            victim = next((k for k in self._partials if k != keep), None)
            if victim is None:
                break
            out.append(self._abandon(victim, "evicted"))
        if keep is not None and (stream_over() or global_over()):
            # The frame being extended is itself too big for what is left: give it up.
            out.append(self._abandon(keep, "evicted"))
        return out

    def _abandon(self, key: FrameKey, reason: str) -> FrameAbandoned:
        partial = self._drop(key)
        self._remember(key, 1)
        self.counters[reason] += 1
        log.debug(
            "reassembly: frame %s abandoned (%s) at %d/%d bytes",
            key,
            reason,
            partial.received,
            partial.header.total_len,
        )
        return FrameAbandoned(
            key=key,
            reason=reason,
            received=partial.received,
            total_len=partial.header.total_len,
            kid=partial.header.kid,
        )

    def _drop(self, key: FrameKey) -> _Partial:
        partial = self._partials.pop(key)
        sid = key[0]
        self.buffered_bytes -= partial.charge
        self._stream_bytes[sid] -= partial.charge
        self._stream_frames[sid] -= 1
        if self._stream_frames[sid] == 0:
            del self._stream_frames[sid]
            del self._stream_bytes[sid]
        return partial

    def _remember(self, key: FrameKey, abandoned: int) -> None:
        self._recent[key] = abandoned
        self._recent.move_to_end(key)
        while len(self._recent) > RECENT_KEYS:
            self._recent.popitem(last=False)
