"""Replay determinism: recovering from the WAL alone, or from a snapshot plus the WAL tail,
gives an engine equal to the live one (state fingerprint and future effects alike)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from journeyd.config import load
from journeyd.dedup import DedupWindow
from journeyd.engine import Delivery, Engine
from journeyd.engine.snapshot import state_fingerprint
from journeyd.model import Event
from journeyd.store.outbox import Outbox
from journeyd.store.records import (
    ConfigRecord,
    EventRecord,
    IntentRecord,
    OutcomeRecord,
    TickRecord,
)
from journeyd.store.recovery import recover
from journeyd.store.snapshot import write_snapshot
from journeyd.store.wal import WalWriter

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load(ROOT / "journeyd.toml.example")
T0 = 1_772_355_600.0


class Live:
    """What the daemon's pipeline does, minus the I/O: log each input, then apply it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.engine = Engine(CONFIG.journeys, CONFIG.settings)
        self.dedup = DedupWindow(86400, 1000)
        self.outbox = Outbox()
        self.wal = WalWriter.open(state_dir / "wal", next_seq=1)
        self.effects: list[Any] = []

    def event(self, event: Event, now: float) -> None:
        if self.dedup.seen("", event.messageId or "", now):
            return
        self.wal.append([EventRecord(now, "", event)])
        self._owe(self.engine.handle(event, now))

    def tick(self, now: float) -> None:
        self.wal.append([TickRecord(now)])
        self._owe(self.engine.fire_due(now))

    def reload(self, journeys: Any) -> None:
        self.wal.append([ConfigRecord(CONFIG.settings, list(journeys))])
        self.engine.load(journeys, CONFIG.settings)

    def deliver(self, count: int) -> None:
        """The pool settles the oldest `count` owed deliveries."""
        for delivery in self.outbox.pending()[:count]:
            self.outbox.done(delivery.message_id)
            self.wal.append(
                [OutcomeRecord(delivery.message_id, delivery.destination, "delivered", 1)]
            )

    def snapshot(self) -> None:
        write_snapshot(
            self.state_dir / "snapshots",
            self.wal.written_seq,
            self.engine,
            self.dedup,
            self.outbox,
        )

    def _owe(self, effects: list[Any]) -> None:
        self.effects.extend(effects)
        deliveries = [e for e in effects if type(e) is Delivery]
        if deliveries:
            self.wal.append([IntentRecord(d) for d in deliveries])
            for d in deliveries:
                self.outbox.add(d)


def recovered(state_dir: Path) -> Any:
    return recover(state_dir, CONFIG.settings, CONFIG.journeys, DedupWindow(86400, 1000))


def cart(user: str, cart_id: str, total: float, mid: str) -> Event:
    return Event(
        type="track",
        userId=user,
        event="Cart Modified",
        messageId=mid,
        properties={"cart_id": cart_id, "total": total},
    )


def scenario(live: Live, split_at: int | None = None) -> None:
    inputs: list[tuple[str, Any]] = []
    for i in range(40):
        user = f"u{i % 7}"
        inputs.append(("event", (cart(user, f"c{i % 3}", 5 + i, f"m{i}"), T0 + i * 60)))
        if i % 5 == 0:
            identify = Event(type="identify", userId=user, traits={"email": f"{user}@x"})
            inputs.append(("event", (identify, T0 + i * 60)))
        if i % 9 == 0:
            order = Event(
                type="track",
                userId=user,
                event="Order Completed",
                messageId=f"o{i}",
                properties={"cart_id": "c0"},
            )
            inputs.append(("event", (order, T0 + i * 60 + 1)))
        if i % 11 == 0:
            inputs.append(("tick", T0 + i * 60 + 30))
        if i == 20:
            inputs.append(("deliver", 3))
    signups = [
        Event(type="track", userId=f"s{i}", event="Signed Up", messageId=f"s{i}") for i in range(5)
    ]
    inputs += [("event", (e, T0 + 2500)) for e in signups]
    inputs.append(("event", (cart("u1", "c0", 1, "m0"), T0 + 2600)))  # a repeat: de-duplicated
    inputs.append(("tick", T0 + 3 * 3600))  # carts time out, onboarding waits a day
    inputs.append(("deliver", 5))
    for index, (kind, args) in enumerate(inputs):
        if index == split_at:
            live.snapshot()
        if kind == "event":
            live.event(*args)
        elif kind == "tick":
            live.tick(args)
        else:
            live.deliver(args)


def same_future(first: Engine, second: Engine) -> None:
    """Both engines behave identically from here on: same effects for the same inputs."""
    later = T0 + 10 * 86400
    probe = cart("u3", "c9", 9, "probe")
    a = first.handle(probe, later) + first.fire_due(later + 400 * 86400)
    b = second.handle(probe, later) + second.fire_due(later + 400 * 86400)
    assert msgspec.json.encode(a) == msgspec.json.encode(b)
    assert a  # the probe did something: the comparison is not vacuous


