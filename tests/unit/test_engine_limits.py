"""Per-user limits (events per second, concurrent instances) and the instance lifetime."""

from __future__ import annotations

from engine_helpers import (
    CART,
    DAY,
    HOUR,
    T0,
    Run,
    kinds,
    make_engine,
    of,
    only,
    sends,
    track,
)

from journeyd.engine import Completed, Dropped, Entered, Expired

# --- events per second per user ----------------------------------------------------------


def test_rate_limit_drops_the_excess_within_one_second() -> None:
    """events_per_second_per_user: the excess is dropped (reason rate_limit) and counted."""
    run = Run(make_engine(CART, limits={"events_per_second_per_user": 3}))
    outs = [
        run.track("u1", "Cart Modified", {"cart_id": f"c{n}"}, at=T0 + n / 10) for n in range(5)
    ]
    assert [kinds(out)[0] for out in outs] == ["enter", "enter", "enter", "drop", "drop"]
    drops = of(outs[3] + outs[4], Dropped)
    assert [d.reason for d in drops] == ["rate_limit", "rate_limit"]
    assert {d.user for d in drops} == {"u1"}
    assert drops[0].event == "Cart Modified"
    assert run.engine.counters["drop.rate_limit"] == 2
    assert len(run.engine.users["u1"].instances) == 3


def test_rate_limited_event_is_not_processed() -> None:
    """A dropped event does nothing else: it neither takes a hold branch nor exits."""
    run = Run(make_engine(CART, limits={"events_per_second_per_user": 1}))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    out = run.track("u1", "Order Completed", {"cart_id": "c1"}, at=T0 + 0.5)
    assert kinds(out) == ["drop"]
    assert [i.identifier for i in run.engine.users["u1"].instances] == ["c1"]


def test_rate_limit_is_per_user() -> None:
    """One user's burst does not eat another user's budget."""
    run = Run(make_engine(CART, limits={"events_per_second_per_user": 1}))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    out = run.track("u2", "Cart Modified", {"cart_id": "c1"}, at=T0 + 0.1)
    assert kinds(out) == ["enter", "step"]


def test_rate_limit_resets_each_second() -> None:
    """A new second gives the user a fresh budget."""
    run = Run(make_engine(CART, limits={"events_per_second_per_user": 1}))
    run.track("u1", "Cart Modified", {"cart_id": "c1"}, at=T0 + 0.2)
    assert kinds(run.track("u1", "Cart Modified", {"cart_id": "c2"}, at=T0 + 0.9)) == ["drop"]
    assert kinds(run.track("u1", "Cart Modified", {"cart_id": "c3"}, at=T0 + 1.0)) == [
        "enter",
        "step",
    ]


def test_rate_limit_counts_identify_and_default_is_25() -> None:
    """The default budget is 25 events a second, identify calls included."""
    run = Run(make_engine(CART))
    for n in range(20):
        assert run.identify("u1", {"n": n}, at=T0 + n / 100) == []
    for n in range(5):
        out = run.track("u1", "Cart Modified", {"cart_id": f"c{n}"}, at=T0 + 0.5)
        assert kinds(out) == ["enter", "step"]
    out = run.track("u1", "Cart Modified", {"cart_id": "c99"}, at=T0 + 0.6)
    assert only(of(out, Dropped)).reason == "rate_limit"


def test_timer_firings_do_not_count_toward_the_rate_limit() -> None:
    """Timers firing for a user in a second leave that user's event budget untouched."""
    source = CART.replace('max_duration = "2h"', 'max_duration = "10s"')
    run = Run(make_engine(source, limits={"events_per_second_per_user": 2}))
    run.track("u1", "Cart Modified", {"cart_id": "c1"}, at=T0)
    run.track("u1", "Cart Modified", {"cart_id": "c2"}, at=T0 + 0.5)
    # Second T0+10: both timers fire (one through fire_due, one inside handle), then
    # two events of the user still fit the budget of 2.
    fired = run.until(T0 + 10.0)
    assert len(sends(fired)) == 1
    out = run.track("u1", "Cart Modified", {"cart_id": "c3"}, at=T0 + 10.6)
    assert len(sends(out)) == 1  # c2's timer, fired before the event
    assert kinds(out)[-2:] == ["enter", "step"]
    out = run.track("u1", "Cart Modified", {"cart_id": "c4"}, at=T0 + 10.7)
    assert kinds(out) == ["enter", "step"]
    assert run.engine.counters["drop.rate_limit"] == 0


