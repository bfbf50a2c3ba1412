"""The bounded queue between the listeners and the engine loop, and how acks come back.

A listener stamps each event, then `put`s (socket: waits while full, so acks slow down) or
`offer`s a whole batch (HTTP: all or nothing, so a full queue becomes a 503). Every item
carries a `Ticket` that the engine loop calls back once the event is accepted; that is the
only moment a client may be told `ok`. When the write-ahead log lands, the loop appends
and syncs between dequeue and accept, and nothing here changes.
"""

from __future__ import annotations

import os
import random
import time
from typing import NamedTuple, Protocol

import trio

from journeyd.model import Event, Journey, format_timestamp, parse_timestamp
from journeyd.settings import Settings


class Ticket(Protocol):
    def accepted(self, index: int, message_id: str) -> None: ...

    def rejected(self, index: int, error: str) -> None: ...


class Item(NamedTuple):
    event: Event
    received: float  # epoch seconds: the engine's `now` for this event
    scope: str  # de-duplication scope (the HTTP write key; "" for the socket)
    ticket: Ticket
    position: int  # the ticket's own numbering (a line, or an index in a batch)


class Tick(NamedTuple):
    """Ask the engine to fire due timers (from the daemon's timer loop)."""

    now: float
    done: trio.Event


class Reload(NamedTuple):
    """Install a new config at this point of the log (from SIGHUP)."""

    settings: Settings
    journeys: tuple[Journey, ...]
    done: trio.Event
    applied: list[bool]  # the pipeline appends True once logged and applied, else False


class Inbound:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._send, self.receive = trio.open_memory_channel[Item | Tick | Reload](capacity)

    @property
    def free(self) -> int:
        return self.capacity - self._send.statistics().current_buffer_used

    async def put(self, item: Item | Tick | Reload) -> None:
        await self._send.send(item)

    def try_put(self, item: Item) -> bool:
        """Queue without yielding; False when the queue is full."""
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            return False
        return True

    def offer(self, items: list[Item]) -> bool:
        """Queue all items or none (True when queued). No await between check and send."""
        if len(items) > self.free:
            return False
        for item in items:
            self._send.send_nowait(item)
        return True

    def close(self) -> None:
        self._send.close()


def stamp(event: Event, received: float, sent_at: str | None = None) -> Event:
    """Fill in receivedAt and a messageId, and correct the client's clock skew.

    With `sentAt` (the event's own or the batch's), the client's clock offset is
    `sentAt - timestamp`, so timestamp = receivedAt - (sentAt - timestamp); the original
    is kept in `originalTimestamp`. Without a timestamp, the event happened on arrival.
    """
    event.receivedAt = format_timestamp(received)
    if not event.messageId:
        event.messageId = new_message_id()
    sent = event.sentAt or sent_at
    if event.timestamp is None:
        event.timestamp = event.receivedAt
    elif sent is not None:
        original = event.timestamp
        corrected = received - (parse_timestamp(sent) - parse_timestamp(original))
        event.originalTimestamp = event.originalTimestamp or original
        event.timestamp = format_timestamp(corrected)
    return event


def now() -> float:
    return time.time()


_random = random.Random(int.from_bytes(os.urandom(16), "big"))


def new_message_id() -> str:
    """A random version-4 UUID, from a generator seeded once from the OS: uuid4() makes a
    getrandom() system call per id, which showed up at the top of ingest profiles."""
    bits = (_random.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET
    hexed = f"{bits:032x}"
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


# RFC 9562 version-4 layout: version nibble 0100, variant bits 10.
_UUID4_CLEAR = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID4_SET = (0x4 << 76) | (0x2 << 62)
