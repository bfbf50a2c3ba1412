"""The step graph of a journey: edges, cycles, reachability, and journey-context keys.

Shared by validation (which reports what is wrong) and the engine's compiler (which relies
on a graph that validation has already accepted).
"""

from __future__ import annotations

from collections.abc import Iterator

from journeyd.model import DataSplit, Delay, HoldUntil, Journey, RandomSplit, Send, Step


def alias(event_name: str, branch_name: str) -> str:
    """The context key for a capture whose event name is already taken in context."""
    return f"{event_name} - {branch_name}"


def edges(step: Step) -> Iterator[tuple[str, str]]:
    """(label, target step id) for every way out of a step; reset loops are not edges."""
    match step:
        case HoldUntil():
            for branch in step.branches:
                if branch.next:
                    yield f"branches[{branch.name}]", branch.next
            if step.on_timeout:
                yield "on_timeout", step.on_timeout
        case DataSplit():
            for sbranch in step.branches:
                if sbranch.next:
                    yield f"branches[{sbranch.name}]", sbranch.next
            if step.else_:
                yield "else", step.else_
        case RandomSplit():
            for rbranch in step.branches:
                if rbranch.next:
                    yield f"branches[{rbranch.name}]", rbranch.next
        case Delay() | Send():
            if step.next:
                yield "next", step.next


def find_cycle(journey: Journey) -> list[str] | None:
    """Step ids around one cycle (first repeated at the end), or None for a DAG."""
    by_id = {s.id: s for s in journey.steps}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(step_id: str) -> list[str] | None:
        state[step_id] = 1
        path.append(step_id)
        for _, target in edges(by_id[step_id]):
            if target not in by_id:
                continue
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[step_id] = 2
        return None

    for step in journey.steps:
        if step.id not in state:
            found = visit(step.id)
            if found:
                return found
    return None


def reachable(journey: Journey) -> set[str]:
    by_id = {s.id: s for s in journey.steps}
    seen: set[str] = set()
    todo = [journey.steps[0].id] if journey.steps else []
    while todo:
        step_id = todo.pop()
        if step_id in seen or step_id not in by_id:
            continue
        seen.add(step_id)
        todo.extend(target for _, target in edges(by_id[step_id]))
    return seen


def context_keys(journey: Journey) -> tuple[dict[tuple[str, str], str], dict[str, set[str]]]:
    """Where each hold branch stores its event, and which keys may be in context per step.

    A branch whose event name may already be in context when the instance reaches its step
    (the entry event, or a capture by an earlier hold on some path) stores under the alias
    `"<event> - <branch>"`; otherwise under the plain event name. Deciding this from the
    graph rather than from one instance's context means a branch always writes the same
    key, so a reset branch replaces its own entry instead of spawning a second one.

    Requires an acyclic graph. Returns ({(step id, branch name): key}, {step id: keys}).
    """
    by_id = {s.id: s for s in journey.steps}
    order = _topological(journey)
    available: dict[str, set[str]] = {s.id: set() for s in journey.steps}
    if journey.steps:
        available[journey.steps[0].id].add(journey.entry.event)
    keys: dict[tuple[str, str], str] = {}
    for step_id in order:
        step = by_id[step_id]
        here = available[step_id]
        if isinstance(step, HoldUntil):
            for branch in step.branches:
                key = alias(branch.event, branch.name) if branch.event in here else branch.event
                keys[(step.id, branch.name)] = key
                if branch.next in available:
                    available[branch.next] |= here | {key}
            if step.on_timeout in available:
                available[step.on_timeout] |= here
        else:
            for _, target in edges(step):
                if target in available:
                    available[target] |= here
    return keys, available


def _topological(journey: Journey) -> list[str]:
    by_id = {s.id: s for s in journey.steps}
    incoming = {s.id: 0 for s in journey.steps}
    for step in journey.steps:
        for _, target in edges(step):
            if target in incoming:
                incoming[target] += 1
    ready = [s.id for s in journey.steps if incoming[s.id] == 0]
    order: list[str] = []
    while ready:
        step_id = ready.pop(0)
        order.append(step_id)
        for _, target in edges(by_id[step_id]):
            if target in incoming:
                incoming[target] -= 1
                if incoming[target] == 0:
                    ready.append(target)
    return order
