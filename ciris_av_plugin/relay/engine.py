"""The relay's sans-I/O forwarding engine: fan-out, egress queues, drop policy, stalls, keyframe requests.

The engine sees only fragment headers (``media/wire.py``); it never decrypts and never holds a
key. It takes bytes and a monotonic ``now`` (seconds, a float passed in) and returns bytes and
events; it never sleeps, reads a clock or touches a socket. The transport drives it:

* ``add_publisher(link, stream)`` / ``add_subscriber(link, stream, mdu)`` once a link is identified
  and authorised; ``remove_link(link)`` when it goes away (everything it held is freed).
* ``receive_packet(link, packet, now)`` for every media-link packet (fragments from publishers,
  receiver reports, NACKs and keepalives from subscribers). It never raises on bad input: every refusal
  is a counted drop, by reason (see :data:`DROP_REASONS` and ``stats()["drops"]``).
* ``next_packets(link, now, max_packets)`` from the subscriber's own sender thread: the packets to
  send now, each no larger than that link's MDU. Returns ``[]`` while the subscriber is stalled.
* ``has_pending(link)`` to decide whether to wake that sender.
* ``tick(now)`` every ~20-100 ms: stall detection, age purge of queues nobody drains, keyframe
  requests; returns :mod:`events <ciris_av_plugin.relay.events>`.
* ``stats()`` for counters; ``send_control(link, packet, now)`` queues a control packet (highest
  priority, never aged out) on a subscriber's egress.

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

**Egress.** One queue per subscriber link in four strict-priority classes: control > audio >
keyframe or base layer (fragment priority below the default 128) > the rest. Each item is a tuple
``(arrival, packet, track_key, frame_seq, gop_id, flags, first)`` so the hot path allocates no
dataclasses. Queues are bounded by age on the relay's clock, measured from arrival (``video_max_age``,
``audio_max_age``) and, as a safety net, by bytes and packets.

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

**Floods.** Each publisher link has a byte token bucket (``max_ingress_rate``,
``max_ingress_burst``); fragments beyond it are dropped at the door, before any per-subscriber
work, so one flooding link cannot starve other streams of the relay's CPU. Memory is bounded
regardless: queues by age and caps, streams and tracks by the links that exist, events by
``MAX_PENDING_EVENTS``.

**Keyframe requests** are raised when a subscriber joins (for every video track it must start
on), stalls and resumes, reports a loss (beyond the discardable frames the relay itself dropped
for it, which break no reference chain), or loses a group of pictures. They are coalesced (at most
one outstanding per track: cleared when a keyframe of a newer group arrives or after
``keyframe_request_timeout``) and rate-limited (at most one per ``keyframe_min_interval`` per track),
and leave through ``tick`` as :class:`KeyframeRequested` events addressed to the link that feeds
the track.

**Loss recovery** (``EngineConfig.retransmit``, on by default; ``media/nack.py``,
``media/retransmit.py``): every fragment accepted from a publisher is also kept ~1 s in its
track's :class:`~ciris_av_plugin.media.retransmit.RetransmitRing` (one O(1) append of the bytes
object already held) and shown to a :class:`~ciris_av_plugin.media.nack.LossDetector`. A
subscriber's ``PT_NACK`` is answered from the ring: repairs (flagged ``FLAG_RETRANSMISSION``,
re-split to its MDU) go to the front of their priority class with their original arrival time,
so the age bounds and strict priorities hold for them; media already near its age bound is not
resent, nor frames the subscriber awaits a keyframe for, or the relay dropped for it, or that came
before it joined or resumed the track, nor anything to a subscriber whose queue is over half its
byte cap. NACKs are rate-limited per link, with a
retransmitted-bytes budget and bounded work per NACK; every refusal is a counted drop. Fragments
lost on the publisher's hop are NACKed upstream (:class:`NackUpstream` from ``tick``) until
``nack_deadline``, after which the track gets a (coalesced) keyframe request.

**Hooks for the delivery service.** ``authorize_publish(link_id, stream_id) -> bool`` is asked in
``add_publisher`` (default: allow). ``frame_filter(link_id, FragmentHeader, now) -> str | None``
is asked for every fragment from a publisher; a string is a drop reason (e.g. an old-epoch KID or a
KID whose sender is not this link's leaf). Default: none (no header object is built at all).
"""

from __future__ import annotations

import logging
import math
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..media.nack import LossDetector
from ..media.retransmit import NACK_RATE, NackResponder, RetransmitRing
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
from ..protocol.nack import NackError, decode_nack
from ..protocol.reports import REPORT_INTERVAL_S, decode_receiver_report
from .errors import (
    ConfigError,
    InvalidMDUError,
    InvalidStreamError,
    PublishNotAuthorizedError,
    ReportError,
    SubscriberLimitError,
)
from .events import Event, KeyframeRequested, NackUpstream, SubscriberResumed, SubscriberStalled

__all__ = ["EngineConfig", "ForwardingEngine", "DROP_REASONS"]

log = logging.getLogger(__name__)