# --- instances per user ------------------------------------------------------------------


def test_instance_limit_drops_new_entries() -> None:
    """instances_per_user caps a user's live instances; an entry past it is dropped."""
    run = Run(make_engine(CART, limits={"instances_per_user": 2}))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    run.track("u1", "Cart Modified", {"cart_id": "c2"})
    out = run.track("u1", "Cart Modified", {"cart_id": "c3"})
    dropped = only(of(out, Dropped))
    assert (dropped.reason, dropped.journey, dropped.user) == ("instance_limit", "cart", "u1")
    assert of(out, Entered) == []
    assert run.engine.counters["drop.instance_limit"] == 1
    # Another user is not affected, and a finished instance frees a place.
    assert kinds(run.track("u2", "Cart Modified", {"cart_id": "c1"})) == ["enter", "step"]
    run.track("u1", "Order Completed", {"cart_id": "c1"}, at=T0 + 1)
    assert kinds(run.track("u1", "Cart Modified", {"cart_id": "c3"}, at=T0 + 2)) == [
        "enter",
        "step",
    ]


def test_instance_limit_counts_every_journey_of_the_user() -> None:
    """The per-user cap counts the user's instances across all journeys."""
    other = CART.replace('id = "cart"', 'id = "cart-2"', 1)
    run = Run(make_engine(CART, other, limits={"instances_per_user": 3}))
    out = run.track("u1", "Cart Modified", {"cart_id": "c1"})
    assert len(of(out, Entered)) == 2
    out = run.track("u1", "Cart Modified", {"cart_id": "c2"})
    assert [e.journey for e in of(out, Entered)] == ["cart"]
    assert [(d.reason, d.journey) for d in of(out, Dropped)] == [("instance_limit", "cart-2")]


def test_instance_limit_default_is_25() -> None:
    """By default a user runs at most 25 instances at once."""
    run = Run(make_engine(CART))
    for n in range(25):
        assert kinds(run.track("u1", "Cart Modified", {"cart_id": f"c{n}"}, at=T0 + n)) == [
            "enter",
            "step",
        ]
    out = run.track("u1", "Cart Modified", {"cart_id": "c25"}, at=T0 + 25)
    assert only(of(out, Dropped)).reason == "instance_limit"


# --- instance lifetime -------------------------------------------------------------------

LONG = """
id = "long"
[entry]
event = "Signed Up"
rule = "once"

[[steps]]
id = "settle"
type = "delay"
duration = "1d"
next = "wait"

[[steps]]
id = "wait"
type = "hold_until"
max_duration = "36h"
on_timeout = "nudge"
branches = [{ name = "bought", event = "Order Completed" }]

[[steps]]
id = "nudge"
type = "send"
destination = "outbox"
event_name = "Nudge"
"""


def at_lifetime(moment: float | None, end: float) -> bool:
    """Expiry happens at the end of the lifetime (the engine may add a millisecond of grace)."""
    return moment is not None and end <= moment <= end + 1


def test_instance_outliving_its_lifetime_expires() -> None:
    """An instance whose steps would outlive limits.instance_lifetime expires at the lifetime."""
    run = Run(make_engine(LONG, limits={"instance_lifetime": "2d"}))
    run.track("u1", "Signed Up", {})
    run.until(T0 + DAY)
    assert at_lifetime(run.engine.next_deadline(), T0 + 2 * DAY)
    out = run.until(T0 + 5 * DAY)
    expired = only(of(out, Expired))
    assert (expired.step, expired.user) == ("wait", "u1")
    assert at_lifetime(expired.at, T0 + 2 * DAY)
    assert expired.reason == "lifetime"
    assert kinds(out) == ["expire"]
    assert sends(run.effects) == []
    assert run.engine.counters["expired"] == 1
    assert run.engine.next_deadline() is None
    assert run.engine.users["u1"].instances == ()
    # Expired means gone: a late branch event does nothing.
    assert run.track("u1", "Order Completed", {}, at=T0 + 5 * DAY) == []


