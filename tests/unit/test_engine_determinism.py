"""Determinism: the same events give byte-identical effects in any fresh engine, any process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from engine_helpers import CART, HOUR, MINUTE, T0, encode, identify, kinds, make_engine, track

from journeyd.engine import AnyEffect
from journeyd.model import Event

ONBOARDING = """
id = "onboarding"
[entry]
event = "Signed Up"
rule = "once"

[[steps]]
id = "settle"
type = "delay"
duration = "1d"
next = "by-plan"

[[steps]]
id = "by-plan"
type = "data_split"
else = "ab"
branches = [
  { name = "pro", next = "pro-welcome", when = [{ trait = "plan", op = "eq", value = "pro" }] },
  { name = "vip", next = "pro-welcome", when = [{ audience = "vip" }] },
  { name = "rich", next = "pro-welcome", when = [
    { context = "Signed Up", property = "seats", op = "gte", value = 10 },
  ] },
]

[[steps]]
id = "ab"
type = "random_split"
branches = [
  { name = "A", percent = 50, next = "mail-a" },
  { name = "B", percent = 50, next = "mail-b" },
]

[[steps]]
id = "mail-a"
type = "send"
destination = "outbox"
event_name = "Mail A"

[[steps]]
id = "mail-b"
type = "send"
destination = "outbox"
event_name = "Mail B"

[[steps]]
id = "pro-welcome"
type = "send"
destination = "outbox"
event_name = "Pro Welcome"
traits = ["email", "plan"]
"""


def script() -> list[tuple[float, Event]]:
    """A fixed mix of entries, identifies, resets, purchases, exits and ties between timers."""
    events: list[tuple[float, Event]] = []
    for n in range(40):
        user = f"user-{n}"
        at = T0 + n * MINUTE
        mid = f"{user}-"
        if n % 3 == 0:
            events.append(
                (at, identify(user, {"plan": "pro", "email": f"{user}@x"}, message_id=mid + "i"))
            )
        if n % 5 == 0:
            events.append((at, identify(user, {"tier": "gold"}, message_id=mid + "t")))
        events.append((at, track(user, "Signed Up", {"seats": n % 12}, message_id=mid + "s")))
        events.append((T0, track(user, "Cart Modified", {"cart_id": "c1"}, message_id=mid + "c1")))
        events.append((at, track(user, "Cart Modified", {"cart_id": "c2"}, message_id=mid + "c2")))
        if n % 4 == 1:
            events.append(
                (
                    at + 30,
                    track(user, "Cart Modified", {"cart_id": "c1", "r": n}, message_id=mid + "r"),
                )
            )
        if n % 4 == 2:
            events.append(
                (at + 60, track(user, "Order Completed", {"cart_id": "c2"}, message_id=mid + "o"))
            )
        if n % 7 == 3:
            events.append((at + 90, track(user, "Account Deleted", {}, message_id=mid + "d")))
    anon = track("anon-1", "Signed Up", {"seats": 20}, anonymous=True, message_id="anon-s")
    events.append((T0 + 5, anon))
    events.sort(key=lambda pair: pair[0])
    return events


def run_script(events: list[tuple[float, Event]]) -> list[AnyEffect]:
    engine = make_engine(CART, ONBOARDING)
    out: list[AnyEffect] = []
    now = T0
    for at, event in events:
        now = max(now, at)
        out.extend(engine.handle(event, now))
    while (deadline := engine.next_deadline()) is not None:
        out.extend(engine.fire_due(deadline))
    return out


def scenario() -> bytes:
    return encode(run_script(script()))


def test_same_events_give_byte_identical_effects() -> None:
    """Two fresh engines fed the same events produce byte-identical effect lists."""
    events = script()
    first = run_script(events)
    second = run_script(events)
    assert encode(first) == encode(second)
    # The scenario is not trivial: it enters, steps, sends, exits and completes.
    assert {"enter", "step", "send", "exit", "complete"} <= set(kinds(first))
    assert len(first) > 300


def test_effects_do_not_depend_on_the_process_hash_seed() -> None:
    """A replay in another process (another PYTHONHASHSEED) gives the same bytes: no hash()."""
    here = Path(__file__).parent
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from test_engine_determinism import scenario;"
        "sys.stdout.buffer.write(scenario())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(here)],
        capture_output=True,
        env=env,
        check=True,
        timeout=120,
    )
    assert result.stdout == scenario()


def test_late_firing_does_not_change_effects() -> None:
    """Firing timers late (a busy loop) gives the same effects as firing each on time."""
    events = script()
    on_time = run_script(events)
    engine = make_engine(CART, ONBOARDING)
    late: list[AnyEffect] = []
    now = T0
    for at, event in events:
        now = max(now, at)
        late.extend(engine.handle(event, now))
    late.extend(engine.fire_due(T0 + 1000 * HOUR))
    assert encode(late) == encode(on_time)
