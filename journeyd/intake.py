"""Decode and check one incoming event, with errors a sender can act on.

Shared by every way events arrive (socket, HTTP, `simulate`), so they all accept and reject
exactly the same things.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from journeyd.errors import BadInput
from journeyd.model import EVENT_TYPES, Event, parse_timestamp

_decoder = msgspec.json.Decoder(Event)
_AT = " - at `$"


def decode_event(data: bytes | str) -> Event:
    """Parse JSON into an Event and check it; raise BadInput naming the bad field."""
    try:
        event = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise BadInput(_reword(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise BadInput(str(exc)) from None
    check_event(event)
    return event


def check_event(event: Event) -> None:
    if event.type not in EVENT_TYPES:
        raise BadInput(
            f"type: unknown type {event.type!r} (expected one of: {', '.join(EVENT_TYPES)})"
        )
    if event.type == "alias":
        for name in ("userId", "previousId"):
            if not getattr(event, name):
                raise BadInput(f"{name}: required for an alias call (with userId and previousId)")
    elif not (event.userId or event.anonymousId):
        raise BadInput("userId: required, or anonymousId (at least one, not empty)")
    if event.type == "track" and not event.event:
        raise BadInput("event: required for a track call (the event name)")
    if event.type == "group" and not event.groupId:
        raise BadInput("groupId: required for a group call")
    for name in ("timestamp", "sentAt", "originalTimestamp"):
        value = getattr(event, name)
        if value is not None:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                try:
                    parse_timestamp(value)  # for its message
                except ValueError as exc:
                    raise BadInput(f"{name}: {exc}") from None


def _reword(message: str) -> str:
    """ "Expected `str`, got `int` - at `$.userId`" -> "userId: expected str, got int"."""
    text, _, where = message.partition(_AT)
    text = text.replace("`", "")
    text = text[:1].lower() + text[1:]
    where = where.rstrip("`").lstrip(".")
    if "missing required field" in text:
        field = text.rsplit(" ", 1)[-1]
        return f"{field}: required"
    if not where:
        return text.replace("expected object", "expected a JSON object")
    return f"{where}: {text}"
