"""The relay's media-plane enforcement of MLS epochs and senders (sans-I/O).

SFrame has no per-sender authentication (RFC 9605 §7.2): any member holding an epoch's base key can
seal a frame under another member's KID. The relay cannot check the tag, but it knows which leaf each
publishing link belongs to and which epoch each stream is in, so it drops (ARCHITECTURE.md, "Epochs,
removal and media keys"):

* a fragment whose KID sender index is not the publishing link's leaf in the KID's epoch;
* a fragment whose KID names an older epoch once :data:`OLD_EPOCH_GRACE_S` has passed since the
  relay accepted the commit that ended it (frames sealed just before the publisher merged are still in
  flight); and one whose KID names an epoch the relay has not accepted yet (a publisher cannot be
  ahead of the delivery service, which answers "accepted" before the committer merges);
* a fragment whose KID context is not its track id (one key and counter space per track).

:meth:`EpochEnforcer.filter` is the forwarding engine's ``frame_filter``: it runs for every fragment,
under the engine lock, so it is a couple of dict lookups and integer shifts. Times are the engine's
monotonic clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..media.kid import EPOCH_BITS, EPOCH_MASK, sender_bits
from ..protocol.media_wire import FragmentHeader

log = logging.getLogger(__name__)

__all__ = [
    "OLD_EPOCH_GRACE_S",
    "DROP_KID_SENDER",
    "DROP_OLD_EPOCH",
    "DROP_UNKNOWN_EPOCH",
    "DROP_KID_CONTEXT",
    "DROP_NOT_BOUND",
    "EpochEnforcer",
]

# How long after accepting a commit the relay still forwards the previous epoch's frames. The
# committer merges within one round trip of the "accepted" reply and other members within one
# long-poll delivery (~tens of ms on loopback, a few hundred ms over slow RNS hops); frames sealed
# before that are in flight. ARCHITECTURE.md asks for ~250 ms; receivers keep old keys longer
# (keyring.RECEIVE_GRACE_S) because the relay's cut is the stricter one.
OLD_EPOCH_GRACE_S = 0.25

DROP_KID_SENDER = "kid_sender_not_link_leaf"
DROP_OLD_EPOCH = "kid_epoch_old"
DROP_UNKNOWN_EPOCH = "kid_epoch_unknown"
DROP_KID_CONTEXT = "kid_context_not_track"
DROP_NOT_BOUND = "publisher_not_bound"


@dataclass(frozen=True, slots=True)
class _EpochView:
    epoch: int
    s_bits: int
    leaf_of: Mapping[bytes, int]
    """Identity -> leaf index in this epoch."""


@dataclass(slots=True)
class _Stream:
    current: _EpochView
    previous: _EpochView | None = None
    changed_at: float = 0.0
    by_low: dict[int, _EpochView] = field(default_factory=dict)


class EpochEnforcer:
    """Per-stream epoch and roster as the delivery service accepted them, and the publishing links."""

    def __init__(self, grace_s: float = OLD_EPOCH_GRACE_S) -> None:
        self.grace_s = grace_s
        self._streams: dict[int, _Stream] = {}
        self._links: dict[bytes, tuple[bytes, int, bool]] = {}
        """Publishing link id -> (its identity hash, its stream, whether it is a peer relay)."""
        self._lock = threading.Lock()
        self.drops: dict[str, int] = {}

    def set_epoch(self, stream_id: int, epoch: int, members: Mapping[int, bytes], leaf_count: int, now: float) -> None:
        """The stream is at ``epoch`` with ``members`` (leaf -> identity) from ``now`` on."""
        view = _EpochView(epoch, sender_bits(leaf_count), {ident: leaf for leaf, ident in members.items()})
        with self._lock:
            st = self._streams.get(stream_id)
            if st is None:
                self._streams[stream_id] = _Stream(view, None, now, {epoch & EPOCH_MASK: view})
                return
            if epoch == st.current.epoch:
                return
            if epoch < st.current.epoch:
                log.warning("stream %d: epoch %d older than %d ignored", stream_id, epoch, st.current.epoch)
                return
            # Replace the dict rather than mutate it: filter() reads it without the lock.
            prev = st.current
            by_low = {epoch & EPOCH_MASK: view}
            if epoch - prev.epoch < (1 << EPOCH_BITS):
                by_low[prev.epoch & EPOCH_MASK] = prev
            self._streams[stream_id] = _Stream(view, prev, now, by_low)

    def bind(self, link_id: bytes, identity: bytes, stream_id: int, *, peer: bool = False) -> None:
        """``link_id`` publishes ``stream_id`` as ``identity``; a peer relay (cascade) forwards other
        members' frames, so only the epoch rule applies to it."""
        with self._lock:
            self._links[link_id] = (identity, stream_id, peer)

    def bound_links(self) -> list[bytes]:
        return list(self._links)

    def publishers(self, stream_id: int) -> list[bytes]:
        """Links publishing ``stream_id`` (where keyframe requests go)."""
        return [link for link, (_, sid, _) in list(self._links.items()) if sid == stream_id]

    def unbind(self, link_id: bytes) -> None:
        with self._lock:
            self._links.pop(link_id, None)

    def forget_stream(self, stream_id: int) -> None:
        with self._lock:
            self._streams.pop(stream_id, None)

    def filter(self, link_id: bytes, header: FragmentHeader, now: float) -> str | None:
        """The engine's ``frame_filter``: None to forward, else the drop reason."""
        reason = self._check(link_id, header, now)
        if reason is not None:
            self.drops[reason] = self.drops.get(reason, 0) + 1
        return reason

    def _check(self, link_id: bytes, header: FragmentHeader, now: float) -> str | None:
        bound = self._links.get(link_id)
        st = self._streams.get(header.stream_id)
        if bound is None or st is None or bound[1] != header.stream_id:
            return DROP_NOT_BOUND
        identity, _, peer = bound
        kid = header.kid
        view = st.by_low.get(kid & EPOCH_MASK)
        if view is None:
            return DROP_UNKNOWN_EPOCH  # older than the previous epoch, or not accepted yet
        if view is not st.current and now - st.changed_at > self.grace_s:
            return DROP_OLD_EPOCH
        s = view.s_bits
        if kid >> (s + EPOCH_BITS) != header.track_id:
            return DROP_KID_CONTEXT
        if peer:
            return None
        leaf = view.leaf_of.get(identity)
        if leaf is None or (kid >> EPOCH_BITS) & ((1 << s) - 1) != leaf:
            return DROP_KID_SENDER
        return None
