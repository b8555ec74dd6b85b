"""Publisher and subscriber clients: the media layer's sealer/opener on top of a :class:`RelayClient`.

* :class:`PublisherClient` seals frames (``media.frames.FrameSealer``), cuts them to the link's
  MDU and sends them as unreliable link packets; keyframe requests arriving through the long-poll
  events are remembered per track until the application takes them
  (:meth:`PublisherClient.take_keyframe_request`) or handled by a callback.
* :class:`SubscriberClient` feeds every media packet to ``media.frames.FrameOpener`` and hands
  decrypted frames to a callback; every ~100 ms it sends a receiver report
  (``protocol.reports``) with the highest frame completed and the frames lost per track, which is
  what keeps the relay from marking it stalled.

Both run the opener/sealer under one lock: with the inline receive path packets arrive on one
RNS thread, with the callback path on many.

**Loss recovery** (``recovery=True``, the default): the publisher keeps what it sent for ~1 s in a
``media.retransmit.RetransmitRing`` per track and answers the relay's NACKs from it; the
subscriber runs a ``media.nack.LossDetector`` over every fragment and sends NACKs to the relay as
soon as they are due (from the packet path and the ticker), within the opener's reorder wait, after
which the frame counts as lost and the receiver report asks for a keyframe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import RNS

from ..media.frames import FrameDecrypted, FrameDropped, FrameOpener, FrameSealer
from ..media.nack import LossDetector
from ..media.retransmit import RING_MAX_AGE_S, NackResponder, RetransmitRing
from ..protocol.media_wire import PT_NACK, ForwardingHeader
from ..protocol.nack import NackError, decode_nack
from ..protocol.reports import MAX_REPORT_TRACKS, ReceiverReport, TrackReport, encode_receiver_report
from .client import RelayClient
from .control import Event
from .hook import MODE_AUTO
from .loss import LossInjector

log = logging.getLogger(__name__)

KEYFRAME_REQUESTED = "KeyframeRequested"


class PublisherClient:
    """Publishes one stream through a relay."""

    def __init__(
        self,
        identity: RNS.Identity,
        relay_hash: bytes,
        stream_id: int,
        sealer: FrameSealer,
        *,
        receive_mode: str = MODE_AUTO,
        on_keyframe_request: Callable[[int], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
        recovery: bool = True,
        loss_out: LossInjector | None = None,
        loss_in: LossInjector | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.sealer = sealer
        self.recovery = recovery
        self._rings: dict[int, RetransmitRing] = {}
        self.responder = NackResponder()
        self.nack_drops: dict[str, int] = {}
        self.retransmitted = 0
        self.on_keyframe_request = on_keyframe_request
        self._on_event_extra = on_event
        self._lock = threading.Lock()
        self._keyframe_wanted: set[int] = set()
        self.keyframe_requests = 0
        self.frames_sent = 0
        self.packets_failed = 0
        self.client = RelayClient(
            identity,
            relay_hash,
            receive_mode=receive_mode,
            on_event=self._on_event,
            on_packet=self._on_packet,
            loss_out=loss_out,
            loss_in=loss_in,
        )

    def connect(self) -> None:
        self.client.connect()
        self.client.publish(self.stream_id)

    def close(self) -> None:
        self.client.close()

    def _on_event(self, event: Event) -> None:
        if event.kind == KEYFRAME_REQUESTED and event.data.get("stream_id") == self.stream_id:
            track = event.data.get("track_id")
            if isinstance(track, int):
                with self._lock:
                    self._keyframe_wanted.add(track)
                    self.keyframe_requests += 1
                if self.on_keyframe_request is not None:
                    self.on_keyframe_request(track)
        if self._on_event_extra is not None:
            self._on_event_extra(event)

    def update_keys(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (e.g. ``MediaKeyBinding.sync``) under the lock that guards the sealer, so an
        epoch switch never lands in the middle of sealing a frame."""
        with self._lock:
            return fn()

    def take_keyframe_request(self, track_id: int) -> bool:
        """True (once) if a keyframe was requested for ``track_id`` since the last call."""
        with self._lock:
            if track_id in self._keyframe_wanted:
                self._keyframe_wanted.discard(track_id)
                return True
            return False

    def send_frame(self, fh: ForwardingHeader, payload: bytes) -> int:
        """Seal and send one frame; returns the number of packets that left (0 if the link is down)."""
        with self._lock:
            sealed = self.sealer.seal(fh, payload)
        try:
            packets = sealed.packets(self.client.mdu)
        except Exception:
            # No link right now (reconnecting): the frame is lost, as it would be on the wire.
            self.packets_failed += 1
            return 0
        if self.recovery:
            now = self.client.clock()
            with self._lock:
                ring = self._rings.get(fh.track_id)
                if ring is None:
                    ring = self._rings[fh.track_id] = RetransmitRing()
                for p in packets:
                    ring.add(fh.frame_seq, p, now)
        sent = sum(1 for p in packets if self.client.send(p))
        self.packets_failed += len(packets) - sent
        self.frames_sent += 1
        return sent

    def _on_packet(self, data: bytes) -> None:
        """Media-plane packets from the relay: NACKs for what it lost on our hop."""
        if not data or data[0] != PT_NACK:
            self._nack_drop("unexpected_packet")
            return
        if not self.recovery:
            self._nack_drop("nack_unsupported")
            return
        try:
            nack = decode_nack(data)
        except NackError:
            self._nack_drop("bad_nack")
            return
        if nack.stream_id != self.stream_id:
            self._nack_drop("nack_other_stream")
            return
        try:
            mdu = self.client.mdu
        except Exception:
            return  # the link just went down; the relay will ask for a keyframe instead
        now = self.client.clock()
        with self._lock:
            if not self.responder.admit(b"relay", now):
                self._nack_drop("nack_rate")
                return
            repairs = self.responder.answer(
                b"relay", nack, self._rings.get, now, mdu, lambda _flags: RING_MAX_AGE_S, refused=self._nack_drop
            )
        for r in repairs:
            if self.client.send(r.packet):
                self.retransmitted += 1

    def _nack_drop(self, reason: str) -> None:
        self.nack_drops[reason] = self.nack_drops.get(reason, 0) + 1


