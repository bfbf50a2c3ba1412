"""The delivery pool: isolation between destinations, spill, draining, reload, recovery."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from test_lane import (
    T0,
    Factory,
    FakeAdapter,
    FakeRunner,
    FakeService,
    config,
    delivery,
    letters,
    limits,
    make_pool,
    mid,
    until,
    wall,
)

from journeyd.delivery import DeliveryPool, DestinationConfigError, PoolClosed
from journeyd.delivery.destinations import FileSender
from journeyd.delivery.spill import SpillQueue, SpillRefused
from journeyd.engine import Delivery
from journeyd.settings import DeliverySettings, FileDestination, WebhookDestination


class Outbox:
    """The daemon's view through the hooks: what it must still keep in memory."""

    def __init__(self) -> None:
        self.pending: dict[str, Delivery] = {}
        self.outcomes: dict[str, str] = {}

    def submitted(self, d: Delivery) -> None:
        self.pending[d.message_id] = d

    def spilled(self, d: Delivery) -> None:
        del self.pending[d.message_id]

    def unspilled(self, d: Delivery) -> None:
        self.pending[d.message_id] = d

    def outcome(self, d: Delivery, outcome: str, attempts: int) -> None:
        self.pending.pop(d.message_id, None)
        self.outcomes[d.message_id] = outcome

    def hooks(self) -> dict[str, Any]:
        return {
            "on_spilled": self.spilled,
            "on_unspilled": self.unspilled,
            "on_outcome": self.outcome,
        }


def two_lane_pool(
    tmp_path: Path, service: FakeService, runner: FakeRunner, *, queue: int, **kwargs: Any
) -> DeliveryPool:
    factory = Factory(
        crm=lambda name: FakeAdapter(name, limits(max_items=10, concurrency=1), wall),
        live=lambda name: runner,
    )
    return make_pool(
        tmp_path,
        {"crm": config(queue=queue), "live": config(queue=queue)},
        factory,
        service=service,
        **kwargs,
    )


