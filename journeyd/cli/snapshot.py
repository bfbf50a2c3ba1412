"""`journeyd snapshot -c FILE`: ask the running daemon for a snapshot now (SIGUSR1)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from journeyd.cli.common import add_config_option, load_or_report
from journeyd.cli.recover import _running_pid
from journeyd.store.snapshot import list_snapshots


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "snapshot",
        help="ask the running daemon to write a snapshot now",
        description="Signal the running daemon (SIGUSR1; the pid is in "
        "state_dir/journeyd.pid) to write a snapshot, and wait until it is on disk. Under "
        "systemd, `systemctl kill -s USR1 journeyd` does the same without waiting.",
    )
    add_config_option(parser)
    parser.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    state_dir = config.resolve(config.settings.daemon.state_dir)
    pid = _running_pid(state_dir / "journeyd.pid")
    if pid is None:
        print(f"journeyd snapshot: no running daemon for {state_dir}", file=sys.stderr)
        return 2
    snapshots = state_dir / "snapshots"
    before = {path for _, path in list_snapshots(snapshots)}
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        new = [(seq, path) for seq, path in list_snapshots(snapshots) if path not in before]
        if new:
            seq, path = new[0]
            print(f"snapshot at seq {seq}: {path}")
            return 0
        time.sleep(0.1)
    print(f"journeyd snapshot: none written within {args.timeout:.0f}s", file=sys.stderr)
    return 1
