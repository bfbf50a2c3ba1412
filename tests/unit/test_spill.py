"""The on-disk spill queue: FIFO across segments, damage handling, checkpoint and restore."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from journeyd.delivery.spill import (
    SpillCursor,
    SpillQueue,
    SpillRefused,
    spill_directory,
)
from journeyd.engine import Delivery

T0 = 1_772_356_500.0
SMALL = 1024  # bytes per segment: a handful of records each


def delivery(n: int) -> Delivery:
    message_id = f"00000000-0000-0000-0000-{n:012d}"
    return Delivery(
        at=T0 + n,
        user=f"u{n}",
        journey="j",
        instance="i",
        step="s",
        destination="crm",
        message_id=message_id,
        payload={"messageId": message_id, "n": n, "pad": "x" * 100},
    )


def fill(queue: SpillQueue, numbers: range) -> None:
    for n in numbers:
        queue.append(delivery(n), T0 + n)


def drain(queue: SpillQueue, chunk: int = 7) -> list[int]:
    out: list[int] = []
    while not queue.empty:
        got = queue.read(chunk)
        out.extend(record.delivery.payload["n"] for record in got)
        if not got:
            break
    return out


def segment_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.spill"))


def test_fifo_across_segments_with_born_kept(tmp_path: Path) -> None:
    """Records come back in append order across many segments, with their `born` time."""
    queue = SpillQueue.fresh(tmp_path / "q", segment_bytes=SMALL)
    fill(queue, range(50))
    assert len(queue) == 50
    assert len(segment_files(tmp_path / "q")) > 5
    first = queue.read(3)
    assert [(r.delivery, r.born) for r in first] == [(delivery(n), T0 + n) for n in range(3)]
    fill(queue, range(50, 60))  # appends while reading
    assert drain(queue) == list(range(3, 60))
    assert queue.empty
    assert len(queue) == 0


def test_drained_segments_are_deleted_when_nobody_checkpoints(tmp_path: Path) -> None:
    """Without checkpoints a segment is deleted as soon as it has been read."""
    queue = SpillQueue.fresh(tmp_path / "q", segment_bytes=SMALL)
    fill(queue, range(50))
    before = len(segment_files(tmp_path / "q"))
    drain(queue)
    assert before > 5
    assert len(segment_files(tmp_path / "q")) == 1  # the write segment stays for appends


def test_drained_segments_stay_until_two_checkpoints_passed_them(tmp_path: Path) -> None:
    """A snapshot may resume at its checkpoint's read position, so segments at or after the
    older of the last two confirmed checkpoints' read positions are kept; the rest go."""
    directory = tmp_path / "q"
    queue = SpillQueue.fresh(directory, segment_bytes=SMALL)
    fill(queue, range(50))
    queue.confirm(queue.checkpoint())  # read position: segment 1
    drain(queue)
    assert len(segment_files(directory)) > 5  # all kept: checkpoint 1 points at segment 1
    queue.confirm(queue.checkpoint())  # read position: the last segment; 1 still counts
    assert len(segment_files(directory)) > 5
    queue.confirm(queue.checkpoint())  # both remembered checkpoints: the last segment
    assert len(segment_files(directory)) == 1


def test_a_snapshot_being_written_protects_its_segments_until_it_fails(tmp_path: Path) -> None:
    """While a snapshot is being written, the segments its cursor points into are kept, even
    once drained; if that snapshot fails, they stop counting, and a confirmed one decides."""
    directory = tmp_path / "q"
    queue = SpillQueue.fresh(directory, segment_bytes=SMALL)
    fill(queue, range(50))
    pending = queue.checkpoint()  # a snapshot child starts writing
    drain(queue)
    assert len(segment_files(directory)) > 5  # kept for the pending snapshot
    queue.abandon(pending)  # the child failed
    queue.confirm(queue.checkpoint())
    assert len(segment_files(directory)) == 1


