"""The delivery payload every destination adapter starts from (DESIGN.md, "Delivery payload")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from journeyd import __version__
from journeyd.engine.conditions import MISSING, Path, lookup
from journeyd.model import format_timestamp


def map_fields(payload: Mapping[str, Any], mapping: Iterable[tuple[str, Path]]) -> dict[str, Any]:
    """A send step's `mapping`: each destination field read from a path in the default
    payload. A mapped path that is missing is sent as null (the user asked for the field);
    what is not mapped is not sent."""
    mapped = {}
    for field, path in mapping:
        value = lookup(payload, path)
        mapped[field] = None if value is MISSING else value
    return mapped


def build_payload(
    *,
    event_name: str,
    user: str,
    anonymous: bool,
    message_id: str,
    at: float,
    journey_context: dict[str, Any],
    journey_id: str,
    journey_version: str,
    instance_id: str,
    step_id: str,
    traits: Mapping[str, Any] | None,
    selected_traits: Iterable[str],
) -> dict[str, Any]:
    """A Segment-shaped track event. A selected trait the profile lacks is left out."""
    properties: dict[str, Any] = {
        "journey_context": journey_context,
        "journey_metadata": {
            "journey_id": journey_id,
            "journey_version": journey_version,
            "instance_id": instance_id,
            "step_id": step_id,
        },
    }
    if traits:
        for name in selected_traits:
            if name in traits:
                properties[name] = traits[name]
    return {
        "type": "track",
        "event": event_name,
        "userId": None if anonymous else user,
        "anonymousId": user if anonymous else None,
        "messageId": message_id,
        "timestamp": format_timestamp(at),
        "properties": properties,
        "context": {"journeyd": {"version": __version__}},
    }
