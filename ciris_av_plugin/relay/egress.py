"""Per-subscriber egress queues of the forwarding engine, served in strict priority, and the drop policy.

One queue per subscriber link in four strict-priority classes: control > audio > keyframe or base
layer (fragment priority below the default 128) > the rest. Each item is a tuple
``(arrival, packet, track_key, frame_seq, gop_id, flags, first)`` (``engine_config.I_*``) so the hot
path allocates no dataclasses. Queues are bounded by age on the relay's clock, measured from
arrival (``video_max_age``, ``audio_max_age``) and, as a safety net, by bytes and packets. The
engine's ingress appends to a :class:`Subscriber`'s queues directly (its fan-out loop is the hot
path); everything that takes items out again is here.

**Drop policy** (ARCHITECTURE.md, "The relay's forwarding engine"):

1. a discardable video frame whose fragments have waited more than ``discardable_max_age`` (half
   the video bound) is dropped whole: the subscriber is falling behind and these cost nothing to
   lose;
2. a non-discardable video fragment older than ``video_max_age`` drops the rest of its group of
   pictures (queued and still to come) and the subscriber resumes at the next keyframe of that
   track, which is requested upstream;
3. when a keyframe of a newer group is sent, queued fragments of older groups of that track that
   have waited longer than ``discardable_max_age`` go (merely reordered ones stay: receivers
   reorder by frame_seq);
4. the byte/packet cap sheds in the same order (discardable frames, then the oldest group), down
   to ``SHED_TARGET`` of the cap, and touches audio only when no video is left in the queue: audio
   is never dropped for video;
5. a stalled subscriber (no receiver report for ``stall_timeout``) loses its whole queue and
   everything that arrives while it is stalled; when it reports again it restarts at a keyframe;
6. a subscriber whose reports show a frame sent more than ``max_inflight_age`` ago still not
   complete has a backlog inside RNS or socket buffers, where the relay cannot drop: it skips to
   the next keyframe of each video track so the backlog drains (only tracks the subscriber reports
   progress on are judged; a bare liveness report says nothing about a track).

:meth:`Egress.count_drop` is the engine's one drop counter (by reason, engine-wide and per
subscriber), so ingress and repair count through it too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ..protocol.media_wire import FLAG_DISCARDABLE, FLAG_KEYFRAME
from .engine_config import (
    AGE_SAMPLES,
    CLS_AUDIO,
    CLS_CONTROL,
    CLS_KEY,
    CLS_REST,
    EXCUSE_WINDOW,
    I_FIRST,
    I_FLAGS,
    I_GOP,
    I_PKT,
    I_SEQ,
    I_T,
    I_TKEY,
    INFLIGHT_LOG,
    N_CLASSES,
    SHED_TARGET,
    EngineConfig,
    newer,
)
from .tracks import Track

Item = tuple[Any, ...]


class Subscriber:
    """One subscriber link: its egress queue and per-track start/skip state."""

    __slots__ = (
        "link_id",
        "mdu",
        "streams",
        "queues",
        "qbytes",
        "qpkts",
        "stalled",
        "stalled_at",
        "last_report",
        "waiting",
        "skip_frame",
        "sent_gop",
        "inflight",
        "inflight_age",
        "reported",
        "excused",
        "lost",
        "pkts_out",
        "bytes_out",
        "drops",
        "reports",
        "nack_refused",
        "retransmitted",
        "restart_at",
    )

    def __init__(self, link_id: bytes, mdu: int, now: float) -> None:
        self.link_id = link_id
        self.mdu = mdu
        self.streams: set[int] = set()
        self.queues: list[deque[Item]] = [deque() for _ in range(N_CLASSES)]
        self.qbytes = 0
        self.qpkts = 0
        self.stalled = False
        self.stalled_at = 0.0
        # A new subscriber gets one stall timeout from its subscription to send its first report.
        self.last_report = now
        # track key -> gop it must skip past (None: any keyframe) before video flows on that track.
        self.waiting: dict[int, int | None] = {}
        # track key -> frame_seq of the last frame dropped whole (its other fragments follow it).
        self.skip_frame: dict[int, int] = {}
        # track key -> gop of the last keyframe fragment sent (older groups still queued are stale).
        self.sent_gop: dict[int, int] = {}
        # track key -> (frame_seq, relay time its first packet was sent) of frames not yet reported
        # complete: how long the path (RNS and socket buffers) has been holding media for it.
        self.inflight: dict[int, deque[tuple[int, float]]] = {}
        self.inflight_age = 0.0
        # Track keys this subscriber reports progress on; only those are judged for in-flight age
        # (a bare liveness report says nothing about a track).
        self.reported: set[int] = set()
        # track key -> [discardable frames the relay dropped not yet matched by a reported loss,
        # relay time of the latest such drop].
        self.excused: dict[int, list[Any]] = {}
        self.lost = 0
        self.pkts_out = 0
        self.bytes_out = 0
        self.drops: dict[str, int] = {}
        self.reports = 0
        # NACK ranges refused by reason: kept apart from ``drops`` (no media was dropped).
        self.nack_refused: dict[str, int] = {}
        self.retransmitted = 0
        # track key -> relay time this subscriber (re)started the track (subscription, resume
        # after a stall, a dropped group of pictures): frames the relay had before are not resent.
        self.restart_at: dict[int, float] = {}


class Egress:
    """Every subscriber's queue: serving it, bounding it under the drop policy, counting drops.

    ``tracks`` (track key -> :class:`Track`, the engine's own dict) and ``request_keyframe`` are
    what a dropped group of pictures needs from the rest of the engine: whether the publisher has
    moved on, and a keyframe to restart at. ``on_pending(link_id)`` is the engine's hook, called
    when a queue goes from empty to non-empty outside ingress (repairs).
    """

    def __init__(
        self,
        config: EngineConfig,
        tracks: dict[int, Track],
        request_keyframe: Callable[[Track, float], None],
        on_pending: Callable[[bytes], None] | None,
    ) -> None:
        self.config = config
        self._max_age = tuple(config.max_age(c) for c in range(N_CLASSES))
        self._tracks = tracks
        self._request_keyframe = request_keyframe
        self._on_pending = on_pending
        self.subs: dict[bytes, Subscriber] = {}
        self.drops: dict[str, int] = {}
        self.ages: deque[float] = deque(maxlen=AGE_SAMPLES)
        self.age_max = 0.0
        self.packets_out = 0
        self.frames_out = 0
        self.bytes_out = 0
        self.inflight_resets = 0

    def count_drop(self, sub: Subscriber | None, reason: str, n: int = 1) -> None:
        """Count ``n`` packets dropped for ``reason``, engine-wide and for ``sub`` if given."""
        self.drops[reason] = self.drops.get(reason, 0) + n
        if sub is not None:
            sub.drops[reason] = sub.drops.get(reason, 0) + n

    # ------------------------------------------------------------------ serving

    def next_packets(self, link_id: bytes, now: float, max_packets: int = 64) -> list[bytes]:
        """Up to ``max_packets`` packets to send to ``link_id`` now, in strict priority order.

        Items past their age bound are dropped here under the drop policy. Returns ``[]`` for an
        unknown or stalled link.
        """
        sub = self.subs.get(link_id)
        out: list[bytes] = []
        if sub is None or sub.stalled or not sub.qpkts or max_packets <= 0:
            return out
        ages = self.ages
        age_max = self.age_max
        nbytes = 0
        frames = 0
        disc_age = self.config.discardable_max_age
        queues = sub.queues
        inflight = sub.inflight
        for cls in range(N_CLASSES):
            q = queues[cls]
            if not q:
                continue
            limit = self._max_age[cls]
            while q:
                item = q[0]
                age = now - item[I_T]
                if age > limit:
                    self._expire(sub, cls, item, now)
                    continue
                if cls >= CLS_KEY:
                    flags = item[I_FLAGS]
                    if flags & FLAG_DISCARDABLE and age > disc_age and not flags & FLAG_KEYFRAME:
                        self._drop_frame(sub, item[I_TKEY], item[I_SEQ], "age_discardable", now)
                        continue
                    if flags & FLAG_KEYFRAME:
                        tkey = item[I_TKEY]
                        gop = item[I_GOP]
                        if sub.sent_gop.get(tkey) != gop:
                            sub.sent_gop[tkey] = gop
                            if sub.qpkts > 1:
                                self._purge_stale(sub, tkey, gop, now - disc_age)
                q.popleft()
                pkt = item[I_PKT]
                out.append(pkt)
                nbytes += len(pkt)
                ages.append(age)
                if age > age_max:
                    age_max = age
                if item[I_FIRST]:
                    frames += 1
                    tkey = item[I_TKEY]
                    if tkey >= 0:
                        log_ = inflight.get(tkey)
                        if log_ is None:
                            log_ = inflight[tkey] = deque(maxlen=INFLIGHT_LOG)
                        log_.append((item[I_SEQ], now))
                if len(out) >= max_packets:
                    break
            if len(out) >= max_packets:
                break
        k = len(out)
        sub.qpkts -= k
        sub.qbytes -= nbytes
        sub.pkts_out += k
        sub.bytes_out += nbytes
        self.packets_out += k
        self.bytes_out += nbytes
        self.frames_out += frames
        self.age_max = age_max
        return out

    def has_pending(self, link_id: bytes) -> bool:
        """Whether ``next_packets`` may return something for ``link_id`` now (not stalled, queue non-empty)."""
        sub = self.subs.get(link_id)
        return sub is not None and not sub.stalled and sub.qpkts > 0

    def send_control(self, link_id: bytes, packet: bytes, now: float) -> bool:
        """Queue a control packet for a subscriber ahead of all media; False if unknown, full or too big."""
        sub = self.subs.get(link_id)
        if sub is None or len(packet) > sub.mdu:
            return False
        q = sub.queues[CLS_CONTROL]
        if len(q) >= self.config.max_control_packets:
            self.count_drop(sub, "cap_control")
            return False
        q.append((now, bytes(packet), -1, 0, 0, 0, False))
        sub.qbytes += len(packet)
        sub.qpkts += 1
        return True

    def push_front(self, sub: Subscriber, by_class: list[list[Item]], nbytes: int, now: float) -> None:
        """Queue repairs at the front of their classes (they are older than anything behind them).

        ``by_class[cls]`` holds the items of class ``cls`` in sending order; ``nbytes`` is their
        total size. The caps apply to them as to any packet.
        """
        was_empty = not sub.qpkts
        n = 0
        for cls, items in enumerate(by_class):
            if items:
                sub.queues[cls].extendleft(reversed(items))
                n += len(items)
        sub.qpkts += n
        sub.qbytes += nbytes
        if sub.qbytes > self.config.max_queued_bytes or sub.qpkts > self.config.max_queued_packets:
            self.shed(sub, now)
        if was_empty and self._on_pending is not None and sub.qpkts:
            self._on_pending(sub.link_id)

    # ------------------------------------------------------------------ subscriber lifecycle

    def stall(self, sub: Subscriber, now: float) -> int:
        """Drop policy step 5: flush ``sub``'s queue and forget its per-track progress; the count flushed."""
        dropped = sub.qpkts
        for q in sub.queues:
            q.clear()
        sub.qpkts = sub.qbytes = 0
        if dropped:
            self.count_drop(sub, "stalled", dropped)
        sub.stalled = True
        sub.stalled_at = now
        sub.skip_frame.clear()
        sub.excused.clear()
        sub.sent_gop.clear()
        sub.inflight.clear()
        sub.inflight_age = 0.0
        return dropped

    def remove(self, link_id: bytes) -> Subscriber | None:
        """Forget the subscriber ``link_id`` (if it is one), counting its queue as dropped."""
        sub = self.subs.pop(link_id, None)
        if sub is not None:
            if sub.qpkts:
                self.count_drop(sub, "link_removed", sub.qpkts)
            for q in sub.queues:
                q.clear()
            sub.qpkts = sub.qbytes = 0
        return sub

    def age_purge(self, sub: Subscriber, now: float) -> None:
        """Apply the age bounds to queue fronts of a subscriber whose sender is not draining."""
        for cls in (CLS_AUDIO, CLS_KEY, CLS_REST):
            q = sub.queues[cls]
            limit = self._max_age[cls]
            while q and now - q[0][I_T] > limit:
                self._expire(sub, cls, q[0], now)

    def check_inflight(self, sub: Subscriber, now: float) -> None:
        """Bound the age of media the path holds for ``sub`` (ARCHITECTURE.md, receiver reports).

        RNS gives no backpressure, so a frame sent long ago and still not reported complete means
        the link's buffers hold a backlog the relay can no longer drop from. Past
        ``max_inflight_age`` the subscriber skips to the next keyframe of each video track (drop
        policy step 2 applied early) so the backlog drains instead of growing; the log is reset so
        the next decision rests on frames sent after this one.
        """
        oldest = now
        reported = sub.reported
        for tkey, log_ in sub.inflight.items():
            if log_ and log_[0][1] < oldest and tkey in reported:
                oldest = log_[0][1]
        sub.inflight_age = age = now - oldest
        if age <= self.config.max_inflight_age:
            return
        self.inflight_resets += 1
        for tkey, log_ in sub.inflight.items():
            track = self._tracks.get(tkey)
            if track is not None and not track.audio and track.last_gop is not None:
                self._drop_gop(sub, tkey, track.last_gop, "inflight_gop", now)
            log_.clear()
        sub.inflight_age = 0.0

    # ------------------------------------------------------------------ drop policy

    def _expire(self, sub: Subscriber, cls: int, item: Item, now: float) -> None:
        """The front ``item`` of class ``cls`` is past its age bound: drop it under the policy."""
        if cls == CLS_AUDIO:
            sub.queues[cls].popleft()
            sub.qpkts -= 1
            sub.qbytes -= len(item[I_PKT])
            self.count_drop(sub, "age_audio")
        elif item[I_FLAGS] & FLAG_DISCARDABLE and not item[I_FLAGS] & FLAG_KEYFRAME:
            self._drop_frame(sub, item[I_TKEY], item[I_SEQ], "age_discardable", now)
        else:
            self._drop_gop(sub, item[I_TKEY], item[I_GOP], "age_gop", now)

    def _drop_frame(self, sub: Subscriber, tkey: int, seq: int, reason: str, now: float) -> None:
        """Drop one whole video frame: queued fragments now, later ones on arrival."""
        sub.skip_frame[tkey] = seq
        self._purge(sub, lambda it: it[I_TKEY] == tkey and it[I_SEQ] == seq, reason)
        self._gave_up_frame(sub, tkey, seq, now)

    @staticmethod
    def _gave_up_frame(sub: Subscriber, tkey: int, seq: int, now: float) -> None:
        """The relay dropped a discardable frame for ``sub``: its loss needs no keyframe, and if its
        head was sent it will never complete, so it no longer counts as in flight."""
        ex = sub.excused.get(tkey)
        if ex is None or now - ex[1] > EXCUSE_WINDOW:
            sub.excused[tkey] = [1, now]
        else:
            ex[0] += 1
            ex[1] = now
        log_ = sub.inflight.get(tkey)
        if log_:
            kept = [e for e in log_ if e[0] != seq]
            if len(kept) != len(log_):
                log_.clear()
                log_.extend(kept)

    def _drop_gop(self, sub: Subscriber, tkey: int, gop: int, reason: str, now: float) -> None:
        """Drop the rest of group ``gop`` (and older) of one track; resume at a newer keyframe."""
        self._purge(sub, lambda it: it[I_TKEY] == tkey and not newer(it[I_GOP], gop), reason)
        log_ = sub.inflight.get(tkey)
        if log_:
            # Frames of the dropped group will not complete; the track restarts at a keyframe.
            log_.clear()
        track = self._tracks.get(tkey)
        if track is None:
            return
        # If the publisher has already moved on to a newer group, that group is flowing (or queued)
        # normally and nothing needs to wait; otherwise hold the track until a newer keyframe, from
        # which it restarts for this subscriber (the dropped frames are not repaired).
        if track.last_gop is None or not newer(track.last_gop, gop):
            sub.restart_at[tkey] = now
            prev = sub.waiting.get(tkey, gop)
            sub.waiting[tkey] = gop if prev is None or not newer(prev, gop) else prev
            self._request_keyframe(track, now)

    def _purge_stale(self, sub: Subscriber, tkey: int, gop: int, late: float) -> None:
        """A keyframe of ``gop`` is going out: older groups of its track that arrived before
        ``late`` are stale (the receiver restarts decoding here); merely reordered ones stay."""
        self._purge(
            sub,
            lambda it: it[I_TKEY] == tkey and it[I_T] < late and newer(gop, it[I_GOP]),
            "stale_gop",
        )

    def _purge(self, sub: Subscriber, pred: Callable[[Item], bool], reason: str) -> None:
        """Remove video items matching ``pred`` from ``sub``'s queue, counting them under ``reason``."""
        dropped = 0
        for cls in (CLS_KEY, CLS_REST):
            q = sub.queues[cls]
            if not q:
                continue
            keep = [it for it in q if not pred(it)]
            if len(keep) == len(q):
                continue
            for it in q:
                if pred(it):
                    dropped += 1
                    sub.qbytes -= len(it[I_PKT])
            q.clear()
            q.extend(keep)
        if dropped:
            sub.qpkts -= dropped
            self.count_drop(sub, reason, dropped)

    def shed(self, sub: Subscriber, now: float) -> None:
        """``sub`` is over a byte/packet cap: shed discardable frames, then old groups, then audio.

        Sheds down to ``SHED_TARGET`` of the caps, not just under them, so a flood pays for one
        queue scan per quarter of the queue rather than one per packet.
        """
        cfg = self.config
        max_b = int(cfg.max_queued_bytes * SHED_TARGET)
        max_p = int(cfg.max_queued_packets * SHED_TARGET)
        queues = sub.queues
        # 1. Discardable frames, oldest first, chosen in one pass and purged in one more.
        excess_b = sub.qbytes - max_b
        excess_p = sub.qpkts - max_p
        chosen: dict[tuple[int, int], None] = {}
        got_b = got_p = 0
        for it in queues[CLS_REST]:
            if it[I_FLAGS] & FLAG_DISCARDABLE:
                frame = (it[I_TKEY], it[I_SEQ])
                if frame not in chosen:
                    if got_b >= excess_b and got_p >= excess_p:
                        break
                    chosen[frame] = None
                got_b += len(it[I_PKT])
                got_p += 1
        if chosen:
            for tkey, seq in chosen:
                sub.skip_frame[tkey] = seq  # arrival order: the newest per track wins
                self._gave_up_frame(sub, tkey, seq, now)
            self._purge(sub, lambda it: (it[I_TKEY], it[I_SEQ]) in chosen, "cap_discardable")
        # 2. Whole groups of pictures, oldest first.
        key_q, rest_q = queues[CLS_KEY], queues[CLS_REST]
        while (sub.qbytes > max_b or sub.qpkts > max_p) and (key_q or rest_q):
            if key_q and (not rest_q or key_q[0][I_T] <= rest_q[0][I_T]):
                victim = key_q[0]
            else:
                victim = rest_q[0]
            self._drop_gop(sub, victim[I_TKEY], victim[I_GOP], "cap_gop", now)
        # 3. No video left: the overflow is audio (or control) alone.
        while sub.qbytes > max_b or sub.qpkts > max_p:
            if queues[CLS_AUDIO]:
                it = queues[CLS_AUDIO].popleft()
                reason = "cap_audio"
            elif queues[CLS_CONTROL]:
                it = queues[CLS_CONTROL].popleft()
                reason = "cap_control"
            else:
                break
            sub.qpkts -= 1
            sub.qbytes -= len(it[I_PKT])
            self.count_drop(sub, reason)

    # ------------------------------------------------------------------ observability

    def queue_age_stats(self) -> dict[str, Any]:
        """The ``queue_age_ms`` section of the engine's stats: recent median and maxima of queue age."""
        ages = sorted(self.ages)
        p50 = ages[len(ages) // 2] if ages else 0.0
        return {
            "p50": p50 * 1000.0,
            "max_recent": (ages[-1] if ages else 0.0) * 1000.0,
            "max": self.age_max * 1000.0,
            "samples": len(ages),
        }

    def subscriber_stats(self) -> dict[str, Any]:
        """The ``subscribers`` section of the engine's stats, keyed by link id in hex."""
        subscribers = {}
        for link_id, sub in self.subs.items():
            if sub.stalled:
                state = "stalled"
            elif sub.waiting:
                state = "waiting_keyframe"
            else:
                state = "forwarding"
            subscribers[link_id.hex()] = {
                "state": state,
                "streams": sorted(sub.streams),
                "mdu": sub.mdu,
                "stalled": sub.stalled,
                "queued_packets": sub.qpkts,
                "queued_bytes": sub.qbytes,
                "waiting_keyframe": len(sub.waiting),
                "inflight_ms": sub.inflight_age * 1000.0,
                "packets_out": sub.pkts_out,
                "bytes_out": sub.bytes_out,
                "reports": sub.reports,
                "reported_lost": sub.lost,
                "drops": dict(sub.drops),
                "retransmitted": sub.retransmitted,
                "nack_refused": dict(sub.nack_refused),
            }
        return subscribers
