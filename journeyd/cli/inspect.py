"""`journeyd inspect -c FILE`: what is on disk, without a running daemon (read-only)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

import msgspec

from journeyd.cli.common import add_config_option, load_or_report
from journeyd.dedup import DedupWindow
from journeyd.durations import parse_duration
from journeyd.errors import StorageError
from journeyd.model import format_timestamp
from journeyd.store.recovery import recover
from journeyd.store.wal import wal_stats

EXIT_DATA = 65


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "inspect",
        help="summarise the state on disk (snapshot, WAL, instances)",
        description="Read the snapshot and the write-ahead log under daemon.state_dir, "
        "replay them in memory (changing no file) and summarise: snapshot age, WAL size, "
        "instances per journey and step, deliveries still owed. Safe while the daemon runs.",
    )
    add_config_option(parser)
    parser.add_argument("--json", action="store_true", help="the summary as one JSON object")
    parser.add_argument(
        "--instances", action="store_true", help="also list every instance (JSON lines)"
    )
    parser.add_argument("--journey", metavar="ID", help="only instances of this journey")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    settings = config.settings
    state_dir = config.resolve(settings.daemon.state_dir)
    ingest = settings.ingest
    dedup = DedupWindow(parse_duration(ingest.dedup_window), ingest.dedup_max_ids)
    try:
        found = recover(state_dir, settings, config.journeys, dedup, repair=False)
        stats = wal_stats(state_dir / "wal")
    except StorageError as exc:
        print(f"journeyd inspect: {exc}", file=sys.stderr)
        print("see `journeyd recover --help` for the way past damaged records", file=sys.stderr)
        return EXIT_DATA
    engine = found.engine
    per_step: Counter[tuple[str, str, str]] = Counter()
    for inst in engine.instances():
        journey = inst.journey
        per_step[(journey.id, journey.version, journey.steps[inst.step].id)] += 1
    summary = {
        "state_dir": str(state_dir),
        "snapshot": None
        if found.snapshot_seq is None
        else {
            "seq": found.snapshot_seq,
            "path": str(found.snapshot_path),
            "created_at": format_timestamp(found.snapshot_created_at or 0),
            "age_s": round(time.time() - (found.snapshot_created_at or 0), 1),
        },
        "wal": {
            **stats,
            "torn_tail": None if found.torn is None else f"{found.torn[0]}@{found.torn[1]}",
        },
        "replayed": found.replayed,
        "replay_seconds": round(found.seconds, 3),
        "instances": engine.instance_count(),
        "users": len(engine.users),
        "owed_deliveries": len(found.outbox),
        "steps": [
            {"journey": j, "version": v, "step": s, "instances": n}
            for (j, v, s), n in sorted(per_step.items())
        ],
    }
    if args.json:
        print(msgspec.json.encode(summary).decode())
    else:
        _print_summary(summary)
    if args.instances:
        _print_instances(engine, args.journey)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"state dir: {summary['state_dir']}")
    snapshot = summary["snapshot"]
    if snapshot is None:
        print("snapshot:  none")
    else:
        print(
            f"snapshot:  seq {snapshot['seq']}, taken {snapshot['created_at']} "
            f"({_ago(snapshot['age_s'])} ago)"
        )
    wal = summary["wal"]
    print(
        f"wal:       {wal['segments']} segment(s), {wal['bytes']:,} bytes, "
        f"{wal['records']:,} records (seq {wal['first_seq']}..{wal['last_seq']})"
        + (f", torn tail at {wal['torn_tail']}" if wal["torn_tail"] else "")
    )
    print(
        f"replayed:  {summary['replayed']:,} records after the snapshot "
        f"in {summary['replay_seconds']}s"
    )
    print(
        f"state:     {summary['instances']:,} instances of {summary['users']:,} users; "
        f"{summary['owed_deliveries']} deliveries owed"
    )
    if summary["steps"]:
        print("instances per journey and step:")
        for row in summary["steps"]:
            print(
                f"  {row['journey']:<24} {row['version']:<9} {row['step']:<20} "
                f"{row['instances']:>10,}"
            )


def _print_instances(engine: Any, journey_id: str | None) -> None:
    encode = msgspec.json.encode
    for inst in engine.instances():
        journey = inst.journey
        if journey_id is not None and journey.id != journey_id:
            continue
        record = {
            "journey": journey.id,
            "version": journey.version,
            "user": inst.user,
            "identifier": inst.identifier or None,
            "instance": inst.id,
            "step": journey.steps[inst.step].id,
            "entered_at": format_timestamp(inst.entered_at),
            "deadline": format_timestamp(inst.deadline) if inst.deadline else None,
            "resets": inst.resets,
            "context": inst.read_context(),
        }
        sys.stdout.write(encode(record).decode() + "\n")


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
