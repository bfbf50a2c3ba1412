"""Ingest benchmarks against the real daemon (a subprocess, as in production).

- socket: one client streams NDJSON over the Unix socket and reads every ack
- http:   4 concurrent clients POST /v1/batch with 100 events each
- latency: one socket client paced at a steady rate; ack latency p50/p99

Run: .venv/bin/python bench/ingest_bench.py [--events N] [--rate R]
Figures are printed with the settings that produced them; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from daemon_proc import CART, start_daemon


def event_line(i: int) -> bytes:
    kind = i % 10
    user = f"user-{i % 50000}"
    if kind < 6:
        body: dict[str, Any] = {
            "type": "track",
            "userId": user,
            "event": "Cart Modified",
            "properties": {"cart_id": f"c-{i % 3}", "total": 10 + kind},
        }
    elif kind < 8:
        body = {
            "type": "track",
            "userId": user,
            "event": "Order Completed",
            "properties": {"cart_id": f"c-{i % 3}"},
        }
    else:
        body = {
            "type": "track",
            "userId": user,
            "event": "Page Viewed",
            "properties": {"path": "/"},
        }
    return json.dumps(body).encode()


def bench_socket(path: Path, count: int) -> float:
    lines = b"".join(event_line(i) + b"\n" for i in range(count))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        start = time.perf_counter()
        writer = threading.Thread(
            target=lambda: (sock.sendall(lines), sock.shutdown(socket.SHUT_WR))
        )
        writer.start()
        acks = 0
        buffer = b""
        while chunk := sock.recv(1 << 20):
            buffer += chunk
            acks += chunk.count(b"\n")
        elapsed = time.perf_counter() - start
        writer.join()
    assert acks == count, (acks, count)
    assert b'"ok":false' not in buffer, buffer[:500]
    return count / elapsed


def bench_http(url: str, count: int, clients: int = 4, batch: int = 100) -> tuple[float, int]:
    per_client = count // clients // batch
    statuses: list[int] = []

    def client(n: int) -> None:
        with httpx.Client(base_url=url, auth=("test-key", ""), timeout=60) as http:
            for b in range(per_client):
                base = (n * per_client + b) * batch
                body = {"batch": [json.loads(event_line(base + i)) for i in range(batch)]}
                while True:
                    response = http.post("/v1/batch", json=body)
                    statuses.append(response.status_code)
                    if response.status_code != 503:
                        break
                    time.sleep(float(response.headers.get("retry-after", "1")) / 10)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    sent = per_client * clients * batch
    return sent / elapsed, sum(1 for s in statuses if s == 503)


def bench_latency(path: Path, rate: int, seconds: float) -> tuple[float, float, float]:
    """Send `rate` events/s in 1 ms slices; return (p50, p99, max) ack latency in ms."""
    total = int(rate * seconds)
    per_slice = max(1, rate // 1000)
    sent_at: list[float] = []
    latencies: list[float] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))

        def write() -> None:
            start = time.perf_counter()
            i = 0
            while i < total:
                target = start + (i / rate)
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                chunk = b"".join(event_line(i + k) + b"\n" for k in range(per_slice))
                now = time.perf_counter()
                sent_at.extend([now] * per_slice)
                sock.sendall(chunk)
                i += per_slice
            sock.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=write)
        writer.start()
        received = 0
        while chunk := sock.recv(1 << 16):
            now = time.perf_counter()
            for _ in range(chunk.count(b"\n")):
                latencies.append((now - sent_at[received]) * 1000)
                received += 1
        writer.join()
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    return p50, p99, latencies[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jd-bench-") as name:
        directory = Path(name)
        # The cart journey with its production 2h hold: no timer fires during the run, so
        # the figures are ingest and engine, not timer and delivery work.
        cart = {**CART, "steps": [{**CART["steps"][0], "max_duration": "2h"}, CART["steps"][1]]}
        daemon = start_daemon(
            directory,
            journeys=[cart],
            settings={"limits": {"events_per_second_per_user": 1000}},
        )
        try:
            print(f"daemon pid {daemon.proc.pid}, journeys: cart (2h hold), file destination")
            rate = bench_socket(daemon.socket_path, args.events)
            print(
                f"socket ingest, 1 client, acks read: {rate:,.0f} events/s ({args.events:,} events)"
            )
            assert daemon.http_url is not None
            rate, retried = bench_http(daemon.http_url, args.events)
            print(
                f"http ingest, 4 clients x /v1/batch of 100: {rate:,.0f} events/s ({retried} x 503 retried)"
            )
            p50, p99, worst = bench_latency(daemon.socket_path, args.rate, args.seconds)
            print(
                f"ack latency at {args.rate:,} events/s for {args.seconds:.0f}s: "
                f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms"
            )
            status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
            rss = next(line for line in status.splitlines() if line.startswith("VmHWM"))
            print(f"daemon peak RSS: {rss.split(':')[1].strip()}")
        finally:
            daemon.proc.send_signal(signal.SIGTERM)
            try:
                daemon.proc.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()


if __name__ == "__main__":
    main()
