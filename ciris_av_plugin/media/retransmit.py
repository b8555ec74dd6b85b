"""The sender side of loss recovery: a per-track retransmission ring and the NACK responder.

One implementation for every sender (ARCHITECTURE.md: each hop repairs its own losses): the
publisher keeps the packets it sent, a relay the packets it received from upstream, each in a
:class:`RetransmitRing` per track, and answers NACKs (:mod:`.nack`) with :class:`NackResponder`.

The ring is on the relay's forwarding hot path, so :meth:`RetransmitRing.add` is O(1) amortised
and allocates nothing per packet beyond a list slot (a new frame costs one small list). It keeps
the packets exactly as received; lookups, flag rewriting and re-splitting happen only when a
NACK asks, which is rare.

Mediasoup keeps up to 2 s of video for NACKs and Janus at least 200 ms; media older than ~1 s
is useless to an interactive receiver (its jitter buffer moved on long ago), so 1 s it is.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..protocol.media_wire import (
    FLAG_AUDIO,
    FLAG_KEYFRAME,
    FLAG_RETRANSMISSION,
    FRAG_HEADER_LEN,
    MAX_FRAME_SIZE,
    FragmentHeader,
    split,
)
from ..protocol.nack import NACK_TO_END, Nack
from ..ratelimit import TokenBucket

log = logging.getLogger(__name__)

# Media kept for retransmission, per track: 1 s (see the module docstring).
RING_MAX_AGE_S = 1.0
# Bytes kept per track: two largest frames, so a maximum-size keyframe and its successor are
# repairable; at 4 Mbit/s (a screen share) 1 s is 500 kB, well inside.
RING_MAX_BYTES = 2 * MAX_FRAME_SIZE
# NACK packets accepted per link per second, and the burst. A healthy receiver sends at most a
# few per lost packet (first NACK plus re-NACKs) and batches up to 24 ranges in one; 50/s is a
# 5 % loss rate at 1,000 packets/s with every loss NACKed separately.
NACK_RATE_PER_S = 50.0
NACK_BURST = 20.0
# Retransmitted bytes per link per second, and the burst: a quarter of the largest ingress rate
# a relay accepts from a publisher (engine_config.py, 4 MB/s), so repairs never more than ~1.25x a
# stream; the burst is one 256 kB keyframe resent whole.
RETRANSMIT_BYTES_PER_S = 1_000_000.0
RETRANSMIT_BURST_BYTES = 256 * 1024.0
# Stored packets a single NACK may make the responder look at: bounded work per NACK whatever
# its ranges say (a 24-range NACK over one 1 MiB frame at a 431-byte MDU would name ~2,600).
MAX_SCAN_PER_NACK = 1024
# Links with NACK buckets: the publisher has one, a relay one per subscriber link it knows.
MAX_LINK_BUCKETS = 4096

# Refusal reasons (responder counters and the relay's drop counters).
NACK_NEVER_SENT = "nack_never_sent"
NACK_EXPIRED = "nack_expired"
NACK_MISSING = "nack_missing"
NACK_UNKNOWN_TRACK = "nack_unknown_track"
NACK_RATE = "nack_rate"
NACK_BYTES = "nack_retransmit_budget"
NACK_WORK = "nack_work_bound"
NACK_REFUSED = "nack_refused"
NACK_BEFORE_START = "nack_before_start"

_U32 = 0xFFFFFFFF
_HALF = 0x80000000
_OFFSET = struct.Struct(">I")
_FRAG = struct.Struct(">BBQBBIIIIQ")


def _newer(a: int, b: int) -> bool:
    return 0 < ((a - b) & _U32) < _HALF


class RetransmitRing:
    """Recent link packets of one track, by frame_seq, bounded in age and bytes."""

    __slots__ = ("max_age", "max_bytes", "_frames", "_order", "bytes", "highest", "oldest_t")

    def __init__(self, max_age: float = RING_MAX_AGE_S, max_bytes: int = RING_MAX_BYTES) -> None:
        self.max_age = max_age
        self.max_bytes = max_bytes
        # frame_seq -> [time of its first packet, packet, packet, ...]
        self._frames: dict[int, list] = {}  # type: ignore[type-arg]
        self._order: deque[int] = deque()
        self.bytes = 0
        self.highest: int | None = None
        self.oldest_t = float("inf")

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, seq: int, packet: bytes, now: float) -> None:
        """Keep ``packet`` (a fragment of frame ``seq``); evicts frames past the age or byte bound."""
        frames = self._frames
        entry = frames.get(seq)
        if entry is None:
            frames[seq] = [now, packet]
            self._order.append(seq)
            high = self.highest
            if high is None or 0 < ((seq - high) & _U32) < _HALF:  # _newer, inlined: hot path
                self.highest = seq
            if not self.bytes:
                self.oldest_t = now
        else:
            entry.append(packet)
        size = self.bytes + len(packet)
        self.bytes = size
        if size > self.max_bytes or now - self.oldest_t > self.max_age:
            self._evict(now)

    def _evict(self, now: float) -> None:
        frames, order = self._frames, self._order
        while order:
            entry = frames[order[0]]
            if self.bytes <= self.max_bytes and now - entry[0] <= self.max_age:
                self.oldest_t = entry[0]
                return
            del frames[order.popleft()]
            self.bytes -= sum(len(p) for p in entry[1:])
        self.oldest_t = float("inf")

    def clear(self) -> None:
        self._frames.clear()
        self._order.clear()
        self.bytes = 0
        self.highest = None
        self.oldest_t = float("inf")

    def packets_of(self, seq: int) -> int:
        """How many packets of frame ``seq`` the ring holds."""
        entry = self._frames.get(seq)
        return 0 if entry is None else len(entry) - 1

    def lookup(
        self, seq: int, start: int, end: int, now: float, max_age: float
    ) -> tuple[float, list[bytes]] | str:
        """Stored packets of frame ``seq`` overlapping bytes ``[start, end)``, with the frame's time.

        Returns a refusal reason instead: ``NACK_NEVER_SENT`` (newer than anything held, or the
        ring is empty), ``NACK_EXPIRED`` (older than the ring or than ``max_age``) or
        ``NACK_MISSING`` (inside the ring's span but never held: it was lost before this hop).
        """
        entry = self._frames.get(seq)
        if entry is None:
            if self.highest is None or _newer(seq, self.highest):
                return NACK_NEVER_SENT
            if self._order and _newer(self._order[0], seq):
                return NACK_EXPIRED
            return NACK_MISSING
        t = entry[0]
        if now - t > max_age:
            return NACK_EXPIRED
        out = []
        for p in entry[1:]:
            (off,) = _OFFSET.unpack_from(p, 20)
            if off < end and off + len(p) - FRAG_HEADER_LEN > start:
                out.append(p)
        return (t, out) if out else NACK_MISSING


def as_retransmission(packet: bytes) -> bytes:
    """The same fragment with FLAG_RETRANSMISSION set (a receiver can tell repairs apart)."""
    return b"".join((packet[:1], bytes((packet[1] | FLAG_RETRANSMISSION,)), packet[2:]))


@dataclass(frozen=True, slots=True)
class Retransmission:
    """One packet to send again, with what a scheduler needs to place it."""

    arrival: float
    "When the sender first had this frame (its relay-clock arrival, for the queue age bound)."
    track_id: int
    "The track."
    frame_seq: int
    "The frame."
    flags: int
    "Fragment flags (FLAG_RETRANSMISSION included)."
    packet: bytes
    "The fragment, at most the link's MDU, retransmission flag set."


class NackResponder:
    """Answers NACKs from a set of rings, rate-limited per link in NACKs and retransmitted bytes.

    Every refusal is counted by reason in :attr:`counters`; nothing raises. Work per NACK is
    bounded by ``MAX_NACK_RANGES`` ranges and :data:`MAX_SCAN_PER_NACK` stored packets.
    """

    def __init__(
        self,
        nack_rate: float = NACK_RATE_PER_S,
        nack_burst: float = NACK_BURST,
        byte_rate: float = RETRANSMIT_BYTES_PER_S,
        byte_burst: float = RETRANSMIT_BURST_BYTES,
    ) -> None:
        self.nack_rate, self.nack_burst = nack_rate, nack_burst
        self.byte_rate, self.byte_burst = byte_rate, byte_burst
        self._nack_buckets: dict[bytes, TokenBucket] = {}
        self._byte_buckets: dict[bytes, TokenBucket] = {}
        self.counters: dict[str, int] = {
            "nacks": 0,
            "ranges": 0,
            "retransmitted_packets": 0,
            "retransmitted_bytes": 0,
        }

    def _count(self, reason: str, n: int = 1) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + n

    def forget(self, link_id: bytes) -> None:
        self._nack_buckets.pop(link_id, None)
        self._byte_buckets.pop(link_id, None)

    def admit(self, link_id: bytes, now: float) -> bool:
        """Charge one NACK to ``link_id``'s bucket; False (counted) when the link is flooding."""
        bucket = self._nack_buckets.get(link_id)
        if bucket is None:
            if len(self._nack_buckets) >= MAX_LINK_BUCKETS:
                self._nack_buckets.pop(next(iter(self._nack_buckets)))
            bucket = self._nack_buckets[link_id] = TokenBucket(self.nack_rate, self.nack_burst, now)
        if not bucket.take(now):
            self._count(NACK_RATE)
            return False
        return True

    def answer(
        self,
        link_id: bytes,
        nack: Nack,
        ring_of: Callable[[int], RetransmitRing | None],
        now: float,
        mdu: int,
        max_age: Callable[[int], float],
        allow: Callable[[int, int], bool] | None = None,
        refused: Callable[[str], None] | None = None,
        not_before: Callable[[int], float] | None = None,
    ) -> list[Retransmission]:
        """The packets that repair ``nack`` for ``link_id`` (call :meth:`admit` first).

        ``ring_of(track_id)`` gives the track's ring (None: unknown track); ``max_age(flags)``
        the oldest media worth resending for that kind (the receiver's queue age bound);
        ``allow(track_id, frame_seq)`` may veto frames (e.g. ones the relay dropped on purpose);
        ``refused(reason)`` hears of every refused range (the relay's per-link counters);
        ``not_before(track_id)`` is the earliest first-arrival time of a frame this receiver may
        get again (a relay's subscriber never had what came before it joined or resumed).
        Packets come back re-split to ``mdu``, retransmission flag set, audio and keyframe
        fragments first, within the link's retransmission byte budget.
        """
        self.counters["nacks"] += 1

        def count(reason: str) -> None:
            self._count(reason)
            if refused is not None:
                refused(reason)

        bucket = self._byte_buckets.get(link_id)
        if bucket is None:
            if len(self._byte_buckets) >= MAX_LINK_BUCKETS:
                self._byte_buckets.pop(next(iter(self._byte_buckets)))
            bucket = self._byte_buckets[link_id] = TokenBucket(self.byte_rate, self.byte_burst, now)
        found: list[tuple[int, float, int, int, bytes, int, int]] = []
        scanned = 0
        for r in nack.ranges:
            self.counters["ranges"] += 1
            ring = ring_of(r.track_id)
            if ring is None:
                count(NACK_UNKNOWN_TRACK)
                continue
            if allow is not None and not allow(r.track_id, r.frame_seq):
                count(NACK_REFUSED)
                continue
            if scanned >= MAX_SCAN_PER_NACK:
                count(NACK_WORK)
                continue
            scanned += 1 + ring.packets_of(r.frame_seq)
            got = ring.lookup(r.frame_seq, r.start, r.end, now, float("inf"))
            if isinstance(got, str):
                count(got)
                continue
            t, packets = got
            flags = packets[0][1]
            if now - t > max_age(flags):
                count(NACK_EXPIRED)
                continue
            if not_before is not None and t < not_before(r.track_id):
                count(NACK_BEFORE_START)
                continue
            urgency = 0 if flags & FLAG_AUDIO else (1 if flags & FLAG_KEYFRAME else 2)
            for p in packets:
                found.append((urgency, t, r.track_id, r.frame_seq, p, r.start, r.end))
        found.sort(key=lambda e: (e[0], e[1]))
        out: list[Retransmission] = []
        seen: set[tuple[int, int, int]] = set()
        for _, t, tid, seq, p, start, end in found:
            (off,) = _OFFSET.unpack_from(p, 20)
            ident = (tid, seq, off)
            if ident in seen:
                continue  # two ranges over one stored packet
            seen.add(ident)
            pieces = [as_retransmission(p)] if len(p) <= mdu else _resplit(p, start, end, mdu)
            cost = sum(len(x) for x in pieces)
            if not bucket.take(now, cost):
                count(NACK_BYTES)
                break
            flags = p[1] | FLAG_RETRANSMISSION
            for x in pieces:
                out.append(Retransmission(t, tid, seq, flags, x))
            self.counters["retransmitted_packets"] += len(pieces)
            self.counters["retransmitted_bytes"] += cost
        return out


def _resplit(packet: bytes, start: int, end: int, mdu: int) -> list[bytes]:
    """Cut a stored fragment for a smaller MDU, keeping only the pieces that overlap the range."""
    _, flags, sid, tid, prio, seq, gop, off, total, kid = _FRAG.unpack_from(packet)
    header = FragmentHeader(sid, tid, seq, gop, off, total, kid, flags | FLAG_RETRANSMISSION, prio)
    pieces = split(header, memoryview(packet)[FRAG_HEADER_LEN:], mdu)
    if end == NACK_TO_END:
        end = total
    out = []
    for piece in pieces:
        (p_off,) = _OFFSET.unpack_from(piece, 20)
        if p_off < end and p_off + len(piece) - FRAG_HEADER_LEN > start:
            out.append(piece)
    return out
