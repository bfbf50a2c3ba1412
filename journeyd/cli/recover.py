"""`journeyd recover -c FILE`: check that the state on disk recovers; repair it if asked.

Recovery refuses to start the daemon when a WAL record in the middle of the log is
damaged, rather than silently dropping what came after it. `--truncate-after SEQ` is the
explicit way past: it drops every record after SEQ (the error message names the last good
one), after which the daemon starts from what remains.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from journeyd.cli.common import add_config_option, load_or_report
from journeyd.dedup import DedupWindow
from journeyd.durations import parse_duration
from journeyd.errors import StorageError
from journeyd.store.recovery import recover
from journeyd.store.wal import truncate_after

EXIT_DATA = 65


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "recover",
        help="check (or repair) the state on disk",
        description="Replay the snapshot and write-ahead log in memory and report whether "
        "the daemon could start from them. With --truncate-after SEQ, first drop every WAL "
        "record after SEQ: acknowledged events in them are lost, so use it only when a "
        "damaged record leaves no other way. The daemon must not be running.",
    )
    add_config_option(parser)
    parser.add_argument("--truncate-after", type=int, metavar="SEQ")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    settings = config.settings
    state_dir = config.resolve(settings.daemon.state_dir)
    pid = _running_pid(state_dir / "journeyd.pid")
    if pid is not None:
        print(
            f"journeyd recover: the daemon is running (pid {pid}); stop it first", file=sys.stderr
        )
        return 2
    if args.truncate_after is not None:
        dropped = truncate_after(state_dir / "wal", args.truncate_after)
        print(f"dropped {dropped} WAL record(s) after seq {args.truncate_after}")
    ingest = settings.ingest
    dedup = DedupWindow(parse_duration(ingest.dedup_window), ingest.dedup_max_ids)
    try:
        found = recover(state_dir, settings, config.journeys, dedup, repair=True)
    except StorageError as exc:
        print(f"journeyd recover: {exc}", file=sys.stderr)
        return EXIT_DATA
    print(
        f"recoverable: snapshot seq {found.snapshot_seq}, {found.replayed} WAL records "
        f"replayed up to seq {found.last_seq}, {found.engine.instance_count()} instances, "
        f"{len(found.outbox)} deliveries owed"
    )
    return 0


def _running_pid(path: Any) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid
