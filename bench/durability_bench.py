"""Durability benchmarks against the real daemon: what the WAL, snapshots and recovery cost.

- ingest:   socket ingest events/s with fsync = off, batch and always, side by side
- recovery: start -> `daemon.ready` (READY=1) with N waiting instances in a snapshot plus a
            WAL tail; snapshot bytes per instance; the ingest pause a snapshot causes
- crash:    kill -9 crash trials (tests/integration/test_crash.py) and acked events lost

Run: .venv/bin/python bench/durability_bench.py [--events N] [--instances N] [--tail N]
     [--rate R] [--crash-sessions S --crash-trials T] [--only ingest|recovery|crash]
Figures are printed with the command and machine that produced them; nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from daemon_proc import CART, DaemonProcess, start_daemon, write_config
from ingest_bench import bench_socket

from journeyd.config import load
from journeyd.dedup import DedupWindow
from journeyd.durations import parse_duration
from journeyd.engine import Engine
from journeyd.ingest.inbound import stamp
from journeyd.model import Event
from journeyd.store.outbox import Outbox
from journeyd.store.records import EventRecord
from journeyd.store.snapshot import write_snapshot
from journeyd.store.wal import WalWriter

# The cart journey with its production 2 h hold: nothing fires during a run.
JOURNEY = {**CART, "steps": [{**CART["steps"][0], "max_duration": "2h"}, CART["steps"][1]]}
LIMITS = {"events_per_second_per_user": 1000}
SNAPSHOT_CLI = [sys.executable, "-m", "journeyd", "snapshot", "-c"]


def properties(cart: str) -> dict[str, Any]:
    """A cart event's properties: about 200 bytes as msgpack."""
    return {
        "cart_id": cart,
        "total": 129.95,
        "currency": "EUR",
        "items": [
            {"sku": "SKU-000123", "qty": 2, "price": 39.99},
            {"sku": "SKU-000456", "qty": 1, "price": 49.97},
        ],
        "coupon": "SPRING-2026",
        "store": "berlin-mitte",
    }


def stop(daemon: DaemonProcess) -> None:
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        daemon.proc.wait(300)
    except subprocess.TimeoutExpired:
        daemon.kill()


# --- ingest by fsync policy -------------------------------------------------------------------


def bench_ingest(events: int) -> None:
    print(f"\n## socket ingest by fsync policy: 1 client, {events:,} events per mode, acks read")
    rates: dict[str, float] = {}
    for mode in ("off", "batch", "always"):
        with tempfile.TemporaryDirectory(prefix="jd-dur-") as name:
            daemon = start_daemon(
                Path(name),
                journeys=[JOURNEY],
                settings={"daemon": {"fsync": mode}, "limits": LIMITS},
            )
            try:
                bench_socket(daemon.socket_path, min(events, 20_000))  # warm up
                rates[mode] = bench_socket(daemon.socket_path, events)
            finally:
                stop(daemon)
        print(f"  fsync = {mode:<6} {rates[mode]:>10,.0f} events/s", flush=True)
    print(f"  batch / off = {rates['batch'] / rates['off']:.0%} (goal >= 80%)")
    print(f"  always / off = {rates['always'] / rates['off']:.0%}")


# --- recovery, snapshot size, snapshot pause ---------------------------------------------------


