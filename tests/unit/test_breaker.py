"""The circuit breaker: alone (sans-I/O), and in a lane against a failing service."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from test_lane import (
    Factory,
    FakeAdapter,
    FakeService,
    adapter_pool,
    config,
    delivery,
    limits,
    make_pool,
    mid,
    run_until_closed,
    wall,
)

from journeyd.delivery import RetryPolicy
from journeyd.delivery.breaker import Breaker, BreakerPolicy, State


def fail_times(breaker: Breaker, times: int, now: float = 0.0) -> None:
    for _ in range(times):
        breaker.admit(now)
        breaker.failed(now, probe=False)


def test_opens_after_n_consecutive_failures() -> None:
    """Four failures keep it closed; the fifth opens it for the base cooldown."""
    breaker = Breaker(BreakerPolicy(failures=5, base_cooldown_s=1.0))
    fail_times(breaker, 4)
    assert breaker.state is State.CLOSED
    transition = breaker.failed(10.0, probe=False)
    assert transition is not None
    assert (transition.state, transition.cooldown_s) == (State.OPEN, 1.0)
    assert breaker.ready_at(10.0) == 11.0


def test_a_success_resets_the_streak() -> None:
    """Failures must be consecutive: an answered request in between starts the count again."""
    breaker = Breaker(BreakerPolicy(failures=3))
    fail_times(breaker, 2)
    breaker.succeeded()
    fail_times(breaker, 2)
    assert breaker.state is State.CLOSED


def test_nothing_is_admitted_while_open() -> None:
    """While open, admit() refuses until the cooldown is over."""
    breaker = Breaker(BreakerPolicy(failures=1, base_cooldown_s=2.0))
    fail_times(breaker, 1, now=0.0)
    assert breaker.admit(0.5) == (False, None)
    assert breaker.admit(1.999) == (False, None)


def test_half_open_admits_exactly_one_probe() -> None:
    """After the cooldown one request is the probe; a second waits for its answer."""
    breaker = Breaker(BreakerPolicy(failures=1, base_cooldown_s=1.0))
    fail_times(breaker, 1)
    admitted, transition = breaker.admit(1.0)
    assert admitted
    assert transition is not None
    assert transition.state is State.HALF_OPEN
    assert breaker.probing
    assert breaker.admit(1.0) == (False, None)
    assert breaker.ready_at(1.0) is None


def test_probe_success_closes() -> None:
    """A successful probe closes the breaker and the next failure streak starts from zero."""
    breaker = Breaker(BreakerPolicy(failures=2, base_cooldown_s=1.0))
    fail_times(breaker, 2)
    breaker.admit(1.0)
    transition = breaker.succeeded()
    assert transition is not None
    assert transition.state is State.CLOSED
    assert breaker.admit(1.0) == (True, None)
    fail_times(breaker, 1, now=1.0)
    assert breaker.state is State.CLOSED


def test_failed_probes_double_the_cooldown_up_to_the_cap() -> None:
    """Each failed probe re-opens with twice the cooldown: 1, 2, 4, 8, then the 10 s cap."""
    breaker = Breaker(BreakerPolicy(failures=1, base_cooldown_s=1.0, max_cooldown_s=10.0))
    fail_times(breaker, 1)
    cooldowns = [1.0]
    now = 0.0
    for _ in range(5):
        now = breaker.ready_at(now) or now
        assert breaker.admit(now)[0]
        transition = breaker.failed(now, probe=True)
        assert transition is not None
        cooldowns.append(transition.cooldown_s)
    assert cooldowns == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_late_failures_of_old_requests_do_not_extend_the_cooldown() -> None:
    """Requests sent before the breaker opened and failing afterwards change nothing."""
    breaker = Breaker(BreakerPolicy(failures=1, base_cooldown_s=1.0))
    fail_times(breaker, 1, now=0.0)
    assert breaker.failed(0.5, probe=False) is None
    assert breaker.ready_at(0.5) == 1.0
    breaker.admit(1.0)
    assert breaker.failed(1.2, probe=False) is None  # not the probe
    assert breaker.state is State.HALF_OPEN


def test_hold_opens_for_the_asked_pause_only() -> None:
    """Retry-After longer than the backoff opens for exactly that long, cooldown untouched."""
    breaker = Breaker()
    transition = breaker.hold(5.0, 30.0, "retry-after")
    assert transition is not None
    assert (transition.state, transition.cooldown_s) == (State.OPEN, 30.0)
    assert breaker.ready_at(6.0) == 35.0
    assert breaker.hold(6.0, 1.0, "retry-after") is None  # a shorter pause changes nothing
    breaker.admit(35.0)
    breaker.succeeded()
    assert breaker.state is State.CLOSED


def test_policy_must_allow_at_least_one_failure() -> None:
    """failures = 0 would never let a request through."""
    with pytest.raises(ValueError):
        Breaker(BreakerPolicy(failures=0))


async def test_lane_stops_sending_while_open_and_probes_after_the_cooldown(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Five failed requests open the breaker: the sixth waits out the cooldown although a
    delivery is ready, goes alone as the probe, and its success lets the rest through."""
    service = FakeService()
    service.answer(*[httpx.Response(503)] * 5)
    pool = adapter_pool(tmp_path, service, limits(max_items=1, concurrency=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for n in range(5):
            await pool.submit(delivery(n))
        await trio.sleep(0.01)  # all five fail at once; retries are due 0.75 s later
        assert pool.lane_stats()["crm"]["breaker"] == "open"
        await pool.submit(delivery(9))
        pool.close()
    times = [a.at for a in service.arrivals]
    assert times[:5] == [0.0] * 5
    # Cooldown 1 s: nothing between 0 and 1 although retries were due at 0.75.
    assert times[5] == pytest.approx(1.0)
    assert all(t >= 1.0 for t in times[5:])
    assert sorted(service.delivered_ids[5:]) == sorted([mid(n) for n in range(5)] + [mid(9)])
    assert pool.stats["delivered"] == 6


async def test_lane_reopens_longer_when_the_probe_fails(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """With backoff made negligible, the gaps are the breaker's: 5 quick failures, then
    failed probes after 1 s and 2 s, and the probe after 4 s succeeds."""
    service = FakeService()
    service.answer(*[httpx.Response(503)] * 7)
    factory = Factory(crm=lambda name: FakeAdapter(name, limits(concurrency=1), wall))
    pool = make_pool(
        tmp_path,
        {"crm": config()},
        factory,
        service=service,
        max_attempts=20,
        retry=RetryPolicy(base_s=0.01, cap_s=0.01),
    )
    await run_until_closed(pool, [delivery(1)])
    times = [a.at for a in service.arrivals]
    assert len(times) == 8
    assert times[4] < 0.05
    assert [b - a for a, b in itertools.pairwise(times[4:])] == pytest.approx([1.0, 2.0, 4.0])
    assert pool.stats["delivered"] == 1
