"""Deliveries waiting on disk for a dead destination survive kill -9: after a restart every
one of them is delivered, with its original messageId."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_proc import short_dir, start_daemon
from held_webhook import HeldWebhook

FLOOD = {
    "id": "flood",
    "entry": {"event": "Flood", "rule": "once"},
    "steps": [{"id": "out", "type": "send", "destination": "hook", "event_name": "Flooded"}],
}


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_dir() as path:
        yield path


def settings(url: str) -> dict[str, object]:
    return {
        "delivery": {"timeout": "60s"},
        "destinations": {"hook": {"type": "webhook", "url": url, "concurrency": 2, "queue": 20}},
    }


@pytest.mark.parametrize("snapshot_first", [False, True], ids=["wal-only", "after-snapshot"])
def test_spilled_deliveries_survive_kill_9(workdir: Path, snapshot_first: bool) -> None:
    """500 deliveries pile up for a held webhook (most on disk); kill -9; restart with the
    webhook answering: every delivery arrives, messageIds unchanged. With a snapshot taken
    while they were spilled, the snapshot's spill cursors carry them across."""
    held = HeldWebhook()
    daemon = start_daemon(workdir, journeys=[FLOOD], settings=settings(held.url))
    total = 500
    try:
        events = [
            {"type": "track", "userId": f"s-{i}", "event": "Flood", "properties": {"i": i}}
            for i in range(total)
        ]
        acks = daemon.send_events(events)
        assert all(a["ok"] for a in acks)
        spill = workdir / "state" / "spill"
        deadline = time.monotonic() + 30
        while not any(p.is_file() for p in spill.rglob("*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(p.is_file() for p in spill.rglob("*")), "nothing was spilled"
        if snapshot_first:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "journeyd",
                    "snapshot",
                    "-c",
                    str(workdir / "journeyd.toml"),
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
        daemon.kill()
    finally:
        held.close()

    receiver = HeldWebhook()
    receiver.released.set()  # answers 200 at once
    again = start_daemon(workdir, journeys=[FLOOD], settings=settings(receiver.url))
    try:
        deadline = time.monotonic() + 120
        expected = {f"s-{i}" for i in range(total)}
        while receiver.users() < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert receiver.users() == expected
        ids_by_user: dict[str, set[str]] = {}
        for body in receiver.bodies:
            payload = json.loads(body)
            ids_by_user.setdefault(payload["userId"], set()).add(payload["messageId"])
        assert all(len(ids) == 1 for ids in ids_by_user.values())  # resent with the same id
    finally:
        receiver.close()
        again.kill()
