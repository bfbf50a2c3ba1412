"""Operators, property paths and identifier values (journeyd.engine.conditions)."""

from __future__ import annotations

from typing import Any

import pytest
from engine_helpers import Run, kinds, make_engine

from journeyd.engine import conditions
from journeyd.engine.conditions import MISSING, all_match, identifier_value, lookup, split_path

Cond = conditions.Test  # not named Test*, so pytest does not try to collect it
op_test = conditions.test

# (op, actual, expected, result); MISSING stands for "the property is absent".
CASES: list[tuple[str, Any, Any, bool]] = [
    # eq
    ("eq", "gold", "gold", True),
    ("eq", "gold", "silver", False),
    ("eq", 1, 1.0, True),
    ("eq", 1.0, 1, True),
    ("eq", True, 1, False),
    ("eq", 1, True, False),
    ("eq", False, 0, False),
    ("eq", 0, False, False),
    ("eq", True, True, True),
    ("eq", "1", 1, False),
    ("eq", MISSING, "gold", False),
    ("eq", None, None, True),
    ("eq", None, 0, False),
    # neq
    ("neq", "gold", "silver", True),
    ("neq", "gold", "gold", False),
    ("neq", 1, 1.0, False),
    ("neq", True, 1, True),
    ("neq", MISSING, "gold", True),
    # in
    ("in", "b", ["a", "b"], True),
    ("in", "c", ["a", "b"], False),
    ("in", 2, [1.0, 2.0], True),
    ("in", True, [1, 2], False),
    ("in", 1, [True], False),
    ("in", MISSING, ["a"], False),
    ("in", "a", [], False),
    # not_in
    ("not_in", "c", ["a", "b"], True),
    ("not_in", "a", ["a", "b"], False),
    ("not_in", True, [1], True),
    ("not_in", MISSING, ["a"], True),
    # gt / gte / lt / lte on numbers
    ("gt", 5, 4, True),
    ("gt", 4, 4, False),
    ("gt", 4.5, 4, True),
    ("gte", 4, 4, True),
    ("gte", 3.99, 4, False),
    ("lt", 3, 4, True),
    ("lt", 4, 4, False),
    ("lte", 4, 4.0, True),
    ("lte", 5, 4, False),
    # ... on strings (ISO timestamps order well)
    ("gt", "2026-03-02T00:00:00Z", "2026-03-01T23:59:59Z", True),
    ("lt", "2026-03-02T00:00:00Z", "2026-03-01T23:59:59Z", False),
    ("gte", "b", "b", True),
    ("lte", "a", "b", True),
    # ... and never across types, booleans or missing values
    ("gt", "5", 4, False),
    ("lt", 4, "5", False),
    ("gt", True, 0, False),
    ("gte", 1, True, False),
    ("lt", False, 1, False),
    ("gt", None, 0, False),
    ("lt", None, 0, False),
    ("gt", MISSING, 0, False),
    ("lte", MISSING, 0, False),
    ("gt", [5], 4, False),
    # contains
    ("contains", "hello world", "lo w", True),
    ("contains", "hello", "xyz", False),
    ("contains", "hello", 1, False),
    ("contains", ["a", "b"], "b", True),
    ("contains", ["a", "b"], "c", False),
    ("contains", [1, 2], 2.0, True),
    ("contains", [1, 2], True, False),
    ("contains", [True], 1, False),
    ("contains", 12345, 23, False),
    ("contains", {"a": 1}, "a", False),
    ("contains", MISSING, "a", False),
    ("contains", None, "a", False),
    # exists / not_exists (no value)
    ("exists", "x", None, True),
    ("exists", 0, None, True),
    ("exists", False, None, True),
    ("exists", "", None, True),
    ("exists", [], None, True),
    ("exists", None, None, False),
    ("exists", MISSING, None, False),
    ("not_exists", MISSING, None, True),
    ("not_exists", None, None, True),
    ("not_exists", 0, None, False),
    ("not_exists", "", None, False),
]


@pytest.mark.parametrize(("op", "actual", "expected", "result"), CASES)
def test_operator_semantics(op: str, actual: Any, expected: Any, result: bool) -> None:
    """Each operator's documented truth table, incl. bool/number strictness and missing values."""
    assert op_test(op, actual, expected) is result


