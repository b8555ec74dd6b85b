"""The forwarding engine's limits, drop reasons and the vocabulary its parts share.

:class:`EngineConfig` holds every tunable limit with the reason for its default; the module
constants are the fixed limits. The egress priority classes, the egress item layout and the
serial-number comparison are shared by ingress (``engine.py``), the egress queues
(``egress.py``) and repair (``repair.py``), so they are defined once, here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..media.retransmit import NACK_RATE
from ..protocol.media_wire import FRAG_HEADER_LEN, MAX_FRAME_SIZE
from ..protocol.reports import REPORT_INTERVAL_S
from .errors import ConfigError

__all__ = ["EngineConfig", "DROP_REASONS"]

# Egress priority classes, served in strict order.
CLS_CONTROL = 0
CLS_AUDIO = 1
CLS_KEY = 2
CLS_REST = 3
N_CLASSES = 4

# A fragment with a priority below the default (128, wire.py) is treated as base layer and
# scheduled with keyframes; the default and anything above is "the rest".
BASE_LAYER_PRIORITY = 128

# Egress item tuple fields: (arrival, packet, track_key, frame_seq, gop_id, flags, first). A plain
# tuple, so the hot path allocates no dataclass per queued packet.
I_T, I_PKT, I_TKEY, I_SEQ, I_GOP, I_FLAGS, I_FIRST = range(7)

_U32 = 0xFFFFFFFF
_HALF = 0x80000000

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


def newer(a: int, b: int) -> bool:
    """Serial-number comparison of u32 ids (RFC 1982 style): is ``a`` after ``b``?"""
    return 0 < ((a - b) & _U32) < _HALF


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
