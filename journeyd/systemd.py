"""The two halves of systemd integration: the notify protocol and socket activation.

Both are small, stable wire protocols, so this module speaks them with the standard library
rather than depending on python-systemd. That package is a C extension over libsystemd,
published as source only, so installing it needs libsystemd headers and a C compiler on every
machine; and for sd_notify() and sd_listen_fds() it would give us nothing this module does
not: a datagram of `KEY=VALUE` lines (sd_notify(3)) and a few environment variables naming
inherited file descriptors (sd_listen_fds(3)). Away from systemd both degrade to
no-ops, so `journeyd run` on a laptop takes the same code path as under systemd.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import time
from collections.abc import Mapping, MutableMapping
from typing import Protocol

import structlog
import trio

from journeyd.errors import JourneydError

__all__ = [
    "LISTEN_FDS_START",
    "Notifier",
    "SocketActivationError",
    "Watchdog",
    "listen_fds",
    "watchdog_loop",
]

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START: the first inherited fd
_UNNAMED = "unknown"  # what sd_listen_fds_with_names(3) calls an fd without a name
_LOGGER = "journeyd.systemd"


class SocketActivationError(JourneydError):
    """The socket-activation environment (LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES) is invalid."""


class Watchdog(Protocol):
    """What `watchdog_loop` needs: the interval systemd expects pings at, and a ping."""

    def watchdog_interval(self) -> float | None: ...

    def watchdog(self) -> None: ...


class Notifier:
    """Sends sd_notify(3) messages to the service manager; every call is a no-op without one.

    Messages are non-blocking datagrams to the AF_UNIX socket named by `NOTIFY_SOCKET` (a path,
    or `@name` for the abstract namespace). A message that cannot be sent is dropped: the first
    failure is logged, and none is ever raised into the daemon.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _notify_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_s = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._warned = False
        self._closed = False

    @property
    def enabled(self) -> bool:
        """True when a service manager is listening (NOTIFY_SOCKET was set and usable)."""
        return self._address is not None and not self._closed

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) is complete: recovered, listening, accepting."""
        self._send("READY=1", status)

    def reloading(self, status: str | None = None) -> None:
        """A reload has begun; call `ready()` when it is done (or has been rejected).

        MONOTONIC_USEC is what systemd >= 253 needs to match the message to a reload request
        under Type=notify-reload; older managers and Type=notify ignore it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}", status)

    def stopping(self, status: str | None = None) -> None:
        """Shutdown has begun (a drain, or a fail-stop before exiting 74)."""
        self._send("STOPPING=1", status)

    def status(self, text: str) -> None:
        """A one-line status for `systemctl status`, e.g. live counts."""
        self._send(None, text)

    def watchdog(self) -> None:
        """Tell the manager the event loop is alive (WatchdogSec=)."""
        self._send("WATCHDOG=1", None)

    def extend_timeout(self, seconds: float) -> None:
        """Ask for `seconds` more before the start/stop timeout fires (a long WAL replay)."""
        self._send(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1_000_000))}", None)

    def watchdog_interval(self) -> float | None:
        """Seconds within which systemd expects WATCHDOG=1, or None when no watchdog is set."""
        return self._watchdog_s if self.enabled else None

    def close(self) -> None:
        """Release the socket; later calls are no-ops."""
        self._closed = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, message: str | None, status: str | None) -> None:
        if self._address is None or self._closed:
            return
        lines = [] if message is None else [message]
        if status is not None:
            # STATUS= is one line; a newline would start a new (unintended) assignment.
            lines.append("STATUS=" + " ".join(status.splitlines()))
        data = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(data, self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                structlog.get_logger(_LOGGER).warning(
                    "notify.send_failed",
                    socket=os.fsdecode(self._address).replace("\0", "@", 1),
                    error=f"{errno.errorcode.get(exc.errno or 0, 'OSError')}: {exc.strerror}",
                    note="later failures are not logged",
                )


async def watchdog_loop(notifier: Watchdog) -> None:
    """Send WATCHDOG=1 now and then every half interval, forever; return at once if there is
    no watchdog. Run it in the daemon's root nursery: the pings come from the same event loop
    as the work, so a blocked loop stops them and systemd restarts the service."""
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    while True:
        notifier.watchdog()
        await trio.sleep(interval / 2)


def listen_fds(
    environ: MutableMapping[str, str] = os.environ, unset: bool = True
) -> dict[str, list[socket.socket]]:
    """The listening sockets systemd passed in, grouped by name (sd_listen_fds_with_names(3)).

    Names come from FileDescriptorName= in the socket units ("unix", "http"); an fd without a
    name is filed under "unknown". Returns {} when the process was not socket-activated (no
    LISTEN_PID, or one naming another process: the variables were inherited, not meant for
    us). With `unset`, LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES are removed from `environ`
    whatever the outcome, so no child process mistakes the fds for its own.
    Raises SocketActivationError naming the bad variable or fd.
    """
    try:
        return _listen_fds(environ)
    finally:
        if unset:
            for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                environ.pop(key, None)


def _listen_fds(environ: Mapping[str, str]) -> dict[str, list[socket.socket]]:
    pid_text = environ.get("LISTEN_PID")
    if pid_text is None:
        return {}
    pid = _positive_int("LISTEN_PID", pid_text)
    if pid != os.getpid():
        return {}
    count_text = environ.get("LISTEN_FDS")
    if count_text is None:
        return {}
    count = _positive_int("LISTEN_FDS", count_text)
    fds = range(LISTEN_FDS_START, LISTEN_FDS_START + count)
    names_text = environ.get("LISTEN_FDNAMES")
    if names_text is None:
        names = [_UNNAMED] * count
    else:
        names = [name or _UNNAMED for name in names_text.split(":")]
        if len(names) != count:
            raise SocketActivationError(
                f"socket activation: LISTEN_FDNAMES={names_text!r} names {len(names)} fds "
                f"but LISTEN_FDS={count_text!r}; the two must match (sd_listen_fds(3))"
            )
    # Check every fd before wrapping any: a socket object closes its fd when collected, and
    # an error halfway must not close fds that belong to the process.
    for fd in fds:
        try:
            mode = os.fstat(fd).st_mode
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        except OSError as exc:
            raise SocketActivationError(
                f"socket activation: LISTEN_FDS={count_text!r} promises fds "
                f"{fds.start}..{fds.stop - 1}, but fd {fd} is unusable: {exc.strerror}"
            ) from exc
        if not stat.S_ISSOCK(mode):
            raise SocketActivationError(
                f"socket activation: fd {fd} ({names[fd - LISTEN_FDS_START]!r}) is not a socket"
            )
    found: dict[str, list[socket.socket]] = {}
    for fd, name in zip(fds, names, strict=True):
        found.setdefault(name, []).append(socket.socket(fileno=fd))
    return found


def _positive_int(key: str, text: str) -> int:
    # Plain ASCII digits only: int() would also take " 3", "+3", "3_0" and non-ASCII digits.
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise SocketActivationError(
            f"socket activation: {key}={text!r} is not a positive integer (sd_listen_fds(3))"
        )
    return int(text)


def _notify_address(value: str) -> bytes | None:
    """NOTIFY_SOCKET as a sendto() address: a path, or `@name` for the abstract namespace."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    if value:
        # e.g. vsock:CID:PORT (systemd >= 254 in VMs): not spoken here. Say so once.
        structlog.get_logger(_LOGGER).warning(
            "notify.unsupported_socket", socket=value, note="readiness will not be reported"
        )
    return None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """WATCHDOG_USEC in seconds, if it is meant for this process (WATCHDOG_PID, when set)."""
    usec_text = environ.get("WATCHDOG_USEC")
    if not usec_text:
        return None
    pid_text = environ.get("WATCHDOG_PID")
    if pid_text:
        try:
            if int(pid_text) != os.getpid():
                return None  # set for the parent that exec'd or forked us, not for us
        except ValueError:
            return None
    try:
        usec = int(usec_text)
    except ValueError:
        usec = 0
    if usec <= 0:
        structlog.get_logger(_LOGGER).warning("watchdog.bad_interval", WATCHDOG_USEC=usec_text)
        return None
    return usec / 1_000_000
