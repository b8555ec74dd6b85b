"""Per-track release of decrypted frames in frame_seq order, loss accounting and keyframe gating.

Fragments reach a subscriber out of order (RNS delivers link packets from one thread per
packet; a relay re-splits), so frame N+1 can complete before frame N. A decoder wants frames in
order, so :class:`FrameOrderer` holds a frame that arrives after a gap for at most
``REORDER_WAIT_S`` and then gives up on the missing ones, counting them lost. A track that starts
on a video delta frame waits too (until its earliest waiting frame is a keyframe, or the wait
runs out), so that a frame overtaken at the very start is not late.

Video frames depend on earlier ones: after a late start or a skipped frame, nothing is
decodable until a keyframe (RFC 9605 §6.2 "Video Key Frames"); such frames are still released
(the application may count or show them) with ``decodable=False``. Audio frames stand alone and
are always decodable. A frame older than one already released is *late*: the decoder has moved
past it, so it is released at once, not decodable unless it is audio.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field, fields

from ..protocol.media_wire import KIND_AUDIO
from .events import FrameDecrypted

log = logging.getLogger(__name__)

# Longest a decrypted frame waits for an earlier, missing one. Reordering on a loopback or LAN
# path is a few ms; a relay's re-split and one RNS worker hiccup add tens. 100 ms is three
# video frames at 30 fps, under the ~150 ms a jitter buffer adds in WebRTC, and far under the
# 1 s within which ARCHITECTURE.md wants frames delivered. 0 disables reordering.
REORDER_WAIT_S = 0.1
# Frames waiting behind a gap, per track: ~0.5 s of 30 fps video. Beyond it the gap is skipped.
MAX_REORDER_FRAMES = 16
# Plaintext bytes waiting across all tracks (frames are at most 1 MiB each).
MAX_REORDER_BYTES = 8 << 20
# A keyframe this far *behind* the sequence is a publisher that started counting again (a
# restarted process), not a late frame: late frames are at most a reorder wait old, i.e. a
# handful of sequence numbers, and the reassembler forgets frames after its 1 s deadline.
RESTART_BACKSTEP = 256
# Tracks with state. Tracks are created only by authenticated frames, so this counts real
# (stream, track) pairs: 64 senders with a few tracks each is ~256.
MAX_TRACKS = 1024


@dataclass(slots=True)
class TrackStats:
    """Receive state of one (stream, track): what receiver reports carry."""

    kind: int
    """KIND_AUDIO or KIND_VIDEO, from the first frame."""
    highest_seq: int = 0
    """Highest frame_seq decrypted on this track (released or waiting)."""
    frames_completed: int = 0
    """Frames decrypted on this track."""
    frames_lost: int = 0
    """Sequence numbers given up on (skipped over after the reorder wait)."""
    frames_late: int = 0
    """Frames that arrived after the sequence had moved past them."""
    waiting_for_keyframe: bool = True
    """True while video cannot be decoded until the next keyframe."""

    def copy(self) -> TrackStats:
        return TrackStats(**{f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(slots=True)
class _Track:
    stats: TrackStats
    next_seq: int | None  # None until the first release: the start also waits for reordering
    pending: dict[int, tuple[FrameDecrypted, float]] = field(default_factory=dict)
    skipped: bool = False  # a gap was skipped since the last released frame


def _with_decodable(ev: FrameDecrypted, decodable: bool) -> FrameDecrypted:
    # Spelled out rather than dataclasses.replace: this runs once per frame and replace()
    # introspects the fields each time (about 2.5x slower).
    return FrameDecrypted(ev.header, ev.payload, ev.kid, ev.epoch, ev.ctr, ev.sender_leaf, decodable)


class FrameOrderer:
    """Releases each track's frames in sequence; bounded in frames, bytes and tracks."""

    def __init__(
        self,
        wait: float = REORDER_WAIT_S,
        max_frames: int = MAX_REORDER_FRAMES,
        max_bytes: int = MAX_REORDER_BYTES,
        max_tracks: int = MAX_TRACKS,
    ) -> None:
        self.wait = wait
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.max_tracks = max_tracks
        self._tracks: OrderedDict[tuple[int, int], _Track] = OrderedDict()
        self._blocked: set[tuple[int, int]] = set()  # tracks with frames waiting
        self.pending_bytes = 0

    # -- queries --------------------------------------------------------------------------

    def waiting_for_keyframe(self, stream_id: int, track_id: int) -> bool:
        tr = self._tracks.get((stream_id, track_id))
        return True if tr is None else tr.stats.waiting_for_keyframe

    def stats(self, stream_id: int, track_id: int) -> TrackStats | None:
        tr = self._tracks.get((stream_id, track_id))
        return None if tr is None else tr.stats.copy()

    def all_stats(self) -> dict[tuple[int, int], TrackStats]:
        return {k: tr.stats.copy() for k, tr in self._tracks.items()}

    def next_expiry(self) -> float | None:
        times = [min(t for _, t in self._tracks[k].pending.values()) + self.wait for k in self._blocked]
        return min(times) if times else None

    # -- verbs ----------------------------------------------------------------------------

    def push(self, ev: FrameDecrypted, now: float) -> list[FrameDecrypted]:
        """Take one decrypted frame; returns the frames now releasable, in order."""
        fh = ev.header
        key = (fh.stream_id, fh.track_id)
        out: list[FrameDecrypted] = []
        tr = self._tracks.get(key)
        if tr is None:
            tr = _Track(
                stats=TrackStats(
                    kind=fh.kind, highest_seq=fh.frame_seq, waiting_for_keyframe=fh.kind != KIND_AUDIO
                ),
                # A keyframe or audio frame can start the track at once: anything older that
                # shows up later would be of a previous group of pictures (undecodable anyway)
                # or independent audio. A delta frame waits, so the start is in order too.
                next_seq=fh.frame_seq if fh.keyframe or fh.kind == KIND_AUDIO else None,
            )
            self._tracks[key] = tr
            while len(self._tracks) > self.max_tracks:
                old_key, old = next(iter(self._tracks.items()))
                out += self._flush(old_key, old, now)
                del self._tracks[old_key]
        else:
            self._tracks.move_to_end(key)
        st = tr.stats
        if fh.keyframe and tr.next_seq is not None and tr.next_seq - fh.frame_seq > RESTART_BACKSTEP:
            log.info("ordering: track %s restarts at %d (was at %d)", key, fh.frame_seq, tr.next_seq)
            out += self._flush(key, tr, now)
            tr.next_seq = fh.frame_seq
            tr.skipped = False
            st.highest_seq = fh.frame_seq
        st.frames_completed += 1
        st.highest_seq = max(st.highest_seq, fh.frame_seq)
        if (tr.next_seq is not None and fh.frame_seq < tr.next_seq) or fh.frame_seq in tr.pending:
            st.frames_late += 1
            out.append(_with_decodable(ev, fh.kind == KIND_AUDIO))
            return out
        tr.pending[fh.frame_seq] = (ev, now)
        self.pending_bytes += len(ev.payload)
        self._blocked.add(key)
        out += self._drain(key, tr, now)
        while self.pending_bytes > self.max_bytes and self._blocked:
            victim = min(self._blocked, key=lambda k: min(t for _, t in self._tracks[k].pending.values()))
            out += self._drain(victim, self._tracks[victim], now, force=True)
        return out

    def expire(self, now: float) -> list[FrameDecrypted]:
        """Release frames whose reorder wait ran out (skipping the gaps before them)."""
        out: list[FrameDecrypted] = []
        for key in list(self._blocked):
            out += self._drain(key, self._tracks[key], now)
        return out

    def flush_stream(self, stream_id: int, now: float) -> list[FrameDecrypted]:
        """Release everything waiting on one stream (its link went away)."""
        out: list[FrameDecrypted] = []
        for key in [k for k in self._blocked if k[0] == stream_id]:
            out += self._flush(key, self._tracks[key], now)
        return out

    # -- internals ------------------------------------------------------------------------

    def _drain(
        self, key: tuple[int, int], tr: _Track, now: float, force: bool = False
    ) -> list[FrameDecrypted]:
        out: list[FrameDecrypted] = []
        while tr.pending:
            if tr.next_seq is not None:
                item = tr.pending.pop(tr.next_seq, None)
                if item is not None:
                    self.pending_bytes -= len(item[0].payload)
                    out.append(self._release(tr, item[0]))
                    tr.next_seq += 1
                    continue
            if tr.next_seq is None:
                first = min(tr.pending)
                head = tr.pending[first][0].header
                if head.keyframe or head.kind == KIND_AUDIO:
                    tr.next_seq = first  # the earliest frame waiting can start the track
                    continue
            oldest = min(t for _, t in tr.pending.values())
            if force or len(tr.pending) > self.max_frames or now >= oldest + self.wait:
                first = min(tr.pending)
                if tr.next_seq is not None:
                    tr.stats.frames_lost += first - tr.next_seq
                    tr.skipped = True
                    log.debug("ordering: track %s skips %d..%d", key, tr.next_seq, first - 1)
                tr.next_seq = first
                force = False
                continue
            break
        if not tr.pending:
            self._blocked.discard(key)
        return out

    def _flush(self, key: tuple[int, int], tr: _Track, now: float) -> list[FrameDecrypted]:
        out: list[FrameDecrypted] = []
        while tr.pending:
            out += self._drain(key, tr, now, force=True)
        return out

    def _release(self, tr: _Track, ev: FrameDecrypted) -> FrameDecrypted:
        fh = ev.header
        st = tr.stats
        if fh.kind == KIND_AUDIO:
            tr.skipped = False
            st.waiting_for_keyframe = False
            return _with_decodable(ev, True)
        if tr.skipped:
            st.waiting_for_keyframe = True
            tr.skipped = False
        if fh.keyframe:
            st.waiting_for_keyframe = False
        decodable = not st.waiting_for_keyframe
        if fh.end_of_stream:
            # Whatever follows an end of stream starts a new sequence: wait for its keyframe.
            st.waiting_for_keyframe = True
        return _with_decodable(ev, decodable)
