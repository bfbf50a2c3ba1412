"""The exception hierarchy: one root so callers can catch everything journeyd raises on purpose."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class JourneydError(Exception):
    """Root of every error journeyd raises deliberately."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config or journey file, located precisely enough to fix."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class ConfigError(JourneydError):
    """A config or journey file is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class BadInput(JourneydError):
    """An event (or request) cannot be accepted as it is; the message names what is wrong."""


class StorageError(JourneydError):
    """The write-ahead log or a snapshot could not be written or read as it must be."""


class CorruptRecord(StorageError):
    """Stored data fails its checks (length, checksum, sequence, decoding) at a known place.

    Corruption is never skipped: recovery stops and names the file and byte offset, so an
    operator can decide (e.g. `journeyd recover --truncate-after SEQ`).
    """

    def __init__(self, file: Path, offset: int, reason: str) -> None:
        self.file = file
        self.offset = offset
        self.reason = reason
        super().__init__(f"{file}: corrupt at byte offset {offset}: {reason}")


class DurabilityLost(StorageError):
    """An fsync failed: what was written may or may not be on disk. Fail-stop, never retry."""


class StorageFull(StorageError):
    """A write could not be stored (no space, quota, file size limit); nothing partial remains.

    The daemon refuses ingest (HTTP 503, socket error line) and tries again later.
    """


class UnknownFormat(StorageError):
    """A stored file has a magic number or format version this build does not understand."""

    def __init__(self, message: str, file: Path | None = None) -> None:
        self.file = file
        super().__init__(message)
