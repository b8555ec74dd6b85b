"""Keyframe requests of the forwarding engine: coalesced and rate-limited per track.

The engine asks for a keyframe when a subscriber joins (for every video track it must start on),
stalls and resumes, reports a loss (beyond the discardable frames the relay itself dropped for it,
which break no reference chain), or loses a group of pictures. Requests are coalesced (at most
one outstanding per track: cleared when a keyframe of a newer group arrives, which the engine's
ingress notes on the track, or after ``keyframe_request_timeout``) and rate-limited (at most one
per ``keyframe_min_interval`` per track); :meth:`KeyframeRequests.poll` turns the due ones into
:class:`KeyframeRequested` events addressed to the link that feeds the track.
"""

from __future__ import annotations

from typing import Any

from .engine_config import EngineConfig
from .events import KeyframeRequested
from .tracks import Track


class KeyframeRequests:
    """The tracks waiting for a keyframe request, and the counters of what became of requests.

    Per-track request state lives on the :class:`Track` (``kf_pending``, ``kf_outstanding``,
    ``kf_last_sent``) so a keyframe arriving costs ingress no lookup here.
    """

    def __init__(self, config: EngineConfig) -> None:
        self._min_interval = config.keyframe_min_interval
        self._timeout = config.keyframe_request_timeout
        self._pending: dict[int, Track] = {}
        self.sent = 0
        self.coalesced = 0
        self.rate_limited = 0
        self.no_publisher = 0

    def request(self, track: Track, now: float, count: bool = True) -> None:
        """Note that ``track`` needs a keyframe; :meth:`poll` sends it, coalesced and rate-limited.

        ``count=False`` is a periodic re-ask for a subscriber still waiting: it is not a new need,
        so it is not counted as coalesced or rate-limited.
        """
        if track.audio:
            return
        if track.kf_pending or (track.kf_outstanding and now - track.kf_last_sent < self._timeout):
            if count:
                self.coalesced += 1
            return
        if count and now - track.kf_last_sent < self._min_interval:
            self.rate_limited += 1
        track.kf_pending = True
        self._pending[track.tkey] = track

    def forget(self, tkey: int) -> None:
        """The track is gone (its stream was freed): nothing is requested for it any more."""
        self._pending.pop(tkey, None)

    def poll(self, now: float) -> list[KeyframeRequested]:
        """The requests due now, each addressed to the link feeding its track."""
        out: list[KeyframeRequested] = []
        if not self._pending:
            return out
        for tkey, track in list(self._pending.items()):
            if track.publisher is None:
                # Nobody feeds the track right now; a later subscriber or report asks again.
                self.no_publisher += 1
                track.kf_pending = False
                del self._pending[tkey]
                continue
            if now - track.kf_last_sent < self._min_interval:
                continue
            track.kf_pending = False
            track.kf_outstanding = True
            track.kf_last_sent = now
            del self._pending[tkey]
            self.sent += 1
            out.append(KeyframeRequested(track.stream_id, track.track_id, track.publisher))
        return out

    def stats(self, losses_excused: int) -> dict[str, Any]:
        """The ``keyframe_requests`` section of the engine's stats (with the losses that asked none)."""
        return {
            "sent": self.sent,
            "coalesced": self.coalesced,
            "rate_limited": self.rate_limited,
            "no_publisher": self.no_publisher,
            "losses_excused": losses_excused,
            "pending": len(self._pending),
        }
