"""journeyd.systemd against real sockets: the notify protocol and socket activation."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import trio

from journeyd.systemd import Notifier, SocketActivationError, listen_fds, watchdog_loop

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX paths are limited to 107 bytes and pytest's
    tmp_path for a long test name can exceed that."""
    with tempfile.TemporaryDirectory(prefix="jd-") as name:
        yield Path(name)


@pytest.fixture
def manager(short_dir: Path) -> Iterator[tuple[socket.socket, str]]:
    """A stand-in service manager: a datagram socket bound at a path, and that path."""
    path = str(short_dir / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def receive(sock: socket.socket) -> dict[str, str]:
    """One notify datagram as {KEY: VALUE}; fails if a line is not KEY=VALUE."""
    data = sock.recv(4096).decode()
    assert data.endswith("\n")
    pairs = [line.split("=", 1) for line in data.splitlines()]
    assert all(len(pair) == 2 for pair in pairs), data
    return dict(pairs)


def nothing_waiting(sock: socket.socket) -> bool:
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)
    return False


# --- the notify protocol ----------------------------------------------------------------


def test_ready_sends_ready_and_status(manager: tuple[socket.socket, str]) -> None:
    """READY=1 reaches the manager in one datagram together with the STATUS= line."""
    sock, path = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready("recovered 12 instances; listening")
    assert receive(sock) == {"READY": "1", "STATUS": "recovered 12 instances; listening"}
    notifier.ready()
    assert receive(sock) == {"READY": "1"}
    notifier.close()


def test_status_is_kept_to_one_line(manager: tuple[socket.socket, str]) -> None:
    """A newline in a status cannot smuggle a second assignment (e.g. READY=1) to systemd."""
    sock, path = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.status("queue 3\nREADY=1")
    assert receive(sock) == {"STATUS": "queue 3 READY=1"}


def test_reloading_carries_the_monotonic_clock(manager: tuple[socket.socket, str]) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC read from CLOCK_MONOTONIC, as notify-reload needs."""
    sock, path = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    message = receive(sock)
    assert message.keys() == {"RELOADING", "MONOTONIC_USEC"}
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after


def test_stopping_watchdog_and_extend_timeout(manager: tuple[socket.socket, str]) -> None:
    """STOPPING=1, WATCHDOG=1 and EXTEND_TIMEOUT_USEC= are sent as sd_notify(3) spells them."""
    sock, path = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.stopping("draining")
    assert receive(sock) == {"STOPPING": "1", "STATUS": "draining"}
    notifier.watchdog()
    assert receive(sock) == {"WATCHDOG": "1"}
    notifier.extend_timeout(90)
    assert receive(sock) == {"EXTEND_TIMEOUT_USEC": "90000000"}


def test_abstract_namespace_address() -> None:
    """NOTIFY_SOCKET=@name reaches a socket in the abstract namespace."""
    # systemd uses abstract addresses inside containers, and systemd-run may hand one out.
    name = f"journeyd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("up")
        assert receive(sock) == {"READY": "1", "STATUS": "up"}


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    """Outside systemd (no NOTIFY_SOCKET) the notifier does nothing and opens no socket."""
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready("x")
    notifier.reloading()
    notifier.stopping()
    notifier.status("x")
    notifier.watchdog()
    assert notifier.watchdog_interval() is None
    assert notifier._sock is None
    notifier.close()


def test_closed_notifier_sends_nothing(manager: tuple[socket.socket, str]) -> None:
    """After close() the notifier is inert: a late call from a finishing task is harmless."""
    sock, path = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready()
    assert receive(sock) == {"READY": "1"}
    notifier.close()
    notifier.stopping()
    assert not notifier.enabled
    assert nothing_waiting(sock)


def test_dead_socket_never_raises_and_is_logged_once(short_dir: Path) -> None:
    """A manager that went away (socket file left, nobody bound) costs one log line, no crash."""
    path = str(short_dir / "gone")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)  # bound and closed: the file stays, connections are refused
    notifier = Notifier({"NOTIFY_SOCKET": path})
    with structlog.testing.capture_logs() as logs:
        notifier.ready()
        notifier.watchdog()
        notifier.stopping()
    assert [entry["event"] for entry in logs] == ["notify.send_failed"]
    assert logs[0]["socket"] == path
    assert "ECONNREFUSED" in logs[0]["error"]


def test_missing_socket_path_never_raises(short_dir: Path) -> None:
    """NOTIFY_SOCKET naming a path that does not exist is a logged no-op, not an exception."""
    notifier = Notifier({"NOTIFY_SOCKET": str(short_dir / "missing")})
    with structlog.testing.capture_logs() as logs:
        notifier.ready()
    assert [entry["event"] for entry in logs] == ["notify.send_failed"]


def test_a_manager_that_stops_reading_never_blocks_the_daemon(
    manager: tuple[socket.socket, str],
) -> None:
    """Sends are non-blocking: with the manager's queue full, calls return at once."""
    _, path = manager
    notifier = Notifier({"NOTIFY_SOCKET": path})
    done = threading.Event()

    def flood() -> None:
        for _ in range(5000):  # far more than net.unix.max_dgram_qlen (512 by default)
            notifier.watchdog()
        done.set()

    with structlog.testing.capture_logs() as logs:
        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        assert done.wait(10), "a notify send blocked on a full socket"
    assert [entry["event"] for entry in logs] == ["notify.send_failed"]
    assert "EAGAIN" in logs[0]["error"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000"}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "<self>"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_PID": "<self>"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(extra: dict[str, str], expected: float | None) -> None:
    """WATCHDOG_USEC becomes seconds, but only for the process WATCHDOG_PID names (if set)."""
    env = {"NOTIFY_SOCKET": "/run/systemd/notify"}
    env |= {k: str(os.getpid()) if v == "<self>" else v for k, v in extra.items()}
    assert Notifier(env).watchdog_interval() == expected


def test_watchdog_interval_needs_a_manager() -> None:
    """With no NOTIFY_SOCKET there is nobody to ping, so no watchdog interval either."""
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval() is None


async def test_watchdog_loop_pings_at_half_the_interval(
    autojump_clock: trio.testing.MockClock, manager: tuple[socket.socket, str]
) -> None:
    """With WatchdogSec=10s the daemon pings at once and then every 5 s of (virtual) time."""
    sock, path = manager
    sock.setblocking(False)
    receiver = trio.socket.from_stdlib_socket(sock)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier(env)
    start = trio.current_time()
    arrivals = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog_loop, notifier)
        while len(arrivals) < 4:
            data = await receiver.recv(4096)
            assert data == b"WATCHDOG=1\n"
            arrivals.append(trio.current_time() - start)
        nursery.cancel_scope.cancel()
    assert arrivals == [0.0, 5.0, 10.0, 15.0]


