"""Every step type: hold_until, delay, data_split, send (random_split has its own module)."""

from __future__ import annotations

import re

import msgspec
import pytest
from engine_helpers import (
    CART,
    DAY,
    HOUR,
    MINUTE,
    T0,
    Run,
    kinds,
    make_engine,
    of,
    only,
    sends,
    steps,
)

import journeyd
from journeyd.engine import Completed, Delivery, Entered, Stepped
from journeyd.model import format_timestamp

# --- hold_until ------------------------------------------------------------------------


def test_entering_a_hold_arms_its_timer() -> None:
    """Entry runs up to the first waiting step and arms its max_duration timer."""
    run = Run(make_engine(CART))
    out = run.track("u1", "Cart Modified", {"cart_id": "c1"})
    assert kinds(out) == ["enter", "step"]
    entered = only(of(out, Entered))
    assert (entered.user, entered.journey, entered.identifier) == ("u1", "cart", "c1")
    assert steps(out) == [("wait", None)]
    assert run.engine.next_deadline() == T0 + 2 * HOUR


def test_hold_branch_without_next_completes() -> None:
    """A hold branch event ends the hold; a branch with no `next` completes the instance."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    out = run.track("u1", "Order Completed", {"cart_id": "c1"}, at=T0 + 10 * MINUTE)
    done = only(of(out, Completed))
    assert (done.step, done.branch, done.at) == ("wait", "purchased", T0 + 10 * MINUTE)
    assert kinds(out) == ["complete"]
    assert run.engine.next_deadline() is None
    assert run.wait(DAY) == []
    assert "u1" not in run.engine.users


HOLD_WITH_NEXT = """
id = "hold-next"
[entry]
event = "Signed Up"
rule = "once"

[[steps]]
id = "wait"
type = "hold_until"
max_duration = "1d"
branches = [
  { name = "big order", event = "Order Completed", next = "thanks-big", filters = [
    { property = "total", op = "gte", value = 100 },
  ] },
  { name = "small order", event = "Order Completed", next = "thanks-small", filters = [
    { property = "total", op = "lt", value = 100 },
  ] },
]

[[steps]]
id = "thanks-big"
type = "send"
destination = "outbox"
event_name = "Big Thanks"

[[steps]]
id = "thanks-small"
type = "send"
destination = "outbox"
event_name = "Small Thanks"
"""


@pytest.mark.parametrize(
    ("total", "step", "branch"),
    [(250, "thanks-big", "big order"), (99.5, "thanks-small", "small order")],
)
def test_hold_branch_filters_pick_the_branch(total: float, step: str, branch: str) -> None:
    """Branch filters decide which branch of the hold an event takes, and it goes to its next."""
    run = Run(make_engine(HOLD_WITH_NEXT))
    run.track("u1", "Signed Up", {"plan": "free"})
    out = run.track("u1", "Order Completed", {"total": total}, at=T0 + HOUR)
    assert steps(out) == [(step, branch)]
    delivery = only(sends(out))
    assert delivery.step == step
    assert delivery.payload["properties"]["journey_context"] == {
        "Signed Up": {"plan": "free"},
        "Order Completed": {"total": total},
    }
    assert only(of(out, Completed)).step == step


def test_hold_ignores_events_its_branch_filters_reject() -> None:
    """An event matching no branch filter leaves the instance waiting with its timer intact."""
    run = Run(make_engine(HOLD_WITH_NEXT))
    run.track("u1", "Signed Up", {})
    assert run.track("u1", "Order Completed", {"total": "250"}, at=T0 + HOUR) == []
    assert run.track("u1", "Order Completed", {}, at=T0 + 2 * HOUR) == []
    assert run.engine.next_deadline() == T0 + DAY
    out = run.track("u1", "Order Completed", {"total": 100}, at=T0 + 3 * HOUR)
    assert steps(out) == [("thanks-big", "big order")]


def test_hold_ignores_other_users_events() -> None:
    """A branch event from another user does not move this user's hold."""
    run = Run(make_engine(HOLD_WITH_NEXT))
    run.track("u1", "Signed Up", {})
    assert run.track("u2", "Order Completed", {"total": 500}, at=T0 + HOUR) == []
    assert run.engine.next_deadline() == T0 + DAY


def test_hold_timeout_takes_on_timeout() -> None:
    """When max_duration passes the hold takes its timeout branch (on_timeout), at the deadline."""
    run = Run(make_engine(CART))
    run.identify("u1", {"email": "u1@example.com"})
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    assert run.until(T0 + 2 * HOUR - 1) == []
    out = run.until(T0 + 5 * HOUR)  # fired late: the effects still carry the deadline
    assert kinds(out) == ["step", "send", "complete"]
    assert steps(out) == [("nudge", "timeout")]
    assert {e.at for e in out} == {T0 + 2 * HOUR}
    assert only(sends(out)).payload["event"] == "Cart Abandoned"


