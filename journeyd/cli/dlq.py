"""`journeyd dlq list|redrive|purge`: look at, retry or drop dead-lettered deliveries."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec

from journeyd.cli.common import add_config_option, load_or_report
from journeyd.cli.recover import _running_pid
from journeyd.delivery.deadletter import DeadLetter, read_dead_letters, take_dead_letters
from journeyd.model import format_timestamp, parse_timestamp
from journeyd.store.redrive import write_redrive

DEAD_LETTERS = "dead-letters.jsonl"


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "dlq",
        help="list, redrive or purge dead-lettered deliveries",
        description="Dead letters are deliveries journeyd gave up on (state_dir/"
        "dead-letters.jsonl), each with its payload, the last request and the last error.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in (
        ("list", "show dead letters"),
        ("redrive", "send dead letters again, with their original messageIds"),
        ("purge", "delete dead letters"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        add_config_option(action)
        action.add_argument("--destination", metavar="NAME", help="only this destination")
        action.add_argument("--since", metavar="TIME", help="only those dead-lettered at or after")
        action.add_argument(
            "--before",
            metavar="TIME",
            help="only those dead-lettered before",
            required=name == "purge",
        )
        if name == "list":
            action.add_argument("--json", action="store_true", help="one JSON record per line")
        action.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    state_dir = config.resolve(config.settings.daemon.state_dir)
    path = state_dir / DEAD_LETTERS
    try:
        since = parse_timestamp(args.since) if args.since else None
        before = parse_timestamp(args.before) if args.before else None
    except ValueError as exc:
        print(f"journeyd dlq: {exc}", file=sys.stderr)
        return 2

    def selected(record: DeadLetter) -> bool:
        if args.destination and record.destination != args.destination:
            return False
        if since is not None and record.at < since:
            return False
        return before is None or record.at < before

    if args.action == "list":
        records = [r for r in read_dead_letters(path) if selected(r)]
        if args.json:
            for record in records:
                sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
        else:
            for r in records:
                status = r.last_request.status if r.last_request else None
                print(
                    f"{format_timestamp(r.at)}  {r.destination:<16} {r.message_id}  "
                    f"attempts={r.attempts} status={status}  {r.error}"
                )
            print(f"{len(records)} dead letter(s)", file=sys.stderr)
        return 0
    if args.action == "purge":
        taken = take_dead_letters(path, selected)
        print(f"purged {len(taken)} dead letter(s)")
        return 0
    written: list[Path] = []
    taken = take_dead_letters(
        path, selected, keep_safe=lambda records: written.append(write_redrive(state_dir, records))
    )
    if not taken:
        print("nothing to redrive")
        return 0
    pid = _running_pid(state_dir / "journeyd.pid")
    if pid is not None:
        os.kill(pid, signal.SIGUSR2)
        print(f"redriving {len(taken)} deliveries (daemon {pid} notified; file {written[0].name})")
    else:
        print(f"{len(taken)} deliveries queued for redrive; they go out when the daemon starts")
    return 0
