"""The engine side of the daemon: every input is logged, made durable, applied, acknowledged.

    Inbound ──> sequencer ──WAL append──> applier ──engine──> ack; intents ──> pool
     (events,    (de-dup, stamp `now`,    (waits until the     outcomes <── pool
      ticks,      one write per batch)     batch is durable)
      reloads)          │                        ▲
                        └──> committer: fsync ───┘ (group commit)

Three tasks, so the next batch is written while the previous one's fsync runs: under
`fsync = "batch"` many clients share one fsync. Timer firings and config reloads travel
through the same sequencer as events, so the WAL order is exactly the order the engine saw,
and replaying it reproduces the engine's state and effects.

Snapshots are taken between batches by forking: the child writes the frozen copy while this
process goes on; the pause is the fork itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from journeyd import log
from journeyd.dedup import DedupWindow
from journeyd.delivery import DeliveryPool, PoolClosed
from journeyd.delivery.spill import SpillCursor
from journeyd.engine import Delivery, Dropped, Engine
from journeyd.errors import BadInput, DurabilityLost, StorageError, StorageFull
from journeyd.ingest.inbound import Inbound, Item, Reload, Tick
from journeyd.log import RateLimitedLog
from journeyd.store.outbox import Outbox
from journeyd.store.records import (
    ConfigRecord,
    EventRecord,
    IntentRecord,
    OutcomeRecord,
    Record,
    TickRecord,
)
from journeyd.store.snapshot import list_snapshots, prune_snapshots, write_snapshot
from journeyd.store.wal import WalWriter, prune

_log = log.get("journeyd.pipeline")
BATCH = 1024
APPLY_QUEUE = 8  # batches written but not yet applied
FULL_RETRY_S = 1.0


_EVENT, _DUPLICATE, _TICK, _RELOAD = range(4)


class Pipeline:
    def __init__(
        self,
        *,
        engine: Engine,
        dedup: DedupWindow,
        outbox: Outbox,
        wal: WalWriter,
        wal_dir: Path,
        snapshots_dir: Path,
        fsync: str,
        pool: DeliveryPool,
        inbound: Inbound,
        snapshot_every_s: float,
        snapshot_after_records: int,
        last_now: float = 0.0,
        on_applied: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.dedup = dedup
        self.outbox = outbox
        self.wal = wal
        self.wal_dir = wal_dir
        self.snapshots_dir = snapshots_dir
        self.fsync = fsync
        self.pool = pool
        self.inbound = inbound
        self.snapshot_every_s = snapshot_every_s
        self.snapshot_after_records = snapshot_after_records
        self.last_now = last_now
        self.on_applied = on_applied
        self.applied_seq = wal.written_seq
        self.synced_seq = wal.written_seq
        self.counts: dict[str, int] = {"events": 0, "duplicates": 0, "refused": 0}
        self.storage_ok = True
        self.longest_pause_s = 0.0
        self.snapshot_requested = False
        self._send_apply, self._receive_apply = trio.open_memory_channel[
            tuple[list[tuple[int, float, Any]], int]
        ](APPLY_QUEUE)
        self._written = trio.Event()
        self._synced = trio.Event()
        self._snapshot_child: int | None = None
        self._snapshot_spill: dict[str, SpillCursor] = {}
        self._child_started = trio.Event()
        self._last_snapshot_at = time.monotonic()
        self._last_snapshot_seq = wal.written_seq
        self._drop_log = RateLimitedLog()
        self._refuse_log = RateLimitedLog()
        self._fatal: BaseException | None = None
        self._fatal_event = trio.Event()

    # --- the three tasks -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Until the inbound queue is closed and everything in it applied."""
        helpers = trio.CancelScope()  # committer and watcher: done once the applier is
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._helpers, helpers)
            nursery.start_soon(self._apply_loop, helpers)
            task_status.started()
            await self._sequence()

    async def _helpers(self, scope: trio.CancelScope) -> None:
        # Their own scope: cancelling the whole nursery from the applier could swallow an
        # exception the sequencer is raising (a failed fsync must not vanish).
        with scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_fatal)
                if self.fsync == "batch":
                    nursery.start_soon(self._commit)

    async def _sequence(self) -> None:
        receive = self.inbound.receive
        try:
            async for first in receive:
                batch = [first]
                while len(batch) < BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await self._log_batch(batch)
        finally:
            await self._send_apply.aclose()

    async def _log_batch(self, batch: list[Any]) -> None:
        records: list[Record] = []
        entries: list[tuple[int, float, Any]] = []
        seen: list[Item] = []
        for item in batch:
            if isinstance(item, Tick):
                now = max(item.now, self.last_now)
                self.last_now = now
                records.append(TickRecord(now))
                entries.append((_TICK, now, item))
            elif isinstance(item, Reload):
                records.append(ConfigRecord(item.settings, list(item.journeys)))
                entries.append((_RELOAD, self.last_now, item))
            else:
                message_id = item.event.messageId or ""
                if self.dedup.seen(item.scope, message_id, item.received):
                    entries.append((_DUPLICATE, item.received, item))
                    continue
                seen.append(item)
                now = max(item.received, self.last_now)
                self.last_now = now
                records.append(EventRecord(now, item.scope, item.event))
                entries.append((_EVENT, now, item))
        last_seq = self.wal.written_seq
        if records:
            try:
                last_seq = self._append_events(records, entries, seen)
            except DurabilityLost:
                raise  # fail-stop: nothing written after a failed fsync can be trusted
            except StorageError as exc:
                self._refuse(entries, seen, exc)
                await trio.sleep(0 if self.storage_ok else FULL_RETRY_S)
                return
            if not self.storage_ok:
                _log.info("storage.recovered", seq=last_seq)
                self.storage_ok = True
            if self.fsync == "always":
                await self._sync()
            else:
                self._written.set()
        await self._send_apply.send((entries, last_seq))

    def _append_events(
        self, records: list[Record], entries: list[tuple[int, float, Any]], seen: list[Item]
    ) -> int:
        """Append the batch; an event msgpack cannot hold (an integer beyond 64 bits) is
        rejected on its own and the rest of the batch goes in without it."""
        while True:
            try:
                return self.wal.append(records)
            except BadInput as exc:
                index = _failed_index(str(exc))
                if index is None:
                    raise StorageError(str(exc)) from exc
                record = records.pop(index)
                position = next(
                    i
                    for i, (kind, _, item) in enumerate(entries)
                    if kind == _EVENT and getattr(record, "event", None) is item.event
                )
                _, _, item = entries.pop(position)
                seen.remove(item)
                self.dedup.forget(item.scope, item.event.messageId or "")
                item.ticket.rejected(item.position, f"cannot be stored: {exc}")
                if not records:
                    return self.wal.written_seq

    def _refuse(
        self, entries: list[tuple[int, float, Any]], seen: list[Item], exc: Exception
    ) -> None:
        """The batch could not be stored: nothing in it is applied or acknowledged as ok."""
        self.storage_ok = False
        message = (
            "journeyd cannot store events right now (disk full?); nothing was accepted, retry later"
            if isinstance(exc, StorageFull)
            else f"journeyd cannot store events right now ({exc}); retry later"
        )
        for item in seen:
            self.dedup.forget(item.scope, item.event.messageId or "")
        for kind, _, item in entries:
            if kind in (_EVENT, _DUPLICATE):
                self.counts["refused"] += 1
                item.ticket.rejected(item.position, message)
            else:  # a tick or reload that is not logged did not happen
                if isinstance(item, Reload):
                    item.applied.append(False)
                item.done.set()
        suppressed = self._refuse_log.allow()
        if suppressed is not None:
            _log.error("storage.refusing", error=str(exc), suppressed_since_last=suppressed)

    async def _commit(self) -> None:
        """Group commit: one fsync covers everything written before it started."""
        while True:
            await self._written.wait()
            self._written = trio.Event()
            if self.wal.written_seq > self.synced_seq:
                await self._sync()

    async def _sync(self) -> None:
        try:
            covered = await trio.to_thread.run_sync(self.wal.sync)
        except DurabilityLost:
            _log.critical("wal.fsync_failed", hint="the disk lost data; stopping (exit 74)")
            raise
        self.synced_seq = max(self.synced_seq, covered)
        self._synced.set()
        self._synced = trio.Event()

    async def durable(self, seq: int) -> None:
        if self.fsync == "off":
            return
        if self.fsync == "always":
            # No committer runs: sync here (a batch of duplicates may cover intents or
            # outcomes written since the last sync).
            if self.synced_seq < seq:
                await self._sync()
            return
        while self.synced_seq < seq:
            if self.fsync == "batch":
                self._written.set()
            await self._synced.wait()

    async def _apply_loop(self, scope: trio.CancelScope) -> None:
        heap = self.engine.timers.heap
        async for entries, last_seq in self._receive_apply:
            await self.durable(last_seq)
            earliest = heap[0][0] if heap else None
            await self._apply(entries)
            self.applied_seq = max(self.applied_seq, last_seq)
            if self.on_applied is not None and heap and (earliest is None or heap[0][0] < earliest):
                self.on_applied()  # the earliest deadline moved closer: the timer loop re-plans
            if self._snapshot_due():
                self.start_snapshot()
        scope.cancel()  # the committer and the watcher have nothing left to wait for

    async def _apply(self, entries: list[tuple[int, float, Any]]) -> None:
        engine = self.engine
        for kind, now, item in entries:
            if kind == _EVENT:
                message_id = item.event.messageId or ""
                try:
                    effects = engine.handle(item.event, now)
                except Exception:
                    # Logged, so a replay hits the same error and skips it the same way.
                    _log.exception("engine.failed", message_id=message_id)
                    item.ticket.rejected(item.position, "internal error; the event was not applied")
                    continue
                self.counts["events"] += 1
                item.ticket.accepted(item.position, message_id)
                if effects:
                    await self._dispatch(effects)
            elif kind == _DUPLICATE:
                self.counts["duplicates"] += 1
                item.ticket.accepted(item.position, item.event.messageId or "")
            elif kind == _TICK:
                effects = engine.fire_due(now)
                item.done.set()
                if effects:
                    await self._dispatch(effects)
            else:
                engine.load(item.journeys, item.settings)
                item.applied.append(True)
                item.done.set()

    async def _dispatch(self, effects: list[Any]) -> None:
        deliveries = [e for e in effects if type(e) is Delivery]
        if deliveries:
            try:
                self.wal.append([IntentRecord(d) for d in deliveries])
            except DurabilityLost:
                raise
            except StorageError as exc:
                # Still sent: the events that decided them are in the WAL, so a replay
                # decides them again with the same messageIds.
                _log.warning("storage.intent_not_logged", error=str(exc), count=len(deliveries))
            else:
                self._written.set()
            for delivery in deliveries:
                self.outbox.add(delivery)
            for delivery in deliveries:
                try:
                    await self.pool.submit(delivery)
                except PoolClosed:
                    return  # shutting down: it stays in the outbox for the next start
        for effect in effects:
            if type(effect) is Dropped:
                suppressed = self._drop_log.allow()
                if suppressed is not None:
                    _log.warning(
                        "engine.dropped",
                        reason=effect.reason,
                        user=effect.user,
                        journey=effect.journey,
                        event_name=effect.event,
                        suppressed_since_last=suppressed,
                    )

    def record_outcome(self, delivery: Delivery, outcome: str, attempts: int) -> None:
        """The pool's hook: the delivery settled; log it so a restart does not resend it."""
        self.outbox.done(delivery.message_id)
        try:
            self.wal.append(
                [OutcomeRecord(delivery.message_id, delivery.destination, outcome, attempts)]  # type: ignore[arg-type]
            )
        except DurabilityLost as exc:
            self._fail(exc)  # called from the pool, not a pipeline task: hand it over
        except StorageError as exc:
            _log.warning("storage.outcome_not_logged", error=str(exc))  # resent after a restart
        else:
            self._written.set()

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
            self._fatal_event.set()

    async def _watch_fatal(self) -> None:
        await self._fatal_event.wait()
        assert self._fatal is not None
        raise self._fatal

    async def redrive(self, deliveries: list[Delivery]) -> None:
        """Dead letters sent again: logged as intents (owed like any delivery), then queued."""
        self.wal.append([IntentRecord(d) for d in deliveries])
        for delivery in deliveries:  # before any await: a snapshot may fork meanwhile
            self.outbox.add(delivery)
        self._written.set()
        await self.durable(self.wal.written_seq)
        await self.pool.redrive(deliveries)

    async def requeue(self, deliveries: list[Delivery]) -> None:
        """Deliveries recovered from the outbox go back to the pool with their messageIds."""
        for delivery in deliveries:
            try:
                await self.pool.submit(delivery)
            except PoolClosed:
                return  # shutting down: still owed, still in the outbox

    # --- snapshots -------------------------------------------------------------------------

    def snapshot_wanted(self) -> bool:
        """A snapshot is owed; the daemon sends a tick so one is taken between batches."""
        return self._snapshot_due()

    def _snapshot_due(self) -> bool:
        if self._snapshot_child is not None:
            return False
        if self.snapshot_requested:
            return True
        changed = self.applied_seq - self._last_snapshot_seq
        if changed >= self.snapshot_after_records:
            return True
        return changed > 0 and time.monotonic() - self._last_snapshot_at >= self.snapshot_every_s

    def start_snapshot(self) -> None:
        """Fork a child that writes the state as of `applied_seq`; returns at once."""
        seq = self.applied_seq
        self.snapshot_requested = False
        self._last_snapshot_at = time.monotonic()
        started = time.perf_counter()
        spill = self.pool.checkpoint()  # no await between this and the fork
        try:
            pid = os.fork()
        except OSError as exc:
            _log.error("snapshot.fork_failed", error=str(exc))
            self.pool.abandon(spill)
            # Not again at once: _snapshot_due would otherwise stay true and every tick
            # would try (and fail) again.
            self._last_snapshot_seq = self.applied_seq
            return
        if pid == 0:  # the child: never returns
            _snapshot_child(self.snapshots_dir, seq, self.engine, self.dedup, self.outbox, spill)
        pause = time.perf_counter() - started
        self.longest_pause_s = max(self.longest_pause_s, pause)
        self._snapshot_child = pid
        self._snapshot_spill = spill
        self._snapshot_started = (seq, time.monotonic(), pause)
        self._child_started.set()

    async def reap_snapshots(self) -> None:
        """Wait for snapshot children, then prune what the new snapshot made redundant."""
        while True:
            pid = self._snapshot_child
            if pid is None:
                await self._child_started.wait()
                self._child_started = trio.Event()
                continue
            _, status = await trio.to_thread.run_sync(os.waitpid, pid, 0, abandon_on_cancel=True)
            self._snapshot_child = None
            seq, started, pause = self._snapshot_started
            if os.waitstatus_to_exitcode(status) != 0:
                _log.error("snapshot.failed", seq=seq, status=status)
                self.pool.abandon(self._snapshot_spill)
                self._last_snapshot_seq = self.applied_seq  # back off until the next interval
                continue
            self.pool.confirm(self._snapshot_spill)
            self._last_snapshot_seq = seq
            _log.info(
                "snapshot.written",
                seq=seq,
                seconds=round(time.monotonic() - started, 3),
                pause_ms=round(pause * 1000, 2),
            )
            self.prune()

    def prune(self) -> None:
        """Keep two snapshots, and the WAL from the older one on (so either can recover)."""
        prune_snapshots(self.snapshots_dir, keep=2)
        kept = list_snapshots(self.snapshots_dir)
        if kept:
            oldest_seq = kept[-1][0]
            removed = prune(self.wal_dir, below_seq=oldest_seq + 1)
            if removed:
                _log.info("wal.pruned", segments=len(removed), below_seq=oldest_seq + 1)

    def final_snapshot(self) -> None:
        """At a clean shutdown, in-process: nothing else runs any more."""
        if self._snapshot_child is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._snapshot_child, 0)
            self._snapshot_child = None
        # Everything written is applied by now (intents and outcomes included).
        seq = max(self.applied_seq, self.wal.written_seq)
        spill = self.pool.checkpoint()
        info = write_snapshot(self.snapshots_dir, seq, self.engine, self.dedup, self.outbox, spill)
        self.pool.confirm(spill)
        _log.info(
            "snapshot.written",
            seq=info.seq,
            bytes=info.bytes,
            instances=info.instances,
            seconds=round(info.seconds, 3),
            final=True,
        )
        self.prune()


def _snapshot_child(
    directory: Path,
    seq: int,
    engine: Engine,
    dedup: DedupWindow,
    outbox: Outbox,
    spill: dict[str, SpillCursor],
) -> None:
    """Runs in the forked child: write, then leave without running any parent cleanup."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(signum, signal.SIG_DFL)
        os.closerange(3, _max_fd())  # the parent's sockets and WAL are not ours to hold
        import gc  # noqa: PLC0415

        gc.disable()  # collections would touch (and so copy) every page of the parent
        write_snapshot(directory, seq, engine, dedup, outbox, spill)
        code = 0
    finally:
        os._exit(code)


def _failed_index(message: str) -> int | None:
    """The record index named by the WAL's BadInput ("record 3 of the batch ...")."""
    words = message.split()
    if len(words) > 1 and words[0] == "record" and words[1].isdigit():
        return int(words[1])
    return None


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 65536
