"""The one token bucket every limit in the package uses (control requests, join requests, KeyPackage
takes, NACKs and repair bytes, publisher ingress).

Sans-I/O: the caller passes ``now`` (monotonic seconds on the relay, the caller's clock elsewhere);
the bucket never reads a clock. A bucket starts full. Time running backwards (a caller mixing clocks,
or two threads' ``now`` arriving out of order) adds nothing and moves nothing back, so a bucket can
never be refilled twice for one interval. ``__slots__`` because a relay keeps one per link or
identity and the ingress bucket is on the packet path.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` tokens per second."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.at = now

    def refill(self, now: float) -> float:
        """Add what the time since the last refill earned; returns the tokens now available."""
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
        return self.tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if they are there; False (and nothing spent) otherwise."""
        if self.refill(now) >= cost:
            self.tokens -= cost
            return True
        return False

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens will be available (0 if they are), as of the last refill."""
        return max(0.0, (cost - self.tokens) / self.rate)

    @property
    def full(self) -> bool:
        """True once nothing has been spent since the last refill: such a bucket can be forgotten."""
        return self.tokens >= self.burst
