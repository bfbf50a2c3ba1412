"""Semantic rules of a journey file: each yields its message at the right file and path."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    REENTER,
    SETTINGS,
    assert_problem,
    data_split,
    delay,
    exit_send,
    hold,
    journey,
    journey_problem,
    loads,
    problems,
    random_split,
    send,
    write_config,
)

J = "journeys/j.toml"


def chain(count: int) -> str:
    """`count` delay steps, each leading to the next."""
    return "".join(
        delay(f"d{i}", next=f"d{i + 1}" if i + 1 < count else None) for i in range(count)
    )


# --- limits --------------------------------------------------------------------------------


def test_steps_limit_default_50(tmp_path: Path) -> None:
    """51 steps break the default limit of 50; 50 are fine."""
    assert len(loads(tmp_path / "ok", journey(chain(50))).journeys[0].steps) == 50
    problem = journey_problem(tmp_path / "bad", journey(chain(51)))
    assert_problem(problem, J, "steps", "at most 50 steps", "found 51", "limits.steps_per_journey")


def _hold_branches(count: int) -> list[str]:
    return [f'{{ name = "b{i}", event = "E{i}" }}' for i in range(count)]


def _split_branches(count: int) -> list[str]:
    return [
        f'{{ name = "b{i}", when = [{{ trait = "t{i}", op = "exists" }}] }}' for i in range(count)
    ]


@pytest.mark.parametrize(
    ("make", "limit"),
    [
        (lambda n: hold("s", _hold_branches(n)), 9),
        (lambda n: data_split("s", _split_branches(n)), 9),
        (
            lambda n: random_split(
                "s",
                [f'{{ name = "b{i}", percent = {100 // n + (i < 100 % n)} }}' for i in range(n)],
            ),
            5,
        ),
    ],
    ids=["hold_until", "data_split", "random_split"],
)
def test_branch_count_limits(tmp_path: Path, make, limit: int) -> None:
    """Hold and data-split steps take at most 9 branches, random splits at most 5."""
    loads(tmp_path / "ok", journey(make(limit)))
    problem = journey_problem(tmp_path / "bad", journey(make(limit + 1)))
    assert_problem(
        problem, J, "steps[0].branches", f"at most {limit} branches", f"found {limit + 1}"
    )


@pytest.mark.parametrize("kind", ["hold", "split"])
def test_step_without_branches(tmp_path: Path, kind: str) -> None:
    """A hold or split with an empty branch list is rejected."""
    body = hold("s", []) if kind == "hold" else data_split("s", [])
    body = body.replace("branches = [\n  ,\n]", "branches = []")
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(problem, J, "steps[0].branches", "at least one branch")


def test_random_split_percentages_must_total_100(tmp_path: Path) -> None:
    """Random-split percentages that do not add up to 100 are reported with their total."""
    body = random_split("s", ['{ name = "A", percent = 50 }', '{ name = "B", percent = 49 }'])
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(problem, J, "steps[0].branches", "must total 100", "total 99")


@pytest.mark.parametrize("percent", [0, 101, -1])
def test_random_split_percent_range(tmp_path: Path, percent: int) -> None:
    """Each percentage is between 1 and 100 (the total alone does not catch 0 or 101)."""
    body = random_split(
        "s",
        [f'{{ name = "A", percent = {percent} }}', f'{{ name = "B", percent = {100 - percent} }}'],
    )
    found = problems(write_config(tmp_path, {"j.toml": journey(body)}))
    out_of_range = [p for p in (percent, 100 - percent) if not 1 <= p <= 100]
    assert [(p.file, p.path, p.message) for p in found] == [
        (
            J,
            f"steps[0].branches[{[percent, 100 - percent].index(p)}].percent",
            "must be between 1 and 100",
        )
        for p in out_of_range
    ]


def test_random_split_one_branch_of_100(tmp_path: Path) -> None:
    """A single branch with 100 percent is a valid random split."""
    loads(tmp_path, journey(random_split("s", ['{ name = "all", percent = 100 }'])))


# --- names ---------------------------------------------------------------------------------

LONG = "x" * 74
MAX = "x" * 73


@pytest.mark.parametrize(
    ("make", "path"),
    [
        (lambda name: journey(id=name), "id"),
        (lambda name: journey(top=f'name = "{name}"'), "name"),
        (lambda name: journey(send(name)), "steps[0].id"),
        (lambda name: journey(send("s", extra=f'name = "{name}"')), "steps[0].name"),
        (
            lambda name: journey(hold("s", [f'{{ name = "{name}", event = "A" }}'])),
            "steps[0].branches[0].name",
        ),
        (
            lambda name: journey(
                data_split("s", [f'{{ name = "{name}", when = [{{ audience = "vip" }}] }}'])
            ),
            "steps[0].branches[0].name",
        ),
        (
            lambda name: journey(random_split("s", [f'{{ name = "{name}", percent = 100 }}'])),
            "steps[0].branches[0].name",
        ),
    ],
    ids=[
        "journey id",
        "journey name",
        "step id",
        "step name",
        "hold branch",
        "split branch",
        "random branch",
    ],
)
def test_names_at_most_73_chars(tmp_path: Path, make, path: str) -> None:
    """Journey, step and branch names and ids may have 73 characters but not 74."""
    loads(tmp_path / "ok", make(MAX))
    problem = journey_problem(tmp_path / "bad", make(LONG))
    assert_problem(problem, J, path, "at most 73 characters", "found 74")


def test_branch_names_unique_across_steps(tmp_path: Path) -> None:
    """Two branches anywhere in one journey may not share a name."""
    body = hold("h", ['{ name = "x", event = "A", next = "ds" }']) + data_split(
        "ds", ['{ name = "x", when = [{ audience = "vip" }] }']
    )
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(
        problem, J, "steps[1].branches[0].name", "duplicate branch name 'x'", "steps[0].branches[0]"
    )


def test_same_branch_name_in_two_journeys_is_fine(tmp_path: Path) -> None:
    """Branch-name uniqueness is per journey, not across journeys."""
    body = hold("h", ['{ name = "x", event = "A" }'])
    config = write_config(
        tmp_path, {"a.toml": journey(body, id="a"), "b.toml": journey(body, id="b")}
    )
    from journeyd.config import load

    assert [j.id for j in load(config).journeys] == ["a", "b"]


def test_duplicate_step_id_reported_at_second(tmp_path: Path) -> None:
    """A duplicate step id is reported at the second step and names the first."""
    problem = journey_problem(tmp_path, journey(send("a") + send("a")))
    assert_problem(problem, J, "steps[1].id", "duplicate step id 'a'", "(also steps[0])")


# --- entry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    ['event = "Cart Modified"\nrule = "re-enter"', 'event = "Cart Modified"'],
    ids=["explicit", "default rule"],
)
def test_reenter_requires_unique_identifier(tmp_path: Path, entry: str) -> None:
    """rule = "re-enter" (also the default) needs entry.unique_identifier."""
    problem = journey_problem(tmp_path, journey(entry=entry))
    assert_problem(
        problem, J, "entry.unique_identifier", 'required with rule = "re-enter"', 'rule = "once"'
    )


def test_reenter_with_unique_identifier_is_valid(tmp_path: Path) -> None:
    """re-enter with a unique identifier loads."""
    loads(tmp_path, journey(entry=REENTER))


def test_once_rejects_unique_identifier(tmp_path: Path) -> None:
    """rule = "once" with a unique_identifier is a mistake worth pointing out."""
    entry = 'event = "Signed Up"\nrule = "once"\nunique_identifier = "x"'
    problem = journey_problem(tmp_path, journey(entry=entry))
    assert_problem(problem, J, "entry.unique_identifier", 'only applies to rule = "re-enter"')


def test_entry_audience_must_exist(tmp_path: Path) -> None:
    """entry.audience names a defined audience; the message lists the known ones."""
    loads(tmp_path / "ok", journey(entry='event = "E"\nrule = "once"\naudience = "vip"'))
    problem = journey_problem(
        tmp_path / "bad", journey(entry='event = "E"\nrule = "once"\naudience = "vips"')
    )
    assert_problem(problem, J, "entry.audience", "unknown audience 'vips'", "known: vip")


# --- graph ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (delay("a", next="nope"), "steps[0].next"),
        (send("a", next="nope"), "steps[0].next"),
        (hold("a", ['{ name = "x", event = "A" }'], on_timeout="nope"), "steps[0].on_timeout"),
        (
            hold(
                "a", ['{ name = "x", event = "A" }', '{ name = "y", event = "B", next = "nope" }']
            ),
            "steps[0].branches[1].next",
        ),
        (
            data_split("a", ['{ name = "x", when = [{ audience = "vip" }] }'], else_="nope"),
            "steps[0].else",
        ),
        (
            data_split("a", ['{ name = "x", when = [{ audience = "vip" }], next = "nope" }']),
            "steps[0].branches[0].next",
        ),
        (
            random_split("a", ['{ name = "x", percent = 100, next = "nope" }']),
            "steps[0].branches[0].next",
        ),
    ],
    ids=["delay", "send", "on_timeout", "hold branch", "else", "split branch", "random branch"],
)
def test_every_target_names_an_existing_step(tmp_path: Path, body: str, path: str) -> None:
    """next, on_timeout, else and branch next must name a step of the journey."""
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(problem, J, path, "unknown step 'nope'", "known: a")


def test_unknown_target_path_uses_branch_index_with_duplicate_names(tmp_path: Path) -> None:
    """The unknown-target path points at the branch that says it, even if names repeat."""
    body = hold("a", ['{ name = "x", event = "A" }', '{ name = "x", event = "B", next = "nope" }'])
    found = problems(write_config(tmp_path, {"j.toml": journey(body)}))
    assert {p.path for p in found} == {"steps[0].branches[1].name", "steps[0].branches[1].next"}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (delay("a", next=""), "steps[0].next"),
        (hold("a", ['{ name = "x", event = "A" }'], on_timeout=""), "steps[0].on_timeout"),
        (
            data_split("a", ['{ name = "x", when = [{ audience = "vip" }], next = "" }']),
            "steps[0].branches[0].next",
        ),
    ],
    ids=["next", "on_timeout", "branch next"],
)
def test_empty_target_is_rejected(tmp_path: Path, body: str, path: str) -> None:
    """An empty step id is a typo, not a way to end the instance: say how to end it."""
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(problem, J, path, "must not be empty", "leave the key out")


def test_cycle_rejected(tmp_path: Path) -> None:
    """Steps that lead back to an earlier step form a cycle, shown step by step."""
    body = delay("a", next="b") + delay("b", next="c") + delay("c", next="a")
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(problem, J, "steps[0]", "cycle", "a -> b -> c -> a", "reset branch")


def test_hold_branch_next_to_its_own_step_is_a_cycle(tmp_path: Path) -> None:
    """A hold branch whose `next` is its own step loops without being a reset."""
    body = hold("h", ['{ name = "x", event = "A", next = "h" }'])
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(problem, J, "steps[0]", "cycle", "h -> h")


def test_reset_self_loop_is_allowed(tmp_path: Path) -> None:
    """A reset branch loops back to its own hold step, and that is no cycle."""
    body = hold(
        "h",
        [
            '{ name = "again", event = "A", reset = true }',
            '{ name = "done", event = "B", next = "s" }',
        ],
        on_timeout="s",
    ) + send("s")
    loads(tmp_path, journey(body))


def test_unreachable_step(tmp_path: Path) -> None:
    """A step no path from the first step reaches is reported."""
    body = delay("a", next="c") + send("b") + send("c")
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(problem, J, "steps[1]", "'b' cannot be reached from the first step")


def test_empty_steps(tmp_path: Path) -> None:
    """A journey needs at least one step."""
    text = 'id = "j"\nsteps = []\n[entry]\nevent = "E"\nrule = "once"\n'
    assert_problem(journey_problem(tmp_path, text), J, "steps", "at least one step")


# --- hold branches are mutually exclusive --------------------------------------------------


def _two(first: str, second: str) -> str:
    return hold(
        "h",
        [
            f'{{ name = "one", event = "A", filters = [{first}] }}'
            if first
            else '{ name = "one", event = "A" }',
            f'{{ name = "two", event = "A", filters = [{second}] }}'
            if second
            else '{ name = "two", event = "A" }',
        ],
    )


def f(op: str, value: str | None = None, prop: str = "p") -> str:
    val = f", value = {value}" if value is not None else ""
    return f'{{ property = "{prop}", op = "{op}"{val} }}'


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("", ""),
        (f("eq", '"a"'), ""),
        (f("eq", '"a"'), f("eq", '"a"')),
        (f("in", '["a", "b"]'), f("eq", '"a"')),
        (f("gte", "0"), f("lte", "0")),
        (f("gt", "0"), f("exists")),
        (f("eq", '"a"'), f("eq", '"b"', prop="q")),
        (f("eq", "1"), f("eq", "1.0")),
        (f("neq", '"a"'), f("not_exists")),
    ],
    ids=[
        "no filters",
        "one unfiltered",
        "same eq",
        "in vs eq inside",
        "gte vs lte touch",
        "gt vs exists",
        "different properties",
        "1 vs 1.0",
        "neq vs not_exists",
    ],
)
def test_overlapping_hold_branches_rejected(tmp_path: Path, first: str, second: str) -> None:
    """Two branches on one event that an event could both match are an error."""
    problem = journey_problem(tmp_path, journey(_two(first, second)))
    assert_problem(
        problem, J, "steps[0].branches[1]", "overlaps branch 'one'", "'A'", "add filters"
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (f("eq", '"a"'), f("eq", '"b"')),
        (f("gt", "0"), f("lte", "0")),
        (f("gt", "5"), f("lt", "3")),
        (f("exists"), f("not_exists")),
        (f("in", '["a", "b"]'), f("in", '["c"]')),
        (f("in", '["a", "b"]'), f("not_in", '["a", "b", "c"]')),
        (f("eq", "true"), f("eq", "1")),
        (f("eq", '"a"'), f("not_exists")),
        (f("eq", "10"), f("lt", "5")),
    ],
    ids=[
        "eq a vs eq b",
        "gt 0 vs lte 0",
        "gt 5 vs lt 3",
        "exists vs not_exists",
        "in ab vs in c",
        "in vs not_in",
        "true vs 1",
        "eq vs not_exists",
        "eq 10 vs lt 5",
    ],
)
def test_exclusive_hold_branches_accepted(tmp_path: Path, first: str, second: str) -> None:
    """Branches on one event whose filters contradict each other are fine."""
    loads(tmp_path, journey(_two(first, second)))


def test_hold_branches_on_different_events_never_overlap(tmp_path: Path) -> None:
    """Unfiltered branches on different events are exclusive by their event names."""
    loads(
        tmp_path, journey(hold("h", ['{ name = "a", event = "A" }', '{ name = "b", event = "B" }']))
    )


# --- destinations and audiences ------------------------------------------------------------


def test_send_destination_must_exist(tmp_path: Path) -> None:
    """A send step names a configured destination; the message lists the known ones."""
    body = send("s").replace('"outbox"', '"outbx"')
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(
        problem, J, "steps[0].destination", "unknown destination 'outbx'", "known: outbox"
    )


def test_destination_message_when_none_defined(tmp_path: Path) -> None:
    """With no destinations configured the message says so."""
    problem = journey_problem(tmp_path, journey(), settings="")
    assert_problem(
        problem, J, "steps[0].destination", "unknown destination 'outbox'", "none defined"
    )


def test_exit_send_destination_must_exist(tmp_path: Path) -> None:
    """[exit_send].destination names a configured destination."""
    text = journey(
        '[[exit]]\nevent = "X"\nsend = true\n\n[exit_send]\ndestination = "nowhere"\n'
        'event_name = "Bye"\n\n' + send("s")
    )
    problem = journey_problem(tmp_path, text)
    assert_problem(problem, J, "exit_send.destination", "unknown destination 'nowhere'")


@pytest.mark.parametrize("kind", ["audience", "not_audience"])
def test_data_split_audience_must_exist(tmp_path: Path, kind: str) -> None:
    """Data-split audience and not_audience conditions name a defined audience."""
    ok = data_split("s", [f'{{ name = "a", when = [{{ {kind} = "vip" }}] }}'])
    loads(tmp_path / "ok", journey(ok))
    bad = data_split("s", [f'{{ name = "a", when = [{{ {kind} = "gold" }}] }}'])
    problem = journey_problem(tmp_path / "bad", journey(bad))
    assert_problem(problem, J, f"steps[0].branches[0].when[0].{kind}", "unknown audience 'gold'")


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (delay("d", duration="soon"), "steps[0].duration"),
        (delay("d", duration="2 hours"), "steps[0].duration"),
        (delay("d", duration=""), "steps[0].duration"),
        (hold("h", ['{ name = "a", event = "A" }'], max_duration="5"), "steps[0].max_duration"),
    ],
)
def test_durations_must_parse(tmp_path: Path, body: str, path: str) -> None:
    """A duration that does not parse is reported with the accepted form."""
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(problem, J, path, "invalid duration", '"30s"', '"1h30m"')


@pytest.mark.parametrize("duration", ["1s", "5m", "365d", "52w1d"])
def test_durations_within_default_bounds(tmp_path: Path, duration: str) -> None:
    """Between limits.min_duration (1s) and limits.instance_lifetime (365d) inclusive."""
    loads(tmp_path, journey(delay("d", duration=duration)))


def test_duration_below_min(tmp_path: Path) -> None:
    """0s is below the default min_duration of 1s."""
    problem = journey_problem(tmp_path, journey(delay("d", duration="0s")))
    assert_problem(problem, J, "steps[0].duration", "at least 1s", "limits.min_duration")


def test_duration_above_lifetime(tmp_path: Path) -> None:
    """366d is beyond the default instance_lifetime of 365d."""
    body = hold("h", ['{ name = "a", event = "A" }'], max_duration="366d")
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(problem, J, "steps[0].max_duration", "at most", "limits.instance_lifetime")


def test_duration_bounds_follow_the_limits(tmp_path: Path) -> None:
    """limits.min_duration and limits.instance_lifetime move the accepted range."""
    settings = SETTINGS + '\n[limits]\nmin_duration = "5m"\ninstance_lifetime = "1d"\n'
    loads(
        tmp_path / "ok",
        journey(delay("a", duration="5m", next="b") + delay("b", duration="1d")),
        settings=settings,
    )
    found = problems(
        write_config(
            tmp_path / "bad",
            {"j.toml": journey(delay("a", duration="4m", next="b") + delay("b", duration="25h"))},
            settings=settings,
        )
    )
    assert [(p.path, p.message) for p in found] == [
        ("steps[0].duration", "must be at least 5m (limits.min_duration)"),
        ("steps[1].duration", "must be at most 1d (limits.instance_lifetime)"),
    ]


# --- exit rules ----------------------------------------------------------------------------


def _exits(count: int) -> str:
    return "".join(f'[[exit]]\nevent = "Stop {i}"\n\n' for i in range(count))


def test_exit_rules_at_most_10(tmp_path: Path) -> None:
    """Ten exit rules are fine, eleven are not."""
    loads(tmp_path / "ok", journey(_exits(10) + send("s")))
    problem = journey_problem(tmp_path / "bad", journey(_exits(11) + send("s")))
    assert_problem(problem, J, "exit", "at most 10 exit rules", "found 11")


def test_match_identifier_needs_unique_identifier(tmp_path: Path) -> None:
    """match_identifier makes no sense without entry.unique_identifier."""
    problem = journey_problem(
        tmp_path, journey('[[exit]]\nevent = "X"\nmatch_identifier = true\n\n' + send("s"))
    )
    assert_problem(problem, J, "exit[0].match_identifier", "needs entry.unique_identifier")
    loads(
        tmp_path / "ok",
        journey('[[exit]]\nevent = "X"\nmatch_identifier = true\n\n' + send("s"), entry=REENTER),
    )


def test_exit_send_true_needs_exit_send(tmp_path: Path) -> None:
    """An exit rule with send = true needs an [exit_send] table."""
    problem = journey_problem(
        tmp_path, journey('[[exit]]\nevent = "X"\nsend = true\n\n' + send("s"))
    )
    assert_problem(problem, J, "exit[0].send", "needs an [exit_send] table")


def test_exit_send_without_a_send_rule(tmp_path: Path) -> None:
    """An [exit_send] that no exit rule triggers would never fire."""
    text = journey(
        '[[exit]]\nevent = "X"\n\n[exit_send]\ndestination = "outbox"\nevent_name = "Bye"\n\n'
        + send("s")
    )
    assert_problem(journey_problem(tmp_path, text), J, "exit_send", "no exit rule sets send = true")


def test_exit_send_complete_is_valid(tmp_path: Path) -> None:
    """An exit rule with send = true and an [exit_send] load together."""
    text = journey(exit_send('traits = ["email"]') + send("s"))
    assert loads(tmp_path, text).journeys[0].exit_send is not None


@pytest.mark.parametrize("where", ["send", "exit_send"])
def test_reserved_traits(tmp_path: Path, where: str) -> None:
    """A trait may not be named like the payload's own journey_context/journey_metadata."""
    if where == "send":
        text, path = (
            journey(send("s", extra='traits = ["email", "journey_context"]')),
            "steps[0].traits[1]",
        )
    else:
        text = journey(exit_send('traits = ["journey_metadata"]') + send("s"))
        path = "exit_send.traits[0]"
    assert_problem(journey_problem(tmp_path, text), J, path, "reserved")


