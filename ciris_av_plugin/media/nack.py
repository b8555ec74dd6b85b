"""Negative acknowledgements, receiver side: the loss detector that decides what to NACK and when.

Loss recovery is hop by hop (ARCHITECTURE.md, "Frames and fragments"): every receiver of
fragments (a subscriber, or a relay receiving from its publisher) finds the byte ranges it is
missing from the fragment headers' ``(frame_seq, offset, total_len)`` and asks the sender it
got them from to send those bytes again; every sender keeps a short ring of what it sent
(:mod:`.retransmit`). The ``PT_NACK`` packet itself is a wire format both ends share:
``protocol/nack.py``.

:class:`LossDetector` is sans-I/O: ``observe`` every fragment as it arrives, ``poll(now)`` for the
NACK packets due. It NACKs a hole after a short reorder guard, re-NACKs while the repair does not
arrive (the retransmission may be lost too), and gives up at the frame's deadline, after which
the usual loss path (receiver report, coalesced keyframe request) takes over.
"""

from __future__ import annotations

import logging
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from ..protocol.media_wire import (
    FLAG_AUDIO,
    FLAG_KEYFRAME,
    FLAG_RETRANSMISSION,
    FRAG_HEADER_LEN,
    MAX_FRAME_SIZE,
    PT_FRAGMENT,
)
from ..protocol.nack import MAX_NACK_RANGES, NACK_TO_END, Nack, NackRange, encode_nack

log = logging.getLogger(__name__)


# Detector timing. The reorder guard: the relay serves keyframe fragments ahead of delta
# fragments of the same track and RNS may reorder a few packets, so a hole is NACKed only once
# it has existed this long (WebRTC's NACK module waits for a few packets of reordering likewise).
NACK_REORDER_GUARD_S = 0.01
# A frame whose last fragment arrived this long ago and is still short has lost its tail (the
# next frame usually reveals it sooner: 33 ms at 30 fps).
NACK_TAIL_TIMEOUT_S = 0.04
# Re-NACK interval bounds; in between it is 1.25x the smoothed repair time (first NACK to first
# retransmitted byte), like a retransmission timeout from a smoothed RTT (RFC 6298 in spirit,
# without its exponential backoff: the frame's deadline, not congestion, limits the tries).
NACK_RETRY_MIN_S = 0.02
NACK_RETRY_MAX_S = 0.3
# The repair time assumed before any repair was timed: a regional internet round trip; a few
# timed repairs move the estimate to the real path (milliseconds on loopback).
NACK_INITIAL_RTT_S = 0.05
# NACKs per frame at most: with 5 % loss each way, 4 tries fail ~1e-5 of the time; more only
# loads a link that is failing anyway.
MAX_NACK_TRIES = 5
# Default give-up time for a frame, from its first sign: a subscriber's decoder has moved on long
# before (the orderer waits ~100-200 ms); a relay keeps 0.5 s of video in its queues.
NACK_DEADLINE_S = 0.3
# A jump of more frames than this is not a loss to repair (a restart, a stall, a skipped group
# of pictures): ~1 s of 30 fps video. The keyframe path handles it.
MAX_GAP_FRAMES = 32
# A receiver holds a gap open (its in-order release waits) for the reorder guard plus this many
# repair times: room for the first NACK and two re-NACKs at 1.25x the repair time each, so a lost
# NACK or repair, even two, is survivable.
REPAIR_ROUNDS = 4
# ... but never longer than this: 400 ms is the top of ITU-T G.114's acceptable one-way delay;
# past it a frozen picture plus a keyframe is the better trade.
MAX_REPAIR_WAIT_S = 0.4
# A fragment this many frames behind the next expected one cannot be in flight any more (8 s of
# 30 fps video; frames live ~1 s): its sender restarted its numbering (as ordering.py decides).
RESTART_BACKSTEP = 256
# Frames tracked at once (partial or missing), over all tracks: 0.3 s of a few 60 fps tracks.
MAX_TRACKED_FRAMES = 256
# Tracks tracked at once (least recently used evicted): as FrameOrderer's MAX_TRACKS.
MAX_TRACKS = 1024
# NACK packets one poll emits at most; the rest waits for the next poll.
MAX_NACK_PACKETS_PER_POLL = 4

_U32 = 0xFFFFFFFF
_HALF = 0x80000000
_FRAG_PEEK = struct.Struct(">BBQBBIIII")  # the fragment header up to total_len

# --- receiver side ------------------------------------------------------------------------------


