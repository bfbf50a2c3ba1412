"""Journey context: reset branches, event-name aliases and the context size cap."""

from __future__ import annotations

from engine_helpers import (
    CART,
    HOUR,
    T0,
    Run,
    kinds,
    make_engine,
    of,
    only,
    sends,
    steps,
)

from journeyd.engine import Completed, Dropped

# --- reset branches --------------------------------------------------------------------


def test_reset_restarts_the_hold_timer() -> None:
    """A reset branch restarts the hold's timer; the old deadline fires nothing."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    out = run.track("u1", "Cart Modified", {"cart_id": "c1"}, at=T0 + HOUR)
    assert kinds(out) == ["step"]
    assert steps(out) == [("wait", "updated cart")]
    assert run.engine.next_deadline() == T0 + 3 * HOUR
    assert len(run.engine.timers) == 1
    assert run.until(T0 + 3 * HOUR - 1) == []
    out = run.until(T0 + 3 * HOUR)
    assert steps(out) == [("nudge", "timeout")]
    assert only(sends(out)).at == T0 + 3 * HOUR


def test_reset_replaces_its_context_entry_under_the_alias() -> None:
    """Each reset replaces the branch's own context entry; the entry copy is never touched."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1", "total": 10})
    run.track("u1", "Cart Modified", {"cart_id": "c1", "total": 20}, at=T0 + 60)
    run.track("u1", "Cart Modified", {"cart_id": "c1", "total": 30}, at=T0 + 120)
    out = run.until(T0 + 120 + 2 * HOUR)
    assert only(sends(out)).payload["properties"]["journey_context"] == {
        "Cart Modified": {"cart_id": "c1", "total": 10},
        "Cart Modified - updated cart": {"cart_id": "c1", "total": 30},
    }


def test_reset_only_for_the_matching_identifier() -> None:
    """A reset event for another cart of the same user starts that cart, not a reset of this one."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    out = run.track("u1", "Cart Modified", {"cart_id": "c2"}, at=T0 + HOUR)
    assert kinds(out) == ["enter", "step"]
    assert steps(out) == [("wait", None)]
    assert run.engine.next_deadline() == T0 + 2 * HOUR


def test_reset_cap_default_is_100_passes() -> None:
    """limits.reset_passes defaults to 100: pass 101 is a normal branch (no next: completes)."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    for n in range(1, 101):
        out = run.track("u1", "Cart Modified", {"cart_id": "c1", "n": n}, at=T0 + n)
        assert steps(out) == [("wait", "updated cart")], n
    out = run.track("u1", "Cart Modified", {"cart_id": "c1", "n": 101}, at=T0 + 101)
    done = only(of(out, Completed))
    assert (done.step, done.branch) == ("wait", "updated cart")
    assert kinds(out) == ["complete"]
    assert run.engine.next_deadline() is None
    assert run.until(T0 + 10 * HOUR) == []


RESET_WITH_NEXT = """
id = "browse"
[entry]
event = "Product Viewed"
rule = "once"

[[steps]]
id = "wait"
type = "hold_until"
max_duration = "1h"
branches = [
  { name = "again", event = "Product Viewed", reset = true, next = "enough" },
  { name = "bought", event = "Order Completed" },
]

[[steps]]
id = "enough"
type = "send"
destination = "outbox"
event_name = "Still Browsing"
"""


def test_reset_cap_setting_then_branch_goes_to_next() -> None:
    """Past limits.reset_passes a reset branch with a `next` moves on to it, with the capture."""
    run = Run(make_engine(RESET_WITH_NEXT, limits={"reset_passes": 2}))
    run.track("u1", "Product Viewed", {"sku": "s0"})
    assert steps(run.track("u1", "Product Viewed", {"sku": "s1"}, at=T0 + 1)) == [("wait", "again")]
    assert steps(run.track("u1", "Product Viewed", {"sku": "s2"}, at=T0 + 2)) == [("wait", "again")]
    out = run.track("u1", "Product Viewed", {"sku": "s3"}, at=T0 + 3)
    assert steps(out) == [("enough", "again")]
    assert only(sends(out)).payload["properties"]["journey_context"] == {
        "Product Viewed": {"sku": "s0"},
        "Product Viewed - again": {"sku": "s3"},
    }
    assert only(of(out, Completed)).step == "enough"


# --- aliases ---------------------------------------------------------------------------

TWO_HOLDS = """
id = "nurture"
[entry]
event = "Signed Up"
rule = "once"

[[steps]]
id = "first"
type = "hold_until"
max_duration = "1d"
on_timeout = "second"
branches = [{ name = "opened once", event = "Email Opened", next = "second" }]

[[steps]]
id = "second"
type = "hold_until"
max_duration = "1d"
branches = [{ name = "opened twice", event = "Email Opened", next = "report" }]

[[steps]]
id = "report"
type = "send"
destination = "outbox"
event_name = "Engaged"
"""


def test_alias_keeps_the_first_capture() -> None:
    """A later capture of an event name already in context goes under its alias, not over it."""
    run = Run(make_engine(TWO_HOLDS))
    run.track("u1", "Signed Up", {"plan": "free"})
    run.track("u1", "Email Opened", {"mail": 1}, at=T0 + HOUR)
    out = run.track("u1", "Email Opened", {"mail": 2}, at=T0 + 2 * HOUR)
    assert only(sends(out)).payload["properties"]["journey_context"] == {
        "Signed Up": {"plan": "free"},
        "Email Opened": {"mail": 1},
        "Email Opened - opened twice": {"mail": 2},
    }


def test_entry_copy_survives_a_same_name_capture() -> None:
    """The entry event's copy is not overwritten when a hold captures the same event name."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1", "v": "entry"})
    run.track("u1", "Cart Modified", {"cart_id": "c1", "v": "later"}, at=T0 + 5)
    context = only(sends(run.until(T0 + 3 * HOUR))).payload["properties"]["journey_context"]
    assert context["Cart Modified"]["v"] == "entry"
    assert context["Cart Modified - updated cart"]["v"] == "later"


def test_capture_without_alias_uses_the_event_name() -> None:
    """A hold capture whose event name is not yet in context is stored under the plain name."""
    run = Run(make_engine(TWO_HOLDS))
    run.track("u1", "Signed Up", {})
    run.until(T0 + 86400)  # first hold times out, so nothing captured on this path yet
    out = run.track("u1", "Email Opened", {"mail": 9}, at=T0 + 86400 + 60)
    context = only(sends(out)).payload["properties"]["journey_context"]
    # The key is decided from the graph (another path may have captured "Email Opened"),
    # so a branch always writes the same key.
    assert context == {"Signed Up": {}, "Email Opened - opened twice": {"mail": 9}}


# --- context cap -----------------------------------------------------------------------

CAPPED = """
id = "capped"
[entry]
event = "Signed Up"
rule = "once"

[[steps]]
id = "wait"
type = "hold_until"
max_duration = "1d"
branches = [{ name = "ordered", event = "Order Completed", next = "thanks" }]

[[steps]]
id = "thanks"
type = "send"
destination = "outbox"
event_name = "Thanks"
"""


def test_context_cap_replaces_the_capture_with_a_marker() -> None:
    """A capture past limits.context_bytes becomes a truncation marker plus a context_cap drop."""
    run = Run(make_engine(CAPPED, limits={"context_bytes": 300}))
    run.track("u1", "Signed Up", {"plan": "free"})
    big = {"note": "x" * 1000}
    out = run.track("u1", "Order Completed", big, at=T0 + 60)
    dropped = only(of(out, Dropped))
    assert dropped.reason == "context_cap"
    assert dropped.user == "u1"
    assert dropped.journey == "capped"
    assert dropped.event == "Order Completed"
    assert run.engine.counters["drop.context_cap"] == 1
    # The instance carries on to its next step, with what fitted plus the marker.
    delivery = only(sends(out))
    context = delivery.payload["properties"]["journey_context"]
    assert context["Signed Up"] == {"plan": "free"}
    marker = context["Order Completed"]
    assert marker["journeyd_truncated"] is True
    assert isinstance(marker["bytes"], int)
    assert 1000 <= marker["bytes"] < 1100
    assert set(marker) == {"journeyd_truncated", "bytes"}
    assert only(of(out, Completed)).step == "thanks"


def test_context_under_the_cap_is_kept_whole() -> None:
    """Captures that fit in limits.context_bytes are stored as they are, with no drop."""
    run = Run(make_engine(CAPPED, limits={"context_bytes": 300}))
    run.track("u1", "Signed Up", {"plan": "free"})
    out = run.track("u1", "Order Completed", {"note": "x" * 100}, at=T0 + 60)
    assert of(out, Dropped) == []
    context = only(sends(out)).payload["properties"]["journey_context"]
    assert context["Order Completed"] == {"note": "x" * 100}


def test_context_cap_on_the_entry_event() -> None:
    """An oversized entry event still enters; its capture is the marker and a drop is reported."""
    run = Run(make_engine(CAPPED, limits={"context_bytes": 300}))
    out = run.track("u1", "Signed Up", {"blob": "y" * 5000})
    assert kinds(out) == ["enter", "drop", "step"]
    assert only(of(out, Dropped)).reason == "context_cap"
    out = run.track("u1", "Order Completed", {"ok": True}, at=T0 + 1)
    context = only(sends(out)).payload["properties"]["journey_context"]
    assert context["Signed Up"]["journeyd_truncated"] is True
    assert context["Order Completed"] == {"ok": True}
