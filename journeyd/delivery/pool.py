"""The sender pool: a bounded queue feeding a fixed number of worker tasks.

Backpressure is the point of the shape. `submit` waits while the queue is full, so a slow or
dead destination slows the engine's effects and, through them, ingest acknowledgements —
memory never grows with the backlog. A worker owns one delivery from first attempt to final
outcome, retry sleeps included, so `workers` also bounds how many sends are outstanding.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog
import trio

from journeyd.delivery.deadletter import DeadLetterFile, dead_letter
from journeyd.delivery.destinations import Sender, SenderFactory, build_sender
from journeyd.delivery.retry import (
    DeliveryError,
    DestinationConfigError,
    Permanent,
    Retryable,
    RetryPolicy,
    retry_delay_s,
)
from journeyd.durations import format_duration, parse_duration
from journeyd.engine import Delivery
from journeyd.errors import JourneydError
from journeyd.settings import DeliverySettings, Destination

log = structlog.get_logger("journeyd.delivery")
# Called with (delivery, "delivered" | "dead_lettered", attempts) once a delivery settles,
# so the daemon can write its outcome to the write-ahead log.
OutcomeHook = Callable[[Delivery, str, int], None]
DEFAULT_RETRY = RetryPolicy()


class PoolClosed(JourneydError):
    """`submit` after `close`: the delivery was not queued and stays the caller's to keep."""


class _Slot:
    """A sender and the number of attempts using it, so a reload closes it only once idle."""

    __slots__ = ("idle", "retired", "sender", "users")

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.users = 0
        self.retired = False
        self.idle = trio.Event()


