"""Start-up recovery: the newest usable snapshot, then the WAL after it, through the engine.

Replaying through the engine is what makes recovery exact: records carry the `now` each
input was handled at, so the engine reproduces the same state and decides the same
deliveries (with the same messageIds). Deliveries decided after the snapshot, and those
the snapshot's outbox still held, minus those with a logged outcome, are the ones still
owed; the daemon re-queues them.

A torn last record (a crash mid-write) is cut off and logged. Damage anywhere else stops
recovery with an error naming the file and offset: refusing to start is better than
silently losing acknowledged events. `journeyd recover --truncate-after SEQ` is the
operator's way past it.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from journeyd import log
from journeyd.dedup import DedupWindow
from journeyd.delivery.spill import SpillCursor
from journeyd.engine import Delivery, Engine
from journeyd.errors import CorruptRecord, StorageError, UnknownFormat
from journeyd.model import Journey
from journeyd.settings import Settings
from journeyd.store.outbox import Outbox
from journeyd.store.records import (
    ConfigRecord,
    EventRecord,
    IntentRecord,
    OutcomeRecord,
    TickRecord,
)
from journeyd.store.snapshot import list_snapshots, load_snapshot
from journeyd.store.wal import find_torn_tail, read_wal, truncate_torn_tail

_log = log.get("journeyd.recovery")


@dataclass(slots=True)
class Recovered:
    engine: Engine
    dedup: DedupWindow
    outbox: Outbox
    last_seq: int
    last_now: float
    snapshot_seq: int | None
    snapshot_path: Path | None
    snapshot_created_at: float | None
    replayed: int
    seconds: float
    torn: tuple[Path, int] | None
    replay_counts: dict[str, int] = field(default_factory=dict)
    # The snapshot's spill cursors (None without a snapshot: the full replay makes the
    # outbox complete), and messageIds settled after the snapshot.
    spill: dict[str, SpillCursor] | None = None
    settled_after_snapshot: set[str] = field(default_factory=set)


def recover(
    state_dir: Path,
    settings: Settings,
    journeys: tuple[Journey, ...],
    dedup: DedupWindow,
    *,
    repair: bool = True,
) -> Recovered:
    """Rebuild the engine from disk. `repair=False` (for `inspect`) changes no file.

    `settings`/`journeys` are used only when there is nothing on disk: otherwise the config
    in force is the one the log recorded, and the caller applies the file's config after.
    """
    collecting = gc.isenabled()
    gc.disable()  # everything recovery builds is long-lived: collecting it meanwhile is waste
    try:
        return _recover(state_dir, settings, journeys, dedup, repair)
    finally:
        if collecting:
            gc.enable()


def _recover(
    state_dir: Path,
    settings: Settings,
    journeys: tuple[Journey, ...],
    dedup: DedupWindow,
    repair: bool,
) -> Recovered:
    started = time.monotonic()
    wal_dir = state_dir / "wal"
    engine: Engine | None = None
    outbox = Outbox()
    after = 0
    snapshot_path = None
    created_at = None
    spill: dict[str, SpillCursor] | None = None
    settled: set[str] = set()
    for seq, path in list_snapshots(state_dir / "snapshots"):
        try:
            loaded = load_snapshot(path)
        except (CorruptRecord, UnknownFormat) as exc:
            _log.error("snapshot.unusable", path=str(path), error=str(exc), trying="an older one")
            continue
        engine, outbox, after = loaded.engine, loaded.outbox, seq
        spill = loaded.spill
        dedup.restore(loaded.dedup_entries)
        snapshot_path, created_at = path, loaded.created_at
        break
    if engine is None:
        engine = Engine(journeys, settings)

    torn = truncate_torn_tail(wal_dir) if repair else find_torn_tail(wal_dir)
    if torn is not None:
        _log.warning(
            "wal.torn_tail",
            file=str(torn[0]),
            offset=torn[1],
            action="truncated" if repair else "ignored (read-only)",
        )
    replayed = 0
    last_seq = after
    last_now = 0.0
    counts = {"events": 0, "ticks": 0, "intents": 0, "outcomes": 0, "configs": 0}
    for seq, record in read_wal(wal_dir, after_seq=after):
        if seq != last_seq + 1:
            raise CorruptRecord(
                wal_dir,
                0,
                f"the log jumps from seq {last_seq} to {seq}: records are missing "
                f"(snapshot covers up to {after})",
            )
        last_seq = seq
        replayed += 1
        if isinstance(record, EventRecord):
            counts["events"] += 1
            last_now = record.received
            dedup.seen(record.scope, record.event.messageId or "", record.received)
            try:
                effects = engine.handle(record.event, record.received)
            except Exception:
                _log.exception("engine.failed", seq=seq, replay=True)
                continue
            _owe(outbox, effects)
        elif isinstance(record, TickRecord):
            counts["ticks"] += 1
            last_now = record.now
            _owe(outbox, engine.fire_due(record.now))
        elif isinstance(record, IntentRecord):
            counts["intents"] += 1
            outbox.add(record.delivery)
        elif isinstance(record, OutcomeRecord):
            counts["outcomes"] += 1
            outbox.done(record.message_id)
            settled.add(record.message_id)
        elif isinstance(record, ConfigRecord):
            counts["configs"] += 1
            engine.load(tuple(record.journeys), record.settings)
    return Recovered(
        engine=engine,
        dedup=dedup,
        outbox=outbox,
        last_seq=last_seq,
        last_now=last_now,
        snapshot_seq=after if snapshot_path is not None else None,
        snapshot_path=snapshot_path,
        snapshot_created_at=created_at,
        replayed=replayed,
        seconds=time.monotonic() - started,
        torn=torn,
        replay_counts=counts,
        spill=spill,
        settled_after_snapshot=settled,
    )


def _owe(outbox: Outbox, effects: list[Any]) -> None:
    for effect in effects:
        if type(effect) is Delivery:
            outbox.add(effect)


def config_differs(engine: Engine, settings: Settings, journeys: tuple[Journey, ...]) -> bool:
    encode = msgspec.msgpack.encode
    return encode(engine.settings) != encode(settings) or encode(
        list(engine.definitions)
    ) != encode(list(journeys))


__all__ = ["Recovered", "StorageError", "config_differs", "recover"]
