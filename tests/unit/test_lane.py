"""A destination's lane on trio's virtual clock: batching, rate, concurrency, retries, dead letters.

The fakes follow journeyd/delivery/adapter.py exactly: `FakeAdapter` is a sans-I/O adapter
(one request per batch, a JSON list of messageIds, per-item failures reported in a 200
body), `FakeService` answers its requests through httpx's MockTransport (the lane's real
HttpTransport sends them) and records when each arrived, and `FakeRunner` is a Runner.
test_pool.py imports them.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from journeyd.delivery import DeliveryPool, read_dead_letters
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
from journeyd.delivery.retry import Verdict, classify_status, parse_retry_after
from journeyd.engine import Delivery
from journeyd.settings import DeliverySettings, Destination, WebhookDestination

T0 = 1_772_356_500.0


def delivery(n: int, *, destination: str = "crm", at: float = T0, **extra: Any) -> Delivery:
    message_id = f"00000000-0000-0000-0000-{n:012d}"
    return Delivery(
        at=at,
        user=f"u{n}",
        journey="j",
        instance="i",
        step="s",
        destination=destination,
        message_id=message_id,
        payload={"type": "track", "userId": f"u{n}", "messageId": message_id, **extra},
    )


def mid(n: int) -> str:
    return delivery(n).message_id


def limits(
    *,
    max_items: int = 100,
    max_bytes: int = 1_000_000,
    max_wait_s: float = 0.0,
    rate_per_s: float | None = None,
    concurrency: int = 4,
) -> BatchLimits:
    return BatchLimits(
        max_items=max_items,
        max_bytes=max_bytes,
        max_wait_s=max_wait_s,
        rate_per_s=rate_per_s,
        concurrency=concurrency,
    )


class FakeAdapter:
    """One POST per batch; `payload["size"]` is what a delivery adds to the body;
    `payload["invalid"]` is rejected before sending; `payload["boom"]` makes `requests` raise.
    A 200 body may say {"failed": {messageId: "retry" | "reject"}} for per-item failures."""

    def __init__(self, name: str, batch: BatchLimits, clock: Callable[[], float]) -> None:
        self.name = name
        self._limits = batch
        self._clock = clock
        self.boom_in_outcomes = False

    @property
    def limits(self) -> BatchLimits:
        return self._limits

    def size_of(self, delivery: Delivery) -> int:
        return int(delivery.payload.get("size", 10))

    def requests(self, batch: Sequence[Delivery]) -> list[PreparedRequest]:
        if any(d.payload.get("boom") for d in batch):
            raise KeyError("boom")
        items = tuple(i for i, d in enumerate(batch) if not d.payload.get("invalid"))
        if not items:
            return []
        body = json.dumps([batch[i].message_id for i in items]).encode()
        return [
            PreparedRequest(
                method="POST",
                url=f"http://user:secret@fake.test/{self.name}",
                headers={"authorization": "Bearer s3cret"},
                body=body,
                items=items,
                description=f"POST fake.test/{self.name} ({len(items)} items)",
                secret_headers=frozenset({"authorization"}),
            )
        ]

    def rejected(self, batch: Sequence[Delivery]) -> Mapping[int, Reject]:
        invalid = [i for i, d in enumerate(batch) if d.payload.get("invalid")]
        return {i: Reject("invalid payload") for i in invalid}

    def outcomes(
        self, request: PreparedRequest, status: int, headers: Mapping[str, str], body: bytes
    ) -> Sequence[Outcome]:
        if self.boom_in_outcomes:
            raise ValueError("cannot parse")
        count = len(request.items)
        verdict = classify_status(status)
        text = body.decode()
        if verdict is Verdict.RETRY:
            after = parse_retry_after(headers.get("retry-after"), now_wall=self._clock())
            return [Retry(f"HTTP {status}: {text}".rstrip(": "), after, status)] * count
        if verdict is Verdict.PERMANENT:
            return [Reject(f"HTTP {status}: {text}".rstrip(": "), status)] * count
        failed = json.loads(body).get("failed", {}) if body else {}
        ids = json.loads(request.body)
        out: list[Outcome] = []
        for message_id in ids:
            kind = failed.get(message_id)
            if kind == "retry":
                out.append(Retry("item failed", None, status))
            elif kind == "reject":
                out.append(Reject("item refused", status))
            else:
                out.append(Delivered())
        return out


@dataclass
class Arrival:
    at: float
    ids: list[str]
    status: int | None = None  # None: no answer (hung, reset)


Answer = httpx.Response | BaseException | Callable[[], Any]


@dataclass
class FakeService:
    """The far end, behind httpx.MockTransport: answers from `script`, then `default`."""

    default: httpx.Response = field(default_factory=lambda: httpx.Response(200))
    script: deque[Answer] = field(default_factory=deque)
    delay_s: float = 0.0
    arrivals: list[Arrival] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    def answer(self, *answers: Answer) -> None:
        self.script.extend(answers)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        arrival = Arrival(trio.current_time(), json.loads(request.content))
        self.arrivals.append(arrival)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            reply = self.script.popleft() if self.script else self.default
            if self.delay_s:
                await trio.sleep(self.delay_s)
            if callable(reply) and not isinstance(reply, httpx.Response):
                reply = await reply()
            if isinstance(reply, BaseException):
                raise reply
            assert isinstance(reply, httpx.Response)
            arrival.status = reply.status_code
            return reply
        finally:
            self.in_flight -= 1

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)  # type: ignore[arg-type]

    @property
    def delivered_ids(self) -> list[str]:
        """Every id sent, failed attempts included."""
        return [i for a in self.arrivals for i in a.ids]

    @property
    def accepted_ids(self) -> list[str]:
        """Ids in requests answered 200 (no per-item failures are scripted where used)."""
        return [i for a in self.arrivals if a.status == 200 for i in a.ids]


async def until(condition: Callable[[], bool]) -> None:
    """Wait for work done in threads (file writes): virtual time runs on meanwhile."""
    with trio.fail_after(3600):
        while not condition():
            await trio.sleep(0.01)


class FakeRunner:
    """A Runner: records each batch; `fail` maps a messageId to the exception or outcome."""

    def __init__(self, batch: BatchLimits) -> None:
        self._limits = batch
        self.batches: list[tuple[float, list[str]]] = []
        self.fail: dict[str, BaseException | Outcome] = {}
        self.gate: trio.Event | None = None
        self.opened = False
        self.closed = False

    @property
    def limits(self) -> BatchLimits:
        return self._limits

    def open(self) -> None:
        self.opened = True

    async def aclose(self) -> None:
        self.closed = True

    async def run(self, batch: Sequence[Delivery]) -> Sequence[Outcome]:
        self.batches.append((trio.current_time(), [d.message_id for d in batch]))
        if self.gate is not None:
            await self.gate.wait()
        out: list[Outcome] = []
        for d in batch:
            failure = self.fail.get(d.message_id)
            if isinstance(failure, BaseException):
                raise failure
            out.append(failure if failure is not None else Delivered())
        return out

    @property
    def delivered_ids(self) -> list[str]:
        return [i for _, ids in self.batches for i in ids]


class Factory:
    """An adapter factory: each destination name gets the adapter or runner made for it."""

    def __init__(self, **makers: Callable[[str], Adapter | Runner]) -> None:
        self.makers = makers
        self.built: dict[str, list[Adapter | Runner]] = {}

    def __call__(
        self,
        name: str,
        config: Destination,
        *,
        resolve_path: Callable[[str], Path],
        environ: Mapping[str, str],
        clock: Callable[[], float],
    ) -> Adapter | Runner:
        target = self.makers[name](name)
        self.built.setdefault(name, []).append(target)
        return target


def wall() -> float:
    return T0 + trio.current_time()


def config(**policy: Any) -> WebhookDestination:
    """Carries the destination's policy keys; the fake factory ignores the url."""
    return WebhookDestination(url="http://fake.test/", **policy)


