"""The `journeyd` command line: one module per command, each with `register` and `run`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from journeyd import __version__
from journeyd.cli import (
    check,
    dlq,
    inspect,
    preview,
    recover,
    run,
    send,
    simulate,
    snapshot,
    test_send,
)

COMMANDS: tuple[ModuleType, ...] = (
    run,
    check,
    send,
    simulate,
    preview,
    inspect,
    snapshot,
    recover,
    dlq,
    test_send,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="journeyd",
        description="Run event-triggered customer journeys on your own machine.",
        epilog="Run `journeyd COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"journeyd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except BrokenPipeError:  # `journeyd simulate ... | head` is fine
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130
