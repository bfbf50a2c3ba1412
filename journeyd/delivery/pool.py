"""The delivery pool: one lane per destination, so no destination can hold up another.

    submit ──> lane "crm" ──> batches ──> HttpTransport / Runner
           └─> lane "outbox" ...          (each with its own queue, spill, rate, breaker)

`submit` returns once the delivery is queued in its lane's memory or appended to the lane's
spill queue on disk; it waits only when the disk refuses the spill *and* the pool-wide
memory budget (every lane's `queue` plus `delivery.queue` of headroom) is used up. Retries
are entries in a lane's delay heap, not sleeping workers, so a dead destination costs what it
holds and nothing else.

Spill queues and the daemon's snapshots: `checkpoint()` fsyncs every spill queue and returns
cursors to store in the snapshot; `restore(cursors, skip_message_ids)` before `run()` resumes
them after a restart. A pool that is never restored starts with empty spill queues (whatever
an earlier run left is deleted: its deliveries are still owed by the outbox). `on_spilled`
tells the outbox a delivery now lives on disk (it may drop it from memory); `on_unspilled`
that it came back into memory (the outbox tracks it again until its outcome).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Protocol

import httpx
import structlog
import trio

from journeyd.delivery.adapter import Adapter, Runner
from journeyd.delivery.adapters import build_adapter
from journeyd.delivery.breaker import BreakerPolicy
from journeyd.delivery.deadletter import DeadLetterFile, dead_letter
from journeyd.delivery.destinations.file import FileSender
from journeyd.delivery.http_transport import HttpTransport
from journeyd.delivery.lane import (
    Binding,
    DeliveryHook,
    Lane,
    OutcomeHook,
    Shared,
    is_runner,
    resolve_policy,
)
from journeyd.delivery.retry import DestinationConfigError, RetryPolicy
from journeyd.delivery.spill import (
    SEGMENT_BYTES,
    SpillCursor,
    SpillCursors,
    SpillQueue,
    spill_directory,
)
from journeyd.engine import Delivery
from journeyd.errors import JourneydError
from journeyd.settings import DeliverySettings, Destination, FileDestination

log = structlog.get_logger("journeyd.delivery")
DEFAULT_RETRY = RetryPolicy()
DEFAULT_BREAKER = BreakerPolicy()


class PoolClosed(JourneydError):
    """`submit` after `close`: the delivery was not queued and stays the caller's to keep."""


class AdapterFactory(Protocol):
    """The seam tests use to put a fake destination behind a real pool."""

    def __call__(
        self,
        name: str,
        config: Destination,
        *,
        resolve_path: Callable[[str], Path],
        environ: Mapping[str, str],
        clock: Callable[[], float],
    ) -> Adapter | Runner: ...


def build_target(
    name: str,
    config: Destination,
    *,
    resolve_path: Callable[[str], Path],
    environ: Mapping[str, str],
    clock: Callable[[], float],
) -> Adapter | Runner:
    """The file runner, or the service adapter; raises DestinationConfigError."""
    if isinstance(config, FileDestination):
        return FileSender(name, config, path=resolve_path(config.path))
    return build_adapter(name, config, environ=environ, clock=clock)


