"""The journey engine: routes events to instance actors and fires their timers.

Sans-I/O in the h11 sense: `handle(event, now)` and `fire_due(now)` change state and return
effects; nothing here sleeps, sends, logs or reads a clock. The caller supplies `now`
(the event's receivedAt in the daemon, its timestamp in `simulate`), which is what makes a
replay of the same events produce the same effects.

Per event, the order is fixed: due timers first, then the per-user rate limit, then exit
rules, then waiting hold steps, then entries. An event that exits an instance can therefore
start a fresh one in the same journey (the exit rule ended the old run); an event taken by a
running instance's hold branch never also starts a second instance for the same identifier,
even when that branch ended the instance; and an entry never feeds the hold it just started.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from journeyd.durations import parse_duration
from journeyd.engine.compile import (
    DATA_SPLIT,
    DELAY,
    HOLD,
    RANDOM_SPLIT,
    SEND,
    AudienceRule,
    CompiledJourney,
    CompiledStep,
    ExitRuleC,
    HoldBranchRule,
)
from journeyd.engine.conditions import all_match, identifier_value, lookup
from journeyd.engine.effects import (
    AnyEffect,
    Completed,
    Delivery,
    Dropped,
    Entered,
    Exited,
    Expired,
    Stepped,
)
from journeyd.engine.ids import bucket, instance_id, message_id
from journeyd.engine.payload import build_payload, map_fields
from journeyd.engine.state import (
    Instance,
    UserState,
    context_size,
    encode_properties,
    with_entry,
)
from journeyd.engine.timers import TimerQueue
from journeyd.journey_graph import alias
from journeyd.model import Event, Journey
from journeyd.settings import Settings

_NO_PROPERTIES: Mapping[str, Any] = {}
_NOTHING_TAKEN: set[tuple[str, str]] = set()  # shared empty default: never mutated
_UNREAD: Any = object()
TRUNCATED_MARKER = "journeyd_truncated"
EXPIRY_GRACE_S = 0.001


class Engine:
    def __init__(self, journeys: Sequence[Journey], settings: Settings) -> None:
        self.users: dict[str, UserState] = {}
        self.timers = TimerQueue()
        self._timer_heap = self.timers.heap  # peeked on every event: one attribute, no call
        self.counters: Counter[str] = Counter()
        self._current: dict[str, CompiledJourney] = {}
        self._live: list[CompiledJourney] = []
        self._entries: dict[str, tuple[CompiledJourney, ...]] = {}
        self._watched: frozenset[str] = frozenset()
        self._rate_second = -1
        self._rate_counts: dict[str, int] = {}
        self.load(journeys, settings)

    # --- configuration -----------------------------------------------------------------

    def load(self, journeys: Sequence[Journey], settings: Settings) -> None:
        """Install journeys; instances of a changed journey finish on their old version."""
        self.settings = settings
        self.definitions = tuple(journeys)
        limits = settings.limits
        self._lifetime = parse_duration(limits.instance_lifetime)
        self._events_per_second = limits.events_per_second_per_user
        self._instances_per_user = limits.instances_per_user
        self._identifier_chars = limits.identifier_chars
        self._reset_passes = limits.reset_passes
        self._context_bytes = limits.context_bytes
        audiences = {name: AudienceRule(name, a) for name, a in settings.audiences.items()}
        self.audiences = audiences
        current = {j.id: CompiledJourney(j, audiences) for j in journeys}
        moved = {
            id(old): current[old.id]
            for old in self._live
            if old.id in current and current[old.id].version == old.version
        }
        if moved:
            for state in self.users.values():
                for inst in state.instances:
                    target = moved.get(id(inst.journey))
                    if target is not None:
                        inst.journey.active -= 1
                        inst.journey = target
                        target.active += 1
        self._current = current
        self._live = list(current.values()) + [
            old for old in self._live if old.active > 0 and current.get(old.id) is not old
        ]
        self._rebuild_routes()

    def journey(self, journey_id: str) -> CompiledJourney | None:
        return self._current.get(journey_id)

    def live_journeys(self) -> list[CompiledJourney]:
        """Every compiled journey in use: the current versions, then older ones that still
        have running instances."""
        return list(self._live)

    def adopt(self, journeys: Sequence[CompiledJourney]) -> None:
        """After a restore: make older versions that instances reference live again."""
        current = set(map(id, self._current.values()))
        self._live = list(self._current.values()) + [
            j for j in journeys if id(j) not in current and j.active > 0
        ]
        self._rebuild_routes()

    @property
    def rate_window(self) -> tuple[int, dict[str, int]]:
        """The per-user rate limiter's state: (second, counts), for snapshots."""
        return self._rate_second, self._rate_counts

    @rate_window.setter
    def rate_window(self, value: tuple[int, dict[str, int]]) -> None:
        self._rate_second, self._rate_counts = value

    def _rebuild_routes(self) -> None:
        entries: dict[str, list[CompiledJourney]] = {}
        for journey in sorted(self._current.values(), key=lambda j: j.id):
            entries.setdefault(journey.entry_event, []).append(journey)
        self._entries = {name: tuple(js) for name, js in entries.items()}
        watched: set[str] = set()
        for journey in self._live:
            watched.update(journey.exits)
            watched.update(journey.hold_events)
        self._watched = frozenset(watched)

    # --- inputs --------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[AnyEffect]:
        """Apply one event at time `now` (timers due by then fire first)."""
        out: list[AnyEffect] = []
        heap = self._timer_heap
        if heap and heap[0][0] <= now:
            self._fire(now, out)
        kind = event.type
        if kind not in ("track", "identify"):
            return out
        user = event.userId or event.anonymousId
        if not user:
            self._drop(out, now, "", "no_user", event)
            return out
        second = int(now)  # the per-user rate limit, inline: it runs for every event
        if second != self._rate_second:
            self._rate_second = second
            self._rate_counts = {}
        counts = self._rate_counts
        count = counts[user] = counts.get(user, 0) + 1
        if count > self._events_per_second:
            self._drop(out, now, user, "rate_limit", event)
            return out
        if kind == "identify":
            if event.traits:
                self._identify(user, event.traits)
            return out
        name = event.event
        if not name:
            self._drop(out, now, user, "no_event_name", event)
            return out
        props = event.properties if event.properties is not None else _NO_PROPERTIES
        state = self.users.get(user)
        taken: set[tuple[str, str]] = _NOTHING_TAKEN
        identifiers: dict[Any, str | None] = {}  # each identifier path read once per event
        if state is not None and state.instances and name in self._watched:
            taken = self._to_instances(state, name, props, now, out, identifiers)
        entries = self._entries.get(name)
        if entries is not None:
            for journey in entries:
                self._enter(journey, user, props, now, out, event, taken, identifiers)
        return out

    def fire_due(self, now: float) -> list[AnyEffect]:
        """Fire every timer due at or before `now`, each at its own deadline."""
        out: list[AnyEffect] = []
        self._fire(now, out)
        return out

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    # --- queries -------------------------------------------------------------------------

    def instances(self) -> Iterator[Instance]:
        for state in self.users.values():
            yield from state.instances

    def instance_count(self) -> int:
        return sum(j.active for j in self._live)

    # --- routing -------------------------------------------------------------------------

    def _identify(self, user: str, traits: dict[str, Any]) -> None:
        state = self.users.get(user)
        if state is None:
            state = self.users[user] = UserState()
        if state.traits is None:
            state.traits = dict(traits)
        else:
            state.traits.update(traits)

    def _to_instances(
        self,
        state: UserState,
        name: str,
        props: Mapping[str, Any],
        now: float,
        out: list[AnyEffect],
        identifiers: dict[Any, str | None],
    ) -> set[tuple[str, str]]:
        """Apply exits and hold branches; return the (journey, identifier) keys whose running
        instance took the event in a hold branch: the same event must not enter them anew."""
        taken: set[tuple[str, str]] = _NOTHING_TAKEN
        for inst in state.instances:
            if inst.step < 0:
                continue
            journey = inst.journey
            path = journey.identifier_path
            rules = journey.exits.get(name)
            if rules is not None:
                rule = self._exit_rule(inst, rules, props, identifiers)
                if rule is not None:
                    self._exit(inst, rule, name, props, now, out)
                    continue
            step = journey.steps[inst.step]
            if step.kind != HOLD:
                continue
            branches = step.by_event.get(name)
            if branches is None:
                continue
            if path is not None and _identifier(props, path, identifiers) != inst.identifier:
                continue
            for branch in branches:
                if all_match(branch.filters, props):
                    if taken is _NOTHING_TAKEN:
                        taken = set()
                    taken.add((journey.id, inst.identifier))
                    self._take_hold_branch(inst, step, branch, props, now, out)
                    break
        return taken

    def _exit_rule(
        self,
        inst: Instance,
        rules: tuple[ExitRuleC, ...],
        props: Mapping[str, Any],
        identifiers: dict[Any, str | None],
    ) -> ExitRuleC | None:
        path = inst.journey.identifier_path
        for rule in rules:
            if (
                rule.match_identifier
                and path is not None
                and _identifier(props, path, identifiers) != inst.identifier
            ):
                continue
            if all_match(rule.filters, props):
                return rule
        return None

    def _enter(
        self,
        journey: CompiledJourney,
        user: str,
        props: Mapping[str, Any],
        now: float,
        out: list[AnyEffect],
        event: Event,
        taken: set[tuple[str, str]],
        identifiers: dict[Any, str | None],
    ) -> None:
        # Checks that end silently come first (cheapest, and most events stop here); checks
        # that report a drop come only after the entry filters have passed.
        state = self.users.get(user)
        path = journey.identifier_path
        identifier = ""
        if path is not None:
            value = _identifier(props, path, identifiers)
            if value is not None:
                if taken and (journey.id, value) in taken:
                    return  # a running instance took this event; it does not start another
                if state is not None and _running(state, journey.id, value):
                    return  # that (user, identifier) is already running
                identifier = value
        if journey.entry_filters and not all_match(journey.entry_filters, props):
            return
        if journey.once and state is not None and journey.id in state.once:
            return
        if path is not None:
            if not identifier:
                self._drop(out, now, user, "missing_identifier", event, journey.id)
                return
            if len(identifier) > self._identifier_chars:
                self._drop(out, now, user, "identifier_too_long", event, journey.id)
                return
        elif state is not None and _running(state, journey.id, ""):
            return
        if journey.audience is not None and not journey.audience.contains(
            (state.traits if state is not None else None) or _NO_PROPERTIES
        ):
            return
        if state is not None and len(state.instances) >= self._instances_per_user:
            self._drop(out, now, user, "instance_limit", event, journey.id)
            return
        if state is None:
            state = self.users[user] = UserState()
        iid = instance_id(journey.id, user, identifier, event.messageId or "", round(now * 1000))
        inst = Instance(journey, user, identifier, iid, not event.userId, now)
        state.instances = (*state.instances, inst)
        if journey.once:
            state.once = (*state.once, journey.id)
        journey.active += 1
        self.counters["entered"] += 1
        out.append(
            Entered(
                at=now,
                user=user,
                journey=journey.id,
                instance=iid,
                version=journey.version,
                identifier=identifier or None,
            )
        )
        self._capture(inst, journey.entry_event, props, now, out)
        self._advance(inst, 0, None, now, out)

    # --- the actor's transitions ---------------------------------------------------------

    def _take_hold_branch(
        self,
        inst: Instance,
        step: CompiledStep,
        branch: HoldBranchRule,
        props: Mapping[str, Any],
        now: float,
        out: list[AnyEffect],
    ) -> None:
        self._capture(inst, branch.context_key, props, now, out)
        if branch.reset and inst.resets < self._reset_passes:
            inst.resets += 1
            out.append(
                Stepped(
                    at=now,
                    user=inst.user,
                    journey=inst.journey.id,
                    instance=inst.id,
                    step=step.id,
                    branch=branch.name,
                )
            )
            self._arm(inst, now + step.seconds)
            return
        # Past the reset cap a reset branch behaves as a normal one: on to its `next`,
        # or completed when it has none.
        self.timers.cancel(inst)
        self._advance(inst, branch.next, branch.name, now, out)

    def _advance(
        self,
        inst: Instance,
        target: int | None,
        branch: str | None,
        at: float,
        out: list[AnyEffect],
    ) -> None:
        """Walk instant steps (splits, sends) until a step that waits, or the end."""
        journey = inst.journey
        while True:
            if target is None:
                step_id = journey.steps[inst.step].id
                self._end(inst)
                self.counters["completed"] += 1
                out.append(
                    Completed(
                        at=at,
                        user=inst.user,
                        journey=journey.id,
                        instance=inst.id,
                        step=step_id,
                        branch=branch,
                    )
                )
                return
            step = journey.steps[target]
            inst.step = target
            out.append(
                Stepped(
                    at=at,
                    user=inst.user,
                    journey=journey.id,
                    instance=inst.id,
                    step=step.id,
                    branch=branch,
                )
            )
            kind = step.kind
            if kind in (HOLD, DELAY):
                self._arm(inst, at + step.seconds)
                return
            if kind == SEND:
                self._deliver(
                    inst,
                    step.id,
                    step.destination,
                    step.event_name,
                    step.traits,
                    inst.read_context(),
                    at,
                    out,
                    step.mapping,
                )
                target, branch = step.next, None
            elif kind == DATA_SPLIT:
                target, branch = self._data_split(inst, step)
            elif kind == RANDOM_SPLIT:
                target, branch = self._random_split(inst, step)

    def _data_split(self, inst: Instance, step: CompiledStep) -> tuple[int | None, str]:
        state = self.users.get(inst.user)
        traits = (state.traits if state is not None else None) or _NO_PROPERTIES
        context = inst.read_context() if step.needs_context else _NO_PROPERTIES
        for name, conditions, target in step.rules:
            if all(c.holds(traits, context) for c in conditions):
                return target, name
        return step.else_next, "else"

    def _random_split(self, inst: Instance, step: CompiledStep) -> tuple[int | None, str]:
        if step.per_user:
            point = bucket(inst.user, inst.journey.id, step.id)
        else:
            point = bucket(inst.id, step.id)
        for name, upper, target in step.rules:
            if point < upper:
                return target, name
        name, _, target = step.rules[-1]
        return target, name

    def _fire(self, now: float, out: list[AnyEffect]) -> None:
        while (due := self.timers.pop_due(now)) is not None:
            deadline, inst = due
            step = inst.journey.steps[inst.step]
            inst.deadline = 0.0
            if deadline > inst.entered_at + self._lifetime:
                self._end(inst)
                self.counters["expired"] += 1
                out.append(
                    Expired(
                        at=deadline,
                        user=inst.user,
                        journey=inst.journey.id,
                        instance=inst.id,
                        step=step.id,
                    )
                )
            elif step.kind == HOLD:
                self._advance(inst, step.next, "timeout", deadline, out)
            else:
                self._advance(inst, step.next, None, deadline, out)

    def _exit(
        self,
        inst: Instance,
        rule: ExitRuleC,
        name: str,
        props: Mapping[str, Any],
        now: float,
        out: list[AnyEffect],
    ) -> None:
        journey = inst.journey
        step_id = journey.steps[inst.step].id
        exit_send = journey.exit_send if rule.send else None
        context = inst.read_context() if exit_send is not None else None
        self._end(inst)
        self.counters["exited"] += 1
        out.append(
            Exited(
                at=now,
                user=inst.user,
                journey=journey.id,
                instance=inst.id,
                step=step_id,
                reason="exit_rule",
                event=name,
            )
        )
        if exit_send is not None and context is not None:
            context[alias(name, "exit") if name in context else name] = props
            self._deliver(
                inst,
                "exit",
                exit_send.destination,
                exit_send.event_name,
                exit_send.traits,
                context,
                now,
                out,
            )

    # --- state helpers -------------------------------------------------------------------

    def _arm(self, inst: Instance, deadline: float) -> None:
        expiry = inst.entered_at + self._lifetime
        if deadline > expiry:
            # Expire just past the lifetime, so a step due exactly at its end still runs.
            deadline = expiry + EXPIRY_GRACE_S
        inst.deadline = deadline
        self.timers.arm(inst, deadline, inst.id)

    def _capture(
        self,
        inst: Instance,
        key: str,
        props: Mapping[str, Any],
        now: float,
        out: list[AnyEffect],
    ) -> None:
        """Store an event's properties in context; past the size cap, store a marker.

        The size counted is each key plus its msgpack-encoded properties. At the cap the
        newest capture is replaced by `{"journeyd_truncated": true, "bytes": N}` (N = its
        encoded size) and a `drop` effect with reason `context_cap` is emitted; what was
        captured before stays (a capture that replaces an earlier one under the same key
        keeps the earlier one when even the marker does not fit), and the instance carries on.
        """
        encoded = encode_properties(props)
        context = with_entry(inst.context, key, encoded)
        if context_size(context) > self._context_bytes:
            marker = encode_properties({TRUNCATED_MARKER: True, "bytes": len(encoded)})
            context = with_entry(inst.context, key, marker)
            if context_size(context) > self._context_bytes:
                context = inst.context
            self.counters["drop.context_cap"] += 1
            out.append(
                Dropped(
                    at=now,
                    user=inst.user,
                    journey=inst.journey.id,
                    instance=inst.id,
                    reason="context_cap",
                    event=key,
                    step=inst.journey.steps[inst.step].id,
                )
            )
        inst.context = context

    def _deliver(
        self,
        inst: Instance,
        step_id: str,
        destination: str,
        event_name: str,
        traits: Sequence[str],
        context: dict[str, Any],
        at: float,
        out: list[AnyEffect],
        mapping: tuple[tuple[str, Any], ...] = (),
    ) -> None:
        journey = inst.journey
        state = self.users.get(inst.user)
        mid = message_id(inst.id, step_id)
        payload = build_payload(
            event_name=event_name,
            user=inst.user,
            anonymous=inst.anonymous,
            message_id=mid,
            at=at,
            journey_context=context,
            journey_id=journey.id,
            journey_version=journey.version,
            instance_id=inst.id,
            step_id=step_id,
            traits=state.traits if state is not None else None,
            selected_traits=traits,
        )
        if mapping:
            payload["properties"] = map_fields(payload, mapping)
        self.counters["sent"] += 1
        out.append(
            Delivery(
                at=at,
                user=inst.user,
                journey=journey.id,
                instance=inst.id,
                step=step_id,
                destination=destination,
                message_id=mid,
                payload=payload,
            )
        )

    def _end(self, inst: Instance) -> None:
        self.timers.cancel(inst)
        inst.deadline = 0.0
        state = self.users[inst.user]
        instances = state.instances
        if len(instances) == 1:  # the common case, without building a generator
            state.instances = ()
        else:
            state.instances = tuple(i for i in instances if i is not inst)
        inst.step = -1
        if state.is_empty():
            del self.users[inst.user]
        journey = inst.journey
        journey.active -= 1
        if journey.active == 0 and self._current.get(journey.id) is not journey:
            self._live = [j for j in self._live if j is not journey]
            self._rebuild_routes()

    def _drop(
        self,
        out: list[AnyEffect],
        now: float,
        user: str,
        reason: str,
        event: Event,
        journey: str | None = None,
    ) -> None:
        self.counters[f"drop.{reason}"] += 1
        out.append(
            Dropped(
                at=now,
                user=user,
                journey=journey,
                reason=reason,
                event=event.event,
                message_id=event.messageId,
            )
        )


def _running(state: UserState, journey_id: str, identifier: str) -> bool:
    for inst in state.instances:
        if inst.identifier == identifier and inst.journey.id == journey_id:
            return True
    return False


def _identifier(props: Mapping[str, Any], path: Any, seen: dict[Any, str | None]) -> str | None:
    value = seen.get(path, _UNREAD)
    if value is _UNREAD:  # (not try/except: a raised KeyError per event is slow)
        value = seen[path] = identifier_value(lookup(props, path))
    return value  # type: ignore[no-any-return]
