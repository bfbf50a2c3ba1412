"""The real daemon as a subprocess: the cart scenario over the Unix socket, the socket
protocol's bad paths, concurrency, and the lifecycle (stale sockets, reload, drain)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import CART, DaemonProcess, short_dir, start_daemon, write_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_dir() as path:
        yield path


@pytest.fixture
def daemon(workdir: Path) -> Iterator[DaemonProcess]:
    handle = start_daemon(workdir)
    yield handle
    handle.kill()


def track(user: str, name: str, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": name, "properties": properties}


def test_cart_scenario_over_the_socket(daemon: DaemonProcess) -> None:
    """Two carts run in parallel; the bought one completes, the other is nudged with traits."""
    answers = daemon.send_events(
        [
            {"type": "identify", "userId": "ana", "traits": {"email": "ana@example.org"}},
            track("ana", "Cart Modified", cart_id="c-1", total=10),
            track("ana", "Cart Modified", cart_id="c-2", total=20),
            track("ana", "Order Completed", cart_id="c-2"),
        ]
    )
    assert [a["ok"] for a in answers] == [True] * 4
    assert all(a["messageId"] for a in answers)
    (nudge,) = daemon.wait_for_deliveries(1)
    assert nudge["event"] == "Cart Abandoned"
    assert nudge["userId"] == "ana"
    assert nudge["properties"]["journey_context"]["Cart Modified"]["cart_id"] == "c-1"
    assert nudge["properties"]["email"] == "ana@example.org"
    time.sleep(2.5)  # the bought cart's hold would have timed out by now
    assert len(daemon.read_deliveries()) == 1


def test_exit_rule_with_send_over_the_socket(daemon: DaemonProcess) -> None:
    """Account Deleted ends every instance of the user at once and fires the exit send."""
    daemon.send_events(
        [
            track("bo", "Cart Modified", cart_id="x", total=5),
            track("bo", "Cart Modified", cart_id="y", total=5),
            track("bo", "Account Deleted"),
        ]
    )
    exits = daemon.wait_for_deliveries(2)
    assert {d["event"] for d in exits} == {"Cart Journey Exited"}
    assert {d["properties"]["journey_context"]["Cart Modified"]["cart_id"] for d in exits} == {
        "x",
        "y",
    }
    assert all("Account Deleted" in d["properties"]["journey_context"] for d in exits)
    time.sleep(2.5)
    assert len(daemon.read_deliveries()) == 2  # no nudge after the exit


def test_bad_lines_get_error_lines_in_order_and_the_connection_carries_on(
    daemon: DaemonProcess,
) -> None:
    """Garbage, truncated JSON, wrong types and oversize lines each get an error line."""
    good = json.dumps(track("cy", "Cart Modified", cart_id="c", total=1)).encode()
    lines = [
        b"\x00\xff garbage",
        b'{"type": "track", "userId": "cy", "event": ',
        json.dumps({"type": "track", "userId": 7, "event": "x"}).encode(),
        json.dumps({"type": "track", "event": "x"}).encode(),
        json.dumps({"type": "track", "userId": "cy"}).encode(),
        json.dumps({"type": "bogus", "userId": "cy"}).encode(),
        json.dumps(track("cy", "Big", blob="x" * 40000)).encode(),
        b"[1, 2]",
        good,
    ]
    answers = daemon.send_lines(lines)
    assert len(answers) == len(lines)
    errors = [a.get("error", "") for a in answers[:-1]]
    assert all(a["ok"] is False for a in answers[:-1])
    assert "malformed" in errors[0]
    assert "userId" in errors[2]
    assert "userId: required, or anonymousId" in errors[3]
    assert "event" in errors[4]
    assert "bogus" in errors[5]
    assert "longer than 32768" in errors[6]
    assert "object" in errors[7]
    assert answers[-1]["ok"] is True
    assert daemon.send_events([track("cy", "Ping")])[0]["ok"] is True  # still serving


def test_blank_lines_are_skipped_without_a_response(daemon: DaemonProcess) -> None:
    """Blank lines are not events: no response line, and the next line's answer is its own."""
    answers = daemon.send_lines([b"", b"   ", json.dumps(track("d", "Ping")).encode()])
    assert len(answers) == 1
    assert answers[0]["ok"] is True