def test_instance_within_its_lifetime_does_not_expire() -> None:
    """Steps that end before the lifetime run normally."""
    run = Run(make_engine(LONG, limits={"instance_lifetime": "3d"}))
    run.track("u1", "Signed Up", {})
    out = run.until(T0 + 5 * DAY)
    assert of(out, Expired) == []
    assert only(sends(out)).at == T0 + DAY + 36 * HOUR
    assert only(of(out, Completed)).step == "nudge"


def test_lifetime_counts_from_entry_across_resets() -> None:
    """Reset loops cannot keep an instance alive past its lifetime."""
    source = CART.replace('max_duration = "2h"', 'max_duration = "1d"')
    run = Run(make_engine(source, limits={"instance_lifetime": "2d"}))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    for hour in range(1, 48, 12):
        run.track("u1", "Cart Modified", {"cart_id": "c1"}, at=T0 + hour * HOUR)
    # Last reset at T0+37h would time out at T0+61h, past the 48h lifetime.
    out = run.until(T0 + 3 * DAY)
    expired = only(of(out, Expired))
    assert at_lifetime(expired.at, T0 + 2 * DAY)
    assert sends(out) == []


VERY_LONG = """
id = "very-long"
[entry]
event = "Signed Up"
rule = "once"

[[steps]]
id = "first"
type = "hold_until"
max_duration = "182d"
on_timeout = "second"
branches = [{ name = "paid", event = "Order Completed" }]

[[steps]]
id = "second"
type = "hold_until"
max_duration = "200d"
on_timeout = "nudge"
branches = [{ name = "paid again", event = "Order Completed" }]

[[steps]]
id = "nudge"
type = "send"
destination = "outbox"
event_name = "Nudge"
"""


def test_lifetime_default_is_365_days() -> None:
    """By default an instance expires 365 days after entry."""
    run = Run(make_engine(VERY_LONG))
    run.track("u1", "Signed Up", {})
    run.until(T0 + 182 * DAY)
    assert at_lifetime(run.engine.next_deadline(), T0 + 365 * DAY)
    out = run.until(T0 + 400 * DAY)
    assert kinds(out) == ["expire"]
    assert only(of(out, Expired)).step == "second"


def test_drop_without_user_is_reported() -> None:
    """A track event with neither userId nor anonymousId is dropped (no_user), not ignored."""
    run = Run(make_engine(CART))
    out = run.handle(track(None, "Cart Modified", {"cart_id": "c1"}))
    assert [(d.reason, d.user) for d in of(out, Dropped)] == [("no_user", "")]
    assert run.engine.counters["drop.no_user"] == 1


EXACT = """
id = "exact"
[entry]
event = "Signed Up"
rule = "once"

[[steps]]
id = "settle"
type = "delay"
duration = "2d"
next = "hello"

[[steps]]
id = "hello"
type = "send"
destination = "outbox"
event_name = "Hello"
"""


def test_step_ending_exactly_at_the_lifetime_completes() -> None:
    """A delay as long as the lifetime, which validation accepts, still runs its next step."""
    run = Run(make_engine(EXACT, limits={"instance_lifetime": "2d"}))
    run.track("u1", "Signed Up", {})
    out = run.drain()
    assert kinds(out) == ["step", "send", "complete"]


def test_drop_without_event_name_is_reported() -> None:
    """A track event without an event name is dropped (no_event_name) and counted."""
    run = Run(make_engine(CART))
    out = run.handle(track("u1", None, {"cart_id": "c1"}))
    assert [(d.reason, d.user) for d in of(out, Dropped)] == [("no_event_name", "u1")]
    assert run.engine.counters["drop.no_event_name"] == 1