class _Frame:
    """What a receiver knows of one incomplete frame: bytes contiguous from the start up to the
    highest byte seen (``edge``), holes below it, and whether its tail is known to be lost."""

    __slots__ = (
        "total",
        "edge",
        "holes",
        "first_t",
        "last_t",
        "tail_lost",
        "nack_at",
        "nacked_at",
        "tries",
        "urgency",
        "sampled",
    )

    def __init__(self, total: int | None, now: float, urgency: int) -> None:
        self.total = total
        self.edge = 0
        self.holes: list[list[int]] = []
        self.first_t = now
        self.last_t = now
        self.tail_lost = False
        self.nack_at = float("inf")
        self.nacked_at = 0.0
        self.tries = 0
        self.urgency = urgency  # 0 audio, 1 keyframe, 2 the rest
        self.sampled = False


class _DTrack:
    __slots__ = ("next_seq", "audio", "frames")

    def __init__(self, next_seq: int, audio: bool) -> None:
        self.next_seq = next_seq
        self.audio = audio
        self.frames: dict[int, _Frame] = {}


@dataclass(frozen=True, slots=True)
class NackOut:
    """A NACK packet to send, and where: ``route`` is what the caller's ``route`` function said."""

    route: Any
    "The caller's routing key for the tracks in this packet (None without a route function)."
    stream_id: int
    "The stream the NACK is about."
    packet: bytes
    "The encoded PT_NACK packet."


@dataclass(frozen=True, slots=True)
class GaveUp:
    """A frame could not be repaired before its deadline (or within MAX_NACK_TRIES)."""

    stream_id: int
    "Its stream."
    track_id: int
    "Its track."
    frame_seq: int
    "The frame."
    audio: bool
    "Whether the track is audio (no keyframe can help it)."