async def test_watchdog_loop_returns_without_a_watchdog(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No WatchdogSec= means no pinging task: watchdog_loop returns at once."""
    start = trio.current_time()
    with trio.fail_after(60):
        await watchdog_loop(Notifier({"NOTIFY_SOCKET": "/run/systemd/notify"}))
    assert trio.current_time() == start


# --- socket activation ------------------------------------------------------------------


CHILD = """
import json, os, sys
from journeyd.systemd import listen_fds
found = listen_fds()
report = {
    "names": {name: [s.family.name for s in socks] for name, socks in found.items()},
    "env_left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    "cloexec": all(not os.get_inheritable(s.fileno()) for ss in found.values() for s in ss),
}
if "unix" in found:
    conn, _ = found["unix"][0].accept()
    conn.sendall(b"accepted on the inherited fd\\n")
    conn.close()
print(json.dumps(report), flush=True)
"""


@pytest.mark.skipif(SOCKET_ACTIVATE is None, reason="systemd-socket-activate not installed")
def test_socket_activation_through_systemd_socket_activate(short_dir: Path) -> None:
    """Sockets from the real systemd-socket-activate arrive named, close-on-exec, accepting."""
    # Also checked: LISTEN_* are cleared so no child process mistakes the fds for its own.
    assert SOCKET_ACTIVATE is not None
    unix_path = short_dir / "ingest.sock"
    http_path = short_dir / "http.sock"
    command = [
        SOCKET_ACTIVATE,
        "-l",
        str(unix_path),
        "-l",
        str(http_path),
        "--fdname=unix:http",
        sys.executable,
        "-c",
        CHILD,
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as tool:
        try:
            deadline = time.monotonic() + 10
            while not unix_path.exists():
                assert tool.poll() is None, tool.stderr.read() if tool.stderr else ""
                assert time.monotonic() < deadline, "systemd-socket-activate never listened"
                time.sleep(0.01)
            # The tool starts the child on the first connection, which waits in the backlog
            # until the child accepts it from the inherited fd.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(10)
                client.connect(str(unix_path))
                assert client.makefile("rb").readline() == b"accepted on the inherited fd\n"
            out, err = tool.communicate(timeout=10)
        finally:
            tool.kill()
    assert tool.returncode == 0, err.decode()
    report = json.loads(out)
    assert report == {
        "names": {"unix": ["AF_UNIX"], "http": ["AF_UNIX"]},
        "env_left": [],
        "cloexec": True,
    }


def run_child(setup: str) -> subprocess.CompletedProcess[str]:
    """Run `setup` (which dup2()s sockets onto fds 3..) and then listen_fds() in a fresh
    interpreter, so the test process's own fds are never touched."""
    code = textwrap.dedent(setup) + textwrap.dedent(
        """
        import json, os, socket
        from journeyd.systemd import SocketActivationError, listen_fds
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ.update(ENV)
        try:
            found = listen_fds()
        except SocketActivationError as exc:
            print(json.dumps({"error": str(exc)}))
        else:
            print(json.dumps({
                "names": {n: [(s.family.name, s.type.name) for s in ss] for n, ss in found.items()},
            }))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )


def test_unnamed_fds_are_unknown_and_families_are_detected() -> None:
    """Without LISTEN_FDNAMES every fd is "unknown", with its family and type detected."""
    result = run_child(
        """
        import os, socket
        a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        b.bind(("127.0.0.1", 0)); b.listen()
        os.dup2(a.fileno(), 3); os.dup2(b.fileno(), 4)
        ENV = {"LISTEN_FDS": "2"}
        """
    )
    assert json.loads(result.stdout) == {
        "names": {"unknown": [["AF_UNIX", "SOCK_STREAM"], ["AF_INET", "SOCK_STREAM"]]}
    }


def test_repeated_and_empty_names() -> None:
    """Two fds with one name are grouped in order; an empty name counts as "unknown"."""
    result = run_child(
        """
        import os, socket
        socks = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
        for fd, s in enumerate(socks, start=3):
            os.dup2(s.fileno(), fd)
        ENV = {"LISTEN_FDS": "3", "LISTEN_FDNAMES": "http::http"}
        """
    )
    names = json.loads(result.stdout)["names"]
    assert names == {
        "http": [["AF_UNIX", "SOCK_STREAM"]] * 2,
        "unknown": [["AF_UNIX", "SOCK_STREAM"]],
    }


def test_an_fd_that_is_not_a_socket_is_a_clear_error() -> None:
    """A regular file where a socket was promised is reported by fd and name, not a crash."""
    result = run_child(
        """
        import os
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 3)
        ENV = {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "unix"}
        """
    )
    assert json.loads(result.stdout) == {
        "error": "socket activation: fd 3 ('unix') is not a socket"
    }


def test_a_missing_fd_is_a_clear_error() -> None:
    """LISTEN_FDS promising more fds than are open names the missing fd."""
    result = run_child(
        """
        import os, socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        os.dup2(s.fileno(), 3)
        os.closerange(4, 64)
        ENV = {"LISTEN_FDS": "2"}
        """
    )
    error = json.loads(result.stdout)["error"]
    assert error.startswith("socket activation: LISTEN_FDS='2' promises fds 3..4, but fd 4")


@pytest.mark.parametrize("value", ["abc", "0", "-1", "", " 2", "+2", "2_0", "1.5"])
def test_bad_listen_fds_is_a_clear_error(value: str) -> None:
    """A LISTEN_FDS that is not a positive integer raises SocketActivationError naming it."""
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": value}
    with pytest.raises(SocketActivationError) as caught:
        listen_fds(env)
    assert str(caught.value) == (
        f"socket activation: LISTEN_FDS={value!r} is not a positive integer (sd_listen_fds(3))"
    )
    assert env == {}, "LISTEN_* must be cleared even when they are invalid"


def test_bad_listen_pid_is_a_clear_error() -> None:
    """A LISTEN_PID that is not a number is reported, not mistaken for "not for us"."""
    with pytest.raises(SocketActivationError, match="LISTEN_PID='self'"):
        listen_fds({"LISTEN_PID": "self", "LISTEN_FDS": "1"})


def test_names_must_match_the_fd_count() -> None:
    """LISTEN_FDNAMES naming a different number of fds than LISTEN_FDS is an error."""
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "unix:http"}
    with pytest.raises(SocketActivationError, match="names 2 fds but LISTEN_FDS='1'"):
        listen_fds(env)


def test_variables_meant_for_another_process_are_ignored_and_cleared() -> None:
    """LISTEN_PID naming another process (inherited variables) means "not activated"."""
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert listen_fds(env) == {}
    assert env == {}


def test_not_activated_and_unset_false_leaves_the_environment() -> None:
    """Without LISTEN_PID there is nothing to adopt; unset=False keeps the variables."""
    env = {"LISTEN_FDS": "1"}
    assert listen_fds(env, unset=False) == {}
    assert env == {"LISTEN_FDS": "1"}
