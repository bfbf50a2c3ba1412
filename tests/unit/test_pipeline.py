"""The pipeline in-process (real WAL, real pool, no sockets): the failure paths a review
found, kept as regressions."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from engine_helpers import CART, journey

import journeyd.store.wal as wal_module
from journeyd.dedup import DedupWindow
from journeyd.delivery import DeliveryPool
from journeyd.engine import Delivery, Engine
from journeyd.errors import DurabilityLost
from journeyd.ingest.inbound import Inbound, Item
from journeyd.model import Event
from journeyd.pipeline import Pipeline
from journeyd.settings import Settings
from journeyd.store.outbox import Outbox
from journeyd.store.recovery import recover
from journeyd.store.wal import WalWriter

SEND_NOW = """
id = "go"
[entry]
event = "Go"
rule = "once"
[[steps]]
id = "s"
type = "send"
destination = "outbox"
event_name = "Hi"
"""


class Ticket:
    def __init__(self) -> None:
        self.results: dict[int, tuple[str, str]] = {}

    def accepted(self, index: int, message_id: str) -> None:
        self.results[index] = ("ok", message_id)

    def rejected(self, index: int, error: str) -> None:
        self.results[index] = ("error", error)


def settings(tmp: Path, fsync: str) -> Settings:
    return msgspec.convert(
        {
            "daemon": {"fsync": fsync},
            "destinations": {"outbox": {"type": "file", "path": str(tmp / "out.jsonl")}},
        },
        Settings,
    )


def build(
    tmp: Path, source: str, fsync: str = "batch", segment_bytes: int = 64 << 20
) -> tuple[Pipeline, DeliveryPool, Inbound]:
    config = settings(tmp, fsync)
    holder: list[Pipeline] = []  # the hooks need the pipeline, built after the pool
    pool = DeliveryPool(
        config.destinations,
        config.delivery,
        resolve_path=lambda p: tmp / p,
        dead_letter_path=tmp / "dead.jsonl",
        spill_dir=tmp / "spill",
        on_outcome=lambda d, o, a: holder[0].record_outcome(d, o, a),  # noqa: PLW0108
        on_spilled=lambda d: holder[0].outbox.done(d.message_id),
        on_unspilled=lambda d: holder[0].outbox.add(d),  # noqa: PLW0108
    )
    inbound = Inbound(1000)
    pipeline = Pipeline(
        engine=Engine([journey(source)], config),
        dedup=DedupWindow(3600, 1000),
        outbox=Outbox(),
        wal=WalWriter.open(tmp / "wal", next_seq=1, segment_bytes=segment_bytes),
        wal_dir=tmp / "wal",
        snapshots_dir=tmp / "snapshots",
        fsync=fsync,
        pool=pool,
        inbound=inbound,
        snapshot_every_s=3600,
        snapshot_after_records=10**9,
    )
    holder.append(pipeline)
    return pipeline, pool, inbound


def event(user: str, name: str, message_id: str, **properties: Any) -> Event:
    return Event(type="track", userId=user, event=name, messageId=message_id, properties=properties)


async def test_a_failed_fsync_in_an_append_stops_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsync that fails while the WAL rotates a segment is fail-stop (DurabilityLost out
    of the pipeline, so the daemon exits 74), not a storage error to refuse and retry."""
    pipeline, pool, inbound = build(tmp_path, CART, segment_bytes=30)
    failing = {"on": False}
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if failing["on"]:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(wal_module.os, "fsync", fsync)
    ticket = Ticket()
    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            nursery.start_soon(pipeline.run)
            await inbound.put(
                Item(event("u1", "Cart Modified", "m1", cart_id="c1"), time.time(), "", ticket, 0)
            )
            with trio.fail_after(5):
                while 0 not in ticket.results:
                    await trio.sleep(0.01)
            failing["on"] = True
            await inbound.put(
                Item(event("u1", "Cart Modified", "m2", cart_id="c2"), time.time(), "", ticket, 1)
            )
            with trio.fail_after(5):
                await trio.sleep_forever()
    assert caught.group_contains(DurabilityLost)
    assert ticket.results[0][0] == "ok"
    assert 1 not in ticket.results or ticket.results[1][0] == "error"


async def test_duplicates_alone_are_acked_under_fsync_always(tmp_path: Path) -> None:
    """Under fsync = always, a batch of nothing but duplicates (an SDK retry) is answered,
    and the pipeline still finishes when its input closes."""
    pipeline, pool, inbound = build(tmp_path, SEND_NOW, fsync="always")
    finished = trio.Event()

    async def run_pipeline() -> None:
        await pipeline.run()
        finished.set()

    ticket = Ticket()
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        nursery.start_soon(run_pipeline)
        await inbound.put(Item(event("u1", "Go", "m-1"), time.time(), "", ticket, 0))
        with trio.fail_after(5):
            while 0 not in ticket.results:
                await trio.sleep(0.01)
        await inbound.put(Item(event("u1", "Go", "m-1"), time.time(), "", ticket, 1))
        with trio.fail_after(5):
            while 1 not in ticket.results:
                await trio.sleep(0.01)
        assert ticket.results[1] == ("ok", "m-1")
        inbound.close()
        with trio.fail_after(5):
            await finished.wait()
        pool.close()


async def test_a_redrive_is_owed_by_a_snapshot_taken_while_its_intent_syncs(
    tmp_path: Path,
) -> None:
    """The outbox holds a redriven delivery from the moment its intent is written, so a
    snapshot forked during that intent's fsync still owes it after a crash."""
    pipeline, _pool, inbound = build(tmp_path, CART)
    real_sync = pipeline.wal.sync
    calls = {"n": 0}

    def slow_first_sync() -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(0.5)
        return real_sync()

    pipeline.wal.sync = slow_first_sync  # type: ignore[method-assign]
    redriven = Delivery(
        at=time.time(),
        user="u9",
        journey="cart",
        instance="i",
        step="s",
        destination="outbox",
        message_id="redriven-1",
        payload={"x": 1},
    )
    ticket = Ticket()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run)
        nursery.start_soon(pipeline.reap_snapshots)
        nursery.start_soon(pipeline.redrive, [redriven])
        await trio.sleep(0.05)
        pipeline.snapshot_requested = True
        await inbound.put(
            Item(event("u1", "Cart Modified", "m1", cart_id="c1"), time.time(), "", ticket, 0)
        )
        with trio.fail_after(10):
            while not any((tmp_path / "snapshots").glob("0*")):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    found = recover(
        tmp_path, settings(tmp_path, "batch"), (journey(CART),), DedupWindow(3600, 1000)
    )
    assert found.snapshot_seq is not None
    assert [d.message_id for d in found.outbox.pending()] == ["redriven-1"]