# --- journey context -----------------------------------------------------------------------


def test_context_condition_key_never_in_context(tmp_path: Path) -> None:
    """A context condition on an event no path captures before the split is an error."""
    body = data_split(
        "ds",
        ['{ name = "a", when = [{ context = "Plan Chosen", property = "plan", op = "exists" }] }'],
    )
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(
        problem,
        J,
        "steps[0].branches[0].when[0].context",
        "'Plan Chosen' is never in journey context",
        "Signed Up",
    )


def test_context_condition_on_entry_and_capture(tmp_path: Path) -> None:
    """The entry event and an earlier hold's capture (plain or aliased) are in context."""
    body = hold(
        "h",
        [
            '{ name = "chose", event = "Plan Chosen", next = "ds" }',
            '{ name = "again", event = "Signed Up", next = "ds" }',
        ],
    ) + data_split(
        "ds",
        [
            '{ name = "a", when = [{ context = "Signed Up", property = "seats", op = "gt", '
            "value = 1 }] }",
            '{ name = "b", when = [{ context = "Plan Chosen", property = "plan", '
            'op = "exists" }] }',
            '{ name = "c", when = [{ context = "Signed Up - again", property = "plan", '
            'op = "exists" }] }',
        ],
    )
    loads(tmp_path, journey(body))


