"""A destination down while 20,000 deliveries pile up, against two real HTTP servers.

A real DeliveryPool on the real clock sends to two real local HTTP servers (receiver.py). One
answers 503 for the whole outage; the other must keep receiving everything, the dead one's
backlog must go to its spill queue on disk (memory stays bounded), and after recovery every
delivery must arrive with its messageId and payload unchanged. The adapter is a minimal
batching one written here (a JSON array per request, up to 100 per request), so the test
exercises the lanes, not one service's wire format.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import trio
import trio.lowlevel
from receiver import Receiver, Reply

from journeyd.delivery import DeliveryPool, RetryPolicy
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
from journeyd.delivery.breaker import BreakerPolicy
from journeyd.delivery.retry import Verdict, classify_status, parse_retry_after
from journeyd.engine import Delivery
from journeyd.settings import DeliverySettings, Destination, WebhookDestination

COUNT = 20_000
QUEUE = 500
T0 = time.time()


class JsonBatchAdapter:
    """POST a JSON array of payloads; 2xx delivers all, 429/5xx retries, the rest rejects."""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def limits(self) -> BatchLimits:
        return BatchLimits(
            max_items=100, max_bytes=1_000_000, max_wait_s=0.05, rate_per_s=None, concurrency=4
        )

    def size_of(self, delivery: Delivery) -> int:
        return 300

    def requests(self, batch: Sequence[Delivery]) -> list[PreparedRequest]:
        body = json.dumps([d.payload for d in batch]).encode()
        return [
            PreparedRequest(
                method="POST",
                url=self.url,
                headers={"content-type": "application/json"},
                body=body,
                items=tuple(range(len(batch))),
                description=f"POST {self.url} ({len(batch)} payloads)",
            )
        ]

    def rejected(self, batch: Sequence[Delivery]) -> Mapping[int, Reject]:
        return {}

    def outcomes(
        self, request: PreparedRequest, status: int, headers: Mapping[str, str], body: bytes
    ) -> Sequence[Outcome]:
        count = len(request.items)
        verdict = classify_status(status)
        if verdict is Verdict.DELIVERED:
            return [Delivered()] * count
        if verdict is Verdict.RETRY:
            after = parse_retry_after(headers.get("retry-after"), now_wall=time.time())
            return [Retry(f"HTTP {status}", after, status)] * count
        return [Reject(f"HTTP {status}", status)] * count


def delivery(destination: str, n: int) -> Delivery:
    message_id = f"{destination}-0000-4000-8000-{n:012d}"
    return Delivery(
        at=T0,
        user=f"user-{n}",
        journey="cart-abandonment",
        instance=f"{n:016x}",
        step="nudge",
        destination=destination,
        message_id=message_id,
        payload={
            "type": "track",
            "event": "Cart Abandoned",
            "userId": f"user-{n}",
            "messageId": message_id,
            "properties": {"journey_context": {"cart_id": f"c-{n}", "total": n / 100}},
        },
    )


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def ids_in(bodies: Sequence[bytes]) -> list[str]:
    return [payload["messageId"] for body in bodies for payload in json.loads(body)]


async def wait_until(condition: Callable[[], bool], limit_s: float) -> None:
    with trio.fail_after(limit_s):
        while not condition():
            await trio.sleep(0.05)


async def test_outage_spills_to_disk_isolates_and_recovers_everything(tmp_path: Path) -> None:
    """One destination down while 20,000 deliveries pile up: the other receives all of its
    20,000 meanwhile, the backlog waits on disk with memory bounded (RSS grows < 100 MB), and
    after recovery every delivery arrives once more with its messageId and payload intact."""
    async with (
        Receiver.start(default=Reply(status=503), path="/down") as down,
        Receiver.start(path="/up") as up,
    ):
        adapters = {"down": JsonBatchAdapter(down.url), "up": JsonBatchAdapter(up.url)}

        def factory(
            name: str, config: Destination, *, resolve_path: object, environ: object, clock: object
        ) -> Adapter | Runner:
            return adapters[name]

        pool = DeliveryPool(
            {
                "down": WebhookDestination(url=down.url, queue=QUEUE, max_attempts=1000),
                "up": WebhookDestination(url=up.url, queue=QUEUE),
            },
            DeliverySettings(),
            resolve_path=lambda p: tmp_path / p,
            dead_letter_path=tmp_path / "dead-letters.jsonl",
            spill_dir=tmp_path / "spill",
            environ={},
            retry=RetryPolicy(base_s=0.05, cap_s=0.5),
            breaker=BreakerPolicy(base_cooldown_s=0.1, max_cooldown_s=0.5),
            adapter_factory=factory,
        )
        before = rss_bytes()
        peak_held = 0
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            for n in range(COUNT):
                await pool.submit(delivery("down", n))
                await pool.submit(delivery("up", n))
                if n % 200 == 0:
                    peak_held = max(peak_held, int(pool.lane_stats()["down"]["held"]))
                    await trio.lowlevel.checkpoint()  # the lanes run while the backlog grows
            await wait_until(lambda: len(ids_in([r.body for r in up.requests])) >= COUNT, 60)
            during = pool.lane_stats()["down"]
            grown = rss_bytes() - before
            assert during["spilled"] >= COUNT - QUEUE
            assert during["held"] <= QUEUE
            assert pool.stats["delivered"] == COUNT  # only the healthy destination's
            recovered_from = len(down.requests)
            down.default = Reply(status=200)
            await wait_until(lambda: pool.stats["delivered"] == 2 * COUNT, 120)
            pool.close()
        assert grown < 100 * 1024 * 1024, f"RSS grew {grown / 2**20:.1f} MB"
        assert peak_held <= QUEUE
        want_down = [delivery("down", n) for n in range(COUNT)]
        want_up = [delivery("up", n) for n in range(COUNT)]
        after = [json.loads(r.body) for r in down.requests[recovered_from:]]
        got_down = {p["messageId"]: p for batch in after for p in batch}
        assert got_down == {d.message_id: d.payload for d in want_down}
        got_up = {p["messageId"]: p for r in up.requests for p in json.loads(r.body)}
        assert got_up == {d.message_id: d.payload for d in want_up}
        assert pool.stats["dead_lettered"] == 0
        assert recovered_from > 0  # the dead one was tried (and answered 503) meanwhile
        assert list((tmp_path / "spill" / "down").glob("*.spill")) != []  # it did spill
