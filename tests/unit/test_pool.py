"""The sender pool with fake and file destinations: backpressure, draining, retries, isolation."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from journeyd.delivery import (
    DeliveryPool,
    DestinationConfigError,
    LastRequest,
    PoolClosed,
    Retryable,
    read_dead_letters,
)
from journeyd.delivery.destinations import FileSender, Sender, build_sender
from journeyd.engine import Delivery
from journeyd.settings import (
    BrazeDestination,
    DeliverySettings,
    Destination,
    FileDestination,
    FunctionDestination,
    WebhookDestination,
)

T0 = 1_772_356_500.0


def delivery(n: int, *, destination: str = "fake") -> Delivery:
    message_id = f"00000000-0000-0000-0000-{n:012d}"
    return Delivery(
        at=T0,
        user=f"u{n}",
        journey="j",
        instance="i",
        step="s",
        destination=destination,
        message_id=message_id,
        payload={"type": "track", "event": "Hello", "userId": f"u{n}", "messageId": message_id},
    )


class FakeSender:
    """A destination whose behaviour each test scripts through `behaviour`."""

    def __init__(self, name: str, config: Destination) -> None:
        self.name = name
        self.config = config
        self.attempts: list[tuple[str, float]] = []
        self.delivered: list[str] = []
        self.gate: trio.Event | None = None
        self.failures: dict[str, list[BaseException]] = {}
        self.opened = False
        self.closed = False

    def describe(self) -> LastRequest:
        return LastRequest(method="FAKE", url=f"fake://{self.name}")

    def open(self) -> None:
        self.opened = True

    async def aclose(self) -> None:
        self.closed = True

    async def deliver(self, d: Delivery) -> None:
        self.attempts.append((d.message_id, trio.current_time()))
        if self.gate is not None:
            await self.gate.wait()
        pending = self.failures.get(d.message_id)
        if pending:
            raise pending.pop(0)
        self.delivered.append(d.message_id)


class Fakes:
    """A sender factory: names listed in `fakes` get a FakeSender, the rest the real adapter."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)
        self.built: dict[str, list[FakeSender]] = {}

    def __call__(
        self,
        name: str,
        config: Destination,
        *,
        resolve_path: Callable[[str], Path],
        environ: Mapping[str, str],
        clock: Callable[[], float],
        timeout_s: float,
        max_connections: int,
    ) -> Sender:
        if name not in self.names:
            return build_sender(
                name,
                config,
                resolve_path=resolve_path,
                environ=environ,
                clock=clock,
                timeout_s=timeout_s,
                max_connections=max_connections,
            )
        fake = FakeSender(name, config)
        self.built.setdefault(name, []).append(fake)
        return fake

    def __getitem__(self, name: str) -> FakeSender:
        return self.built[name][-1]


async def delivered(pool: DeliveryPool, count: int) -> None:
    """Wait (bounded) until `count` deliveries succeeded; stats have no event to wait on."""
    with trio.fail_after(10):
        while pool.stats["delivered"] < count:  # noqa: ASYNC110
            await trio.sleep(0.005)


FAKE_CONFIG = FileDestination(path="unused.jsonl")


def make_pool(
    tmp_path: Path,
    *,
    fakes: Fakes | None = None,
    destinations: Mapping[str, Destination] | None = None,
    workers: int = 2,
    queue: int = 10,
    max_attempts: int = 3,
    timeout: str = "10s",
    **kwargs: Any,
) -> DeliveryPool:
    return DeliveryPool(
        destinations if destinations is not None else {"fake": FAKE_CONFIG},
        DeliverySettings(workers=workers, queue=queue, timeout=timeout, max_attempts=max_attempts),
        resolve_path=lambda p: tmp_path / p,
        dead_letter_path=tmp_path / "dead" / "letters.jsonl",
        environ={},
        clock=lambda: T0 + trio.current_time(),
        rand=lambda: 0.5,
        sender_factory=fakes if fakes is not None else Fakes("fake"),
        **kwargs,
    )


