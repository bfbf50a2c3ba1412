"""Engine benchmarks: throughput vs a decode-only floor, memory per waiting instance, timers.

Run: .venv/bin/python bench/engine_bench.py [--events N] [--instances N] [--timers N]
Figures are printed, never asserted: machines differ and tests must not be timing-bound.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from journeyd.config import load
from journeyd.engine import Engine
from journeyd.intake import decode_event
from journeyd.model import Event

BASE = 1_772_355_600.0  # 2026-03-01T09:00:00Z


def cart_workload(count: int, users: int) -> list[bytes]:
    """Cart Modified (entries and resets), Order Completed, and unrelated noise."""
    lines = []
    for i in range(count):
        user = f"user-{i % users:06d}"
        cart = f"cart-{(i // users) % 3}"
        roll = i % 10
        if roll < 6:
            event: dict[str, Any] = {
                "type": "track",
                "event": "Cart Modified",
                "properties": {"cart_id": cart, "total": 10 + roll, "currency": "EUR"},
            }
        elif roll < 8:
            event = {"type": "track", "event": "Order Completed", "properties": {"cart_id": cart}}
        else:
            event = {"type": "track", "event": "Page Viewed", "properties": {"path": "/x"}}
        event.update(userId=user, messageId=f"m-{i}", timestamp="2026-03-01T09:00:00.000Z")
        lines.append(json.dumps(event).encode())
    return lines


def bench_throughput(count: int, users: int) -> None:
    config = load(ROOT / "journeyd.toml.example")
    lines = cart_workload(count, users)
    decoder = msgspec.json.Decoder(Event)

    # The floor: decode each event with msgspec and update a dict, nothing else.
    table: dict[str | None, Any] = {}
    start = time.perf_counter()
    for line in lines:
        event = decoder.decode(line)
        table[event.userId] = event.properties
    floor_s = time.perf_counter() - start

    best = float("inf")
    for _ in range(3):
        engine = Engine(config.journeys, config.settings)
        gc.collect()
        start = time.perf_counter()
        now = BASE
        handle = engine.handle
        for line in lines:
            now += 0.0001
            handle(decode_event(line), now)
        best = min(best, time.perf_counter() - start)
    floor_rate = count / floor_s
    rate = count / best
    print(f"throughput: {count} cart-abandonment events over {users} users")
    print(f"  floor (msgspec decode + dict update): {floor_rate:,.0f} events/s")
    print(f"  engine (decode + check + handle):     {rate:,.0f} events/s")
    print(f"  engine / floor: {rate / floor_rate:.0%} (goal >= 50%)")
    print(f"  instances live at end: {engine.instance_count():,}")


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def bench_memory(instances: int) -> None:
    """Run in a fresh process so other benchmarks' garbage does not blur the RSS delta."""
    config = load(ROOT / "journeyd.toml.example")
    engine = Engine(config.journeys, config.settings)
    props = {
        "cart_id": "",
        "total": 129.95,
        "currency": "EUR",
        "items": [
            {"sku": "SKU-000123", "qty": 2, "price": 39.99},
            {"sku": "SKU-000456", "qty": 1, "price": 49.97},
        ],
        "coupon": "SPRING-2026",
        "store": "berlin-mitte",
    }
    entry_size = len(msgspec.msgpack.encode({"Cart Modified": props}))
    gc.collect()
    gc.freeze()
    before = rss_kib()
    for i in range(instances):
        props["cart_id"] = f"cart-{i:08d}"
        engine.handle(
            Event(
                type="track",
                event="Cart Modified",
                userId=f"user-{i:08d}",
                messageId=f"m-{i}",
                properties=dict(props),
            ),
            BASE + i * 0.001,
        )
    gc.collect()
    after = rss_kib()
    waiting = engine.instance_count()
    per = (after - before) * 1024 / waiting
    print(
        f"memory: {waiting:,} instances waiting at a hold step, entry context {entry_size} B msgpack"
    )
    print(
        f"  RSS delta {(after - before) / 1024:,.0f} MiB -> {per:,.0f} bytes per instance (goal <= 1024)"
    )
    start = time.perf_counter()
    gc.collect()
    print(f"  full GC pass with them alive: {(time.perf_counter() - start) * 1000:.0f} ms")


def bench_timers(count: int) -> None:
    config = load(ROOT / "journeyd.toml.example")
    engine = Engine(config.journeys, config.settings)
    for i in range(count):
        engine.handle(
            Event(
                type="track",
                event="Cart Modified",
                userId=f"user-{i}",
                messageId=f"m-{i}",
                properties={"cart_id": "c", "total": 5},
            ),
            BASE,
        )
    deadline = engine.next_deadline()
    assert deadline is not None
    start = time.perf_counter()
    effects = engine.fire_due(deadline)
    elapsed = time.perf_counter() - start
    sends = sum(1 for e in effects if e.__struct_config__.tag == "send")
    print(f"timers: {count:,} holds timing out at once")
    print(f"  fire_due: {elapsed * 1000:,.0f} ms for {len(effects):,} effects ({sends:,} sends)")
    print(f"  {count / elapsed:,.0f} timers/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--timers", type=int, default=100_000)
    parser.add_argument("--only", choices=["throughput", "memory", "timers"])
    args = parser.parse_args()
    if args.only == "memory":
        bench_memory(args.instances)
        return
    if args.only in (None, "throughput"):
        bench_throughput(args.events, args.users)
    if args.only in (None, "timers"):
        bench_timers(args.timers)
    if args.only is None:
        subprocess.run(
            [sys.executable, __file__, "--only", "memory", "--instances", str(args.instances)],
            check=True,
        )


if __name__ == "__main__":
    main()
