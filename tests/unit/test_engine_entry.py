"""Entry rules: once vs re-enter, unique identifiers, parallel instances, audiences."""

from __future__ import annotations

import pytest
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
)

from journeyd.engine import Completed, Dropped, Entered, Exited

ONCE = """
id = "onboarding"
[entry]
event = "Signed Up"
rule = "once"

[[exit]]
event = "Account Deleted"

[[steps]]
id = "settle"
type = "delay"
duration = "1d"
next = "hello"

[[steps]]
id = "hello"
type = "send"
destination = "outbox"
event_name = "Hello"
"""


def test_once_enters_at_most_once_while_running() -> None:
    """rule = once: a second entry event while the instance runs starts nothing."""
    run = Run(make_engine(ONCE))
    assert kinds(run.track("u1", "Signed Up", {})) == ["enter", "step"]
    assert run.track("u1", "Signed Up", {}, at=T0 + HOUR) == []
    assert len(run.engine.users["u1"].instances) == 1


def test_once_never_reenters_after_completion() -> None:
    """rule = once: after the instance completes, the user never enters that journey again."""
    run = Run(make_engine(ONCE))
    run.track("u1", "Signed Up", {})
    assert only(of(run.until(T0 + DAY), Completed)).step == "hello"
    assert run.track("u1", "Signed Up", {}, at=T0 + 30 * DAY) == []
    assert run.track("u1", "Signed Up", {}, at=T0 + 400 * DAY) == []
    assert len(of(run.effects, Entered)) == 1


def test_once_never_reenters_after_exit() -> None:
    """rule = once holds after an exit too: at most once, ever."""
    run = Run(make_engine(ONCE))
    run.track("u1", "Signed Up", {})
    run.track("u1", "Account Deleted", {}, at=T0 + 1)
    assert run.track("u1", "Signed Up", {}, at=T0 + 2) == []


def test_once_is_per_user() -> None:
    """One user's single entry does not use up another user's."""
    run = Run(make_engine(ONCE))
    run.track("u1", "Signed Up", {})
    assert kinds(run.track("u2", "Signed Up", {})) == ["enter", "step"]


def test_reenter_runs_one_instance_per_identifier() -> None:
    """re-enter: the same identifier while running starts nothing; another starts its own."""
    run = Run(make_engine(CART))
    first = only(of(run.track("u1", "Cart Modified", {"cart_id": "c1"}), Entered))
    out = run.track("u1", "Cart Modified", {"cart_id": "c1"}, at=T0 + 1)
    assert of(out, Entered) == []  # it is the reset branch of the running instance instead
    second = only(of(run.track("u1", "Cart Modified", {"cart_id": "c2"}, at=T0 + 2), Entered))
    assert (first.identifier, second.identifier) == ("c1", "c2")
    assert first.instance != second.instance
    assert sorted(i.identifier for i in run.engine.users["u1"].instances) == ["c1", "c2"]


REENTER_DELAY = """
id = "apply"
[entry]
event = "Application Started"
unique_identifier = "application_id"

[[steps]]
id = "settle"
type = "delay"
duration = "1h"
next = "remind"

[[steps]]
id = "remind"
type = "send"
destination = "outbox"
event_name = "Finish Your Application"
"""


def test_reenter_while_running_same_identifier_is_ignored() -> None:
    """re-enter: an entry event for a running (user, identifier) is not a second instance."""
    run = Run(make_engine(REENTER_DELAY))
    run.track("u1", "Application Started", {"application_id": "a1"})
    assert run.track("u1", "Application Started", {"application_id": "a1"}, at=T0 + 60) == []
    assert len(sends(run.until(T0 + 2 * HOUR))) == 1


def test_reenter_after_completion_starts_again() -> None:
    """re-enter: once the instance for an identifier completes, the same identifier re-enters."""
    run = Run(make_engine(REENTER_DELAY))
    first = only(of(run.track("u1", "Application Started", {"application_id": "a1"}), Entered))
    run.until(T0 + HOUR)
    out = run.track("u1", "Application Started", {"application_id": "a1"}, at=T0 + 2 * HOUR)
    second = only(of(out, Entered))
    assert second.identifier == "a1"
    assert second.instance != first.instance
    sent = sends(run.until(T0 + 3 * HOUR))
    assert only(sent).instance == second.instance


