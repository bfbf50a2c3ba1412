"""Snapshot files: the engine's state, the de-dup window and the outbox at one WAL seq.

A snapshot is a directory `snapshots/{seq:020d}/` holding one file per shard (users split
by a stable hash of the user id, so a shard can later move to another machine) and
`meta.bin`, written last. It is built under a temporary name, every file fsynced, then
renamed into place and the parent directory fsynced: a crash leaves either the old
snapshot or the new one, never half of one. Every file carries a format version and a
crc32 of its body.

The daemon writes snapshots from a forked child: the fork freezes a consistent copy of
memory (copy-on-write) in a few milliseconds, and the child encodes and writes it while
the parent keeps ingesting. `write_snapshot` itself is plain synchronous code.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgspec

from journeyd.dedup import DedupWindow
from journeyd.delivery.spill import SpillCursor
from journeyd.engine import Delivery, Engine
from journeyd.engine.ids import SHARDS, shard_of
from journeyd.engine.snapshot import EngineMeta, dump_users, meta_of, restore
from journeyd.engine.state import UserState
from journeyd.errors import CorruptRecord, UnknownFormat
from journeyd.store.outbox import Outbox

FORMAT_VERSION = 2  # 2: users as {user: UserState}, instances decoded in place
_MAGIC = b"JDSNAP\r\n"
_HEADER = struct.Struct("<8sHHIQ")  # magic, version, shard (0xFFFF = meta), crc32, length
META_SHARD = 0xFFFF


class SnapshotMeta(msgspec.Struct, kw_only=True):
    seq: int  # the last WAL record this snapshot covers
    created_at: float
    engine: EngineMeta
    dedup: list[tuple[bytes, float]]
    outbox: list[Delivery]
    shards: int
    instances: int
    users: int
    # Where each destination's spill queue stood (deliveries waiting on disk, not in the
    # outbox): recovery truncates the spill to these and replays the WAL after.
    spill: dict[str, SpillCursor] = {}


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    path: Path
    seq: int
    bytes: int
    instances: int
    users: int
    seconds: float


@dataclass(slots=True)
class Loaded:
    seq: int
    path: Path
    engine: Engine
    dedup_entries: list[tuple[bytes, float]]
    outbox: Outbox
    created_at: float
    spill: dict[str, SpillCursor]


_encode = msgspec.msgpack.Encoder().encode
_decode_meta = msgspec.msgpack.Decoder(SnapshotMeta).decode


def write_snapshot(
    directory: Path,
    seq: int,
    engine: Engine,
    dedup: DedupWindow,
    outbox: Outbox,
    spill: dict[str, SpillCursor] | None = None,
) -> SnapshotInfo:
    """Write the state as of WAL seq `seq` and return where it went (synchronous)."""
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{seq:020d}"
    temp = directory / f".tmp-{seq:020d}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    meta, index_of = meta_of(engine)
    buckets: list[list[tuple[str, UserState]]] = [[] for _ in range(SHARDS)]
    instances = 0
    for user, state in engine.users.items():
        buckets[shard_of(user)].append((user, state))
        instances += len(state.instances)
    total = 0
    for shard, members in enumerate(buckets):
        body = dump_users(members, index_of)
        total += _write_file(temp / f"shard-{shard:02d}.bin", shard, body)
        members.clear()
    snapshot_meta = SnapshotMeta(
        seq=seq,
        created_at=time.time(),
        engine=meta,
        dedup=dedup.export(),
        outbox=outbox.pending(),
        shards=SHARDS,
        instances=instances,
        users=len(engine.users),
        spill=spill or {},
    )
    total += _write_file(temp / "meta.bin", META_SHARD, _encode(snapshot_meta))
    _fsync_dir(temp)
    if final.exists():  # the same seq twice (a snapshot at shutdown with no new records)
        shutil.rmtree(final)
    os.rename(temp, final)
    _fsync_dir(directory)
    return SnapshotInfo(final, seq, total, instances, len(engine.users), time.monotonic() - started)


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """Complete snapshots (final names only), newest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        if path.is_dir() and path.name.isdigit() and (path / "meta.bin").exists():
            found.append((int(path.name), path))
    return sorted(found, reverse=True)


def read_meta(path: Path) -> SnapshotMeta:
    body = _read_file(path / "meta.bin", META_SHARD)
    try:
        return _decode_meta(body)
    except msgspec.DecodeError as exc:
        raise CorruptRecord(path / "meta.bin", 0, f"undecodable snapshot meta: {exc}") from None


def load_snapshot(path: Path) -> Loaded:
    """Read one snapshot; CorruptRecord/UnknownFormat if any file of it is damaged."""
    meta = read_meta(path)
    blobs = [_read_file(path / f"shard-{shard:02d}.bin", shard) for shard in range(meta.shards)]
    try:
        engine = restore(meta.engine, blobs)
    except (msgspec.DecodeError, ValueError) as exc:
        raise CorruptRecord(path, 0, f"undecodable snapshot: {exc}") from None
    return Loaded(
        meta.seq, path, engine, meta.dedup, Outbox(meta.outbox), meta.created_at, meta.spill
    )


def prune_snapshots(directory: Path, keep: int = 2) -> list[Path]:
    """Delete all but the newest `keep` complete snapshots, and stale temporary ones."""
    removed = []
    for _, path in list_snapshots(directory)[keep:]:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if directory.is_dir():
        for path in directory.glob(".tmp-*"):
            pid = path.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _write_file(path: Path, shard: int, body: bytes) -> int:
    header = _HEADER.pack(_MAGIC, FORMAT_VERSION, shard, zlib.crc32(body), len(body))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(header + body)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    return _HEADER.size + len(body)


def _read_file(path: Path, shard: int) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptRecord(path, 0, "missing snapshot file") from None
    if len(data) < _HEADER.size:
        raise CorruptRecord(path, 0, "shorter than a snapshot header")
    magic, version, found_shard, crc, length = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise UnknownFormat(f"{path}: not a journeyd snapshot file (bad magic)")
    if version != FORMAT_VERSION:
        raise UnknownFormat(
            f"{path}: snapshot format version {version}; this journeyd reads {FORMAT_VERSION}"
        )
    body = data[_HEADER.size :]
    if found_shard != shard or length != len(body) or zlib.crc32(body) != crc:
        raise CorruptRecord(path, _HEADER.size, "snapshot body fails its length or checksum")
    return body


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
