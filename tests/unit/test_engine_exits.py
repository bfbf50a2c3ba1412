"""Exit rules: they end an instance at once, wherever it is, and never leave a live timer."""

from __future__ import annotations

from engine_helpers import (
    CART,
    DAY,
    HOUR,
    T0,
    Run,
    journey,
    kinds,
    make_engine,
    make_settings,
    of,
    only,
    sends,
)

from journeyd.engine import Entered, Exited
from journeyd.validate import check_journey

DELAYED = """
id = "delayed"
[entry]
event = "Signed Up"
rule = "once"

[[exit]]
event = "Account Deleted"

[[steps]]
id = "settle"
type = "delay"
duration = "3d"
next = "hello"

[[steps]]
id = "hello"
type = "send"
destination = "outbox"
event_name = "Hello"
"""


def _instances(run: Run, user: str) -> list[str]:
    state = run.engine.users.get(user)
    return [] if state is None else [i.identifier for i in state.instances]


def test_exit_mid_hold_cancels_the_timer() -> None:
    """An exit event ends a holding instance at once; its hold timer never fires afterwards."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    out = run.track("u1", "Cart Emptied", {"cart_id": "c1"}, at=T0 + HOUR)
    exited = only(of(out, Exited))
    assert (exited.step, exited.reason, exited.event, exited.at) == (
        "wait",
        "exit_rule",
        "Cart Emptied",
        T0 + HOUR,
    )
    assert kinds(out) == ["exit"]
    assert run.engine.next_deadline() is None
    assert run.until(T0 + 10 * DAY) == []
    assert _instances(run, "u1") == []
    assert run.engine.counters["exited"] == 1


def test_exit_mid_delay_cancels_the_timer() -> None:
    """An exit rule applies during a delay; the delay's timer never fires afterwards."""
    run = Run(make_engine(DELAYED))
    run.track("u1", "Signed Up", {})
    out = run.track("u1", "Account Deleted", {}, at=T0 + DAY)
    assert only(of(out, Exited)).step == "settle"
    assert run.engine.next_deadline() is None
    assert run.until(T0 + 30 * DAY) == []


def test_exit_of_one_user_leaves_others_running() -> None:
    """An exit event only ends the instances of the user who sent it."""
    run = Run(make_engine(DELAYED))
    run.track("u1", "Signed Up", {})
    run.track("u2", "Signed Up", {})
    run.track("u1", "Account Deleted", {}, at=T0 + DAY)
    out = run.until(T0 + 3 * DAY)
    assert [d.user for d in sends(out)] == ["u2"]


def test_exit_with_match_identifier_hits_only_that_instance() -> None:
    """match_identifier: the exit ends only the instance whose identifier the event carries."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    run.track("u1", "Cart Modified", {"cart_id": "c2"})
    out = run.track("u1", "Cart Emptied", {"cart_id": "c1"}, at=T0 + HOUR)
    exited = only(of(out, Exited))
    c1 = next(e for e in of(run.effects, Entered) if e.identifier == "c1")
    assert exited.instance == c1.instance
    assert _instances(run, "u1") == ["c2"]
    out = run.until(T0 + 2 * HOUR)
    assert [d.payload["properties"]["journey_context"] for d in sends(out)] == [
        {"Cart Modified": {"cart_id": "c2"}}
    ]


def test_exit_with_match_identifier_needs_the_identifier() -> None:
    """A match_identifier exit without (or with another) identifier ends nothing."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    assert run.track("u1", "Cart Emptied", {}, at=T0 + 1) == []
    assert run.track("u1", "Cart Emptied", {"cart_id": "c9"}, at=T0 + 2) == []
    assert _instances(run, "u1") == ["c1"]


def test_exit_without_match_identifier_hits_every_instance() -> None:
    """An exit rule without match_identifier ends every instance of the user in the journey."""
    run = Run(make_engine(CART))
    for cart in ("c1", "c2", "c3"):
        run.track("u1", "Cart Modified", {"cart_id": cart})
    run.track("u2", "Cart Modified", {"cart_id": "c1"})
    out = run.track("u1", "Account Deleted", {}, at=T0 + HOUR)
    assert len(of(out, Exited)) == 3
    assert {e.user for e in of(out, Exited)} == {"u1"}
    assert _instances(run, "u1") == []
    assert _instances(run, "u2") == ["c1"]
    assert len(run.engine.timers) == 1


