"""Run the real daemon as a subprocess for end-to-end tests.

`start_daemon(tmp_path, journeys=..., config=...)` writes a config with state, socket and
deliveries under `tmp_path`, starts `python -m journeyd run`, waits for its `daemon.ready`
log line (which also names the HTTP port, bound as 127.0.0.1:0) and returns a handle.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

ROOT = Path(__file__).resolve().parents[2]

CART = {
    "id": "cart",
    "entry": {
        "event": "Cart Modified",
        "rule": "re-enter",
        "unique_identifier": "cart_id",
        "filters": [{"property": "total", "op": "gt", "value": 0}],
    },
    "exit": [
        {"event": "Cart Emptied", "match_identifier": True},
        {"event": "Account Deleted", "send": True},
    ],
    "exit_send": {"destination": "outbox", "event_name": "Cart Journey Exited"},
    "steps": [
        {
            "id": "wait",
            "type": "hold_until",
            "max_duration": "2s",
            "on_timeout": "nudge",
            "branches": [
                {"name": "updated cart", "event": "Cart Modified", "reset": True},
                {"name": "purchased", "event": "Order Completed"},
            ],
        },
        {
            "id": "nudge",
            "type": "send",
            "destination": "outbox",
            "event_name": "Cart Abandoned",
            "traits": ["email"],
        },
    ],
}


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    dir: Path
    socket_path: Path
    http_url: str | None
    deliveries: Path
    logs: list[dict[str, Any]] = field(default_factory=list)
    _partial: bytes = b""

    def send_lines(self, lines: list[bytes], timeout: float = 10.0) -> list[dict[str, Any]]:
        """Send NDJSON lines over the Unix socket; return one parsed response per line."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.socket_path))
            sock.sendall(b"".join(line + b"\n" for line in lines))
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return [json.loads(line) for line in data.splitlines()]

    def send_events(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.send_lines([json.dumps(e).encode() for e in events])

    def read_deliveries(self) -> list[dict[str, Any]]:
        if not self.deliveries.exists():
            return []
        return [json.loads(line) for line in self.deliveries.read_text().splitlines() if line]

    def wait_for_deliveries(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.read_deliveries()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"expected {count} deliveries, got {self.read_deliveries()}")

    def read_logs(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (non-blocking: raw reads, no buffered readline that
        could hide lines from select)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self._partial += chunk
        *lines, self._partial = self._partial.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                self.logs.append(json.loads(line))
            except json.JSONDecodeError:
                self.logs.append({"event": "raw", "line": line.decode(errors="replace")})
        return self.logs

    def wait_for_log(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            logs = self.read_logs()
            for entry in logs[seen:]:
                if entry.get("event") == event:
                    return entry
            seen = len(logs)
            if self.proc.poll() is not None:
                self.read_logs()
                break
            time.sleep(0.02)
        raise AssertionError(f"no {event!r} log line; saw {[e.get('event') for e in self.logs]}")

    def inspect_instances(self) -> list[dict[str, Any]]:
        """`journeyd inspect --instances` on this daemon's config: every instance on disk."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "journeyd",
                "inspect",
                "-c",
                str(self.dir / "journeyd.toml"),
                "--json",
                "--instances",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        lines = done.stdout.splitlines()
        return [json.loads(line) for line in lines[1:] if line.strip()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.read_logs()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextmanager
def short_dir() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths may be at most 107 bytes, and
    pytest's tmp_path for a long test name can exceed that."""
    with tempfile.TemporaryDirectory(prefix="jd-") as name:
        yield Path(name)


def write_config(
    directory: Path,
    journeys: list[dict[str, Any]] | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    journeys_dir = directory / "journeys"
    journeys_dir.mkdir(parents=True, exist_ok=True)
    for old in journeys_dir.glob("*.toml"):
        old.unlink()
    for journey in journeys if journeys is not None else [CART]:
        (journeys_dir / f"{journey['id']}.toml").write_text(tomli_w.dumps(journey))
    config: dict[str, Any] = {
        "daemon": {
            "state_dir": "state",
            "socket": "run/journeyd.sock",
            "http": "127.0.0.1:0",
            "write_keys": ["test-key"],
            "journeys_dir": "journeys",
        },
        "destinations": {"outbox": {"type": "file", "path": "deliveries.jsonl"}},
    }
    for section, values in (settings or {}).items():
        config.setdefault(section, {}).update(values)
    path = directory / "journeyd.toml"
    path.write_text(tomli_w.dumps(config))
    return path


def start_daemon(
    directory: Path,
    journeys: list[dict[str, Any]] | None = None,
    settings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
) -> DaemonProcess:
    config = write_config(directory, journeys, settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "journeyd", "run", "-c", str(config), "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=directory,
        env={**os.environ, **(env or {})},
    )
    handle = DaemonProcess(
        proc=proc,
        dir=directory,
        socket_path=directory / "run" / "journeyd.sock",
        http_url=None,
        deliveries=directory / "deliveries.jsonl",
    )
    if wait_ready:
        try:
            ready = handle.wait_for_log("daemon.ready", timeout=20)
        except AssertionError:
            handle.kill()
            raise
        if ready.get("http"):
            handle.http_url = ready["http"]
    return handle
