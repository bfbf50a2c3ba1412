"""A destination's overflow on disk: deliveries beyond its in-memory queue, in FIFO order.

    state_dir/spill/<destination>/0000000000000001.spill   segment: magic, then records
    record = u32 length | u32 crc32(body) | body (msgpack [born, Delivery])

Appends go to the last segment (a new one past `segment_bytes`); reads go from the first.
Positions are (segment, byte offset), so a `SpillCursor` — read and write position and the
number of records between — says exactly what the queue held when it was taken.

Durability is the daemon's snapshot's: `checkpoint()` fsyncs and returns the cursor that the
snapshot stores; `restore()` truncates back to the checkpointed write position (anything
spilled later is still owed by the write-ahead log and is re-submitted from it) and resumes
reading at the checkpointed read position. A drained segment is deleted once no snapshot
that may still be used for recovery points into it: right away while no checkpoint was
ever taken, else once two checkpoints' read positions have moved past it.

A record that fails its checksum or does not decode cannot be trusted to say where the next
one starts: the rest of that segment is skipped and logged with what was lost. Reads never
pass the known write position, so a torn tail (a crash mid-append) is never read as data.
"""

from __future__ import annotations

import collections
import errno
import os
import struct
import zlib
from collections.abc import Collection
from pathlib import Path
from urllib.parse import quote

import msgspec
import structlog

from journeyd.engine import Delivery
from journeyd.errors import StorageError

log = structlog.get_logger("journeyd.delivery")

_MAGIC = b"JDSPILL1"  # the trailing digit is the format version
_HEADER = len(_MAGIC)
_RECORD = struct.Struct("<II")  # body length, crc32(body)
SEGMENT_BYTES = 8 << 20
_READ_CHUNK = 1 << 20
_SUFFIX = ".spill"


class SpillRefused(StorageError):
    """The disk refused an append (full, quota, I/O error); nothing of it was kept."""


class SpillCursor(msgspec.Struct, frozen=True, kw_only=True):
    """One spill queue's state at a checkpoint; stored in the daemon's snapshot."""

    read_segment: int
    read_offset: int
    write_segment: int
    write_offset: int
    records: int


SpillCursors = dict[str, SpillCursor]


class Spilled(msgspec.Struct, array_like=True, frozen=True):
    born: float  # what max_age is measured from (delivery.at, or the redrive time)
    delivery: Delivery