def test_hold_timeout_without_on_timeout_completes() -> None:
    """A hold with no on_timeout completes when max_duration passes."""
    run = Run(make_engine(HOLD_WITH_NEXT))
    run.track("u1", "Signed Up", {})
    out = run.until(T0 + DAY)
    done = only(of(out, Completed))
    assert (done.step, done.branch, done.at) == ("wait", "timeout", T0 + DAY)
    assert kinds(out) == ["complete"]
    assert run.engine.next_deadline() is None


def test_entry_event_does_not_feed_the_hold_it_starts() -> None:
    """The event that enters an instance is not also taken as a branch of its first hold."""
    run = Run(make_engine(CART))
    out = run.track("u1", "Cart Modified", {"cart_id": "c1"})
    assert not any(e.branch == "updated cart" for e in of(out, Stepped))
    assert run.engine.next_deadline() == T0 + 2 * HOUR


# --- delay -----------------------------------------------------------------------------

DELAYED = """
id = "delayed"
[entry]
event = "Signed Up"
rule = "once"

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
next = "linger"

[[steps]]
id = "linger"
type = "delay"
duration = "2h"
"""


def test_delay_waits_its_duration_then_moves_on() -> None:
    """A delay step waits exactly its duration, then runs its next step."""
    run = Run(make_engine(DELAYED))
    out = run.track("u1", "Signed Up", {})
    assert steps(out) == [("settle", None)]
    assert run.engine.next_deadline() == T0 + DAY
    assert run.until(T0 + DAY - 1) == []
    out = run.until(T0 + DAY)
    assert kinds(out) == ["step", "send", "step"]
    assert steps(out) == [("hello", None), ("linger", None)]
    assert only(sends(out)).at == T0 + DAY


def test_delay_without_next_completes() -> None:
    """A delay with no `next` completes the instance when it ends."""
    run = Run(make_engine(DELAYED))
    run.track("u1", "Signed Up", {})
    run.until(T0 + DAY)
    out = run.until(T0 + DAY + 2 * HOUR)
    done = only(of(out, Completed))
    assert (done.step, done.at) == ("linger", T0 + DAY + 2 * HOUR)
    assert run.engine.next_deadline() is None


def test_delay_ignores_events() -> None:
    """Events that are not exit rules do nothing to an instance in a delay."""
    run = Run(make_engine(DELAYED))
    run.track("u1", "Signed Up", {})
    assert run.track("u1", "Signed Up", {}, at=T0 + HOUR) == []
    assert run.engine.next_deadline() == T0 + DAY


# --- data_split ------------------------------------------------------------------------

SPLIT = """
id = "split"
[entry]
event = "Signed Up"
rule = "once"

[[steps]]
id = "by-profile"
type = "data_split"
else = "everyone"
branches = [
  { name = "pro", next = "to-pro", when = [{ trait = "plan", op = "eq", value = "pro" }] },
  { name = "vip", next = "to-vip", when = [{ audience = "vip" }] },
  { name = "team", next = "to-team", when = [
      { context = "Signed Up", property = "seats", op = "gte", value = 10 },
      { context = "Signed Up", property = "company.country", op = "in", value = ["FR", "DE"] },
  ] },
  { name = "no email", next = "to-no-email", when = [{ trait = "email", op = "not_exists" }] },
  { name = "not vip", next = "to-not-vip", when = [{ not_audience = "vip" }] },
]

[[steps]]
id = "to-pro"
type = "send"
destination = "outbox"
event_name = "Pro"

[[steps]]
id = "to-vip"
type = "send"
destination = "outbox"
event_name = "Vip"

[[steps]]
id = "to-team"
type = "send"
destination = "outbox"
event_name = "Team"

[[steps]]
id = "to-no-email"
type = "send"
destination = "outbox"
event_name = "No Email"

[[steps]]
id = "to-not-vip"
type = "send"
destination = "outbox"
event_name = "Not Vip"

[[steps]]
id = "everyone"
type = "send"
destination = "outbox"
event_name = "Everyone"
"""

GOLD = "gold"


def _split_branch(traits: dict | None, props: dict, source: str = SPLIT) -> list[tuple]:
    run = Run(make_engine(source))
    if traits is not None:
        run.identify("u1", traits)
    out = run.track("u1", "Signed Up", props)
    return steps(out)[1:]