class LossDetector:
    """Finds missing bytes per (stream, track) from fragment headers and schedules NACKs.

    Bounded: at most ``max_frames`` frames and ``MAX_TRACKS`` tracks are tracked (oldest frames
    given up first), a gap of more than ``MAX_GAP_FRAMES`` frames is not repaired, and each
    frame is NACKed at most ``MAX_NACK_TRIES`` times before its ``deadline``.
    """

    def __init__(
        self,
        deadline: float = NACK_DEADLINE_S,
        guard: float = NACK_REORDER_GUARD_S,
        tail_timeout: float = NACK_TAIL_TIMEOUT_S,
        max_frames: int = MAX_TRACKED_FRAMES,
    ) -> None:
        self.deadline = deadline
        self.guard = guard
        self.tail_timeout = tail_timeout
        self.max_frames = max_frames
        self.srtt = NACK_INITIAL_RTT_S
        self._tracks: OrderedDict[tuple[int, int], _DTrack] = OrderedDict()
        self._n_frames = 0
        # (track, frame_seq, record) of every frame record created, oldest first (see _bound).
        self._created: deque[tuple[_DTrack, int, _Frame]] = deque()
        self._next_due = float("inf")
        self._gave_up: list[GaveUp] = []
        self.counters: dict[str, int] = {
            "nack_packets": 0,
            "ranges_nacked": 0,
            "frames_nacked": 0,
            "renacks": 0,
            "recovered": 0,
            "gave_up": 0,
            "gap_too_large": 0,
            "restarts": 0,
            "evicted": 0,
        }

    @property
    def tracked_frames(self) -> int:
        return self._n_frames

    def retry_interval(self) -> float:
        return min(NACK_RETRY_MAX_S, max(NACK_RETRY_MIN_S, 1.25 * self.srtt))

    def repair_wait(self) -> float:
        """How long a gap is worth waiting for, given the measured repair time (NACK to first
        repaired byte): a receiver's in-order release (``FrameOrderer.wait``) and this
        detector's ``deadline`` should be at least this, so repairs are not late on arrival."""
        return min(MAX_REPAIR_WAIT_S, self.guard + REPAIR_ROUNDS * max(self.srtt, NACK_RETRY_MIN_S))

    def observe_packet(self, packet: bytes | memoryview, now: float) -> None:
        """:meth:`observe` a media link packet; anything but a well-formed fragment is ignored."""
        n = len(packet)
        if n <= FRAG_HEADER_LEN or packet[0] != PT_FRAGMENT:
            return
        _, flags, sid, tid, _, seq, _, off, total = _FRAG_PEEK.unpack_from(packet, 0)
        length = n - FRAG_HEADER_LEN
        if total == 0 or total > MAX_FRAME_SIZE or off + length > total:
            return
        self.observe(sid, tid, seq, off, length, total, flags, now)

    def observe(
        self,
        stream_id: int,
        track_id: int,
        seq: int,
        offset: int,
        length: int,
        total: int,
        flags: int,
        now: float,
    ) -> None:
        """Record that bytes ``[offset, offset+length)`` of frame ``seq`` (``total`` long) arrived."""
        key = (stream_id, track_id)
        tr = self._tracks.get(key)
        if tr is None:
            tr = self._tracks[key] = _DTrack(seq, bool(flags & FLAG_AUDIO))
            if len(self._tracks) > MAX_TRACKS:
                _, old = self._tracks.popitem(last=False)
                self._n_frames -= len(old.frames)
                self.counters["evicted"] += len(old.frames)
        d = (seq - tr.next_seq) & _U32
        frames = tr.frames
        if d >= _HALF and _U32 + 1 - d > RESTART_BACKSTEP and seq not in frames:
            # Far behind anything that can still be in flight: the sender restarted its
            # numbering (a new publisher process). Start the track again from here.
            self._n_frames -= len(frames)
            frames.clear()
            tr.next_seq = seq
            d = 0
            self.counters["restarts"] += 1
        if d < _HALF:
            # A frame never seen before, at or after the next expected one.
            # Older frames of the track are repaired even when this one is a keyframe: the
            # decoder restarts here, but an unrepaired frame still counts as lost, is shown as a
            # freeze and, reported, asks for yet another keyframe.
            keyframe = flags & FLAG_KEYFRAME
            for f in frames.values():
                if not f.tail_lost:
                    f.tail_lost = True
                    if f.total is None or f.edge < f.total:
                        self._schedule(f, now + self.guard)
            if d:
                if d > MAX_GAP_FRAMES:
                    self.counters["gap_too_large"] += 1
                else:
                    urgency = 0 if tr.audio else 2
                    for i in range(d):
                        f = _Frame(None, now, urgency)
                        f.tail_lost = True
                        missing = (tr.next_seq + i) & _U32
                        frames[missing] = f
                        self._created.append((tr, missing, f))
                        self._n_frames += 1
                        self._schedule(f, now + self.guard)
            tr.next_seq = (seq + 1) & _U32
            if offset == 0 and length == total:
                self._bound(now)
                return  # a whole frame in one packet: nothing to track
            frame = _Frame(total, now, 0 if tr.audio else (1 if keyframe else 2))
            frames[seq] = frame
            self._created.append((tr, seq, frame))
            self._n_frames += 1
            self._schedule(frame, now + self.tail_timeout)
            self._bound(now)
        else:
            frame = frames.get(seq)
            if frame is None:
                return  # complete, given up, or older than anything tracked
            if frame.total is None:
                frame.total = total
            elif frame.total != total:
                return  # contradicts earlier fragments: the reassembler refuses it too
                if flags & FLAG_KEYFRAME:
                    frame.urgency = min(frame.urgency, 1)
            if flags & FLAG_RETRANSMISSION and frame.tries and not frame.sampled:
                # Timed from the *first* NACK (Karn's problem: after a re-NACK we cannot tell
                # which one this answers). Timing from the last would shrink the estimate below a
                # long round trip for good, every repair would be re-NACKed; from the first, a
                # lost first NACK only inflates one sample by a retry interval.
                sample = now - frame.nacked_at
                if sample >= 0:
                    self.srtt += (sample - self.srtt) / 8
                frame.sampled = True  # one sample per frame: its first repaired packet
        frame.last_t = now
        edge = frame.edge
        end = offset + length
        if offset == edge:
            frame.edge = end
        elif offset > edge:
            frame.holes.append([edge, offset])
            frame.edge = end
            self._schedule(frame, now + self.guard)
        else:
            if frame.holes:
                _cut(frame.holes, offset, end)
            if end > edge:
                frame.edge = end
        if frame.edge >= frame.total and not frame.holes:  # type: ignore[operator]
            del frames[seq]
            self._n_frames -= 1
            if frame.tries:
                self.counters["recovered"] += 1

    def wants(self, stream_id: int, track_id: int, seq: int) -> bool:
        """Whether frame ``seq`` is still incomplete here (a repair for it is useful)."""
        tr = self._tracks.get((stream_id, track_id))
        return tr is not None and seq in tr.frames

    def _schedule(self, frame: _Frame, at: float) -> None:
        if at < frame.nack_at:
            frame.nack_at = at
        if at < self._next_due:
            self._next_due = at

    def _bound(self, now: float) -> None:
        """Give up the oldest tracked frames while over ``max_frames``: O(1) amortised per frame
        (``_created`` lists frame records oldest first; entries of frames already gone are
        skipped here and compacted away when the list grows past a few times the bound)."""
        created = self._created
        while self._n_frames > self.max_frames and created:
            tr, seq, f = created.popleft()
            if tr.frames.get(seq) is f:
                del tr.frames[seq]
                self._n_frames -= 1
                self.counters["evicted"] += 1
        if len(created) > 4 * self.max_frames + 64:
            self._created = deque(e for e in created if e[0].frames.get(e[1]) is e[2])

    def next_due(self) -> float | None:
        """When :meth:`poll` next has work (None: nothing tracked)."""
        return None if self._n_frames == 0 else self._next_due

    def take_gave_up(self) -> list[GaveUp]:
        """Frames given up on since the last call (the caller may ask for a keyframe)."""
        out, self._gave_up = self._gave_up, []
        return out

    def forget_stream(self, stream_id: int) -> None:
        """Stop tracking a stream (its link went away, or the track restarted its numbering)."""
        for key in [k for k in self._tracks if k[0] == stream_id]:
            self._n_frames -= len(self._tracks.pop(key).frames)

    def forget_track(self, stream_id: int, track_id: int) -> None:
        """Stop tracking one track (a new publisher took it over: numbering may restart)."""
        tr = self._tracks.pop((stream_id, track_id), None)
        if tr is not None:
            self._n_frames -= len(tr.frames)

    def poll(self, now: float, route: Any = None) -> list[NackOut]:
        """NACK packets due now, most urgent ranges first; gives up frames past their deadline.

        ``route(stream_id, track_id)`` (optional) names where a track's NACKs go (a relay feeds
        each track from one publisher link); ranges are grouped by (route, stream).
        """
        if now < self._next_due or not self._n_frames:
            return []
        deadline, tail_timeout = self.deadline, self.tail_timeout
        retry = self.retry_interval()
        due: list[tuple[int, float, tuple[int, int], int, _Frame]] = []
        next_due = float("inf")
        for key, tr in self._tracks.items():
            frames = tr.frames
            if not frames:
                continue
            for seq, f in list(frames.items()):
                if now - f.first_t >= deadline or (f.tries >= MAX_NACK_TRIES and now >= f.nack_at):
                    del frames[seq]
                    self._n_frames -= 1
                    self.counters["gave_up"] += 1
                    if len(self._gave_up) < self.max_frames:
                        self._gave_up.append(GaveUp(key[0], key[1], seq, tr.audio))
                    continue
                if not f.tail_lost and now - f.last_t >= tail_timeout:
                    f.tail_lost = True
                    f.nack_at = min(f.nack_at, now)
                if f.nack_at <= now and (f.holes or f.tail_lost):
                    due.append((f.urgency, f.first_t, key, seq, f))
                elif not f.tail_lost:
                    next_due = min(next_due, f.last_t + tail_timeout)
                next_due = min(next_due, f.nack_at, f.first_t + deadline)
        out: list[NackOut] = []
        if due:
            due.sort(key=lambda e: (e[0], e[1]))
            groups: dict[tuple[Any, int], list[NackRange]] = {}
            budget = MAX_NACK_PACKETS_PER_POLL * MAX_NACK_RANGES
            for _, _, (sid, tid), seq, f in due:
                ranges = [NackRange(tid, seq, a, b) for a, b in f.holes]
                if f.tail_lost:
                    end = NACK_TO_END if f.total is None else f.total
                    if f.edge < end:
                        ranges.append(NackRange(tid, seq, f.edge, end))
                if not ranges:
                    continue
                if len(ranges) > budget:
                    next_due = now  # the rest next time
                    break
                budget -= len(ranges)
                g = (None if route is None else route(sid, tid), sid)
                groups.setdefault(g, []).extend(ranges)
                self.counters["frames_nacked" if not f.tries else "renacks"] += 1
                if not f.tries:
                    f.nacked_at = now
                f.tries += 1
                f.nack_at = now + retry
                next_due = min(next_due, f.nack_at)
            for (rt, sid), ranges in groups.items():
                for i in range(0, len(ranges), MAX_NACK_RANGES):
                    chunk = tuple(ranges[i : i + MAX_NACK_RANGES])
                    out.append(NackOut(rt, sid, encode_nack(Nack(sid, chunk))))
                    self.counters["nack_packets"] += 1
                    self.counters["ranges_nacked"] += len(chunk)
        self._next_due = next_due
        return out


def _cut(holes: list[list[int]], start: int, end: int) -> None:
    """Remove ``[start, end)`` from the hole list in place (holes are few: a handful per frame)."""
    out: list[list[int]] = []
    for a, b in holes:
        if b <= start or a >= end:
            out.append([a, b])
            continue
        if a < start:
            out.append([a, start])
        if b > end:
            out.append([end, b])
    holes[:] = out
