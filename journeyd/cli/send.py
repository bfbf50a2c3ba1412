"""`journeyd send [--socket PATH | -c FILE] [FILE|-]`: stream NDJSON events to the daemon.

Writes and reads concurrently, so a large file streams at full speed; prints a summary and
each rejection with its line number; exits 1 if anything was rejected.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

import msgspec

from journeyd.cli.common import load_or_report

_decode = msgspec.json.Decoder(dict[str, Any]).decode


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "send",
        help="send NDJSON events to a running daemon",
        description="Stream NDJSON events (one per line) to the daemon's Unix socket and "
        "print how many were accepted; each rejection is printed with its line number. "
        "Exits 1 if any event was rejected.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--socket", metavar="PATH", help="the daemon's socket path")
    target.add_argument("-c", "--config", metavar="FILE", help="read the socket path from here")
    parser.add_argument("file", nargs="?", default="-", metavar="FILE", help="NDJSON; - = stdin")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only rejections")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.socket:
        path = args.socket
    else:
        config = load_or_report(args.config)
        if config is None:
            return 2
        if not config.settings.daemon.socket:
            print("journeyd send: the config disables daemon.socket", file=sys.stderr)
            return 2
        path = str(config.resolve(config.settings.daemon.socket))
    try:
        source: IO[bytes] = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"journeyd send: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        print(
            f"journeyd send: cannot connect to {path}: {exc.strerror} (is the daemon running?)",
            file=sys.stderr,
        )
        return 2
    with source, sock:
        line_numbers: list[int] = []
        writer = threading.Thread(target=_write, args=(sock, source, line_numbers), daemon=True)
        writer.start()
        accepted = rejected = 0
        for index, response in enumerate(_responses(sock)):
            try:
                answer = _decode(response)
            except msgspec.DecodeError:
                print(f"journeyd send: unreadable response {response[:200]!r}", file=sys.stderr)
                return 2
            if answer.get("ok"):
                accepted += 1
            else:
                rejected += 1
                where = line_numbers[index] if index < len(line_numbers) else "?"
                print(f"{args.file}:{where}: rejected: {answer.get('error')}", file=sys.stderr)
        writer.join()
    if not args.quiet or rejected:
        print(f"{accepted} accepted, {rejected} rejected")
    return 1 if rejected else 0


def _write(sock: socket.socket, source: IO[bytes], line_numbers: list[int]) -> None:
    """Send every non-blank line (the daemon answers each one), then half-close."""
    try:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            line_numbers.append(number)
            sock.sendall(line if line.endswith(b"\n") else line + b"\n")
    except OSError:
        pass  # the reader reports the broken connection
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)


def _responses(sock: socket.socket) -> Iterator[bytes]:
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from (line for line in lines if line)
