"""WAL benchmarks: append throughput by batch size, with an fsync after each batch or none.

Run: .venv/bin/python bench/wal_bench.py [--seconds S] [--dir DIR] [--segment-mb N]
Each case appends realistic EventRecords for about S seconds into a fresh WAL under DIR (a
temp dir by default: put it on the filesystem the daemon will use, fsync cost is the
filesystem's), then reads the log back to time recovery-style reading.
Figures are printed, never asserted: machines and disks differ.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from journeyd.model import Event
from journeyd.store import EventRecord, Record, WalWriter, read_wal, wal_stats

BASE = 1_772_355_600.0  # 2026-03-01T09:00:00Z


def make_records(count: int) -> list[Record]:
    """Cart events shaped like the ingest benchmark's: ~200-byte msgpack payloads."""
    return [
        EventRecord(
            received=BASE + i / 1000,
            scope="dev-key",
            event=Event(
                type="track",
                messageId=f"msg-{i:012d}",
                userId=f"user-{i % 5000:06d}",
                event="Cart Modified",
                properties={"cart_id": f"cart-{i % 3}", "items": i % 7, "value": 19.99},
                timestamp="2026-03-01T09:15:00.000Z",
                context={"library": {"name": "analytics-python", "version": "2.3.0"}},
            ),
        )
        for i in range(count)
    ]


def run_case(
    base: Path, batch: int, sync: bool, seconds: float, segment_bytes: int
) -> dict[str, float]:
    directory = base / f"wal-b{batch}-{'sync' if sync else 'nosync'}"
    records = make_records(max(batch, 1000))
    batches = [records[i : i + batch] for i in range(0, len(records) - batch + 1, batch)]
    writer = WalWriter.open(directory, 1, segment_bytes=segment_bytes)
    appended = 0
    started = time.perf_counter()
    deadline = started + seconds
    index = 0
    while True:
        writer.append(batches[index])
        if sync:
            writer.sync()
        appended += batch
        index = (index + 1) % len(batches)
        if index == 0 and time.perf_counter() >= deadline:
            break
        if batch >= 10 and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - started
    writer.close()
    stats = wal_stats(directory)
    read_started = time.perf_counter()
    read = sum(1 for _ in read_wal(directory))
    read_elapsed = time.perf_counter() - read_started
    assert read == appended == stats["records"]
    shutil.rmtree(directory)
    return {
        "records": appended,
        "records_s": appended / elapsed,
        "batches_s": appended / batch / elapsed,
        "mb_s": stats["bytes"] / elapsed / 1e6,
        "bytes_per_record": stats["bytes"] / appended,
        "read_s": read / read_elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per case")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (temp dir)")
    parser.add_argument("--segment-mb", type=int, default=64, help="segment size in MiB")
    args = parser.parse_args()
    print("$", shlex.join([os.path.relpath(sys.executable), *sys.argv]))
    base = Path(tempfile.mkdtemp(prefix="wal-bench-", dir=args.dir))
    print(f"writing under {base}; {args.seconds:g} s per case; segments of {args.segment_mb} MiB")
    header = (
        f"{'batch':>5} {'fsync':>6} {'records':>9} {'records/s':>11} {'batches/s':>10} "
        f"{'MB/s':>7} {'B/rec':>6} {'read rec/s':>11}"
    )
    print(header)
    try:
        for sync in (False, True):
            for batch in (1, 10, 100):
                r = run_case(base, batch, sync, args.seconds, args.segment_mb << 20)
                print(
                    f"{batch:>5} {'each' if sync else 'none':>6} {r['records']:>9,.0f} "
                    f"{r['records_s']:>11,.0f} {r['batches_s']:>10,.0f} {r['mb_s']:>7.1f} "
                    f"{r['bytes_per_record']:>6.0f} {r['read_s']:>11,.0f}"
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
