"""Hop-by-hop loss recovery in the forwarding engine (``EngineConfig.retransmit``, on by default).

Uses ``media/nack.py`` and ``media/retransmit.py``: every fragment accepted from a publisher is
also kept ~1 s in its track's :class:`~ciris_av_plugin.media.retransmit.RetransmitRing` (one O(1)
append of the bytes object already held) and shown to a
:class:`~ciris_av_plugin.media.nack.LossDetector`; the engine's ingress does both through
:attr:`Repair.observe` and :meth:`Repair.new_ring`. A subscriber's ``PT_NACK`` is answered from
the ring: repairs (flagged ``FLAG_RETRANSMISSION``, re-split to its MDU) go to the front of their
priority class with their original arrival time, so the age bounds and strict priorities hold for
them; media already near its age bound is not resent, nor frames the subscriber awaits a keyframe
for, or the relay dropped for it, or that came before it joined or resumed the track, nor anything
to a subscriber whose queue is over half its byte cap. NACKs are rate-limited per link, with a
retransmitted-bytes budget and bounded work per NACK; every refusal is a counted drop. Fragments
lost on the publisher's hop are NACKed upstream (:class:`NackUpstream` events) until
``nack_deadline``, after which the track gets a (coalesced) keyframe request.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

from ..media.nack import LossDetector
from ..media.retransmit import NACK_RATE, NackResponder, RetransmitRing
from ..protocol.media_wire import FLAG_AUDIO, FLAG_KEYFRAME
from ..protocol.nack import NackError, decode_nack
from .egress import Egress, Item, Subscriber
from .engine_config import (
    BASE_LAYER_PRIORITY,
    CLS_AUDIO,
    CLS_KEY,
    CLS_REST,
    CONGESTED_SHARE,
    N_CLASSES,
    EngineConfig,
)
from .events import NackUpstream
from .tracks import Stream, Track

# Where a stored fragment's priority (u8) and gop_id (u32) sit in its header (media/wire.py): a
# repair is classed and queued like the original without building a FragmentHeader.
_PRIORITY_OFFSET = 11
_GOP_OFFSET = 16
_U32S = struct.Struct(">I")


class Repair:
    """The engine's NACK responder (downstream) and loss detector (upstream), and their counters.

    ``streams`` and ``tracks`` are the engine's own dicts (read only here); repairs are queued and
    refusals counted through ``egress``; a fragment given up on upstream asks ``request_keyframe``.
    """

    def __init__(
        self,
        config: EngineConfig,
        egress: Egress,
        streams: dict[int, Stream],
        tracks: dict[int, Track],
        request_keyframe: Callable[[Track, float], None],
    ) -> None:
        self.config = config
        self._egress = egress
        self._streams = streams
        self._tracks = tracks
        self._request_keyframe = request_keyframe
        self._responder = NackResponder()
        self._detector = LossDetector(deadline=config.nack_deadline) if config.retransmit else None
        # The two calls ingress makes per fragment (None with retransmission off): show a fragment
        # to the loss detector; ask whether a publisher's repair is still wanted.
        self.observe = self._detector.observe if self._detector is not None else None
        self.wants = self._detector.wants if self._detector is not None else None
        self.nacks_in = 0
        self.retransmitted = 0

    def new_ring(self) -> RetransmitRing | None:
        """The ring a new track keeps its fragments in (None: retransmission is off)."""
        return RetransmitRing() if self.config.retransmit else None

    def forget_link(self, link_id: bytes) -> None:
        """The link is gone: its NACK rate and budget state go with it."""
        self._responder.forget(link_id)

    def restart_track(self, track: Track) -> None:
        """A new link feeds ``track`` and its numbering may restart: forget what the old feed left."""
        if track.ring is not None:
            track.ring.clear()
        if self._detector is not None:
            self._detector.forget_track(track.stream_id, track.track_id)

    def _refuse(self, sub: Subscriber, reason: str) -> None:
        """A refused NACK range: counted with the engine's drops (by reason) and per subscriber."""
        self._egress.count_drop(None, reason)
        sub.nack_refused[reason] = sub.nack_refused.get(reason, 0) + 1

    def receive_nack(self, link_id: bytes, packet: bytes, now: float) -> None:
        """A subscriber asks for fragments again: answer from the tracks' rings (bounded work).

        Repairs go to the front of their priority class (they are older than anything queued
        behind them) with their original arrival time, so the queue's age bounds and strict
        priorities apply to them as to any packet; what is already too old is not resent.
        """
        count_drop = self._egress.count_drop
        try:
            nack = decode_nack(packet)
        except NackError:
            count_drop(None, "bad_nack")
            return
        sub = self._egress.subs.get(link_id)
        if sub is None:
            count_drop(None, "nack_not_subscriber")
            return
        if nack.stream_id not in sub.streams:
            count_drop(None, "nack_other_stream")
            return
        if self._detector is None:
            count_drop(None, "nack_unsupported")
            return
        if sub.stalled:
            count_drop(None, "nack_stalled")
            return
        cfg = self.config
        if sub.qbytes > cfg.max_queued_bytes * CONGESTED_SHARE:
            # The subscriber is falling behind (its losses are likely the relay's own drops):
            # repairs would only deepen the queue. The keyframe path takes over.
            self._refuse(sub, "nack_congested")
            return
        responder = self._responder
        if not responder.admit(link_id, now):
            self._refuse(sub, NACK_RATE)
            return
        self.nacks_in += 1
        stream = self._streams[nack.stream_id]
        sid8 = nack.stream_id << 8
        tracks = stream.tracks
        # A little under the queue bounds, so a repair is not already expiring when it is queued.
        audio_age, video_age = cfg.audio_max_age * 0.8, cfg.video_max_age * 0.8

        def ring_of(tid: int) -> RetransmitRing | None:
            track = tracks.get(tid)
            return None if track is None else track.ring

        def allow(tid: int, seq: int) -> bool:
            tkey = sid8 | tid
            return tkey not in sub.waiting and sub.skip_frame.get(tkey) != seq

        restart_at = sub.restart_at

        def not_before(tid: int) -> float:
            return restart_at.get(sid8 | tid, -math.inf)

        repairs = responder.answer(
            link_id,
            nack,
            ring_of,
            now,
            sub.mdu,
            lambda flags: audio_age if flags & FLAG_AUDIO else video_age,
            allow,
            lambda reason: self._refuse(sub, reason),
            not_before,
        )
        if not repairs:
            return
        by_class: list[list[Item]] = [[] for _ in range(N_CLASSES)]
        nbytes = 0
        for r in repairs:
            pkt, flags = r.packet, r.flags
            if flags & FLAG_AUDIO:
                cls = CLS_AUDIO
            elif flags & FLAG_KEYFRAME or pkt[_PRIORITY_OFFSET] < BASE_LAYER_PRIORITY:
                cls = CLS_KEY
            else:
                cls = CLS_REST
            (gop,) = _U32S.unpack_from(pkt, _GOP_OFFSET)
            by_class[cls].append((r.arrival, pkt, sid8 | r.track_id, r.frame_seq, gop, flags, False))
            nbytes += len(pkt)
        sub.retransmitted += len(repairs)
        self.retransmitted += len(repairs)
        self._egress.push_front(sub, by_class, nbytes, now)

    def nack_upstream(self, now: float) -> list[NackUpstream]:
        """The NACKs due now for fragments lost on the publisher's hop; missed deadlines ask for keyframes."""
        det = self._detector
        out: list[NackUpstream] = []
        if det is None:
            return out
        # On a long upstream round trip, keep asking for as long as a repair can still arrive.
        det.deadline = max(self.config.nack_deadline, det.repair_wait())
        due = det.next_due()
        if due is not None and now >= due:
            tracks = self._tracks

            def route(sid: int, tid: int) -> bytes | None:
                track = tracks.get((sid << 8) | tid)
                return None if track is None else track.publisher

            for nack in det.poll(now, route):
                if nack.route is None:
                    self._egress.count_drop(None, "nack_no_publisher")
                    continue
                out.append(NackUpstream(nack.route, nack.stream_id, nack.packet))
        for g in det.take_gave_up():
            if not g.audio:
                track = self._tracks.get((g.stream_id << 8) | g.track_id)
                if track is not None:
                    self._request_keyframe(track, now)
        return out

    def stats(self) -> dict[str, Any]:
        """The ``retransmit`` section of the engine's stats."""
        return {
            "nacks_in": self.nacks_in,
            "packets_retransmitted": self.retransmitted,
            "responder": dict(self._responder.counters),
            "upstream": {} if self._detector is None else dict(self._detector.counters),
            "ring_bytes": sum(t.ring.bytes for t in self._tracks.values() if t.ring is not None),
        }
