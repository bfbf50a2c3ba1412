"""The dead-letter file: deliveries the pool gave up on, one JSON line each, ready to replay.

A record carries the payload (it is the thing to replay) and what was tried last, but never a
header, a secret or a signature: the file is meant to be read and shared while debugging.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import trio

from journeyd.delivery.retry import LastRequest


class _LastRequestRecord(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    url: str
    status: int | None


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    destination: str
    message_id: str
    attempts: int
    error: str
    last_request: _LastRequestRecord | None
    payload: dict[str, Any]


def dead_letter(
    *,
    at: float,
    destination: str,
    message_id: str,
    attempts: int,
    error: str,
    last_request: LastRequest | None,
    payload: dict[str, Any],
) -> DeadLetter:
    request = (
        None
        if last_request is None
        else _LastRequestRecord(
            method=last_request.method, url=last_request.url, status=last_request.status
        )
    )
    return DeadLetter(
        at=at,
        destination=destination,
        message_id=message_id,
        attempts=attempts,
        error=error,
        last_request=request,
        payload=payload,
    )


class DeadLetterFile:
    """Appends records; opened per write because dead letters are rare and must survive rotation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = trio.Lock()
        self._encoder = msgspec.json.Encoder()

    async def append(self, record: DeadLetter) -> None:
        """Raises OSError; the caller decides how loudly to fail."""
        line = self._encoder.encode(record) + b"\n"
        async with self._lock:
            await trio.to_thread.run_sync(self._write, line)

    def _write(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path), self.path.open("ab") as handle:
            handle.write(line)
            handle.flush()
            # Durable before the pool logs the outcome "dead_lettered": after that the
            # delivery is owed nowhere else.
            os.fsync(handle.fileno())


def read_dead_letters(path: Path) -> list[DeadLetter]:
    if not path.exists():
        return []
    decoder = msgspec.json.Decoder(DeadLetter)
    return [decoder.decode(line) for line in path.read_bytes().splitlines() if line.strip()]


def take_dead_letters(
    path: Path,
    selected: Callable[[DeadLetter], bool],
    keep_safe: Callable[[list[DeadLetter]], object] | None = None,
) -> list[DeadLetter]:
    """Remove the selected records from the file and return them.

    Runs under the same lock the daemon takes to append, and replaces the file by rename,
    so a dead letter written meanwhile is neither lost nor half-read. `keep_safe` is
    called with the records before they are removed (to write them somewhere durable
    first: a crash in between then leaves a copy, never none).
    """
    if not path.exists():
        return []
    with _locked(path):
        records = read_dead_letters(path)
        taken = [r for r in records if selected(r)]
        if taken and keep_safe is not None:
            keep_safe(taken)
        if taken:
            kept = [r for r in records if not selected(r)]
            encode = msgspec.json.Encoder().encode
            temp = path.with_name(path.name + ".tmp")
            with temp.open("wb") as handle:
                handle.writelines(encode(r) + b"\n" for r in kept)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
    return taken


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `<file>.lock`, shared by the daemon and `journeyd dlq`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / (path.name + ".lock")).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
