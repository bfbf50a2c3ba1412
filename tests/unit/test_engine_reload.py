"""Reloading journeys: running instances finish on the version they started on."""

from __future__ import annotations

from engine_helpers import (
    CART,
    HOUR,
    T0,
    Run,
    journey,
    kinds,
    make_settings,
    of,
    only,
    sends,
)

from journeyd.engine import Completed, Engine, Entered

V1 = CART
V2 = CART.replace('event_name = "Cart Abandoned"', 'event_name = "Cart Abandoned v2"').replace(
    '{ name = "purchased", event = "Order Completed" }',
    '{ name = "purchased", event = "Purchase Made" }',
)


def test_reload_keeps_running_instances_on_their_version() -> None:
    """After `load` with a changed journey, old instances run v1 and new entries take v2."""
    settings = make_settings()
    run = Run(Engine([journey(V1)], settings))
    old = only(of(run.track("u1", "Cart Modified", {"cart_id": "c1"}), Entered))
    run.engine.load([journey(V2)], settings)
    new = only(of(run.track("u2", "Cart Modified", {"cart_id": "c1"}, at=T0 + 60), Entered))
    assert old.version != new.version
    assert run.engine.journey("cart").version == new.version
    out = run.until(T0 + 3 * HOUR)
    by_user = {d.user: d.payload for d in sends(out)}
    assert by_user["u1"]["event"] == "Cart Abandoned"
    assert by_user["u1"]["properties"]["journey_metadata"]["journey_version"] == old.version
    assert by_user["u2"]["event"] == "Cart Abandoned v2"
    assert by_user["u2"]["properties"]["journey_metadata"]["journey_version"] == new.version


def test_old_version_still_routes_its_own_branch_events() -> None:
    """An old-version instance still reacts to a branch event the new version dropped."""
    settings = make_settings()
    run = Run(Engine([journey(V1)], settings))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    run.track("u2", "Cart Modified", {"cart_id": "c1"})
    run.engine.load([journey(V2)], settings)
    run.track("u3", "Cart Modified", {"cart_id": "c1"}, at=T0 + 1)
    out = run.track("u1", "Order Completed", {"cart_id": "c1"}, at=T0 + 2)
    assert only(of(out, Completed)).branch == "purchased"
    # ... while a v2 instance ignores it and completes on its own event.
    assert run.track("u3", "Order Completed", {"cart_id": "c1"}, at=T0 + 3) == []
    out = run.track("u3", "Purchase Made", {"cart_id": "c1"}, at=T0 + 4)
    assert only(of(out, Completed)).user == "u3"
    assert run.track("u2", "Purchase Made", {"cart_id": "c1"}, at=T0 + 5) == []


def test_reload_unchanged_journey_keeps_the_version() -> None:
    """Reloading an identical definition keeps its version, and its instances go on as before."""
    settings = make_settings()
    run = Run(Engine([journey(V1)], settings))
    first = only(of(run.track("u1", "Cart Modified", {"cart_id": "c1"}), Entered))
    run.engine.load([journey(V1)], settings)
    second = only(of(run.track("u2", "Cart Modified", {"cart_id": "c1"}, at=T0 + 1), Entered))
    assert first.version == second.version
    assert run.engine.instance_count() == 2
    out = run.until(T0 + 3 * HOUR)
    assert {d.payload["properties"]["journey_metadata"]["journey_version"] for d in sends(out)} == {
        first.version
    }
    assert run.engine.instance_count() == 0


def test_removed_journey_lets_instances_finish_but_takes_no_entries() -> None:
    """A journey removed by a reload finishes its running instances and admits no new ones."""
    settings = make_settings()
    run = Run(Engine([journey(V1)], settings))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    run.engine.load([], settings)
    assert run.track("u2", "Cart Modified", {"cart_id": "c1"}, at=T0 + 1) == []
    out = run.until(T0 + 3 * HOUR)
    assert kinds(out) == ["step", "send", "complete"]
    assert run.engine.instance_count() == 0


def test_reload_does_not_reopen_once_or_running_identifiers() -> None:
    """A new version does not start a second instance for a (user, identifier) still running."""
    settings = make_settings()
    run = Run(Engine([journey(V1)], settings))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    run.engine.load([journey(V2)], settings)
    out = run.track("u1", "Cart Modified", {"cart_id": "c1"}, at=T0 + 1)
    assert of(out, Entered) == []
    assert len(run.engine.users["u1"].instances) == 1
