"""Delivery benchmark: deliveries/s from the sender pool to a local webhook receiver and to a file.

Run: .venv/bin/python bench/delivery_bench.py [--count N] [--concurrency N] [--unsigned]
The webhook receiver runs in a separate process (the test suite's real HTTP server, h11 over
trio TCP) so the pool does not share its event loop with the server it is measuring against.
Figures are printed, never asserted: machines differ and tests must not be timing-bound.
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

import structlog
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from journeyd.delivery import DeliveryPool
from journeyd.engine import Delivery
from journeyd.settings import DeliverySettings, Destination, FileDestination, WebhookDestination

SECRET = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
BASE = 1_772_355_600.0


def deliveries(count: int, destination: str) -> list[Delivery]:
    out = []
    for i in range(count):
        message_id = f"5f0c4a8e-0000-4000-8000-{i:012d}"
        out.append(
            Delivery(
                at=time.time(),  # max_age counts from here
                user=f"user-{i:06d}",
                journey="cart-abandonment",
                instance=f"{i:016x}",
                step="nudge",
                destination=destination,
                message_id=message_id,
                payload={
                    "type": "track",
                    "event": "Cart Abandoned",
                    "userId": f"user-{i:06d}",
                    "anonymousId": None,
                    "messageId": message_id,
                    "timestamp": "2026-03-01T09:15:00.120Z",
                    "properties": {
                        "journey_context": {"Cart Modified": {"cart_id": "c-1", "total": 42.5}},
                        "journey_metadata": {
                            "journey_id": "cart-abandonment",
                            "journey_version": "1",
                            "instance_id": f"{i:016x}",
                            "step_id": "nudge",
                        },
                        "email": "ada@example.org",
                    },
                    "context": {"journeyd": "0.1.0"},
                },
            )
        )
    return out


async def measure(
    destination: Destination, count: int, args: argparse.Namespace, workdir: Path
) -> tuple[float, dict[str, int]]:
    pool = DeliveryPool(
        {"bench": destination},
        DeliverySettings(timeout="10s", max_attempts=3),
        resolve_path=lambda p: workdir / p,
        dead_letter_path=workdir / "dead-letters.jsonl",
        environ={"BENCH_SECRET": SECRET},
    )
    batch = deliveries(count, "bench")
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        started = time.perf_counter()
        for d in batch:
            await pool.submit(d)
        pool.close()
    elapsed = time.perf_counter() - started
    return elapsed, dict(pool.stats)


def report(label: str, count: int, elapsed: float, stats: dict[str, int]) -> None:
    print(
        f"{label:<8} {count:>7} deliveries in {elapsed:6.2f} s = {count / elapsed:>9,.0f}/s"
        f"  (delivered={stats['delivered']} retried={stats['retried']}"
        f" dead_lettered={stats['dead_lettered']})"
    )


async def serve() -> None:
    """Child process: a receiver answering 200 to everything; prints its port, runs until killed."""
    from receiver import Receiver

    async with Receiver.start() as receiver:
        receiver.keep_requests = False
        print(receiver.port, flush=True)
        await trio.sleep_forever()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.target in ("file", "both"):
            elapsed, stats = await measure(
                FileDestination(path="deliveries.jsonl", concurrency=args.concurrency),
                args.count,
                args,
                workdir,
            )
            report("file", args.count, elapsed, stats)
        if args.target in ("webhook", "both"):
            child = await trio.lowlevel.open_process(
                [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE
            )
            try:
                assert child.stdout is not None
                first = b""
                while not first.endswith(b"\n"):
                    first += await child.stdout.receive_some(64)
                port = int(first)
                hook = WebhookDestination(
                    url=f"http://127.0.0.1:{port}/hook",
                    secret_env=None if args.unsigned else "BENCH_SECRET",
                    concurrency=args.concurrency,
                )
                await measure(hook, min(200, args.count), args, workdir)  # warm up
                elapsed, stats = await measure(hook, args.count, args, workdir)
                report("webhook", args.count, elapsed, stats)
            finally:
                child.terminate()
                await child.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--target", choices=["file", "webhook", "both"], default="both")
    parser.add_argument("--unsigned", action="store_true", help="webhook without a secret")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    # Per-delivery debug lines would measure the terminal, not the pool.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if ns.serve:
        trio.run(serve)
    else:
        print(
            "command:", shlex.join([".venv/bin/python", "bench/delivery_bench.py", *sys.argv[1:]])
        )
        print(
            f"python {sys.version.split()[0]}, trio {trio.__version__}, concurrency={ns.concurrency}"
        )
        trio.run(main, ns)
