"""The write-ahead log: segmented, append-only files of checksummed, sequence-numbered frames.

On disk, in one directory (the daemon uses `state_dir / "wal"`):

    {first_seq:020d}.wal      segment: header, then frames
    header   8s magic b"JDWAL\\r\\n\\x1a" | u16 version (1) | u16 reserved | u64 first_seq
    frame    u32 payload length | u32 crc32(seq bytes + payload) | u64 seq | payload

All integers little-endian. The payload is one msgpack record (`journeyd.store.records`).
Sequence numbers rise by exactly one from frame to frame, across segments too.

Reading distinguishes a **torn tail** (a crash in the middle of the last write: it is cut
off, never treated as data) from **corruption** (anything else that fails a check: an
error naming the file and byte offset; nothing is skipped). Only the last segment can have
a torn tail: its final bytes are shorter than a frame header, a frame runs past the end of
the file, the final frame ends exactly at the end of the file but fails its checksum, or
everything from a failing frame to the end of the file is zero bytes (what a filesystem
shows for space it allocated but never wrote).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import msgspec

from journeyd.errors import (
    BadInput,
    CorruptRecord,
    DurabilityLost,
    StorageError,
    StorageFull,
    UnknownFormat,
)
from journeyd.store.records import Record, decode_record, encoder

MAGIC: Final = b"JDWAL\r\n\x1a"
FORMAT_VERSION: Final = 1
MAX_RECORD_BYTES: Final = 64 << 20
"""A frame declaring a longer payload is corrupt; `append` refuses to write one."""

_HEADER: Final = struct.Struct("<8sHHQ")
_FRAME: Final = struct.Struct("<IIQ")
_SEQ: Final = struct.Struct("<Q")
HEADER_BYTES: Final = _HEADER.size
FRAME_HEADER_BYTES: Final = _FRAME.size
_NAME: Final = re.compile(r"(\d{20})\.wal")
_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _segment_path(directory: Path, first_seq: int) -> Path:
    return directory / f"{first_seq:020d}.wal"


def _write_failed(what: str, exc: OSError) -> StorageError:
    """An OSError from a write, as StorageFull (space, quota, size limit) or StorageError."""
    if exc.errno in _FULL:
        return StorageFull(f"{what}: {exc.strerror or exc}")
    return StorageError(f"{what}: {exc}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StorageError(f"{directory}: cannot open the directory to fsync it: {exc}") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise DurabilityLost(f"{directory}: fsync of the directory failed: {exc}") from exc
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    """One os.write loop: regular files may take fewer bytes than asked (signals, limits)."""
    view = memoryview(data)
    done = 0
    total = len(data)
    while done < total:
        written = os.write(fd, view[done:])
        if written <= 0:
            raise OSError(errno.ENOSPC, "write stored no bytes")
        done += written


# --- reading ----------------------------------------------------------------------------------


def segments(directory: Path) -> list[tuple[int, Path]]:
    """(first_seq, path) of every segment file in `directory`, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"{directory}: cannot list the WAL directory: {exc}") from exc
    found = []
    for name in names:
        match = _NAME.fullmatch(name)
        if match is not None:
            found.append((int(match.group(1)), directory / name))
    found.sort()
    return found


