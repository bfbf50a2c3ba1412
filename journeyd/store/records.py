"""What the write-ahead log stores: one compact msgspec struct per record kind.

Records are a tagged union encoded as msgpack arrays with an integer tag first, so a record
costs a few bytes of framing beyond its data. The sequence number is not part of a record:
it lives in the WAL frame header (`journeyd.store.wal`).

Tags are part of the on-disk format: never renumber or reuse one; a new kind gets a new tag.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from journeyd.engine import Delivery
from journeyd.model import Event, Journey
from journeyd.settings import Settings


class _Record(msgspec.Struct, array_like=True, frozen=True):
    """Base of every WAL record: positional (array-like) encoding, immutable."""


class EventRecord(_Record, tag=1, frozen=True):
    """An accepted event: `received` is the `now` the engine used; `scope` the de-dup scope."""

    received: float
    scope: str
    event: Event


class TickRecord(_Record, tag=2, frozen=True):
    """The timer loop ran `engine.fire_due(now)`."""

    now: float


class IntentRecord(_Record, tag=3, frozen=True):
    """A delivery the engine decided, stored before the sender pool is handed it."""

    delivery: Delivery


class OutcomeRecord(_Record, tag=4, frozen=True):
    """How a delivery ended; an intent without one is re-sent (same messageId) on recovery."""

    message_id: str
    destination: str
    outcome: Literal["delivered", "dead_lettered"]
    attempts: int


class ConfigRecord(_Record, tag=5, frozen=True):
    """The settings and journeys in force from this point of the log on."""

    settings: Settings
    journeys: list[Journey]


Record = EventRecord | TickRecord | IntentRecord | OutcomeRecord | ConfigRecord

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)


def encode_record(record: Record) -> bytes:
    """One record as msgpack bytes (no framing).

    Raises OverflowError for integers outside msgpack's range (below -2**63 or above
    2**64 - 1) and TypeError / msgspec.EncodeError for values msgpack cannot hold.
    """
    return _encoder.encode(record)


def decode_record(data: bytes | bytearray | memoryview) -> Record:
    """The inverse of `encode_record`; raises msgspec.DecodeError (or ValidationError)."""
    return _decoder.decode(data)


def encoder() -> msgspec.msgpack.Encoder:
    """The shared encoder, for the WAL writer's `encode_into` fast path."""
    return _encoder
