"""Receiver-side SFrame keys per MLS epoch, and the short hold for frames that arrive early.

``base_key = MLS-Exporter("SFrame 1.0 Base Key", "", Nk)`` per epoch (RFC 9605 §5.2). The
:class:`EpochKeyRing` turns a KID from a frame into the right per-KID SFrame key:

1. the KID's low byte names the epoch modulo 256 (see :mod:`.kid`), which picks one of the
   epochs held (the current one, plus superseded ones still inside their receive grace);
2. that epoch's own leaf count splits the rest of the KID (S can differ between epochs);
3. the SFrame key and salt for the KID are derived once and cached.

Senders switch epoch the moment they merge a commit, so frames of the previous epoch are still
in flight when a receiver installs the next one: superseded epochs stay for
``RECEIVE_GRACE_S`` and are then wiped. A frame whose KID names an epoch we do not have yet
(its commit is still on its way) raises :class:`UnknownKeyError`; the caller parks it in a
:class:`FutureFrameHold` for up to ``FUTURE_HOLD_S`` (RFC 9605 §4.4.4 allows buffering).

Wiping zeroes the stored base key and drops every derived key object. Python cannot promise the
memory of derived keys inside ``cryptography`` objects is overwritten; dropping all references
is the best a pure-Python process can do.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from .errors import ExpiredKeyError, KeyRingError, KidError, UnknownKeyError
from .kid import EPOCH_BITS, EPOCH_MASK, KidParts, decode_kid, encode_kid, kid_epoch_low, sender_bits
from .sframe import MEDIA_SUITE, SFrameKey, suite_params

log = logging.getLogger(__name__)

# How long a superseded epoch's keys stay for frames already in flight. ARCHITECTURE.md asks
# for ~1-2 s: one reassembly deadline (1 s) plus a relay queue age and RTT margin.
RECEIVE_GRACE_S = 1.5
# How long a frame with a future KID waits for its commit. ARCHITECTURE.md: ~500 ms, about a
# commit fan-out over a slow path; longer and the frame is useless to a realtime decoder anyway.
FUTURE_HOLD_S = 0.5
# Epochs held at once (current + superseded in grace). Commits can land faster than the grace
# (an Add then a Remove); beyond this the oldest goes early. Far below 2^EPOCH_BITS, so the
# low byte of the epoch is never ambiguous among held epochs.
MAX_HELD_EPOCHS = 4
# Derived per-KID keys cached per epoch. Live KIDs are senders x tracks (a handful); the bound
# stops frames with made-up KIDs from growing the cache (they cost one HKDF each, then go).
MAX_CACHED_KEYS_PER_EPOCH = 1024
# Frames parked while their epoch's commit arrives: ~0.5 s of a few streams of 2 Mbit/s video.
MAX_HELD_FRAMES = 256
MAX_HELD_BYTES = 4 << 20
# Halfway point of the low-byte epoch circle: a KID epoch up to 127 ahead of ours is "future",
# anything else "past" (RFC 9605 §5.2: E bits define a reordering window of 2^E epochs).
_FUTURE_SPAN = 1 << (EPOCH_BITS - 1)


@dataclass(frozen=True, slots=True)
class EpochKeys:
    """What a key source hands the media layer for one epoch."""

    epoch: int
    """MLS epoch number."""
    base_key: bytes
    """``MLS-Exporter("SFrame 1.0 Base Key", "", Nk)`` of that epoch."""
    leaf_count: int
    """Width of the ratchet tree at that epoch (a power of two): fixes S in the KID."""
    own_leaf: int | None = None
    """This member's leaf index, needed to send; None for a receive-only party."""


class KeySource(Protocol):
    """Where media keys come from: the MLS group later, a static source in tests."""

    def current_keys(self) -> EpochKeys | None:
        """The keys of the member's current epoch, or None before it has joined."""
        ...


class StaticKeySource:
    """A :class:`KeySource` holding whatever keys it was last given (tests, benchmarks)."""

    def __init__(self, keys: EpochKeys | None = None) -> None:
        self._keys = keys

    def set(self, keys: EpochKeys) -> None:
        self._keys = keys

    def current_keys(self) -> EpochKeys | None:
        return self._keys


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    """A KID resolved against the key ring."""

    epoch: int
    leaf_count: int
    parts: KidParts
    key: SFrameKey