class _Segment:
    """One segment file read into memory, and how far its frames check out."""

    __slots__ = ("data", "end", "first_seq", "is_last", "last_seq", "path", "records", "torn")

    def __init__(self, path: Path, first_seq: int, is_last: bool) -> None:
        self.path = path
        self.first_seq = first_seq
        self.is_last = is_last
        self.last_seq = first_seq - 1  # seq of the last good frame so far
        self.records = 0
        self.end = HEADER_BYTES  # offset where the good data ends so far
        self.torn = False
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"{path}: cannot read WAL segment: {exc}") from exc
        self._check_header()

    def _check_header(self) -> None:
        data, path = self.data, self.path
        expected = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, self.first_seq)
        if len(data) < HEADER_BYTES:
            # A crash while the segment was being created leaves a prefix of its header.
            if self.is_last and (expected.startswith(data) or data.count(0) == len(data)):
                self.torn = True
                self.end = 0
                return
            raise CorruptRecord(path, 0, f"{len(data)} bytes, shorter than a segment header")
        magic, version, _reserved, first_seq = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise UnknownFormat(f"{path}: not a journeyd WAL segment (bad magic)", path)
        if version != FORMAT_VERSION:
            raise UnknownFormat(
                f"{path}: WAL format version {version}; this journeyd reads version "
                f"{FORMAT_VERSION}",
                path,
            )
        if first_seq != self.first_seq:
            raise CorruptRecord(path, 12, f"header first_seq {first_seq} does not match the name")

    def frames(self) -> Iterator[tuple[int, int, int]]:
        """(seq, payload start, payload end) of every good frame; raises on corruption.

        Stops quietly at a torn tail (setting `torn`); `end`, `last_seq` and `records`
        describe the good data seen so far, also when the caller stops early.
        """
        if self.torn:
            return
        data, path = self.data, self.path
        size = len(data)
        view = memoryview(data)
        unpack = _FRAME.unpack_from
        crc32 = zlib.crc32
        expected = self.first_seq
        offset = HEADER_BYTES
        while offset < size:
            if size - offset < FRAME_HEADER_BYTES:
                if self.is_last:
                    break
                raise CorruptRecord(path, offset, f"{size - offset} stray bytes after the frames")
            length, crc, seq = unpack(data, offset)
            end = offset + FRAME_HEADER_BYTES + length
            if length > MAX_RECORD_BYTES:
                if self.is_last and self._zeros_from(offset):
                    break
                raise CorruptRecord(path, offset, f"frame length {length} exceeds the maximum")
            if end > size:
                if self.is_last:
                    break
                raise CorruptRecord(
                    path, offset, f"frame length {length} runs past the end of the file"
                )
            if crc32(view[offset + 8 : end]) != crc:
                if self.is_last and (end == size or self._zeros_from(offset)):
                    break
                raise CorruptRecord(path, offset, f"checksum mismatch (frame says seq {seq})")
            if seq != expected:
                raise CorruptRecord(path, offset, f"seq {seq} where {expected} was expected")
            self.last_seq = seq
            self.records += 1
            self.end = end
            yield seq, offset + FRAME_HEADER_BYTES, end
            offset = end
            expected += 1
        self.torn = offset < size

    def _zeros_from(self, offset: int) -> bool:
        return self.data.count(0, offset) == len(self.data) - offset

    def scan(self) -> _Segment:
        """Check every frame without decoding; returns self."""
        for _ in self.frames():
            pass
        return self


def _walk(directory: Path, after_seq: int) -> Iterator[tuple[_Segment, int, int, int]]:
    """Every good frame with seq > after_seq, checking continuity between segments."""
    found = segments(directory)
    if not found:
        return
    start = 0
    for index, (first_seq, _path) in enumerate(found):
        if first_seq <= after_seq + 1:
            start = index
    if found[start][0] > after_seq + 1:
        first_seq, path = found[start]
        raise CorruptRecord(
            path, 0, f"records {after_seq + 1}..{first_seq - 1} are missing: the WAL starts here"
        )
    expected: int | None = None
    last = len(found) - 1
    for index in range(start, len(found)):
        first_seq, path = found[index]
        if expected is not None and first_seq != expected:
            raise CorruptRecord(
                path, 0, f"segment starts at seq {first_seq}; the one before ends at {expected - 1}"
            )
        segment = _Segment(path, first_seq, index == last)
        for seq, start_at, end in segment.frames():
            if seq > after_seq:
                yield segment, seq, start_at, end
        expected = segment.last_seq + 1


def read_wal(directory: Path, after_seq: int = 0) -> Iterator[tuple[int, Record]]:
    """Every record with seq > after_seq, in order; stops quietly at a torn tail.

    Raises CorruptRecord (naming file and offset) or UnknownFormat when it meets damage;
    the records before it have been yielded by then. Records after_seq+1 onwards must be
    present: a WAL that starts later is CorruptRecord too.
    """
    current: _Segment | None = None
    view = memoryview(b"")
    for segment, seq, start, end in _walk(directory, after_seq):
        if segment is not current:
            current = segment
            view = memoryview(segment.data)
        try:
            record = decode_record(view[start:end])
        except msgspec.DecodeError as exc:
            raise CorruptRecord(
                segment.path, start - FRAME_HEADER_BYTES, f"undecodable record {seq}: {exc}"
            ) from None
        yield seq, record


