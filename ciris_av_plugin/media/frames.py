"""Both ends of a frame's life: :class:`FrameSealer` (publisher) and :class:`FrameOpener` (receiver).

A *frame object* is ``forwarding_header || SFrame(header || ciphertext || tag)`` where the
forwarding header is also the SFrame metadata, i.e. part of the AAD (RFC 9605 §4.4.3): a relay
reads it in clear but cannot change it. The frame object travels as fragments (``protocol/media_wire.py``).

The opener is a sans-I/O state machine: ``receive_packet(packet, now) -> events``. Its pipeline
for each packet is: fragment header -> :class:`~.reassembly.Reassembler` -> forwarding header
checks -> SFrame header -> KID checks -> :class:`~.keyring.EpochKeyRing` (or the future-frame
hold) -> :class:`~.replay.ReplayWindow` check -> decrypt -> replay commit ->
:class:`~.ordering.FrameOrderer` (in-order release per track, loss and keyframe gating).
Every refusal is a :class:`FrameDropped` event and a counter; no :class:`MediaError` escapes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import MediaError
from ..protocol import media_wire as wire
from ..protocol.media_wire import FH_LEN, ForwardingHeader, FragmentHeader
from .errors import (
    ExpiredKeyError,
    KeyRingError,
    KidError,
    ReassemblyError,
    SealError,
    SFrameError,
    UnknownKeyError,
)
from .events import FrameDecrypted, FrameDropped, FrameEvent, FrameHeld
from .keyring import EpochKeyRing, EpochKeys, FutureFrameHold, HeldFrame, KeySource
from .kid import encode_kid
from .ordering import FrameOrderer, TrackStats
from .reassembly import FrameAbandoned, FrameComplete, Reassembler
from .replay import ReplayWindow
from .sframe import MAX_CTR, MEDIA_SUITE, SFrameHeader, SFrameKey, decode_header, encode_header, suite_params

log = logging.getLogger(__name__)

# Drop reasons (FrameDropped.reason and FrameOpener.counters keys).
DROP_MALFORMED = "malformed_fragment"
DROP_REASSEMBLY = "reassembly_refused"
DROP_DEADLINE = "deadline"
DROP_EVICTED = "evicted"
DROP_BAD_FH = "bad_forwarding_header"
DROP_FH_MISMATCH = "header_mismatch"
DROP_BAD_SFRAME = "bad_sframe_header"
DROP_KID_MISMATCH = "kid_mismatch"
DROP_CONTEXT = "kid_context_mismatch"
DROP_STALE_EPOCH = "stale_epoch"
DROP_HOLD_OVERFLOW = "hold_overflow"
DROP_HOLD_EXPIRED = "hold_expired"
DROP_REPLAY = "replay"
DROP_AUTH = "auth_failed"
DROP_REASONS = frozenset(
    {
        DROP_MALFORMED,
        DROP_REASSEMBLY,
        DROP_DEADLINE,
        DROP_EVICTED,
        DROP_BAD_FH,
        DROP_FH_MISMATCH,
        DROP_BAD_SFRAME,
        DROP_KID_MISMATCH,
        DROP_CONTEXT,
        DROP_STALE_EPOCH,
        DROP_HOLD_OVERFLOW,
        DROP_HOLD_EXPIRED,
        DROP_REPLAY,
        DROP_AUTH,
    }
)


# --- publisher -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealedFrame:
    """One encrypted frame ready to fragment."""

    header: ForwardingHeader
    """The forwarding header (clear, authenticated)."""
    frame_object: bytes
    """``header.encode() || SFrame ciphertext``: what fragments carry byte ranges of."""
    kid: int
    """SFrame KID (track, sender leaf, epoch low byte); the relay checks its sender and epoch."""
    ctr: int
    """SFrame counter used, unique under this KID's key."""
    epoch: int
    """MLS epoch whose key sealed it."""

    def fragment_header(self) -> FragmentHeader:
        """The fragment header for offset 0 (flags from :func:`wire.fragment_flags`)."""
        fh = self.header
        return FragmentHeader(
            stream_id=fh.stream_id,
            track_id=fh.track_id,
            frame_seq=fh.frame_seq,
            gop_id=fh.gop_id,
            offset=0,
            total_len=len(self.frame_object),
            kid=self.kid,
            flags=wire.fragment_flags(fh),
            priority=fh.priority,
        )

    def packets(self, mdu: int) -> list[bytes]:
        """Link packets of at most ``mdu`` bytes carrying the whole frame object."""
        return wire.split(self.fragment_header(), self.frame_object, mdu)