# The fragment header layout of media/wire.py, unpacked here directly so the hot path builds no
# FragmentHeader per packet. tests/test_relay_engine.py checks it against wire.decode_fragment.
_FRAG = struct.Struct(">BBQBBIIIIQ")
assert _FRAG.size == FRAG_HEADER_LEN
_FRAG_FLAGS = FLAG_KEYFRAME | FLAG_DISCARDABLE | FLAG_END_OF_STREAM | FLAG_AUDIO | FLAG_RETRANSMISSION

# Egress priority classes, served in strict order.
CLS_CONTROL = 0
CLS_AUDIO = 1
CLS_KEY = 2
CLS_REST = 3
_N_CLASSES = 4

# A fragment with a priority below the default (128, wire.py) is treated as base layer and
# scheduled with keyframes; the default and anything above is "the rest".
BASE_LAYER_PRIORITY = 128

# Egress item tuple fields.
_I_T, _I_PKT, _I_TKEY, _I_SEQ, _I_GOP, _I_FLAGS, _I_FIRST = range(7)

_U32 = 0xFFFFFFFF
_HALF = 0x80000000
_U32S = struct.Struct(">I")

# Queue-age samples kept for the p50/max figures in stats(): ~4 s of egress at 1,000 packets/s,
# enough for a stable median, small enough to sort on demand.
AGE_SAMPLES = 4096
# Frames remembered per subscriber track for the in-flight age: 17 s of 30 fps video, far past
# max_inflight_age, so the log is never what limits the measurement.
INFLIGHT_LOG = 512
# When a queue overflows its byte/packet cap it is shed to this fraction of the cap, so the
# shedding scan (O(queue)) runs once per quarter-queue of overflow, not once per packet.
SHED_TARGET = 0.75
# A dropped discardable frame excuses a reported loss for this long: receivers count a gap after
# their reorder wait (~100 ms) and report every ~100 ms, so 1 s is ample; older excuses would hide
# real losses.
EXCUSE_WINDOW = 1.0
# A subscriber whose queue holds more than this share of max_queued_bytes gets no repairs: the
# byte cap sheds at 1.0, so past half of it the link is not keeping up and repairs add to that.
CONGESTED_SHARE = 0.5
# Events buffered between two tick() calls; a transport that stops ticking cannot grow memory.
MAX_PENDING_EVENTS = 1024

DROP_REASONS = {
    "empty": "zero-length packet",
    "truncated": "shorter than a fragment header",
    "bad_flags": "reserved fragment flags set",
    "empty_fragment": "fragment header with no payload",
    "bad_length": "frame length outside 1..MAX_FRAME_SIZE",
    "bad_offset": "chunk extends past the frame length",
    "unknown_stream": "fragment or report for a stream the engine does not know",
    "not_publisher": "fragment from a link that is not a publisher of its stream",
    "track_owned": "fragment on a track another live publisher link feeds",
    "kind_mismatch": "audio flag differs from the track's first fragment",
    "unknown_packet_type": "first byte names no packet type the relay handles",
    "bad_nack": "NACK packet failed to decode (truncated, too many ranges, reserved bits)",
    "nack_not_subscriber": "NACK from a link that is not a subscriber",
    "nack_other_stream": "NACK for a stream the link is not subscribed to",
    "nack_stalled": "NACK from a stalled subscriber (it restarts at a keyframe instead)",
    "nack_unsupported": "NACK while retransmission is off (EngineConfig.retransmit)",
    NACK_RATE: "NACKs over the per-link rate (flood)",
    "nack_never_sent": "NACKed frame newer than anything the relay received on that track",
    "nack_expired": "NACKed frame older than the ring or the subscriber's queue age bound",
    "nack_missing": "NACKed bytes the relay never received (lost upstream; it NACKs upstream itself)",
    "nack_unknown_track": "NACK names a track the stream does not have",
    "nack_refused": "NACKed frame the relay dropped on purpose for the subscriber (or it awaits a keyframe)",
    "nack_retransmit_budget": "per-link retransmitted-bytes budget spent",
    "nack_work_bound": "NACK named more stored packets than one NACK may make the relay scan",
    "nack_no_publisher": "upstream NACK for a track nobody feeds right now",
    "repair_not_needed": "publisher's repair of a frame the relay already has whole (or gave up on)",
    "nack_congested": "NACK from a subscriber whose queue is over half its byte cap (no repairs)",
    "nack_before_start": "NACKed frame from before the subscriber (re)started the track (join, resume, dropped group)",
    "bad_report": "receiver report failed to decode",
    "report_not_subscriber": "receiver report from a link not subscribed to that stream",
    "await_keyframe": "video fragment before the subscriber's (re)start keyframe",
    "frame_dropped": "rest of a frame already dropped for this subscriber",
    "stalled": "subscriber stalled: queue flushed and new packets dropped",
    "age_audio": "audio older than audio_max_age",
    "age_discardable": "discardable frame older than discardable_max_age",
    "age_gop": "video older than video_max_age: rest of the group of pictures dropped",
    "stale_gop": "older group of pictures superseded by a keyframe sent to the subscriber",
    "cap_discardable": "byte/packet cap: discardable frame shed",
    "cap_gop": "byte/packet cap: oldest group of pictures shed",
    "cap_audio": "byte/packet cap with no video left: oldest audio shed",
    "cap_control": "control queue full",
    "inflight_gop": "too much media in flight unreported: rest of the group of pictures dropped",
    "link_removed": "queued when the subscriber link went away",
    "ingress_rate": "publisher link over max_ingress_rate (token bucket): flood shed at the door",
    "internal_error": "a bug in the engine (logged); the packet was dropped",
}