def test_context_capture_only_downstream(tmp_path: Path) -> None:
    """A hold's capture is not in context at a split reached only by the timeout path."""
    body = hold("h", ['{ name = "chose", event = "Plan Chosen" }'], on_timeout="ds") + data_split(
        "ds",
        ['{ name = "a", when = [{ context = "Plan Chosen", property = "plan", op = "exists" }] }'],
    )
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(problem, J, "steps[1].branches[0].when[0].context", "'Plan Chosen'")


# --- operators and values ------------------------------------------------------------------

FILTER_PLACES = {
    "entry": (
        lambda flt: journey(entry=f'event = "E"\nrule = "once"\nfilters = [{flt}]'),
        "entry.filters[0]",
    ),
    "hold branch": (
        lambda flt: journey(hold("h", [f'{{ name = "a", event = "A", filters = [{flt}] }}'])),
        "steps[0].branches[0].filters[0]",
    ),
    "exit": (
        lambda flt: journey(f'[[exit]]\nevent = "X"\nfilters = [{flt}]\n\n' + send("s")),
        "exit[0].filters[0]",
    ),
    "condition": (
        lambda flt: journey(
            data_split("ds", [f'{{ name = "a", when = [{flt.replace("property", "trait")}] }}'])
        ),
        "steps[0].branches[0].when[0]",
    ),
}