def find_torn_tail(directory: Path) -> tuple[Path, int] | None:
    """(file, offset where its good data ends) if the last segment has a torn tail, else None.

    A last segment shorter than its header gives offset 0. Corruption raises instead.
    """
    found = segments(directory)
    if not found:
        return None
    first_seq, path = found[-1]
    segment = _Segment(path, first_seq, is_last=True).scan()
    return (path, segment.end) if segment.torn else None


def truncate_torn_tail(directory: Path) -> tuple[Path, int] | None:
    """Cut a torn tail off (deleting a last segment shorter than its header) and fsync.

    Returns what `find_torn_tail` found, for the log line; None if there was nothing to cut.
    """
    torn = find_torn_tail(directory)
    if torn is None:
        return None
    path, offset = torn
    if offset == 0:
        _unlink(path)
        _fsync_dir(directory)
    else:
        _truncate(path, offset)
    return torn


def last_seq(directory: Path) -> int:
    """The seq of the last good record, 0 for an empty directory.

    A last segment without records stands for the records before its first_seq (they may
    have been pruned): the answer is then its first_seq - 1, so numbering continues.
    """
    found = segments(directory)
    if not found:
        return 0
    first_seq, path = found[-1]
    return _Segment(path, first_seq, is_last=True).scan().last_seq


def wal_stats(directory: Path) -> dict[str, int]:
    """What is on disk, for `journeyd inspect`: segments, bytes, records, first/last seq.

    Also `torn_bytes`: bytes past the good data of the last segment. Reads and checks every
    frame (without decoding); damage raises as in `read_wal`.
    """
    found = segments(directory)
    total = 0
    for _first, path in found:
        try:
            total += path.stat().st_size
        except OSError as exc:
            raise StorageError(f"{path}: cannot stat WAL segment: {exc}") from exc
    records = first = last = 0
    tail: _Segment | None = None
    for segment, seq, _start, _end in _walk(directory, found[0][0] - 1 if found else 0):
        records += 1
        first = first or seq
        last = seq
        tail = segment
    torn_bytes = 0
    if found:
        if tail is None or not tail.is_last:
            first_seq, path = found[-1]
            tail = _Segment(path, first_seq, is_last=True).scan()
        torn_bytes = len(tail.data) - tail.end if tail.torn else 0
    return {
        "segments": len(found),
        "bytes": total,
        "records": records,
        "first_seq": first,
        "last_seq": last,
        "torn_bytes": torn_bytes,
    }


# --- maintenance ------------------------------------------------------------------------------


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        raise StorageError(f"{path}: cannot delete WAL segment: {exc}") from exc


def _truncate(path: Path, size: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise StorageError(f"{path}: cannot open WAL segment to truncate it: {exc}") from exc
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as exc:
        raise DurabilityLost(f"{path}: truncating to {size} bytes failed: {exc}") from exc
    finally:
        os.close(fd)


def _count_intact(data: bytes, offset: int) -> int:
    """Frames from `offset` that pass their checksum, walking the length fields until one
    is implausible (too long, or past the end of the file)."""
    count = 0
    size = len(data)
    while size - offset >= FRAME_HEADER_BYTES:
        length, crc, _seq = _FRAME.unpack_from(data, offset)
        end = offset + FRAME_HEADER_BYTES + length
        if length > MAX_RECORD_BYTES or end > size:
            break
        count += zlib.crc32(data[offset + 8 : end]) == crc
        offset = end
    return count


def prune(directory: Path, below_seq: int) -> list[Path]:
    """Delete whole segments whose records all have seq < below_seq, never the last one.

    After a snapshot covering seq N, `prune(directory, N + 1)`. Deletes oldest first, so a
    crash part-way leaves a contiguous log.
    """
    found = segments(directory)
    deleted = []
    for (_first, path), (next_first, _next) in itertools.pairwise(found):
        if next_first > below_seq:
            break
        _unlink(path)
        deleted.append(path)
    if deleted:
        _fsync_dir(directory)
    return deleted


def truncate_after(directory: Path, seq: int) -> int:
    """Drop every record with seq > `seq` (the operator's escape hatch past corruption).

    Later segments are deleted (newest first) and the one holding `seq` is cut after it;
    bytes past it need not be readable. Returns how many records were dropped: the frames
    that pass their checksum (a frame whose length field is damaged hides the rest of its
    segment from the count). Raises CorruptRecord, changing nothing, if damage comes at or
    before `seq` in the segment that holds it.
    """
    found = segments(directory)
    kept = [(first, path) for first, path in found if first <= seq]
    cut: tuple[Path, int, bytes] | None = None
    if kept:  # check the segment that holds `seq` before changing anything
        first_seq, path = kept[-1]
        segment = _Segment(path, first_seq, is_last=True)
        for frame_seq, _start, _end in segment.frames():
            if frame_seq == seq:
                break
        cut = (path, segment.end, segment.data)
    dropped = 0
    for _first, path in reversed(found[len(kept) :]):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"{path}: cannot read WAL segment: {exc}") from exc
        dropped += _count_intact(data, HEADER_BYTES)
        _unlink(path)
    if cut is not None:
        path, end, data = cut
        if end == 0:  # shorter than its header: holds nothing
            _unlink(path)
        elif end < len(data):
            dropped += _count_intact(data, end)
            _truncate(path, end)
    if len(kept) < len(found) or (cut is not None and cut[1] == 0):
        _fsync_dir(directory)
    return dropped


