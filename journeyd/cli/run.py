"""`journeyd run -c FILE`: the daemon."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from journeyd.cli.common import EXIT_CONFIG, add_config_option, load_or_report


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "run",
        help="run the daemon",
        description="Run the journeyd daemon: ingest events, run journeys, deliver payloads.",
    )
    add_config_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    print("journeyd: daemon not implemented yet; try `journeyd simulate`", file=sys.stderr)
    return 1
