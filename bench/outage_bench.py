"""Outage benchmark: memory during a long outage, and delivered events/s with batching.

Run: .venv/bin/python bench/outage_bench.py [--part outage|throughput|both]
         [--pending 1000000] [--outage-min 30] [--count 200000] [--adapter braze|fake]

- outage: a Braze destination (the real `braze` adapter) whose endpoint answers 503 for
  `--outage-min` minutes of trio's virtual clock (MockClock, so 30 minutes pass in seconds),
  while `--pending` deliveries are submitted across the outage; then it recovers. Prints the
  process RSS (VmRSS) before, at its peak and after, how much went to the spill queue, and
  checks that every delivery was delivered exactly as submitted (by messageId). The endpoint
  is an in-process httpx transport, so what is measured is the pool, its lane and spill.
- throughput: the same adapter against a real Braze-compatible HTTP sink on 127.0.0.1 (the
  test suite's h11 receiver, in a separate process so it does not share this core), 75
  events per request; prints delivered events/s from the first submit to the last outcome.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import structlog
import trio
import trio.testing

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests"))  # fixtures.functions, for --adapter function

from collections.abc import Callable, Mapping, Sequence

import msgspec

from journeyd.delivery import DeliveryPool
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
from journeyd.delivery.pool import build_target
from journeyd.engine import Delivery
from journeyd.settings import (
    BrazeDestination,
    CustomerioDestination,
    DeliverySettings,
    Destination,
    FunctionDestination,
    IterableDestination,
)

BASE = 1_772_355_600.0
SUCCESS = b'{"message":"success"}'


def delivery(n: int, at: float) -> Delivery:
    message_id = f"5f0c4a8e-0000-4000-8000-{n:012d}"
    return Delivery(
        at=at,
        user=f"user-{n:07d}",
        journey="cart-abandonment",
        instance=f"{n:016x}",
        step="nudge",
        destination="braze",
        message_id=message_id,
        payload={
            "type": "track",
            "event": "Cart Abandoned",
            "userId": f"user-{n:07d}",
            "anonymousId": None,
            "messageId": message_id,
            "timestamp": "2026-03-01T09:15:00.120Z",
            "properties": {
                "journey_context": {"Cart Modified": {"cart_id": f"c-{n}", "total": 42.5}},
                "journey_metadata": {
                    "journey_id": "cart-abandonment",
                    "journey_version": "1",
                    "instance_id": f"{n:016x}",
                    "step_id": "nudge",
                },
                "email": "ada@example.org",
            },
            "context": {"journeyd": "0.1.0"},
        },
    )


class FakeBrazeAdapter:
    """`--adapter fake`: the payload list as JSON, 75 per request, 1 s batch wait, 8 in
    flight; what the lane costs without a service's mapping."""

    def __init__(self, endpoint: str) -> None:
        self.url = endpoint + "/users/track"
        self.encoder = msgspec.json.Encoder()

    @property
    def limits(self) -> BatchLimits:
        return BatchLimits(
            max_items=75, max_bytes=4_000_000, max_wait_s=1.0, rate_per_s=1000.0, concurrency=8
        )

    def size_of(self, delivery: Delivery) -> int:
        return 600

    def requests(self, batch: Sequence[Delivery]) -> list[PreparedRequest]:
        body = self.encoder.encode({"events": [d.payload for d in batch]})
        return [
            PreparedRequest(
                method="POST",
                url=self.url,
                headers={"content-type": "application/json", "authorization": "Bearer k"},
                body=body,
                items=tuple(range(len(batch))),
                description=f"POST {self.url} ({len(batch)} events)",
            )
        ]

    def rejected(self, batch: Sequence[Delivery]) -> Mapping[int, Reject]:
        return {}

    def outcomes(
        self, request: PreparedRequest, status: int, headers: Mapping[str, str], body: bytes
    ) -> Sequence[Outcome]:
        count = len(request.items)
        if 200 <= status < 300:
            return [Delivered()] * count
        if status == 429 or status >= 500:
            return [Retry(f"HTTP {status}", None, status)] * count
        return [Reject(f"HTTP {status}", status)] * count


def factory_for(kind: str) -> Callable[..., Adapter | Runner]:
    def factory(
        name: str,
        config: Destination,
        *,
        resolve_path: Callable[[str], Path],
        environ: Mapping[str, str],
        clock: Callable[[], float],
    ) -> Adapter | Runner:
        if kind == "fake":
            assert isinstance(config, BrazeDestination)
            return FakeBrazeAdapter(config.endpoint)
        return build_target(name, config, resolve_path=resolve_path, environ=environ, clock=clock)

    return factory


def destination_for(adapter: str, endpoint: str) -> Destination:
    """The destination under test (named "braze" whatever its type, for the lane stats)."""
    if adapter == "customerio":
        return CustomerioDestination(
            endpoint=endpoint, site_id_env="CIO_SITE", api_key_env="CIO_KEY", max_attempts=1000
        )
    if adapter == "iterable":
        return IterableDestination(endpoint=endpoint, api_key_env="IT_KEY", max_attempts=1000)
    if adapter == "function":
        return FunctionDestination(function="fixtures.functions:ok", max_attempts=1000)
    return BrazeDestination(endpoint=endpoint, api_key_env="BRAZE_KEY", max_attempts=1000)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Seen:
    """Which deliveries settled, as a bitmap (a set of a million ids would weigh 100 MB)."""

    def __init__(self, count: int) -> None:
        self.delivered = bytearray(count)
        self.mismatched = 0
        self.other = 0

    def outcome(self, d: Delivery, outcome: str, attempts: int) -> None:
        n = int(d.message_id.rsplit("-", 1)[1])
        if outcome != "delivered":
            self.other += 1
        elif d.payload["messageId"] != d.message_id or d.payload["userId"] != f"user-{n:07d}":
            self.mismatched += 1
        else:
            self.delivered[n] = 1


