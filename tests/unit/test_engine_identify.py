"""identify updates the traits splits, audiences and sends read; other event types are ignored."""

from __future__ import annotations

import pytest
from engine_helpers import DAY, T0, Run, make_engine, of, only, sends, steps

from journeyd.engine import Completed
from journeyd.model import Event

LATER_SPLIT = """
id = "later"
[entry]
event = "Signed Up"
rule = "once"

[[steps]]
id = "settle"
type = "delay"
duration = "1d"
next = "by-plan"

[[steps]]
id = "by-plan"
type = "data_split"
else = "basic"
branches = [
  { name = "pro", next = "pro", when = [{ trait = "plan", op = "eq", value = "pro" }] },
  { name = "vip", next = "pro", when = [{ audience = "vip" }] },
]

[[steps]]
id = "pro"
type = "send"
destination = "outbox"
event_name = "Pro"
traits = ["email", "plan"]

[[steps]]
id = "basic"
type = "send"
destination = "outbox"
event_name = "Basic"
traits = ["email", "plan"]
"""


def test_identify_during_a_delay_changes_the_split() -> None:
    """Data splits read traits fresh when the instance arrives, not as they were at entry."""
    run = Run(make_engine(LATER_SPLIT))
    run.identify("u1", {"plan": "free", "email": "old@x"})
    run.track("u1", "Signed Up", {})
    run.identify("u1", {"plan": "pro"}, at=T0 + 3600)
    out = run.until(T0 + DAY)
    assert steps(out) == [("by-plan", None), ("pro", "pro")]
    properties = only(sends(out)).payload["properties"]
    # identify merges: plan replaced, email kept
    assert (properties["plan"], properties["email"]) == ("pro", "old@x")


def test_identify_makes_a_user_join_an_audience() -> None:
    """An audience in a data split reflects the latest identify."""
    run = Run(make_engine(LATER_SPLIT))
    run.track("u1", "Signed Up", {})
    run.identify("u1", {"tier": "gold"}, at=T0 + 60)
    assert steps(run.until(T0 + DAY))[-1] == ("pro", "vip")


def test_identify_can_move_a_user_out_of_a_branch() -> None:
    """A later identify that changes a trait also takes the user out of the matching branch."""
    run = Run(make_engine(LATER_SPLIT))
    run.identify("u1", {"plan": "pro", "email": "a@x"})
    run.track("u1", "Signed Up", {})
    run.identify("u1", {"plan": "free", "email": "b@x"}, at=T0 + 60)
    out = run.until(T0 + DAY)
    assert steps(out)[-1] == ("basic", "else")
    assert only(sends(out)).payload["properties"]["email"] == "b@x"


def test_identify_alone_has_no_effects() -> None:
    """identify stores traits and returns no effects; it never enters a journey."""
    run = Run(make_engine(LATER_SPLIT))
    assert run.identify("u1", {"plan": "pro"}) == []
    assert run.engine.users["u1"].traits == {"plan": "pro"}
    assert run.engine.users["u1"].instances == ()


@pytest.mark.parametrize("kind", ["page", "screen", "group", "alias"])
def test_other_event_types_are_ignored(kind: str) -> None:
    """page/screen/group/alias events change nothing, even when they look like an entry."""
    run = Run(make_engine(LATER_SPLIT, limits={"events_per_second_per_user": 1}))
    event = Event(
        type=kind,
        userId="u1",
        event="Signed Up",
        name="Signed Up",
        traits={"plan": "pro"},
        properties={"seats": 3},
        groupId="g1",
        previousId="anon-1",
        messageId=f"{kind}-1",
    )
    assert run.handle(event) == []
    assert "u1" not in run.engine.users
    # It did not use the user's one event of this second either.
    assert steps(run.track("u1", "Signed Up", {})) == [("settle", None)]


ANY_AUDIENCE = {
    "engaged": {
        "all": [{"trait": "email", "op": "exists"}],
        "any": [
            {"trait": "orders", "op": "gte", "value": 3},
            {"trait": "newsletter", "op": "eq", "value": True},
        ],
    }
}

ENGAGED = """
id = "engaged"
[entry]
event = "Signed Up"
rule = "once"

[[steps]]
id = "split"
type = "data_split"
branches = [{ name = "engaged", when = [{ audience = "engaged" }] }]
"""


@pytest.mark.parametrize(
    ("traits", "member"),
    [
        ({"email": "a@x", "orders": 3}, True),
        ({"email": "a@x", "newsletter": True}, True),
        ({"email": "a@x", "newsletter": 1}, False),
        ({"email": "a@x", "orders": 2}, False),
        ({"orders": 5, "newsletter": True}, False),
        ({}, False),
    ],
)
def test_audience_all_and_any(traits: dict, member: bool) -> None:
    """An audience needs every `all` condition and at least one `any` condition."""
    run = Run(make_engine(ENGAGED, audiences=ANY_AUDIENCE))
    if traits:
        run.identify("u1", traits)
    out = run.track("u1", "Signed Up", {})
    done = only(of(out, Completed))
    assert done.step == "split"
    assert done.branch == ("engaged" if member else "else")
