"""Limits of the join queue: how long a join request lives, how many wait, how often one may ask.

The queue itself is the store's (``GroupStateStore.put_join_request`` bounds it per stream, so it
survives a restart); what lives here is the per-identity rate limit in front of it, which is memory
only (a restart forgives everyone, which only helps honest joiners).
"""

from __future__ import annotations

from ..ratelimit import TokenBucket
from .delivery_errors import RateLimited

__all__ = [
    "JOIN_REQUEST_TTL_S",
    "MAX_PENDING_JOINS_PER_STREAM",
    "JOIN_REQUEST_BURST",
    "JOIN_REQUEST_REFILL_S",
    "MAX_RATE_TRACKED_IDENTITIES",
    "JoinRateLimiter",
]

# A join request lapses after two minutes: the admitting member is notified at once through its
# long poll (held ~3 s), so a request still unanswered after 120 s has no one acting on it; the
# joiner simply asks again. It also bounds how long members may fetch the joiner's KeyPackages.
JOIN_REQUEST_TTL_S = 120.0

# Pending join requests per stream. A call of 16 members admits joiners one commit at a time; 64
# queued is far beyond any real join burst and caps what a flood of identities can make us store.
MAX_PENDING_JOINS_PER_STREAM = 64

# Per-identity join-request token bucket: 3 at once (a joiner retrying on a lossy mesh link), then
# one per 10 s. A client following the protocol asks once and waits for its Welcome.
JOIN_REQUEST_BURST = 3
JOIN_REQUEST_REFILL_S = 10.0

# Identities whose join-request buckets are remembered; beyond it the fullest (least recently
# limited) ones are forgotten first, which only forgives them. Bounds memory under a Sybil flood.
MAX_RATE_TRACKED_IDENTITIES = 10_000


class JoinRateLimiter:
    """Per-identity join-request token buckets, bounded in the identities they remember.

    Single-threaded: part of the delivery core, whose one lock the transport holds.
    """

    def __init__(self) -> None:
        self._buckets: dict[bytes, TokenBucket] = {}

    def take(self, identity: bytes, now: float) -> None:
        """Spend one of ``identity``'s tokens, or raise :class:`RateLimited` (nothing spent)."""
        bucket = self._buckets.get(identity)
        if bucket is None:
            if len(self._buckets) >= MAX_RATE_TRACKED_IDENTITIES:
                self._forget_full_buckets(now)
            bucket = self._buckets[identity] = TokenBucket(1 / JOIN_REQUEST_REFILL_S, JOIN_REQUEST_BURST, now)
        if not bucket.take(now):
            raise RateLimited("too many join requests", retry_after=bucket.retry_after())

    def _forget_full_buckets(self, now: float) -> None:
        for ident, b in list(self._buckets.items()):
            b.refill(now)
            if b.full:
                del self._buckets[ident]
        while len(self._buckets) >= MAX_RATE_TRACKED_IDENTITIES:  # all limited: forgive the oldest
            del self._buckets[next(iter(self._buckets))]
