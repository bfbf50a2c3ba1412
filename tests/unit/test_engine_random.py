"""Randomized splits: the distribution follows the percentages; same_branch_per_user sticks."""

from __future__ import annotations

from collections import Counter

import pytest
from engine_helpers import T0, Run, make_engine, of, steps

from journeyd.engine import Completed

AB = """
id = "ab"
[entry]
event = "Cart Modified"
unique_identifier = "cart_id"

[[steps]]
id = "ab"
type = "random_split"
same_branch_per_user = {per_user}
branches = [
  {{ name = "A", percent = {a}, next = "mail-a" }},
  {{ name = "B", percent = {b}, next = "mail-b" }},
]

[[steps]]
id = "mail-a"
type = "send"
destination = "outbox"
event_name = "Mail A"

[[steps]]
id = "mail-b"
type = "send"
destination = "outbox"
event_name = "Mail B"
"""


def ab(a: int = 70, b: int = 30, *, per_user: bool = False) -> str:
    return AB.format(a=a, b=b, per_user="true" if per_user else "false")


def _branch(out: list) -> str:
    taken = [branch for step, branch in steps(out) if step in ("mail-a", "mail-b")]
    assert len(taken) == 1, out
    return taken[0]


@pytest.mark.parametrize("per_user", [False, True])
def test_random_split_distribution_70_30(per_user: bool) -> None:
    """Over 10,000 users a 70/30 split lands within ±2 percentage points of 70/30."""
    run = Run(make_engine(ab(70, 30, per_user=per_user)))
    counts = Counter(
        _branch(run.track(f"user-{n}", "Cart Modified", {"cart_id": "c1"})) for n in range(10_000)
    )
    assert set(counts) == {"A", "B"}
    assert 6800 <= counts["A"] <= 7200, counts
    assert counts["A"] + counts["B"] == 10_000


def test_random_split_distribution_across_instances_of_one_user() -> None:
    """Without same_branch_per_user, one user's instances are assigned independently."""
    run = Run(make_engine(ab(50, 50)))
    counts = Counter(
        _branch(run.track("u1", "Cart Modified", {"cart_id": f"c{n}"}, at=T0 + n))
        for n in range(2_000)
    )
    assert 900 <= counts["A"] <= 1100, counts


def test_random_split_uneven_three_way() -> None:
    """Percentages map to branches in order, including small ones (5/15/80)."""
    source = """
    id = "three"
    [entry]
    event = "Signed Up"
    rule = "once"

    [[steps]]
    id = "pick"
    type = "random_split"
    branches = [
      { name = "small", percent = 5 },
      { name = "medium", percent = 15 },
      { name = "large", percent = 80 },
    ]
    """
    run = Run(make_engine(source))
    counts = Counter(only_complete(run.track(f"user-{n}", "Signed Up", {})) for n in range(10_000))
    assert 300 <= counts["small"] <= 700, counts
    assert 1300 <= counts["medium"] <= 1700, counts
    assert 7800 <= counts["large"] <= 8200, counts


def only_complete(out: list) -> str:
    (done,) = of(out, Completed)
    assert done.step == "pick"
    assert done.branch is not None
    return done.branch


def test_same_branch_per_user_across_instances_and_reentry() -> None:
    """same_branch_per_user: every instance of a user, parallel or re-entered, gets one branch."""
    run = Run(make_engine(ab(50, 50, per_user=True)))
    per_user: dict[str, set[str]] = {}
    for n in range(200):
        user = f"user-{n}"
        for cart in range(4):
            out = run.track(user, "Cart Modified", {"cart_id": f"c{cart}"}, at=T0 + n)
            per_user.setdefault(user, set()).add(_branch(out))
        # the send steps end each instance at once, so the same cart re-enters
        out = run.track(user, "Cart Modified", {"cart_id": "c0"}, at=T0 + n + 0.5)
        per_user[user].add(_branch(out))
    assert all(len(branches) == 1 for branches in per_user.values())
    firsts = Counter(next(iter(b)) for b in per_user.values())
    assert set(firsts) == {"A", "B"}  # it is still a split across users


def test_without_same_branch_a_user_can_get_both() -> None:
    """Control for the test above: without the option, re-entries are assigned afresh."""
    run = Run(make_engine(ab(50, 50, per_user=False)))
    mixed = 0
    for n in range(200):
        user = f"user-{n}"
        seen = {
            _branch(run.track(user, "Cart Modified", {"cart_id": f"c{cart}"}, at=T0 + n))
            for cart in range(4)
        }
        mixed += len(seen) > 1
    assert mixed > 100


def test_random_split_is_stable_for_the_same_instance() -> None:
    """The branch is a function of the instance: the same input in a fresh engine agrees."""

    def branches() -> list[str]:
        run = Run(make_engine(ab()))
        return [
            _branch(run.track(f"user-{n}", "Cart Modified", {"cart_id": "c"}, message_id=f"e{n}"))
            for n in range(50)
        ]

    first = branches()
    assert set(first) == {"A", "B"}
    assert branches() == first
