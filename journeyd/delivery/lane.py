"""One destination's lane: a bounded FIFO, a batcher, a rate limit, retries and a breaker.

    offer ──> ready (FIFO, `queue` deliveries in memory) ──batch──> request ──> outcome
      │ full     ^           ^ due                                     │ Retry
      v          │ refill    └──── delayed (heap by due time) <────────┘
    spill (disk) ┘

A lane never blocks its caller: what does not fit in memory goes to its spill queue on disk
and comes back in order as room frees up. A retry is a heap entry, not a sleeping task, so
a dead destination costs memory for what it holds and nothing else. One loop task decides
what to send next; each request runs in its own task, at most `concurrency` at a time.
"""

from __future__ import annotations

import collections
import functools
import heapq
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard, cast

import structlog
import trio

from journeyd.delivery.adapter import (
    Adapter,
    BatchLimits,
    Delivered,
    Outcome,
    PreparedRequest,
    Reject,
    Retry,
    Runner,
)
from journeyd.delivery.breaker import Breaker, BreakerPolicy, State, Transition
from journeyd.delivery.deadletter import DeadLetterFile, dead_letter
from journeyd.delivery.http_transport import Answer, HttpTransport, public_url
from journeyd.delivery.ratelimit import TokenBucket
from journeyd.delivery.retry import (
    DestinationConfigError,
    LastRequest,
    RetryPolicy,
    backoff_s,
    retry_delay_s,
)
from journeyd.delivery.spill import SpillQueue, SpillRefused
from journeyd.durations import format_duration, parse_duration
from journeyd.engine import Delivery
from journeyd.log import RateLimitedLog
from journeyd.settings import DeliverySettings, Destination

log = structlog.get_logger("journeyd.delivery")
DEFAULT_QUEUE = 10_000
DEFAULT_MAX_AGE = "3d"
BACKSTOP_S = 1.0
REFILL_CHUNK = 1000  # records read from a spill per loop turn (keeps each turn short)
Target = Adapter | Runner
DeliveryHook = Callable[[Delivery], None]
OutcomeHook = Callable[[Delivery, str, int], None]


def is_runner(target: Target) -> TypeGuard[Runner]:
    return callable(getattr(target, "run", None)) and not hasattr(target, "requests")


@dataclass(frozen=True, slots=True)
class LanePolicy:
    max_items: int
    max_bytes: int
    max_wait_s: float
    rate_per_s: float | None
    concurrency: int
    timeout_s: float
    max_attempts: int
    max_age_s: float
    queue: int


def resolve_policy(
    name: str, config: Destination, limits: BatchLimits, settings: DeliverySettings
) -> LanePolicy:
    """Batching comes from the target's limits (its builder applied the destination's
    batch_size, batch_bytes, batch_wait, rate and concurrency keys); the rest from the
    destination's keys over the `[delivery]` defaults."""

    def duration(key: str, text: str) -> float:
        try:
            return float(parse_duration(text))
        except ValueError as exc:
            raise DestinationConfigError(f"destination {name}: {key}: {exc}") from exc

    for key in ("max_attempts", "queue"):
        value = getattr(config, key)
        if value is not None and value < 1:
            raise DestinationConfigError(f"destination {name}: {key} must be at least 1")
    return LanePolicy(
        max_items=max(1, limits.max_items),
        max_bytes=max(1, limits.max_bytes),
        max_wait_s=max(0.0, limits.max_wait_s),
        rate_per_s=limits.rate_per_s,
        concurrency=max(1, limits.concurrency),
        timeout_s=duration("timeout", config.timeout or settings.timeout),
        max_attempts=config.max_attempts or settings.max_attempts,
        max_age_s=duration("max_age", config.max_age or DEFAULT_MAX_AGE),
        queue=config.queue or DEFAULT_QUEUE,
    )