def spill_directory(root: Path, destination: str) -> Path:
    """A file-system-safe directory name for any destination name (no `/`, no `..`)."""
    name = quote(destination, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return root / name


def _segment_name(segment: int) -> str:
    return f"{segment:016d}{_SUFFIX}"


def _segments(directory: Path) -> list[int]:
    found = []
    if directory.is_dir():
        for entry in directory.iterdir():
            stem = entry.name.removesuffix(_SUFFIX)
            if entry.name.endswith(_SUFFIX) and stem.isdigit():
                found.append(int(stem))
    return sorted(found)


class SpillQueue:
    """Built with `fresh` (start empty, discard leftovers) or `restore` (resume a cursor)."""

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.records = 0
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Spilled)
        self._read_segment = 1
        self._read_offset = _HEADER
        self._write_segment = 1
        self._write_offset = 0  # 0: the write segment's file does not exist yet
        self._write_fd: int | None = None
        self._unsynced: list[int] = []  # fds of segments written since the last checkpoint
        self._dir_dirty = False
        self._read_fd: int | None = None
        self._read_fd_segment = 0
        self._read_end = 0  # size of a finished read segment
        self._buffer = memoryview(b"")
        self._buffer_start = 0  # file offset of _buffer[0] within _read_fd_segment
        self._skip: frozenset[str] = frozenset()
        self._skip_until = (0, 0)
        # Read segments of the snapshots on disk (the two newest), and of snapshots still
        # being written: no segment at or after the oldest of them is deleted.
        self._checkpoint_reads: collections.deque[int] = collections.deque(maxlen=2)
        self._pending_reads: list[int] = []
        self._retained: list[int] = []  # drained segments a snapshot may still point into

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def fresh(cls, directory: Path, *, segment_bytes: int = SEGMENT_BYTES) -> SpillQueue:
        """An empty queue; segments left by an earlier run are deleted (nothing owes them)."""
        queue = cls(directory, segment_bytes=segment_bytes)
        leftovers = _segments(directory)
        for segment in leftovers:
            (directory / _segment_name(segment)).unlink(missing_ok=True)
        if leftovers:
            log.info("spill.discarded", directory=str(directory), segments=len(leftovers))
        return queue

    @classmethod
    def restore(
        cls,
        directory: Path,
        cursor: SpillCursor,
        skip_message_ids: Collection[str] = (),
        *,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> SpillQueue:
        """Resume at `cursor`: truncate to its write position, read from its read position,
        and drop records whose messageId is in `skip_message_ids` while reading up to it."""
        queue = cls(directory, segment_bytes=segment_bytes)
        read_segment, read_offset = cursor.read_segment, max(cursor.read_offset, _HEADER)
        write_segment, write_offset = cursor.write_segment, cursor.write_offset
        for segment in _segments(directory):
            path = directory / _segment_name(segment)
            if segment < read_segment or segment > write_segment:
                path.unlink()
            elif segment == write_segment:
                if write_offset == 0:
                    path.unlink()
                    continue
                size = path.stat().st_size
                if size < write_offset:
                    log.error(
                        "spill.short",
                        file=str(path),
                        size=size,
                        expected=write_offset,
                        hint="deliveries checkpointed in this segment are lost",
                    )
                    write_offset = size
                os.truncate(path, write_offset)
        write_path = directory / _segment_name(write_segment)
        if write_offset and not write_path.exists():
            log.error(
                "spill.short",
                file=str(write_path),
                size=0,
                expected=write_offset,
                hint="deliveries checkpointed in this segment are lost",
            )
            write_offset = 0
        queue._read_segment, queue._read_offset = read_segment, read_offset
        queue._write_segment, queue._write_offset = write_segment, write_offset
        if write_offset:
            queue._write_fd = os.open(write_path, os.O_RDWR)
        queue.records = cursor.records
        queue._skip = frozenset(skip_message_ids)
        queue._skip_until = (write_segment, write_offset)
        queue._checkpoint_reads.append(read_segment)
        queue._normalise_empty()
        return queue

    # --- the queue -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.records

    @property
    def empty(self) -> bool:
        read, write = self._read_segment, self._write_segment
        return read > write or (
            read == write and self._read_offset >= max(self._write_offset, _HEADER)
        )

    def append(self, delivery: Delivery, born: float) -> None:
        """Raises SpillRefused when the disk will not take it; the queue is then unchanged."""
        body = self._encoder.encode(Spilled(born, delivery))
        record = _RECORD.pack(len(body), zlib.crc32(body)) + body
        if self._write_offset and self._write_offset + len(record) > self.segment_bytes:
            self._rotate()
        try:
            if self._write_fd is None:
                self._create_segment()
            assert self._write_fd is not None
            _pwrite_all(self._write_fd, record, self._write_offset)
        except OSError as exc:
            if self._write_fd is not None:
                try:
                    os.ftruncate(self._write_fd, self._write_offset)
                except OSError:
                    log.exception("spill.truncate_failed", directory=str(self.directory))
            raise SpillRefused(
                f"spill {self.directory}: {exc.strerror or exc}"
                + (" (disk full)" if exc.errno == errno.ENOSPC else "")
            ) from exc
        self._write_offset += len(record)
        self.records += 1

    def read(self, max_items: int) -> list[Spilled]:
        """Up to `max_items` of the oldest records, removed from the queue."""
        out: list[Spilled] = []
        while len(out) < max_items and not self.empty:
            if self._read_segment < self._write_segment:
                end = self._finished_end(self._read_segment)
            else:
                end = self._write_offset
            offset = self._read_offset
            if offset + _RECORD.size > end:
                if offset < end:
                    self._lost(offset, end, "torn record header")
                self._next_segment()
                continue
            length, crc = _RECORD.unpack(self._bytes(offset, offset + _RECORD.size, end))
            stop = offset + _RECORD.size + length
            if stop > end:
                self._lost(offset, end, "torn record")
                self._next_segment()
                continue
            body = self._bytes(offset + _RECORD.size, stop, end)
            if zlib.crc32(body) != crc:
                self._lost(offset, end, "checksum mismatch")
                self._next_segment()
                continue
            try:
                item = self._decoder.decode(body)
            except msgspec.DecodeError as exc:
                self._lost(offset, end, f"undecodable record: {exc}")
                self._next_segment()
                continue
            self._read_offset = stop
            self.records = max(0, self.records - 1)
            if self._skip:
                skipped = item.delivery.message_id in self._skip
                if (self._read_segment, self._read_offset) >= self._skip_until:
                    self._skip = frozenset()  # past what the checkpoint held: nothing to skip
                if skipped:
                    continue
            out.append(item)
        self._normalise_empty()
        return out

    def checkpoint(self) -> SpillCursor:
        """Make everything appended so far durable; the cursor says where the queue stands."""
        if self._write_fd is not None:
            os.fsync(self._write_fd)
        for fd in self._unsynced:
            os.fsync(fd)
            os.close(fd)
        self._unsynced.clear()
        if self._dir_dirty:
            _fsync_dir(self.directory)
            self._dir_dirty = False
        self._pending_reads.append(self._read_segment)
        return SpillCursor(
            read_segment=self._read_segment,
            read_offset=self._read_offset,
            write_segment=self._write_segment,
            write_offset=self._write_offset,
            records=self.records,
        )

    def confirm(self, cursor: SpillCursor) -> None:
        """The snapshot holding `cursor` is on disk: segments before both of the two newest
        confirmed snapshots' read positions can go."""
        self._forget_pending(cursor)
        self._checkpoint_reads.append(cursor.read_segment)
        self._prune()

    def abandon(self, cursor: SpillCursor) -> None:
        """The snapshot holding `cursor` was never written: it protects nothing."""
        self._forget_pending(cursor)
        self._prune()

    def _forget_pending(self, cursor: SpillCursor) -> None:
        if cursor.read_segment in self._pending_reads:
            self._pending_reads.remove(cursor.read_segment)

    def _anchors(self) -> list[int]:
        return [*self._checkpoint_reads, *self._pending_reads]

    def _prune(self) -> None:
        anchors = self._anchors()
        keep_from = min(anchors) if anchors else self._read_segment
        for segment in [s for s in self._retained if s < keep_from]:
            self._retained.remove(segment)
            self._unlink(segment)

    def close(self) -> None:
        """Release file descriptors; no fsync (that is what `checkpoint` is for)."""
        for fd in [*self._unsynced, self._write_fd, self._read_fd]:
            if fd is not None:
                os.close(fd)
        self._unsynced.clear()
        self._write_fd = self._read_fd = None
        self._buffer = memoryview(b"")

    def segment_count(self) -> int:
        return len(_segments(self.directory))

    # --- machinery -------------------------------------------------------------------------

    def _create_segment(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / _segment_name(self._write_segment)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _pwrite_all(fd, _MAGIC, 0)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._write_fd = fd
        self._write_offset = _HEADER
        self._dir_dirty = True

    def _rotate(self) -> None:
        if self._write_fd is not None:
            # The next checkpoint fsyncs it: even the first checkpoint's cursor covers
            # every segment written before it.
            self._unsynced.append(self._write_fd)
        self._write_fd = None
        self._write_segment += 1
        self._write_offset = 0

    def _finished_end(self, segment: int) -> int:
        self._open_read(segment)
        return self._read_end

    def _open_read(self, segment: int) -> bool:
        if self._read_fd is not None and self._read_fd_segment == segment:
            return True
        if self._read_fd is not None:
            os.close(self._read_fd)
            self._read_fd = None
        self._buffer = memoryview(b"")
        try:
            fd = os.open(self.directory / _segment_name(segment), os.O_RDONLY)
        except FileNotFoundError:
            self._read_end = 0
            log.error("spill.segment_missing", directory=str(self.directory), segment=segment)
            return False
        magic = os.pread(fd, _HEADER, 0)
        if magic != _MAGIC:
            os.close(fd)
            self._read_end = 0
            log.error(
                "spill.unknown_format",
                file=str(self.directory / _segment_name(segment)),
                found=magic.hex(),
            )
            return False
        self._read_fd, self._read_fd_segment = fd, segment
        self._read_end = os.fstat(fd).st_size
        return True

    def _bytes(self, start: int, stop: int, end: int) -> memoryview:
        """File bytes [start, stop) of the read segment, through a read-ahead buffer."""
        buffer_stop = self._buffer_start + len(self._buffer)
        if (
            self._read_fd is None
            or self._read_fd_segment != self._read_segment
            or start < self._buffer_start
            or stop > buffer_stop
        ):
            if not self._open_read(self._read_segment):
                return memoryview(b"")
            assert self._read_fd is not None
            want = max(stop - start, min(_READ_CHUNK, end - start))
            self._buffer = memoryview(os.pread(self._read_fd, want, start))
            self._buffer_start = start
        return self._buffer[start - self._buffer_start : stop - self._buffer_start]

    def _next_segment(self) -> None:
        """Leave the read segment (drained or unreadable) for the next one."""
        drained = self._read_segment
        if drained >= self._write_segment:
            self._read_offset = max(self._write_offset, _HEADER)  # nothing more to read here
            return
        if self._read_fd is not None and self._read_fd_segment == drained:
            os.close(self._read_fd)
            self._read_fd = None
            self._buffer = memoryview(b"")
        self._read_segment += 1
        self._read_offset = _HEADER
        anchors = self._anchors()
        if anchors and drained >= min(anchors):
            self._retained.append(drained)
        else:
            self._unlink(drained)

    def _unlink(self, segment: int) -> None:
        (self.directory / _segment_name(segment)).unlink(missing_ok=True)

    def _lost(self, offset: int, end: int, reason: str) -> None:
        log.error(
            "spill.corrupt",
            file=str(self.directory / _segment_name(self._read_segment)),
            offset=offset,
            skipped_bytes=end - offset,
            reason=reason,
            hint="deliveries in the skipped bytes are lost; the rest of the queue is read",
        )

    def _normalise_empty(self) -> None:
        # The write segment is kept even when drained: appends go on in it, and it is
        # deleted like any other once it is full and read.
        if self.empty:
            self.records = 0
            self._skip = frozenset()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