class FrameSealer:
    """Publisher side: encrypts frames under the current epoch with per-KID counters.

    RFC 9605 §9.1: a (base_key, KID, CTR) triple must never be used twice. Each KID has its own
    counter, strictly increasing, restarting at ``ctr_floor`` when the epoch (hence every key)
    changes. A publisher restored from disk that did not commit a new epoch first passes
    ``ctr_floor`` = a persisted :attr:`high_water_mark` + 1, saved *before* the counters it
    covers were used.
    """

    def __init__(self, suite: int = MEDIA_SUITE, ctr_floor: int = 0) -> None:
        self.params = suite_params(suite)
        if not 0 <= ctr_floor <= MAX_CTR:
            raise SealError(f"counter floor {ctr_floor} outside 0..2^64-1")
        self.ctr_floor = ctr_floor
        self._epoch: int | None = None
        self._base_key = b""
        self._leaf_count = 0
        self._sender_leaf = 0
        self._keys: dict[int, SFrameKey] = {}
        self._next_ctr: dict[int, int] = {}
        self.high_water_mark = ctr_floor - 1
        """Highest counter handed out so far (under any KID), or ``ctr_floor - 1``."""
        self.frames_sealed = 0

    @property
    def epoch(self) -> int | None:
        return self._epoch

    @property
    def sender_leaf(self) -> int:
        return self._sender_leaf

    def set_keys(self, keys: EpochKeys) -> None:
        """:meth:`set_epoch` from a key source's :class:`EpochKeys` (needs ``own_leaf``)."""
        if keys.own_leaf is None:
            raise SealError("these epoch keys have no own leaf: receive-only")
        self.set_epoch(keys.epoch, keys.base_key, keys.leaf_count, keys.own_leaf)

    def set_epoch(self, epoch: int, base_key: bytes, leaf_count: int, sender_leaf: int) -> None:
        """Switch sending to ``epoch`` (at once: ARCHITECTURE.md, senders do not wait).

        The same epoch with the same parameters is a no-op (counters continue); a different
        key or leaf for the current epoch, or an older epoch, raises :class:`SealError`.
        """
        if len(base_key) != self.params.nk:
            raise SealError(f"base key is {len(base_key)} bytes, suite needs {self.params.nk}")
        try:
            encode_kid(0, sender_leaf, epoch, leaf_count)
        except KidError as exc:
            raise SealError(str(exc)) from None
        if self._epoch is not None:
            if epoch == self._epoch:
                if (bytes(base_key), leaf_count, sender_leaf) != (
                    self._base_key,
                    self._leaf_count,
                    self._sender_leaf,
                ):
                    raise SealError(f"epoch {epoch} is already in use with other keys")
                return
            if epoch < self._epoch:
                raise SealError(f"epoch {epoch} is older than the sending epoch {self._epoch}")
        self._epoch = epoch
        self._base_key = bytes(base_key)
        self._leaf_count = leaf_count
        self._sender_leaf = sender_leaf
        self._keys.clear()
        self._next_ctr.clear()

    def kid_for(self, track_id: int) -> int:
        """The KID this sender uses for ``track_id`` in the current epoch."""
        if self._epoch is None:
            raise SealError("no sending epoch set")
        try:
            return encode_kid(track_id, self._sender_leaf, self._epoch, self._leaf_count)
        except KidError as exc:
            raise SealError(str(exc)) from None

    def seal(self, fh: ForwardingHeader, payload: bytes | memoryview) -> SealedFrame:
        """Encrypt one frame. Raises :class:`MediaError` (and consumes no counter) on failure."""
        kid = self.kid_for(fh.track_id)
        epoch = self._epoch
        if epoch is None:  # kid_for raised already; this narrows the type
            raise SealError("no sending epoch set")
        ctr = self._next_ctr.get(kid, self.ctr_floor)
        if ctr > MAX_CTR:
            raise SealError(f"counter space of KID {kid} exhausted; a new epoch is needed")
        metadata = fh.encode()
        size = FH_LEN + len(encode_header(kid, ctr)) + len(payload) + self.params.nt
        if size > wire.MAX_FRAME_SIZE:
            raise SealError(f"frame object of {size} bytes exceeds {wire.MAX_FRAME_SIZE}")
        key = self._keys.get(kid)
        if key is None:
            key = SFrameKey.derive(self.params.suite, self._base_key, kid)
            self._keys[kid] = key
        ct = key.seal(ctr, metadata, payload)
        self._next_ctr[kid] = ctr + 1
        self.high_water_mark = max(self.high_water_mark, ctr)
        self.frames_sealed += 1
        return SealedFrame(header=fh, frame_object=metadata + ct, kid=kid, ctr=ctr, epoch=epoch)