async def test_full_queue_makes_submit_wait(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Backpressure: with queue=2 and a stuck destination, submit blocks instead of buffering."""
    fakes = Fakes("fake")
    pool = make_pool(tmp_path, fakes=fakes, workers=1, queue=2, timeout="1h")
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        fakes["fake"].gate = gate = trio.Event()
        for n in range(3):  # one taken by the worker, two fill the queue
            await pool.submit(delivery(n))
        await trio.testing.wait_all_tasks_blocked()
        assert pool.stats["in_flight"] == 1
        assert pool.stats["queued"] == 2

        with trio.move_on_after(30) as blocked:
            await pool.submit(delivery(3))
        assert blocked.cancelled_caught, "submit returned although the queue was full"
        assert pool.stats["queued"] == 2

        gate.set()
        await pool.submit(delivery(3))
        pool.close()
    assert fakes["fake"].delivered == [delivery(n).message_id for n in range(4)]
    assert pool.stats == {
        "delivered": 4,
        "retried": 0,
        "dead_lettered": 0,
        "queued": 0,
        "in_flight": 0,
    }


async def test_close_drains_the_queue_then_run_returns(tmp_path: Path) -> None:
    """Shutdown loses nothing already queued: run() returns only once all of it was sent."""
    fakes = Fakes("fake")
    pool = make_pool(tmp_path, fakes=fakes, workers=2, queue=10)
    for n in range(8):  # queued before the workers even start
        await pool.submit(delivery(n))
    pool.close()
    with pytest.raises(PoolClosed):
        await pool.submit(delivery(99))
    with trio.fail_after(5):
        await pool.run()
    assert sorted(fakes["fake"].delivered) == [delivery(n).message_id for n in range(8)]
    assert fakes["fake"].closed
    assert pool.stats["delivered"] == 8


async def test_destination_exception_costs_one_delivery_not_the_pool(tmp_path: Path) -> None:
    """A bug inside an adapter dead-letters that delivery; the workers carry on."""
    fakes = Fakes("fake")
    pool = make_pool(tmp_path, fakes=fakes, workers=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        fakes["fake"].failures[delivery(1).message_id] = [KeyError("boom")]
        for n in range(4):
            await pool.submit(delivery(n))
        pool.close()
    assert fakes["fake"].delivered == [delivery(n).message_id for n in (0, 2, 3)]
    [letter] = read_dead_letters(tmp_path / "dead" / "letters.jsonl")
    assert letter.message_id == delivery(1).message_id
    assert letter.attempts == 1
    assert letter.error.startswith("internal error: KeyError")
    assert letter.payload == delivery(1).payload


async def test_retry_backoff_timing_is_deterministic(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Retries wait the jittered exponential backoff, in trio time, with an injected random."""
    fakes = Fakes("fake")
    pool = make_pool(tmp_path, fakes=fakes, max_attempts=4)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        fake = fakes["fake"]
        fake.failures[delivery(1).message_id] = [
            Retryable("nope"),
            Retryable("nope"),
            Retryable("x"),
        ]
        start = trio.current_time()
        await pool.submit(delivery(1))
        pool.close()
    times = [at - start for _, at in fake.attempts]
    # rand=0.5 -> 3/4 of the ceiling: 0.75 s, 1.5 s, 3 s after attempts 1, 2, 3.
    assert times == pytest.approx([0.0, 0.75, 2.25, 5.25])
    assert fake.delivered == [delivery(1).message_id]
    assert pool.stats["retried"] == 3


async def test_gives_up_after_max_attempts_with_last_error(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A delivery that keeps failing ends in the dead-letter file with its last error."""
    fakes = Fakes("fake")
    pool = make_pool(tmp_path, fakes=fakes, max_attempts=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        fakes["fake"].failures[delivery(1).message_id] = [
            Retryable(
                f"failure {n}", request=LastRequest(method="FAKE", url="fake://x", status=503)
            )
            for n in range(1, 10)
        ]
        await pool.submit(delivery(1))
        pool.close()
    assert len(fakes["fake"].attempts) == 3
    [letter] = read_dead_letters(tmp_path / "dead" / "letters.jsonl")
    assert (letter.attempts, letter.error, letter.destination) == (3, "failure 3", "fake")
    assert letter.last_request is not None
    assert letter.last_request.status == 503
    assert pool.stats["dead_lettered"] == 1


async def test_attempt_timeout_is_a_retryable_failure(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A destination that never answers is abandoned per attempt after delivery.timeout."""
    fakes = Fakes("fake")
    pool = make_pool(tmp_path, fakes=fakes, max_attempts=2, timeout="5s")
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        fakes["fake"].gate = trio.Event()  # never set
        start = trio.current_time()
        await pool.submit(delivery(1))
        pool.close()
    # 5 s timeout, 0.75 s backoff, 5 s timeout.
    assert trio.current_time() - start == pytest.approx(10.75)
    [letter] = read_dead_letters(tmp_path / "dead" / "letters.jsonl")
    assert letter.error == "timeout: no answer within 5s"
    assert letter.attempts == 2


async def test_unknown_destination_name_is_dead_lettered(tmp_path: Path) -> None:
    """A delivery naming no configured destination fails permanently, not forever."""
    pool = make_pool(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await pool.submit(delivery(1, destination="gone"))
        pool.close()
    [letter] = read_dead_letters(tmp_path / "dead" / "letters.jsonl")
    assert letter.error == "destination gone is not configured"


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        (BrazeDestination(endpoint="https://rest.iad-01.braze.com", api_key_env="K"), "braze"),
        (FunctionDestination(function="mod:fn"), "function"),
    ],
)
def test_unsupported_destination_types_fail_at_construction(
    tmp_path: Path, config: Destination, kind: str
) -> None:
    """A type this build cannot send to stops startup with a clear message, not at send time."""
    with pytest.raises(DestinationConfigError) as info:
        make_pool(tmp_path, destinations={"crm": config}, fakes=Fakes())
    assert str(info.value) == f"destination crm: type {kind} is not supported yet"


def test_missing_webhook_secret_fails_at_construction(tmp_path: Path) -> None:
    """secret_env naming an unset variable is a startup error that names the variable."""
    config = WebhookDestination(url="http://127.0.0.1:9/hook", secret_env="HOOK_SECRET")
    with pytest.raises(DestinationConfigError) as info:
        make_pool(tmp_path, destinations={"hook": config}, fakes=Fakes())
    assert str(info.value) == (
        "destination hook: environment variable HOOK_SECRET (secret_env) is not set"
    )


@pytest.mark.parametrize("value", ["s3cr3t-value", "whsec_!!!not-base64!!!", "whsec_"])
def test_malformed_webhook_secret_is_rejected_without_echoing_it(
    tmp_path: Path, value: str
) -> None:
    """A bad secret is refused at startup, and the message never contains the secret."""
    config = WebhookDestination(url="http://127.0.0.1:9/hook", secret_env="HOOK_SECRET")
    with pytest.raises(DestinationConfigError) as info:
        DeliveryPool(
            {"hook": config},
            DeliverySettings(),
            resolve_path=lambda p: tmp_path / p,
            dead_letter_path=tmp_path / "dlq.jsonl",
            environ={"HOOK_SECRET": value},
        )
    assert "HOOK_SECRET" in str(info.value)
    assert value.removeprefix("whsec_") not in str(info.value) or value == "whsec_"


async def test_file_destination_lines_equal_payloads_and_resolve_relative_paths(
    tmp_path: Path,
) -> None:
    """The file destination writes exactly the payload, one line per send, at resolve_path(path)."""
    config = FileDestination(path="var/out/deliveries.jsonl")
    resolved: list[str] = []

    def resolve(path: str) -> Path:
        resolved.append(path)
        return tmp_path / "cfgdir" / path

    pool = DeliveryPool(
        {"outbox": config},
        DeliverySettings(workers=4, queue=100),
        resolve_path=resolve,
        dead_letter_path=tmp_path / "dlq.jsonl",
        environ={},
    )
    target = tmp_path / "cfgdir" / "var" / "out" / "deliveries.jsonl"
    sent = [delivery(n, destination="outbox") for n in range(20)]
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for d in sent:
            await pool.submit(d)
        await delivered(pool, len(sent))
        # Flushed per batch: every line is readable while the file is still open.
        lines_while_open = target.read_bytes().splitlines()
        pool.close()
    assert resolved == ["var/out/deliveries.jsonl"]
    assert len(lines_while_open) == len(sent)
    written = [json.loads(line) for line in target.read_bytes().splitlines()]
    assert sorted(written, key=lambda p: p["messageId"]) == [d.payload for d in sent]


async def test_file_destination_batches_concurrent_sends(tmp_path: Path) -> None:
    """Concurrent sends share flushes (group commit), and each returns only once flushed."""
    path = tmp_path / "out.jsonl"
    sender = FileSender("outbox", FileDestination(path="out.jsonl"), path=path)
    sender.open()
    sent = [delivery(n, destination="outbox") for n in range(50)]
    on_disk_at_return: list[bool] = []

    async def send_one(d: Delivery) -> None:
        await sender.deliver(d)
        on_disk_at_return.append(d.message_id.encode() in path.read_bytes())

    async with trio.open_nursery() as nursery:
        for d in sent:
            nursery.start_soon(send_one, d)
    await sender.aclose()
    assert sender.lines_written == 50
    assert 1 <= sender.batches_written < 50
    assert all(on_disk_at_return)
    written = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert sorted(written, key=lambda p: p["messageId"]) == [d.payload for d in sent]


async def test_reconfigure_applies_to_later_deliveries(tmp_path: Path) -> None:
    """SIGHUP: deliveries after reconfigure() go to the new destination; the old one is closed."""
    pool = make_pool(
        tmp_path,
        destinations={"outbox": FileDestination(path="first.jsonl")},
        fakes=Fakes(),
        workers=1,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await pool.submit(delivery(1, destination="outbox"))
        await delivered(pool, 1)
        pool.reconfigure({"outbox": FileDestination(path="second.jsonl")})
        await pool.submit(delivery(2, destination="outbox"))
        pool.close()
    first = [json.loads(x)["userId"] for x in (tmp_path / "first.jsonl").read_bytes().splitlines()]
    second = [
        json.loads(x)["userId"] for x in (tmp_path / "second.jsonl").read_bytes().splitlines()
    ]
    assert (first, second) == (["u1"], ["u2"])


def test_failed_reconfigure_keeps_the_old_destinations(tmp_path: Path) -> None:
    """A bad reload is rejected before anything changes, so the running config keeps working."""
    fakes = Fakes("fake")
    pool = make_pool(tmp_path, fakes=fakes)
    before = fakes["fake"]
    with pytest.raises(DestinationConfigError, match="type braze is not supported yet"):
        pool.reconfigure(
            {"fake": FAKE_CONFIG, "crm": BrazeDestination(endpoint="https://x", api_key_env="K")}
        )
    assert pool._slots["fake"].sender is before
