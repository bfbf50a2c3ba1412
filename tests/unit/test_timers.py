"""Timers: the TimerQueue itself, and engine timers driven by trio's MockClock."""

from __future__ import annotations

import time

import trio
import trio.testing
from engine_helpers import CART, DAY, HOUR, T0, Run, kinds, make_engine, of, only, sends, track

from journeyd.engine import Completed, Delivery, Engine
from journeyd.engine.timers import TimerQueue
from journeyd.model import Event


class Owner:
    """The smallest TimerOwner: a name and the token slot the queue manages."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.timer = 0

    def __repr__(self) -> str:
        return f"Owner({self.name})"


def drain(queue: TimerQueue, now: float) -> list[tuple[float, str]]:
    fired = []
    while (due := queue.pop_due(now)) is not None:
        deadline, owner = due
        fired.append((deadline, owner.name))
    return fired


# --- TimerQueue ------------------------------------------------------------------------


def test_queue_orders_by_deadline_then_key() -> None:
    """Timers pop earliest deadline first; equal deadlines pop in key order."""
    queue = TimerQueue()
    for name, deadline in [("b", 5.0), ("c", 1.0), ("a", 5.0), ("d", 3.0), ("e", 5.0)]:
        queue.arm(Owner(name), deadline, name)
    assert queue.next_deadline() == 1.0
    assert drain(queue, 10.0) == [(1.0, "c"), (3.0, "d"), (5.0, "a"), (5.0, "b"), (5.0, "e")]
    assert len(queue) == 0
    assert queue.next_deadline() is None


def test_queue_pops_only_what_is_due() -> None:
    """pop_due returns timers due at or before `now` and leaves later ones armed."""
    queue = TimerQueue()
    early, late = Owner("early"), Owner("late")
    queue.arm(early, 10.0, "early")
    queue.arm(late, 20.0, "late")
    assert queue.pop_due(9.999) is None
    assert drain(queue, 10.0) == [(10.0, "early")]
    assert early.timer == 0  # disarmed once popped
    assert late.timer != 0
    assert len(queue) == 1
    assert queue.next_deadline() == 20.0


def test_queue_cancel() -> None:
    """A cancelled timer never fires and no longer counts; cancelling twice is harmless."""
    queue = TimerQueue()
    keep, drop = Owner("keep"), Owner("drop")
    queue.arm(drop, 1.0, "drop")
    queue.arm(keep, 2.0, "keep")
    queue.cancel(drop)
    queue.cancel(drop)
    assert len(queue) == 1
    assert queue.next_deadline() == 2.0
    assert drain(queue, 100.0) == [(2.0, "keep")]
    queue.cancel(keep)  # cancelling a timer that already fired changes nothing
    assert len(queue) == 0


def test_queue_rearm_replaces_the_earlier_timer() -> None:
    """Arming an owner again replaces its timer, later or earlier; only the new one fires."""
    queue = TimerQueue()
    owner = Owner("o")
    queue.arm(owner, 10.0, "o")
    queue.arm(owner, 30.0, "o")
    assert len(queue) == 1
    assert drain(queue, 20.0) == []
    assert queue.next_deadline() == 30.0
    queue.arm(owner, 5.0, "o")
    assert drain(queue, 100.0) == [(5.0, "o")]
    assert len(queue) == 0


def test_queue_rearm_after_firing() -> None:
    """An owner whose timer fired can be armed again."""
    queue = TimerQueue()
    owner = Owner("o")
    queue.arm(owner, 1.0, "o")
    assert drain(queue, 1.0) == [(1.0, "o")]
    queue.arm(owner, 2.0, "o")
    assert len(queue) == 1
    assert drain(queue, 2.0) == [(2.0, "o")]


def test_queue_compaction_keeps_live_timers() -> None:
    """A flood of re-arms compacts stale entries away; every live timer still fires once."""
    queue = TimerQueue()
    owners = [Owner(f"o{n:04d}") for n in range(500)]
    for rnd in range(10):
        for n, owner in enumerate(owners):
            queue.arm(owner, 1000.0 + rnd * 10 + n % 7, owner.name)
    cancelled = owners[::5]
    for owner in cancelled:
        queue.cancel(owner)
    assert len(queue) == 400
    assert len(queue.heap) < 3 * 500  # stale entries were compacted, not kept forever
    fired = drain(queue, 10_000.0)
    live = [o for o in owners if o not in cancelled]
    assert sorted(name for _, name in fired) == sorted(o.name for o in live)
    assert all(deadline == 1090.0 + int(name[1:]) % 7 for deadline, name in fired)
    assert fired == sorted(fired)
    assert len(queue) == 0


def test_queue_len_counts_live_timers_only() -> None:
    """len() is the number of armed timers, however many stale heap entries remain."""
    queue = TimerQueue()
    a, b, c = Owner("a"), Owner("b"), Owner("c")
    assert len(queue) == 0
    queue.arm(a, 1.0, "a")
    queue.arm(b, 2.0, "b")
    queue.arm(c, 3.0, "c")
    queue.arm(a, 4.0, "a")
    assert len(queue) == 3
    queue.cancel(b)
    assert len(queue) == 2
    queue.pop_due(3.5)
    assert len(queue) == 1
    assert queue.next_deadline() == 4.0


# --- engine timers ---------------------------------------------------------------------

HALF_YEAR = """
id = "half-year"
[entry]
event = "Subscribed"
rule = "once"