@pytest.mark.parametrize(
    ("traits", "props", "taken"),
    [
        # trait condition; first match wins even when later branches match too
        ({"plan": "pro", "tier": GOLD}, {"seats": 50, "company": {"country": "FR"}}, "pro"),
        # audience condition (tier = gold)
        ({"plan": "free", "tier": GOLD, "email": "a@b"}, {"seats": 50}, "vip"),
        # journey-context condition: every condition of the `when` list must hold
        ({"email": "a@b"}, {"seats": 10, "company": {"country": "DE"}}, "team"),
        # not_exists trait: no email trait at all, or an explicit null
        ({"plan": "free"}, {"seats": 10, "company": {"country": "US"}}, "no email"),
        ({"email": None}, {}, "no email"),
        (None, {"seats": 3}, "no email"),
        # not_audience
        ({"email": "a@b", "tier": "silver"}, {}, "not vip"),
    ],
)
def test_data_split_conditions_in_order(traits, props, taken) -> None:
    """Data split: trait/audience/context/not_exists/not_audience, in order, first match wins."""
    assert _split_branch(traits, props) == [(f"to-{taken.replace(' ', '-')}", taken)]


def test_data_split_context_and_is_all_conditions() -> None:
    """A context branch with one of its two conditions failing is not taken."""
    taken = _split_branch({"email": "a@b", "tier": "silver"}, {"seats": 10, "company": {}})
    assert taken == [("to-not-vip", "not vip")]


BY_PLAN = """
id = "by-plan"
[entry]
event = "Signed Up"
rule = "once"

[[steps]]
id = "by-plan"
type = "data_split"
branches = [
  { name = "pro", next = "pro-mail", when = [{ trait = "plan", op = "eq", value = "pro" }] },
  { name = "vip", when = [{ audience = "vip" }] },
]

[[steps]]
id = "pro-mail"
type = "send"
destination = "outbox"
event_name = "Pro"
"""

BY_PLAN_WITH_ELSE = (
    BY_PLAN.replace('type = "data_split"', 'type = "data_split"\nelse = "other-mail"')
    + """
[[steps]]
id = "other-mail"
type = "send"
destination = "outbox"
event_name = "Other"
"""
)


def test_data_split_else_branch() -> None:
    """When no branch matches, the data split takes its `else` branch."""
    run = Run(make_engine(BY_PLAN_WITH_ELSE))
    run.identify("u1", {"plan": "free"})
    out = run.track("u1", "Signed Up", {})
    assert steps(out) == [("by-plan", None), ("other-mail", "else")]
    assert only(sends(out)).payload["event"] == "Other"


def test_data_split_without_else_completes() -> None:
    """No matching branch and no `else`: the instance completes at the split."""
    run = Run(make_engine(BY_PLAN))
    run.identify("u1", {"plan": "free"})
    out = run.track("u1", "Signed Up", {})
    assert sends(out) == []
    done = only(of(out, Completed))
    assert (done.step, done.branch) == ("by-plan", "else")
    assert run.engine.users["u1"].instances == ()


def test_data_split_branch_without_next_completes() -> None:
    """A matching data-split branch with no `next` completes the instance."""
    run = Run(make_engine(BY_PLAN_WITH_ELSE))
    run.identify("u1", {"tier": "gold"})
    out = run.track("u1", "Signed Up", {})
    done = only(of(out, Completed))
    assert (done.step, done.branch) == ("by-plan", "vip")
    assert sends(out) == []


# --- send ------------------------------------------------------------------------------

WELCOME = """
id = "welcome"
[entry]
event = "Signed Up"
rule = "once"

[[steps]]
id = "hello"
type = "send"
destination = "outbox"
event_name = "Welcome"
traits = ["email", "plan", "phone"]
"""

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_send_payload_shape() -> None:
    """The delivery payload is the Segment-shaped track event DESIGN.md specifies."""
    run = Run(make_engine(WELCOME))
    run.identify("u1", {"email": "u1@example.com", "plan": "pro", "name": "Ann"})
    props = {"seats": 3, "source": {"utm": "ad"}}
    out = run.track("u1", "Signed Up", props, at=T0 + 0.25)
    entered = only(of(out, Entered))
    delivery = only(sends(out))
    assert delivery.destination == "outbox"
    assert delivery.step == "hello"
    payload = delivery.payload
    assert payload == {
        "type": "track",
        "event": "Welcome",
        "userId": "u1",
        "anonymousId": None,
        "messageId": delivery.message_id,
        "timestamp": "2026-01-01T00:00:00.250Z",
        "properties": {
            "journey_context": {"Signed Up": props},
            "journey_metadata": {
                "journey_id": "welcome",
                "journey_version": entered.version,
                "instance_id": entered.instance,
                "step_id": "hello",
            },
            "email": "u1@example.com",
            "plan": "pro",
        },
        "context": {"journeyd": {"version": journeyd.__version__}},
    }
    assert UUID.fullmatch(delivery.message_id)
    assert payload["timestamp"] == format_timestamp(T0 + 0.25)
    msgspec.json.encode(payload)  # plain JSON data, ready for the file destination