class DeliveryPool:
    def __init__(
        self,
        destinations: Mapping[str, Destination],
        settings: DeliverySettings,
        *,
        resolve_path: Callable[[str], Path],
        dead_letter_path: Path,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy = DEFAULT_RETRY,
        rand: Callable[[], float] = random.random,
        sender_factory: SenderFactory = build_sender,
        on_outcome: OutcomeHook | None = None,
    ) -> None:
        if settings.workers < 1:
            raise DestinationConfigError(
                f"delivery.workers must be at least 1, got {settings.workers}"
            )
        if settings.queue < 0:
            raise DestinationConfigError(
                f"delivery.queue must not be negative, got {settings.queue}"
            )
        if settings.max_attempts < 1:
            raise DestinationConfigError(
                f"delivery.max_attempts must be at least 1, got {settings.max_attempts}"
            )
        try:
            self._timeout_s = float(parse_duration(settings.timeout))
        except ValueError as exc:
            raise DestinationConfigError(f"delivery.timeout: {exc}") from exc
        self._settings = settings
        self._resolve_path = resolve_path
        self._environ = environ
        self._clock = clock
        self._retry = retry
        self._rand = rand
        self._sender_factory = sender_factory
        self._on_outcome = on_outcome
        self._dead = DeadLetterFile(dead_letter_path)
        self._slots = self._build(destinations)
        self._send, self._receive = trio.open_memory_channel[Delivery](settings.queue)
        self._nursery: trio.Nursery | None = None
        self._open: set[_Slot] = set()
        self._started = False
        self._closed = False
        self._delivered = 0
        self._retried = 0
        self._dead_lettered = 0
        self._in_flight = 0

    @property
    def stats(self) -> Mapping[str, int]:
        return {
            "delivered": self._delivered,
            "retried": self._retried,
            "dead_lettered": self._dead_lettered,
            "queued": self._send.statistics().current_buffer_used,
            "in_flight": self._in_flight,
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Returns once `close()` was called, the queue is empty and every delivery settled."""
        if self._started:
            raise RuntimeError("DeliveryPool.run() may be called only once")
        self._started = True
        try:
            for slot in self._slots.values():
                self._open_slot(slot)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for _ in range(self._settings.workers):
                    nursery.start_soon(self._worker, self._receive.clone())
                self._receive.close()
                log.info(
                    "delivery.started",
                    workers=self._settings.workers,
                    queue=self._settings.queue,
                    destinations=sorted(self._slots),
                )
                task_status.started()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                for slot in list(self._open):
                    await self._close_slot(slot)
            log.info("delivery.stopped", **self.stats)

    async def submit(self, delivery: Delivery) -> None:
        """Waits while the queue is full: that wait is the backpressure the engine feels."""
        if self._closed:
            raise PoolClosed("delivery pool is closed")
        try:
            await self._send.send(delivery)
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise PoolClosed("delivery pool is closed") from exc

    def close(self) -> None:
        """Submits blocked on a full queue at this moment raise PoolClosed; queued ones are sent."""
        self._closed = True
        self._send.close()

    def reconfigure(self, destinations: Mapping[str, Destination]) -> None:
        """Swap in freshly built senders; on error nothing changes and the old ones keep running.

        Every sender is rebuilt, not only changed ones: a reload should also re-read rotated
        secrets and reopen files that logrotate moved away. Deliveries in a retry pick up the
        new sender on their next attempt; the old one is closed once its last attempt ends.
        """
        fresh = self._build(destinations)
        if self._nursery is not None:
            opened: list[_Slot] = []
            try:
                for slot in fresh.values():
                    self._open_slot(slot)
                    opened.append(slot)
            except DestinationConfigError:
                for slot in opened:
                    self._nursery.start_soon(self._close_slot, slot)
                raise
        retired = list(self._slots.values())
        self._slots = fresh
        for slot in retired:
            slot.retired = True
            if slot.users == 0:
                slot.idle.set()
            if self._nursery is not None and slot in self._open:
                self._nursery.start_soon(self._retire, slot)
        log.info("delivery.reconfigured", destinations=sorted(fresh))

    def _build(self, destinations: Mapping[str, Destination]) -> dict[str, _Slot]:
        return {
            name: _Slot(
                self._sender_factory(
                    name,
                    config,
                    resolve_path=self._resolve_path,
                    environ=self._environ,
                    clock=self._clock,
                    timeout_s=self._timeout_s,
                    max_connections=self._settings.workers,
                )
            )
            for name, config in destinations.items()
        }

    def _open_slot(self, slot: _Slot) -> None:
        try:
            slot.sender.open()
        except OSError as exc:
            raise DestinationConfigError(
                f"destination {slot.sender.name}: cannot open: {exc.strerror or exc}"
            ) from exc
        self._open.add(slot)

    async def _close_slot(self, slot: _Slot) -> None:
        self._open.discard(slot)
        try:
            await slot.sender.aclose()
        except Exception as exc:  # a failing close must not hide the pool's own outcome
            log.warning("delivery.close_failed", destination=slot.sender.name, error=repr(exc))

    async def _retire(self, slot: _Slot) -> None:
        await slot.idle.wait()
        await self._close_slot(slot)

    async def _worker(self, receive: trio.MemoryReceiveChannel[Delivery]) -> None:
        async with receive:
            async for delivery in receive:
                self._in_flight += 1
                try:
                    await self._deliver(delivery)
                finally:
                    self._in_flight -= 1

    async def _deliver(self, delivery: Delivery) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._attempt(delivery)
            except Permanent as exc:
                await self._give_up(delivery, attempt, exc)
                return
            except Retryable as exc:
                if attempt >= self._settings.max_attempts:
                    await self._give_up(delivery, attempt, exc)
                    return
                delay_s = retry_delay_s(attempt, exc.retry_after_s, self._retry, self._rand)
                self._retried += 1
                log.warning(
                    "delivery.retry",
                    destination=delivery.destination,
                    message_id=delivery.message_id,
                    attempt=attempt,
                    delay_s=round(delay_s, 3),
                    error=str(exc),
                )
                await trio.sleep(delay_s)
            else:
                self._delivered += 1
                self._outcome(delivery, "delivered", attempt)
                log.debug(
                    "delivery.sent",
                    destination=delivery.destination,
                    message_id=delivery.message_id,
                    attempts=attempt,
                )
                return

    async def _attempt(self, delivery: Delivery) -> None:
        slot = self._slots.get(delivery.destination)
        if slot is None:
            raise Permanent(f"destination {delivery.destination} is not configured")
        sender = slot.sender
        slot.users += 1
        deadline = trio.move_on_after(self._timeout_s)
        try:
            with deadline:
                await sender.deliver(delivery)
        except DeliveryError:
            raise
        except Exception as exc:  # a bug in one adapter costs one delivery, never the pool
            log.error(
                "delivery.adapter_failed",
                destination=delivery.destination,
                message_id=delivery.message_id,
                exc_info=True,
            )
            raise Permanent(
                f"internal error: {type(exc).__name__}: {exc}", request=sender.describe()
            ) from exc
        finally:
            slot.users -= 1
            if slot.users == 0 and slot.retired:
                slot.idle.set()
        if deadline.cancelled_caught:
            raise Retryable(
                f"timeout: no answer within {format_duration(self._timeout_s)}",
                request=sender.describe(),
            )

    def _outcome(self, delivery: Delivery, outcome: str, attempts: int) -> None:
        if self._on_outcome is None:
            return
        try:
            self._on_outcome(delivery, outcome, attempts)
        except Exception:  # recording an outcome must never cost the delivery itself
            log.exception("delivery.outcome_hook_failed", message_id=delivery.message_id)

    async def _give_up(self, delivery: Delivery, attempts: int, error: DeliveryError) -> None:
        self._dead_lettered += 1
        status = error.request.status if error.request is not None else None
        log.error(
            "delivery.gave_up",
            destination=delivery.destination,
            message_id=delivery.message_id,
            attempts=attempts,
            status=status,
            error=str(error),
        )
        record = dead_letter(
            at=self._clock(),
            destination=delivery.destination,
            message_id=delivery.message_id,
            attempts=attempts,
            error=str(error),
            last_request=error.request,
            payload=delivery.payload,
        )
        try:
            await self._dead.append(record)
        except OSError as exc:
            log.exception(
                "delivery.dead_letter_failed",
                path=str(self._dead.path),
                message_id=delivery.message_id,
                error=exc.strerror or repr(exc),
            )
            return  # not recorded as dead-lettered: a restart will try it again
        self._outcome(delivery, "dead_lettered", attempts)
