"""`journeyd test-send -c FILE --destination NAME [PAYLOAD.json]`: one real request, shown.

The way to try an integration before a journey depends on it: the request is built by the
same adapter the daemon uses, sent once (no retries), and printed with its answer and the
verdict the daemon would reach. Secret headers are masked.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from journeyd.cli.common import add_config_option, load_or_report
from journeyd.engine import Delivery
from journeyd.engine.compile import SEND, AudienceRule, CompiledJourney
from journeyd.engine.preview import preview_payload, sample_event
from journeyd.errors import JourneydError
from journeyd.model import format_timestamp
from journeyd.settings import FileDestination

EXIT_FAILED = 1


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "test-send",
        help="send one sample payload to a destination and show the exchange",
        description="Build one request exactly as the daemon would (from PAYLOAD.json, or "
        "a sample payload of a send step that targets the destination), send it once, and "
        "print the request (secrets masked), the answer, and the verdict: delivered, would "
        "retry, or rejected. Exits 1 unless delivered.",
    )
    add_config_option(parser)
    parser.add_argument("--destination", required=True, metavar="NAME")
    parser.add_argument("payload", nargs="?", metavar="PAYLOAD.json")
    parser.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 2
    destinations = config.settings.destinations
    destination = destinations.get(args.destination)
    if destination is None:
        known = ", ".join(destinations) or "none"
        print(
            f"journeyd test-send: no destination {args.destination!r} (known: {known})",
            file=sys.stderr,
        )
        return 2
    if args.payload:
        try:
            payload = msgspec.json.decode(Path(args.payload).read_bytes())
        except (OSError, msgspec.DecodeError) as exc:
            print(f"journeyd test-send: cannot read {args.payload}: {exc}", file=sys.stderr)
            return 2
        if not isinstance(payload, dict):
            print("journeyd test-send: the payload must be a JSON object", file=sys.stderr)
            return 2
    else:
        payload = _sample_payload(config, args.destination)
    delivery = Delivery(
        at=time.time(),
        user=str(payload.get("userId") or payload.get("anonymousId") or "sample-user"),
        journey=None,
        instance=None,
        step="test-send",
        destination=args.destination,
        message_id=str(payload.get("messageId") or "test-send"),
        payload=payload,
    )
    if isinstance(destination, FileDestination):
        path = config.resolve(destination.path)
        line = msgspec.json.encode(payload)
        with path.open("ab") as handle:
            handle.write(line + b"\n")
        print(f"appended one line to {path}:\n{line.decode()}")
        return 0
    from journeyd.delivery.adapters import build_adapter  # noqa: PLC0415 - httpx is heavy

    try:
        adapter = build_adapter(args.destination, destination, environ=os.environ)
    except JourneydError as exc:
        print(f"journeyd test-send: {exc}", file=sys.stderr)
        return 2
    if not hasattr(adapter, "requests"):
        import trio  # noqa: PLC0415

        outcomes = trio.run(adapter.run, [delivery])
        print(f"function {getattr(destination, 'function', '?')} ran on 1 payload")
        return _verdict(outcomes[0])
    return _send_http(adapter, delivery, args.timeout)


def _send_http(adapter: Any, delivery: Delivery, timeout_s: float) -> int:
    import httpx  # noqa: PLC0415

    rejected = adapter.rejected([delivery])
    if rejected:
        return _verdict(rejected[0])
    code = 0
    with httpx.Client(timeout=timeout_s) as client:
        for request in adapter.requests([delivery]):
            print(f"> {request.method} {request.url}")
            for name, value in request.headers.items():
                shown = _mask(value) if name.lower() in request.secret_headers else value
                print(f"> {name}: {shown}")
            print(">")
            print(_pretty(request.body))
            try:
                answer = client.request(
                    request.method, request.url, headers=dict(request.headers), content=request.body
                )
            except httpx.HTTPError as exc:
                print(f"\n! no answer: {type(exc).__name__}: {exc}")
                return EXIT_FAILED
            print(f"\n< HTTP {answer.status_code}")
            for name, value in answer.headers.items():
                print(f"< {name}: {value}")
            print("<")
            print(_pretty(answer.content))
            outcomes = adapter.outcomes(
                request, answer.status_code, dict(answer.headers), answer.content
            )
            code = max(code, _verdict(outcomes[0]))
    return code


def _verdict(outcome: Any) -> int:
    name = type(outcome).__name__
    if name == "Delivered":
        print("\nverdict: delivered")
        return 0
    if name == "Retry":
        after = f" (after {outcome.after_s:g}s)" if outcome.after_s is not None else ""
        print(f"\nverdict: the daemon would retry{after}: {outcome.error}")
        return EXIT_FAILED
    print(f"\nverdict: rejected, the daemon would dead-letter it: {outcome.error}")
    return EXIT_FAILED


def _sample_payload(config: Any, destination: str) -> dict[str, Any]:
    """The preview payload of the first send step that targets `destination`, or a generic
    sample when none does."""
    audiences = {n: AudienceRule(n, a) for n, a in config.settings.audiences.items()}
    now = time.time()
    for definition in config.journeys:
        journey = CompiledJourney(definition, audiences)
        for step in journey.steps:
            if step.kind == SEND and step.destination == destination:
                event = sample_event(journey, format_timestamp(now))
                return preview_payload(journey, step.id, event, now)[1]
    return {
        "type": "track",
        "event": "journeyd Test Send",
        "userId": "sample-user",
        "anonymousId": None,
        "messageId": "test-send",
        "timestamp": format_timestamp(now),
        "properties": {"email": "sample@example.com"},
        "context": {"journeyd": {"test": True}},
    }


def _mask(value: str) -> str:
    scheme, _, secret = value.partition(" ")
    if secret:
        return f"{scheme} ****"
    return "****"


def _pretty(body: bytes) -> str:
    try:
        return msgspec.json.format(body).decode()
    except msgspec.DecodeError:
        return body.decode(errors="replace")