class Binding:
    """A built target (adapter or runner) with its policy and HTTP client; replaced whole
    on reload, and closed once the last request using it has ended."""

    def __init__(
        self, name: str, target: Target, policy: LanePolicy, transport: HttpTransport | None
    ) -> None:
        self.name = name
        self.target = target
        self.policy = policy
        self.transport = transport
        self.runner = is_runner(target)
        # A runner that enforces the lane's timeout itself (the function runner) reports its
        # own, more telling error; the lane's deadline is then only a backstop.
        run = getattr(target, "run", None)
        self.runner_timeout = self.runner and "timeout_s" in _parameters(run)
        self.size_of: Callable[[Delivery], int] | None = getattr(target, "size_of", None)
        self.users = 0
        self.retired = False
        self.idle = trio.Event()

    def open(self) -> None:
        opener = getattr(self.target, "open", None)
        if callable(opener):
            try:
                opener()
            except OSError as exc:
                raise DestinationConfigError(
                    f"destination {self.name}: cannot open: {exc.strerror or exc}"
                ) from exc

    def describe(self) -> LastRequest | None:
        describe = getattr(self.target, "describe", None)
        if not callable(describe):
            return None
        try:
            return describe()  # type: ignore[no-any-return]
        except Exception:  # a summary for logs and dead letters is never worth a lane
            log.exception("delivery.describe_failed", destination=self.name)
            return None

    async def aclose(self) -> None:
        try:
            if self.transport is not None:
                await self.transport.aclose()
            closer = getattr(self.target, "aclose", None)
            if callable(closer):
                await closer()
        except Exception as exc:  # a failing close must not hide the pool's own outcome
            log.warning("delivery.close_failed", destination=self.name, error=repr(exc))

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.retired:
            self.idle.set()


