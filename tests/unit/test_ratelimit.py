"""The token bucket behind a destination's `rate`: exact waits, bounded bursts, no busy loop."""

from __future__ import annotations

import pytest

from journeyd.delivery.ratelimit import TokenBucket


def test_first_request_goes_at_once_then_one_per_interval() -> None:
    """rate = 4/s: one token at start, then a token every 0.25 s."""
    bucket = TokenBucket(4.0, now=100.0)
    assert bucket.take(100.0) == 0.0
    assert bucket.take(100.0) == pytest.approx(0.25)
    assert bucket.take(100.1) == pytest.approx(0.15)
    assert bucket.take(100.25) == 0.0


def test_idle_time_buys_at_most_burst_tokens() -> None:
    """After a long idle spell only `burst` requests may go back to back."""
    bucket = TokenBucket(10.0, burst=3.0, now=0.0)
    assert [bucket.take(60.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(60.0) == pytest.approx(0.1)


def test_sleeping_exactly_the_wait_is_enough() -> None:
    """A wait computed in floating point, slept exactly, always yields the token."""
    bucket = TokenBucket(3.0, now=0.0)
    now = 0.0
    for _ in range(1000):
        wait = bucket.take(now)
        if wait:
            now += wait
            assert bucket.take(now) == 0.0
    assert now == pytest.approx(999 / 3.0)


def test_many_requests_never_exceed_the_rate_in_any_second() -> None:
    """Driven as fast as allowed, no one-second window holds more than `rate` requests."""
    bucket = TokenBucket(7.0, now=0.0)
    now, sent = 0.0, []
    while len(sent) < 100:
        wait = bucket.take(now)
        if wait:
            now += wait
        else:
            sent.append(now)
    for start in sent:
        assert sum(start <= t < start + 1.0 - 1e-9 for t in sent) <= 7


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.5)])
def test_nonsense_settings_are_refused(rate: float, burst: float) -> None:
    """A zero or negative rate, or a burst below one request, is a programming error."""
    with pytest.raises(ValueError):
        TokenBucket(rate, burst=burst)