def test_exit_send_payload_includes_exit_event() -> None:
    """The exit send fires for a `send = true` rule, with the exit event in journey_context."""
    run = Run(make_engine(CART))
    run.identify("u1", {"email": "u1@example.com"})
    run.track("u1", "Cart Modified", {"cart_id": "c1", "total": 10})
    out = run.track("u1", "Account Deleted", {"reason": "gdpr"}, at=T0 + HOUR)
    assert kinds(out) == ["exit", "send"]
    delivery = only(sends(out))
    exited = only(of(out, Exited))
    assert delivery.destination == "outbox"
    assert delivery.step == "exit"
    assert delivery.instance == exited.instance
    payload = delivery.payload
    assert payload["event"] == "Cart Journey Exited"
    assert payload["properties"]["journey_context"] == {
        "Cart Modified": {"cart_id": "c1", "total": 10},
        "Account Deleted": {"reason": "gdpr"},
    }
    assert payload["properties"]["journey_metadata"]["step_id"] == "exit"
    assert payload["properties"]["journey_metadata"]["instance_id"] == exited.instance


def test_exit_without_send_flag_sends_nothing() -> None:
    """An exit rule without `send = true` ends the instance without the exit send."""
    run = Run(make_engine(CART))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    out = run.track("u1", "Cart Emptied", {"cart_id": "c1"}, at=T0 + 1)
    assert sends(out) == []


EXIT_ON_ENTRY_EVENT = """
id = "exit-on-entry-name"
[entry]
event = "Cart Modified"
unique_identifier = "cart_id"

[[exit]]
event = "Cart Modified"
match_identifier = true
send = true
filters = [{ property = "items", op = "eq", value = 0 }]

[exit_send]
destination = "outbox"
event_name = "Gave Up"

[[steps]]
id = "wait"
type = "hold_until"
max_duration = "1h"
branches = [{ name = "paid", event = "Order Completed" }]
"""


def test_exit_send_keeps_entry_copy_when_exit_event_has_same_name() -> None:
    """An exit event named like the entry is stored under an alias; the entry copy stays."""
    run = Run(make_engine(EXIT_ON_ENTRY_EVENT))
    run.track("u1", "Cart Modified", {"cart_id": "c1", "items": 2})
    out = run.track("u1", "Cart Modified", {"cart_id": "c1", "items": 0}, at=T0 + 1)
    context = only(sends(out)).payload["properties"]["journey_context"]
    assert context["Cart Modified"] == {"cart_id": "c1", "items": 2}
    assert context["Cart Modified - exit"] == {"cart_id": "c1", "items": 0}
    assert len(context) == 2


def test_exit_filters_must_match() -> None:
    """An exit rule's property filters must hold for the event to end the instance."""
    run = Run(make_engine(EXIT_ON_ENTRY_EVENT))
    run.track("u1", "Cart Modified", {"cart_id": "c1", "items": 2})
    assert run.track("u1", "Cart Modified", {"cart_id": "c1", "items": 1}, at=T0 + 1) == []
    assert _instances(run, "u1") == ["c1"]


def test_exit_overrides_a_hold_branch_on_the_same_event() -> None:
    """Exit rules are checked before hold branches: an event that is both exits the instance."""
    source = CART.replace('event = "Cart Emptied"', 'event = "Order Completed"')
    run = Run(make_engine(source))
    run.track("u1", "Cart Modified", {"cart_id": "c1"})
    out = run.track("u1", "Order Completed", {"cart_id": "c1"}, at=T0 + 1)
    assert kinds(out) == ["exit"]


SEND_THEN_DELAY = """
id = "send-then-delay"
[entry]
event = "Signed Up"
rule = "once"

[[exit]]
event = "Account Deleted"
send = true

[exit_send]
destination = "outbox"
event_name = "Bye"
traits = ["email", "phone"]

[[steps]]
id = "hello"
type = "send"
destination = "outbox"
event_name = "Hello"
next = "wait"

[[steps]]
id = "wait"
type = "delay"
duration = "1d"
"""


def test_exit_send_selects_traits() -> None:
    """The exit send carries the traits exit_send selects; a missing one is left out."""
    run = Run(make_engine(SEND_THEN_DELAY))
    run.identify("u1", {"email": "u1@example.com", "plan": "pro"})
    run.track("u1", "Signed Up", {})
    out = run.track("u1", "Account Deleted", {}, at=T0 + 5)
    properties = only(sends(out)).payload["properties"]
    assert properties["email"] == "u1@example.com"
    assert "phone" not in properties
    assert "plan" not in properties


def test_exit_send_and_step_sends_have_distinct_message_ids() -> None:
    """A step send and the exit send of one instance never share a messageId."""
    run = Run(make_engine(SEND_THEN_DELAY))
    run.track("u1", "Signed Up", {})
    run.track("u1", "Account Deleted", {}, at=T0 + 5)
    deliveries = sends(run.effects)
    assert [d.payload["event"] for d in deliveries] == ["Hello", "Bye"]
    assert deliveries[0].message_id != deliveries[1].message_id


def test_step_id_exit_is_reserved() -> None:
    """A send step may not be called "exit": its messageId would collide with the exit send's."""
    source = SEND_THEN_DELAY.replace('id = "hello"', 'id = "exit"')
    problems = check_journey(journey(source, validate=False), make_settings())
    assert [path for path, _ in problems] == ["steps[0].id"]
