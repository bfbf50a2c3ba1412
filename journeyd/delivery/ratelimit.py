"""A token bucket for requests per second, sans-I/O: the caller passes `now` and sleeps itself.

Tokens refill continuously at `rate_per_s` up to `burst`; a request takes one. The bucket
starts with a single token, not a full burst, so the first second after a (re)start sends no
more than a steady second would: a rate limit stated by a service per second must hold in
every window, including the first one.
"""

from __future__ import annotations

_EPSILON = 1e-9


class TokenBucket:
    __slots__ = ("_last", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, *, burst: float = 1.0, now: float = 0.0) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate must be positive, got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = 1.0
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
            self._last = now

    def take(self, now: float) -> float:
        """Take a token and return 0.0, or take nothing and return the seconds until one is due."""
        self._refill(now)
        if self._tokens >= 1.0 - _EPSILON:  # a sleep of exactly the wait may land a hair short
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_s
