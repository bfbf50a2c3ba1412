"""`journeyd simulate -c FILE EVENTS.ndjson`: replay events on a virtual clock, send nothing."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import IO, Any

import msgspec

from journeyd.cli.common import add_config_option, load_or_report
from journeyd.engine import AnyEffect, Delivery, Dropped, Engine, Entered, Exited
from journeyd.model import format_timestamp, parse_timestamp
from journeyd.simulation import LineProblem, Simulation, read_events


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "simulate",
        help="run events through the journeys on a virtual clock",
        description="Run NDJSON events through the journeys on a virtual clock that jumps to "
        "each event's timestamp and then from timer to timer, without sending anything. "
        "Prints every instance's timeline and every payload that would be sent.",
    )
    add_config_option(parser)
    parser.add_argument("events", metavar="EVENTS.ndjson", help="one event per line; - for stdin")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--until",
        metavar="TIME",
        help="stop the clock at this RFC 3339 time instead of running every timer out",
    )
    parser.add_argument(
        "--start",
        metavar="TIME",
        help="virtual time for events before the first timestamp (default: now)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    try:
        until = parse_timestamp(args.until) if args.until else None
        start = parse_timestamp(args.start) if args.start else time.time()
    except ValueError as exc:
        print(f"journeyd simulate: {exc}", file=sys.stderr)
        return 2
    try:
        source: IO[bytes] = sys.stdin.buffer if args.events == "-" else open(args.events, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"journeyd simulate: cannot read {args.events}: {exc.strerror}", file=sys.stderr)
        return 2
    sim = Simulation(Engine(config.journeys, config.settings), start=start, until=until)
    printer = JsonPrinter() if args.json else TablePrinter()
    bad = 0
    with source:
        for item in read_events(source):
            if isinstance(item, LineProblem):
                bad += 1
                print(f"{args.events}:{item.line}: {item.message}", file=sys.stderr)
                continue
            if until is not None and item.timestamp and parse_timestamp(item.timestamp) > until:
                break
            printer.effects(sim.feed(item))
    printer.effects(sim.drain())
    printer.finish(sim)
    if sim.clamped:
        print(
            f"note: {sim.clamped} event(s) had a timestamp earlier than the event before; "
            "they were handled at the later time",
            file=sys.stderr,
        )
    if bad:
        print(f"{bad} line(s) rejected", file=sys.stderr)
        return 1
    return 0


class JsonPrinter:
    def __init__(self) -> None:
        self._encode = msgspec.json.Encoder().encode

    def effects(self, effects: Any) -> None:
        write = sys.stdout.write
        for effect in effects:
            record = msgspec.to_builtins(effect)
            record["at"] = format_timestamp(effect.at)
            write(self._encode(record).decode() + "\n")

    def finish(self, sim: Simulation) -> None:
        sys.stdout.flush()


class TablePrinter:
    HEADER = ("AT", "KIND", "JOURNEY", "USER", "INSTANCE", "STEP", "BRANCH", "DETAIL")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        print("{:<24}  {:<8}  {:<20}  {:<12}  {:<16}  {:<14}  {:<14}  {}".format(*self.HEADER))

    def effects(self, effects: Any) -> None:
        for effect in effects:
            self.counts[type(effect).__name__] += 1
            step = getattr(effect, "step", None) or "-"
            branch = getattr(effect, "branch", None) or "-"
            print(
                f"{format_timestamp(effect.at):<24}  {effect.__struct_config__.tag:<8}  "
                f"{effect.journey or '-':<20}  {effect.user or '-':<12}  "
                f"{effect.instance or '-':<16}  {step:<14}  {branch:<14}  {_detail(effect)}"
            )

    def finish(self, sim: Simulation) -> None:
        waiting = sim.engine.instance_count()
        clock = format_timestamp(sim.now) if sim.now is not None else "-"
        print()
        print(
            f"{sim.events} events; {self.counts['Entered']} entered, "
            f"{self.counts['Delivery']} sends, {self.counts['Exited']} exits, "
            f"{self.counts['Completed']} completed, {self.counts['Expired']} expired, "
            f"{self.counts['Dropped']} drops; {waiting} still waiting at {clock}"
        )


def _detail(effect: AnyEffect) -> str:
    if isinstance(effect, Delivery):
        return f"-> {effect.destination}: {effect.payload['event']!r} messageId={effect.message_id}"
    if isinstance(effect, Exited):
        return f"{effect.reason}: {effect.event}"
    if isinstance(effect, Dropped):
        return f"{effect.reason}" + (f": {effect.event}" if effect.event else "")
    if isinstance(effect, Entered):
        return f"version={effect.version}" + (
            f" identifier={effect.identifier}" if effect.identifier else ""
        )
    return ""
