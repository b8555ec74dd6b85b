"""Relay-side state of a stream and its tracks, as the forwarding engine's parts see them.

A :class:`Stream` is who publishes and who subscribes; a :class:`Track` is one (stream, track)
the relay has seen fragments on: the link feeding it, its latest group of pictures, its keyframe
request state (written by ``keyframes.py``) and its retransmission ring (``repair.py``). Plain
slotted objects: the ingress hot path reads and writes their fields directly.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..media.retransmit import RetransmitRing

if TYPE_CHECKING:
    from .egress import Subscriber


class Track:
    """Relay-side state of one (stream, track): who feeds it, its latest group, keyframe requests."""

    __slots__ = (
        "stream_id",
        "track_id",
        "tkey",
        "audio",
        "publisher",
        "last_gop",
        "kf_pending",
        "kf_outstanding",
        "kf_last_sent",
        "ring",
    )

    def __init__(
        self, stream_id: int, track_id: int, audio: bool, publisher: bytes, ring: RetransmitRing | None = None
    ) -> None:
        self.stream_id = stream_id
        self.track_id = track_id
        # The track key used everywhere per-track state is kept: stream id and track id in one int.
        self.tkey = (stream_id << 8) | track_id
        self.audio = audio
        self.publisher: bytes | None = publisher
        self.last_gop: int | None = None
        self.kf_pending = False
        self.kf_outstanding = False
        self.kf_last_sent = -math.inf
        # Packets received from the publisher, kept ~1 s to answer subscribers' NACKs.
        self.ring = ring


class Stream:
    """One stream: the links allowed to feed it, its subscribers in arrival order, its tracks."""

    __slots__ = ("stream_id", "publishers", "subs", "tracks")

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.publishers: set[bytes] = set()
        self.subs: list[Subscriber] = []
        self.tracks: dict[int, Track] = {}

    def stats(self) -> dict[str, Any]:
        """This stream's entry in the engine's ``per_stream`` stats."""
        return {
            "publishers": len(self.publishers),
            "subscribers": len(self.subs),
            "tracks": {
                str(tid): {"audio": tr.audio, "fed": tr.publisher is not None, "gop": tr.last_gop}
                for tid, tr in self.tracks.items()
            },
        }
