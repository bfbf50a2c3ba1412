"""The `file` destination: the delivery payload as one JSON line per send, appended to a file.

Driven by a delivery lane it is a `Runner`: `run(batch)` writes the batch's lines with one
`write` + `flush` (in a thread), so the lane's batching is the group commit; with the
default concurrency of 1 whatever queues during one write goes out in the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import msgspec
import trio

from journeyd.delivery.adapter import BatchLimits, Delivered, Outcome, Retry
from journeyd.delivery.retry import DestinationConfigError, LastRequest
from journeyd.durations import parse_duration
from journeyd.engine import Delivery
from journeyd.settings import FileDestination

MAX_ITEMS = 1000
MAX_BYTES = 4 << 20


def file_limits(name: str, config: FileDestination) -> BatchLimits:
    """The lane policy of a file destination: no waiting, one write at a time."""
    wait_s = 0.0
    if config.batch_wait is not None and config.batch_wait.strip() != "0":
        try:
            wait_s = float(parse_duration(config.batch_wait))
        except ValueError as exc:
            raise DestinationConfigError(f"destination {name}: batch_wait: {exc}") from exc
    for key in ("batch_size", "batch_bytes", "rate", "concurrency"):
        value = getattr(config, key)
        if value is not None and value <= 0:
            raise DestinationConfigError(f"destination {name}: {key} must be positive")
    return BatchLimits(
        max_items=config.batch_size or MAX_ITEMS,
        max_bytes=config.batch_bytes or MAX_BYTES,
        max_wait_s=wait_s,
        rate_per_s=config.rate,
        concurrency=config.concurrency or 1,
    )


class FileSender:
    def __init__(self, name: str, config: FileDestination, *, path: Path) -> None:
        self.name = name
        self.config = config
        self.path = path
        self._limits = file_limits(name, config)
        self.batches_written = 0
        self.lines_written = 0
        self._handle: BinaryIO | None = None
        self._encoder = msgspec.json.Encoder()

    def describe(self) -> LastRequest:
        return LastRequest(method="APPEND", url=self.path.absolute().as_uri())

    @property
    def limits(self) -> BatchLimits:
        return self._limits

    def size_of(self, delivery: Delivery) -> int:
        return len(self._encoder.encode(delivery.payload)) + 1

    async def run(self, batch: Sequence[Delivery]) -> Sequence[Outcome]:
        """The Runner side: the whole batch in one write and flush."""
        lines = [self._encoder.encode(d.payload) + b"\n" for d in batch]
        try:
            await trio.to_thread.run_sync(self._write_batch, lines)
        except OSError as exc:
            return [Retry(f"write failed: {exc.strerror or exc}")] * len(batch)
        return [Delivered()] * len(batch)

    def open(self) -> None:
        """Raises OSError when the file cannot be opened: a bad path is a startup error."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("ab")

    async def aclose(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            await trio.to_thread.run_sync(handle.close)

    def _write_batch(self, lines: list[bytes]) -> None:
        if self._handle is None:
            raise OSError(f"{self.path} is not open")
        self._handle.write(b"".join(lines))
        self._handle.flush()
        self.batches_written += 1
        self.lines_written += len(lines)
