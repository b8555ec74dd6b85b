"""The loss-injection seam: drop a share of a link's media packets, at random or in bursts.

Loopback loses nothing, so loss recovery (``media/nack.py``, ``media/retransmit.py``) is tested
and benchmarked by dropping packets on purpose where a real radio or internet hop would: a
:class:`LossInjector` handed to ``RelayClient(loss_out=..., loss_in=...)`` is asked once per
media packet (sent or received, after decryption) whether to drop it. Control requests are never
dropped (they have their own retries in RNS). Off by default: no injector, no cost.

Two models, combinable:

* **random**: each packet independently with probability ``rate`` (Bernoulli, like a noisy
  Wi-Fi or radio link with FEC failing now and then);
* **bursts**: every ``burst_period_s`` seconds, everything for ``burst_s`` seconds (a fade, a
  handover, a full queue somewhere upstream), the first burst starting ``burst_offset_s`` after
  ``origin`` (the injector's first use unless given).

Only tests and benchmarks construct one.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field


@dataclass
class LossInjector:
    """Decides, per packet, whether the seam drops it. Thread-safe (RNS calls from several threads)."""

    rate: float = 0.0
    "Probability of dropping each packet outside bursts (0..1)."
    burst_s: float = 0.0
    "Length of each loss burst in seconds (0: no bursts)."
    burst_period_s: float = 0.0
    "Seconds from one burst's start to the next's (must exceed burst_s when bursts are on)."
    burst_offset_s: float = 0.0
    "Delay from ``origin`` to the first burst."
    origin: float | None = None
    "Clock time bursts are measured from (None: the first call to drop)."
    seed: int | None = None
    "Seed of the random model, for repeatable runs."
    dropped: int = 0
    "Packets dropped so far."
    seen: int = 0
    "Packets asked about so far."
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be within 0..1")
        if self.burst_s < 0 or (self.burst_s > 0 and self.burst_period_s <= self.burst_s):
            raise ValueError("bursts need burst_period_s > burst_s > 0")
        self._rng = random.Random(self.seed)

    @property
    def active(self) -> bool:
        return self.rate > 0 or self.burst_s > 0

    def in_burst(self, now: float) -> bool:
        """Whether ``now`` falls inside a loss burst."""
        if self.burst_s <= 0 or self.origin is None:
            return False
        t = now - self.origin - self.burst_offset_s
        return t >= 0 and t % self.burst_period_s < self.burst_s

    def drop(self, now: float) -> bool:
        """Whether to drop the packet at hand (counts it)."""
        with self._lock:
            self.seen += 1
            if self.origin is None:
                self.origin = now
            hit = self.in_burst(now) or (self.rate > 0 and self._rng.random() < self.rate)
            if hit:
                self.dropped += 1
            return hit

    def stats(self) -> dict[str, float]:
        with self._lock:
            return {"seen": self.seen, "dropped": self.dropped, "rate": self.rate, "burst_s": self.burst_s}
