"""`journeyd preview -c FILE --journey ID --step ID [EVENT.json]`: show a send step's payload."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from journeyd.cli.common import add_config_option, load_or_report
from journeyd.engine.compile import AudienceRule, CompiledJourney
from journeyd.engine.preview import preview_payload, sample_event, send_step_ids
from journeyd.errors import BadInput
from journeyd.intake import decode_event
from journeyd.model import format_timestamp, parse_timestamp


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "preview",
        help="print the payload a send step would produce",
        description="Print the exact payload a send step would deliver for an entry event "
        "(a sample one when EVENT.json is not given). Use --step exit for the exit send.",
    )
    add_config_option(parser)
    parser.add_argument("--journey", required=True, metavar="ID", help="journey id")
    parser.add_argument("--step", required=True, metavar="ID", help="send step id, or 'exit'")
    parser.add_argument(
        "event", nargs="?", metavar="EVENT.json", help="the entry event (a JSON object)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    definition = next((j for j in config.journeys if j.id == args.journey), None)
    if definition is None:
        known = ", ".join(j.id for j in config.journeys) or "none"
        print(f"journeyd preview: no journey {args.journey!r} (known: {known})", file=sys.stderr)
        return 2
    audiences = {n: AudienceRule(n, a) for n, a in config.settings.audiences.items()}
    journey = CompiledJourney(definition, audiences)
    if args.event:
        try:
            event = decode_event(Path(args.event).read_bytes())
        except OSError as exc:
            print(f"journeyd preview: cannot read {args.event}: {exc.strerror}", file=sys.stderr)
            return 2
        except BadInput as exc:
            print(f"journeyd preview: {args.event}: {exc}", file=sys.stderr)
            return 2
    else:
        event = sample_event(journey, format_timestamp(time.time()))
    at = parse_timestamp(event.timestamp) if event.timestamp else time.time()
    try:
        destination, payload = preview_payload(journey, args.step, event, at)
    except KeyError:
        steps = ", ".join(send_step_ids(journey)) or "none"
        print(
            f"journeyd preview: {args.step!r} is not a send step of {journey.id} "
            f"(send steps: {steps})",
            file=sys.stderr,
        )
        return 2
    print(f"# destination: {destination}", file=sys.stderr)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(payload)).decode() + "\n")
    return 0
