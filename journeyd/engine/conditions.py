"""Operators and property paths: how filters and split conditions test a value.

Semantics worth knowing (also in the README):
- `eq`/`in` never confuse booleans with numbers (`true` is not `1`), but `1` equals `1.0`.
- `gt`/`gte`/`lt`/`lte` compare two numbers or two strings (ISO timestamps order well);
  anything else does not match.
- `neq` and `not_in` match when the property is missing; `exists` needs a non-null value.
- `contains` tests a substring of a string, or an element of an array.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

MISSING: Final = object()

Path = tuple[str, ...]


def split_path(text: str) -> Path:
    return tuple(text.split("."))


def lookup(data: Any, path: Path) -> Any:
    """Follow a dotted path through tables and arrays (`items.0.sku`); MISSING if absent."""
    if len(path) == 1:
        if type(data) is dict or isinstance(data, Mapping):
            return data.get(path[0], MISSING)
        return MISSING
    if isinstance(data, Mapping) and ".".join(path) in data:
        return data[".".join(path)]  # a key that itself contains dots
    for part in path:
        if isinstance(data, Mapping):
            data = data.get(part, MISSING)
        elif isinstance(data, list) and part.isdigit():
            index = int(part)
            data = data[index] if index < len(data) else MISSING
        else:
            return MISSING
        if data is MISSING:
            return MISSING
    return data


def _equal(actual: Any, expected: Any) -> bool:
    return (type(actual) is bool) == (type(expected) is bool) and actual == expected


def _ordered(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        return True
    return (
        isinstance(actual, int | float)
        and isinstance(expected, int | float)
        and type(actual) is not bool
        and type(expected) is not bool
    )


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str):
        return isinstance(expected, str) and expected in actual
    if isinstance(actual, list):
        return any(_equal(item, expected) for item in actual)
    return False


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, e: a is not MISSING and _equal(a, e),
    "neq": lambda a, e: a is MISSING or not _equal(a, e),
    "in": lambda a, e: a is not MISSING and any(_equal(a, v) for v in e),
    "not_in": lambda a, e: a is MISSING or not any(_equal(a, v) for v in e),
    "gt": lambda a, e: _ordered(a, e) and a > e,
    "gte": lambda a, e: _ordered(a, e) and a >= e,
    "lt": lambda a, e: _ordered(a, e) and a < e,
    "lte": lambda a, e: _ordered(a, e) and a <= e,
    "contains": _contains,
    "exists": lambda a, _e: a is not MISSING and a is not None,
    "not_exists": lambda a, _e: a is MISSING or a is None,
}


def test(op: str, actual: Any, expected: Any) -> bool:
    return _OPS[op](actual, expected)


class Test:
    """A compiled `{ property, op, value }`: the path split once, the operator looked up once."""

    __slots__ = ("_fn", "expected", "op", "path")

    def __init__(self, path: str, op: str, expected: Any) -> None:
        self.path = split_path(path)
        self.op = op
        self.expected = expected
        self._fn = _OPS[op]

    def __call__(self, data: Any) -> bool:
        return self._fn(lookup(data, self.path), self.expected)


def all_match(tests: tuple[Test, ...], data: Any) -> bool:
    for t in tests:  # noqa: SIM110 - a plain loop; all() with a generator is slower here
        if not t._fn(lookup(data, t.path), t.expected):
            return False
    return True


def identifier_value(value: Any) -> str | None:
    """The unique-identifier value as a string: strings as they are, integers spelled out.

    Other types (null, booleans, floats, arrays) cannot identify an instance reliably.
    """
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