@pytest.mark.parametrize(("op", "actual", "expected", "result"), CASES)
def test_compiled_test_reads_a_property(op: str, actual: Any, expected: Any, result: bool) -> None:
    """A compiled `Test` on a property gives the same answer as the bare operator."""
    data = {} if actual is MISSING else {"p": actual}
    assert Cond("p", op, expected)(data) is result


def test_every_documented_operator_is_covered() -> None:
    """The truth table above exercises all eleven operators DESIGN.md lists."""
    documented = {
        "eq",
        "neq",
        "in",
        "not_in",
        "gt",
        "gte",
        "lt",
        "lte",
        "contains",
        "exists",
        "not_exists",
    }
    assert {case[0] for case in CASES} == documented


ORDER = {
    "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
    "address": {"city": {"name": "Lyon"}},
    "a.b": "literal dotted key",
    "n": None,
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("items.0.sku", "A-1"),
        ("items.1.qty", 1),
        ("address.city.name", "Lyon"),
        ("address.city", {"name": "Lyon"}),
        ("a.b", "literal dotted key"),
        ("n", None),
        ("items.2.sku", MISSING),
        ("items.x", MISSING),
        ("items.-1.sku", MISSING),
        ("address.zip", MISSING),
        ("address.city.name.first", MISSING),
        ("nothing", MISSING),
        ("n.deeper", MISSING),
    ],
)
def test_dotted_paths(path: str, value: Any) -> None:
    """Dotted paths walk tables and array indexes; anything absent is MISSING, not an error."""
    found = lookup(ORDER, split_path(path))
    if value is MISSING:
        assert found is MISSING
    else:
        assert found == value


def test_lookup_on_non_mapping_is_missing() -> None:
    """A path into something that is not a table (a string, null) is simply missing."""
    assert lookup("text", split_path("a")) is MISSING
    assert lookup(None, split_path("a.b")) is MISSING


def test_all_match_is_an_and() -> None:
    """Several filters combine with AND; an empty filter list matches everything."""
    tests = (Cond("total", "gt", 0), Cond("items.0.sku", "eq", "A-1"))
    assert all_match(tests, {"total": 5, **ORDER})
    assert not all_match(tests, {"total": 0, **ORDER})
    assert not all_match(tests, {"total": 5})
    assert all_match((), {})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("c-1", "c-1"),
        (42, "42"),
        (0, "0"),
        ("", None),
        (None, None),
        (True, None),
        (1.5, None),
        (["c-1"], None),
        (MISSING, None),
    ],
)
def test_identifier_value(value: Any, expected: str | None) -> None:
    """Only non-empty strings and integers can identify an instance; bools and floats cannot."""
    assert identifier_value(value) == expected


# --- the same semantics seen through the engine ------------------------------------------

FILTERED = """
id = "filtered"
[entry]
event = "Order Placed"
rule = "once"
filters = [
  { property = "items.0.sku", op = "eq", value = "A-1" },
  { property = "gift", op = "eq", value = true },
  { property = "total", op = "gte", value = 10 },
]
[[steps]]
id = "done"
type = "send"
destination = "outbox"
event_name = "Thanks"
"""


@pytest.mark.parametrize(
    ("properties", "enters"),
    [
        ({"items": [{"sku": "A-1"}], "gift": True, "total": 10}, True),
        ({"items": [{"sku": "A-1"}], "gift": True, "total": 10.5}, True),
        ({"items": [{"sku": "B-2"}, {"sku": "A-1"}], "gift": True, "total": 10}, False),
        ({"items": [{"sku": "A-1"}], "gift": 1, "total": 10}, False),
        ({"items": [{"sku": "A-1"}], "gift": True, "total": "10"}, False),
        ({"items": [{"sku": "A-1"}], "gift": True}, False),
        ({"items": [], "gift": True, "total": 10}, False),
        ({"gift": True, "total": 10}, False),
        (None, False),
    ],
)
def test_entry_filters_use_paths_and_strict_types(
    properties: dict[str, Any] | None, enters: bool
) -> None:
    """Entry filters: dotted paths, `true` is not `1`, "10" is not 10, a missing property fails."""
    run = Run(make_engine(FILTERED))
    out = run.track("u1", "Order Placed", properties)
    assert ("enter" in kinds(out)) is enters
