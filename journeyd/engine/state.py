"""Per-instance and per-user state, shaped for a million waiting instances.

Both are msgspec structs with `gc=False`: they hold no reference cycles, and keeping a
million of them out of the cyclic garbage collector saves memory and long GC pauses.
The journey context is kept as a flat tuple `(key, msgpack bytes, key, msgpack bytes, ...)`:
a capture encodes only the new event's properties, the keys are the compiled journey's own
strings (shared, not copied per instance), and it is decoded only when a send or a context
condition reads it.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class Instance(msgspec.Struct, gc=False, array_like=True):
    """One actor: a journey run for one (user, unique identifier value).

    `array_like` and the `Any` on `journey` let a snapshot decode straight into instances:
    there `journey` holds an index into the snapshot's journey table, swapped for the
    compiled journey on restore. Everywhere else it is a CompiledJourney.
    """

    journey: Any  # CompiledJourney
    user: str
    identifier: str  # "" when the journey has no unique identifier
    id: str
    anonymous: bool  # the user key came from anonymousId
    entered_at: float
    step: int = 0  # index into journey.steps; -1 once ended
    deadline: float = 0.0  # of the armed timer, 0 when none
    timer: int = 0  # token of the armed timer (see TimerQueue)
    resets: int = 0  # reset-branch passes so far
    context: tuple[Any, ...] = ()

    def read_context(self) -> dict[str, Any]:
        ctx = self.context
        return {ctx[i]: _decode(ctx[i + 1]) for i in range(0, len(ctx), 2)}


class UserState(msgspec.Struct, gc=False, array_like=True):
    """What the engine knows of one profile. `instances` is a tuple so the GC can untrack it."""

    instances: tuple[Instance, ...] = ()
    traits: dict[str, Any] | None = None
    once: tuple[str, ...] = ()  # journeys with rule = "once" this user has entered

    def is_empty(self) -> bool:
        return not self.instances and self.traits is None and not self.once


def encode_properties(properties: Any) -> bytes:
    return _encode(properties)


def with_entry(context: tuple[Any, ...], key: str, encoded: bytes) -> tuple[Any, ...]:
    """The context with `key` set to `encoded`, replacing an earlier capture under `key`."""
    if len(context) == 2 and context[0] == key:  # the common case: one capture, replaced
        return (key, encoded)
    for i in range(0, len(context), 2):
        if context[i] == key:
            return (*context[:i], key, encoded, *context[i + 2 :])
    return (*context, key, encoded)


def context_size(context: tuple[Any, ...]) -> int:
    """Bytes counted against limits.context_bytes: each key plus its encoded properties."""
    size = 0
    for i in range(0, len(context), 2):
        size += len(context[i].encode()) + len(context[i + 1])
    return size