def make_pool(
    tmp_path: Path,
    destinations: Mapping[str, Destination],
    factory: Factory,
    *,
    service: FakeService | None = None,
    max_attempts: int = 8,
    queue: int = 100,
    **kwargs: Any,
) -> DeliveryPool:
    return DeliveryPool(
        destinations,
        DeliverySettings(queue=queue, timeout="10s", max_attempts=max_attempts),
        resolve_path=lambda p: tmp_path / p,
        dead_letter_path=tmp_path / "dead-letters.jsonl",
        spill_dir=tmp_path / "spill",
        environ={},
        clock=wall,
        rand=lambda: 0.5,
        adapter_factory=factory,
        http_transport=service.transport() if service is not None else None,
        **kwargs,
    )


def adapter_pool(
    tmp_path: Path, service: FakeService, batch: BatchLimits, **policy: Any
) -> DeliveryPool:
    factory = Factory(crm=lambda name: FakeAdapter(name, batch, wall))
    max_attempts = policy.pop("pool_max_attempts", 8)
    return make_pool(
        tmp_path, {"crm": config(**policy)}, factory, service=service, max_attempts=max_attempts
    )


def letters(tmp_path: Path) -> list[Any]:
    return read_dead_letters(tmp_path / "dead-letters.jsonl")


