"""Builders for the engine unit tests: journeys, settings, engines, events, and a clock.

Journeys are written as TOML strings (or dicts) and go through `msgspec.convert` into
`journeyd.model.Journey`, then through `check_journey`, so no test feeds the engine a
journey that `journeyd check` would reject.
"""

from __future__ import annotations

import itertools
import textwrap
import tomllib
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import msgspec

from journeyd.engine import AnyEffect, Delivery, Engine
from journeyd.model import Event, Journey
from journeyd.settings import Settings
from journeyd.validate import check_journey

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: whole seconds, exact as a float
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0

E = TypeVar("E")

DEFAULT_AUDIENCES: dict[str, Any] = {
    "vip": {"all": [{"trait": "tier", "op": "eq", "value": "gold"}]},
}

CART = """
id = "cart"
[entry]
event = "Cart Modified"
rule = "re-enter"
unique_identifier = "cart_id"

[[exit]]
event = "Cart Emptied"
match_identifier = true

[[exit]]
event = "Account Deleted"
send = true

[exit_send]
destination = "outbox"
event_name = "Cart Journey Exited"

[[steps]]
id = "wait"
type = "hold_until"
max_duration = "2h"
on_timeout = "nudge"
branches = [
  { name = "updated cart", event = "Cart Modified", reset = true },
  { name = "purchased", event = "Order Completed" },
]

[[steps]]
id = "nudge"
type = "send"
destination = "outbox"
event_name = "Cart Abandoned"
traits = ["email"]
"""


def make_settings(
    limits: dict[str, Any] | None = None, audiences: dict[str, Any] | None = None
) -> Settings:
    """Settings with one `file` destination called "outbox" and the "vip" audience."""
    data = {
        "limits": limits or {},
        "destinations": {"outbox": {"type": "file", "path": "deliveries.jsonl"}},
        "audiences": DEFAULT_AUDIENCES if audiences is None else audiences,
    }
    return msgspec.convert(data, Settings)


def journey(
    source: str | dict[str, Any], settings: Settings | None = None, *, validate: bool = True
) -> Journey:
    """A Journey from TOML text or a dict, checked like `journeyd check` would."""
    data = tomllib.loads(textwrap.dedent(source)) if isinstance(source, str) else source
    result = msgspec.convert(data, Journey)
    if validate:
        problems = check_journey(result, settings or make_settings())
        assert not problems, problems
    return result


def make_engine(
    *sources: str | dict[str, Any] | Journey,
    limits: dict[str, Any] | None = None,
    audiences: dict[str, Any] | None = None,
) -> Engine:
    settings = make_settings(limits, audiences)
    journeys = [s if isinstance(s, Journey) else journey(s, settings) for s in sources]
    return Engine(journeys, settings)


_ids = itertools.count(1)


def track(
    user: str | None,
    name: str | None,
    properties: dict[str, Any] | None = None,
    *,
    anonymous: bool = False,
    message_id: str | None = None,
) -> Event:
    """A track event; `anonymous=True` puts the user key in anonymousId instead of userId."""
    return Event(
        type="track",
        event=name,
        userId=None if anonymous else user,
        anonymousId=user if anonymous else None,
        properties=properties,
        messageId=message_id or f"m-{next(_ids)}",
    )


def identify(user: str, traits: dict[str, Any], *, message_id: str | None = None) -> Event:
    return Event(
        type="identify", userId=user, traits=traits, messageId=message_id or f"m-{next(_ids)}"
    )


class Run:
    """An engine plus a virtual clock, recording every effect in order."""

    def __init__(self, engine: Engine, now: float = T0) -> None:
        self.engine = engine
        self.now = now
        self.effects: list[AnyEffect] = []

    def handle(self, event: Event, at: float | None = None) -> list[AnyEffect]:
        if at is not None:
            assert at >= self.now, "the test clock never runs backwards"
            self.now = at
        out = self.engine.handle(event, self.now)
        self.effects.extend(out)
        return out

    def track(self, user: str, name: str, properties: dict[str, Any] | None = None, **kw: Any):
        at = kw.pop("at", None)
        return self.handle(track(user, name, properties, **kw), at)

    def identify(self, user: str, traits: dict[str, Any], at: float | None = None):
        return self.handle(identify(user, traits), at)

    def until(self, at: float) -> list[AnyEffect]:
        """Move the clock to `at`, firing every timer due by then."""
        assert at >= self.now
        self.now = at
        out = self.engine.fire_due(at)
        self.effects.extend(out)
        return out

    def wait(self, seconds: float) -> list[AnyEffect]:
        return self.until(self.now + seconds)

    def drain(self) -> list[AnyEffect]:
        """Fire timers one deadline at a time until none is left."""
        out: list[AnyEffect] = []
        for _ in range(100_000):
            deadline = self.engine.next_deadline()
            if deadline is None:
                return out
            out.extend(self.until(max(deadline, self.now)))
        raise AssertionError("timers never ran out")


def of(effects: Iterable[Any], kind: type[E]) -> list[E]:
    return [e for e in effects if isinstance(e, kind)]


def kinds(effects: Iterable[Any]) -> list[str]:
    """The `kind` tags, in order: enter, step, send, exit, complete, expire, drop."""
    return [type(e).__struct_config__.tag for e in effects]


def steps(effects: Iterable[Any]) -> list[tuple[str, str | None]]:
    """(step, branch) of every Stepped effect, in order."""
    return [(e.step, e.branch) for e in effects if type(e).__struct_config__.tag == "step"]


def sends(effects: Iterable[Any]) -> list[Delivery]:
    return of(effects, Delivery)


def only(items: Sequence[E]) -> E:
    assert len(items) == 1, items
    return items[0]


def encode(effects: Sequence[AnyEffect]) -> bytes:
    return msgspec.json.encode(list(effects))