class SubscriberClient:
    """Subscribes to one stream through a relay and decrypts what arrives."""

    def __init__(
        self,
        identity: RNS.Identity,
        relay_hash: bytes,
        stream_id: int,
        opener: FrameOpener,
        on_frame: Callable[[FrameDecrypted], None],
        *,
        receive_mode: str = MODE_AUTO,
        on_event: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        recovery: bool = True,
        loss_out: LossInjector | None = None,
        loss_in: LossInjector | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.opener = opener
        # NACKing past the opener's reorder wait is pointless: the frame is counted lost by then.
        # With recovery the wait grows to the measured repair time (LossDetector.repair_wait).
        self._base_wait = opener.orderer.wait
        self.detector = LossDetector(deadline=max(0.1, opener.orderer.wait)) if recovery else None
        self.nacks_sent = 0
        self.on_frame = on_frame
        self.clock = clock
        self._lock = threading.Lock()
        self._lost_reported: dict[int, int] = {}
        self.drops: dict[str, int] = {}
        self.events: list[Event] = []
        self._on_event_extra = on_event
        self.client = RelayClient(
            identity,
            relay_hash,
            receive_mode=receive_mode,
            on_packet=self._on_packet,
            on_tick=self._on_tick,
            on_event=self._on_event,
            on_reconnect=self._on_reconnect,
            clock=clock,
            loss_out=loss_out,
            loss_in=loss_in,
        )

    def connect(self) -> None:
        self.client.connect()
        self.client.subscribe(self.stream_id)

    def close(self) -> None:
        self.client.close()

    def _on_event(self, event: Event) -> None:
        self.events.append(event)
        if self._on_event_extra is not None:
            self._on_event_extra(event)

    def update_keys(self, fn: Callable[[], list[Any]]) -> None:
        """Run ``fn`` (e.g. ``MediaKeyBinding.sync``) under the opener's lock and deliver the frames
        it releases (held future-epoch frames whose key just arrived)."""
        with self._lock:
            events = fn()
        self._dispatch(events)

    def _on_packet(self, data: bytes) -> None:
        nacks: list[bytes] = []
        with self._lock:
            now = self.clock()
            events = self.opener.receive_packet(data, now)
            if self.detector is not None:
                self.detector.observe_packet(data, now)
                nacks = self._due_nacks(now)
        for packet in nacks:
            self.client.send(packet)
        self._dispatch(events)

    def _on_reconnect(self, _client: RelayClient) -> None:
        """A new link starts every track afresh at the relay (video at a keyframe): what went
        missing on the old link is not repairable, so stop asking for it."""
        if self.detector is not None:
            with self._lock:
                self.detector.forget_stream(self.stream_id)

    def _due_nacks(self, now: float) -> list[bytes]:
        """NACK packets due now (call under the lock)."""
        assert self.detector is not None
        out = [n.packet for n in self.detector.poll(now)]
        self.nacks_sent += len(out)
        return out

    def _dispatch(self, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, FrameDecrypted):
                try:
                    self.on_frame(ev)
                except Exception:
                    log.exception("on_frame failed")
            elif isinstance(ev, FrameDropped):
                self.drops[ev.reason] = self.drops.get(ev.reason, 0) + 1

    def _on_tick(self, now: float) -> list[bytes]:
        """Expire partial frames and build this interval's receiver report."""
        with self._lock:
            expired = self.opener.expire(now)
            tracks = self.opener.tracks()
            nacks: list[bytes] = []
            if self.detector is not None:
                nacks = self._due_nacks(now)
                wait = max(self._base_wait, self.detector.repair_wait())
                self.opener.orderer.wait = wait
                self.detector.deadline = max(0.1, wait)
        self._dispatch(expired)
        entries: list[TrackReport] = []
        for (stream_id, track_id), st in sorted(tracks.items()):
            if stream_id != self.stream_id or len(entries) >= MAX_REPORT_TRACKS:
                continue
            lost = max(0, st.frames_lost - self._lost_reported.get(track_id, 0))
            self._lost_reported[track_id] = max(st.frames_lost, self._lost_reported.get(track_id, 0))
            entries.append(TrackReport(track_id, st.highest_seq, lost))
        return [*nacks, encode_receiver_report(ReceiverReport(self.stream_id, tuple(entries)))]