@dataclass(slots=True)
class _HeldEpoch:
    epoch: int
    base_key: bytearray
    leaf_count: int
    retire_at: float | None = None  # None while current
    keys: OrderedDict[int, SFrameKey] = field(default_factory=OrderedDict)

    def live(self, now: float) -> bool:
        return self.retire_at is None or now < self.retire_at

    def wipe(self) -> None:
        for i in range(len(self.base_key)):
            self.base_key[i] = 0
        self.keys.clear()


class EpochKeyRing:
    """Receive keys for the current epoch and superseded epochs still in their grace."""

    def __init__(
        self,
        suite: int = MEDIA_SUITE,
        grace: float = RECEIVE_GRACE_S,
        max_epochs: int = MAX_HELD_EPOCHS,
        max_cached_keys: int = MAX_CACHED_KEYS_PER_EPOCH,
    ) -> None:
        self.params = suite_params(suite)
        self.grace = grace
        self.max_epochs = max_epochs
        self.max_cached_keys = max_cached_keys
        self._epochs: list[_HeldEpoch] = []  # oldest first; the last one is current
        self.keys_derived = 0

    # -- state ----------------------------------------------------------------------------

    @property
    def current_epoch(self) -> int | None:
        return self._epochs[-1].epoch if self._epochs else None

    @property
    def held_epochs(self) -> list[int]:
        return [e.epoch for e in self._epochs]

    def leaf_count(self, epoch: int) -> int | None:
        for e in self._epochs:
            if e.epoch == epoch:
                return e.leaf_count
        return None

    def next_expiry(self) -> float | None:
        """When :meth:`expire` next has work to do (for the caller's timer)."""
        times = [e.retire_at for e in self._epochs if e.retire_at is not None]
        return min(times) if times else None

    # -- verbs ----------------------------------------------------------------------------

    def install(self, epoch: int, base_key: bytes, leaf_count: int, now: float) -> list[int]:
        """Make ``epoch`` current; the previous current one starts its grace. Returns wiped epochs.

        Re-installing the current (or a held) epoch with the same key is a no-op; a different
        key for a held epoch or an epoch older than the current one raises
        :class:`KeyRingError` and changes nothing.
        """
        if epoch < 0:
            raise KeyRingError(f"epoch {epoch} is negative")
        if len(base_key) != self.params.nk:
            raise KeyRingError(f"base key is {len(base_key)} bytes, suite needs {self.params.nk}")
        try:
            sender_bits(leaf_count)
        except KidError as exc:
            raise KeyRingError(str(exc)) from None
        for held in self._epochs:
            if held.epoch == epoch:
                if bytes(held.base_key) != bytes(base_key) or held.leaf_count != leaf_count:
                    raise KeyRingError(f"epoch {epoch} already installed with other keys")
                return self.expire(now)
        current = self.current_epoch
        if current is not None and epoch < current:
            raise KeyRingError(f"epoch {epoch} is older than the current epoch {current}")

        wiped = self.expire(now)
        if self._epochs:
            self._epochs[-1].retire_at = now + self.grace
        # RFC 9605 §5.2: "receivers MUST remove an old epoch when a new epoch with the same
        # low-order E bits is introduced".
        for held in [e for e in self._epochs if (e.epoch & EPOCH_MASK) == (epoch & EPOCH_MASK)]:
            wiped.append(self._wipe(held))
        self._epochs.append(_HeldEpoch(epoch=epoch, base_key=bytearray(base_key), leaf_count=leaf_count))
        while len(self._epochs) > self.max_epochs:
            wiped.append(self._wipe(self._epochs[0]))
        log.debug("keyring: epoch %d installed (%d leaves), wiped %s", epoch, leaf_count, wiped)
        return wiped

    def expire(self, now: float) -> list[int]:
        """Wipe superseded epochs whose grace has run out; returns their numbers."""
        return [self._wipe(e) for e in list(self._epochs) if not e.live(now)]

    def resolve(self, kid: int, now: float) -> ResolvedKey:
        """Find the key of ``kid``. Changes nothing but the derived-key cache.

        Raises :class:`UnknownKeyError` when the KID's epoch is ahead of ours (hold the frame)
        and :class:`ExpiredKeyError` when it is behind and no longer held (drop it).
        """
        low = kid_epoch_low(kid)
        for held in self._epochs:
            if (held.epoch & EPOCH_MASK) == low and held.live(now):
                return self._key_for(held, kid)
        current = self.current_epoch
        if current is None:
            raise UnknownKeyError(f"no epoch installed yet for KID {kid}")
        ahead = (low - current) & EPOCH_MASK
        if 0 < ahead < _FUTURE_SPAN:
            raise UnknownKeyError(f"KID {kid} names epoch {current + ahead}, ahead of {current}")
        raise ExpiredKeyError(f"KID {kid} names an epoch (low byte {low}) whose keys are gone")

    def sender_key(self, context: int, sender_leaf: int) -> tuple[int, SFrameKey]:
        """KID and key for sending on the current epoch (used by tests and loopback tools)."""
        if not self._epochs:
            raise UnknownKeyError("no epoch installed")
        held = self._epochs[-1]
        try:
            kid = encode_kid(context, sender_leaf, held.epoch, held.leaf_count)
        except KidError as exc:
            raise KeyRingError(str(exc)) from None
        return kid, self._key_for(held, kid).key

    # -- internals ------------------------------------------------------------------------

    def _key_for(self, held: _HeldEpoch, kid: int) -> ResolvedKey:
        parts = decode_kid(kid, held.leaf_count)
        key = held.keys.get(kid)
        if key is None:
            key = SFrameKey.derive(self.params.suite, bytes(held.base_key), kid)
            self.keys_derived += 1
            held.keys[kid] = key
            if len(held.keys) > self.max_cached_keys:
                held.keys.popitem(last=False)
        else:
            held.keys.move_to_end(kid)
        return ResolvedKey(epoch=held.epoch, leaf_count=held.leaf_count, parts=parts, key=key)

    def _wipe(self, held: _HeldEpoch) -> int:
        held.wipe()
        self._epochs.remove(held)
        log.debug("keyring: epoch %d wiped", held.epoch)
        return held.epoch