@dataclass(slots=True, kw_only=True)
class Shared:
    """What every lane of a pool shares: clocks, policies, hooks, the memory budget, stats."""

    clock: Callable[[], float]
    rand: Callable[[], float]
    retry: RetryPolicy
    breaker: BreakerPolicy
    dead: DeadLetterFile
    on_outcome: OutcomeHook | None
    on_spilled: DeliveryHook | None
    on_unspilled: DeliveryHook | None
    budget: int = 0  # deliveries all lanes together may hold in memory
    held: int = 0
    room: trio.Event = field(default_factory=trio.Event)
    counts: dict[str, int] = field(
        default_factory=lambda: {"delivered": 0, "retried": 0, "dead_lettered": 0}
    )

    def call(self, hook: DeliveryHook | OutcomeHook | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:  # a hook's failure must never cost the delivery itself
            log.exception("delivery.hook_failed", hook=getattr(hook, "__name__", repr(hook)))


class _Item:
    __slots__ = ("attempts", "born", "delivery", "error", "ready_at", "request", "size")

    def __init__(self, delivery: Delivery, born: float, size: int) -> None:
        self.delivery = delivery
        self.born = born
        self.size = size
        self.attempts = 0
        self.error = ""
        self.request: LastRequest | None = None
        self.ready_at = 0.0


class Lane:
    def __init__(self, name: str, binding: Binding, shared: Shared) -> None:
        self.name = name
        self.binding = binding
        self.shared = shared
        self.spill: SpillQueue | None = None
        self.breaker = Breaker(shared.breaker)
        self.bucket = self._bucket(binding.policy)
        self.ready: collections.deque[_Item] = collections.deque()
        self.ready_bytes = 0
        self.delayed: list[tuple[float, int, _Item]] = []
        self.held = 0  # in memory: ready + delayed + in requests + being dead-lettered
        self.in_flight = 0  # deliveries inside requests
        self.requests = 0  # requests (or runner calls) in flight
        self.spilled_total = 0
        self.closing = False
        self._seq = 0
        self._gathering = False
        self._wake = trio.Event()
        self._done = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._breaker_log = RateLimitedLog(per_interval=5, interval_s=60.0)
        self._spill_log = RateLimitedLog(per_interval=3, interval_s=60.0)
        self._gave_up_log = RateLimitedLog()

    # --- the caller's side -----------------------------------------------------------------

    def offer(self, delivery: Delivery, born: float) -> bool:
        """Queue in memory, else on disk; False only when both refuse (the caller waits)."""
        spill = self.spill
        if self.held < self.binding.policy.queue and (spill is None or spill.empty):
            self._admit(delivery, born)
            return True
        if spill is not None:
            was_empty = spill.empty
            try:
                spill.append(delivery, born)
            except SpillRefused as exc:
                suppressed = self._spill_log.allow()
                if suppressed is not None:
                    log.error(
                        "delivery.spill_refused",
                        destination=self.name,
                        error=str(exc),
                        suppressed_since_last=suppressed,
                    )
            else:
                self.spilled_total += 1
                if was_empty:
                    log.info("delivery.spilling", destination=self.name, held=self.held)
                self.shared.call(self.shared.on_spilled, delivery)
                self._wake.set()
                return True
        if self.shared.held < self.shared.budget:
            self._admit(delivery, born)  # over the lane's bound, within the pool's
            return True
        return False

    def close(self) -> None:
        """Deliver what is held (memory and spill), then `run` returns."""
        self.closing = True
        self._wake.set()

    def rebind(self, binding: Binding) -> Binding:
        """A reload: later requests use `binding`; returns the old one to be closed when idle."""
        old, self.binding = self.binding, binding
        if old.policy.rate_per_s != binding.policy.rate_per_s:
            self.bucket = self._bucket(binding.policy)
        old.retired = True
        if old.users == 0:
            old.idle.set()
        self._wake.set()
        return old

    @property
    def queued(self) -> int:
        return len(self.ready) + len(self.delayed) + (len(self.spill) if self.spill else 0)

    @property
    def drained(self) -> bool:
        return self.held == 0 and (self.spill is None or self.spill.empty)

    # --- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Until closed and drained."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._loop()
        finally:
            self._nursery = None
            self._done.set()

    async def wait_done(self) -> None:
        await self._done.wait()

    async def _loop(self) -> None:
        while True:
            now = trio.current_time()
            self._promote(now)
            self._refill()
            policy = self.binding.policy
            if not self.ready:
                if self.closing and self.drained:
                    return
                await self._sleep(self.delayed[0][0] if self.delayed else None)
                continue
            ready_at = self.breaker.ready_at(now)
            if ready_at is None or ready_at > now:
                await self._sleep(ready_at)
                continue
            if self.requests >= policy.concurrency:
                await self._sleep(None)
                continue
            if not self.closing and not self._full(policy) and policy.max_wait_s > 0:
                deadline = self.ready[0].ready_at + policy.max_wait_s
                if now < deadline:
                    self._gathering = True
                    try:
                        await self._sleep(deadline)
                    finally:
                        self._gathering = False
                    continue
            if self.bucket is not None:
                wait_s = self.bucket.take(now)
                if wait_s > 0:
                    await self._sleep(now + wait_s)
                    continue
            batch = self._take_batch(policy)
            if not batch:
                continue
            _, transition = self.breaker.admit(now)
            self._log_transition(transition)
            probe = self.breaker.probing
            self.requests += 1
            self.in_flight += len(batch)
            assert self._nursery is not None
            self._nursery.start_soon(self._send, batch, self.binding, probe)

    async def _sleep(self, until: float | None) -> None:
        if not self._wake.is_set():
            with trio.move_on_at(math.inf if until is None else until):
                await self._wake.wait()
        self._wake = trio.Event()

    def _full(self, policy: LanePolicy) -> bool:
        return len(self.ready) >= policy.max_items or self.ready_bytes >= policy.max_bytes

    def _admit(self, delivery: Delivery, born: float, now: float | None = None) -> None:
        size_of = self.binding.size_of
        item = _Item(delivery, born, size_of(delivery) if size_of is not None else 0)
        self.held += 1
        self.shared.held += 1
        item.ready_at = trio.current_time() if now is None else now
        self.ready.append(item)
        self.ready_bytes += item.size
        if not self._gathering or self._full(self.binding.policy):
            self._wake.set()

    def _promote(self, now: float) -> None:
        """Due retries go to the front of the FIFO: they are older than what waits there."""
        if not self.delayed or self.delayed[0][0] > now:
            return
        due: list[_Item] = []
        while self.delayed and self.delayed[0][0] <= now:
            at, _, item = heapq.heappop(self.delayed)
            item.ready_at = at
            due.append(item)
        self.ready.extendleft(reversed(due))
        self.ready_bytes += sum(item.size for item in due)

    def _refill(self) -> None:
        spill = self.spill
        if spill is None or spill.empty:
            return
        room = self.binding.policy.queue - self.held
        if room <= 0:
            return
        try:
            records = spill.read(min(room, REFILL_CHUNK))
        except OSError as exc:
            suppressed = self._spill_log.allow()
            if suppressed is not None:
                log.error("delivery.spill_unreadable", destination=self.name, error=str(exc))
            return
        now = trio.current_time()
        hook = self.shared.on_unspilled
        for record in records:
            if hook is not None:
                self.shared.call(hook, record.delivery)
            self._admit(record.delivery, record.born, now)
        if spill.empty:
            log.info("delivery.spill_drained", destination=self.name)

    def _take_batch(self, policy: LanePolicy) -> list[_Item]:
        batch: list[_Item] = []
        size = 0
        now_wall = self.shared.clock()
        expired: list[_Item] = []
        while self.ready and len(batch) < policy.max_items:
            item = self.ready[0]
            if batch and size + item.size > policy.max_bytes:
                break
            self.ready.popleft()
            self.ready_bytes -= item.size
            if now_wall - item.born >= policy.max_age_s:
                expired.append(item)
                continue
            batch.append(item)
            size += item.size
        if expired:
            assert self._nursery is not None
            self._nursery.start_soon(self._give_up_all, [(item, "max_age") for item in expired])
        return batch

    # --- one request -------------------------------------------------------------------------

    async def _send(self, batch: list[_Item], binding: Binding, probe: bool) -> None:
        binding.users += 1
        results: list[tuple[_Item, Outcome, LastRequest | None]] = []
        returned: list[_Item] = []
        try:
            if binding.runner:
                await self._run(batch, binding, probe, results)
            else:
                await self._request(batch, binding, probe, results, returned)
        finally:
            binding.release()
            self.requests -= 1
            self.in_flight -= len(batch)
        if returned:  # the breaker opened mid-batch: back to the front, not an attempt
            self.ready.extendleft(reversed(returned))
            self.ready_bytes += sum(item.size for item in returned)
        dead = self._settle(results)
        self._wake.set()
        if dead:
            await self._give_up_all(dead)

    async def _run(
        self,
        batch: list[_Item],
        binding: Binding,
        probe: bool,
        results: list[tuple[_Item, Outcome, LastRequest | None]],
    ) -> None:
        runner = cast(Runner, binding.target)
        deliveries = [item.delivery for item in batch]
        for item in batch:
            item.attempts += 1
        outcomes: Sequence[Outcome]
        timeout_s = binding.policy.timeout_s
        try:
            call: Callable[[Sequence[Delivery]], Awaitable[Sequence[Outcome]]] = runner.run
            if binding.runner_timeout:
                call = functools.partial(cast(Any, runner).run, timeout_s=timeout_s)
                timeout_s += BACKSTOP_S
            with trio.move_on_after(timeout_s) as deadline:
                outcomes = await call(deliveries)
            if deadline.cancelled_caught:
                outcomes = [self._timeout(binding)] * len(batch)
            elif len(outcomes) != len(batch):
                outcomes = [
                    Reject(f"internal error: {len(outcomes)} outcomes for {len(batch)} deliveries")
                ] * len(batch)
        except Exception as exc:  # a bug in a destination costs its batch, never the lane
            log.error("delivery.adapter_failed", destination=self.name, exc_info=True)
            outcomes = [Reject(f"internal error: {type(exc).__name__}: {exc}")] * len(batch)
        described = binding.describe()
        for item, outcome in zip(batch, outcomes, strict=True):
            results.append((item, outcome, _with_status(described, outcome)))
        self._judge(outcomes, [item.attempts for item in batch], probe=probe)

    async def _request(
        self,
        batch: list[_Item],
        binding: Binding,
        probe: bool,
        results: list[tuple[_Item, Outcome, LastRequest | None]],
        returned: list[_Item],
    ) -> None:
        adapter = cast(Adapter, binding.target)
        assert binding.transport is not None
        deliveries = [item.delivery for item in batch]
        try:
            requests = adapter.requests(deliveries)
            rejected = adapter.rejected(deliveries)
        except Exception:
            log.error("delivery.adapter_failed", destination=self.name, exc_info=True)
            requests, rejected = self._requests_one_by_one(adapter, deliveries)
        for index, reject in rejected.items():
            results.append((batch[index], reject, None))
        if probe and not requests:
            self.breaker.abandon_probe()  # nothing was sent, so nothing was learned
        for number, request in enumerate(requests):
            items = [batch[i] for i in request.items]
            # The first request was paid for by the loop; each later one pays its own way.
            if number and not await self._may_send_more():
                for later in requests[number:]:
                    returned.extend(batch[i] for i in later.items)
                return
            for item in items:
                item.attempts += 1
            summary = LastRequest(method=request.method, url=public_url(request.url))
            outcomes = await self._exchange(adapter, binding, request, len(items))
            status = next((o.status for o in outcomes if not isinstance(o, Delivered)), None)
            log.debug(
                "delivery.request",
                destination=self.name,
                request=request.description,
                items=len(items),
                status=status,
            )
            for item, outcome in zip(items, outcomes, strict=True):
                results.append((item, outcome, _with_status(summary, outcome)))
            self._judge(outcomes, [item.attempts for item in items], probe=probe and number == 0)

    def _requests_one_by_one(
        self, adapter: Adapter, deliveries: list[Delivery]
    ) -> tuple[list[PreparedRequest], dict[int, Reject]]:
        """`requests` raised for a batch: try each delivery alone, so one bad payload costs
        only itself."""
        requests: list[PreparedRequest] = []
        rejected: dict[int, Reject] = {}
        for index, delivery in enumerate(deliveries):
            try:
                for request in adapter.requests([delivery]):
                    requests.append(_reindex(request, index))
                for _, reject in adapter.rejected([delivery]).items():
                    rejected[index] = reject
            except Exception as exc:
                rejected[index] = Reject(f"internal error: {type(exc).__name__}: {exc}")
        return requests, rejected

    async def _may_send_more(self) -> bool:
        """A second request of one batch needs its own token and an admitting breaker."""
        while True:
            now = trio.current_time()
            if self.breaker.state is not State.CLOSED:
                return False
            if self.bucket is None:
                return True
            wait_s = self.bucket.take(now)
            if wait_s <= 0:
                return True
            await trio.sleep(wait_s)

    async def _exchange(
        self, adapter: Adapter, binding: Binding, request: PreparedRequest, count: int
    ) -> Sequence[Outcome]:
        assert binding.transport is not None
        with trio.move_on_after(binding.policy.timeout_s) as deadline:
            answer = await binding.transport.send(request)
        if deadline.cancelled_caught:
            return [self._timeout(binding)] * count
        if not isinstance(answer, Answer):
            return [answer] * count
        try:
            outcomes = adapter.outcomes(request, answer.status, answer.headers, answer.body)
        except Exception as exc:
            log.error("delivery.adapter_failed", destination=self.name, exc_info=True)
            return [Reject(f"internal error: {type(exc).__name__}: {exc}", answer.status)] * count
        if len(outcomes) != count:
            error = f"internal error: {len(outcomes)} outcomes for {count} deliveries"
            return [Reject(error, answer.status)] * count
        return outcomes

    def _timeout(self, binding: Binding) -> Retry:
        return Retry(f"timeout: no answer within {format_duration(binding.policy.timeout_s)}")

    def _judge(self, outcomes: Sequence[Outcome], attempts: list[int], *, probe: bool) -> None:
        """Feed one request's result to the breaker."""
        now = trio.current_time()
        if outcomes and all(isinstance(o, Retry) for o in outcomes):
            self._log_transition(self.breaker.failed(now, probe=probe))
            longest = max(
                (o.after_s for o in outcomes if isinstance(o, Retry) and o.after_s is not None),
                default=None,
            )
            if longest is not None:
                attempt = max(attempts, default=1)
                ceiling = backoff_s(max(1, attempt), self.shared.retry, lambda: 1.0)
                pause = min(longest, self.shared.retry.retry_after_cap_s)
                if pause > ceiling:
                    self._log_transition(self.breaker.hold(now, pause, "retry-after"))
        else:
            self._log_transition(self.breaker.succeeded())

    # --- outcomes --------------------------------------------------------------------------

    def _settle(
        self, results: list[tuple[_Item, Outcome, LastRequest | None]]
    ) -> list[tuple[_Item, str]]:
        """Count deliveries, schedule retries; returns what is to be dead-lettered, and why."""
        shared = self.shared
        policy = self.binding.policy
        now = trio.current_time()
        now_wall = shared.clock()
        dead: list[tuple[_Item, str]] = []
        for item, outcome, request in results:
            if isinstance(outcome, Delivered):
                self._forget(item)
                shared.counts["delivered"] += 1
                shared.call(shared.on_outcome, item.delivery, "delivered", item.attempts)
                continue
            item.error = outcome.error
            item.request = request
            if isinstance(outcome, Reject) or item.attempts >= policy.max_attempts:
                dead.append((item, ""))
            elif now_wall - item.born >= policy.max_age_s:
                dead.append((item, "max_age"))
            else:
                delay_s = retry_delay_s(item.attempts, outcome.after_s, shared.retry, shared.rand)
                shared.counts["retried"] += 1
                log.debug(
                    "delivery.retry",
                    destination=self.name,
                    message_id=item.delivery.message_id,
                    attempt=item.attempts,
                    delay_s=round(delay_s, 3),
                    error=outcome.error,
                )
                self._seq += 1
                heapq.heappush(self.delayed, (now + delay_s, self._seq, item))
        return dead

    async def _give_up_all(self, items: list[tuple[_Item, str]]) -> None:
        for item, reason in items:
            await self._give_up(item, reason)
        self._wake.set()

    async def _give_up(self, item: _Item, reason: str) -> None:
        shared = self.shared
        error = item.error
        if reason == "max_age":
            age = format_duration(self.binding.policy.max_age_s)
            error = f"expired after {age}: {error}" if error else f"expired after {age} unsent"
        status = item.request.status if item.request is not None else None
        suppressed = self._gave_up_log.allow()
        if suppressed is not None:
            log.error(
                "delivery.gave_up",
                destination=self.name,
                message_id=item.delivery.message_id,
                attempts=item.attempts,
                status=status,
                error=error,
                suppressed_since_last=suppressed,
            )
        record = dead_letter(
            at=shared.clock(),
            destination=self.name,
            message_id=item.delivery.message_id,
            attempts=item.attempts,
            error=error,
            last_request=item.request,
            payload=item.delivery.payload,
        )
        try:
            await shared.dead.append(record)
        except OSError as exc:
            log.error(
                "delivery.dead_letter_failed",
                path=str(shared.dead.path),
                message_id=item.delivery.message_id,
                error=exc.strerror or repr(exc),
            )
            self._forget(item)
            return  # not recorded as dead-lettered: a restart will try it again
        self._forget(item)
        shared.counts["dead_lettered"] += 1
        shared.call(shared.on_outcome, item.delivery, "dead_lettered", item.attempts)

    def _forget(self, item: _Item) -> None:
        self.held -= 1
        shared = self.shared
        shared.held -= 1
        shared.room.set()

    # --- logging ---------------------------------------------------------------------------

    def _log_transition(self, transition: Transition | None) -> None:
        if transition is None:
            return
        suppressed = self._breaker_log.allow()
        if suppressed is None:
            return
        event = {
            State.OPEN: "delivery.breaker_open",
            State.HALF_OPEN: "delivery.breaker_half_open",
            State.CLOSED: "delivery.breaker_closed",
        }[transition.state]
        emit = log.warning if transition.state is State.OPEN else log.info
        emit(
            event,
            destination=self.name,
            cooldown_s=round(transition.cooldown_s, 3),
            reason=transition.reason,
            held=self.held,
            spilled=len(self.spill) if self.spill else 0,
            suppressed_since_last=suppressed,
        )

    @staticmethod
    def _bucket(policy: LanePolicy) -> TokenBucket | None:
        if policy.rate_per_s is None:
            return None
        return TokenBucket(policy.rate_per_s, now=trio.current_time() if _in_trio() else 0.0)


def _parameters(function: Callable[..., Any] | None) -> Mapping[str, Any]:
    if function is None:
        return {}
    try:
        return inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def _with_status(request: LastRequest | None, outcome: Outcome) -> LastRequest | None:
    if request is None or isinstance(outcome, Delivered):
        return request
    return LastRequest(method=request.method, url=request.url, status=outcome.status)


def _reindex(request: PreparedRequest, index: int) -> PreparedRequest:
    return PreparedRequest(
        method=request.method,
        url=request.url,
        headers=request.headers,
        body=request.body,
        items=(index,),
        description=request.description,
        secret_headers=request.secret_headers,
    )