def build_state(directory: Path, instances: int, tail: int) -> tuple[int, int]:
    """A snapshot of `instances` waiting carts at seq N, then `tail` more events in the WAL,
    as the daemon would have written them. Returns (snapshot bytes, instances in it)."""
    config = load(write_config(directory, [JOURNEY], {"limits": LIMITS}))
    settings = config.settings
    state = directory / "state"
    engine = Engine(config.journeys, settings)
    ingest = settings.ingest
    dedup = DedupWindow(parse_duration(ingest.dedup_window), ingest.dedup_max_ids)
    base = time.time() - 600  # ten minutes ago: every 2 h hold still has long to run
    gc.disable()
    started = time.perf_counter()
    for i in range(instances):
        now = base + i * 1e-4
        event = stamp(
            Event(
                type="track",
                userId=f"user-{i:08d}",
                event="Cart Modified",
                properties=properties(f"cart-{i:08d}"),
            ),
            now,
        )
        dedup.seen("", event.messageId or "", now)
        engine.handle(event, now)
    built = time.perf_counter() - started
    seq = instances  # one EventRecord each, had the daemon logged them
    info = write_snapshot(state / "snapshots", seq, engine, dedup, Outbox())
    print(
        f"  built {engine.instance_count():,} instances in-process in {built:.1f} s; "
        f"snapshot at seq {seq:,} written in {info.seconds:.1f} s"
    )
    del engine, dedup
    gc.enable()
    gc.collect()
    wal = WalWriter.open(state / "wal", seq + 1)
    now = base + instances * 1e-4
    batch: list[Any] = []
    for j in range(tail):
        now += 1e-3
        if j % 2:  # an update of an existing cart: resets its hold
            i = (j * 7919) % instances
            user, cart = f"user-{i:08d}", f"cart-{i:08d}"
        else:  # a new cart entering
            user, cart = f"new-{j:08d}", f"cart-n{j:08d}"
        event = stamp(
            Event(type="track", userId=user, event="Cart Modified", properties=properties(cart)),
            now,
        )
        batch.append(EventRecord(now, "", event))
        if len(batch) == 1000:
            wal.append(batch)
            batch = []
    wal.append(batch)
    wal.close()
    return info.bytes, info.instances


def paced_stream(
    path: Path, rate: int, seconds: float, users: int, on_time: float, action: Any
) -> dict[str, float]:
    """Send `rate` events/s (cart updates) for `seconds`, calling `action()` after `on_time`.
    Returns the worst gap between consecutive acks and the worst ack latency, before the
    action and from it on."""
    total = int(rate * seconds)
    per_slice = max(1, rate // 500)
    sent_at: list[float] = []
    acks: list[float] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))

        def write() -> None:
            start = time.perf_counter()
            i = 0
            acted = False
            while i < total:
                target = start + i / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                if not acted and time.perf_counter() - start >= on_time:
                    acted = True
                    threading.Thread(target=action, daemon=True).start()
                chunk = b"".join(
                    b'{"type":"track","userId":"user-%08d","event":"Cart Modified",'
                    b'"properties":{"cart_id":"cart-%08d","total":12.5}}\n'
                    % ((i + k) * 104729 % users, (i + k) * 104729 % users)
                    for k in range(per_slice)
                )
                sent_at.extend([time.perf_counter()] * per_slice)
                sock.sendall(chunk)
                i += per_slice
            sock.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=write)
        writer.start()
        while chunk := sock.recv(1 << 16):
            now = time.perf_counter()
            acks.extend([now] * chunk.count(b"\n"))
        writer.join()
    start = sent_at[0]
    cut = start + on_time
    stats: dict[str, float] = {"acks": len(acks)}
    for label, keep in (("before", lambda t: t < cut), ("during", lambda t: t >= cut)):
        idx = [k for k in range(1, len(acks)) if keep(acks[k])]
        stats[f"gap_{label}_ms"] = max((acks[k] - acks[k - 1] for k in idx), default=0) * 1000
        stats[f"latency_{label}_ms"] = max((acks[k] - sent_at[k] for k in idx), default=0) * 1000
    return stats