class DeliveryPool:
    def __init__(
        self,
        destinations: Mapping[str, Destination],
        settings: DeliverySettings,
        *,
        resolve_path: Callable[[str], Path],
        dead_letter_path: Path,
        spill_dir: Path | None = None,
        on_outcome: OutcomeHook | None = None,
        on_spilled: DeliveryHook | None = None,
        on_unspilled: DeliveryHook | None = None,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        retry: RetryPolicy = DEFAULT_RETRY,
        breaker: BreakerPolicy = DEFAULT_BREAKER,
        adapter_factory: AdapterFactory = build_target,
        http_transport: httpx.AsyncBaseTransport | None = None,
        spill_segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        """`spill_dir` defaults to `spill/` next to the dead-letter file (the state dir)."""
        if settings.queue < 0:
            raise DestinationConfigError(
                f"delivery.queue must not be negative, got {settings.queue}"
            )
        if settings.max_attempts < 1:
            raise DestinationConfigError(
                f"delivery.max_attempts must be at least 1, got {settings.max_attempts}"
            )
        self._settings = settings
        self._resolve_path = resolve_path
        self._environ = environ
        self._clock = clock
        self._factory = adapter_factory
        self._http_transport = http_transport
        self._spill_dir = spill_dir if spill_dir is not None else dead_letter_path.parent / "spill"
        self._segment_bytes = spill_segment_bytes
        self._shared = Shared(
            clock=clock,
            rand=rand,
            retry=retry,
            breaker=breaker,
            dead=DeadLetterFile(dead_letter_path),
            on_outcome=on_outcome,
            on_spilled=on_spilled,
            on_unspilled=on_unspilled,
        )
        self._lanes = {name: Lane(name, b, self._shared) for name, b in self._bind(destinations)}
        self._retiring: dict[str, Lane] = {}
        self._budget()
        self._spills_opened = False
        self._orphans: SpillCursors = {}
        self._skip: frozenset[str] = frozenset()
        self._nursery: trio.Nursery | None = None
        self._started = False
        self._closed = False

    # --- public surface --------------------------------------------------------------------

    @property
    def stats(self) -> Mapping[str, int]:
        lanes = [*self._lanes.values(), *self._retiring.values()]
        return {
            **self._shared.counts,
            "queued": sum(lane.queued for lane in lanes),
            "in_flight": sum(lane.in_flight for lane in lanes),
        }

    def lane_stats(self) -> dict[str, dict[str, int | str]]:
        """Per destination: memory, spill and breaker, for status lines and tests."""
        return {
            name: {
                "held": lane.held,
                "ready": len(lane.ready),
                "delayed": len(lane.delayed),
                "in_flight": lane.in_flight,
                "requests": lane.requests,
                "spilled": len(lane.spill) if lane.spill is not None else 0,
                "spilled_total": lane.spilled_total,
                "breaker": lane.breaker.state.value,
            }
            for name, lane in [*self._retiring.items(), *self._lanes.items()]
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Returns once `close()` was called and every lane delivered (or gave up on) what it
        held, spill queues included."""
        if self._started:
            raise RuntimeError("DeliveryPool.run() may be called only once")
        self._started = True
        self._open_spills()
        try:
            for lane in self._lanes.values():
                lane.binding.open()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for lane in self._lanes.values():
                    nursery.start_soon(self._run_lane, lane)
                log.info(
                    "delivery.started",
                    destinations=sorted(self._lanes),
                    spill_dir=str(self._spill_dir),
                )
                task_status.started()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                for lane in [*self._lanes.values(), *self._retiring.values()]:
                    await lane.binding.aclose()
            log.info("delivery.stopped", **self.stats)

    async def submit(self, delivery: Delivery) -> None:
        """Queued in memory or spilled to disk; waits only when neither can take it."""
        await self._offer(delivery, delivery.at)

    async def redrive(self, deliveries: Iterable[Delivery]) -> int:
        """Re-queue dead letters with their messageIds; their max_age counts from now.
        Returns how many were queued."""
        count = 0
        for delivery in deliveries:
            await self._offer(delivery, self._clock())
            count += 1
        return count

    def close(self) -> None:
        """Submits waiting for room at this moment raise PoolClosed; what is queued is sent."""
        self._closed = True
        for lane in [*self._lanes.values(), *self._retiring.values()]:
            lane.close()
        self._shared.room.set()

    def reconfigure(self, destinations: Mapping[str, Destination]) -> None:
        """Swap in freshly built adapters; on error nothing changes and the old ones run on.

        Every adapter is rebuilt, not only changed ones: a reload should also re-read rotated
        secrets and reopen files that logrotate moved away. Requests in flight finish on the
        old adapter, which is closed once idle. A removed destination's lane delivers what it
        holds (memory and spill) with its last adapter, then stops.
        """
        fresh = dict(self._bind(destinations))
        if self._nursery is not None:
            opened: list[Binding] = []
            try:
                for binding in fresh.values():
                    binding.open()
                    opened.append(binding)
            except DestinationConfigError:
                for binding in opened:
                    self._nursery.start_soon(binding.aclose)
                raise
        for name, binding in fresh.items():
            lane = self._lanes.get(name) or self._retiring.pop(name, None)
            if lane is not None:
                lane.closing = self._closed
                self._lanes[name] = lane
                self._retire(lane.rebind(binding))
                continue
            lane = self._lanes[name] = Lane(name, binding, self._shared)
            if self._spills_opened:
                lane.spill = self._spill_for(name)
            if self._nursery is not None:
                self._nursery.start_soon(self._run_lane, lane)
        for name in [n for n in self._lanes if n not in fresh]:
            lane = self._lanes.pop(name)
            self._retiring[name] = lane
            lane.close()
        self._budget()
        log.info("delivery.reconfigured", destinations=sorted(fresh))

    def checkpoint(self) -> SpillCursors:
        """fsync every spill queue; the cursors go into the snapshot taken at this moment."""
        self._open_spills()
        cursors = dict(self._orphans)
        for name, lane in [*self._retiring.items(), *self._lanes.items()]:
            if lane.spill is not None:
                cursors[name] = lane.spill.checkpoint()
        return cursors

    def confirm(self, cursors: Mapping[str, SpillCursor]) -> None:
        """The snapshot holding these cursors is safely on disk."""
        self._settle(cursors, confirmed=True)

    def abandon(self, cursors: Mapping[str, SpillCursor]) -> None:
        """The snapshot holding these cursors failed: they protect nothing any more."""
        self._settle(cursors, confirmed=False)

    def _settle(self, cursors: Mapping[str, SpillCursor], *, confirmed: bool) -> None:
        for name, lane in [*self._retiring.items(), *self._lanes.items()]:
            cursor = cursors.get(name)
            if lane.spill is not None and cursor is not None:
                if confirmed:
                    lane.spill.confirm(cursor)
                else:
                    lane.spill.abandon(cursor)

    def restore(
        self, cursors: Mapping[str, SpillCursor], skip_message_ids: Collection[str]
    ) -> None:
        """Before `run()` and any `submit`: resume the spill queues a snapshot recorded.

        Each queue is truncated to its checkpointed write position (later spills are still
        owed by the write-ahead log and come back through `submit`), reads resume at the
        checkpointed read position, and a record whose messageId is in `skip_message_ids`
        (an outcome logged after the checkpoint, or a delivery the daemon re-submits from
        its outbox) is dropped instead of delivered.
        """
        if self._spills_opened:
            raise RuntimeError("DeliveryPool.restore() must come before run() and submit()")
        self._skip = frozenset(skip_message_ids)
        self._orphans = {n: c for n, c in cursors.items() if n not in self._lanes}
        for name in self._orphans:
            log.warning(
                "delivery.spill_orphaned",
                destination=name,
                records=self._orphans[name].records,
                hint="the destination is no longer configured; its spill is kept until it is",
            )
        self._spills_opened = True
        for name, lane in self._lanes.items():
            cursor = cursors.get(name)
            lane.spill = (
                SpillQueue.restore(
                    spill_directory(self._spill_dir, name),
                    cursor,
                    self._skip,
                    segment_bytes=self._segment_bytes,
                )
                if cursor is not None
                else self._fresh_spill(name)
            )

    # --- machinery -------------------------------------------------------------------------

    async def _offer(self, delivery: Delivery, born: float) -> None:
        if self._closed:
            raise PoolClosed("delivery pool is closed")
        lane = self._lanes.get(delivery.destination)
        if lane is None:
            await self._unconfigured(delivery)
            return
        self._open_spills()
        while not lane.offer(delivery, born):
            if self._shared.room.is_set():
                self._shared.room = trio.Event()
            await self._shared.room.wait()
            if self._closed:
                raise PoolClosed("delivery pool is closed")

    async def _unconfigured(self, delivery: Delivery) -> None:
        shared = self._shared
        error = f"destination {delivery.destination} is not configured"
        log.error("delivery.gave_up", message_id=delivery.message_id, error=error)
        record = dead_letter(
            at=self._clock(),
            destination=delivery.destination,
            message_id=delivery.message_id,
            attempts=1,
            error=error,
            last_request=None,
            payload=delivery.payload,
        )
        try:
            await shared.dead.append(record)
        except OSError as exc:
            log.error("delivery.dead_letter_failed", error=exc.strerror or repr(exc))
            return
        shared.counts["dead_lettered"] += 1
        shared.call(shared.on_outcome, delivery, "dead_lettered", 1)

    def _bind(self, destinations: Mapping[str, Destination]) -> list[tuple[str, Binding]]:
        bindings = []
        for name, config in destinations.items():
            target = self._factory(
                name,
                config,
                resolve_path=self._resolve_path,
                environ=self._environ,
                clock=self._clock,
            )
            policy = resolve_policy(name, config, target.limits, self._settings)
            transport = (
                None
                if is_runner(target)
                else HttpTransport(
                    max_connections=policy.concurrency,
                    timeout_s=policy.timeout_s,
                    transport=self._http_transport,
                )
            )
            bindings.append((name, Binding(name, target, policy, transport)))
        return bindings

    def _budget(self) -> None:
        lanes = [*self._lanes.values(), *self._retiring.values()]
        held = sum(lane.binding.policy.queue for lane in lanes)
        self._shared.budget = held + self._settings.queue

    def _open_spills(self) -> None:
        if self._spills_opened:
            return
        self._spills_opened = True
        for name, lane in self._lanes.items():
            lane.spill = self._fresh_spill(name)

    def _spill_for(self, name: str) -> SpillQueue:
        cursor = self._orphans.pop(name, None)
        if cursor is None:
            return self._fresh_spill(name)
        return SpillQueue.restore(
            spill_directory(self._spill_dir, name),
            cursor,
            self._skip,
            segment_bytes=self._segment_bytes,
        )

    def _fresh_spill(self, name: str) -> SpillQueue:
        return SpillQueue.fresh(
            spill_directory(self._spill_dir, name), segment_bytes=self._segment_bytes
        )

    async def _run_lane(self, lane: Lane) -> None:
        await lane.run()
        if self._retiring.get(lane.name) is lane:
            del self._retiring[lane.name]
            await lane.binding.aclose()
            self._budget()
            log.info("delivery.lane_retired", destination=lane.name)

    def _retire(self, binding: Binding) -> None:
        if self._nursery is None:
            return  # not running: never opened
        self._nursery.start_soon(self._close_when_idle, binding)

    async def _close_when_idle(self, binding: Binding) -> None:
        await binding.idle.wait()
        await binding.aclose()
