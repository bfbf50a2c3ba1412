"""The Unix-socket listener: NDJSON in, one NDJSON response line per input line, in order.

Each connection has a reader and a writer. The reader decodes lines and queues events
(waiting while the engine's queue is full, which is how a fast sender is slowed down);
the writer sends responses as soon as the ones before them are ready. A connection may
have at most `MAX_PENDING` unanswered lines, so a client that never reads its responses
stalls only itself.
"""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
from collections import deque
from pathlib import Path
from typing import Any

import msgspec
import trio

from journeyd import log
from journeyd.errors import BadInput, JourneydError
from journeyd.ingest.inbound import Inbound, Item, now, stamp
from journeyd.intake import decode_event

MAX_PENDING = 4096
MAX_PATH_BYTES = 107  # sizeof(sun_path) - 1 on Linux
READ_SIZE = 65536
_encode = msgspec.json.Encoder().encode
_log = log.get("journeyd.ingest.unix")


class SocketInUse(JourneydError):
    pass


def bind_unix(path: Path) -> stdlib_socket.socket:
    """Bind the socket file with mode 0660, replacing a stale file left by a crash.

    A socket file that still accepts connections belongs to a live daemon and is left
    alone: starting a second daemon on it is an error, not a takeover.
    """
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise JourneydError(
            f"socket path {path} is {len(os.fsencode(path))} bytes; Unix sockets allow at most "
            f"{MAX_PATH_BYTES}: choose a shorter daemon.socket"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
                raise
            path.unlink(missing_ok=True)
            _log.info("socket.stale_replaced", path=str(path))
        else:
            raise SocketInUse(
                f"{path} is in use by a running daemon; stop it or choose another daemon.socket"
            )
        finally:
            probe.close()
    sock = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    old_umask = os.umask(0o117)  # never a moment with a wider mode than 0660
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o660)
    sock.listen(512)
    return sock


class Connection:
    """One client: pending responses in input order, filled by the engine loop."""

    def __init__(self, stream: trio.SocketStream, inbound: Inbound, max_line: int) -> None:
        self._stream = stream
        self._inbound = inbound
        self._max_line = max_line
        self._pending: deque[list[Any]] = deque()
        self._ready = trio.Event()
        self._space = trio.Event()
        self._reading = True
        self.lines = 0
        self.rejected_lines = 0

    # Ticket protocol, called by the engine loop
    def accepted(self, index: int, message_id: str) -> None:
        self._answer(index, {"ok": True, "messageId": message_id})

    def rejected(self, index: int, error: str) -> None:
        self._answer(index, {"ok": False, "error": error})

    def _answer(self, index: int, body: dict[str, Any]) -> None:
        slot = self._slots.pop(index)
        slot[0] = _encode(body) + b"\n"
        self._ready.set()

    def stop_reading(self) -> None:
        """Drain: read no more lines, but still answer every line already read."""
        self._read_scope.cancel()

    async def serve(self) -> None:
        self._slots: dict[int, list[Any]] = {}
        self._read_scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write)
            try:
                with self._read_scope:
                    await self._read()
            finally:
                self._reading = False
                self._ready.set()

    async def _read(self) -> None:
        buffer = b""
        skipping = False  # inside an over-long line, discarding up to its newline
        while True:
            try:
                chunk = await self._stream.receive_some(READ_SIZE)
            except trio.BrokenResourceError:
                return
            if not chunk:
                if buffer.strip() and not skipping:
                    await self._line(buffer)
                return
            buffer += chunk
            start = 0
            # Every complete line of the chunk is queued without yielding in between (unless
            # the queue is full), so the engine loop sees them as one batch.
            while True:
                end = buffer.find(b"\n", start)
                if end < 0:
                    break
                line = buffer[start:end]
                start = end + 1
                if skipping:
                    skipping = False
                    continue
                await self._line(line)
            buffer = buffer[start:]
            if len(buffer) > self._max_line and not skipping:
                self._reject_now(
                    f"line longer than {self._max_line} bytes (ingest.max_event_bytes)"
                )
                skipping = True
            if skipping:
                buffer = b""

    async def _line(self, line: bytes) -> None:
        if not line.strip():
            return  # blank lines are not events and get no response
        self.lines += 1
        if len(self._pending) >= MAX_PENDING:
            while len(self._pending) >= MAX_PENDING:
                self._space = trio.Event()
                await self._space.wait()
        if len(line) > self._max_line:
            self._reject_now(f"line longer than {self._max_line} bytes (ingest.max_event_bytes)")
            return
        try:
            event = decode_event(line)
        except BadInput as exc:
            self._reject_now(str(exc))
            return
        received = now()
        try:
            stamp(event, received)
        except ValueError as exc:
            self._reject_now(str(exc))
            return
        slot: list[Any] = [None]
        index = self.lines
        self._slots[index] = slot
        self._pending.append(slot)
        item = Item(event, received, "", self, index)
        if self._inbound.try_put(item):
            return
        queued = False
        try:
            await self._inbound.put(item)  # the queue is full: this is the backpressure
            queued = True
        finally:
            if not queued:  # cancelled while the queue was full: say so, do not go silent
                self.rejected(index, "journeyd is shutting down; the event was not accepted")

    def _reject_now(self, error: str) -> None:
        self.rejected_lines += 1
        self._pending.append([_encode({"ok": False, "error": error}) + b"\n"])
        self._ready.set()

    async def _write(self) -> None:
        pending = self._pending
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            out = []
            while pending and pending[0][0] is not None:
                out.append(pending.popleft()[0])
            if out:
                self._space.set()
                try:
                    await self._stream.send_all(b"".join(out))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            if not self._reading and not pending:
                return


async def serve_unix(
    sock: stdlib_socket.socket,
    inbound: Inbound,
    max_line: int,
    stopping: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `stopping` is set, then stop reading and return once answers are out."""
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    live: set[Connection] = set()

    async def handle(stream: trio.SocketStream) -> None:
        connection = Connection(stream, inbound, max_line)
        live.add(connection)
        try:
            await connection.serve()
        finally:
            live.discard(connection)
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        accepting = trio.CancelScope()

        async def accept() -> None:
            with accepting:
                await trio.serve_listeners(handle, [listener], handler_nursery=nursery)

        nursery.start_soon(accept)
        task_status.started()
        await stopping.wait()
        accepting.cancel()
        for connection in list(live):
            connection.stop_reading()