def test_send_leaves_out_missing_traits_keeps_null_ones() -> None:
    """A selected trait the profile lacks is left out; one explicitly null is kept as null."""
    run = Run(make_engine(WELCOME))
    run.identify("u1", {"email": "u1@example.com", "phone": None})
    properties = only(sends(run.track("u1", "Signed Up", {}))).payload["properties"]
    assert "plan" not in properties
    assert properties["email"] == "u1@example.com"
    assert "phone" in properties
    assert properties["phone"] is None


def test_send_without_any_traits() -> None:
    """A user never identified gets a payload with no trait properties at all."""
    run = Run(make_engine(WELCOME))
    properties = only(sends(run.track("u1", "Signed Up", {}))).payload["properties"]
    assert set(properties) == {"journey_context", "journey_metadata"}


def test_send_to_anonymous_user_uses_anonymous_id() -> None:
    """An instance keyed by anonymousId sends with anonymousId set and no userId."""
    run = Run(make_engine(WELCOME))
    delivery = only(sends(run.track("anon-7", "Signed Up", {}, anonymous=True)))
    assert delivery.payload["anonymousId"] == "anon-7"
    assert delivery.payload.get("userId") is None
    assert delivery.user == "anon-7"


def test_send_message_ids_are_distinct_per_instance_and_step() -> None:
    """Different instances and different send steps never share a messageId."""
    run = Run(make_engine(DELAYED, WELCOME))
    run.track("u1", "Signed Up", {})
    run.track("u2", "Signed Up", {})
    run.until(T0 + DAY)
    ids = [d.message_id for d in sends(run.effects)]
    assert len(ids) == 4
    assert len(set(ids)) == 4
    assert all(d.payload["messageId"] == d.message_id for d in sends(run.effects))


def test_send_reads_context_at_send_time() -> None:
    """journey_context holds the entry and every hold capture on the path taken, nothing else."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1", "total": 10})
    run.track("u1", "Cart Modified", {"cart_id": "c2", "total": 99}, at=T0 + 1)
    run.track("u9", "Order Completed", {"cart_id": "c1"}, at=T0 + 2)
    out = run.until(T0 + 3 * HOUR)
    by_cart = {
        d.payload["properties"]["journey_context"]["Cart Modified"]["cart_id"]: d
        for d in of(out, Delivery)
    }
    assert by_cart["c1"].payload["properties"]["journey_context"] == {
        "Cart Modified": {"cart_id": "c1", "total": 10}
    }
    assert by_cart["c2"].payload["properties"]["journey_context"] == {
        "Cart Modified": {"cart_id": "c2", "total": 99}
    }


def test_send_mapping_defines_the_properties_sent() -> None:
    """A send step's mapping sends exactly the mapped fields; a mapped path that is missing
    is sent as null, and nothing unmapped is sent."""
    from engine_helpers import make_engine

    engine = make_engine(
        """
        id = "mapped"
        [entry]
        event = "Signed Up"
        rule = "once"
        [[steps]]
        id = "out"
        type = "send"
        destination = "outbox"
        event_name = "Welcome"
        traits = ["email"]
        [steps.mapping]
        email = "properties.email"
        seats = "properties.journey_context.Signed Up.seats"
        plan = "properties.plan"
        who = "userId"
        """
    )
    from journeyd.model import Event

    engine.handle(Event(type="identify", userId="u1", traits={"email": "a@b.c"}), 1000.0)
    effects = engine.handle(
        Event(type="track", userId="u1", event="Signed Up", properties={"seats": 3}), 1001.0
    )
    (delivery,) = [e for e in effects if e.__struct_config__.tag == "send"]
    assert delivery.payload["properties"] == {
        "email": "a@b.c",
        "seats": 3,
        "plan": None,
        "who": "u1",
    }


def test_mapping_limits_are_validated() -> None:
    """More mapped fields than limits.mapping_fields, or an empty path, is a config error."""
    import msgspec
    from engine_helpers import make_settings

    from journeyd.model import Journey
    from journeyd.validate import check_journey

    definition = msgspec.convert(
        {
            "id": "m",
            "entry": {"event": "Signed Up", "rule": "once"},
            "steps": [
                {
                    "id": "out",
                    "type": "send",
                    "destination": "outbox",
                    "event_name": "E",
                    "mapping": {"a": "userId", "b": "", "c": "event"},
                }
            ],
        },
        Journey,
    )
    problems = check_journey(definition, make_settings(limits={"mapping_fields": 2}))
    assert (
        "steps[0].mapping",
        "at most 2 fields (found 3; limits.mapping_fields sets the limit)",
    ) in problems
    assert any(where == "steps[0].mapping.b" and "payload path" in what for where, what in problems)
