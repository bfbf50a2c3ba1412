"""Run events through the engine on a virtual clock: the heart of `journeyd simulate`.

The clock jumps to each event's `timestamp` (an event without one arrives at the previous
event's time) and, after the last event, from timer to timer until none is left or
`until` is reached. Nothing is sent; effects are returned for printing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from journeyd.engine import AnyEffect, Engine
from journeyd.errors import BadInput
from journeyd.intake import decode_event
from journeyd.model import Event, parse_timestamp


@dataclass(frozen=True, slots=True)
class LineProblem:
    line: int
    message: str


@dataclass(slots=True)
class Simulation:
    engine: Engine
    start: float
    until: float | None = None
    now: float | None = None
    events: int = 0
    clamped: int = 0

    def feed(self, event: Event) -> list[AnyEffect]:
        when = parse_timestamp(event.timestamp) if event.timestamp else None
        if when is None:
            when = self.now if self.now is not None else self.start
        if self.now is not None and when < self.now:
            self.clamped += 1  # the virtual clock never runs backwards
            when = self.now
        self.now = when
        self.events += 1
        return self.engine.handle(event, when)

    def drain(self) -> Iterator[AnyEffect]:
        """Let virtual time run on after the last event, timer by timer."""
        while (deadline := self.engine.next_deadline()) is not None:
            if self.until is not None and deadline > self.until:
                break
            self.now = deadline
            yield from self.engine.fire_due(deadline)
        if self.until is not None and (self.now is None or self.now < self.until):
            self.now = self.until


def read_events(lines: Iterable[bytes]) -> Iterator[Event | LineProblem]:
    """Decode NDJSON; blank lines are skipped, bad lines reported with their number.

    Events without a messageId get `line-N`, so instance ids stay stable run to run.
    """
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            event = decode_event(raw)
        except BadInput as exc:
            yield LineProblem(number, str(exc))
            continue
        if not event.messageId:
            event.messageId = f"line-{number}"
        yield event