def test_wal_only_replay_equals_live(tmp_path: Path) -> None:
    """With no snapshot, replaying the whole WAL rebuilds the live engine exactly."""
    live = Live(tmp_path)
    scenario(live)
    found = recovered(tmp_path)
    assert found.snapshot_seq is None
    assert found.replayed == live.wal.written_seq
    assert state_fingerprint(found.engine) == state_fingerprint(live.engine)
    assert [d.message_id for d in found.outbox.pending()] == [
        d.message_id for d in live.outbox.pending()
    ]
    assert found.dedup.export() == live.dedup.export()
    same_future(found.engine, live.engine)


def test_snapshot_plus_tail_equals_live(tmp_path: Path) -> None:
    """A snapshot taken mid-way plus the WAL after it rebuilds the same engine."""
    live = Live(tmp_path)
    scenario(live, split_at=30)
    found = recovered(tmp_path)
    assert found.snapshot_seq is not None and 0 < found.snapshot_seq < live.wal.written_seq
    assert found.replayed == live.wal.written_seq - found.snapshot_seq
    assert state_fingerprint(found.engine) == state_fingerprint(live.engine)
    assert {d.message_id for d in found.outbox.pending()} == {
        d.message_id for d in live.outbox.pending()
    }
    same_future(found.engine, live.engine)


def test_wal_only_and_snapshot_recoveries_agree(tmp_path: Path) -> None:
    """The two recovery paths agree with each other, not just with the live run."""
    live = Live(tmp_path)
    scenario(live, split_at=25)
    with_snapshot = recovered(tmp_path)
    shutil.rmtree(tmp_path / "snapshots")
    wal_only = recovered(tmp_path)
    assert state_fingerprint(with_snapshot.engine) == state_fingerprint(wal_only.engine)


def test_owed_deliveries_come_from_replayed_decisions_when_intents_were_lost(
    tmp_path: Path,
) -> None:
    """A delivery whose intent record never reached the log is still owed after a crash:
    replaying the event that decided it decides it again, with the same messageId."""
    live = Live(tmp_path)
    live.wal.append([EventRecord(T0, "", cart("z", "c1", 3, "z1"))])
    live.engine.handle(cart("z", "c1", 3, "z1"), T0)
    live.wal.append([TickRecord(T0 + 3 * 3600)])
    effects = live.engine.fire_due(T0 + 3 * 3600)  # a crash before its intent is written
    (nudge,) = [e for e in effects if type(e) is Delivery]
    found = recovered(tmp_path)
    assert [d.message_id for d in found.outbox.pending()] == [nudge.message_id]


def test_config_records_replay_journey_versions(tmp_path: Path) -> None:
    """A reload in the log is replayed at its place: old instances keep the old version."""
    live = Live(tmp_path)
    live.event(cart("v", "c1", 3, "v1"), T0)
    changed = [
        msgspec.structs.replace(j, name="Renamed") if j.id == "cart-abandonment" else j
        for j in CONFIG.journeys
    ]
    live.reload(changed)
    live.event(cart("v", "c2", 3, "v2"), T0 + 1)
    found = recovered(tmp_path)
    versions = sorted({i.journey.version for i in found.engine.instances()})
    assert len(versions) == 2
    assert state_fingerprint(found.engine) == state_fingerprint(live.engine)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Cart Modified", "Order Completed", "Cart Emptied", "Signed Up"]),
            st.integers(0, 4),
            st.integers(0, 2),
            st.integers(0, 7200),
            st.booleans(),
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 40),
)
def test_replay_equals_live_for_any_event_sequence(
    tmp_path_factory: Any, steps: list[tuple[str, int, int, int, bool]], split: int
) -> None:
    """Whatever the events and wherever the snapshot falls, recovery equals the live run."""
    state_dir = tmp_path_factory.mktemp("replay")
    live = Live(state_dir)
    now = T0
    for index, (name, user, cart_id, gap, tick) in enumerate(steps):
        if index == split:
            live.snapshot()
        now += gap
        event = Event(
            type="track",
            userId=f"u{user}",
            event=name,
            messageId=f"m{index}",
            properties={"cart_id": f"c{cart_id}", "total": gap % 50},
        )
        live.event(event, now)
        if tick:
            live.tick(now + 1)
    found = recovered(state_dir)
    assert state_fingerprint(found.engine) == state_fingerprint(live.engine)


def test_a_snapshot_alone_restores_the_state_it_was_taken_from(tmp_path: Path) -> None:
    """Every field of every instance, the traits, the once-list and the rate window
    survive a snapshot round trip, while instances are mid-hold with resets counted."""
    from journeyd.store.snapshot import list_snapshots, load_snapshot

    live = Live(tmp_path)
    scenario(live, split_at=30)
    live.event(cart("w", "c1", 3, "w1"), T0 + 4 * 3600)
    live.event(cart("w", "c1", 4, "w2"), T0 + 4 * 3600 + 5)  # a reset: resets == 1
    live.event(Event(type="identify", userId="w", traits={"plan": "pro"}), T0 + 4 * 3600 + 6)
    assert any(i.resets for i in live.engine.instances())
    live.snapshot()
    (newest_seq, newest), *_ = list_snapshots(tmp_path / "snapshots")
    loaded = load_snapshot(newest)
    assert loaded.seq == newest_seq == live.wal.written_seq
    assert state_fingerprint(loaded.engine) == state_fingerprint(live.engine)
    assert loaded.dedup_entries == live.dedup.export()
    same_future(loaded.engine, live.engine)
