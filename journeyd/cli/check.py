"""`journeyd check -c FILE`: validate the config and every journey; exit 1 on any problem.

Beyond the files themselves it checks what the daemon will need from this environment:
every `*_env` variable a destination names must be set (the daemon refuses to start
without it), and a function destination must import.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from journeyd.cli.common import add_config_option, load_or_report
from journeyd.config import Config
from journeyd.errors import Problem
from journeyd.settings import FunctionDestination

ENV_FIELDS = ("api_key_env", "site_id_env", "secret_env")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "check",
        help="validate the config and journeys",
        description="Validate the config file and every journey in its journeys_dir, and "
        "that the environment has what the destinations need (their *_env variables, "
        "importable functions). Every problem is printed with its file and its path inside "
        "the file.",
    )
    add_config_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    problems = environment_problems(config, os.environ, str(args.config))
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        count = len(problems)
        print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return 1
    journeys = ", ".join(j.id for j in config.journeys) or "none"
    destinations = ", ".join(config.settings.destinations) or "none"
    print(f"{args.config}: OK")
    print(f"  journeys ({len(config.journeys)}): {journeys}")
    print(f"  destinations ({len(config.settings.destinations)}): {destinations}")
    return 0


def environment_problems(config: Config, environ: Any, label: str) -> list[Problem]:
    problems = []
    for name, destination in config.settings.destinations.items():
        if isinstance(destination, FunctionDestination):
            from journeyd.delivery.adapters.function import load_function  # noqa: PLC0415
            from journeyd.delivery.retry import DestinationConfigError  # noqa: PLC0415

            try:
                load_function(name, destination.function)
            except DestinationConfigError as exc:
                problems.append(Problem(label, f"destinations.{name}.function", str(exc)))
        for field in ENV_FIELDS:
            variable = getattr(destination, field, None)
            if variable and not environ.get(variable, "").strip():
                problems.append(
                    Problem(
                        label,
                        f"destinations.{name}.{field}",
                        f"environment variable {variable} is not set "
                        "(the daemon needs it to start; set it where the daemon runs)",
                    )
                )
    return problems