def test_given_message_id_is_echoed_and_repeats_are_not_run_twice(
    daemon: DaemonProcess,
) -> None:
    """A client's messageId comes back in the ack; a repeat is acked but not applied again."""
    event = {**track("eve", "Account Deleted"), "messageId": "fixed-1"}
    daemon.send_events([track("eve", "Cart Modified", cart_id="a", total=1)])
    first = daemon.send_events([event])
    second = daemon.send_events([event])
    assert first == second == [{"ok": True, "messageId": "fixed-1"}]
    assert len(daemon.wait_for_deliveries(1)) == 1
    daemon.send_events([track("eve", "Cart Modified", cart_id="b", total=1)])
    daemon.send_events([event])  # a duplicate: must not exit the new cart
    (nudge,) = [d for d in daemon.wait_for_deliveries(2) if d["event"] == "Cart Abandoned"]
    assert nudge["properties"]["journey_context"]["Cart Modified"]["cart_id"] == "b"


def test_many_concurrent_clients_are_all_answered(daemon: DaemonProcess) -> None:
    """Twenty clients at once, 200 events each: every line answered, in order, ok."""
    results: dict[int, list[dict[str, Any]]] = {}

    def client(n: int) -> None:
        events = [track(f"user-{n}", "Ping", seq=i) for i in range(200)]
        results[n] = daemon.send_events(events)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(20))
    assert all(len(r) == 200 and all(a["ok"] for a in r) for r in results.values())


def test_a_client_that_never_reads_does_not_stall_others(daemon: DaemonProcess) -> None:
    """A client that writes a flood and never reads its acks stalls only itself."""
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(str(daemon.socket_path))
    stuck.setblocking(False)
    line = json.dumps(track("slow", "Ping")).encode() + b"\n"
    sent = 0
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline:  # fill until the kernel buffers are full
            try:
                sent += stuck.send(line * 100)
            except BlockingIOError:
                break
        answers = daemon.send_events([track("fast", "Ping") for _ in range(50)])
        assert len(answers) == 50
        assert all(a["ok"] for a in answers)
    finally:
        stuck.close()
    assert sent > 0


def test_socket_file_mode_is_0660(daemon: DaemonProcess) -> None:
    """The socket is group-writable for local apps and closed to others."""
    assert stat.S_IMODE(os.stat(daemon.socket_path).st_mode) == 0o660