T = TypeVar("T")


@dataclass(slots=True)
class HeldFrame(Generic[T]):
    """One frame parked because its KID names an epoch not installed yet."""

    kid: int
    item: T
    size: int
    held_at: float

    @property
    def epoch_low(self) -> int:
        return kid_epoch_low(self.kid)


class FutureFrameHold(Generic[T]):
    """Bounded parking for frames whose epoch key has not arrived (count, bytes and time).

    The item is opaque (the opener stores the reassembled frame and its fragment header). When
    a bound would be exceeded the oldest frames go first: in realtime media the newest frames
    are the ones still worth decoding.
    """

    def __init__(
        self,
        hold_time: float = FUTURE_HOLD_S,
        max_frames: int = MAX_HELD_FRAMES,
        max_bytes: int = MAX_HELD_BYTES,
    ) -> None:
        self.hold_time = hold_time
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._frames: deque[HeldFrame[T]] = deque()
        self.held_bytes = 0
        self.counters: dict[str, int] = {"held": 0, "released": 0, "expired": 0, "overflow": 0}

    def __len__(self) -> int:
        return len(self._frames)

    def hold(self, kid: int, item: T, size: int, now: float) -> list[HeldFrame[T]]:
        """Park a frame; returns frames dropped to respect the bounds (maybe this one)."""
        frame = HeldFrame(kid=kid, item=item, size=size, held_at=now)
        if size > self.max_bytes or self.max_frames < 1:
            self.counters["overflow"] += 1
            return [frame]
        dropped: list[HeldFrame[T]] = []
        while self._frames and (
            len(self._frames) >= self.max_frames or self.held_bytes + size > self.max_bytes
        ):
            dropped.append(self._pop_oldest())
        self.counters["overflow"] += len(dropped)
        self._frames.append(frame)
        self.held_bytes += size
        self.counters["held"] += 1
        return dropped

    def release(self, epoch: int, now: float) -> list[HeldFrame[T]]:
        """Take out the frames of ``epoch`` (by its low byte) that are still within their hold."""
        low = epoch & EPOCH_MASK
        out: list[HeldFrame[T]] = []
        keep: deque[HeldFrame[T]] = deque()
        for f in self._frames:
            if f.epoch_low == low and now < f.held_at + self.hold_time:
                out.append(f)
            else:
                keep.append(f)
        self._frames = keep
        self.held_bytes -= sum(f.size for f in out)
        self.counters["released"] += len(out)
        return out

    def expire(self, now: float) -> list[HeldFrame[T]]:
        """Drop frames held longer than ``hold_time``; returns them (counted as expired)."""
        out: list[HeldFrame[T]] = []
        while self._frames and now >= self._frames[0].held_at + self.hold_time:
            out.append(self._pop_oldest())
        self.counters["expired"] += len(out)
        return out

    def next_expiry(self) -> float | None:
        return self._frames[0].held_at + self.hold_time if self._frames else None

    def _pop_oldest(self) -> HeldFrame[T]:
        f = self._frames.popleft()
        self.held_bytes -= f.size
        return f