async def run_until_closed(pool: DeliveryPool, deliveries: Sequence[Delivery]) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for d in deliveries:
            await pool.submit(d)
        pool.close()


# --- batching ---------------------------------------------------------------------------------


async def test_batches_split_by_count_and_a_partial_batch_waits_max_wait(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Full batches go at once; the remainder waits max_wait_s for company, then goes."""
    service = FakeService()
    pool = adapter_pool(tmp_path, service, limits(max_items=3, max_wait_s=1.0, concurrency=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for n in range(7):
            await pool.submit(delivery(n))
        await trio.sleep(5)
        pool.close()
    assert [(a.at, len(a.ids)) for a in service.arrivals] == [(0.0, 3), (0.0, 3), (1.0, 1)]
    assert service.delivered_ids == [mid(n) for n in range(7)]


async def test_batches_split_by_bytes_and_an_oversize_delivery_goes_alone(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """size_of bounds a batch's bytes; a delivery bigger than max_bytes is sent on its own."""
    service = FakeService()
    pool = adapter_pool(tmp_path, service, limits(max_bytes=250, concurrency=1))
    sizes = [100, 100, 100, 300, 100, 100]
    await run_until_closed(pool, [delivery(n, size=s) for n, s in enumerate(sizes)])
    assert [a.ids for a in service.arrivals] == [
        [mid(0), mid(1)],
        [mid(2)],
        [mid(3)],
        [mid(4), mid(5)],
    ]


async def test_partial_batch_collects_what_arrives_within_max_wait(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """max_wait_s counts from the oldest waiting delivery: a later one joins its batch."""
    service = FakeService()
    pool = adapter_pool(tmp_path, service, limits(max_items=10, max_wait_s=1.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await pool.submit(delivery(1))
        await trio.sleep(0.4)
        await pool.submit(delivery(2))
        await trio.sleep(2)
        await pool.submit(delivery(3))
        pool.close()  # closing flushes at once: no wait for company
    assert [(a.at, a.ids) for a in service.arrivals] == [
        (1.0, [mid(1), mid(2)]),
        (pytest.approx(2.4), [mid(3)]),
    ]


# --- rate and concurrency ---------------------------------------------------------------------


async def test_rate_limit_spaces_requests_evenly(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """rate = 5/s: requests leave every 0.2 virtual seconds, never more than 5 in a second."""
    service = FakeService()
    pool = adapter_pool(tmp_path, service, limits(max_items=1, rate_per_s=5.0))
    await run_until_closed(pool, [delivery(n) for n in range(12)])
    times = [a.at for a in service.arrivals]
    assert times == pytest.approx([0.2 * n for n in range(12)])
    for start in times:
        assert sum(start <= t < start + 1.0 - 1e-9 for t in times) <= 5


def test_file_destination_takes_its_policy_keys(tmp_path: Path) -> None:
    """batch_size, batch_wait, rate and concurrency of a file destination reach its lane."""
    from journeyd.delivery.destinations import FileSender
    from journeyd.settings import FileDestination

    plain = FileSender("out", FileDestination(path="o.jsonl"), path=tmp_path / "o.jsonl")
    assert plain.limits == BatchLimits(
        max_items=1000, max_bytes=4 << 20, max_wait_s=0.0, rate_per_s=None, concurrency=1
    )
    tuned = FileDestination(
        path="o.jsonl", batch_size=5, batch_wait="2s", rate=2.5, concurrency=3, batch_bytes=4096
    )
    sender = FileSender("out", tuned, path=tmp_path / "o.jsonl")
    assert sender.limits == BatchLimits(
        max_items=5, max_bytes=4096, max_wait_s=2.0, rate_per_s=2.5, concurrency=3
    )


async def test_concurrency_caps_requests_in_flight(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """concurrency = 2: a third request waits until one of the two in flight has answered."""
    service = FakeService(delay_s=1.0)
    pool = adapter_pool(tmp_path, service, limits(max_items=1, concurrency=2))
    await run_until_closed(pool, [delivery(n) for n in range(6)])
    assert service.most_in_flight == 2
    assert [a.at for a in service.arrivals] == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]


# --- retries ----------------------------------------------------------------------------------


async def test_retry_timing_is_exact_with_a_fixed_random(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """5xx backs off 3/4 of min(60, 2**(n-1)) s with rand = 0.5, in virtual time."""
    service = FakeService()
    service.answer(httpx.Response(503), httpx.Response(500), httpx.Response(502))
    pool = adapter_pool(tmp_path, service, limits())
    await run_until_closed(pool, [delivery(1)])
    assert [a.at for a in service.arrivals] == pytest.approx([0.0, 0.75, 2.25, 5.25])
    assert pool.stats["delivered"] == 1
    assert pool.stats["retried"] == 3
    assert letters(tmp_path) == []


async def test_retry_does_not_hold_up_other_deliveries(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A delivery waiting for its retry sits in the delay heap; the lane sends others meanwhile."""
    service = FakeService()
    service.answer(httpx.Response(503))
    pool = adapter_pool(tmp_path, service, limits(max_items=1, concurrency=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await pool.submit(delivery(1))
        await trio.sleep(0.1)
        await pool.submit(delivery(2))
        await pool.submit(delivery(3))
        pool.close()
    assert [(a.at, a.ids) for a in service.arrivals] == [
        (0.0, [mid(1)]),
        (pytest.approx(0.1), [mid(2)]),
        (pytest.approx(0.1), [mid(3)]),
        (0.75, [mid(1)]),
    ]


async def test_retry_after_is_honoured_and_pauses_the_lane(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """429 with Retry-After: 7 retries after exactly 7 s, and nothing else goes meanwhile."""
    service = FakeService()
    service.answer(httpx.Response(429, headers={"retry-after": "7"}))
    pool = adapter_pool(tmp_path, service, limits(max_items=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await pool.submit(delivery(1))
        await trio.sleep(1)
        await pool.submit(delivery(2))  # the service asked for a pause: this waits too
        pool.close()
    # At 7 s the due retry is the half-open probe; once it succeeds the waiting one follows.
    assert [(a.at, a.ids) for a in service.arrivals] == [
        (0.0, [mid(1)]),
        (7.0, [mid(1)]),
        (7.0, [mid(2)]),
    ]
    assert pool.stats["delivered"] == 2


async def test_retry_after_http_date_counts_from_the_wall_clock(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A Retry-After given as an HTTP-date is waited for until that wall-clock time."""
    import email.utils

    service = FakeService()
    until = email.utils.formatdate(T0 + 100, usegmt=True)
    service.answer(httpx.Response(503, headers={"retry-after": until}))
    pool = adapter_pool(tmp_path, service, limits())
    await run_until_closed(pool, [delivery(1)])
    assert [a.at for a in service.arrivals] == pytest.approx([0.0, 100.0])


async def test_per_item_failure_retries_only_the_failed_items(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A 2xx that reports one item failed: only that item is retried, one item dead-lettered."""
    service = FakeService()
    service.answer(
        httpx.Response(200, json={"failed": {mid(2): "retry", mid(3): "reject"}}),
    )
    pool = adapter_pool(tmp_path, service, limits())
    await run_until_closed(pool, [delivery(n) for n in range(1, 5)])
    assert [(a.at, a.ids) for a in service.arrivals] == [
        (0.0, [mid(1), mid(2), mid(3), mid(4)]),
        (0.75, [mid(2)]),
    ]
    [letter] = letters(tmp_path)
    assert (letter.message_id, letter.error, letter.attempts) == (mid(3), "item refused", 1)
    assert pool.stats == {
        "delivered": 3,
        "retried": 1,
        "dead_lettered": 1,
        "queued": 0,
        "in_flight": 0,
    }


# --- giving up --------------------------------------------------------------------------------


async def test_max_attempts_dead_letters_with_the_last_error_and_request(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """After max_attempts the dead letter has the payload, the last status, error and URL
    (without credentials), and the time of the last failure."""
    service = FakeService()
    service.answer(httpx.Response(500), httpx.Response(502), httpx.Response(503, text="down"))
    pool = adapter_pool(tmp_path, service, limits(), max_attempts=3)
    await run_until_closed(pool, [delivery(1)])
    assert len(service.arrivals) == 3
    [letter] = letters(tmp_path)
    assert (letter.attempts, letter.error) == (3, "HTTP 503: down")
    assert letter.last_request is not None
    assert (letter.last_request.method, letter.last_request.status) == ("POST", 503)
    assert letter.last_request.url == "http://fake.test/crm"
    assert letter.at == pytest.approx(T0 + 0.75 + 1.5)
    assert letter.payload == delivery(1).payload
    raw = (tmp_path / "dead-letters.jsonl").read_bytes()
    assert b"secret" not in raw
    assert b"s3cret" not in raw


async def test_max_age_dead_letters_with_the_last_error(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A delivery still failing when older than max_age (from delivery.at) is given up."""
    service = FakeService(default=httpx.Response(503, text="maintenance"))
    pool = adapter_pool(
        tmp_path, service, limits(), max_age="10s", max_attempts=100, pool_max_attempts=100
    )
    await run_until_closed(pool, [delivery(1)])
    # Attempts at 0, 0.75, 2.25 and 5.25; the retry due at 11.25 is past 10 s: not sent.
    assert [a.at for a in service.arrivals] == pytest.approx([0.0, 0.75, 2.25, 5.25])
    [letter] = letters(tmp_path)
    assert letter.error == "expired after 10s: HTTP 503: maintenance"
    assert letter.attempts == 4
    assert letter.at == pytest.approx(T0 + 11.25)
    assert letter.last_request is not None
    assert letter.last_request.status == 503


async def test_delivery_older_than_max_age_is_not_sent(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A delivery that waited (say, on disk) past max_age is dead-lettered without a send."""
    service = FakeService()
    pool = adapter_pool(tmp_path, service, limits(), max_age="1h")
    await run_until_closed(pool, [delivery(1, at=T0 - 3601), delivery(2)])
    assert service.delivered_ids == [mid(2)]
    [letter] = letters(tmp_path)
    assert (letter.message_id, letter.error, letter.attempts) == (
        mid(1),
        "expired after 1h unsent",
        0,
    )


async def test_reject_dead_letters_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A permanent answer (400) is not retried: one request, one dead letter with status."""
    service = FakeService()
    service.answer(httpx.Response(400, text="bad field"))
    pool = adapter_pool(tmp_path, service, limits())
    await run_until_closed(pool, [delivery(1)])
    assert len(service.arrivals) == 1
    [letter] = letters(tmp_path)
    assert (letter.attempts, letter.error) == (1, "HTTP 400: bad field")
    assert letter.last_request is not None
    assert letter.last_request.status == 400
    assert pool.stats["retried"] == 0


async def test_adapter_rejected_delivery_is_dead_lettered_unsent(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A delivery the adapter refuses to put in a request is dead-lettered; the rest go."""
    service = FakeService()
    pool = adapter_pool(tmp_path, service, limits())
    await run_until_closed(pool, [delivery(1), delivery(2, invalid=True), delivery(3)])
    assert service.delivered_ids == [mid(1), mid(3)]
    [letter] = letters(tmp_path)
    assert (letter.message_id, letter.error, letter.attempts) == (mid(2), "invalid payload", 0)
    assert letter.last_request is None


async def test_timeout_and_transport_errors_are_retried(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """No answer within the timeout and a refused connection are both retryable failures."""

    async def hang() -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    service = FakeService()
    service.answer(hang, httpx.ConnectError("refused"))
    pool = adapter_pool(tmp_path, service, limits(), timeout="5s", max_attempts=2)
    await run_until_closed(pool, [delivery(1), delivery(2)])
    # One batch: the first request hangs 5 s, the retry (after 0.75 s) is refused.
    assert [a.at for a in service.arrivals] == pytest.approx([0.0, 5.75])
    got = sorted((letter.message_id, letter.error, letter.attempts) for letter in letters(tmp_path))
    assert got == [
        (mid(1), "transport error: ConnectError: refused", 2),
        (mid(2), "transport error: ConnectError: refused", 2),
    ]


# --- a destination that raises ----------------------------------------------------------------


async def test_adapter_that_raises_costs_only_the_delivery_that_made_it_raise(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """`requests` raising for a batch: each delivery is tried alone; only the bad one is lost."""
    service = FakeService()
    pool = adapter_pool(tmp_path, service, limits())
    await run_until_closed(pool, [delivery(1), delivery(2, boom=True), delivery(3)])
    assert sorted(service.delivered_ids) == [mid(1), mid(3)]
    [letter] = letters(tmp_path)
    assert letter.message_id == mid(2)
    assert letter.error == "internal error: KeyError: 'boom'"


async def test_outcomes_raising_and_runner_raising_never_kill_the_lane(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """An exception from outcomes() or a runner dead-letters that batch; later ones deliver."""
    service = FakeService()
    adapter = FakeAdapter("crm", limits(max_items=1, concurrency=1), wall)
    runner = FakeRunner(limits(max_items=1, concurrency=1))
    runner.fail[mid(11)] = RuntimeError("user code broke")
    factory = Factory(crm=lambda name: adapter, fn=lambda name: runner)
    pool = make_pool(tmp_path, {"crm": config(), "fn": config()}, factory, service=service)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        adapter.boom_in_outcomes = True
        await pool.submit(delivery(1))
        await pool.submit(delivery(11, destination="fn"))
        await trio.sleep(1)
        adapter.boom_in_outcomes = False
        await pool.submit(delivery(2))
        await pool.submit(delivery(12, destination="fn"))
        pool.close()
    errors = sorted((letter.message_id, letter.error) for letter in letters(tmp_path))
    assert errors == [
        (mid(1), "internal error: ValueError: cannot parse"),
        (mid(11), "internal error: RuntimeError: user code broke"),
    ]
    assert pool.stats["delivered"] == 2
    assert runner.delivered_ids == [mid(11), mid(12)]


async def test_runner_outcomes_retry_and_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A runner's Retry outcome backs off like HTTP; a runner that hangs times out."""
    runner = FakeRunner(limits(max_items=1))
    runner.fail[mid(1)] = Retry("try later")
    factory = Factory(fn=lambda name: runner)
    pool = make_pool(tmp_path, {"fn": config(timeout="3s", max_attempts=2)}, factory)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await pool.submit(delivery(1, destination="fn"))
        await trio.sleep(10)
        runner.gate = trio.Event()  # never set: every call hangs
        await pool.submit(delivery(2, destination="fn"))
        pool.close()
    got = sorted((letter.message_id, letter.error, letter.attempts) for letter in letters(tmp_path))
    assert got == [(mid(1), "try later", 2), (mid(2), "timeout: no answer within 3s", 2)]
    assert [t for t, _ in runner.batches] == pytest.approx([0.0, 0.75, 10.0, 13.75])


async def test_a_probe_batch_rejected_before_sending_does_not_wedge_the_lane(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """When the half-open probe batch holds only deliveries the adapter rejects before any
    request, nothing was learned: the lane stays half-open and the next batch probes, so a
    healthy service is reached again."""
    from journeyd.delivery.breaker import State

    service = FakeService(default=httpx.Response(503))
    pool = adapter_pool(tmp_path, service, limits(max_items=1, concurrency=1), pool_max_attempts=1)
    lane = pool._lanes["crm"]
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for i in range(5):  # five failed requests open the breaker
            await pool.submit(delivery(i))
        await trio.sleep(0.3)
        assert lane.breaker.state is State.OPEN
        await pool.submit(delivery(100, invalid=True))  # becomes the probe
        service.default = httpx.Response(200)
        await trio.sleep(3)
        for i in range(200, 203):
            await pool.submit(delivery(i))
        await trio.sleep(3)
        assert lane.breaker.state is State.CLOSED
        assert service.accepted_ids[-3:] == [delivery(i).message_id for i in range(200, 203)]
        nursery.cancel_scope.cancel()
