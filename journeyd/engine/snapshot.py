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


class SnapInstance(msgspec.Struct, array_like=True, gc=False):
    journey: int  # index into EngineMeta.journeys
    identifier: str
    id: str
    anonymous: bool
    entered_at: float
    step: int
    deadline: float
    resets: int
    context: list[Any]  # key, msgpack bytes, key, msgpack bytes, ...


class SnapUser(msgspec.Struct, array_like=True):
    user: str
    traits: dict[str, Any] | None
    once: list[str]
    instances: list[SnapInstance]
    rate: int = 0  # events counted in the rate limiter's current second


class SnapJourney(msgspec.Struct, array_like=True):
    version: str
    definition: Journey


class EngineMeta(msgspec.Struct, kw_only=True):
    """What is not per user: the config in force and every journey version in use."""

    settings: Settings
    current: list[Journey]
    journeys: list[SnapJourney]
    rate_second: int


_encode = msgspec.msgpack.Encoder().encode
_decode_users = msgspec.msgpack.Decoder(list[SnapUser]).decode


def meta_of(engine: Engine) -> tuple[EngineMeta, dict[int, int]]:
    """The engine's meta and the table index of each compiled journey (by object id)."""
    table = engine.live_journeys()
    meta = EngineMeta(
        settings=engine.settings,
        current=list(engine.definitions),
        journeys=[SnapJourney(j.version, j.definition) for j in table],
        rate_second=engine.rate_window[0],
    )
    return meta, {id(j): index for index, j in enumerate(table)}


def dump_users(
    users: Iterable[tuple[str, UserState]], index_of: dict[int, int], rates: dict[str, int]
) -> bytes:
    records = [
        SnapUser(
            user,
            state.traits,
            list(state.once),
            [
                SnapInstance(
                    index_of[id(inst.journey)],
                    inst.identifier,
                    inst.id,
                    inst.anonymous,
                    inst.entered_at,
                    inst.step,
                    inst.deadline,
                    inst.resets,
                    list(inst.context),
                )
                for inst in state.instances
            ],
            rates.get(user, 0),
        )
        for user, state in users
    ]
    return _encode(records)


def restore(meta: EngineMeta, shards: Iterable[bytes]) -> Engine:
    """A fresh engine in the state the meta and user blobs describe."""
    engine = Engine(meta.current, meta.settings)
    table = _compile_table(engine, meta.journeys)
    users = engine.users
    intern = sys.intern
    rates: dict[str, int] = {}
    armed: list[tuple[float, str, Instance]] = []
    for blob in shards:
        for record in _decode_users(blob):
            user = record.user
            instances = []
            for snap in record.instances:
                journey = table[snap.journey]
                stored = snap.context
                if len(stored) == 2:  # the common case: just the entry event
                    context: tuple[Any, ...] = (intern(stored[0]), stored[1])
                else:  # keys are shared strings, not one copy per instance
                    context = tuple(
                        intern(item) if i % 2 == 0 else item for i, item in enumerate(stored)
                    )
                inst = Instance(
                    journey,
                    user,
                    snap.identifier,
                    snap.id,
                    snap.anonymous,
                    snap.entered_at,
                    snap.step,
                    snap.deadline,
                    0,
                    snap.resets,
                    context,
                )
                journey.active += 1
                if snap.deadline:
                    armed.append((snap.deadline, inst.id, inst))
                instances.append(inst)
            users[user] = UserState(tuple(instances), record.traits, tuple(record.once))
            if record.rate:
                rates[user] = record.rate
    engine.timers.load(armed)
    engine.rate_window = (meta.rate_second, rates)
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
        if compiled.version != snap.version:
            raise ValueError(
                f"journey {snap.definition.id}: stored version {snap.version} does not match "
                f"its definition ({compiled.version})"
            )
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