def _newer(a: int, b: int) -> bool:
    """Serial-number comparison of u32 ids (RFC 1982 style): is ``a`` after ``b``?"""
    return 0 < ((a - b) & _U32) < _HALF


def _allow_all(link_id: bytes, stream_id: int) -> bool:
    return True


def _check_stream_id(stream_id: int) -> None:
    """Stream ids are u64 on the wire (wire.py); anything else could never match a fragment."""
    if not isinstance(stream_id, int) or not 0 <= stream_id < 1 << 64:
        raise InvalidStreamError(f"stream id {stream_id!r} is not a u64")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Limits of the forwarding engine; every default says where it comes from."""

    video_max_age: float = 0.5
    "Seconds a video fragment may wait in a subscriber queue. Interactive video tolerates ~150-400 ms"
    " one-way (ITU-T G.114); past 0.5 s on one hop a frame is useless and its group is cut short."
    audio_max_age: float = 0.3
    "Seconds audio may wait. A receiver's jitter buffer rarely holds more than ~200 ms, so older audio"
    " is discarded there anyway; audio is never dropped to make room for video, only by this bound."
    discardable_max_age: float = 0.25
    "Seconds a discardable frame may wait: once the queue is half the video bound deep the"
    " subscriber is falling behind, and these frames go first (drop policy step 1)."
    stall_timeout: float = 0.3
    "Seconds without a receiver report before a subscriber is stalled: three report intervals, so"
    " one or two lost reports never stall a healthy subscriber (ARCHITECTURE.md: ~300 ms)."
    report_interval: float = REPORT_INTERVAL_S
    "How often subscribers are expected to report (documentation and stats; the subscriber sends)."
    keyframe_min_interval: float = 0.5
    "Seconds between two keyframe requests for one track. A keyframe costs ~4-10x a delta frame;"
    " LiveKit and mediasoup throttle PLIs to a few hundred ms to 1 s per track for the same reason."
    keyframe_request_timeout: float = 1.0
    "Seconds a request stays outstanding (coalescing later ones) if no keyframe of a newer group"
    " arrives; after that it is presumed lost and may be repeated. Two intervals of the request limit."
    max_subscribers_per_stream: int = 64
    "Fan-out per stream on one relay: the issue's 64-link target; larger audiences cascade relays."
    max_queued_bytes: int = 512 * 1024
    "Safety-net byte cap per subscriber queue: 2 Mbit/s for 0.5 s is 125 kB; four times that covers"
    " keyframe bursts while bounding a relay with 64 subscribers to ~32 MiB of queued media."
    max_queued_packets: int = 4096
    "Safety-net packet cap per subscriber queue, bounding per-item overhead under floods of tiny"
    " fragments (0.5 s of 2 Mbit/s at the 431-byte MDU is ~290 packets)."
    max_control_packets: int = 64
    "Control packets queued per subscriber; control is small and never aged out, so it is capped."
    max_inflight_age: float = 1.0
    "Seconds a sent frame may go unreported as complete before the subscriber skips to the next"
    " keyframe: twice the queue's video bound, so a healthy link (one-way latency plus the 100 ms"
    " report interval) is far below it while a backlog in RNS or socket buffers is caught."
    max_ingress_rate: int = 4_000_000
    "Bytes per second one publisher link may feed (all its streams): a 1080p screen share peaks"
    " near 8 Mbit/s (1 MB/s); four times that leaves headroom for keyframe bursts and a cascade"
    " link carrying a few streams, while a flood is cut off before it eats the relay's CPU."
    max_ingress_burst: int = 2 * MAX_FRAME_SIZE
    "Bucket depth in bytes: two largest frames back to back arrive at line speed unharmed."
    min_mdu: int = FRAG_HEADER_LEN + 1
    "Smallest subscriber MDU accepted: a fragment header plus one byte of payload."
    retransmit: bool = True
    "Hop-by-hop loss recovery: keep a ~1 s ring per track (media/retransmit.py), answer subscribers'"
    " NACKs from it, and NACK the publisher for fragments lost on its hop (media/nack.py)."
    nack_deadline: float = 0.3
    "Seconds the relay keeps asking its publisher for a lost fragment before it gives up and asks for"
    " a keyframe instead: past it the frame has spent most of video_max_age and is near useless."

    def __post_init__(self) -> None:
        for name in (
            "video_max_age",
            "audio_max_age",
            "discardable_max_age",
            "stall_timeout",
            "report_interval",
            "keyframe_min_interval",
            "keyframe_request_timeout",
            "max_inflight_age",
            "nack_deadline",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
        for name in (
            "max_subscribers_per_stream",
            "max_queued_bytes",
            "max_queued_packets",
            "max_control_packets",
            "max_ingress_rate",
            "max_ingress_burst",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.discardable_max_age > self.video_max_age:
            raise ConfigError(
                "discardable_max_age above video_max_age would never drop discardable frames first"
            )
        if self.max_ingress_burst < MAX_FRAME_SIZE:
            raise ConfigError("max_ingress_burst below MAX_FRAME_SIZE would refuse a legal frame")
        if self.min_mdu <= FRAG_HEADER_LEN:
            raise ConfigError(f"min_mdu must exceed the {FRAG_HEADER_LEN}-byte fragment header")

    def max_age(self, cls: int) -> float:
        """Age bound of one priority class (control is bounded by count, not age)."""
        if cls == CLS_CONTROL:
            return math.inf
        if cls == CLS_AUDIO:
            return self.audio_max_age
        return self.video_max_age


class _Track:
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
        self.tkey = (stream_id << 8) | track_id
        self.audio = audio
        self.publisher: bytes | None = publisher
        self.last_gop: int | None = None
        self.kf_pending = False
        self.kf_outstanding = False
        self.kf_last_sent = -math.inf
        # Packets received from the publisher, kept ~1 s to answer subscribers' NACKs.
        self.ring = ring


class _Stream:
    __slots__ = ("stream_id", "publishers", "subs", "tracks")

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.publishers: set[bytes] = set()
        self.subs: list[_Sub] = []
        self.tracks: dict[int, _Track] = {}


class _Sub:
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
        self.queues: list[deque[tuple[Any, ...]]] = [deque() for _ in range(_N_CLASSES)]
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


class ForwardingEngine:
    """Streams, subscribers and their egress queues; see the module docstring for the contract."""

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
        self._max_age = tuple(cfg.max_age(c) for c in range(_N_CLASSES))
        self._streams: dict[int, _Stream] = {}
        self._subs: dict[bytes, _Sub] = {}
        self._pub_streams: dict[bytes, set[int]] = {}
        # publisher link -> [tokens (bytes), relay time of the last refill]
        self._buckets: dict[bytes, list[float]] = {}
        self._ingress_rate = float(cfg.max_ingress_rate)
        self._ingress_burst = float(cfg.max_ingress_burst)
        self._tracks: dict[int, _Track] = {}
        self._kf_pending: dict[int, _Track] = {}
        self._events: list[Event] = []
        self._ages: deque[float] = deque(maxlen=AGE_SAMPLES)
        self._age_max = 0.0
        self._drops: dict[str, int] = {}
        self._packets_in = 0
        self._fragments_in = 0
        self._frames_in = 0
        self._bytes_in = 0
        self._packets_out = 0
        self._frames_out = 0
        self._bytes_out = 0
        self._resplits = 0
        self._reports_in = 0
        self._keepalives_in = 0
        self._kf_sent = 0
        self._kf_coalesced = 0
        self._kf_rate_limited = 0
        self._kf_no_publisher = 0
        self._events_dropped = 0
        self._stalls = 0
        self._inflight_resets = 0
        self._losses_excused = 0
        self._resumes = 0
        self._responder = NackResponder()
        self._detector = LossDetector(deadline=cfg.nack_deadline) if cfg.retransmit else None
        self._observe = self._detector.observe if self._detector is not None else None
        self._retransmitted = 0
        self._nacks_in = 0

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
            self._buckets[link_id] = [float(self.config.max_ingress_burst), now]

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
            sub = self._subs[link_id] = _Sub(link_id, mdu, now)
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
        sub = self._subs.pop(link_id, None)
        touched: set[int] = set()
        if sub is not None:
            if sub.qpkts:
                self._count_drop(sub, "link_removed", sub.qpkts)
            for q in sub.queues:
                q.clear()
            sub.qpkts = sub.qbytes = 0
            for sid in sub.streams:
                stream = self._streams.get(sid)
                if stream is not None:
                    stream.subs = [s for s in stream.subs if s is not sub]
                    touched.add(sid)
        self._buckets.pop(link_id, None)
        self._responder.forget(link_id)
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
                    self._kf_pending.pop(track.tkey, None)
                del self._streams[sid]

    def _stream(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = _Stream(stream_id)
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
                self._receive_nack(link_id, packet, now)
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
        bucket = self._buckets[link_id]
        elapsed = now - bucket[1]
        tokens = bucket[0]
        if elapsed > 0:
            tokens += elapsed * self._ingress_rate
            if tokens > self._ingress_burst:
                tokens = self._ingress_burst
            bucket[1] = now
        if tokens < n:
            bucket[0] = tokens
            self._count_drop(None, "ingress_rate")
            if self._observe is not None:
                # Dropped on purpose, not lost: the loss detector must not NACK it back in.
                owned = stream.tracks.get(tid)
                if owned is not None and owned.publisher == link_id:
                    self._observe(sid, tid, seq, off, n - FRAG_HEADER_LEN, total, flags, now)
            return
        bucket[0] = tokens - n
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
        if flags & FLAG_RETRANSMISSION and self._detector is not None:
            if not self._detector.wants(sid, tid, seq):
                # A repair of something the relay has (a NACK crossed the original) or gave up
                # on: fanning it out would only cost every subscriber a duplicate.
                self._count_drop(None, "repair_not_needed")
                return
        key = flags & FLAG_KEYFRAME
        if key and gop != track.last_gop and (track.last_gop is None or _newer(gop, track.last_gop)):
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
        by_mdu: dict[int, list[tuple[Any, ...]]] | None = None
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
                if key and (after is None or _newer(gop, after)):
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
                sub.qbytes += sum(len(it[_I_PKT]) for it in items)
                sub.qpkts += len(items)
            if sub.qbytes > cap_bytes or sub.qpkts > cap_pkts:
                self._shed(sub, now)
            if was_empty and on_pending is not None and sub.qpkts:
                on_pending(sub.link_id)

    def _resplit(self, packet: bytes, item: tuple[Any, ...], mdu: int) -> list[tuple[Any, ...]]:
        """Cut one fragment for a smaller MDU (once per distinct MDU per ingress packet)."""
        header = _header_of(packet)
        pieces = split(header, memoryview(packet)[FRAG_HEADER_LEN:], mdu)
        self._resplits += 1
        t, _, tkey, seq, gop, flags, first = item
        return [(t, p, tkey, seq, gop, flags, first and i == 0) for i, p in enumerate(pieces)]

    def _new_track(self, stream: _Stream, track_id: int, audio: bool, link_id: bytes) -> _Track:
        ring = RetransmitRing() if self.config.retransmit else None
        track = _Track(stream.stream_id, track_id, audio, link_id, ring)
        stream.tracks[track_id] = track
        self._tracks[track.tkey] = track
        if not audio:
            # Subscribers that joined before the track existed still start it at a keyframe.
            for sub in stream.subs:
                sub.waiting[track.tkey] = None
        return track

    def _take_over_track(self, stream: _Stream, track: _Track, link_id: bytes, audio: bool) -> None:
        """A new link feeds a track whose publisher went away (a reconnect, a new upstream relay).

        Its frame_seq and gop_id numbering may restart, so nothing learnt from the old feed is
        compared with the new one: every subscriber restarts the track at its next keyframe.
        """
        track.publisher = link_id
        track.audio = audio
        track.last_gop = None
        track.kf_outstanding = False
        if track.ring is not None:
            track.ring.clear()
        if self._detector is not None:
            self._detector.forget_track(stream.stream_id, track.track_id)
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
                while log_ and not _newer(log_[0][0], high):
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
        self._check_inflight(sub, now)

    def _receive_nack(self, link_id: bytes, packet: bytes, now: float) -> None:
        """A subscriber asks for fragments again: answer from the tracks' rings (bounded work).

        Repairs go to the front of their priority class (they are older than anything queued
        behind them) with their original arrival time, so the queue's age bounds and strict
        priorities apply to them as to any packet; what is already too old is not resent.
        """
        try:
            nack = decode_nack(packet)
        except NackError:
            self._count_drop(None, "bad_nack")
            return
        sub = self._subs.get(link_id)
        if sub is None:
            self._count_drop(None, "nack_not_subscriber")
            return
        if nack.stream_id not in sub.streams:
            self._count_drop(None, "nack_other_stream")
            return
        if self._detector is None:
            self._count_drop(None, "nack_unsupported")
            return
        if sub.stalled:
            self._count_drop(None, "nack_stalled")
            return
        cfg = self.config
        if sub.qbytes > cfg.max_queued_bytes * CONGESTED_SHARE:
            # The subscriber is falling behind (its losses are likely the relay's own drops):
            # repairs would only deepen the queue. The keyframe path takes over.
            self._count_nack_refusal(sub, "nack_congested")
            return
        responder = self._responder
        if not responder.admit(link_id, now):
            self._count_nack_refusal(sub, NACK_RATE)
            return
        self._nacks_in += 1
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
            lambda reason: self._count_nack_refusal(sub, reason),
            not_before,
        )
        if not repairs:
            return
        was_empty = not sub.qpkts
        by_class: list[list[tuple[Any, ...]]] = [[] for _ in range(_N_CLASSES)]
        nbytes = 0
        for r in repairs:
            pkt, flags = r.packet, r.flags
            if flags & FLAG_AUDIO:
                cls = CLS_AUDIO
            elif flags & FLAG_KEYFRAME or pkt[11] < BASE_LAYER_PRIORITY:
                cls = CLS_KEY
            else:
                cls = CLS_REST
            (gop,) = _U32S.unpack_from(pkt, 16)
            by_class[cls].append((r.arrival, pkt, sid8 | r.track_id, r.frame_seq, gop, flags, False))
            nbytes += len(pkt)
        for cls, items in enumerate(by_class):
            if items:
                sub.queues[cls].extendleft(reversed(items))
        sub.qpkts += len(repairs)
        sub.qbytes += nbytes
        sub.retransmitted += len(repairs)
        self._retransmitted += len(repairs)
        if sub.qbytes > cfg.max_queued_bytes or sub.qpkts > cfg.max_queued_packets:
            self._shed(sub, now)
        if was_empty and self._on_pending is not None and sub.qpkts:
            self._on_pending(sub.link_id)

    def _count_nack_refusal(self, sub: _Sub, reason: str) -> None:
        """A refused NACK range: counted with the engine's drops (by reason) and per subscriber."""
        self._drops[reason] = self._drops.get(reason, 0) + 1
        sub.nack_refused[reason] = sub.nack_refused.get(reason, 0) + 1

    def _nack_upstream(self, now: float) -> None:
        """Send due NACKs for fragments lost on the publisher's hop; missed deadlines ask for keyframes."""
        det = self._detector
        if det is None:
            return
        # On a long upstream round trip, keep asking for as long as a repair can still arrive.
        det.deadline = max(self.config.nack_deadline, det.repair_wait())
        due = det.next_due()
        if due is not None and now >= due:
            tracks = self._tracks

            def route(sid: int, tid: int) -> bytes | None:
                track = tracks.get((sid << 8) | tid)
                return None if track is None else track.publisher

            for out in det.poll(now, route):
                if out.route is None:
                    self._count_drop(None, "nack_no_publisher")
                    continue
                self._push_event(NackUpstream(out.route, out.stream_id, out.packet))
        for g in det.take_gave_up():
            if not g.audio:
                track = self._tracks.get((g.stream_id << 8) | g.track_id)
                if track is not None:
                    self._request_keyframe(track, now)

    def _check_inflight(self, sub: _Sub, now: float) -> None:
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
        self._inflight_resets += 1
        for tkey, log_ in sub.inflight.items():
            track = self._tracks.get(tkey)
            if track is not None and not track.audio and track.last_gop is not None:
                self._drop_gop(sub, tkey, track.last_gop, "inflight_gop", now)
            log_.clear()
        sub.inflight_age = 0.0

    # ------------------------------------------------------------------ egress

    def next_packets(self, link_id: bytes, now: float, max_packets: int = 64) -> list[bytes]:
        """Up to ``max_packets`` packets to send to ``link_id`` now, in strict priority order.

        Items past their age bound are dropped here under the drop policy. Returns ``[]`` for an
        unknown or stalled link.
        """
        sub = self._subs.get(link_id)
        out: list[bytes] = []
        if sub is None or sub.stalled or not sub.qpkts or max_packets <= 0:
            return out
        ages = self._ages
        age_max = self._age_max
        nbytes = 0
        frames = 0
        disc_age = self.config.discardable_max_age
        queues = sub.queues
        inflight = sub.inflight
        for cls in range(_N_CLASSES):
            q = queues[cls]
            if not q:
                continue
            limit = self._max_age[cls]
            while q:
                item = q[0]
                age = now - item[_I_T]
                if age > limit:
                    self._expire(sub, cls, item, now)
                    continue
                if cls >= CLS_KEY:
                    flags = item[_I_FLAGS]
                    if flags & FLAG_DISCARDABLE and age > disc_age and not flags & FLAG_KEYFRAME:
                        self._drop_frame(sub, item[_I_TKEY], item[_I_SEQ], "age_discardable", now)
                        continue
                    if flags & FLAG_KEYFRAME:
                        tkey = item[_I_TKEY]
                        gop = item[_I_GOP]
                        if sub.sent_gop.get(tkey) != gop:
                            sub.sent_gop[tkey] = gop
                            if sub.qpkts > 1:
                                self._purge_stale(sub, tkey, gop, now - disc_age)
                q.popleft()
                pkt = item[_I_PKT]
                out.append(pkt)
                nbytes += len(pkt)
                ages.append(age)
                if age > age_max:
                    age_max = age
                if item[_I_FIRST]:
                    frames += 1
                    tkey = item[_I_TKEY]
                    if tkey >= 0:
                        log_ = inflight.get(tkey)
                        if log_ is None:
                            log_ = inflight[tkey] = deque(maxlen=INFLIGHT_LOG)
                        log_.append((item[_I_SEQ], now))
                if len(out) >= max_packets:
                    break
            if len(out) >= max_packets:
                break
        k = len(out)
        sub.qpkts -= k
        sub.qbytes -= nbytes
        sub.pkts_out += k
        sub.bytes_out += nbytes
        self._packets_out += k
        self._bytes_out += nbytes
        self._frames_out += frames
        self._age_max = age_max
        return out

    def has_pending(self, link_id: bytes) -> bool:
        """Whether ``next_packets`` may return something for ``link_id`` now (not stalled, queue non-empty)."""
        sub = self._subs.get(link_id)
        return sub is not None and not sub.stalled and sub.qpkts > 0

    def send_control(self, link_id: bytes, packet: bytes, now: float) -> bool:
        """Queue a control packet for a subscriber ahead of all media; False if unknown, full or too big."""
        sub = self._subs.get(link_id)
        if sub is None or len(packet) > sub.mdu:
            return False
        q = sub.queues[CLS_CONTROL]
        if len(q) >= self.config.max_control_packets:
            self._count_drop(sub, "cap_control")
            return False
        q.append((now, bytes(packet), -1, 0, 0, 0, False))
        sub.qbytes += len(packet)
        sub.qpkts += 1
        return True

    # ------------------------------------------------------------------ drop policy

    def _expire(self, sub: _Sub, cls: int, item: tuple[Any, ...], now: float) -> None:
        """The front ``item`` of class ``cls`` is past its age bound: drop it under the policy."""
        if cls == CLS_AUDIO:
            sub.queues[cls].popleft()
            sub.qpkts -= 1
            sub.qbytes -= len(item[_I_PKT])
            self._count_drop(sub, "age_audio")
        elif item[_I_FLAGS] & FLAG_DISCARDABLE and not item[_I_FLAGS] & FLAG_KEYFRAME:
            self._drop_frame(sub, item[_I_TKEY], item[_I_SEQ], "age_discardable", now)
        else:
            self._drop_gop(sub, item[_I_TKEY], item[_I_GOP], "age_gop", now)

    def _drop_frame(self, sub: _Sub, tkey: int, seq: int, reason: str, now: float) -> None:
        """Drop one whole video frame: queued fragments now, later ones on arrival."""
        sub.skip_frame[tkey] = seq
        self._purge(sub, lambda it: it[_I_TKEY] == tkey and it[_I_SEQ] == seq, reason)
        self._gave_up_frame(sub, tkey, seq, now)

    @staticmethod
    def _gave_up_frame(sub: _Sub, tkey: int, seq: int, now: float) -> None:
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

    def _drop_gop(self, sub: _Sub, tkey: int, gop: int, reason: str, now: float) -> None:
        """Drop the rest of group ``gop`` (and older) of one track; resume at a newer keyframe."""
        self._purge(sub, lambda it: it[_I_TKEY] == tkey and not _newer(it[_I_GOP], gop), reason)
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
        if track.last_gop is None or not _newer(track.last_gop, gop):
            sub.restart_at[tkey] = now
            prev = sub.waiting.get(tkey, gop)
            sub.waiting[tkey] = gop if prev is None or not _newer(prev, gop) else prev
            self._request_keyframe(track, now)

    def _purge_stale(self, sub: _Sub, tkey: int, gop: int, late: float) -> None:
        """A keyframe of ``gop`` is going out: older groups of its track that arrived before
        ``late`` are stale (the receiver restarts decoding here); merely reordered ones stay."""
        self._purge(
            sub,
            lambda it: it[_I_TKEY] == tkey and it[_I_T] < late and _newer(gop, it[_I_GOP]),
            "stale_gop",
        )

    def _purge(self, sub: _Sub, pred: Callable[[tuple[Any, ...]], bool], reason: str) -> None:
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
                    sub.qbytes -= len(it[_I_PKT])
            q.clear()
            q.extend(keep)
        if dropped:
            sub.qpkts -= dropped
            self._count_drop(sub, reason, dropped)

    def _shed(self, sub: _Sub, now: float) -> None:
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
            if it[_I_FLAGS] & FLAG_DISCARDABLE:
                frame = (it[_I_TKEY], it[_I_SEQ])
                if frame not in chosen:
                    if got_b >= excess_b and got_p >= excess_p:
                        break
                    chosen[frame] = None
                got_b += len(it[_I_PKT])
                got_p += 1
        if chosen:
            for tkey, seq in chosen:
                sub.skip_frame[tkey] = seq  # arrival order: the newest per track wins
                self._gave_up_frame(sub, tkey, seq, now)
            self._purge(sub, lambda it: (it[_I_TKEY], it[_I_SEQ]) in chosen, "cap_discardable")
        # 2. Whole groups of pictures, oldest first.
        key_q, rest_q = queues[CLS_KEY], queues[CLS_REST]
        while (sub.qbytes > max_b or sub.qpkts > max_p) and (key_q or rest_q):
            if key_q and (not rest_q or key_q[0][_I_T] <= rest_q[0][_I_T]):
                victim = key_q[0]
            else:
                victim = rest_q[0]
            self._drop_gop(sub, victim[_I_TKEY], victim[_I_GOP], "cap_gop", now)
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
            sub.qbytes -= len(it[_I_PKT])
            self._count_drop(sub, reason)

    def _count_drop(self, sub: _Sub | None, reason: str, n: int = 1) -> None:
        self._drops[reason] = self._drops.get(reason, 0) + n
        if sub is not None:
            sub.drops[reason] = sub.drops.get(reason, 0) + n

    # ------------------------------------------------------------------ stalls and keyframes

    def _stall(self, sub: _Sub, now: float) -> None:
        dropped = sub.qpkts
        for q in sub.queues:
            q.clear()
        sub.qpkts = sub.qbytes = 0
        if dropped:
            self._count_drop(sub, "stalled", dropped)
        sub.stalled = True
        sub.stalled_at = now
        sub.skip_frame.clear()
        sub.excused.clear()
        sub.sent_gop.clear()
        sub.inflight.clear()
        sub.inflight_age = 0.0
        self._stalls += 1
        self._push_event(SubscriberStalled(sub.link_id, sub.last_report, dropped))
        log.debug("subscriber %s stalled (%d packets dropped)", sub.link_id.hex(), dropped)

    def _resume(self, sub: _Sub, now: float) -> None:
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

    def _request_keyframe(self, track: _Track, now: float, count: bool = True) -> None:
        """Note that ``track`` needs a keyframe; ``tick`` sends it, coalesced and rate-limited."""
        if track.audio:
            return
        if track.kf_pending or (
            track.kf_outstanding and now - track.kf_last_sent < self.config.keyframe_request_timeout
        ):
            if count:
                self._kf_coalesced += 1
            return
        if count and now - track.kf_last_sent < self.config.keyframe_min_interval:
            self._kf_rate_limited += 1
        track.kf_pending = True
        self._kf_pending[track.tkey] = track

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
                    self._age_purge(sub, now)
            if sub.waiting and not sub.stalled:
                # A subscriber still waiting re-asks once an earlier request has timed out.
                for tkey in sub.waiting:
                    track = self._tracks.get(tkey)
                    if track is not None and track.publisher is not None:
                        self._request_keyframe(track, now, count=False)
        self._nack_upstream(now)
        if self._kf_pending:
            for tkey, track in list(self._kf_pending.items()):
                if track.publisher is None:
                    # Nobody feeds the track right now; a later subscriber or report asks again.
                    self._kf_no_publisher += 1
                    track.kf_pending = False
                    del self._kf_pending[tkey]
                    continue
                if now - track.kf_last_sent < cfg.keyframe_min_interval:
                    continue
                track.kf_pending = False
                track.kf_outstanding = True
                track.kf_last_sent = now
                del self._kf_pending[tkey]
                self._kf_sent += 1
                self._push_event(KeyframeRequested(track.stream_id, track.track_id, track.publisher))
        events, self._events = self._events, []
        return events

    def _age_purge(self, sub: _Sub, now: float) -> None:
        """Apply the age bounds to queue fronts of a subscriber whose sender is not draining."""
        for cls in (CLS_AUDIO, CLS_KEY, CLS_REST):
            q = sub.queues[cls]
            limit = self._max_age[cls]
            while q and now - q[0][_I_T] > limit:
                self._expire(sub, cls, q[0], now)

    def _push_event(self, event: Event) -> None:
        if len(self._events) >= MAX_PENDING_EVENTS:
            self._events.pop(0)
            self._events_dropped += 1
        self._events.append(event)

    # ------------------------------------------------------------------ observability

    def stats(self) -> dict[str, Any]:
        """Counters and gauges (plain JSON-able types); cheap enough to call once a second."""
        ages = sorted(self._ages)
        p50 = ages[len(ages) // 2] if ages else 0.0
        subscribers = {}
        for link_id, sub in self._subs.items():
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
        return {
            "packets_in": self._packets_in,
            "fragments_in": self._fragments_in,
            "frames_in": self._frames_in,
            "bytes_in": self._bytes_in,
            "packets_out": self._packets_out,
            "frames_out": self._frames_out,
            "bytes_out": self._bytes_out,
            "resplits": self._resplits,
            "reports_in": self._reports_in,
            "keepalives_in": self._keepalives_in,
            "drops": dict(self._drops),
            "queue_age_ms": {
                "p50": p50 * 1000.0,
                "max_recent": (ages[-1] if ages else 0.0) * 1000.0,
                "max": self._age_max * 1000.0,
                "samples": len(ages),
            },
            "keyframe_requests": {
                "sent": self._kf_sent,
                "coalesced": self._kf_coalesced,
                "rate_limited": self._kf_rate_limited,
                "no_publisher": self._kf_no_publisher,
                "losses_excused": self._losses_excused,
                "pending": len(self._kf_pending),
            },
            "retransmit": {
                "nacks_in": self._nacks_in,
                "packets_retransmitted": self._retransmitted,
                "responder": dict(self._responder.counters),
                "upstream": {} if self._detector is None else dict(self._detector.counters),
                "ring_bytes": sum(t.ring.bytes for t in self._tracks.values() if t.ring is not None),
            },
            "stalls": self._stalls,
            "inflight_resets": self._inflight_resets,
            "resumes": self._resumes,
            "events_dropped": self._events_dropped,
            "streams": len(self._streams),
            "per_stream": {
                str(sid): {
                    "publishers": len(st.publishers),
                    "subscribers": len(st.subs),
                    "tracks": {
                        str(tid): {"audio": tr.audio, "fed": tr.publisher is not None, "gop": tr.last_gop}
                        for tid, tr in st.tracks.items()
                    },
                }
                for sid, st in self._streams.items()
            },
            "subscribers": subscribers,
        }


def _header_of(packet: bytes) -> FragmentHeader:
    """The FragmentHeader of an already validated fragment packet (re-split and filter paths only)."""
    _, flags, sid, tid, prio, seq, gop, off, total, kid = _FRAG.unpack_from(packet)
    return FragmentHeader(sid, tid, seq, gop, off, total, kid, flags, prio)
