"""What the engine asks the world to do or know: one struct per kind, tagged by `kind`.

Effects are plain data so that the daemon, `simulate` and the tests all read the same thing,
and so that two runs can be compared byte for byte.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Effect(msgspec.Struct, tag_field="kind", kw_only=True, frozen=True, omit_defaults=True):
    at: float
    user: str
    journey: str | None = None
    instance: str | None = None


class Entered(Effect, tag="enter", kw_only=True, frozen=True):
    version: str
    identifier: str | None = None


class Stepped(Effect, tag="step", kw_only=True, frozen=True):
    step: str
    branch: str | None = None


class Delivery(Effect, tag="send", kw_only=True, frozen=True):
    step: str
    destination: str
    message_id: str
    payload: dict[str, Any]


class Exited(Effect, tag="exit", kw_only=True, frozen=True):
    step: str
    reason: str
    event: str | None = None


class Completed(Effect, tag="complete", kw_only=True, frozen=True):
    step: str
    branch: str | None = None


class Expired(Effect, tag="expire", kw_only=True, frozen=True):
    step: str
    reason: str = "lifetime"


class Dropped(Effect, tag="drop", kw_only=True, frozen=True):
    reason: str
    event: str | None = None
    message_id: str | None = None
    step: str | None = None


AnyEffect = Entered | Stepped | Delivery | Exited | Completed | Expired | Dropped

DROP_REASONS = (
    "rate_limit",
    "instance_limit",
    "missing_identifier",
    "identifier_too_long",
    "context_cap",
    "no_user",
    "no_event_name",
)
