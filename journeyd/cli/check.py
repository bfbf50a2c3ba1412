"""`journeyd check -c FILE`: validate the config and every journey; exit 1 on any problem."""

from __future__ import annotations

import argparse
from typing import Any

from journeyd.cli.common import add_config_option, load_or_report


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "check",
        help="validate the config and journeys",
        description="Validate the config file and every journey in its journeys_dir. "
        "Every problem is printed with its file and its path inside the file.",
    )
    add_config_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    journeys = ", ".join(j.id for j in config.journeys) or "none"
    destinations = ", ".join(config.settings.destinations) or "none"
    print(f"{args.config}: OK")
    print(f"  journeys ({len(config.journeys)}): {journeys}")
    print(f"  destinations ({len(config.settings.destinations)}): {destinations}")
    return 0
