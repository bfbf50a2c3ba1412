"""The real daemon under systemd's protocols: sd_notify over a real datagram socket, and
socket activation through the real `systemd-socket-activate` tool."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daemon_proc import CART, short_dir, start_daemon, write_config

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_dir() as path:
        yield path


def receive_until(sock: socket.socket, wanted: str, timeout: float = 15.0) -> list[str]:
    """Datagrams received until one contains `wanted` (each as text)."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if wanted in got[-1]:
            return got
    raise AssertionError(f"no {wanted!r} among {got}")


def test_notify_protocol_over_a_real_datagram_socket(workdir: Path) -> None:
    """READY=1 with a STATUS once listening, RELOADING=1 then READY=1 on SIGHUP,
    WATCHDOG=1 pings, STOPPING=1 on SIGTERM."""
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = workdir / "notify.sock"
    manager.bind(str(notify_path))
    try:
        daemon = start_daemon(
            workdir,
            env={
                "NOTIFY_SOCKET": str(notify_path),
                "WATCHDOG_USEC": "2000000",
                "WATCHDOG_PID": "",
            },
            wait_ready=False,
        )
        try:
            ready = receive_until(manager, "READY=1")
            assert "STATUS=" in ready[-1]
            assert "instances" in ready[-1]
            # The socket is already served when READY=1 is sent.
            assert daemon.send_events([{"type": "track", "userId": "n", "event": "Ping"}])[0]["ok"]
            assert any("WATCHDOG=1" in m for m in receive_until(manager, "WATCHDOG=1"))
            daemon.proc.send_signal(signal.SIGHUP)
            reload_messages = receive_until(manager, "READY=1")
            assert any("RELOADING=1" in m and "MONOTONIC_USEC=" in m for m in reload_messages)
            daemon.proc.send_signal(signal.SIGTERM)
            assert any("STOPPING=1" in m for m in receive_until(manager, "STOPPING=1"))
            assert daemon.proc.wait(30) == 0
        finally:
            daemon.kill()
    finally:
        manager.close()


@pytest.mark.skipif(SOCKET_ACTIVATE is None, reason="systemd-socket-activate not installed")
def test_socket_activation_serves_the_inherited_sockets(workdir: Path) -> None:
    """Under systemd-socket-activate the daemon serves the sockets it is handed (named
    unix and http) and binds nothing of its own."""
    assert SOCKET_ACTIVATE is not None
    config = write_config(workdir, [CART])
    unix_path = workdir / "activated.sock"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tool = subprocess.Popen(
        [
            SOCKET_ACTIVATE,
            "-l",
            str(unix_path),
            "-l",
            f"127.0.0.1:{port}",
            "--fdname=unix:http",
            sys.executable,
            "-m",
            "journeyd",
            "run",
            "-c",
            str(config),
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=workdir,
    )
    try:
        deadline = time.monotonic() + 15
        while not unix_path.exists():
            assert time.monotonic() < deadline, "systemd-socket-activate never listened"
            time.sleep(0.02)
        # The tool starts the daemon on the first connection, which waits in the backlog.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(30)
            client.connect(str(unix_path))
            client.sendall(b'{"type":"track","userId":"sa","event":"Account Deleted"}\n')
            answer = json.loads(client.makefile("rb").readline())
        assert answer["ok"] is True
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/track",
            auth=("test-key", ""),
            json={"userId": "sa", "event": "Ping"},
            timeout=30,
        )
        assert response.status_code == 200
        assert not (workdir / "run" / "journeyd.sock").exists()  # nothing bound from config
    finally:
        tool.send_signal(signal.SIGTERM)
        try:
            out, _ = tool.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            tool.kill()
            out, _ = tool.communicate()
    assert tool.returncode == 0, out.decode(errors="replace")[-2000:]
    events = [json.loads(line).get("event") for line in out.splitlines() if line.startswith(b"{")]
    assert "daemon.ready" in events
    assert "daemon.stopped" in events
