"""The one token bucket: burst, refill at rate, cap, no refill for time running backwards."""

from __future__ import annotations

import pytest

from ciris_av_plugin.ratelimit import TokenBucket


def test_allows_a_burst_then_refills_at_rate_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert not bucket.take(0.05)  # half a token
    assert bucket.take(0.1)
    assert [bucket.take(10.0) for _ in range(6)].count(True) == 5  # capped at burst


def test_costs_retry_after_and_full() -> None:
    bucket = TokenBucket(rate=100, burst=1000, now=5.0)
    assert bucket.full
    assert bucket.take(5.0, cost=600) and not bucket.take(5.0, cost=600)  # nothing spent on refusal
    assert bucket.tokens == 400 and not bucket.full
    assert bucket.retry_after(600) == pytest.approx(2.0)
    assert bucket.take(7.0, cost=600)
    bucket.refill(100.0)
    assert bucket.full and bucket.retry_after(1) == 0.0


def test_time_running_backwards_earns_nothing_and_is_not_refilled_twice() -> None:
    bucket = TokenBucket(rate=1, burst=10, now=0.0)
    for _ in range(10):
        assert bucket.take(0.0)
    assert bucket.refill(5.0) == 5.0
    assert bucket.refill(3.0) == 5.0  # an older now adds nothing
    assert bucket.refill(5.0) == 5.0  # and the 3..5 s interval is not counted again


@pytest.mark.parametrize("rate, burst", [(0, 1), (1, 0), (-1, 5)])
def test_a_bucket_needs_a_positive_rate_and_burst(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0.0)