def test_reenter_after_exit_starts_again() -> None:
    """re-enter: after an exit, the same cart can start a fresh instance."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    run.track("u1", "Cart Emptied", {"cart_id": "c1"}, at=T0 + 1)
    assert kinds(run.track("u1", "Cart Modified", {"cart_id": "c1"}, at=T0 + 2)) == [
        "enter",
        "step",
    ]


@pytest.mark.parametrize("props", [{}, {"cart_id": None}, {"cart_id": ""}, {"cart_id": True}])
def test_missing_identifier_is_dropped(props: dict) -> None:
    """re-enter without a usable identifier value: Dropped(missing_identifier), no instance."""
    run = Run(make_engine(CART))
    out = run.track("u1", "Cart Modified", props)
    dropped = only(of(out, Dropped))
    assert (dropped.reason, dropped.journey, dropped.user) == ("missing_identifier", "cart", "u1")
    assert dropped.event == "Cart Modified"
    assert dropped.message_id is not None
    assert kinds(out) == ["drop"]
    assert run.engine.counters["drop.missing_identifier"] == 1
    assert run.engine.next_deadline() is None


def test_integer_identifier_is_accepted() -> None:
    """An integer identifier value identifies an instance like its decimal string."""
    run = Run(make_engine(CART))
    entered = only(of(run.track("u1", "Cart Modified", {"cart_id": 42}), Entered))
    assert entered.identifier == "42"
    out = run.track("u1", "Order Completed", {"cart_id": 42}, at=T0 + 1)
    assert only(of(out, Completed)).instance == entered.instance


def test_identifier_too_long_is_dropped() -> None:
    """An identifier longer than limits.identifier_chars is dropped; exactly the limit is fine."""
    run = Run(make_engine(CART, limits={"identifier_chars": 10}))
    out = run.track("u1", "Cart Modified", {"cart_id": "x" * 11})
    assert [(d.reason, d.journey) for d in of(out, Dropped)] == [("identifier_too_long", "cart")]
    assert of(out, Entered) == []
    assert run.engine.counters["drop.identifier_too_long"] == 1
    assert kinds(run.track("u1", "Cart Modified", {"cart_id": "x" * 10})) == ["enter", "step"]


def test_identifier_limit_default_is_500_chars() -> None:
    """By default identifiers up to 500 characters are accepted, 501 are dropped."""
    run = Run(make_engine(CART))
    assert kinds(run.track("u1", "Cart Modified", {"cart_id": "x" * 500})) == ["enter", "step"]
    out = run.track("u1", "Cart Modified", {"cart_id": "y" * 501})
    assert only(of(out, Dropped)).reason == "identifier_too_long"


def test_two_carts_run_in_parallel_and_match_by_identifier() -> None:
    """Two carts of one user run side by side; Order Completed for cart 2 completes only cart 2."""
    run = Run(make_engine(CART))
    run.identify("u1", {"email": "u1@example.com"})
    c1 = only(of(run.track("u1", "Cart Modified", {"cart_id": "c1", "total": 10}), Entered))
    c2 = only(
        of(run.track("u1", "Cart Modified", {"cart_id": "c2", "total": 20}, at=T0 + 60), Entered)
    )
    out = run.track("u1", "Order Completed", {"cart_id": "c2"}, at=T0 + 600)
    done = only(of(out, Completed))
    assert (done.instance, done.branch) == (c2.instance, "purchased")
    assert [i.id for i in run.engine.users["u1"].instances] == [c1.instance]
    out = run.until(T0 + DAY)
    delivery = only(sends(out))
    assert delivery.instance == c1.instance
    assert delivery.payload["properties"]["journey_context"] == {
        "Cart Modified": {"cart_id": "c1", "total": 10}
    }
    assert delivery.payload["properties"]["email"] == "u1@example.com"


def test_branch_event_without_identifier_matches_no_instance() -> None:
    """In a re-enter journey, a hold-branch event lacking the identifier moves no instance."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    assert run.track("u1", "Order Completed", {}, at=T0 + 1) == []
    assert run.track("u1", "Order Completed", {"cart_id": "c2"}, at=T0 + 2) == []
    assert len(run.engine.users["u1"].instances) == 1


