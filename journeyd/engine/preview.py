"""The payload a send step would produce for one entry event, without running a journey.

Context holds just the entry event (plus, for the exit send, the exit event), as it would
for an instance that reached the step straight from its entry; captures by hold branches
on the way are not invented.
"""

from __future__ import annotations

from typing import Any

from journeyd.engine.compile import SEND, CompiledJourney
from journeyd.engine.conditions import identifier_value
from journeyd.engine.ids import instance_id, message_id
from journeyd.engine.payload import build_payload
from journeyd.model import Event


def sample_event(journey: CompiledJourney, at_iso: str) -> Event:
    """An entry event that passes the journey's `eq`/`in` filters, for previews."""
    properties: dict[str, Any] = {}
    for test in journey.entry_filters:
        if test.op == "eq":
            properties[".".join(test.path)] = test.expected
        elif test.op == "in" and test.expected:
            properties[".".join(test.path)] = test.expected[0]
        elif test.op in ("gt", "gte") and isinstance(test.expected, int | float):
            properties[".".join(test.path)] = test.expected + 1
        elif test.op == "exists":
            properties[".".join(test.path)] = "sample"
    if journey.identifier_path is not None:
        properties[".".join(journey.identifier_path)] = "sample-1"
    return Event(
        type="track",
        event=journey.entry_event,
        userId="sample-user",
        messageId="sample-message",
        properties=properties,
        timestamp=at_iso,
        context={"traits": {"email": "sample@example.com"}},
    )


def send_step_ids(journey: CompiledJourney) -> list[str]:
    ids = [s.id for s in journey.steps if s.kind == SEND]
    return [*ids, "exit"] if journey.exit_send is not None else ids


def preview_payload(
    journey: CompiledJourney, step_id: str, event: Event, at: float
) -> tuple[str, dict[str, Any]]:
    """(destination, payload) for the send step `step_id` (or "exit" for the exit send).

    Profile traits are read from the event's `context.traits` or `traits`, the places
    Segment SDKs put them.
    """
    user = event.userId or event.anonymousId or "sample-user"
    props = event.properties or {}
    identifier = ""
    if journey.identifier_path is not None:
        identifier = identifier_value(journey.identifier_of(props)) or ""
    iid = instance_id(journey.id, user, identifier, event.messageId or "", round(at * 1000))
    traits = dict((event.context or {}).get("traits") or {})
    traits.update(event.traits or {})
    context: dict[str, Any] = {journey.entry_event: props}
    if step_id == "exit":
        if journey.exit_send is None:
            raise KeyError(step_id)
        destination = journey.exit_send.destination
        event_name = journey.exit_send.event_name
        selected = journey.exit_send.traits
    else:
        step = next((s for s in journey.steps if s.id == step_id and s.kind == SEND), None)
        if step is None:
            raise KeyError(step_id)
        destination, event_name, selected = step.destination, step.event_name, list(step.traits)
    payload = build_payload(
        event_name=event_name,
        user=user,
        anonymous=not event.userId,
        message_id=message_id(iid, step_id),
        at=at,
        journey_context=context,
        journey_id=journey.id,
        journey_version=journey.version,
        instance_id=iid,
        step_id=step_id,
        traits=traits,
        selected_traits=selected,
    )
    return destination, payload