def bench_recovery(instances: int, tail: int, rate: int, seconds: float) -> None:
    print(f"\n## recovery: {instances:,} waiting instances (snapshot) + {tail:,}-record WAL tail")
    with tempfile.TemporaryDirectory(prefix="jd-dur-") as name:
        directory = Path(name)
        size, in_snapshot = build_state(directory, instances, tail)
        print(
            f"  snapshot size: {size:,} bytes for {in_snapshot:,} instances = "
            f"{size / in_snapshot:,.0f} bytes per instance (includes the de-dup window of "
            f"{in_snapshot:,} ids)"
        )
        os.sync()  # page cache stays warm, as after a crash-restart of the daemon
        started = time.perf_counter()
        daemon = start_daemon(
            directory, journeys=[JOURNEY], settings={"limits": LIMITS}, wait_ready=False
        )
        try:
            done = daemon.wait_for_log("recovery.done", timeout=900)
            daemon.wait_for_log("daemon.ready", timeout=900)
            ready = time.perf_counter() - started
            print(
                f"  process start -> daemon.ready (READY=1): {ready:.2f} s (goal < 10 s)\n"
                f"  recovery.done: {done['seconds']} s in recover(), snapshot_seq "
                f"{done['snapshot_seq']:,}, replayed {done['replayed']:,} records, "
                f"{done['instances']:,} instances, last_seq {done['last_seq']:,}"
            )
            status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
            rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
            print(f"  daemon RSS after recovery: {rss.split(':')[1].strip()}")

            print(
                f"\n## snapshot pause: {rate:,} events/s paced over the socket for {seconds:g} s, "
                f"`journeyd snapshot` after {seconds / 4:g} s"
            )

            def take_snapshot() -> None:
                subprocess.run(
                    [*SNAPSHOT_CLI, str(directory / "journeyd.toml"), "--timeout", "600"],
                    capture_output=True,
                    check=False,
                )

            stats = paced_stream(
                daemon.socket_path, rate, seconds, instances, seconds / 4, take_snapshot
            )
            written = daemon.wait_for_log("snapshot.written", timeout=900)
            print(
                f"  snapshot.written: fork pause {written['pause_ms']} ms (pause_ms), child wrote "
                f"seq {written['seq']:,} in {written['seconds']} s"
            )
            print(
                f"  client, before the request: worst ack gap {stats['gap_before_ms']:.1f} ms, "
                f"worst ack latency {stats['latency_before_ms']:.1f} ms"
            )
            print(
                f"  client, from the request on: worst ack gap {stats['gap_during_ms']:.1f} ms, "
                f"worst ack latency {stats['latency_during_ms']:.1f} ms "
                f"({stats['acks']:,.0f} acks in all)"
            )
        finally:
            daemon.kill()  # a clean stop would write a final 1M-instance snapshot: not measured


# --- crash trials -------------------------------------------------------------------------------


def bench_crash(sessions: int, trials: int) -> None:
    from test_crash import new_seed, run_session

    print(f"\n## crash trials: {sessions} sessions x {trials} kill -9 trials (test_crash.py)")
    total = lost = twice = sent = acked = 0
    failed = []
    for _ in range(sessions):
        result = run_session(new_seed(), trials, max_carts=12, max_events_per_cart=40)
        total += result.trials
        lost += result.lost_acked
        twice += result.applied_twice
        sent += result.events_sent
        acked += result.events_acked
        print(
            f"  seed {result.seed} fsync={result.fsync}: {result.trials} trials, "
            f"{result.events_acked:,} acked, {result.lost_acked} lost, "
            f"{len(result.problems)} problems",
            flush=True,
        )
        if result.problems:
            failed.append(result)
    print(
        f"  total: {total} trials, {sent:,} events sent, {acked:,} acked, "
        f"{lost} acked events lost (goal 0), {twice} applied twice"
    )
    for result in failed:
        print(result.describe())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000, help="per fsync mode")
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--tail", type=int, default=100_000, help="WAL records after it")
    parser.add_argument("--rate", type=int, default=5_000, help="paced events/s (pause)")
    parser.add_argument("--seconds", type=float, default=12.0, help="paced stream length")
    parser.add_argument("--crash-sessions", type=int, default=4)
    parser.add_argument("--crash-trials", type=int, default=10)
    parser.add_argument("--only", choices=["ingest", "recovery", "crash"])
    args = parser.parse_args()
    print("$", shlex.join([".venv/bin/python", "bench/durability_bench.py", *sys.argv[1:]]))
    print(
        f"nproc {os.cpu_count()}, python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, state under {tempfile.gettempdir()}"
    )
    if args.only in (None, "ingest"):
        bench_ingest(args.events)
    if args.only in (None, "recovery"):
        bench_recovery(args.instances, args.tail, args.rate, args.seconds)
    if args.only in (None, "crash"):
        bench_crash(args.crash_sessions, args.crash_trials)


if __name__ == "__main__":
    main()
