"""The ops-per-second loop the throughput benchmarks share (``mls_primitives``, ``mls_tree``,
``media_frames``)."""

from __future__ import annotations

import time
from collections.abc import Callable

# Each operation runs for at least this long (and at least MIN_ITERATIONS times) so that timer
# resolution and warm-up do not dominate the figure.
DEFAULT_SECONDS = 0.5
MIN_ITERATIONS = 20


def measure(fn: Callable[[], object], seconds: float) -> float:
    """Operations per second of ``fn`` over about ``seconds`` of wall time."""
    fn()  # warm-up
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= MIN_ITERATIONS:
            return n / elapsed