# --- writing ----------------------------------------------------------------------------------


def _create_segment(directory: Path, first_seq: int) -> tuple[Path, int]:
    """A new segment file with its header written and fsynced (the caller fsyncs the dir)."""
    path = _segment_path(directory, first_seq)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise _write_failed(f"{path}: cannot create WAL segment", exc) from exc
    try:
        _write_all(fd, _HEADER.pack(MAGIC, FORMAT_VERSION, 0, first_seq))
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise _write_failed(f"{path}: cannot write the segment header", exc) from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        raise DurabilityLost(f"{path}: fsync of a new segment failed: {exc}") from exc
    return path, fd


class WalWriter:
    """Appends records to the newest segment; `sync` makes them durable.

    One thread appends (the trio thread); `sync` may run concurrently in a worker thread
    (`trio.to_thread.run_sync(writer.sync)`). Every segment before the current one has been
    fsynced, so fsyncing the current one covers everything written.
    """

    def __init__(
        self, directory: Path, path: Path, fd: int, next_seq: int, segment_bytes: int
    ) -> None:
        """Use `WalWriter.open`."""
        self._directory = directory
        self._path = path
        self._fd = fd
        self._offset = HEADER_BYTES
        self._segment_bytes = segment_bytes
        self._written_seq = next_seq - 1
        self._synced_seq = next_seq - 1
        self._lock = threading.Lock()
        self._busy: dict[int, int] = {}  # fd -> syncs in flight on it
        self._retired: set[int] = set()  # replaced fds to close once their syncs finish
        self._failed: StorageError | None = None
        self._closed = False
        self._encode = encoder().encode

    @classmethod
    def open(cls, directory: Path, next_seq: int, *, segment_bytes: int = 64 << 20) -> WalWriter:
        """Start a new segment whose first record will be `next_seq`.

        The WAL must end cleanly (`truncate_torn_tail` first) and below `next_seq`. A last
        segment holding no records is replaced. `next_seq` may skip ahead of the last
        record (e.g. a snapshot covers more than the WAL kept); reading across that gap
        from before it is then CorruptRecord.
        """
        if next_seq < 1:
            raise ValueError(f"next_seq must be at least 1, not {next_seq}")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _write_failed(f"{directory}: cannot create the WAL directory", exc) from exc
        found = segments(directory)
        if found:
            first_seq, path = found[-1]
            tail = _Segment(path, first_seq, is_last=True).scan()
            if tail.torn:
                raise StorageError(
                    f"{path}: torn tail at byte offset {tail.end}; truncate it before writing"
                )
            if next_seq <= tail.last_seq:
                raise StorageError(
                    f"{directory}: the WAL already holds seq {tail.last_seq}; "
                    f"cannot start again at {next_seq}"
                )
            if tail.records == 0:
                _unlink(path)
        path, fd = _create_segment(directory, next_seq)
        try:
            _fsync_dir(directory)
        except StorageError:
            os.close(fd)
            raise
        return cls(directory, path, fd, next_seq, segment_bytes)

    @property
    def written_seq(self) -> int:
        """The last seq appended (0 before the first record ever)."""
        return self._written_seq

    @property
    def synced_seq(self) -> int:
        """The last seq known to be on disk."""
        return self._synced_seq

    @property
    def path(self) -> Path:
        """The segment being appended to."""
        return self._path

    def append(self, records: Sequence[Record]) -> int:
        """Write `records` as consecutive seqs in one write; return the last seq.

        All or nothing: on failure nothing of this batch stays in the file, no seq is used,
        and the writer can be used again. Raises StorageFull (no space, quota, file size
        limit), StorageError (other write failures), BadInput (a record msgpack cannot
        hold, e.g. an integer beyond 64 bits; nothing written), DurabilityLost (an fsync
        failed, now or earlier: the writer is unusable).
        """
        self._check_usable()
        if not records:
            return self._written_seq
        if self._offset >= self._segment_bytes and self._offset > HEADER_BYTES:
            self._rotate()
        buf = bytearray()
        encode = self._encode
        pack_frame = _FRAME.pack
        pack_seq = _SEQ.pack
        crc32 = zlib.crc32
        seq = self._written_seq
        for index, record in enumerate(records):
            try:
                payload = encode(record)
            except (TypeError, OverflowError, msgspec.EncodeError) as exc:
                raise BadInput(f"record {index} of the batch cannot be stored: {exc}") from None
            length = len(payload)
            if length > MAX_RECORD_BYTES:
                raise BadInput(f"record {index} of the batch is {length} bytes, over the limit")
            seq += 1
            buf += pack_frame(length, crc32(payload, crc32(pack_seq(seq))), seq)
            buf += payload
        offset = self._offset
        try:
            _write_all(self._fd, buf)
        except OSError as exc:
            self._undo(offset)
            raise _write_failed(f"{self._path}: cannot append to the WAL", exc) from exc
        except BaseException:
            self._undo(offset)
            raise
        self._offset = offset + len(buf)
        with self._lock:
            self._written_seq = seq
        return seq

    def _undo(self, offset: int) -> None:
        """Cut a failed append off; if that fails too, no later append may follow it."""
        try:
            os.ftruncate(self._fd, offset)
            os.lseek(self._fd, offset, os.SEEK_SET)
        except OSError as exc:
            self._failed = StorageError(
                f"{self._path}: cannot remove a partial append at byte offset {offset}: {exc}"
            )

    def _rotate(self) -> None:
        """fsync and retire the full segment; start the next one (fsyncing the directory)."""
        old = self._fd
        try:
            os.fsync(old)
        except OSError as exc:
            self._failed = DurabilityLost(f"{self._path}: fsync failed: {exc}")
            raise self._failed from exc
        with self._lock:
            self._synced_seq = max(self._synced_seq, self._written_seq)
        try:
            path, fd = _create_segment(self._directory, self._written_seq + 1)
        except DurabilityLost as exc:
            self._failed = exc
            raise
        try:
            _fsync_dir(self._directory)
        except StorageError as exc:
            os.close(fd)
            if isinstance(exc, DurabilityLost):
                self._failed = exc
            else:  # let the next append try again from scratch
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        with self._lock:
            self._fd, self._path, self._offset = fd, path, HEADER_BYTES
            self._release(old)

    def _release(self, fd: int) -> None:
        """Close a replaced fd now, or when the syncs running on it finish (lock held)."""
        if self._busy.get(fd):
            self._retired.add(fd)
        else:
            os.close(fd)

    def sync(self) -> int:
        """fsync what has been written; return the seq that is now durable. Blocking.

        Covers the last seq written when it started. An fsync failure raises DurabilityLost
        and the writer stays failed: after a failed fsync the page cache cannot be trusted,
        so the only safe answer is to stop (fail-stop) and recover from disk.
        """
        with self._lock:
            self._check_usable()
            fd, path, seq = self._fd, self._path, self._written_seq
            if seq <= self._synced_seq:
                return self._synced_seq
            self._busy[fd] = self._busy.get(fd, 0) + 1
        try:
            os.fsync(fd)
        except OSError as exc:
            self._failed = DurabilityLost(f"{path}: fsync failed: {exc}")
            raise self._failed from exc
        finally:
            with self._lock:
                left = self._busy.pop(fd) - 1
                if left:
                    self._busy[fd] = left
                elif fd in self._retired:
                    self._retired.discard(fd)
                    os.close(fd)
        with self._lock:
            self._synced_seq = max(self._synced_seq, seq)
        return seq

    def close(self) -> None:
        """sync (unless an fsync already failed) and close; a second call does nothing."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self.sync()
        finally:
            with self._lock:
                self._closed = True
                self._release(self._fd)

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError(f"{self._directory}: the WAL writer is closed")
        if self._failed is not None:
            raise type(self._failed)(
                f"the WAL writer stopped after an earlier failure: {self._failed}"
            )
