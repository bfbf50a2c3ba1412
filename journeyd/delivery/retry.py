"""The retry policy as pure functions (what a failure means, how long to wait), and the errors.

Kept free of clocks, sockets and randomness of its own (the random source is a parameter) so that
every rule here can be checked exactly, and so that the pool's timing under `MockClock` is
deterministic in tests.
"""

from __future__ import annotations

import datetime
import email.utils
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

from journeyd.errors import JourneydError

_PERMANENT_5XX = frozenset(
    {501, 505}
)  # "not implemented" / "version unsupported": retry won't help


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class LastRequest:
    """What the dead-letter record says was tried last: enough to reproduce, never a secret."""

    method: str
    url: str
    status: int | None = None


class DeliveryError(JourneydError):
    """One attempt at a delivery failed; the subclass says whether another attempt may succeed."""

    def __init__(
        self,
        message: str,
        *,
        request: LastRequest | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.request = request
        self.retry_after_s = retry_after_s


class Retryable(DeliveryError):
    """The destination may accept the same delivery later (transport error, 408, 429, most 5xx)."""


class Permanent(DeliveryError):
    """Sending the same delivery again cannot succeed (a 4xx, a removed destination, a bug)."""


class DestinationConfigError(JourneydError):
    """A destination cannot be built (unsupported type, missing secret); raised before any send."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Backoff shape. With the defaults and 8 attempts a dead endpoint costs about two minutes."""

    base_s: float = 1.0
    cap_s: float = 60.0
    retry_after_cap_s: float = 300.0


def classify_status(status: int) -> Verdict:
    """Only 2xx counts as delivered; 3xx is a failure (Standard Webhooks: never follow)."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in (408, 429):
        return Verdict.RETRY
    if 500 <= status < 600 and status not in _PERMANENT_5XX:
        return Verdict.RETRY
    return Verdict.PERMANENT


def backoff_s(attempt: int, policy: RetryPolicy, rand: Callable[[], float]) -> float:
    """Delay after failed attempt number `attempt` (1-based): capped exponential, equal jitter.

    The result lies in [d/2, d] with d = min(cap, base * 2**(attempt-1)): half of it is fixed
    so a retry storm still backs off, half is random so many senders do not retry in lockstep.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    exponent = min(attempt - 1, 62)  # 2**62 * base is past any cap; avoids float overflow
    ceiling = min(policy.cap_s, policy.base_s * 2.0**exponent)
    return ceiling / 2 + ceiling / 2 * rand()


def parse_retry_after(value: str | None, *, now_wall: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay-seconds or HTTP-date); None if unusable.

    A date in the past means "now" (0); anything unparseable is ignored rather than trusted.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime form and "-0000": HTTP dates are always GMT (RFC 9110)
        when = when.replace(tzinfo=datetime.UTC)
    seconds = when.timestamp() - now_wall
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def retry_delay_s(
    attempt: int,
    retry_after_s: float | None,
    policy: RetryPolicy,
    rand: Callable[[], float],
) -> float:
    """A server's `Retry-After` wins, capped so a hostile value cannot park a worker."""
    if retry_after_s is not None:
        return min(max(0.0, retry_after_s), policy.retry_after_cap_s)
    return backoff_s(attempt, policy, rand)
