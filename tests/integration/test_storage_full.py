"""When the WAL cannot be written (disk full, file-size limit), ingest refuses with a clear
error instead of acknowledging what it could not store, and recovers when space returns."""

from __future__ import annotations

import json
import resource
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon_proc import DaemonProcess, short_dir, start_daemon

FLOOD = {
    "id": "keep",
    "entry": {"event": "Keep", "rule": "re-enter", "unique_identifier": "k"},
    "steps": [
        {
            "id": "hold",
            "type": "hold_until",
            "max_duration": "1d",
            "branches": [{"name": "done", "event": "Done"}],
        }
    ],
}


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_dir() as path:
        yield path


def keep(n: int) -> dict[str, Any]:
    return {"type": "track", "userId": f"u{n}", "event": "Keep", "properties": {"k": str(n)}}


def limit_file_size(pid: int, size: int) -> None:
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, hard))


def test_full_disk_refuses_ingest_and_recovers_when_space_returns(workdir: Path) -> None:
    """With the WAL unwritable, socket lines get error lines and HTTP gets 503; nothing
    refused takes effect; once space returns, ingest works again and everything acked
    survives a restart."""
    daemon = start_daemon(workdir, journeys=[FLOOD])
    try:
        first = daemon.send_events([keep(n) for n in range(20)])
        assert all(a["ok"] for a in first)
        segment = max((workdir / "state" / "wal").glob("*.wal"))
        limit_file_size(daemon.proc.pid, segment.stat().st_size + 10)

        refused = daemon.send_events([keep(n) for n in range(100, 120)])
        assert not any(a["ok"] for a in refused)
        assert all("cannot store events" in a["error"] for a in refused)
        assert daemon.http_url is not None
        response = httpx.post(
            f"{daemon.http_url}/v1/track", auth=("test-key", ""), json=keep(200), timeout=30
        )
        assert response.status_code == 503
        assert response.json()["success"] is False
        assert "cannot store events" in response.json()["message"]
        assert daemon.proc.poll() is None  # still serving

        limit_file_size(daemon.proc.pid, resource.RLIM_INFINITY)
        deadline = time.monotonic() + 20
        while True:  # the daemon retries writing once a second
            again = daemon.send_events([keep(300)])
            if again[0]["ok"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert again[0]["ok"], again
        assert daemon.stop(signal.SIGTERM) == 0
        assert any(e.get("event") == "storage.refusing" for e in daemon.logs)
    finally:
        daemon.kill()

    restarted = start_daemon(workdir, journeys=[FLOOD])
    try:
        inspect = restarted.inspect_instances()
        identifiers = {i["identifier"] for i in inspect}
        assert identifiers == {str(n) for n in range(20)} | {"300"}
    finally:
        restarted.kill()


def test_http_503_body_when_storage_fails_is_json(workdir: Path) -> None:
    """The refusal is the documented error shape, so SDKs retry it (5xx) and log it."""
    daemon: DaemonProcess = start_daemon(workdir, journeys=[FLOOD])
    try:
        daemon.send_events([keep(1)])
        segment = max((workdir / "state" / "wal").glob("*.wal"))
        limit_file_size(daemon.proc.pid, segment.stat().st_size + 10)
        assert daemon.http_url is not None
        response = httpx.post(
            f"{daemon.http_url}/v1/batch",
            auth=("test-key", ""),
            json={"batch": [keep(2), keep(3)]},
            timeout=30,
        )
        assert response.status_code == 503
        body = json.loads(response.content)
        assert set(body) == {"success", "code", "message"}
    finally:
        daemon.kill()
