"""A trivial forwarder for plumbing tests: every publisher packet to every subscriber of its stream.

It stands in for ``relay/engine.py`` where the test is about RNS plumbing, not forwarding policy:
no re-splitting (packets must fit every subscriber's MDU), no reports, a bounded deque per
subscriber so a stuck one cannot grow memory.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

MAX_QUEUE = 1024


@dataclass
class PassthroughForwarder:
    publishers: dict[bytes, int] = field(default_factory=dict)
    subscribers: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    queues: dict[bytes, deque[bytes]] = field(default_factory=dict)
    dropped: int = 0
    forwarded_in: int = 0

    def add_publisher(self, link_id: bytes, stream_id: int, now: float) -> None:
        self.publishers[link_id] = stream_id

    def add_subscriber(self, link_id: bytes, stream_id: int, mdu: int, now: float) -> None:
        self.subscribers[link_id] = (stream_id, mdu)
        self.queues[link_id] = deque()

    def remove_link(self, link_id: bytes, now: float) -> None:
        self.publishers.pop(link_id, None)
        self.subscribers.pop(link_id, None)
        self.queues.pop(link_id, None)

    def receive_packet(self, link_id: bytes, packet: bytes, now: float) -> None:
        stream = self.publishers.get(link_id)
        if stream is None or len(packet) < 10:
            return
        self.forwarded_in += 1
        (sid,) = struct.unpack_from(">Q", packet, 2)
        for sub, (stream_id, mdu) in self.subscribers.items():
            if stream_id == sid and len(packet) <= mdu:
                q = self.queues[sub]
                if len(q) >= MAX_QUEUE:
                    self.dropped += 1
                    q.popleft()
                q.append(packet)

    def next_packets(self, link_id: bytes, now: float, max_packets: int) -> list[bytes]:
        q = self.queues.get(link_id)
        out: list[bytes] = []
        while q and len(out) < max_packets:
            out.append(q.popleft())
        return out

    def has_pending(self, link_id: bytes) -> bool:
        return bool(self.queues.get(link_id))

    def tick(self, now: float) -> list[object]:
        return []

    def stats(self) -> dict[str, int]:
        return {"in": self.forwarded_in, "dropped": self.dropped}