async def test_dead_destination_spills_and_never_blocks_another(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Interleaved submits: the healthy destination gets everything at once while the dead
    one keeps `queue` in memory and spills the rest; after recovery all of it arrives, in
    order per destination, with unchanged messageIds."""
    service = FakeService(default=httpx.Response(503))
    runner = FakeRunner(limits(max_items=50))
    outbox = Outbox()
    pool = two_lane_pool(tmp_path, service, runner, queue=50, max_attempts=1000, **outbox.hooks())
    dead = [delivery(n) for n in range(500)]
    live = [delivery(1000 + n, destination="live") for n in range(500)]
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for a, b in zip(dead, live, strict=True):
            outbox.submitted(a)
            await pool.submit(a)
            outbox.submitted(b)
            await pool.submit(b)
        assert trio.current_time() == 0.0  # no submit waited
        await trio.sleep(60)
        stats = pool.lane_stats()
        assert runner.delivered_ids == [d.message_id for d in live]
        assert stats["crm"]["held"] == 50
        assert stats["crm"]["spilled"] == 450
        assert stats["crm"]["breaker"] == "open"
        # The outbox holds only what is in memory; the spill file holds the rest.
        assert sorted(outbox.pending) == sorted(d.message_id for d in dead[:50])
        service.default = httpx.Response(200)
        await trio.sleep(600)
        pool.close()
    assert sorted(service.accepted_ids) == sorted(d.message_id for d in dead)
    accepted = service.accepted_ids
    assert accepted[50:] == [d.message_id for d in dead[50:]]  # the spill drains in order
    assert outbox.pending == {}
    assert set(outbox.outcomes.values()) == {"delivered"}
    assert len(outbox.outcomes) == 1000
    assert letters(tmp_path) == []


async def test_close_drains_memory_and_spill_then_run_returns(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Shutdown loses nothing queued: submitted before run() started, spilled or in memory,
    all of it is delivered before run() returns; a later submit raises PoolClosed."""
    runner = FakeRunner(limits(max_items=3, concurrency=1))
    factory = Factory(live=lambda name: runner)
    pool = make_pool(tmp_path, {"live": config(queue=5)}, factory)
    for n in range(40):
        await pool.submit(delivery(n, destination="live"))
    assert pool.lane_stats()["live"]["spilled"] == 35
    pool.close()
    with pytest.raises(PoolClosed):
        await pool.submit(delivery(99, destination="live"))
    with trio.fail_after(5):
        await pool.run()
    assert runner.delivered_ids == [mid(n) for n in range(40)]
    assert runner.closed
    assert pool.stats == {
        "delivered": 40,
        "retried": 0,
        "dead_lettered": 0,
        "queued": 0,
        "in_flight": 0,
    }


async def test_submit_waits_only_when_spill_refuses_and_the_budget_is_spent(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full: a lane holds past its own queue up to the pool's headroom (delivery.queue),
    then submit waits, and goes on as soon as a delivery settles."""

    def refuse(self: SpillQueue, delivery: Delivery, born: float) -> None:
        raise SpillRefused("disk full")

    monkeypatch.setattr(SpillQueue, "append", refuse)
    runner = FakeRunner(limits(max_items=1, concurrency=1))
    runner.gate = gate = trio.Event()
    pool = make_pool(
        tmp_path, {"live": config(queue=2, timeout="1h")}, Factory(live=lambda n: runner), queue=1
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for n in range(3):  # 2 in the lane, 1 in the headroom
            await pool.submit(delivery(n, destination="live"))
        with trio.move_on_after(30) as blocked:
            await pool.submit(delivery(3, destination="live"))
        assert blocked.cancelled_caught, "submit returned although nothing could take it"
        gate.set()
        await pool.submit(delivery(3, destination="live"))
        pool.close()
    assert runner.delivered_ids == [mid(n) for n in range(4)]


async def test_checkpoint_and_restore_resume_the_spill_after_a_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Restart: the restored pool delivers what was spilled before the checkpoint, except ids
    in skip_message_ids; what was spilled after the checkpoint is cut (the WAL owes it)."""
    service = FakeService(default=httpx.Response(503))
    runner = FakeRunner(limits())
    first = two_lane_pool(tmp_path, service, runner, queue=10, max_attempts=1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        for n in range(100):
            await first.submit(delivery(n))
        cursors = first.checkpoint()
        for n in range(100, 120):
            await first.submit(delivery(n))
        nursery.cancel_scope.cancel()  # a crash: nothing drains
    assert cursors["crm"].records == 90
    assert cursors["live"].records == 0

    service2 = FakeService()
    second = two_lane_pool(tmp_path, service2, FakeRunner(limits()), queue=10)
    skip = {mid(10), mid(50)}
    second.restore(cursors, skip)
    with pytest.raises(RuntimeError):
        second.restore(cursors, skip)
    async with trio.open_nursery() as nursery:
        await nursery.start(second.run)
        await trio.sleep(30)
        second.close()
    expected = [mid(n) for n in range(10, 100) if n not in (10, 50)]
    assert service2.delivered_ids == expected


async def test_without_restore_an_old_spill_is_discarded(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A pool that is not restored starts empty: the outbox re-submits what was owed."""
    service = FakeService(default=httpx.Response(503))
    first = two_lane_pool(tmp_path, service, FakeRunner(limits()), queue=10, max_attempts=1000)
    for n in range(50):
        await first.submit(delivery(n))
    first.checkpoint()
    service2 = FakeService()
    second = two_lane_pool(tmp_path, service2, FakeRunner(limits()), queue=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(second.run)
        second.close()
    assert service2.delivered_ids == []
    assert list((tmp_path / "spill" / "crm").glob("*.spill")) == []


async def test_redrive_resends_with_the_same_message_id_and_a_fresh_age(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A dead letter re-queued by redrive keeps its messageId; max_age counts from the redrive."""
    service = FakeService()
    service.answer(httpx.Response(400))
    factory = Factory(crm=lambda name: FakeAdapter(name, limits(), wall))
    pool = make_pool(tmp_path, {"crm": config(max_age="1h")}, factory, service=service)
    old = delivery(1, at=T0 - 7200)  # older than max_age: a plain submit would expire it
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await pool.submit(delivery(2))
        await until(lambda: pool.stats["dead_lettered"] == 1)
        [letter] = letters(tmp_path)
        assert await pool.redrive([delivery(2), old]) == 2
        pool.close()
    assert letter.message_id == mid(2)
    assert service.delivered_ids == [mid(2), mid(2), mid(1)]
    assert pool.stats["delivered"] == 2


async def test_unknown_destination_name_is_dead_lettered(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A delivery naming no configured destination fails permanently, not forever."""
    outbox = Outbox()
    pool = make_pool(tmp_path, {}, Factory(), **outbox.hooks())
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await pool.submit(delivery(1, destination="gone"))
        pool.close()
    [letter] = letters(tmp_path)
    assert letter.error == "destination gone is not configured"
    assert outbox.outcomes == {mid(1): "dead_lettered"}


async def test_reconfigure_applies_to_later_deliveries(tmp_path: Path) -> None:
    """SIGHUP: deliveries after reconfigure() go to the new file; the old one is closed."""
    pool = DeliveryPool(
        {"outbox": FileDestination(path="first.jsonl")},
        DeliverySettings(),
        resolve_path=lambda p: tmp_path / p,
        dead_letter_path=tmp_path / "dlq.jsonl",
        clock=lambda: T0,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await pool.submit(delivery(1, destination="outbox"))
        with trio.fail_after(5):
            while pool.stats["delivered"] < 1:
                await trio.sleep(0.005)
        pool.reconfigure({"outbox": FileDestination(path="second.jsonl")})
        await pool.submit(delivery(2, destination="outbox"))
        pool.close()
    first = [json.loads(x)["userId"] for x in (tmp_path / "first.jsonl").read_bytes().splitlines()]
    second = [
        json.loads(x)["userId"] for x in (tmp_path / "second.jsonl").read_bytes().splitlines()
    ]
    assert (first, second) == (["u1"], ["u2"])


async def test_removed_destination_delivers_what_it_holds_then_refuses_new_ones(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A reload that drops a destination: its queued and spilled deliveries still go out with
    the old adapter; a new delivery for it is dead-lettered as not configured."""
    runner = FakeRunner(limits(max_items=2, concurrency=1))
    other = FakeRunner(limits())
    factory = Factory(old=lambda name: runner, new=lambda name: other)
    pool = make_pool(tmp_path, {"old": config(queue=3)}, factory)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for n in range(10):
            await pool.submit(delivery(n, destination="old"))
        pool.reconfigure({"new": config()})
        await pool.submit(delivery(20, destination="old"))
        await pool.submit(delivery(21, destination="new"))
        await until(lambda: "old" not in pool.lane_stats())
        pool.close()
    assert runner.delivered_ids == [mid(n) for n in range(10)]
    assert runner.closed
    assert other.delivered_ids == [mid(21)]
    [letter] = letters(tmp_path)
    assert (letter.message_id, letter.error) == (mid(20), "destination old is not configured")


async def test_failed_reconfigure_keeps_the_old_destinations(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A bad reload is rejected before anything changes, so the running config keeps working."""
    runner = FakeRunner(limits())

    def broken(name: str) -> FakeRunner:
        raise DestinationConfigError(f"destination {name}: api_key_env BRAZE_KEY is not set")

    factory = Factory(live=lambda name: runner, crm=broken)
    pool = make_pool(tmp_path, {"live": config()}, factory)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        with pytest.raises(DestinationConfigError, match="BRAZE_KEY is not set"):
            pool.reconfigure({"live": config(), "crm": config()})
        await pool.submit(delivery(1, destination="live"))
        pool.close()
    assert runner.delivered_ids == [mid(1)]
    assert len(factory.built["live"]) == 2  # rebuilt, then thrown away with the failure


def test_missing_webhook_secret_fails_at_construction(tmp_path: Path) -> None:
    """secret_env naming an unset variable is a startup error that names the variable."""
    hook = WebhookDestination(url="http://127.0.0.1:9/hook", secret_env="HOOK_SECRET")
    with pytest.raises(DestinationConfigError) as info:
        DeliveryPool(
            {"hook": hook},
            DeliverySettings(),
            resolve_path=lambda p: tmp_path / p,
            dead_letter_path=tmp_path / "dlq.jsonl",
            environ={},
        )
    assert str(info.value) == (
        "destination hook: environment variable HOOK_SECRET (secret_env) is not set"
    )


@pytest.mark.parametrize("value", ["s3cr3t-value", "whsec_!!!not-base64!!!", "whsec_"])
def test_malformed_webhook_secret_is_rejected_without_echoing_it(
    tmp_path: Path, value: str
) -> None:
    """A bad secret is refused at startup, and the message never contains the secret."""
    hook = WebhookDestination(url="http://127.0.0.1:9/hook", secret_env="HOOK_SECRET")
    with pytest.raises(DestinationConfigError) as info:
        DeliveryPool(
            {"hook": hook},
            DeliverySettings(),
            resolve_path=lambda p: tmp_path / p,
            dead_letter_path=tmp_path / "dlq.jsonl",
            environ={"HOOK_SECRET": value},
        )
    assert "HOOK_SECRET" in str(info.value)
    assert value.removeprefix("whsec_") not in str(info.value) or value == "whsec_"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"timeout": "soon"}, "destination crm: timeout: invalid duration"),
        ({"max_age": "3 days"}, "destination crm: max_age: invalid duration"),
        ({"queue": 0}, "destination crm: queue must be at least 1"),
        ({"max_attempts": 0}, "destination crm: max_attempts must be at least 1"),
    ],
)
def test_bad_policy_keys_fail_at_construction(
    tmp_path: Path, policy: Mapping[str, Any], message: str
) -> None:
    """A policy key that cannot work stops startup with the destination and key named."""
    factory = Factory(crm=lambda name: FakeRunner(limits()))
    with pytest.raises(DestinationConfigError, match=message):
        make_pool(tmp_path, {"crm": config(**policy)}, factory)


async def test_file_destination_lines_equal_payloads_and_resolve_relative_paths(
    tmp_path: Path,
) -> None:
    """The file destination writes exactly the payload, one line per send, at resolve_path(path),
    flushed per batch so every line is readable while the file is still open."""
    resolved: list[str] = []

    def resolve(path: str) -> Path:
        resolved.append(path)
        return tmp_path / "cfgdir" / path

    pool = DeliveryPool(
        {"outbox": FileDestination(path="var/out/deliveries.jsonl")},
        DeliverySettings(),
        resolve_path=resolve,
        dead_letter_path=tmp_path / "dlq.jsonl",
        environ={},
        clock=lambda: T0,
    )
    target = tmp_path / "cfgdir" / "var" / "out" / "deliveries.jsonl"
    sent = [delivery(n, destination="outbox") for n in range(20)]
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for d in sent:
            await pool.submit(d)
        with trio.fail_after(5):
            while pool.stats["delivered"] < len(sent):
                await trio.sleep(0.005)
        lines_while_open = target.read_bytes().splitlines()
        pool.close()
    assert resolved == ["var/out/deliveries.jsonl"]
    assert len(lines_while_open) == len(sent)
    assert [json.loads(line) for line in target.read_bytes().splitlines()] == [
        d.payload for d in sent
    ]


async def test_file_runner_writes_a_batch_with_one_write(tmp_path: Path) -> None:
    """The file runner turns a batch into one write and one flush (the lane's batching is the
    group commit), and every line is on disk when run() returns."""
    path = tmp_path / "out.jsonl"
    sender = FileSender("outbox", FileDestination(path="out.jsonl"), path=path)
    sender.open()
    sent = [delivery(n, destination="outbox") for n in range(50)]
    outcomes = await sender.run(sent)
    on_disk = path.read_bytes().splitlines()
    await sender.aclose()
    assert len(outcomes) == 50
    assert (sender.batches_written, sender.lines_written) == (1, 50)
    assert [json.loads(line) for line in on_disk] == [d.payload for d in sent]


async def test_run_twice_is_refused(tmp_path: Path) -> None:
    """A pool runs once; a second run() is a programming error, not a second set of lanes."""
    pool = make_pool(tmp_path, {}, Factory())
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        with pytest.raises(RuntimeError):
            await pool.run()
        pool.close()
