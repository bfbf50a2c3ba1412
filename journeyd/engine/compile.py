"""Turn validated journey definitions into the shapes the engine walks on every event.

Step ids become list indexes, filters become `Test`s, hold branches are grouped by event
name, and each journey gets a content version so running instances can stay on the
definition they started with after a reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from hashlib import blake2b
from typing import Any

import msgspec

from journeyd.durations import parse_duration
from journeyd.engine.conditions import MISSING, Path, Test, lookup, split_path
from journeyd.journey_graph import context_keys
from journeyd.model import (
    Condition,
    DataSplit,
    Delay,
    ExitSend,
    Filter,
    HoldUntil,
    Journey,
    RandomSplit,
    Send,
)
from journeyd.settings import Audience

HOLD, DELAY, DATA_SPLIT, RANDOM_SPLIT, SEND = range(5)


def _tests(filters: list[Filter]) -> tuple[Test, ...]:
    return tuple(Test(f.property, f.op, f.value) for f in filters)


class AudienceRule:
    """A named audience: every `all` condition and, if any are given, one `any` condition."""

    __slots__ = ("all", "any", "name")

    def __init__(self, name: str, audience: Audience) -> None:
        self.name = name
        self.all = tuple(Test(c.trait or "", c.op or "exists", c.value) for c in audience.all)
        self.any = tuple(Test(c.trait or "", c.op or "exists", c.value) for c in audience.any)

    def contains(self, traits: Mapping[str, Any]) -> bool:
        if not all(t(traits) for t in self.all):
            return False
        return not self.any or any(t(traits) for t in self.any)


class SplitCondition:
    """One data-split condition, evaluated against fresh traits or the instance's context."""

    __slots__ = ("audience", "context_key", "negate", "test")

    def __init__(self, cond: Condition, audiences: Mapping[str, AudienceRule]) -> None:
        self.audience: AudienceRule | None = None
        self.negate = False
        self.context_key: str | None = None
        self.test: Test | None = None
        if cond.audience is not None:
            self.audience = audiences[cond.audience]
        elif cond.not_audience is not None:
            self.audience = audiences[cond.not_audience]
            self.negate = True
        elif cond.context is not None:
            self.context_key = cond.context
            self.test = Test(cond.property or "", cond.op or "exists", cond.value)
        else:
            self.test = Test(cond.trait or "", cond.op or "exists", cond.value)

    def holds(self, traits: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
        if self.audience is not None:
            return self.audience.contains(traits) != self.negate
        assert self.test is not None
        if self.context_key is not None:
            captured = context.get(self.context_key, MISSING)
            if not isinstance(captured, Mapping):
                return self.test.op in ("neq", "not_in", "not_exists")
            return self.test(captured)
        return self.test(traits)


class HoldBranchRule:
    __slots__ = ("context_key", "filters", "name", "next", "reset")

    def __init__(
        self,
        name: str,
        context_key: str,
        filters: tuple[Test, ...],
        next_index: int | None,
        reset: bool,
    ) -> None:
        self.name = name
        self.context_key = context_key
        self.filters = filters
        self.next = next_index
        self.reset = reset


class CompiledStep:
    """One step; which attributes matter depends on `kind`."""

    __slots__ = (
        "by_event",
        "destination",
        "else_next",
        "event_name",
        "id",
        "index",
        "kind",
        "mapping",
        "needs_context",
        "next",
        "per_user",
        "rules",
        "seconds",
        "traits",
    )

    def __init__(self, kind: int, step_id: str, index: int) -> None:
        self.kind = kind
        self.id = step_id
        self.index = index
        self.seconds = 0
        self.next: int | None = None
        self.by_event: dict[str, tuple[HoldBranchRule, ...]] = {}
        self.rules: tuple[Any, ...] = ()
        self.else_next: int | None = None
        self.needs_context = False
        self.per_user = False
        self.destination = ""
        self.event_name = ""
        self.traits: tuple[str, ...] = ()
        self.mapping: tuple[tuple[str, Path], ...] = ()


class ExitRuleC:
    __slots__ = ("filters", "match_identifier", "send")

    def __init__(self, filters: tuple[Test, ...], match_identifier: bool, send: bool) -> None:
        self.filters = filters
        self.match_identifier = match_identifier
        self.send = send


class CompiledJourney:
    """A journey at one version. `active` counts its live instances (old versions linger)."""

    __slots__ = (
        "active",
        "audience",
        "definition",
        "entry_event",
        "entry_filters",
        "exit_send",
        "exits",
        "hold_events",
        "id",
        "identifier_path",
        "once",
        "steps",
        "version",
    )

    def __init__(self, journey: Journey, audiences: Mapping[str, AudienceRule]) -> None:
        self.definition = journey
        self.id = journey.id
        self.version = journey_version(journey)
        self.active = 0
        entry = journey.entry
        self.entry_event = entry.event
        self.entry_filters = _tests(entry.filters)
        self.once = entry.rule == "once"
        self.identifier_path: Path | None = (
            split_path(entry.unique_identifier) if entry.unique_identifier else None
        )
        self.audience = audiences[entry.audience] if entry.audience else None
        exits: dict[str, list[ExitRuleC]] = {}
        for rule in journey.exit:
            exits.setdefault(rule.event, []).append(
                ExitRuleC(_tests(rule.filters), rule.match_identifier, rule.send)
            )
        self.exits = {name: tuple(rules) for name, rules in exits.items()}
        self.exit_send: ExitSend | None = journey.exit_send
        self.steps = _compile_steps(journey, audiences)
        self.hold_events = frozenset(
            name for step in self.steps if step.kind == HOLD for name in step.by_event
        )

    def identifier_of(self, properties: Mapping[str, Any]) -> Any:
        assert self.identifier_path is not None
        return lookup(properties, self.identifier_path)


def journey_version(journey: Journey) -> str:
    """A content hash: reloading an unchanged file keeps the version."""
    return blake2b(msgspec.json.encode(journey), digest_size=4).hexdigest()


def _compile_steps(journey: Journey, audiences: Mapping[str, AudienceRule]) -> list[CompiledStep]:
    index = {step.id: i for i, step in enumerate(journey.steps)}
    keys, _ = context_keys(journey)

    def target(step_id: str | None) -> int | None:
        return None if step_id is None else index[step_id]

    compiled: list[CompiledStep] = []
    for i, step in enumerate(journey.steps):
        match step:
            case HoldUntil():
                c = CompiledStep(HOLD, step.id, i)
                c.seconds = parse_duration(step.max_duration)
                c.next = target(step.on_timeout)
                grouped: dict[str, list[HoldBranchRule]] = {}
                for branch in step.branches:
                    grouped.setdefault(branch.event, []).append(
                        HoldBranchRule(
                            branch.name,
                            keys[(step.id, branch.name)],
                            _tests(branch.filters),
                            target(branch.next),
                            branch.reset,
                        )
                    )
                c.by_event = {name: tuple(rules) for name, rules in grouped.items()}
            case Delay():
                c = CompiledStep(DELAY, step.id, i)
                c.seconds = parse_duration(step.duration)
                c.next = target(step.next)
            case DataSplit():
                c = CompiledStep(DATA_SPLIT, step.id, i)
                c.rules = tuple(
                    (b.name, tuple(SplitCondition(w, audiences) for w in b.when), target(b.next))
                    for b in step.branches
                )
                c.else_next = target(step.else_)
                c.needs_context = any(w.context is not None for b in step.branches for w in b.when)
            case RandomSplit():
                c = CompiledStep(RANDOM_SPLIT, step.id, i)
                upper = 0
                rules = []
                for rb in step.branches:
                    upper += rb.percent * 100
                    rules.append((rb.name, upper, target(rb.next)))
                c.rules = tuple(rules)
                c.per_user = step.same_branch_per_user
            case Send():
                c = CompiledStep(SEND, step.id, i)
                c.destination = step.destination
                c.event_name = step.event_name
                c.traits = tuple(step.traits)
                c.mapping = tuple((field, split_path(path)) for field, path in step.mapping.items())
                c.next = target(step.next)
        compiled.append(c)
    return compiled
