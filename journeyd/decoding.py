"""Decode raw TOML tables into msgspec structs, collecting *every* shape error at once.

msgspec stops at the first error it meets. Users fixing a config want the whole list, so
this walks the target type itself (structs, lists, dicts, tagged unions) and only hands
leaves to msgspec, turning each failure into a `(path, message)` in our own words.
"""

from __future__ import annotations

import datetime
import re
import types
import typing
from typing import Any, TypeVar, get_args, get_origin

import msgspec

T = TypeVar("T")

_KIND_NAMES = {
    dict: "a table",
    list: "an array",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    datetime.datetime: "a date-time",
    datetime.date: "a date",
    datetime.time: "a time",
}


def describe(value: object) -> str:
    """How a TOML value reads to a user: 'a string', 'an array'..."""
    return _KIND_NAMES.get(type(value), type(value).__name__)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def convert(raw: Any, target: type[T]) -> tuple[T | None, list[tuple[str, str]]]:
    """Return the decoded value and no problems, or None and every problem found."""
    problems: list[tuple[str, str]] = []
    _walk(raw, target, "", problems)
    if problems:
        return None, problems
    try:
        return msgspec.convert(raw, target), []
    except msgspec.ValidationError as exc:  # a rule the walk does not model; still say where
        return None, [_from_msgspec(str(exc), "", raw)]


def _walk(raw: Any, target: Any, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(target, type) and issubclass(target, msgspec.Struct):
        _walk_struct(raw, target, path, out)
        return
    origin = get_origin(target)
    if origin is list:
        if not isinstance(raw, list):
            out.append((path, f"expected an array, got {describe(raw)}"))
            return
        (item,) = get_args(target)
        for index, value in enumerate(raw):
            _walk(value, item, join(path, index), out)
        return
    if origin is dict:
        if not isinstance(raw, dict):
            out.append((path, f"expected a table, got {describe(raw)}"))
            return
        _, item = get_args(target)
        for key, value in raw.items():
            _walk(value, item, join(path, key), out)
        return
    if origin in (typing.Union, types.UnionType):
        arms = [t for t in get_args(target) if t is not type(None)]
        tagged = [
            t
            for t in arms
            if isinstance(t, type) and issubclass(t, msgspec.Struct) and t.__struct_config__.tag
        ]
        if tagged:
            _walk_tagged(raw, tagged, path, out)
            return
        if len(arms) == 1 and len(arms) < len(get_args(target)):
            # `X | None`: TOML has no null, so a present key must be an X. Walk X itself so
            # an optional table (e.g. [exit_send]) gets the same messages as a required one.
            if raw is not None:
                _walk(raw, arms[0], path, out)
            return
    _leaf(raw, target, path, out)


def _walk_struct(
    raw: Any, cls: type[msgspec.Struct], path: str, out: list[tuple[str, str]]
) -> None:
    if not isinstance(raw, dict):
        out.append((path, f"expected a table, got {describe(raw)}"))
        return
    fields = msgspec.structs.fields(cls)
    known = {f.encode_name: f for f in fields}
    tag_field = cls.__struct_config__.tag_field
    expected = ", ".join(sorted([*known, tag_field] if tag_field else known))
    for key in raw:
        if key not in known and key != tag_field:
            out.append((join(path, key), f"unknown key (expected one of: {expected})"))
    for field in fields:
        if field.encode_name in raw:
            _walk(raw[field.encode_name], field.type, join(path, field.encode_name), out)
        elif field.required:
            out.append((join(path, field.encode_name), "required"))


def _walk_tagged(
    raw: Any, classes: list[type[msgspec.Struct]], path: str, out: list[tuple[str, str]]
) -> None:
    if not isinstance(raw, dict):
        out.append((path, f"expected a table, got {describe(raw)}"))
        return
    tag_field = classes[0].__struct_config__.tag_field
    assert tag_field is not None
    by_tag = {cls.__struct_config__.tag: cls for cls in classes}
    expected = ", ".join(str(tag) for tag in by_tag)
    tag = raw.get(tag_field)
    if tag is None:
        out.append((join(path, tag_field), f"required (one of: {expected})"))
    elif not isinstance(tag, str):
        out.append(
            (join(path, tag_field), f"expected a string (one of: {expected}), got {describe(tag)}")
        )
    elif tag not in by_tag:
        out.append(
            (join(path, tag_field), f"unknown {tag_field} {tag!r} (expected one of: {expected})")
        )
    else:
        _walk_struct(raw, by_tag[tag], path, out)


def _leaf(raw: Any, target: Any, path: str, out: list[tuple[str, str]]) -> None:
    try:
        msgspec.convert(raw, target)
    except msgspec.ValidationError as exc:
        out.append(_from_msgspec(str(exc), path, raw, target))


_EXPECTED = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_TYPE_WORDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "object": "a table",
    "array": "an array",
    "date": "a date",
    "datetime": "a date-time",
    "time": "a time",
}
_AT = re.compile(r" - at `\$(?P<sub>[^`]*)`$")


def _from_msgspec(message: str, path: str, raw: Any, target: Any = None) -> tuple[str, str]:
    """Reword a msgspec error ("Expected `str`, got `int` - at `$.x`") for a config user."""
    match = _AT.search(message)
    if match:
        message = message[: match.start()]
        sub = match.group("sub")
        path = path + sub if sub.startswith("[") or not path else f"{path}{sub}"
        path = path.lstrip(".")
    literal = _literal_values(target)
    if message.startswith(("Invalid value", "Invalid enum value")) and literal:
        return path, f"invalid value {raw!r} (expected one of: {', '.join(map(str, literal))})"
    if "of length >= 1" in message:
        return path, "must not be empty"
    expected = _EXPECTED.match(message)
    if expected:
        # TOML has no null, so "or null" would only confuse: an optional key is left out.
        wants = [w for w in expected["want"].split(" | ") if w != "null"] or ["null"]
        want = " or ".join(_TYPE_WORDS.get(w, w) for w in wants)
        got = _TYPE_WORDS.get(expected["got"], expected["got"])
        return path, f"expected {want}, got {got}"
    message = message.replace("`", "")
    return path, message[:1].lower() + message[1:]


def _literal_values(target: Any) -> tuple[Any, ...]:
    if target is None:
        return ()
    if get_origin(target) is typing.Literal:
        return get_args(target)
    values: list[Any] = []
    for arg in get_args(target):
        values.extend(_literal_values(arg))
    return tuple(values)