@pytest.mark.parametrize("place", list(FILTER_PLACES))
@pytest.mark.parametrize(
    ("flt", "message"),
    [
        (f("exists", '"x"'), "op 'exists' takes no value"),
        (f("not_exists", "1"), "op 'not_exists' takes no value"),
        (f("in", '"a"'), "op 'in' needs an array"),
        (f("not_in", "3"), "op 'not_in' needs an array"),
        (f("gt", "true"), "op 'gt' needs a number or a string"),
        (f("lte", "[1]"), "op 'lte' needs a number or a string"),
        (f("eq"), "required with op 'eq'"),
        (f("contains"), "required with op 'contains'"),
    ],
)
def test_op_value_rules(tmp_path: Path, place: str, flt: str, message: str) -> None:
    """Each operator gets the value it needs, in filters and in trait conditions alike."""
    make, path = FILTER_PLACES[place]
    assert_problem(journey_problem(tmp_path, make(flt)), J, f"{path}.value", message)


@pytest.mark.parametrize("place", list(FILTER_PLACES))
@pytest.mark.parametrize(
    "flt",
    [
        f("exists"),
        f("in", '["a", 1]'),
        f("gt", "1.5"),
        f("gte", '"2026-01-01"'),
        f("eq", "false"),
        f("contains", '"x"'),
    ],
)
def test_op_value_accepted(tmp_path: Path, place: str, flt: str) -> None:
    """Well-formed op/value pairs load everywhere filters are allowed."""
    make, _ = FILTER_PLACES[place]
    loads(tmp_path, make(flt))