def test_segments_rotated_before_the_first_checkpoint_are_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first checkpoint's cursor covers every segment written so far, so it fsyncs
    them all, not only the one being written."""
    directory = tmp_path / "q"
    queue = SpillQueue.fresh(directory, segment_bytes=SMALL)
    fill(queue, range(50))
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    queue.checkpoint()
    segments = len(segment_files(directory))
    assert segments > 5
    assert len(synced) >= segments  # every segment (plus the directory)


def test_fresh_discards_what_an_earlier_run_left(tmp_path: Path) -> None:
    """Without restore the outbox owes everything, so leftover segments are deleted."""
    queue = SpillQueue.fresh(tmp_path / "q", segment_bytes=SMALL)
    fill(queue, range(20))
    queue.close()
    again = SpillQueue.fresh(tmp_path / "q", segment_bytes=SMALL)
    assert again.empty
    assert segment_files(tmp_path / "q") == []


def test_restore_truncates_to_the_checkpointed_write_position(tmp_path: Path) -> None:
    """Records appended after the checkpoint are cut off (the WAL re-submits them); records
    read after the checkpoint are read again."""
    queue2 = SpillQueue.fresh(tmp_path / "r", segment_bytes=SMALL)
    fill(queue2, range(30))
    queue2.read(4)
    cursor = queue2.checkpoint()
    assert cursor.records == 26
    queue2.read(10)  # read after the checkpoint: must come back
    fill(queue2, range(30, 45))  # spilled after the checkpoint: must not come back
    queue2.close()
    restored = SpillQueue.restore(tmp_path / "r", cursor, segment_bytes=SMALL)
    assert len(restored) == 26
    assert drain(restored) == list(range(4, 30))
    fill(restored, range(100, 103))  # appends continue after the truncation point
    assert drain(restored) == [100, 101, 102]


def test_restore_skips_message_ids_up_to_the_checkpointed_write_position(
    tmp_path: Path,
) -> None:
    """Deliveries with an outcome after the checkpoint are skipped; the skip list only
    covers what the checkpoint held, so a later re-spill of the same id is delivered."""
    queue = SpillQueue.fresh(tmp_path / "q", segment_bytes=SMALL)
    fill(queue, range(20))
    cursor = queue.checkpoint()
    queue.close()
    skip = {delivery(n).message_id for n in (0, 5, 19)}
    restored = SpillQueue.restore(tmp_path / "q", cursor, skip, segment_bytes=SMALL)
    assert drain(restored) == [n for n in range(20) if n not in (0, 5, 19)]
    restored.append(delivery(5), T0)
    assert drain(restored) == [5]


def test_restore_of_an_empty_checkpoint_deletes_everything_written_since(
    tmp_path: Path,
) -> None:
    """A checkpoint taken before anything spilled restores to an empty queue."""
    queue = SpillQueue.fresh(tmp_path / "q", segment_bytes=SMALL)
    cursor = queue.checkpoint()
    assert cursor == SpillCursor(
        read_segment=1, read_offset=8, write_segment=1, write_offset=0, records=0
    )
    fill(queue, range(30))
    queue.close()
    restored = SpillQueue.restore(tmp_path / "q", cursor, segment_bytes=SMALL)
    assert restored.empty
    assert segment_files(tmp_path / "q") == []


def test_checksum_mismatch_skips_the_rest_of_that_segment_only(tmp_path: Path) -> None:
    """A damaged record cannot be trusted to say where the next starts: the rest of its
    segment is skipped (and logged), later segments are read."""
    directory = tmp_path / "q"
    queue = SpillQueue.fresh(directory, segment_bytes=SMALL)
    fill(queue, range(30))
    files = [directory / name for name in segment_files(directory)]
    record_bytes = sum(f.stat().st_size - 8 for f in files) // 30  # all records equal-sized
    in_first = (files[0].stat().st_size - 8) // record_bytes
    data = bytearray(files[0].read_bytes())
    data[8 + record_bytes + 40] ^= 0xFF  # inside the second record's body
    files[0].write_bytes(bytes(data))
    assert drain(queue) == [0, *range(in_first, 30)]
    assert len(queue) == 0


def test_torn_tail_is_never_read_as_data(tmp_path: Path) -> None:
    """A write segment shorter than the checkpoint says (lost in a crash) is clamped: its
    whole records are read, the torn one is not, and nothing after it is invented."""
    directory = tmp_path / "q"
    queue = SpillQueue.fresh(directory, segment_bytes=1 << 20)
    fill(queue, range(10))
    cursor = queue.checkpoint()
    queue.close()
    [only] = segment_files(directory)
    path = directory / only
    size = path.stat().st_size
    os.truncate(path, size - 30)  # the last record loses its end
    restored = SpillQueue.restore(directory, cursor, segment_bytes=1 << 20)
    assert drain(restored) == list(range(9))
    restored.append(delivery(42), T0)
    assert drain(restored) == [42]


def test_full_disk_refuses_cleanly_and_the_queue_stays_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC mid-record: SpillRefused, the partial bytes are cut off, nothing is lost of what
    was there, and appends work again once the disk has room."""
    queue = SpillQueue.fresh(tmp_path / "q", segment_bytes=1 << 20)
    fill(queue, range(5))
    real_pwrite = os.pwrite

    def short_then_full(fd: int, data: bytes | memoryview, offset: int) -> int:
        if len(data) > 20:
            return real_pwrite(fd, bytes(data[:20]), offset)  # a partial write ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(os, "pwrite", short_then_full)
    with pytest.raises(SpillRefused, match="disk full"):
        queue.append(delivery(5), T0)
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert len(queue) == 5
    queue.append(delivery(6), T0)
    assert drain(queue) == [0, 1, 2, 3, 4, 6]


def test_full_disk_for_a_new_segment_refuses_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When even a new segment's header cannot be written, the append is refused and no
    half-made segment file is left behind."""
    directory = tmp_path / "q"
    queue = SpillQueue.fresh(directory, segment_bytes=SMALL)

    def full(fd: int, data: bytes | memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(SpillRefused):
        queue.append(delivery(1), T0)
    assert segment_files(directory) == []
    assert queue.empty


def test_destination_names_become_safe_directory_names(tmp_path: Path) -> None:
    """A destination called '../x' or '.' cannot escape or alias the spill root."""
    assert spill_directory(tmp_path, "crm") == tmp_path / "crm"
    assert spill_directory(tmp_path, "../x").parent == tmp_path
    assert spill_directory(tmp_path, ".").name not in (".", "..")
    assert spill_directory(tmp_path, "a/b").parent == tmp_path
