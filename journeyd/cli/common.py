"""Pieces several commands share: the -c option and loading a config with readable errors."""

from __future__ import annotations

import argparse
import sys

from journeyd.config import Config, load
from journeyd.errors import ConfigError

EXIT_CONFIG = 78  # EX_CONFIG: systemd's RestartPreventExitStatus keeps a bad config down


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        required=True,
        metavar="FILE",
        help="the journeyd.toml to use (its journeys_dir is read too)",
    )


def load_or_report(path: str) -> Config | None:
    """Load the config, or print every problem to stderr and return None."""
    try:
        return load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return None
