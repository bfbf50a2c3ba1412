"""A circuit breaker per destination, sans-I/O: it decides, the lane sleeps and sends.

    closed ──N failed requests in a row──> open ──cooldown over──> half-open (one probe)
       ^         (or a Retry-After longer                              │ probe fails:
       └──────── than the backoff)          <── probe succeeds ────────┘ open again, longer

While open nothing is sent: deliveries wait in their lane and the waiting is not an attempt.
A request counts as failed when every delivery in it is to be retried (transport error,
timeout, 408, 429, 5xx); an answer that rejects or accepts anything shows the service is up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    failures: int = 5  # consecutive failed requests that open the breaker
    base_cooldown_s: float = 1.0  # first cooldown; doubled on each failed probe
    max_cooldown_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Transition:
    """What changed, for the lane's log line."""

    state: State
    cooldown_s: float
    reason: str


class Breaker:
    __slots__ = ("_cooldown_s", "_failures", "_open_until", "_probe_out", "policy", "state")

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        if self.policy.failures < 1:
            raise ValueError(f"breaker failures must be at least 1, got {self.policy.failures}")
        self.state = State.CLOSED
        self._failures = 0
        self._cooldown_s = 0.0  # the last cooldown; 0 while closed
        self._open_until = 0.0
        self._probe_out = False

    def ready_at(self, now: float) -> float | None:
        """When a request may go next: `now` if it may go at once, None while a probe is out."""
        if self.state is State.CLOSED:
            return now
        if self.state is State.OPEN:
            return max(now, self._open_until)
        return None if self._probe_out else now

    def admit(self, now: float) -> tuple[bool, Transition | None]:
        """May a request go now? Ending a cooldown makes this request the half-open probe.

        Returns (admitted, transition); the caller remembers whether its request was the
        probe through `probing` right after an admitted call.
        """
        if self.state is State.CLOSED:
            return True, None
        if self.state is State.OPEN:
            if now < self._open_until:
                return False, None
            self.state = State.HALF_OPEN
            self._probe_out = True
            return True, Transition(State.HALF_OPEN, self._cooldown_s, "cooldown over")
        if self._probe_out:
            return False, None
        self._probe_out = True
        return True, None

    @property
    def probing(self) -> bool:
        return self.state is State.HALF_OPEN and self._probe_out

    def abandon_probe(self) -> None:
        """The probe batch sent nothing (every item rejected before a request): stay
        half-open and let the next batch probe."""
        self._probe_out = False

    def succeeded(self) -> Transition | None:
        """The service answered: close (from any state) and forget the failure streak."""
        self._failures = 0
        self._probe_out = False
        if self.state is State.CLOSED:
            return None
        self.state = State.CLOSED
        self._cooldown_s = 0.0
        return Transition(State.CLOSED, 0.0, "probe succeeded")

    def failed(self, now: float, *, probe: bool) -> Transition | None:
        """A request failed. Only the probe's failure counts while half-open; failures of
        requests sent before the breaker opened do not extend an open cooldown."""
        if self.state is State.HALF_OPEN:
            if not probe:
                return None
            self._probe_out = False
            return self._open(now, self._next_cooldown(), "probe failed")
        if self.state is State.OPEN:
            return None
        self._failures += 1
        if self._failures >= self.policy.failures:
            return self._open(now, self._next_cooldown(), f"{self._failures} failed requests")
        return None

    def hold(self, now: float, seconds: float, reason: str) -> Transition | None:
        """The service asked for a pause (Retry-After longer than our backoff): open at least
        that long, without touching the exponential cooldown."""
        until = now + seconds
        if self.state is State.OPEN and until <= self._open_until:
            return None
        self._probe_out = False
        self.state = State.OPEN
        self._open_until = max(self._open_until, until)
        return Transition(State.OPEN, self._open_until - now, reason)

    def _next_cooldown(self) -> float:
        if self._cooldown_s <= 0:
            return min(self.policy.base_cooldown_s, self.policy.max_cooldown_s)
        return min(self._cooldown_s * 2, self.policy.max_cooldown_s)

    def _open(self, now: float, cooldown_s: float, reason: str) -> Transition:
        self.state = State.OPEN
        self._cooldown_s = cooldown_s
        self._open_until = now + cooldown_s
        self._failures = 0
        return Transition(State.OPEN, cooldown_s, reason)
