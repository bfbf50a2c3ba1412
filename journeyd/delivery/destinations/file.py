"""The `file` destination: the delivery payload as one JSON line per send, appended to a file.

Writes are group-committed: whichever worker finds no write in progress becomes the writer and
writes everything queued so far in one `write` + `flush` (in a thread, so a slow disk does not
stall the event loop); the others wait for the batch holding their line. A send therefore
returns only once its line is flushed, and N concurrent sends cost far fewer than N flushes.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import msgspec
import trio

from journeyd.delivery.retry import LastRequest, Retryable
from journeyd.engine import Delivery
from journeyd.settings import FileDestination


class _Batch:
    __slots__ = ("done", "error", "lines")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.done = trio.Event()
        self.error: OSError | None = None


class FileSender:
    def __init__(self, name: str, config: FileDestination, *, path: Path) -> None:
        self.name = name
        self.config = config
        self.path = path
        self.batches_written = 0
        self.lines_written = 0
        self._handle: BinaryIO | None = None
        self._encoder = msgspec.json.Encoder()
        self._current = _Batch()
        self._writing = False
        self._writer_changed = trio.Event()

    def describe(self) -> LastRequest:
        return LastRequest(method="APPEND", url=self.path.as_uri())

    def open(self) -> None:
        """Raises OSError when the file cannot be opened: a bad path is a startup error."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("ab")

    async def aclose(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            await trio.to_thread.run_sync(handle.close)

    async def deliver(self, delivery: Delivery) -> None:
        batch = self._current
        batch.lines.append(self._encoder.encode(delivery.payload) + b"\n")
        while not batch.done.is_set():
            if self._writing:
                await self._writer_changed.wait()
            else:
                await self._write_pending()
        if batch.error is not None:
            raise Retryable(
                f"write failed: {batch.error.strerror or batch.error}", request=self.describe()
            )

    async def _write_pending(self) -> None:
        # Whoever leaves (done or cancelled) wakes the waiters so one of them takes over.
        self._writing = True
        try:
            while self._current.lines:
                batch, self._current = self._current, _Batch()
                try:
                    await trio.to_thread.run_sync(self._write_batch, batch.lines)
                except OSError as exc:
                    batch.error = exc
                except BaseException:
                    # Cancelled before the thread started (or a bug): the batch's senders
                    # must not wait forever for a write nobody will do; they retry instead.
                    batch.error = OSError("write interrupted")
                    raise
                finally:
                    batch.done.set()
        finally:
            self._writing = False
            self._writer_changed.set()
            self._writer_changed = trio.Event()

    def _write_batch(self, lines: list[bytes]) -> None:
        if self._handle is None:
            raise OSError(f"{self.path} is not open")
        self._handle.write(b"".join(lines))
        self._handle.flush()
        self.batches_written += 1
        self.lines_written += len(lines)