def test_stale_socket_is_replaced_but_a_live_one_is_not(workdir: Path) -> None:
    """A socket file left by a crash is replaced; one held by a live daemon makes a second
    daemon refuse to start."""
    (workdir / "run").mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(workdir / "run" / "journeyd.sock"))
    stale.close()  # the file stays, nobody listens: a crash leftover
    first = start_daemon(workdir)
    try:
        assert first.send_events([track("s", "Ping")])[0]["ok"] is True
        config = workdir / "journeyd.toml"
        second = subprocess.run(
            [sys.executable, "-m", "journeyd", "run", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert "in use by a running daemon" in second.stderr
        assert first.send_events([track("s", "Ping")])[0]["ok"] is True  # untouched
    finally:
        first.kill()


def test_invalid_config_exits_78_before_ready(workdir: Path) -> None:
    """A bad config is reported with its path and exits 78 (systemd will not restart it)."""
    config = write_config(workdir, [CART])
    config.write_text(config.read_text() + '\n[limits]\ninstances_per_user = "many"\n')
    done = subprocess.run(
        [sys.executable, "-m", "journeyd", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 78
    assert "limits.instances_per_user" in done.stderr


def test_sighup_reloads_a_good_config_and_keeps_running_on_a_bad_one(workdir: Path) -> None:
    """SIGHUP applies a changed journey (new version for new entries); a broken config is
    rejected with a log line and the running one keeps serving."""
    daemon = start_daemon(workdir)
    try:
        changed = {**CART, "steps": [dict(CART["steps"][0]), dict(CART["steps"][1])]}
        changed["steps"][1]["event_name"] = "Cart Abandoned v2"
        write_config(workdir, [changed])
        daemon.proc.send_signal(signal.SIGHUP)
        reloaded = daemon.wait_for_log("config.reloaded")
        assert "cart" in reloaded["journeys"]
        daemon.send_events([track("h", "Cart Modified", cart_id="1", total=3)])
        (nudge,) = daemon.wait_for_deliveries(1)
        assert nudge["event"] == "Cart Abandoned v2"

        journey_file = workdir / "journeys" / "cart.toml"
        journey_file.write_text(journey_file.read_text() + "\nbogus_key = 1\n")
        daemon.proc.send_signal(signal.SIGHUP)
        rejected = daemon.wait_for_log("config.reload_rejected")
        assert "bogus_key" in json.dumps(rejected) or any(
            "bogus_key" in json.dumps(e) for e in daemon.logs
        )
        daemon.send_events([track("h2", "Cart Modified", cart_id="2", total=3)])
        found = daemon.wait_for_deliveries(2)
        assert found[1]["event"] == "Cart Abandoned v2"  # the good config still runs
    finally:
        daemon.kill()


def test_sigterm_drains_and_exits_zero(daemon: DaemonProcess) -> None:
    """SIGTERM: stop reading, answer what was read, finish deliveries, exit 0 with a log."""
    daemon.send_events([track("t", "Account Deleted")])
    assert daemon.stop(signal.SIGTERM) == 0
    events = [entry.get("event") for entry in daemon.logs]
    assert events.index("daemon.draining") < events.index("daemon.stopped")


def test_journeyd_send_reports_rejections_and_exits_nonzero(daemon: DaemonProcess) -> None:
    """`journeyd send` prints a summary, names rejected lines, and exits 1 when any failed."""
    good = daemon.dir / "good.ndjson"
    good.write_text(json.dumps(track("u", "Ping")) + "\n\n" + json.dumps(track("u", "Pong")) + "\n")
    bad = daemon.dir / "bad.ndjson"
    bad.write_text(json.dumps(track("u", "Ping")) + "\n{nope\n")
    config = str(daemon.dir / "journeyd.toml")
    ok = subprocess.run(
        [sys.executable, "-m", "journeyd", "send", "-c", config, str(good)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert "2 accepted, 0 rejected" in ok.stdout
    failed = subprocess.run(
        [sys.executable, "-m", "journeyd", "send", "--socket", str(daemon.socket_path)],
        input=bad.read_text(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert failed.returncode == 1
    assert "1 accepted, 1 rejected" in failed.stdout
    assert "-:2: rejected:" in failed.stderr


def test_journeyd_send_without_a_daemon_says_so(workdir: Path) -> None:
    """Sending to a socket nobody listens on is a clear error, not a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "journeyd", "send", "--socket", str(workdir / "none.sock")],
        input="{}\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "is the daemon running?" in done.stderr


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_dead_destination_does_not_stall_socket_ingest(workdir: Path) -> None:
    """With one destination holding its first request forever, a flood over the socket is
    still acknowledged in full and another destination keeps delivering: deliveries beyond
    the dead one's memory queue wait on disk, RSS stays bounded, and once released every
    acked event reaches it, each with the messageId it was decided with."""
    from held_webhook import HeldWebhook

    hook = HeldWebhook()
    flood = {
        "id": "flood",
        "entry": {"event": "Flood", "rule": "once"},
        "steps": [{"id": "out", "type": "send", "destination": "hook", "event_name": "Flooded"}],
    }
    healthy = {
        "id": "healthy",
        "entry": {"event": "Flood", "rule": "once"},
        "steps": [{"id": "out", "type": "send", "destination": "outbox", "event_name": "Copied"}],
    }
    daemon = start_daemon(
        workdir,
        journeys=[flood, healthy],
        settings={
            "delivery": {"timeout": "60s"},
            "destinations": {
                "hook": {"type": "webhook", "url": hook.url, "concurrency": 1, "queue": 20},
                "outbox": {"type": "file", "path": "deliveries.jsonl"},
            },
        },
    )
    total = 5000
    try:
        acks = daemon.send_lines(
            [json.dumps(track(f"f-{i}", "Flood", pad="x" * 200)).encode() for i in range(total)],
            timeout=120,
        )
        assert len(acks) == total
        assert all(a["ok"] for a in acks)
        copied = daemon.wait_for_deliveries(total, timeout=120)  # the healthy destination
        assert {d["userId"] for d in copied} == {f"f-{i}" for i in range(total)}
        assert len(hook.bodies) == 1  # still held: everything else was acked regardless
        assert any((workdir / "state" / "spill").rglob("*")), "nothing waited on disk"
        assert rss_mb(daemon.proc.pid) < 200
        hook.released.set()
        deadline = time.monotonic() + 120
        while len(hook.users()) < total and time.monotonic() < deadline:
            time.sleep(0.1)
        assert hook.users() == {f"f-{i}" for i in range(total)}
        assert len(hook.bodies) == total  # each once: nothing was retried or resent
        assert len({json.loads(body)["messageId"] for body in hook.bodies}) == total
    finally:
        hook.close()
        daemon.kill()


def test_socket_backpressure_when_the_client_does_not_read_acks(workdir: Path) -> None:
    """A client that writes without reading its acks is slowed by the socket itself: the
    daemon stops reading (bounded unanswered lines), memory stays bounded, and once the
    client reads, every line is answered and applied."""
    daemon = start_daemon(workdir, journeys=[CART])
    total = 200_000
    payload = b"".join(
        json.dumps(track(f"b-{i % 5000}", "Ping", n=i)).encode() + b"\n" for i in range(total)
    )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(daemon.socket_path))
    done = threading.Event()

    def write() -> None:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        time.sleep(3)
        assert not done.is_set(), "the daemon read a 13 MB flood without it being acked"
        assert rss_mb(daemon.proc.pid) < 200
        answered = 0
        buffer = b""
        sock.settimeout(120)
        while chunk := sock.recv(1 << 16):
            buffer += chunk
            answered += chunk.count(b"\n")
        assert answered == total
        assert b'"ok":false' not in buffer
        writer.join(10)
        assert done.is_set()
    finally:
        sock.close()
        daemon.kill()


def test_a_relative_config_path_delivers_and_keeps_running(workdir: Path) -> None:
    """`journeyd run -c journeyd.toml` from the config's directory (as `make run` does):
    relative paths resolve against the config, file deliveries are written, and the daemon
    keeps serving after each (a relative path once crashed the file destination)."""
    config = write_config(
        workdir,
        [
            {
                "id": "now",
                "entry": {"event": "Signed Up", "rule": "once"},
                "steps": [
                    {"id": "out", "type": "send", "destination": "outbox", "event_name": "Hi"}
                ],
            }
        ],
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "journeyd", "run", "-c", config.name, "--log-format", "json"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    handle = DaemonProcess(
        proc=proc,
        dir=workdir,
        socket_path=workdir / "run" / "journeyd.sock",
        http_url=None,
        deliveries=workdir / "deliveries.jsonl",
    )
    try:
        handle.wait_for_log("daemon.ready", timeout=20)
        for n in range(3):
            assert handle.send_events([{"type": "track", "userId": f"r{n}", "event": "Signed Up"}])[
                0
            ]["ok"]
            assert len(handle.wait_for_deliveries(n + 1)) == n + 1
        assert proc.poll() is None
        assert handle.stop() == 0
    finally:
        handle.kill()
