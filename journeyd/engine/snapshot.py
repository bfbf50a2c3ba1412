"""The engine's half of snapshots: its state as plain msgpack data, and back.

Instances refer to their journey by an index into a table of (definition, version), so a
restored instance runs on exactly the version it started on, even if the config file has
moved on since. Timers are not stored separately: an instance's `deadline` is its timer,
re-armed on restore. Nothing here touches files; `journeyd.store.snapshot` does.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from journeyd.engine.compile import CompiledJourney
from journeyd.engine.engine import Engine
from journeyd.engine.state import Instance, UserState
from journeyd.model import Journey
from journeyd.settings import Settings


class SnapJourney(msgspec.Struct, array_like=True):
    version: str
    definition: Journey


class EngineMeta(msgspec.Struct, kw_only=True):
    """What is not per user: the config in force, every journey version in use, and the
    rate limiter's current window."""

    settings: Settings
    current: list[Journey]
    journeys: list[SnapJourney]
    rate_second: int
    rate_counts: dict[str, int] = {}


_encode = msgspec.msgpack.Encoder().encode
_decode_users = msgspec.msgpack.Decoder(dict[str, UserState]).decode


def meta_of(engine: Engine) -> tuple[EngineMeta, dict[int, int]]:
    """The engine's meta and the table index of each compiled journey (by object id)."""
    table = engine.live_journeys()
    meta = EngineMeta(
        settings=engine.settings,
        current=list(engine.definitions),
        journeys=[SnapJourney(j.version, j.definition) for j in table],
        rate_second=engine.rate_window[0],
        rate_counts=dict(engine.rate_window[1]),
    )
    return meta, {id(j): index for index, j in enumerate(table)}


def dump_users(users: Iterable[tuple[str, UserState]], index_of: dict[int, int]) -> bytes:
    """{user: UserState} as msgpack, each instance's journey written as its table index."""

    def journey_index(obj: Any) -> int:
        if isinstance(obj, CompiledJourney):
            return index_of[id(obj)]
        raise TypeError(f"cannot snapshot a {type(obj).__name__}")

    return msgspec.msgpack.Encoder(enc_hook=journey_index).encode(dict(users))


def restore(meta: EngineMeta, shards: Iterable[bytes]) -> Engine:
    """A fresh engine in the state the meta and user blobs describe."""
    engine = Engine(meta.current, meta.settings)
    table = _compile_table(engine, meta.journeys)
    users = engine.users
    intern = sys.intern
    active = [0] * len(table)
    armed: list[tuple[float, str, int, Instance]] = []  # heap entries, see TimerQueue
    token = 1
    for blob in shards:
        decoded = _decode_users(blob)
        for user, state in decoded.items():
            for inst in state.instances:
                index = inst.journey
                inst.journey = table[index]
                active[index] += 1
                inst.user = user  # one string per user, not one per instance
                context = inst.context
                if len(context) == 2:  # the common case: just the entry event
                    inst.context = (intern(context[0]), context[1])
                elif context:  # keys are shared strings, not one copy per instance
                    inst.context = tuple(
                        intern(item) if i % 2 == 0 else item for i, item in enumerate(context)
                    )
                if inst.deadline:
                    inst.timer = token
                    armed.append((inst.deadline, inst.id, token, inst))
                    token += 1
                else:
                    inst.timer = 0
        users.update(decoded)
    for journey, count in zip(table, active, strict=True):
        journey.active += count
    engine.timers.load(armed, token)
    engine.rate_window = (meta.rate_second, dict(meta.rate_counts))
    engine.adopt(table)
    return engine


def _compile_table(engine: Engine, journeys: Sequence[SnapJourney]) -> list[CompiledJourney]:
    table = []
    for snap in journeys:
        current = engine.journey(snap.definition.id)
        if current is not None and current.version == snap.version:
            table.append(current)
            continue
        compiled = CompiledJourney(snap.definition, engine.audiences)
        # The stored version names this definition as its instances knew it; keep it even
        # if this release would hash the definition differently.
        compiled.version = snap.version
        table.append(compiled)
    return table


def state_fingerprint(engine: Engine) -> bytes:
    """A canonical encoding of everything that decides future behaviour, for comparing a
    recovered engine with the live one. Built field by field, independently of
    `dump_users`, so a field the snapshot forgets shows up as a difference."""
    users = []
    for user, state in sorted(engine.users.items()):
        instances = [
            (
                inst.journey.id,
                inst.journey.version,
                inst.user,
                inst.identifier,
                inst.id,
                inst.anonymous,
                inst.entered_at,
                inst.step,
                inst.deadline,
                bool(inst.timer),
                inst.resets,
                list(inst.context),
            )
            for inst in state.instances
        ]
        users.append((user, state.traits, list(state.once), instances))
    second, counts = engine.rate_window
    return _encode(
        [
            sorted((j.id, j.version, j.active) for j in engine.live_journeys()),
            [j.id for j in engine.definitions],
            second,
            sorted(counts.items()),
            users,
            len(engine.timers),
        ]
    )
