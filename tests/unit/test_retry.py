"""The retry policy: status classification, backoff bounds, Retry-After parsing."""

from __future__ import annotations

import email.utils

import pytest

from journeyd.delivery.retry import (
    RetryPolicy,
    Verdict,
    backoff_s,
    classify_status,
    parse_retry_after,
    retry_delay_s,
)

NOW = 1_772_356_500.0
POLICY = RetryPolicy(base_s=1.0, cap_s=60.0, retry_after_cap_s=300.0)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    """Any 2xx settles the delivery, not only 200."""
    assert classify_status(status) is Verdict.DELIVERED


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 507, 599])
def test_transient_statuses_are_retried(status: int) -> None:
    """408, 429 and 5xx other than 501/505 are worth another attempt."""
    assert classify_status(status) is Verdict.RETRY


@pytest.mark.parametrize("status", [301, 302, 304, 400, 401, 403, 404, 410, 413, 422, 501, 505])
def test_other_statuses_are_permanent(status: int) -> None:
    """3xx (never followed), other 4xx, 501 and 505 go straight to the dead letters."""
    assert classify_status(status) is Verdict.PERMANENT


def test_backoff_doubles_until_the_cap() -> None:
    """With rand()=1 the delay is the exponential ceiling: 1, 2, 4, ... then the cap."""
    delays = [backoff_s(n, POLICY, lambda: 1.0) for n in range(1, 10)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_backoff_jitter_stays_between_half_and_full_ceiling() -> None:
    """Jitter spreads retries but never waits less than half or more than the ceiling."""
    for attempt in range(1, 12):
        ceiling = min(60.0, 2.0 ** (attempt - 1))
        low = backoff_s(attempt, POLICY, lambda: 0.0)
        high = backoff_s(attempt, POLICY, lambda: 0.999999)
        middle = backoff_s(attempt, POLICY, lambda: 0.5)
        assert low == ceiling / 2
        assert ceiling / 2 <= middle <= high <= ceiling
        assert middle == pytest.approx(ceiling * 0.75)


def test_backoff_survives_huge_attempt_numbers() -> None:
    """A large attempt count must not overflow the float exponent."""
    assert backoff_s(10_000, POLICY, lambda: 1.0) == 60.0


def test_backoff_rejects_attempt_zero() -> None:
    """Attempts are 1-based; 0 is a caller bug, not a zero delay."""
    with pytest.raises(ValueError, match="attempt"):
        backoff_s(0, POLICY, lambda: 0.5)


@pytest.mark.parametrize(("header", "seconds"), [("0", 0.0), ("7", 7.0), (" 120 ", 120.0)])
def test_retry_after_seconds(header: str, seconds: float) -> None:
    """The delay-seconds form is taken as given."""
    assert parse_retry_after(header, now_wall=NOW) == seconds


def test_retry_after_http_date() -> None:
    """The HTTP-date form is measured against our wall clock."""
    header = email.utils.formatdate(NOW + 42, usegmt=True)
    assert parse_retry_after(header, now_wall=NOW) == pytest.approx(42.0)


def test_retry_after_obsolete_asctime_date_is_gmt() -> None:
    """asctime dates carry no zone; HTTP says they are GMT."""
    assert parse_retry_after("Sun Nov  6 08:49:37 1994", now_wall=784111777.0 - 10) == 10.0


def test_retry_after_date_in_the_past_means_now() -> None:
    """A date already gone is no reason to wait, and never a negative sleep."""
    header = email.utils.formatdate(NOW - 3600, usegmt=True)
    assert parse_retry_after(header, now_wall=NOW) == 0.0


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "1.5", "12abc", "٣", "Mon, 99 Foo"])
def test_retry_after_garbage_is_ignored(header: str | None) -> None:
    """An unusable header falls back to our own backoff instead of being trusted."""
    assert parse_retry_after(header, now_wall=NOW) is None


def test_retry_after_overrides_backoff_but_is_capped() -> None:
    """The server's wish wins, up to the cap that keeps a worker from parking for hours."""
    assert retry_delay_s(1, 7.0, POLICY, lambda: 1.0) == 7.0
    assert retry_delay_s(5, 0.0, POLICY, lambda: 1.0) == 0.0
    assert retry_delay_s(1, 86_400.0, POLICY, lambda: 1.0) == 300.0
    assert retry_delay_s(3, None, POLICY, lambda: 1.0) == 4.0
