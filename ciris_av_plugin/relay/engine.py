"""The relay's sans-I/O forwarding engine: ingress, fan-out and the verbs the transport drives.

The engine sees only fragment headers (``media/wire.py``); it never decrypts and never holds a
key. It takes bytes and a monotonic ``now`` (seconds, a float passed in) and returns bytes and
events; it never sleeps, reads a clock or touches a socket. The transport drives it:

* ``add_publisher(link, stream)`` / ``add_subscriber(link, stream, mdu)`` once a link is identified
  and authorised; ``remove_link(link)`` when it goes away (everything it held is freed).
* ``receive_packet(link, packet, now)`` for every media-link packet (fragments from publishers,
  receiver reports, NACKs and keepalives from subscribers). It never raises on bad input: every refusal
  is a counted drop, by reason (see ``engine_config.DROP_REASONS`` and ``stats()["drops"]``).
* ``next_packets(link, now, max_packets)`` from the subscriber's own sender thread: the packets to
  send now, each no larger than that link's MDU. Returns ``[]`` while the subscriber is stalled.
* ``has_pending(link)`` to decide whether to wake that sender.
* ``tick(now)`` every ~20-100 ms: stall detection, age purge of queues nobody drains, keyframe
  requests; returns :mod:`events <ciris_av_plugin.relay.events>`.
* ``stats()`` for counters; ``send_control(link, packet, now)`` queues a control packet (highest
  priority, never aged out) on a subscriber's egress.

**Parts.** :class:`ForwardingEngine` owns the streams and tracks (``tracks.py``), takes packets in,
fans fragments out and composes ``engine_config.py`` (limits, drop reasons), ``egress.py`` (queues,
serving, drop policy), ``keyframes.py`` (request coalescing) and ``repair.py`` (NACKs). The hot
paths stay flat: the fan-out loop writes subscriber queues directly, and ``next_packets``,
``has_pending`` and ``send_control`` are the egress's methods bound on the engine once.

**Threading.** The engine is not thread-safe: serialise every call with one lock (calls are
microseconds). The optional ``on_pending(link_id)`` hook runs inside ``receive_packet`` when a
subscriber's queue goes from empty to non-empty, i.e. under that lock; it must be cheap and must
not raise (setting a ``threading.Event`` is the intended use).

**Forwarding (cut-through).** A fragment from a stream's publisher is decoded once
(``struct.unpack_from``) and the *same* bytes object is queued for every subscriber whose MDU can
carry it; for a smaller MDU it is re-split once per distinct MDU with ``wire.split`` (byte offsets
make this possible without waiting for the rest of the frame, ARCHITECTURE.md "Frames and
fragments"). Nothing assumes a publisher is an end user: a downstream relay is a subscriber link
here and a publisher link on its own engine (cascade).

**Floods.** Each publisher link has a byte token bucket (``max_ingress_rate``,
``max_ingress_burst``); fragments beyond it are dropped at the door, before any per-subscriber
work, so one flooding link cannot starve other streams of the relay's CPU. Memory is bounded
regardless: queues by age and caps, streams and tracks by the links that exist, events by
``MAX_PENDING_EVENTS``.

**Receiver reports** keep a subscriber alive (no report for ``stall_timeout`` stalls it; the next
one resumes it at a keyframe), retire its in-flight frames and report its losses: losses beyond the
discardable frames the relay itself dropped ask for a keyframe (``keyframes.py``).

**Hooks for the delivery service.** ``authorize_publish(link_id, stream_id) -> bool`` is asked in
``add_publisher`` (default: allow). ``frame_filter(link_id, FragmentHeader, now) -> str | None``
is asked for every fragment from a publisher; a string is a drop reason (e.g. an old-epoch KID or a
KID whose sender is not this link's leaf). Default: none (no header object is built at all).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

from ..protocol.media_wire import (
    FLAG_AUDIO,
    FLAG_DISCARDABLE,
    FLAG_END_OF_STREAM,
    FLAG_KEYFRAME,
    FLAG_RETRANSMISSION,
    FRAG_HEADER_LEN,
    MAX_FRAME_SIZE,
    PT_FRAGMENT,
    PT_KEEPALIVE,
    PT_NACK,
    PT_RECEIVER_REPORT,
    FragmentHeader,
    split,
)
from ..protocol.reports import decode_receiver_report
from ..ratelimit import TokenBucket
from .egress import Egress, Item, Subscriber
from .engine_config import (
    BASE_LAYER_PRIORITY,
    CLS_AUDIO,
    CLS_KEY,
    CLS_REST,
    EXCUSE_WINDOW,
    I_PKT,
    MAX_PENDING_EVENTS,
    EngineConfig,
    newer,
)
from .errors import (
    InvalidMDUError,
    InvalidStreamError,
    PublishNotAuthorizedError,
    ReportError,
    SubscriberLimitError,
)
from .events import Event, SubscriberResumed, SubscriberStalled
from .keyframes import KeyframeRequests
from .repair import Repair
from .tracks import Stream, Track

__all__ = ["ForwardingEngine"]

log = logging.getLogger(__name__)

# The fragment header layout of media/wire.py, unpacked here directly so the hot path builds no
# FragmentHeader per packet. tests/test_relay_engine.py checks it against wire.decode_fragment.
_FRAG = struct.Struct(">BBQBBIIIIQ")
assert _FRAG.size == FRAG_HEADER_LEN
_FRAG_FLAGS = FLAG_KEYFRAME | FLAG_DISCARDABLE | FLAG_END_OF_STREAM | FLAG_AUDIO | FLAG_RETRANSMISSION


def _allow_all(link_id: bytes, stream_id: int) -> bool:
    return True


def _check_stream_id(stream_id: int) -> None:
    """Stream ids are u64 on the wire (wire.py); anything else could never match a fragment."""
    if not isinstance(stream_id, int) or not 0 <= stream_id < 1 << 64:
        raise InvalidStreamError(f"stream id {stream_id!r} is not a u64")


class ForwardingEngine:
    """Streams, subscribers and their egress queues; see the module docstring for the contract."""

    # Bound in __init__ to the egress's own methods (see the module docstring, "Parts").
    next_packets: Callable[..., list[bytes]]
    "``next_packets(link_id, now, max_packets=64)``: see :meth:`Egress.next_packets`."
    has_pending: Callable[[bytes], bool]
    "``has_pending(link_id)``: see :meth:`Egress.has_pending`."
    send_control: Callable[[bytes, bytes, float], bool]
    "``send_control(link_id, packet, now)``: see :meth:`Egress.send_control`."

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        authorize_publish: Callable[[bytes, int], bool] | None = None,
        frame_filter: Callable[[bytes, FragmentHeader, float], str | None] | None = None,
        on_pending: Callable[[bytes], None] | None = None,
    ) -> None:
        self.config = cfg = config or EngineConfig()
        self._authorize_publish = authorize_publish or _allow_all
        self._frame_filter = frame_filter
        self._on_pending = on_pending
        self._streams: dict[int, Stream] = {}
        self._tracks: dict[int, Track] = {}
        self._pub_streams: dict[bytes, set[int]] = {}
        # publisher link -> [tokens (bytes), relay time of the last refill]
        self._buckets: dict[bytes, TokenBucket] = {}
        self._events: list[Event] = []
        self._keyframes = keyframes = KeyframeRequests(cfg)
        self._request_keyframe = keyframes.request
        self._egress = egress = Egress(cfg, self._tracks, keyframes.request, on_pending)
        self._repair = repair = Repair(cfg, egress, self._streams, self._tracks, keyframes.request)
        # The parts' methods and state the hot paths use, bound once: no per-packet lookups.
        self._subs = egress.subs
        self._count_drop = egress.count_drop
        self._shed = egress.shed
        self._observe = repair.observe
        self._wants = repair.wants
        self.next_packets = egress.next_packets
        self.has_pending = egress.has_pending
        self.send_control = egress.send_control
        self._packets_in = 0
        self._fragments_in = 0
        self._frames_in = 0
        self._bytes_in = 0
        self._resplits = 0
        self._reports_in = 0
        self._keepalives_in = 0
        self._events_dropped = 0
        self._stalls = 0
        self._losses_excused = 0
        self._resumes = 0

    # ------------------------------------------------------------------ hooks

    def set_authorize_publish(self, hook: Callable[[bytes, int], bool] | None) -> None:
        """Replace the publish authorisation hook (None: allow all); checked on later ``add_publisher`` calls."""
        self._authorize_publish = hook or _allow_all

    def set_frame_filter(self, hook: Callable[[bytes, FragmentHeader, float], str | None] | None) -> None:
        """Replace the per-fragment filter (None: no filter), e.g. once the delivery service is up."""
        self._frame_filter = hook

    # ------------------------------------------------------------------ membership

    def add_publisher(self, link_id: bytes, stream_id: int, now: float) -> None:
        """Let ``link_id`` feed ``stream_id``. Raises :class:`PublishNotAuthorizedError` if the hook says no."""
        _check_stream_id(stream_id)
        if not self._authorize_publish(link_id, stream_id):
            raise PublishNotAuthorizedError(f"link {link_id.hex()} may not publish stream {stream_id}")
        stream = self._stream(stream_id)
        stream.publishers.add(link_id)
        self._pub_streams.setdefault(link_id, set()).add(stream_id)
        if link_id not in self._buckets:
            self._buckets[link_id] = TokenBucket(self.config.max_ingress_rate, self.config.max_ingress_burst, now)

    def add_subscriber(self, link_id: bytes, stream_id: int, mdu: int, now: float) -> None:
        """Subscribe ``link_id`` to ``stream_id``; video starts at a keyframe, which is requested upstream.

        Subscribing again updates the MDU. Raises :class:`InvalidMDUError` or
        :class:`SubscriberLimitError` without changing anything.
        """
        _check_stream_id(stream_id)
        if mdu < self.config.min_mdu:
            raise InvalidMDUError(f"MDU {mdu} < {self.config.min_mdu}")
        stream = self._streams.get(stream_id)
        sub = self._subs.get(link_id)
        if sub is not None and stream_id in sub.streams:
            sub.mdu = mdu
            return
        if stream is not None and len(stream.subs) >= self.config.max_subscribers_per_stream:
            raise SubscriberLimitError(
                f"stream {stream_id} has {len(stream.subs)} subscribers "
                f"(max {self.config.max_subscribers_per_stream})"
            )
        if stream is None:
            stream = self._stream(stream_id)
        if sub is None:
            sub = self._subs[link_id] = Subscriber(link_id, mdu, now)
        else:
            sub.mdu = mdu
        sub.streams.add(stream_id)
        stream.subs.append(sub)
        for track in stream.tracks.values():
            # Nothing the relay had before this subscription was sent on this link: no repairs.
            sub.restart_at[track.tkey] = now
            if not track.audio:
                sub.waiting[track.tkey] = track.last_gop
                self._request_keyframe(track, now)

    def remove_link(self, link_id: bytes, now: float) -> None:
        """Forget ``link_id`` in every role; frees its queue and any stream left with nobody."""
        sub = self._egress.remove(link_id)
        touched: set[int] = set()
        if sub is not None:
            for sid in sub.streams:
                stream = self._streams.get(sid)
                if stream is not None:
                    stream.subs = [s for s in stream.subs if s is not sub]
                    touched.add(sid)
        self._buckets.pop(link_id, None)
        self._repair.forget_link(link_id)
        for sid in self._pub_streams.pop(link_id, ()):
            stream = self._streams.get(sid)
            if stream is None:
                continue
            stream.publishers.discard(link_id)
            for track in stream.tracks.values():
                if track.publisher == link_id:
                    track.publisher = None
            touched.add(sid)
        for sid in touched:
            stream = self._streams[sid]
            if not stream.publishers and not stream.subs:
                for track in stream.tracks.values():
                    self._tracks.pop(track.tkey, None)
                    self._keyframes.forget(track.tkey)
                del self._streams[sid]

    def _stream(self, stream_id: int) -> Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = Stream(stream_id)
        return stream

    # ------------------------------------------------------------------ ingress

    def receive_packet(self, link_id: bytes, packet: bytes, now: float) -> None:
        """Handle one media-link packet from ``link_id``; bad input is a counted drop, never an exception."""
        self._packets_in += 1
        try:
            if not packet:
                self._count_drop(None, "empty")
                return
            pt = packet[0]
            if pt == PT_FRAGMENT:
                self._receive_fragment(link_id, packet, now)
            elif pt == PT_RECEIVER_REPORT:
                self._receive_report(link_id, packet, now)
            elif pt == PT_KEEPALIVE:
                self._keepalives_in += 1
            elif pt == PT_NACK:
                self._repair.receive_nack(link_id, packet, now)
            else:
                self._count_drop(None, "unknown_packet_type")
        except Exception:
            # A bug must not escape into RNS's inbound worker; it is counted and logged instead.
            self._count_drop(None, "internal_error")
            log.exception("relay engine failed on a packet from %s", link_id.hex())

    def _receive_fragment(self, link_id: bytes, packet: bytes, now: float) -> None:
        n = len(packet)
        if n <= FRAG_HEADER_LEN:
            self._count_drop(None, "truncated" if n < FRAG_HEADER_LEN else "empty_fragment")
            return
        if not isinstance(packet, bytes):
            packet = bytes(packet)
        _, flags, sid, tid, prio, seq, gop, off, total, kid = _FRAG.unpack_from(packet)
        if flags & ~_FRAG_FLAGS:
            self._count_drop(None, "bad_flags")
            return
        if total == 0 or total > MAX_FRAME_SIZE:
            self._count_drop(None, "bad_length")
            return
        if off + n - FRAG_HEADER_LEN > total:
            self._count_drop(None, "bad_offset")
            return
        stream = self._streams.get(sid)
        if stream is None:
            self._count_drop(None, "unknown_stream")
            return
        if link_id not in stream.publishers:
            self._count_drop(None, "not_publisher")
            return
        # Per-publisher-link token bucket (bytes): a flooding link cannot take the relay's CPU
        # from other streams. The bucket exists for every publisher link (add_publisher).
        if not self._buckets[link_id].take(now, n):
            self._count_drop(None, "ingress_rate")
            if self._observe is not None:
                # Dropped on purpose, not lost: the loss detector must not NACK it back in.
                owned = stream.tracks.get(tid)
                if owned is not None and owned.publisher == link_id:
                    self._observe(sid, tid, seq, off, n - FRAG_HEADER_LEN, total, flags, now)
            return
        audio = flags & FLAG_AUDIO
        track = stream.tracks.get(tid)
        if track is None:
            track = self._new_track(stream, tid, bool(audio), link_id)
        elif track.publisher != link_id:
            if track.publisher is not None:
                self._count_drop(None, "track_owned")
                return
            self._take_over_track(stream, track, link_id, bool(audio))
        if bool(audio) != track.audio:
            self._count_drop(None, "kind_mismatch")
            return
        if self._frame_filter is not None:
            header = FragmentHeader(sid, tid, seq, gop, off, total, kid, flags, prio)
            reason = self._frame_filter(link_id, header, now)
            if reason:
                self._count_drop(None, reason)
                if self._observe is not None:
                    self._observe(sid, tid, seq, off, n - FRAG_HEADER_LEN, total, flags, now)
                return
        if flags & FLAG_RETRANSMISSION and self._wants is not None:
            if not self._wants(sid, tid, seq):
                # A repair of something the relay has (a NACK crossed the original) or gave up
                # on: fanning it out would only cost every subscriber a duplicate.
                self._count_drop(None, "repair_not_needed")
                return
        key = flags & FLAG_KEYFRAME
        if key and gop != track.last_gop and (track.last_gop is None or newer(gop, track.last_gop)):
            track.last_gop = gop
            track.kf_outstanding = False
        self._fragments_in += 1
        self._bytes_in += n
        ring = track.ring
        if ring is not None:
            ring.add(seq, packet, now)
            self._observe(sid, tid, seq, off, n - FRAG_HEADER_LEN, total, flags, now)  # type: ignore[misc]
        first = off == 0
        if first:
            self._frames_in += 1
        if audio:
            cls = CLS_AUDIO
        elif key or prio < BASE_LAYER_PRIORITY:
            cls = CLS_KEY
        else:
            cls = CLS_REST
        tkey = track.tkey
        item = (now, packet, tkey, seq, gop, flags, first)
        by_mdu: dict[int, list[Item]] | None = None
        cap_bytes = self.config.max_queued_bytes
        cap_pkts = self.config.max_queued_packets
        on_pending = self._on_pending
        for sub in stream.subs:
            if sub.link_id == link_id:
                # Never echo a packet to the link it came from (a cascade link may carry a stream
                # both ways; echoing would loop it between relays).
                continue
            if sub.stalled:
                self._count_drop(sub, "stalled")
                continue
            waiting = sub.waiting
            if waiting and tkey in waiting:
                after = waiting[tkey]
                if key and (after is None or newer(gop, after)):
                    del waiting[tkey]
                else:
                    self._count_drop(sub, "await_keyframe")
                    continue
            skip = sub.skip_frame
            if skip and skip.get(tkey) == seq:
                self._count_drop(sub, "frame_dropped")
                continue
            was_empty = not sub.qpkts
            mdu = sub.mdu
            if n <= mdu:
                sub.queues[cls].append(item)
                sub.qbytes += n
                sub.qpkts += 1
            else:
                if by_mdu is None:
                    by_mdu = {}
                items = by_mdu.get(mdu)
                if items is None:
                    items = by_mdu[mdu] = self._resplit(packet, item, mdu)
                sub.queues[cls].extend(items)
                sub.qbytes += sum(len(it[I_PKT]) for it in items)
                sub.qpkts += len(items)
            if sub.qbytes > cap_bytes or sub.qpkts > cap_pkts:
                self._shed(sub, now)
            if was_empty and on_pending is not None and sub.qpkts:
                on_pending(sub.link_id)

    def _resplit(self, packet: bytes, item: Item, mdu: int) -> list[Item]:
        """Cut one fragment for a smaller MDU (once per distinct MDU per ingress packet)."""
        header = _header_of(packet)
        pieces = split(header, memoryview(packet)[FRAG_HEADER_LEN:], mdu)
        self._resplits += 1
        t, _, tkey, seq, gop, flags, first = item
        return [(t, p, tkey, seq, gop, flags, first and i == 0) for i, p in enumerate(pieces)]

    def _new_track(self, stream: Stream, track_id: int, audio: bool, link_id: bytes) -> Track:
        track = Track(stream.stream_id, track_id, audio, link_id, self._repair.new_ring())
        stream.tracks[track_id] = track
        self._tracks[track.tkey] = track
        if not audio:
            # Subscribers that joined before the track existed still start it at a keyframe.
            for sub in stream.subs:
                sub.waiting[track.tkey] = None
        return track

    def _take_over_track(self, stream: Stream, track: Track, link_id: bytes, audio: bool) -> None:
        """A new link feeds a track whose publisher went away (a reconnect, a new upstream relay).

        Its frame_seq and gop_id numbering may restart, so nothing learnt from the old feed is
        compared with the new one: every subscriber restarts the track at its next keyframe.
        """
        track.publisher = link_id
        track.audio = audio
        track.last_gop = None
        track.kf_outstanding = False
        self._repair.restart_track(track)
        tkey = track.tkey
        for sub in stream.subs:
            if not audio:
                sub.waiting[tkey] = None
            else:
                sub.waiting.pop(tkey, None)
            sub.skip_frame.pop(tkey, None)
            sub.sent_gop.pop(tkey, None)
            sub.inflight.pop(tkey, None)
            sub.excused.pop(tkey, None)

    def _receive_report(self, link_id: bytes, packet: bytes, now: float) -> None:
        try:
            report = decode_receiver_report(packet)
        except ReportError:
            self._count_drop(self._subs.get(link_id), "bad_report")
            return
        sub = self._subs.get(link_id)
        if sub is None or report.stream_id not in sub.streams:
            self._count_drop(sub, "report_not_subscriber")
            return
        stream = self._streams[report.stream_id]
        self._reports_in += 1
        sub.reports += 1
        sub.last_report = now
        if sub.stalled:
            self._resume(sub, now)
        sid8 = report.stream_id << 8
        inflight = sub.inflight
        for tr in report.tracks:
            tkey = sid8 | tr.track_id
            if tkey not in sub.reported and tr.track_id in stream.tracks:
                sub.reported.add(tkey)
            log_ = inflight.get(tkey)
            if log_ and tr.highest_seq is not None:
                high = tr.highest_seq
                while log_ and not newer(log_[0][0], high):
                    log_.popleft()
            if tr.lost:
                sub.lost += tr.lost
                # Discardable frames the relay itself dropped show up as losses but break no
                # reference chain: only losses beyond them ask for a keyframe.
                ex = sub.excused.pop(tkey, None) if sub.excused else None
                excused = ex[0] if ex is not None and now - ex[1] <= EXCUSE_WINDOW else 0
                track = stream.tracks.get(tr.track_id)
                if tr.lost > excused and track is not None and not track.audio:
                    self._request_keyframe(track, now)
                elif excused:
                    self._losses_excused += 1
                    if excused > tr.lost:
                        # The rest may be reported next time (receivers count a gap late).
                        sub.excused[tkey] = [excused - tr.lost, ex[1]]
        self._egress.check_inflight(sub, now)

    # ------------------------------------------------------------------ stalls and ticks

    def _stall(self, sub: Subscriber, now: float) -> None:
        dropped = self._egress.stall(sub, now)
        self._stalls += 1
        self._push_event(SubscriberStalled(sub.link_id, sub.last_report, dropped))
        log.debug("subscriber %s stalled (%d packets dropped)", sub.link_id.hex(), dropped)

    def _resume(self, sub: Subscriber, now: float) -> None:
        sub.stalled = False
        self._resumes += 1
        for sid in sub.streams:
            stream = self._streams.get(sid)
            if stream is None:
                continue
            for track in stream.tracks.values():
                # What went by during the stall is not repaired: the subscriber restarts now.
                sub.restart_at[track.tkey] = now
                if not track.audio:
                    # Skip the group in flight: its start went by while the subscriber was stalled.
                    sub.waiting[track.tkey] = track.last_gop
                    self._request_keyframe(track, now)
        self._push_event(SubscriberResumed(sub.link_id, now - sub.stalled_at))
        log.debug("subscriber %s resumed", sub.link_id.hex())

    def tick(self, now: float) -> list[Event]:
        """Detect stalls, age out queues nobody drains, send due keyframe requests; return the events."""
        cfg = self.config
        stall_timeout = cfg.stall_timeout
        for sub in self._subs.values():
            if not sub.stalled:
                if now - sub.last_report > stall_timeout:
                    self._stall(sub, now)
                    continue
                if sub.qpkts:
                    self._egress.age_purge(sub, now)
            if sub.waiting and not sub.stalled:
                # A subscriber still waiting re-asks once an earlier request has timed out.
                for tkey in sub.waiting:
                    track = self._tracks.get(tkey)
                    if track is not None and track.publisher is not None:
                        self._request_keyframe(track, now, count=False)
        for nack in self._repair.nack_upstream(now):
            self._push_event(nack)
        for request in self._keyframes.poll(now):
            self._push_event(request)
        events, self._events = self._events, []
        return events

    def _push_event(self, event: Event) -> None:
        if len(self._events) >= MAX_PENDING_EVENTS:
            self._events.pop(0)
            self._events_dropped += 1
        self._events.append(event)

    # ------------------------------------------------------------------ observability

    def stats(self) -> dict[str, Any]:
        """Counters and gauges (plain JSON-able types); cheap enough to call once a second."""
        egress = self._egress
        return {
            "packets_in": self._packets_in,
            "fragments_in": self._fragments_in,
            "frames_in": self._frames_in,
            "bytes_in": self._bytes_in,
            "packets_out": egress.packets_out,
            "frames_out": egress.frames_out,
            "bytes_out": egress.bytes_out,
            "resplits": self._resplits,
            "reports_in": self._reports_in,
            "keepalives_in": self._keepalives_in,
            "drops": dict(egress.drops),
            "queue_age_ms": egress.queue_age_stats(),
            "keyframe_requests": self._keyframes.stats(self._losses_excused),
            "retransmit": self._repair.stats(),
            "stalls": self._stalls,
            "inflight_resets": egress.inflight_resets,
            "resumes": self._resumes,
            "events_dropped": self._events_dropped,
            "streams": len(self._streams),
            "per_stream": {str(sid): st.stats() for sid, st in self._streams.items()},
            "subscribers": egress.subscriber_stats(),
        }


def _header_of(packet: bytes) -> FragmentHeader:
    """The FragmentHeader of an already validated fragment packet (re-split and filter paths only)."""
    _, flags, sid, tid, prio, seq, gop, off, total, kid = _FRAG.unpack_from(packet)
    return FragmentHeader(sid, tid, seq, gop, off, total, kid, flags, prio)