def test_exit_then_same_event_enters_fresh() -> None:
    """An event that exits an instance can start a fresh one in the same journey."""
    source = CART.replace('event = "Account Deleted"', 'event = "Cart Modified"').replace(
        "send = true", 'send = true\nfilters = [{ property = "restart", op = "eq", value = true }]'
    )
    run = Run(make_engine(source))
    first = only(of(run.track("u1", "Cart Modified", {"cart_id": "c1"}), Entered))
    out = run.track("u1", "Cart Modified", {"cart_id": "c1", "restart": True}, at=T0 + 5)
    assert kinds(out) == ["exit", "send", "enter", "step"]
    assert only(of(out, Exited)).instance == first.instance
    assert only(of(out, Entered)).instance != first.instance


AUDIENCE_ENTRY = """
id = "vip-welcome"
[entry]
event = "Signed Up"
rule = "once"
audience = "vip"

[[steps]]
id = "hello"
type = "send"
destination = "outbox"
event_name = "Hello VIP"
"""


def test_entry_audience_filter_uses_current_traits() -> None:
    """entry.audience: only users already in the audience when the event arrives enter."""
    run = Run(make_engine(AUDIENCE_ENTRY))
    assert run.track("u1", "Signed Up", {}) == []
    run.identify("u1", {"tier": "silver"})
    assert run.track("u1", "Signed Up", {}) == []
    run.identify("u1", {"tier": "gold"}, at=T0 + 1)
    assert kinds(run.track("u1", "Signed Up", {})) == ["enter", "step", "send", "complete"]


NESTED_ID = """
id = "nested"
[entry]
event = "Order Placed"
unique_identifier = "order.id"
filters = [{ property = "total", op = "gt", value = 0 }]

[[steps]]
id = "wait"
type = "hold_until"
max_duration = "1d"
branches = [{ name = "shipped", event = "Order Shipped" }]
"""


def test_unique_identifier_may_be_a_dotted_path() -> None:
    """unique_identifier is a property path: `order.id` reads the nested value."""
    run = Run(make_engine(NESTED_ID))
    entered = only(
        of(run.track("u1", "Order Placed", {"order": {"id": "o1"}, "total": 5}), Entered)
    )
    assert entered.identifier == "o1"
    assert run.track("u1", "Order Shipped", {"order": {"id": "o2"}}, at=T0 + 1) == []
    out = run.track("u1", "Order Shipped", {"order": {"id": "o1"}}, at=T0 + 2)
    assert only(of(out, Completed)).instance == entered.instance


def test_entry_filters_are_checked_before_the_identifier() -> None:
    """An event that fails the entry filters is not a missing-identifier drop: it is no entry."""
    run = Run(make_engine(NESTED_ID))
    assert run.track("u1", "Order Placed", {"total": 0}) == []
    assert run.engine.counters["drop.missing_identifier"] == 0


VIEWED_TWICE = """
id = "viewed-twice"
[entry]
event = "Product Viewed"
unique_identifier = "sku"

[[steps]]
id = "wait"
type = "hold_until"
max_duration = "1d"
branches = [{ name = "again", event = "Product Viewed", next = "nudge" }]

[[steps]]
id = "nudge"
type = "send"
destination = "outbox"
event_name = "Still Interested?"
"""


def test_event_taken_by_a_hold_branch_does_not_also_enter() -> None:
    """An event that matched a running (user, identifier) instance does not start a second one.

    Views 1-2 make one instance (enter, then its "again" branch sends); view 3 starts the
    next one. Likewise the 101st "Cart Modified" past the reset cap completes the cart
    instance and must not restart it at once with a fresh reset budget.
    """
    run = Run(make_engine(VIEWED_TWICE))
    run.track("u1", "Product Viewed", {"sku": "s1"})
    out = run.track("u1", "Product Viewed", {"sku": "s1"}, at=T0 + 1)
    assert kinds(out) == ["step", "send", "complete"]
    assert run.engine.next_deadline() is None

    cart = Run(make_engine(CART, limits={"reset_passes": 1}))
    cart.track("u1", "Cart Modified", {"cart_id": "c1"})
    cart.track("u1", "Cart Modified", {"cart_id": "c1"}, at=T0 + 1)
    out = cart.track("u1", "Cart Modified", {"cart_id": "c1"}, at=T0 + 2)
    assert kinds(out) == ["complete"]