[[steps]]
id = "wait"
type = "hold_until"
max_duration = "182d"
on_timeout = "renew"
branches = [{ name = "cancelled", event = "Subscription Cancelled" }]

[[steps]]
id = "renew"
type = "send"
destination = "outbox"
event_name = "Renewal Reminder"
"""


async def run_timers(engine: Engine, epoch_at_zero: float) -> list:
    """The daemon's timer loop in miniature: sleep to the next deadline, then fire it.

    The mock clock reads `clock = epoch - epoch_at_zero`.
    """
    fired = []
    for _ in range(1000):
        deadline = engine.next_deadline()
        if deadline is None:
            return fired
        await trio.sleep_until(deadline - epoch_at_zero)
        fired.extend(engine.fire_due(trio.current_time() + epoch_at_zero))
    raise AssertionError("timer loop did not settle")


async def test_182_day_hold_under_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    """A 182-day hold times out at exactly 182 days of virtual time, in well under a second."""
    started = time.perf_counter()
    epoch_at_zero = T0 - trio.current_time()
    engine = make_engine(HALF_YEAR)
    engine.handle(_track("u1", "Subscribed"), T0)
    engine.handle(_track("u2", "Subscribed"), T0 + HOUR)
    engine.handle(_track("u2", "Subscription Cancelled"), T0 + 2 * HOUR)
    fired = await run_timers(engine, epoch_at_zero)
    elapsed = time.perf_counter() - started
    delivery = only(of(fired, Delivery))
    assert delivery.user == "u1"
    assert delivery.at == T0 + 182 * DAY
    assert trio.current_time() + epoch_at_zero == T0 + 182 * DAY
    assert kinds(fired) == ["step", "send", "complete"]
    assert engine.next_deadline() is None
    assert elapsed < 0.5, f"182 virtual days took {elapsed:.3f}s of real time"


def test_timer_loop_with_many_instances_under_mock_clock() -> None:
    """Staggered instances fire in deadline order, each at its own deadline, on a MockClock."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    fired: list = []

    async def main() -> None:
        epoch_at_zero = T0 - trio.current_time()
        engine = make_engine(CART)
        for n in range(20):
            engine.handle(_track(f"u{n}", "Cart Modified", {"cart_id": "c"}), T0 + n * 60)
        fired.extend(await run_timers(engine, epoch_at_zero))

    started = time.perf_counter()
    trio.run(main, clock=clock)
    assert time.perf_counter() - started < 1.0
    deliveries = of(fired, Delivery)
    assert [d.user for d in deliveries] == [f"u{n}" for n in range(20)]
    assert [d.at for d in deliveries] == [T0 + n * 60 + 2 * HOUR for n in range(20)]


def test_reset_leaves_no_stale_timer() -> None:
    """After many resets only one timer is armed, and old deadlines fire nothing."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    for n in range(1, 50):
        run.track("u1", "Cart Modified", {"cart_id": "c1"}, at=T0 + n * 60)
        assert len(run.engine.timers) == 1
    last = T0 + 49 * 60
    assert run.until(last + 2 * HOUR - 1) == []
    out = run.until(last + 2 * HOUR)
    assert len(sends(out)) == 1
    assert run.drain() == []


def test_exit_leaves_no_stale_timer() -> None:
    """An exit disarms the instance's timer: nothing is due and nothing fires later."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    run.track("u1", "Account Deleted", {}, at=T0 + 60)
    assert len(run.engine.timers) == 0
    assert run.engine.next_deadline() is None
    assert run.until(T0 + 10 * DAY) == []


def test_stale_timer_does_not_fire_into_a_reentered_instance() -> None:
    """A timer of an exited instance cannot fire into a new instance of the same cart."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    run.track("u1", "Cart Emptied", {"cart_id": "c1"}, at=T0 + HOUR)
    new = run.track("u1", "Cart Modified", {"cart_id": "c1"}, at=T0 + HOUR + 30)
    assert kinds(new) == ["enter", "step"]
    assert run.until(T0 + 2 * HOUR) == []  # the first instance's deadline
    out = run.until(T0 + 3 * HOUR + 30)
    assert only(sends(out)).instance == new[0].instance


def test_handle_fires_due_timers_first() -> None:
    """handle() fires every timer due by `now` before the event, at each timer's deadline."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    out = run.track("u1", "Order Completed", {"cart_id": "c1"}, at=T0 + 2 * HOUR + 5)
    assert kinds(out) == ["step", "send", "complete"]  # the purchase came too late
    assert only(sends(out)).at == T0 + 2 * HOUR
    assert of(out, Completed)[0].step == "nudge"


def _track(user: str, name: str, props: dict | None = None) -> Event:
    return track(user, name, props or {}, message_id=f"{user}-{name}")