def make_pool(
    workdir: Path,
    endpoint: str,
    seen: Seen,
    clock: object,
    transport: httpx.AsyncBaseTransport | None,
    adapter: str,
) -> DeliveryPool:
    return DeliveryPool(
        {"braze": destination_for(adapter, endpoint)},
        DeliverySettings(),
        resolve_path=lambda p: workdir / p,
        dead_letter_path=workdir / "dead-letters.jsonl",
        spill_dir=workdir / "spill",
        environ={"BRAZE_KEY": "bench-key", "CIO_SITE": "site", "CIO_KEY": "key", "IT_KEY": "k"},
        clock=clock,  # type: ignore[arg-type]
        on_outcome=seen.outcome,
        http_transport=transport,
        adapter_factory=factory_for(adapter),
    )


async def outage(args: argparse.Namespace) -> None:
    outage_s = args.outage_min * 60.0
    counts = {"events": 0, "refused": 0}

    async def sink(request: httpx.Request) -> httpx.Response:
        if trio.current_time() < outage_s:
            counts["refused"] += 1
            return httpx.Response(503, content=b"maintenance")
        counts["events"] += len(msgspec.json.decode(request.content)["events"])
        return httpx.Response(201, content=SUCCESS)

    seen = Seen(args.pending)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        pool = make_pool(
            workdir,
            "http://braze.invalid",
            seen,
            lambda: BASE + trio.current_time(),
            httpx.MockTransport(sink),  # type: ignore[arg-type]
            args.adapter,
        )
        before = peak = rss_mb()
        started = time.perf_counter()
        spacing_s = outage_s / args.pending * 0.9  # all submitted during the outage
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            for n in range(args.pending):
                await pool.submit(delivery(n, BASE + trio.current_time()))
                if n % 10_000 == 9_999:
                    await trio.sleep(spacing_s * 10_000)
                    peak = max(peak, rss_mb())
            submitted_at = time.perf_counter()
            lane = pool.lane_stats()["braze"]
            print(
                f"submitted {args.pending:,} in {submitted_at - started:.1f} s wall;"
                f" at virtual {trio.current_time() / 60:.1f} min: held in memory {lane['held']:,},"
                f" on disk {lane['spilled']:,}, breaker {lane['breaker']},"
                f" RSS {rss_mb():.0f} MB"
            )
            while pool.stats["delivered"] + pool.stats["dead_lettered"] < args.pending:
                await trio.sleep(10)
                peak = max(peak, rss_mb())
            pool.close()
        drained = time.perf_counter()
        after = rss_mb()
    delivered = sum(seen.delivered)
    print(
        f"outage {args.outage_min} virtual min, {args.pending:,} pending:"
        f" RSS before {before:.0f} MB, peak {peak:.0f} MB (+{peak - before:.0f}), after {after:.0f}"
        f" MB; recovery drained in {drained - submitted_at:.1f} s wall"
        f" ({args.pending / (drained - submitted_at):,.0f} deliveries/s)"
    )
    print(
        f"delivered {delivered:,}/{args.pending:,} (every one: {delivered == args.pending}),"
        f" mismatched {seen.mismatched}, dead-lettered {seen.other},"
        f" events at the sink {counts['events']:,}, 503s during the outage {counts['refused']:,}"
    )


async def serve() -> None:
    """Child process: a Braze-compatible sink answering 201 success; prints its port."""
    from receiver import Receiver, Reply

    async with Receiver.start(default=Reply(status=201, body=SUCCESS), path="/") as receiver:
        receiver.keep_requests = False
        print(receiver.port, flush=True)
        await trio.sleep_forever()


async def throughput(args: argparse.Namespace) -> None:
    child = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        first = b""
        while not first.endswith(b"\n"):
            first += await child.stdout.receive_some(64)
        endpoint = f"http://127.0.0.1:{int(first)}"
        for count, label in ((min(5_000, args.count), "warm-up"), (args.count, "measured")):
            seen = Seen(count)
            with tempfile.TemporaryDirectory() as tmp:
                pool = make_pool(Path(tmp), endpoint, seen, time.time, None, args.adapter)
                batch = [delivery(n, time.time()) for n in range(count)]
                cpu0, started = time.process_time(), time.perf_counter()
                async with trio.open_nursery() as nursery:
                    await nursery.start(pool.run)
                    for d in batch:
                        await pool.submit(d)
                    pool.close()
                elapsed = time.perf_counter() - started
                cpu = time.process_time() - cpu0
            print(
                f"{label:<8} {args.adapter} adapter -> local sink: {count:,} events in"
                f" {elapsed:.2f} s = {count / elapsed:,.0f} events/s (pool process CPU"
                f" {cpu / elapsed:.0%} of one core); delivered {sum(seen.delivered):,}"
            )
    finally:
        child.terminate()
        await child.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["outage", "throughput", "both"], default="both")
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--outage-min", type=float, default=30.0)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument(
        "--adapter",
        choices=["braze", "customerio", "iterable", "function", "fake"],
        default="braze",
        help="a real adapter against a local sink (function: an in-process no-op function), "
        "or a fake one that batches 75 per request (the lane's own cost)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    if ns.serve:
        trio.run(serve)
    else:
        print("command:", shlex.join([".venv/bin/python", "bench/outage_bench.py", *sys.argv[1:]]))
        print(f"python {sys.version.split()[0]}, trio {trio.__version__}")
        if ns.part in ("throughput", "both"):
            trio.run(throughput, ns)
        if ns.part in ("outage", "both"):
            trio.run(outage, ns, clock=trio.testing.MockClock(autojump_threshold=0))