@pytest.mark.parametrize(
    ("cond", "path", "message"),
    [
        (
            '{ op = "exists" }',
            "",
            "exactly one of trait, audience, not_audience or context (found none)",
        ),
        ('{ trait = "t", audience = "vip", op = "exists" }', "", "(found trait, audience)"),
        (
            '{ audience = "vip", op = "exists" }',
            "",
            "audience conditions take no property, op or value",
        ),
        (
            '{ not_audience = "vip", value = 1 }',
            "",
            "not_audience conditions take no property, op or value",
        ),
        ('{ context = "Signed Up", op = "exists" }', ".property", "required with context"),
        ('{ trait = "t", property = "p", op = "exists" }', ".property", "drop `property`"),
        ('{ trait = "t" }', ".op", "required"),
    ],
)
def test_condition_kinds(tmp_path: Path, cond: str, path: str, message: str) -> None:
    """A data-split condition says exactly one kind, with the keys that kind takes."""
    body = data_split("ds", [f'{{ name = "a", when = [{cond}] }}'])
    problem = journey_problem(tmp_path, journey(body))
    assert_problem(problem, J, f"steps[0].branches[0].when[0]{path}", message)


def test_data_split_branch_needs_conditions(tmp_path: Path) -> None:
    """A data-split branch with an empty `when` points at `else`."""
    problem = journey_problem(tmp_path, journey(data_split("ds", ['{ name = "a", when = [] }'])))
    assert_problem(problem, J, "steps[0].branches[0].when", "at least one condition", "else")
