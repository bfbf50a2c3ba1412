"""`journeyd run -c FILE`: the daemon."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from journeyd import log
from journeyd.cli.common import EXIT_CONFIG, add_config_option
from journeyd.config import load
from journeyd.errors import ConfigError, JourneydError, StorageError

EXIT_DATA = 65  # EX_DATAERR: damaged state on disk; restarting cannot fix it


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "run",
        help="run the daemon",
        description="Run the journeyd daemon: read events from the Unix socket and the "
        "Segment-compatible HTTP API, run the journeys, deliver payloads. SIGHUP reloads "
        "the config; SIGTERM drains and exits.",
    )
    add_config_option(parser)
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default="auto",
        help="auto: JSON lines unless stdout is a terminal",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    json = {"auto": None, "json": True, "console": False}[args.log_format]
    log.configure(level=args.log_level, json=json)
    logger = log.get("journeyd")
    try:
        config = load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            logger.error("config.invalid", problem=str(problem))
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    from journeyd import daemon  # noqa: PLC0415 - keeps offline commands free of trio/hypercorn
    from journeyd.delivery import DestinationConfigError  # noqa: PLC0415
    from journeyd.systemd import SocketActivationError  # noqa: PLC0415

    try:
        return daemon.run(config)
    except StorageError as exc:
        logger.critical("daemon.state_unreadable", error=str(exc))
        print(
            f"journeyd: the state on disk cannot be recovered: {exc}\n"
            f"  `journeyd recover -c {args.config}` checks it; "
            "`--truncate-after SEQ` drops a damaged tail of the log (losing what is in it)",
            file=sys.stderr,
        )
        return EXIT_DATA
    except (SocketActivationError, DestinationConfigError) as exc:
        logger.error("daemon.failed", error=str(exc))
        print(f"journeyd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except JourneydError as exc:
        logger.error("daemon.failed", error=str(exc))
        print(f"journeyd: {exc}", file=sys.stderr)
        return 1