@dataclass(slots=True)
class _Pending:
    """A reassembled frame whose headers checked out, waiting for (or given to) its key."""

    frag: FragmentHeader
    fh: ForwardingHeader
    sh: SFrameHeader
    data: bytes


# --- receiver ----------------------------------------------------------------------------------


class FrameOpener:
    """Receiver side: packets in, decrypted frames and counted drops out.

    Call :meth:`receive_packet` for every media fragment, :meth:`install_epoch` when the MLS
    group moves to a new epoch, and :meth:`expire` from a timer (``next_expiry`` says when);
    ``receive_packet`` also expires what is due, so a caller without a timer stays bounded.
    """

    def __init__(
        self,
        keyring: EpochKeyRing | None = None,
        reassembler: Reassembler | None = None,
        replay: ReplayWindow | None = None,
        hold: FutureFrameHold[_Pending] | None = None,
        orderer: FrameOrderer | None = None,
    ) -> None:
        self.keyring = keyring if keyring is not None else EpochKeyRing()
        self.reassembler = reassembler if reassembler is not None else Reassembler()
        self.replay = replay if replay is not None else ReplayWindow()
        self.hold: FutureFrameHold[_Pending] = hold if hold is not None else FutureFrameHold()
        self.orderer = orderer if orderer is not None else FrameOrderer()
        self.counters: dict[str, int] = {"packets": 0, "frames_decrypted": 0, "frames_held": 0}

    # -- public verbs ---------------------------------------------------------------------

    def install_epoch(self, epoch: int, base_key: bytes, leaf_count: int, now: float) -> list[FrameEvent]:
        """Install an epoch's receive keys; returns the events of frames held for it.

        Raises :class:`KeyRingError` (state unchanged) for an epoch the ring refuses.
        """
        wiped = self.keyring.install(epoch, base_key, leaf_count, now)
        self._forget_epochs(wiped)
        events = self.expire(now)
        for held in self.hold.release(epoch, now):
            events += self._open(held.item, now)
        return events

    def install_keys(self, keys: EpochKeys, now: float) -> list[FrameEvent]:
        """:meth:`install_epoch` from a key source's :class:`EpochKeys`."""
        return self.install_epoch(keys.epoch, keys.base_key, keys.leaf_count, now)

    def follow(self, source: KeySource, now: float) -> list[FrameEvent]:
        """Install the source's current epoch if it is newer than ours (call after every commit)."""
        keys = source.current_keys()
        current = self.keyring.current_epoch
        if keys is None or (current is not None and keys.epoch <= current):
            return []
        return self.install_keys(keys, now)

    def expire(self, now: float) -> list[FrameEvent]:
        """Act on time: drop late partial and held frames, wipe superseded epochs, and release
        frames whose reorder wait ran out."""
        events: list[FrameEvent] = [self._abandoned(a) for a in self.reassembler.expire(now)]
        for held in self.hold.expire(now):
            events.append(self._held_drop(held, DROP_HOLD_EXPIRED))
        self._forget_epochs(self.keyring.expire(now))
        events += self.orderer.expire(now)
        return events

    def next_expiry(self) -> float | None:
        """When :meth:`expire` next has work to do, for the caller's timer (None: nothing pending)."""
        times = [
            t
            for t in (
                self.reassembler.next_expiry(),
                self.hold.next_expiry(),
                self.keyring.next_expiry(),
                self.orderer.next_expiry(),
            )
            if t is not None
        ]
        return min(times) if times else None

    def abandon_stream(self, stream_id: int, now: float) -> list[FrameEvent]:
        """The link carrying ``stream_id`` went away mid-frame: drop its partial frames and
        release what waits in order, so nothing of it lingers until a deadline."""
        events: list[FrameEvent] = [self._abandoned(a) for a in self.reassembler.abandon_stream(stream_id)]
        events += self.orderer.flush_stream(stream_id, now)
        return events

    def receive_packet(self, packet: bytes | memoryview, now: float) -> list[FrameEvent]:
        """Take one media link packet (fragment header + chunk)."""
        self.counters["packets"] += 1
        events = self.expire(now)
        try:
            frag, chunk = wire.decode_fragment(packet)
        except MediaError as exc:
            events.append(self._drop(FrameDropped(DROP_MALFORMED, detail=str(exc))))
            return events
        try:
            results = self.reassembler.add(frag, chunk, now)
        except ReassemblyError as exc:
            events.append(
                self._drop(
                    FrameDropped(
                        DROP_REASSEMBLY, frag.stream_id, frag.track_id, frag.frame_seq, frag.kid, str(exc)
                    )
                )
            )
            return events
        for r in results:
            if isinstance(r, FrameAbandoned):
                events.append(self._abandoned(r))
            else:
                events += self._frame_complete(r, now)
        return events

    @property
    def drops(self) -> dict[str, int]:
        """Drops so far by reason (the ``DROP_*`` keys of :attr:`counters`)."""
        return {k: v for k, v in self.counters.items() if k in DROP_REASONS}

    def waiting_for_keyframe(self, stream_id: int, track_id: int) -> bool:
        """True while video on this track cannot be decoded until a keyframe arrives.

        An unseen track is waiting (a late joiner starts at a keyframe); audio never waits.
        """
        return self.orderer.waiting_for_keyframe(stream_id, track_id)

    def track_stats(self, stream_id: int, track_id: int) -> TrackStats | None:
        """A copy of one track's receive state, or None for a track never seen."""
        return self.orderer.stats(stream_id, track_id)

    def tracks(self) -> dict[tuple[int, int], TrackStats]:
        """A copy of every track's receive state (for receiver reports)."""
        return self.orderer.all_stats()

    # -- pipeline -------------------------------------------------------------------------

    def _frame_complete(self, done: FrameComplete, now: float) -> list[FrameEvent]:
        frag, data = done.header, done.data
        ids = (frag.stream_id, frag.track_id, frag.frame_seq, frag.kid)
        try:
            fh = ForwardingHeader.decode(data)
        except MediaError as exc:
            return [self._drop(FrameDropped(DROP_BAD_FH, *ids, detail=str(exc)))]
        if (fh.stream_id, fh.track_id, fh.frame_seq) != (frag.stream_id, frag.track_id, frag.frame_seq):
            return [self._drop(FrameDropped(DROP_FH_MISMATCH, *ids, detail="forwarding vs fragment header"))]
        try:
            sh = decode_header(data, FH_LEN)
        except SFrameError as exc:
            return [self._drop(FrameDropped(DROP_BAD_SFRAME, *ids, detail=str(exc)))]
        if sh.kid != frag.kid:
            return [self._drop(FrameDropped(DROP_KID_MISMATCH, *ids, detail=f"SFrame KID {sh.kid}"))]
        return self._open(_Pending(frag=frag, fh=fh, sh=sh, data=data), now)

    def _open(self, p: _Pending, now: float) -> list[FrameEvent]:
        frag, fh, sh = p.frag, p.fh, p.sh
        ids = (fh.stream_id, fh.track_id, fh.frame_seq, frag.kid)
        body = memoryview(p.data)[FH_LEN:]
        ct = body[sh.length :]
        try:
            resolved = self.keyring.resolve(sh.kid, now)
        except UnknownKeyError:
            self.counters["frames_held"] += 1
            dropped = self.hold.hold(sh.kid, p, len(p.data), now)
            events: list[FrameEvent] = [
                self._held_drop(d, DROP_HOLD_OVERFLOW) for d in dropped if d.item is not p
            ]
            if any(d.item is p for d in dropped):
                events.append(self._drop(FrameDropped(DROP_HOLD_OVERFLOW, *ids)))
            else:
                events.append(FrameHeld(fh.stream_id, fh.track_id, fh.frame_seq, sh.kid))
            return events
        except ExpiredKeyError as exc:
            return [self._drop(FrameDropped(DROP_STALE_EPOCH, *ids, detail=str(exc)))]
        if resolved.parts.context != fh.track_id:
            # The KID's context must be the track it claims to be on (ARCHITECTURE.md KID
            # layout); also catches a KID written with another epoch's S.
            return [self._drop(FrameDropped(DROP_CONTEXT, *ids, detail=f"context {resolved.parts.context}"))]
        try:
            self.replay.check(sh.kid, sh.ctr)
        except SFrameError as exc:
            return [self._drop(FrameDropped(DROP_REPLAY, *ids, detail=str(exc)))]
        try:
            plaintext = resolved.key.open(sh, body[: sh.length], p.data[:FH_LEN], ct)
        except SFrameError as exc:
            return [self._drop(FrameDropped(DROP_AUTH, *ids, detail=str(exc)))]
        self.replay.commit(sh.kid, sh.ctr)
        self.counters["frames_decrypted"] += 1
        ev = FrameDecrypted(
            header=fh,
            payload=plaintext,
            kid=sh.kid,
            epoch=resolved.epoch,
            ctr=sh.ctr,
            sender_leaf=resolved.parts.sender_leaf,
        )
        return list(self.orderer.push(ev, now))

    # -- helpers --------------------------------------------------------------------------

    def _forget_epochs(self, epochs: list[int]) -> None:
        for epoch in epochs:
            self.replay.forget_epoch_low(epoch & 0xFF)

    def _abandoned(self, a: FrameAbandoned) -> FrameDropped:
        reason = DROP_DEADLINE if a.reason == "deadline" else DROP_EVICTED
        sid, tid, seq = a.key
        return self._drop(FrameDropped(reason, sid, tid, seq, a.kid, f"{a.received}/{a.total_len} bytes"))

    def _held_drop(self, held: HeldFrame[_Pending], reason: str) -> FrameDropped:
        fh = held.item.fh
        return self._drop(FrameDropped(reason, fh.stream_id, fh.track_id, fh.frame_seq, held.kid))

    def _drop(self, ev: FrameDropped) -> FrameDropped:
        self.counters[ev.reason] = self.counters.get(ev.reason, 0) + 1
        log.debug("media: dropped %s (%s)", ev.reason, ev.detail)
        return ev


__all__ = [
    "FrameDecrypted",
    "FrameDropped",
    "FrameEvent",
    "FrameHeld",
    "FrameOpener",
    "FrameSealer",
    "KeyRingError",
    "SealedFrame",
    "TrackStats",
]
