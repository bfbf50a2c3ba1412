"""`journeyd dlq`: dead letters can be listed, sent again with their messageIds, and purged,
while the daemon runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from daemon_proc import DaemonProcess, short_dir, start_daemon
from receiver import Receiver, Reply

SEND_NOW = {
    "id": "notify",
    "entry": {"event": "Signed Up", "rule": "once"},
    "steps": [{"id": "out", "type": "send", "destination": "hook", "event_name": "Welcome"}],
}


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_dir() as path:
        yield path


def jd(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "journeyd", *args, "-c", str(daemon.dir / "journeyd.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )


def signups(*users: str) -> list[dict[str, Any]]:
    return [{"type": "track", "userId": u, "event": "Signed Up"} for u in users]


async def test_list_redrive_and_purge_dead_letters(workdir: Path) -> None:
    """Rejected deliveries are dead-lettered; `dlq list` shows them; after the endpoint is
    fixed, `dlq redrive` sends them again with the same messageIds; `dlq purge` drops the
    rest."""
    async with Receiver.start(default=Reply(status=400, body=b"bad")) as hook:
        daemon = await trio.to_thread.run_sync(
            lambda: start_daemon(
                workdir,
                journeys=[SEND_NOW],
                settings={"destinations": {"hook": {"type": "webhook", "url": hook.url}}},
            )
        )
        try:
            await trio.to_thread.run_sync(daemon.send_events, signups("a", "b", "c"))
            first = await hook.wait_for(3)
            ids = {r.headers["webhook-id"] for r in first}

            async def dead_letters() -> list[dict[str, Any]]:
                for _ in range(200):
                    listed = await trio.to_thread.run_sync(jd, daemon, "dlq", "list", "--json")
                    records = [json.loads(x) for x in listed.stdout.splitlines() if x]
                    if len(records) >= 3:
                        return records
                    await trio.sleep(0.05)
                raise AssertionError("dead letters never appeared")

            records = await dead_letters()
            assert {r["message_id"] for r in records} == ids
            assert all(r["last_request"]["status"] == 400 for r in records)
            text = await trio.to_thread.run_sync(jd, daemon, "dlq", "list")
            assert "hook" in text.stdout and "status=400" in text.stdout

            hook.default = Reply(status=200)
            redriven = await trio.to_thread.run_sync(
                jd, daemon, "dlq", "redrive", "--destination", "hook"
            )
            assert redriven.returncode == 0, redriven.stderr
            assert "redriving 3 deliveries" in redriven.stdout
            again = (await hook.wait_for(6))[3:]
            assert {r.headers["webhook-id"] for r in again} == ids
            left = await trio.to_thread.run_sync(jd, daemon, "dlq", "list", "--json")
            assert left.stdout.strip() == ""

            hook.default = Reply(status=400)
            await trio.to_thread.run_sync(daemon.send_events, signups("d"))
            await hook.wait_for(7)
            for _ in range(200):
                listed = await trio.to_thread.run_sync(jd, daemon, "dlq", "list", "--json")
                if listed.stdout.strip():
                    break
                await trio.sleep(0.05)
            purged = await trio.to_thread.run_sync(
                jd, daemon, "dlq", "purge", "--before", "2999-01-01T00:00:00Z"
            )
            assert "purged 1 dead letter" in purged.stdout
            empty = await trio.to_thread.run_sync(jd, daemon, "dlq", "list", "--json")
            assert empty.stdout.strip() == ""
        finally:
            await trio.to_thread.run_sync(daemon.kill)


def test_purge_needs_a_cutoff(workdir: Path) -> None:
    """`dlq purge` without --before is refused: purging is never implicit."""
    daemon = start_daemon(
        workdir,
        journeys=[SEND_NOW],
        settings={"destinations": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"}}},
    )
    try:
        done = jd(daemon, "dlq", "purge")
        assert done.returncode == 2
        assert "--before" in done.stderr
    finally:
        daemon.kill()
