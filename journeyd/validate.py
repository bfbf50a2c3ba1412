"""Semantic rules for settings and journeys, beyond what the struct shapes already enforce.

Each check appends `(path, message)` pairs; nothing stops at the first problem, so `check`
can show the user everything that is wrong in one run.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

import msgspec

from journeyd.durations import format_duration, parse_duration
from journeyd.journey_graph import context_keys, edges, find_cycle, reachable
from journeyd.model import (
    LIST_OPS,
    VALUELESS_OPS,
    Condition,
    DataSplit,
    Delay,
    Filter,
    HoldBranch,
    HoldUntil,
    Journey,
    RandomSplit,
    Send,
)
from journeyd.settings import FunctionDestination, Settings, WebhookDestination

Found = list[tuple[str, str]]
EXIT_SEND_STEP = "exit"  # the step id deliveries of [exit_send] carry
RESERVED_PROPERTIES = frozenset({"journey_context", "journey_metadata"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FUNCTION_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_ORDERED_OPS = frozenset({"gt", "gte", "lt", "lte"})


def parse_listen_address(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` to (host, port); ValueError says what form is expected.

    Port 0 asks the kernel for a free port (the daemon logs the one it got).
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"invalid address {text!r}: use host:port, e.g. 127.0.0.1:8787")
    return host.strip("[]"), int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- settings ------------------------------------------------------------------------------


def check_settings(settings: Settings) -> Found:
    found: Found = []
    daemon = settings.daemon
    if daemon.http:
        try:
            host, _ = parse_listen_address(daemon.http)
        except ValueError as exc:
            found.append(("daemon.http", str(exc)))
        else:
            if not daemon.write_keys and not is_loopback(host):
                found.append(
                    (
                        "daemon.write_keys",
                        "must not be empty when daemon.http listens beyond loopback "
                        f"({daemon.http}); add a key or bind to 127.0.0.1",
                    )
                )
    for index, key in enumerate(daemon.write_keys):
        if not key:
            found.append((f"daemon.write_keys[{index}]", "must not be empty"))
    if not daemon.state_dir:
        found.append(("daemon.state_dir", "must not be empty"))
    _duration(daemon.snapshot_every, "daemon.snapshot_every", found)
    for name in ("snapshot_after_records", "wal_segment_mb"):
        if getattr(daemon, name) < 1:
            found.append((f"daemon.{name}", "must be at least 1"))
    if not daemon.journeys_dir:
        found.append(("daemon.journeys_dir", "must not be empty"))

    ingest = settings.ingest
    for name, value in msgspec.structs.asdict(ingest).items():
        if isinstance(value, int) and value < 1:
            found.append((f"ingest.{name}", "must be at least 1"))
    _duration(ingest.dedup_window, "ingest.dedup_window", found)
    if 0 < ingest.queue < ingest.max_batch_events:
        found.append(
            (
                "ingest.queue",
                f"must hold at least one whole batch (ingest.max_batch_events = "
                f"{ingest.max_batch_events}); found {ingest.queue}",
            )
        )
    if ingest.max_event_bytes > ingest.max_batch_bytes:
        found.append(("ingest.max_event_bytes", "must not exceed ingest.max_batch_bytes"))

    limits = msgspec.structs.asdict(settings.limits)
    for name, value in limits.items():
        if isinstance(value, int) and value < 1:
            found.append((f"limits.{name}", "must be at least 1"))
    _duration(settings.limits.instance_lifetime, "limits.instance_lifetime", found)
    _duration(settings.limits.min_duration, "limits.min_duration", found)
    floor = _seconds(settings.limits.min_duration)
    lifetime = _seconds(settings.limits.instance_lifetime)
    if floor is not None and lifetime is not None and floor > lifetime:
        found.append(
            (
                "limits.min_duration",
                f"{settings.limits.min_duration!r} is longer than limits.instance_lifetime "
                f"({settings.limits.instance_lifetime!r}), so no delay or hold could be valid",
            )
        )

    delivery = settings.delivery
    for name in ("queue", "max_attempts"):
        if getattr(delivery, name) < 1:
            found.append((f"delivery.{name}", "must be at least 1"))
    _duration(delivery.timeout, "delivery.timeout", found)

    for name, dest in settings.destinations.items():
        path = f"destinations.{name}"
        for field in ("api_key_env", "site_id_env", "secret_env"):
            value = getattr(dest, field, None)
            if value is not None and not _ENV_NAME.fullmatch(value):
                found.append(
                    (
                        f"{path}.{field}",
                        f"{value!r} is not an environment variable name (use letters, digits "
                        'and _, not starting with a digit, e.g. "BRAZE_API_KEY")',
                    )
                )
        if isinstance(dest, WebhookDestination) and not dest.url.startswith(
            ("http://", "https://")
        ):
            found.append((f"{path}.url", f"{dest.url!r} must start with http:// or https://"))
        if isinstance(dest, FunctionDestination) and not _FUNCTION_REF.fullmatch(dest.function):
            found.append(
                (
                    f"{path}.function",
                    f'{dest.function!r} is not a function reference: use "package.module:function"',
                )
            )
        endpoint = getattr(dest, "endpoint", None)
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            found.append((f"{path}.endpoint", f"{endpoint!r} must start with http:// or https://"))
        file_path = getattr(dest, "path", None)
        if file_path == "":
            found.append((f"{path}.path", "must not be empty"))

    for name, audience in settings.audiences.items():
        path = f"audiences.{name}"
        if not audience.all and not audience.any:
            found.append((path, "needs at least one condition in `all` or `any`"))
        for group in ("all", "any"):
            for index, cond in enumerate(getattr(audience, group)):
                cpath = f"{path}.{group}[{index}]"
                if cond.trait is None or any(
                    v is not None for v in (cond.audience, cond.not_audience, cond.context)
                ):
                    found.append(
                        (cpath, "audience conditions test traits: use { trait, op, value }")
                    )
                else:
                    _check_condition(cond, cpath, found)
    return found


# --- journeys ------------------------------------------------------------------------------


def check_journey(journey: Journey, settings: Settings) -> Found:
    found: Found = []
    limits = settings.limits
    lifetime = _seconds(limits.instance_lifetime) or 365 * 86400
    floor = _seconds(limits.min_duration) or 1
    audiences = set(settings.audiences)
    destinations = set(settings.destinations)

    _name(journey.id, "id", limits.name_chars, found)
    if journey.name is not None:
        _name(journey.name, "name", limits.name_chars, found)

    entry = journey.entry
    if entry.rule == "re-enter" and not entry.unique_identifier:
        found.append(
            (
                "entry.unique_identifier",
                'required with rule = "re-enter": name the event property that tells '
                'instances apart (e.g. "cart_id"), or use rule = "once"',
            )
        )
    if entry.rule == "once" and entry.unique_identifier:
        found.append(("entry.unique_identifier", 'only applies to rule = "re-enter"'))
    _filters(entry.filters, "entry.filters", found)
    if entry.audience is not None and entry.audience not in audiences:
        found.append(("entry.audience", _unknown("audience", entry.audience, audiences)))

    if len(journey.exit) > limits.exit_rules:
        found.append(
            (
                "exit",
                f"at most {limits.exit_rules} exit rules (found {len(journey.exit)}; "
                "limits.exit_rules sets the limit)",
            )
        )
    wants_exit_send = False
    for index, rule in enumerate(journey.exit):
        path = f"exit[{index}]"
        _filters(rule.filters, f"{path}.filters", found)
        if rule.match_identifier and not entry.unique_identifier:
            found.append(
                (f"{path}.match_identifier", "needs entry.unique_identifier to match against")
            )
        if rule.send:
            wants_exit_send = True
            if journey.exit_send is None:
                found.append((f"{path}.send", "needs an [exit_send] table saying what to send"))
    if journey.exit_send is not None:
        dest = journey.exit_send.destination
        if dest not in destinations:
            found.append(("exit_send.destination", _unknown("destination", dest, destinations)))
        if not wants_exit_send:
            found.append(("exit_send", "no exit rule sets send = true, so it would never fire"))
        _traits(journey.exit_send.traits, "exit_send.traits", found)

    steps = journey.steps
    if not steps:
        found.append(("steps", "a journey needs at least one step"))
        return found
    if len(steps) > limits.steps_per_journey:
        found.append(
            (
                "steps",
                f"at most {limits.steps_per_journey} steps (found {len(steps)}; "
                "limits.steps_per_journey sets the limit)",
            )
        )
    step_ids: dict[str, int] = {}
    for index, step in enumerate(steps):
        if step.id in step_ids:
            found.append(
                (
                    f"steps[{index}].id",
                    f"duplicate step id {step.id!r} (also steps[{step_ids[step.id]}])",
                )
            )
        else:
            step_ids[step.id] = index
        if step.id == EXIT_SEND_STEP:
            found.append(
                (
                    f"steps[{index}].id",
                    f"{EXIT_SEND_STEP!r} is reserved for the exit send; choose another step id",
                )
            )
        _name(step.id, f"steps[{index}].id", limits.name_chars, found)
        if step.name is not None:
            _name(step.name, f"steps[{index}].name", limits.name_chars, found)

    branch_names: dict[str, str] = {}
    for index, step in enumerate(steps):
        path = f"steps[{index}]"
        _step(step, path, settings, floor, lifetime, branch_names, found)
        for where, target in _exits(step, path):
            if target == "":
                found.append(
                    (where, "must not be empty: name a step id, or leave the key out to end here")
                )
            elif target not in step_ids:
                found.append((where, _unknown("step", target, set(step_ids))))
        if isinstance(step, Send) and step.destination not in destinations:
            found.append(
                (f"{path}.destination", _unknown("destination", step.destination, destinations))
            )
        if isinstance(step, DataSplit):
            for b_index, branch in enumerate(step.branches):
                for c_index, cond in enumerate(branch.when):
                    cpath = f"{path}.branches[{b_index}].when[{c_index}]"
                    if cond.audience is not None and cond.audience not in audiences:
                        found.append(
                            (f"{cpath}.audience", _unknown("audience", cond.audience, audiences))
                        )
                    if cond.not_audience is not None and cond.not_audience not in audiences:
                        found.append(
                            (
                                f"{cpath}.not_audience",
                                _unknown("audience", cond.not_audience, audiences),
                            )
                        )

    cycle = find_cycle(journey)
    if cycle:
        first = step_ids[cycle[0]]
        found.append(
            (
                f"steps[{first}]",
                "steps form a cycle: "
                + " -> ".join(cycle)
                + " (only a hold_until reset branch may loop, back to its own step)",
            )
        )
        return found
    if any(target not in step_ids for step in steps for _, target in edges(step)):
        return found  # keys below need a complete graph; the missing targets are reported
    seen = reachable(journey)
    for index, step in enumerate(steps):
        if step.id not in seen:
            found.append(
                (f"steps[{index}]", f"step {step.id!r} cannot be reached from the first step")
            )
    _, available = context_keys(journey)
    for index, step in enumerate(steps):
        if not isinstance(step, DataSplit):
            continue
        for b_index, branch in enumerate(step.branches):
            for c_index, cond in enumerate(branch.when):
                if cond.context is not None and cond.context not in available[step.id]:
                    options = ", ".join(sorted(available[step.id])) or "nothing"
                    found.append(
                        (
                            f"steps[{index}].branches[{b_index}].when[{c_index}].context",
                            f"{cond.context!r} is never in journey context at this step "
                            f"(it can hold: {options})",
                        )
                    )
    return found


def _step(
    step: Any,
    path: str,
    settings: Settings,
    floor: int,
    lifetime: int,
    branch_names: dict[str, str],
    found: Found,
) -> None:
    limits = settings.limits
    match step:
        case HoldUntil():
            _bounded_duration(step.max_duration, f"{path}.max_duration", floor, lifetime, found)
            _branch_count(step.branches, limits.branches_per_step, "branches_per_step", path, found)
            for b_index, branch in enumerate(step.branches):
                bpath = f"{path}.branches[{b_index}]"
                _branch_name(branch.name, bpath, limits.name_chars, branch_names, found)
                _filters(branch.filters, f"{bpath}.filters", found)
            _exclusive(step.branches, path, found)
        case Delay():
            _bounded_duration(step.duration, f"{path}.duration", floor, lifetime, found)
        case DataSplit():
            _branch_count(step.branches, limits.branches_per_step, "branches_per_step", path, found)
            for b_index, sbranch in enumerate(step.branches):
                bpath = f"{path}.branches[{b_index}]"
                _branch_name(sbranch.name, bpath, limits.name_chars, branch_names, found)
                if not sbranch.when:
                    found.append(
                        (
                            f"{bpath}.when",
                            "needs at least one condition (use `else` for everyone else)",
                        )
                    )
                for c_index, cond in enumerate(sbranch.when):
                    _check_condition(cond, f"{bpath}.when[{c_index}]", found)
        case RandomSplit():
            _branch_count(step.branches, limits.random_branches, "random_branches", path, found)
            total = 0
            for b_index, rbranch in enumerate(step.branches):
                bpath = f"{path}.branches[{b_index}]"
                _branch_name(rbranch.name, bpath, limits.name_chars, branch_names, found)
                if not 0 < rbranch.percent <= 100:
                    found.append((f"{bpath}.percent", "must be between 1 and 100"))
                total += rbranch.percent
            if step.branches and total != 100:
                found.append(
                    (f"{path}.branches", f"percentages must total 100 (they total {total})")
                )
        case Send():
            _traits(step.traits, f"{path}.traits", found)
            if len(step.mapping) > limits.mapping_fields:
                found.append(
                    (
                        f"{path}.mapping",
                        f"at most {limits.mapping_fields} fields (found {len(step.mapping)}; "
                        "limits.mapping_fields sets the limit)",
                    )
                )
            for field, source in step.mapping.items():
                if not field:
                    found.append((f"{path}.mapping", "field names must not be empty"))
                if not source:
                    found.append(
                        (f"{path}.mapping.{field}", 'needs a payload path, e.g. "properties.email"')
                    )


def _branch_count(
    branches: Sequence[Any], limit: int, setting: str, path: str, found: Found
) -> None:
    if not branches:
        found.append((f"{path}.branches", "needs at least one branch"))
    elif len(branches) > limit:
        found.append(
            (
                f"{path}.branches",
                f"at most {limit} branches (found {len(branches)}; "
                f"limits.{setting} sets the limit)",
            )
        )


def _branch_name(name: str, path: str, limit: int, seen: dict[str, str], found: Found) -> None:
    _name(name, f"{path}.name", limit, found)
    if name in seen:
        found.append((f"{path}.name", f"duplicate branch name {name!r} (also {seen[name]})"))
    else:
        seen[name] = path


def _name(value: str, path: str, limit: int, found: Found) -> None:
    if len(value) > limit:
        found.append((path, f"at most {limit} characters (found {len(value)}; limits.name_chars)"))


def _traits(traits: list[str], path: str, found: Found) -> None:
    for index, trait in enumerate(traits):
        if not trait:
            found.append((f"{path}[{index}]", "must not be empty"))
        elif trait in RESERVED_PROPERTIES:
            found.append((f"{path}[{index}]", f"{trait!r} is reserved for the payload itself"))


def _exits(step: Any, path: str) -> list[tuple[str, str]]:
    """(path of the key, step id it names) for every `next`, `on_timeout` and `else`."""
    named: list[tuple[str, str | None]] = [
        (f"{path}.branches[{index}].next", branch.next)
        for index, branch in enumerate(getattr(step, "branches", ()))
    ]
    for key, attr in (("next", "next"), ("on_timeout", "on_timeout"), ("else", "else_")):
        named.append((f"{path}.{key}", getattr(step, attr, None)))
    return [(where, target) for where, target in named if target is not None]


def _unknown(kind: str, name: str, known: set[str]) -> str:
    options = ", ".join(sorted(known)) if known else "none defined"
    return f"unknown {kind} {name!r} (known: {options})"


def _seconds(text: str) -> int | None:
    try:
        return parse_duration(text)
    except ValueError:
        return None


def _duration(text: str, path: str, found: Found) -> None:
    try:
        if parse_duration(text) < 1:
            found.append((path, "must be at least 1s"))
    except ValueError as exc:
        found.append((path, str(exc)))


def _bounded_duration(text: str, path: str, floor: int, ceiling: int, found: Found) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        found.append((path, str(exc)))
        return
    if seconds < floor:
        found.append((path, f"must be at least {format_duration(floor)} (limits.min_duration)"))
    elif seconds > ceiling:
        found.append(
            (path, f"must be at most {format_duration(ceiling)} (limits.instance_lifetime)")
        )


# --- conditions ----------------------------------------------------------------------------


def _filters(filters: list[Filter], path: str, found: Found) -> None:
    for index, flt in enumerate(filters):
        _op_value(flt.op, flt.value, f"{path}[{index}]", found)


def _check_condition(cond: Condition, path: str, found: Found) -> None:
    kinds = [
        k for k in ("trait", "audience", "not_audience", "context") if getattr(cond, k) is not None
    ]
    if len(kinds) != 1:
        found.append(
            (
                path,
                "say exactly one of trait, audience, not_audience or context "
                f"(found {', '.join(kinds) or 'none'})",
            )
        )
        return
    kind = kinds[0]
    if kind in ("audience", "not_audience"):
        extra = [k for k in ("property", "op") if getattr(cond, k) is not None]
        if extra or cond.value is not msgspec.UNSET:
            found.append((path, f"{kind} conditions take no property, op or value"))
        return
    if kind == "trait" and cond.property is not None:
        found.append(
            (f"{path}.property", "trait conditions test the trait itself; drop `property`")
        )
    if kind == "context" and cond.property is None:
        found.append((f"{path}.property", "required with context (the property to read)"))
    if cond.op is None:
        found.append((f"{path}.op", "required"))
        return
    _op_value(cond.op, cond.value, path, found)


def _op_value(op: str, value: Any, path: str, found: Found) -> None:
    if op in VALUELESS_OPS:
        if value is not msgspec.UNSET:
            found.append((f"{path}.value", f"op {op!r} takes no value"))
        return
    if value is msgspec.UNSET:
        found.append((f"{path}.value", f"required with op {op!r}"))
    elif op in LIST_OPS and not isinstance(value, list):
        found.append((f"{path}.value", f"op {op!r} needs an array of values"))
    elif op in _ORDERED_OPS and (
        isinstance(value, bool) or not isinstance(value, int | float | str)
    ):
        found.append((f"{path}.value", f"op {op!r} needs a number or a string"))


# --- mutual exclusion of hold branches -----------------------------------------------------


def _exclusive(branches: list[HoldBranch], path: str, found: Found) -> None:
    for i, first in enumerate(branches):
        for j in range(i + 1, len(branches)):
            second = branches[j]
            if first.event == second.event and not _disjoint(first.filters, second.filters):
                found.append(
                    (
                        f"{path}.branches[{j}]",
                        f"overlaps branch {first.name!r}: both can match {first.event!r}; "
                        "branches must be mutually exclusive, so add filters that tell "
                        "them apart",
                    )
                )


def _disjoint(first: list[Filter], second: list[Filter]) -> bool:
    """True when no event can satisfy both filter lists (a conservative proof)."""
    return any(a.property == b.property and _contradict(a, b) for a in first for b in second)


def _contradict(a: Filter, b: Filter) -> bool:
    if {a.op, b.op} == {"exists", "not_exists"}:
        return True
    if "not_exists" in (a.op, b.op):
        other = b if a.op == "not_exists" else a
        return other.op not in ("not_exists", "neq", "not_in")
    allowed_a, allowed_b = _allowed(a), _allowed(b)
    if allowed_a is not None and allowed_b is not None:
        return not (allowed_a & allowed_b)
    for x, y in ((a, b), (b, a)):
        allowed = _allowed(x)
        if allowed is not None:
            if y.op in ("neq", "not_in"):
                excluded = _hashable_set(y.value if y.op == "not_in" else [y.value])
                if excluded is not None and allowed <= excluded:
                    return True
            if y.op in _ORDERED_OPS and all(
                _matches_order(value, y.op, y.value) is False for value in allowed
            ):
                return True
    if a.op in _ORDERED_OPS and b.op in _ORDERED_OPS:
        return _ranges_disjoint(a, b)
    return False


def _allowed(flt: Filter) -> frozenset[Any] | None:
    if flt.op == "eq":
        return _hashable_set([flt.value])
    if flt.op == "in":
        return _hashable_set(flt.value)
    return None


def _hashable_set(values: Any) -> frozenset[Any] | None:
    try:
        return frozenset((type(v) is bool, v) for v in values)
    except TypeError:
        return None


def _matches_order(tagged: tuple[bool, Any], op: str, bound: Any) -> bool | None:
    is_bool, value = tagged
    if is_bool or (
        type(value) is not type(bound)
        and not (isinstance(value, int | float) and isinstance(bound, int | float))
    ):
        return False
    try:
        return bool(
            {
                "gt": value > bound,
                "gte": value >= bound,
                "lt": value < bound,
                "lte": value <= bound,
            }[op]
        )
    except TypeError:
        return None


def _ranges_disjoint(a: Filter, b: Filter) -> bool:
    lower = [f for f in (a, b) if f.op in ("gt", "gte")]
    upper = [f for f in (a, b) if f.op in ("lt", "lte")]
    if len(lower) != 1 or len(upper) != 1:
        return False
    low, high = lower[0], upper[0]
    try:
        if low.value > high.value:
            return True
        if low.value == high.value:
            return low.op == "gt" or high.op == "lt"
    except TypeError:
        return False
    return False
