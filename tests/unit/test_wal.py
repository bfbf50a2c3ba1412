"""The write-ahead log: segments, rotation, torn tails versus corruption, failures of the disk."""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from journeyd.errors import (
    BadInput,
    CorruptRecord,
    DurabilityLost,
    StorageError,
    StorageFull,
    UnknownFormat,
)
from journeyd.model import Event
from journeyd.store import (
    EventRecord,
    Record,
    TickRecord,
    WalWriter,
    encode_record,
    find_torn_tail,
    last_seq,
    prune,
    read_wal,
    segments,
    truncate_after,
    truncate_torn_tail,
    wal_stats,
)

ROOT = Path(__file__).resolve().parents[2]
HEADER = 20
FRAME = 16


def event(n: int) -> EventRecord:
    return EventRecord(
        received=1_772_355_600.0 + n,
        scope="key",
        event=Event(
            type="track",
            messageId=f"m-{n}",
            userId=f"user-{n % 7}",
            event="Cart Modified",
            properties={"n": n, "cart": "c", "price": 9.5, "note": None},
        ),
    )


def events(first: int, count: int) -> list[Record]:
    return [event(n) for n in range(first, first + count)]


def write(directory: Path, batches: list[list[Record]], segment_bytes: int = 64 << 20) -> None:
    writer = WalWriter.open(directory, 1, segment_bytes=segment_bytes)
    for batch in batches:
        writer.append(batch)
    writer.close()


def frame_offsets(path: Path) -> list[int]:
    """Start offsets of the frames in a well-formed segment, by walking the length fields."""
    data = path.read_bytes()
    offsets = []
    offset = HEADER
    while offset < len(data):
        offsets.append(offset)
        (length,) = struct.unpack_from("<I", data, offset)
        offset += FRAME + length
    assert offset == len(data)
    return offsets


def patch_bytes(path: Path, offset: int, new: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + len(new)] = new
    path.write_bytes(bytes(data))


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def seqs(directory: Path, after_seq: int = 0) -> list[int]:
    return [seq for seq, _ in read_wal(directory, after_seq)]


@pytest.fixture
def wal(tmp_path: Path) -> Path:
    return tmp_path / "wal"


# --- format, writing and reading ----------------------------------------------------------------


def test_on_disk_layout_is_as_specified(wal: Path) -> None:
    """Header and frame bytes follow the documented layout, crc over seq bytes + payload."""
    record = TickRecord(now=5.0)
    write(wal, [[record]])
    (path,) = wal.iterdir()
    assert path.name == "00000000000000000001.wal"
    data = path.read_bytes()
    assert data[:HEADER] == b"JDWAL\r\n\x1a" + struct.pack("<HHQ", 1, 0, 1)
    payload = encode_record(record)
    length, crc, seq = struct.unpack_from("<IIQ", data, HEADER)
    assert (length, seq) == (len(payload), 1)
    assert crc == zlib.crc32(struct.pack("<Q", 1) + payload)
    assert data[HEADER + FRAME :] == payload


def test_append_assigns_consecutive_seqs_and_reads_back_in_order(wal: Path) -> None:
    """Batches get consecutive seqs; append returns the last; the reader returns all of them."""
    writer = WalWriter.open(wal, 1)
    assert writer.append(events(1, 3)) == 3
    assert writer.append([TickRecord(now=1.0)]) == 4
    assert writer.append([]) == 4
    assert writer.written_seq == 4
    writer.close()
    read = list(read_wal(wal))
    assert [seq for seq, _ in read] == [1, 2, 3, 4]
    assert [record for _, record in read] == [*events(1, 3), TickRecord(now=1.0)]


def test_rotation_spreads_records_over_segments_named_by_first_seq(wal: Path) -> None:
    """A full segment is closed and the next append starts a new one named after its first seq."""
    batches = [events(n * 5 + 1, 5) for n in range(20)]
    write(wal, batches, segment_bytes=1000)
    found = segments(wal)
    assert len(found) > 3
    for first_seq, path in found:
        data = path.read_bytes()
        assert struct.unpack_from("<Q", data, 12)[0] == first_seq
        assert struct.unpack_from("<Q", data, HEADER + 8)[0] == first_seq  # first frame's seq
    firsts = [first for first, _ in found]
    assert firsts[0] == 1 and firsts == sorted(firsts)
    # Every segment but the last holds at least `segment_bytes` (rotation happens after).
    assert all(path.stat().st_size >= 1000 for _, path in found[:-1])
    assert [record for _, record in read_wal(wal)] == events(1, 100)
    assert seqs(wal) == list(range(1, 101))


def test_a_batch_never_splits_across_segments(wal: Path) -> None:
    """Rotation happens between appends, so one batch stays in one segment."""
    write(wal, [events(1, 50), events(51, 50)], segment_bytes=100)
    assert [first for first, _ in segments(wal)] == [1, 51]


def test_after_seq_filters_within_and_across_segments(wal: Path) -> None:
    """read_wal(after_seq) yields exactly the records after it, from any starting point."""
    write(wal, [events(n * 3 + 1, 3) for n in range(20)], segment_bytes=600)
    assert len(segments(wal)) > 3
    for after in range(62):
        assert seqs(wal, after) == list(range(after + 1, 61))


def test_empty_or_missing_directory_has_no_records(tmp_path: Path) -> None:
    """No WAL yet: no records, last_seq 0, nothing torn, empty stats."""
    (tmp_path / "empty").mkdir()
    for directory in (tmp_path / "empty", tmp_path / "missing"):
        assert list(read_wal(directory)) == []
        assert last_seq(directory) == 0
        assert find_torn_tail(directory) is None
        assert segments(directory) == []
        assert wal_stats(directory)["records"] == 0


def test_other_files_in_the_directory_are_ignored(wal: Path) -> None:
    """Only `{020d}.wal` names are segments; temp files and notes are not read."""
    write(wal, [events(1, 2)])
    (wal / "notes.txt").write_text("hello")
    (wal / "123.wal").write_bytes(b"junk")
    (wal / "00000000000000000009.wal.tmp").write_bytes(b"junk")
    assert seqs(wal) == [1, 2]


def test_reopen_starts_a_new_segment_at_next_seq(wal: Path) -> None:
    """A restarted writer continues the numbering in a fresh segment."""
    write(wal, [events(1, 4)])
    writer = WalWriter.open(wal, last_seq(wal) + 1)
    assert writer.written_seq == 4 and writer.synced_seq == 4
    assert writer.append(events(5, 2)) == 6
    writer.close()
    assert [first for first, _ in segments(wal)] == [1, 5]
    assert [record for _, record in read_wal(wal)] == events(1, 6)


def test_reopen_refuses_a_next_seq_that_would_repeat_seqs(wal: Path) -> None:
    """Starting at or below the last stored seq would make duplicates: refused, nothing created."""
    write(wal, [events(1, 4)])
    for bad in (1, 4):
        with pytest.raises(StorageError, match="already holds seq 4"):
            WalWriter.open(wal, bad)
    assert len(segments(wal)) == 1


def test_reopen_replaces_a_header_only_last_segment(wal: Path) -> None:
    """A segment created but never written to is replaced, not left empty in the middle."""
    write(wal, [events(1, 3)])
    WalWriter.open(wal, 4).close()  # crash-free restart with nothing appended
    assert [first for first, _ in segments(wal)] == [1, 4]
    writer = WalWriter.open(wal, 4)
    writer.append(events(4, 1))
    writer.close()
    assert [first for first, _ in segments(wal)] == [1, 4]
    assert seqs(wal) == [1, 2, 3, 4]


def test_reopen_may_skip_ahead_and_reading_across_the_gap_fails(wal: Path) -> None:
    """A writer may start past the last record (a snapshot covers it); the gap is never hidden."""
    write(wal, [events(1, 3)])
    writer = WalWriter.open(wal, 10)
    writer.append(events(10, 2))
    writer.close()
    assert seqs(wal, after_seq=9) == [10, 11]
    with pytest.raises(CorruptRecord, match="segment starts at seq 10"):
        seqs(wal)


def test_reopen_refuses_a_torn_tail(wal: Path) -> None:
    """Appending after a torn tail would bury it mid-log: open demands the truncation first."""
    write(wal, [events(1, 3)])
    ((_, path),) = segments(wal)
    with path.open("ab") as file:
        file.write(b"\x05\x00")
    with pytest.raises(StorageError, match="torn tail"):
        WalWriter.open(wal, 4)


def test_sync_reports_the_seq_it_covers(wal: Path) -> None:
    """sync returns the last written seq and synced_seq follows; nothing new means no change."""
    writer = WalWriter.open(wal, 1)
    assert writer.sync() == 0
    writer.append(events(1, 3))
    assert writer.synced_seq == 0
    assert writer.sync() == 3
    assert writer.synced_seq == 3
    assert writer.sync() == 3
    writer.close()


def test_rotation_makes_the_old_segment_durable(wal: Path, monkeypatch: Any) -> None:
    """Rotating fsyncs the full segment, so syncing the new one covers everything."""
    writer = WalWriter.open(wal, 1, segment_bytes=100)
    writer.append(events(1, 5))
    assert writer.synced_seq == 0
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    writer.append(events(6, 1))
    assert synced, "rotation should fsync"
    assert writer.synced_seq == 5
    writer.close()


def test_close_syncs_and_is_idempotent_and_final(wal: Path) -> None:
    """close makes everything durable; a second close is harmless; appends after it fail."""
    writer = WalWriter.open(wal, 1)
    writer.append(events(1, 2))
    writer.close()
    assert writer.synced_seq == 2
    writer.close()
    with pytest.raises(StorageError, match="closed"):
        writer.append(events(3, 1))


def test_unencodable_record_is_bad_input_and_writes_nothing(wal: Path) -> None:
    """A record msgpack cannot hold fails the whole batch before any byte is written."""
    writer = WalWriter.open(wal, 1)
    writer.append(events(1, 1))
    size = writer.path.stat().st_size
    bad = EventRecord(received=0.0, scope="", event=Event(type="track", properties={"n": 2**70}))
    with pytest.raises(BadInput, match="record 1 of the batch"):
        writer.append([event(2), bad])
    assert writer.path.stat().st_size == size
    assert writer.append(events(2, 1)) == 2
    writer.close()
    assert seqs(wal) == [1, 2]


def test_stats_summarise_the_log(wal: Path) -> None:
    """wal_stats counts segments, bytes and records, and reports torn bytes."""
    write(wal, [events(n * 4 + 1, 4) for n in range(10)], segment_bytes=700)
    found = segments(wal)
    stats = wal_stats(wal)
    assert stats == {
        "segments": len(found),
        "bytes": sum(path.stat().st_size for _, path in found),
        "records": 40,
        "first_seq": 1,
        "last_seq": 40,
        "torn_bytes": 0,
    }
    with found[-1][1].open("ab") as file:
        file.write(b"\x01\x02\x03")
    assert wal_stats(wal)["torn_bytes"] == 3


# --- torn tails ---------------------------------------------------------------------------------


def test_every_cut_inside_the_last_frame_is_a_torn_tail(wal: Path) -> None:
    """A crash at any byte of the last write loses that record only, and is cut off cleanly."""
    write(wal, [events(1, 4)])
    ((_, path),) = segments(wal)
    whole = path.read_bytes()
    last = frame_offsets(path)[-1]
    for cut in range(last + 1, len(whole)):
        path.write_bytes(whole[:cut])
        assert seqs(wal) == [1, 2, 3], cut
        assert find_torn_tail(wal) == (path, last), cut
        assert last_seq(wal) == 3
    path.write_bytes(whole[:last])
    assert seqs(wal) == [1, 2, 3]
    assert find_torn_tail(wal) is None


def test_cut_inside_a_multi_frame_batch_keeps_the_whole_frames_before_it(wal: Path) -> None:
    """A batch torn part-way reads as its complete frames, then a torn tail."""
    write(wal, [events(1, 6)])
    ((_, path),) = segments(wal)
    offsets = frame_offsets(path)
    path.write_bytes(path.read_bytes()[: offsets[4] + 3])
    assert seqs(wal) == [1, 2, 3, 4]
    assert find_torn_tail(wal) == (path, offsets[4])


def test_bad_checksum_on_the_final_frame_at_eof_is_a_torn_tail(wal: Path) -> None:
    """A final frame whose pages did not all reach the disk is torn, not corrupt."""
    write(wal, [events(1, 3)])
    ((_, path),) = segments(wal)
    last = frame_offsets(path)[-1]
    flip_byte(path, path.stat().st_size - 1)
    assert seqs(wal) == [1, 2]
    assert find_torn_tail(wal) == (path, last)


def test_zero_filled_tail_is_a_torn_tail(wal: Path) -> None:
    """Space allocated but never written (zeros after the last good frame) is torn, not data."""
    write(wal, [events(1, 3)])
    ((_, path),) = segments(wal)
    end = path.stat().st_size
    with path.open("ab") as file:
        file.write(bytes(100))
    assert seqs(wal) == [1, 2, 3]
    assert find_torn_tail(wal) == (path, end)


def test_last_segment_shorter_than_its_header_is_torn_and_deleted(wal: Path) -> None:
    """A crash while creating a segment leaves a stub: torn, and truncation deletes it."""
    write(wal, [events(1, 3)])
    header = b"JDWAL\r\n\x1a" + struct.pack("<HHQ", 1, 0, 4)
    stub = wal / "00000000000000000004.wal"
    for content in (b"", header[:7], header[: HEADER - 1], bytes(HEADER - 1)):
        stub.write_bytes(content)
        assert seqs(wal) == [1, 2, 3]
        assert find_torn_tail(wal) == (stub, 0)
        assert last_seq(wal) == 3
    assert truncate_torn_tail(wal) == (stub, 0)
    assert not stub.exists()
    assert find_torn_tail(wal) is None


def test_empty_file_as_the_only_segment_is_torn(wal: Path) -> None:
    """An empty first segment reads as no records, and its truncation leaves an empty WAL."""
    wal.mkdir()
    path = wal / "00000000000000000001.wal"
    path.write_bytes(b"")
    assert list(read_wal(wal)) == []
    assert truncate_torn_tail(wal) == (path, 0)
    assert segments(wal) == []
    writer = WalWriter.open(wal, 1)
    writer.append(events(1, 1))
    writer.close()
    assert seqs(wal) == [1]


def test_header_only_segment_holds_no_records_and_is_clean(wal: Path) -> None:
    """A freshly opened segment is a valid empty state; last_seq continues its numbering."""
    WalWriter.open(wal, 42).close()
    ((_, path),) = segments(wal)
    assert path.stat().st_size == HEADER
    assert list(read_wal(wal, after_seq=41)) == []
    assert find_torn_tail(wal) is None
    assert truncate_torn_tail(wal) is None
    assert last_seq(wal) == 41


def test_truncated_tail_reads_cleanly_and_takes_appends_after_reopen(wal: Path) -> None:
    """After truncate_torn_tail the WAL is clean, and a new writer continues the numbering."""
    write(wal, [events(1, 5)], segment_bytes=64 << 20)
    ((_, path),) = segments(wal)
    last = frame_offsets(path)[-1]
    path.write_bytes(path.read_bytes()[:-4])
    assert truncate_torn_tail(wal) == (path, last)
    assert path.stat().st_size == last
    assert find_torn_tail(wal) is None
    assert truncate_torn_tail(wal) is None
    assert seqs(wal) == [1, 2, 3, 4]
    writer = WalWriter.open(wal, last_seq(wal) + 1)
    assert writer.append(events(5, 2)) == 6
    writer.close()
    assert [record for _, record in read_wal(wal)] == events(1, 6)


# --- corruption ---------------------------------------------------------------------------------


def test_bad_checksum_in_a_middle_frame_is_corruption_naming_file_and_offset(wal: Path) -> None:
    """Damage followed by more data is never skipped: the error says where it is."""
    write(wal, [events(1, 5)])
    ((_, path),) = segments(wal)
    second = frame_offsets(path)[1]
    flip_byte(path, second + FRAME + 3)
    read: list[int] = []
    with pytest.raises(CorruptRecord) as caught:
        for seq, _ in read_wal(wal):
            read.append(seq)
    assert read == [1]
    assert caught.value.file == path
    assert caught.value.offset == second
    assert "checksum" in caught.value.reason
    assert str(path) in str(caught.value) and str(second) in str(caught.value)
    with pytest.raises(CorruptRecord):
        find_torn_tail(wal)


def test_bad_checksum_at_the_end_of_an_earlier_segment_is_corruption(wal: Path) -> None:
    """Only the last segment can be torn: an earlier one was fsynced before the next began."""
    write(wal, [events(1, 3), events(4, 3)], segment_bytes=100)
    (_, first), _ = segments(wal)
    last = frame_offsets(first)[-1]
    flip_byte(first, first.stat().st_size - 1)
    with pytest.raises(CorruptRecord) as caught:
        seqs(wal)
    assert (caught.value.file, caught.value.offset) == (first, last)
    assert find_torn_tail(wal) is None  # the last segment itself is fine
    assert seqs(wal, after_seq=3) == [4, 5, 6]


def test_huge_length_is_corruption(wal: Path) -> None:
    """A length beyond the sane maximum is damage, even in the last frame of the last segment."""
    write(wal, [events(1, 3)])
    ((_, path),) = segments(wal)
    offsets = frame_offsets(path)
    whole = path.read_bytes()
    for target in offsets[1], offsets[2]:
        path.write_bytes(whole)
        patch_bytes(path, target, struct.pack("<I", 0xFFFF_FFF0))
        with pytest.raises(CorruptRecord, match="exceeds the maximum") as caught:
            seqs(wal)
        assert caught.value.offset == target


def test_length_past_eof_in_an_earlier_segment_is_corruption(wal: Path) -> None:
    """A frame running off the end of a segment that is not the last is damage, not a tear."""
    write(wal, [events(1, 3), events(4, 3)], segment_bytes=100)
    (_, first), _ = segments(wal)
    last = frame_offsets(first)[-1]
    (length,) = struct.unpack_from("<I", first.read_bytes(), last)
    patch_bytes(first, last, struct.pack("<I", length + 10))
    with pytest.raises(CorruptRecord, match="runs past the end") as caught:
        seqs(wal)
    assert (caught.value.file, caught.value.offset) == (first, last)


def test_stray_bytes_after_the_frames_of_an_earlier_segment_are_corruption(wal: Path) -> None:
    """Leftover bytes shorter than a frame header are damage outside the last segment."""
    write(wal, [events(1, 3), events(4, 3)], segment_bytes=100)
    (_, first), _ = segments(wal)
    size = first.stat().st_size
    with first.open("ab") as file:
        file.write(b"\x00\x01")
    with pytest.raises(CorruptRecord, match="stray bytes") as caught:
        seqs(wal)
    assert caught.value.offset == size


def test_unknown_version_is_unknown_format(wal: Path) -> None:
    """A segment written by a newer format is a clear error naming the file."""
    write(wal, [events(1, 2)])
    ((_, path),) = segments(wal)
    patch_bytes(path, 8, struct.pack("<H", 2))
    with pytest.raises(UnknownFormat, match="version 2") as caught:
        seqs(wal)
    assert caught.value.file == path
    assert str(path) in str(caught.value)
    with pytest.raises(UnknownFormat):
        find_torn_tail(wal)


def test_bad_magic_is_unknown_format(wal: Path) -> None:
    """A file that is not a journeyd segment is refused, not parsed."""
    write(wal, [events(1, 2)])
    ((_, path),) = segments(wal)
    patch_bytes(path, 0, b"NOTAWAL!")
    with pytest.raises(UnknownFormat, match="bad magic") as caught:
        seqs(wal)
    assert caught.value.file == path


def test_stub_that_is_not_a_header_prefix_is_unknown(wal: Path) -> None:
    """A short last file with foreign bytes is refused rather than deleted as a stub."""
    wal.mkdir()
    path = wal / "00000000000000000001.wal"
    path.write_bytes(b"hello")
    with pytest.raises(CorruptRecord, match="shorter than a segment header"):
        seqs(wal)


def test_empty_earlier_segment_is_corruption(wal: Path) -> None:
    """A file shorter than its header is only a stub when it is the last one."""
    write(wal, [events(1, 2), events(3, 2)], segment_bytes=50)
    (_, first), _ = segments(wal)
    first.write_bytes(b"")
    with pytest.raises(CorruptRecord) as caught:
        seqs(wal)
    assert (caught.value.file, caught.value.offset) == (first, 0)


def test_header_seq_must_match_the_file_name(wal: Path) -> None:
    """A segment renamed or mis-written (name and header disagree) is corruption."""
    write(wal, [events(1, 2)])
    ((_, path),) = segments(wal)
    path.rename(wal / "00000000000000000005.wal")
    with pytest.raises(CorruptRecord, match="does not match"):
        list(read_wal(wal, after_seq=4))


def test_seq_gap_between_segments_is_corruption(wal: Path) -> None:
    """A missing segment (records 4..6 gone) is detected at the segment after it."""
    write(wal, [events(1, 3), events(4, 3), events(7, 3)], segment_bytes=100)
    found = segments(wal)
    assert [first for first, _ in found] == [1, 4, 7]
    found[1][1].unlink()
    with pytest.raises(CorruptRecord, match="the one before ends at 3") as caught:
        seqs(wal)
    assert caught.value.file == found[2][1]


def test_missing_start_of_the_log_is_corruption(wal: Path) -> None:
    """Asking for records that were pruned away is an error, not an empty answer."""
    write(wal, [events(1, 3), events(4, 3)], segment_bytes=100)
    prune(wal, 4)
    assert seqs(wal, after_seq=3) == [4, 5, 6]
    with pytest.raises(CorruptRecord, match=r"records 1\.\.3 are missing"):
        seqs(wal)


def craft_frame(seq: int, record: Record) -> bytes:
    payload = encode_record(record)
    crc = zlib.crc32(struct.pack("<Q", seq) + payload)
    return struct.pack("<IIQ", len(payload), crc, seq) + payload


def test_repeated_or_skipped_seq_inside_a_segment_is_corruption(wal: Path) -> None:
    """A frame with a valid checksum but the wrong seq is damage, wherever it sits."""
    write(wal, [events(1, 2)])
    ((_, path),) = segments(wal)
    whole = path.read_bytes()
    for wrong in (2, 4):
        path.write_bytes(whole + craft_frame(wrong, event(3)))
        with pytest.raises(CorruptRecord, match=f"seq {wrong} where 3") as caught:
            seqs(wal)
        assert caught.value.offset == len(whole)


def test_checksummed_but_undecodable_record_is_corruption(wal: Path) -> None:
    """Bytes that pass the checksum but are not a record are an error, not skipped."""
    write(wal, [events(1, 1)])
    ((_, path),) = segments(wal)
    size = path.stat().st_size
    payload = b"\x92\x63\x01"  # tag 99
    crc = zlib.crc32(struct.pack("<Q", 2) + payload)
    with path.open("ab") as file:
        file.write(struct.pack("<IIQ", len(payload), crc, 2) + payload)
    with pytest.raises(CorruptRecord, match="undecodable record 2") as caught:
        seqs(wal)
    assert caught.value.offset == size
    assert find_torn_tail(wal) is None  # framing is fine; only decoding catches it


# --- maintenance --------------------------------------------------------------------------------


def test_prune_deletes_only_segments_wholly_below_and_never_the_last(wal: Path) -> None:
    """Pruning drops whole covered segments, keeps any segment holding a seq >= below_seq."""
    write(wal, [events(n * 3 + 1, 3) for n in range(5)], segment_bytes=100)
    found = segments(wal)
    assert [first for first, _ in found] == [1, 4, 7, 10, 13]
    assert prune(wal, 1) == []
    assert prune(wal, 6) == [found[0][1]]  # segment 4..6 still holds 6
    assert prune(wal, 7) == [found[1][1]]
    assert prune(wal, 1000) == [found[2][1], found[3][1]]
    assert segments(wal) == [found[4]]
    assert seqs(wal, after_seq=12) == [13, 14, 15]


def test_truncate_after_drops_later_records_and_segments(wal: Path) -> None:
    """The escape hatch keeps records up to seq, drops the rest, and the log continues."""
    write(wal, [events(n * 3 + 1, 3) for n in range(4)], segment_bytes=100)
    assert [first for first, _ in segments(wal)] == [1, 4, 7, 10]
    assert truncate_after(wal, 5) == 7
    assert [first for first, _ in segments(wal)] == [1, 4]
    assert seqs(wal) == [1, 2, 3, 4, 5]
    assert truncate_after(wal, 5) == 0
    assert truncate_after(wal, 3) == 2  # the whole segment 4.. goes
    assert [first for first, _ in segments(wal)] == [1]
    writer = WalWriter.open(wal, 4)
    writer.append(events(4, 1))
    writer.close()
    assert [record for _, record in read_wal(wal)] == events(1, 4)


def test_truncate_after_gets_past_mid_log_corruption(wal: Path) -> None:
    """Corruption after seq is dropped with everything after it; the log then reads cleanly."""
    write(wal, [events(1, 4), events(5, 3)], segment_bytes=100)
    (_, first), _ = segments(wal)
    third = frame_offsets(first)[2]
    flip_byte(first, third + FRAME + 1)
    with pytest.raises(CorruptRecord):
        seqs(wal)
    assert truncate_after(wal, 2) == 1 + 3  # record 4 is intact after the damaged 3; 5..7
    assert first.stat().st_size == third
    assert seqs(wal) == [1, 2]


def test_truncate_after_refuses_when_damage_precedes_seq(wal: Path) -> None:
    """Records up to seq cannot be kept if one of them is damaged: nothing is changed."""
    write(wal, [events(1, 4), events(5, 3)], segment_bytes=100)
    found = segments(wal)
    (_, first), (_, second) = found
    flip_byte(first, frame_offsets(first)[1] + FRAME + 1)
    before = [path.read_bytes() for _, path in found]
    with pytest.raises(CorruptRecord):
        truncate_after(wal, 3)
    assert [path.read_bytes() for _, path in found] == before
    assert second.exists()


def test_truncate_after_removes_a_torn_tail_too(wal: Path) -> None:
    """Cutting after the last good record also drops torn bytes behind it."""
    write(wal, [events(1, 3)])
    ((_, path),) = segments(wal)
    good = path.stat().st_size
    with path.open("ab") as file:
        file.write(b"\x07\x00\x00")
    assert truncate_after(wal, 3) == 0
    assert path.stat().st_size == good


# --- the disk failing ---------------------------------------------------------------------------


def failing_write(error: int, after_bytes: int | None) -> Callable[[int, Any], int]:
    """os.write that stores `after_bytes` of the first call, then raises OSError(error)."""
    real_write = os.write
    state = {"calls": 0}

    def fake(fd: int, data: Any) -> int:
        state["calls"] += 1
        if state["calls"] == 1 and after_bytes is not None:
            return real_write(fd, bytes(data)[:after_bytes])
        raise OSError(error, os.strerror(error))

    return fake


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_disk_full_half_way_leaves_no_partial_frame(wal: Path, monkeypatch: Any, code: int) -> None:
    """A write that fails part-way is cut back; no seq is used; the next append works."""
    writer = WalWriter.open(wal, 1)
    writer.append(events(1, 2))
    size = writer.path.stat().st_size
    batch = events(3, 4)
    length = sum(FRAME + len(encode_record(r)) for r in batch)
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", failing_write(code, length // 2))
        with pytest.raises(StorageFull):
            writer.append(batch)
    assert writer.path.stat().st_size == size
    assert writer.written_seq == 2
    assert seqs(wal) == [1, 2]
    assert find_torn_tail(wal) is None
    assert writer.append(batch) == 6
    writer.close()
    assert [record for _, record in read_wal(wal)] == events(1, 6)


def test_other_write_errors_are_storage_errors_not_full(wal: Path, monkeypatch: Any) -> None:
    """An I/O error is a StorageError (not StorageFull), also cleaned up and recoverable."""
    writer = WalWriter.open(wal, 1)
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", failing_write(errno.EIO, None))
        with pytest.raises(StorageError) as caught:
            writer.append(events(1, 1))
    assert not isinstance(caught.value, StorageFull)
    assert writer.append(events(1, 1)) == 1
    writer.close()
    assert seqs(wal) == [1]


def test_short_writes_are_completed(wal: Path, monkeypatch: Any) -> None:
    """os.write taking a few bytes at a time still stores the whole batch."""
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[:7]))
    writer = WalWriter.open(wal, 1)
    writer.append(events(1, 3))
    writer.close()
    monkeypatch.undo()
    assert [record for _, record in read_wal(wal)] == events(1, 3)


def test_failed_rotation_keeps_the_writer_usable(wal: Path, monkeypatch: Any) -> None:
    """No space for a new segment: StorageFull, the old segment stays current, retry works."""
    writer = WalWriter.open(wal, 1, segment_bytes=100)
    writer.append(events(1, 3))
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", failing_write(errno.ENOSPC, None))
        with pytest.raises(StorageFull):
            writer.append(events(4, 1))
    assert [first for first, _ in segments(wal)] == [1]
    assert writer.append(events(4, 1)) == 4
    writer.close()
    assert [first for first, _ in segments(wal)] == [1, 4]
    assert seqs(wal) == [1, 2, 3, 4]


def test_fsync_failure_is_durability_lost_and_final(wal: Path, monkeypatch: Any) -> None:
    """A failed fsync raises DurabilityLost and is never retried: the writer stays failed."""
    writer = WalWriter.open(wal, 1)
    writer.append(events(1, 2))
    calls: list[int] = []

    def broken_fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(DurabilityLost, match="fsync failed"):
        writer.sync()
    assert writer.synced_seq == 0
    with pytest.raises(DurabilityLost):
        writer.sync()
    with pytest.raises(DurabilityLost):
        writer.append(events(3, 1))
    assert len(calls) == 1, "an fsync must not be retried"
    writer.close()  # closes the fd without another fsync
    assert len(calls) == 1


def test_fsync_failure_during_rotation_is_durability_lost(wal: Path, monkeypatch: Any) -> None:
    """The fsync that retires a full segment fails: DurabilityLost, nothing more appended."""
    writer = WalWriter.open(wal, 1, segment_bytes=100)
    writer.append(events(1, 3))

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(DurabilityLost):
        writer.append(events(4, 1))
    with pytest.raises(DurabilityLost):
        writer.append(events(4, 1))
    monkeypatch.undo()
    writer.close()
    assert seqs(wal) == [1, 2, 3]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_sync_in_a_thread_while_appending_and_rotating(wal: Path) -> None:
    """Concurrent sync (worker thread) and append with rotation: no error, no fd leak."""
    before = open_fds()
    writer = WalWriter.open(wal, 1, segment_bytes=300)
    stop = threading.Event()
    errors: list[BaseException] = []
    covered: list[int] = []

    def syncer() -> None:
        try:
            while not stop.is_set():
                covered.append(writer.sync())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=syncer)
    thread.start()
    try:
        for n in range(200):
            writer.append(events(n * 2 + 1, 2))
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert covered == sorted(covered)
    assert all(seq <= 400 for seq in covered)
    writer.close()
    assert writer.synced_seq == 400
    assert len(segments(wal)) > 10
    assert seqs(wal) == list(range(1, 401))
    assert open_fds() == before


RLIMIT_CHILD = """
import json, resource, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from journeyd.errors import StorageFull
from journeyd.model import Event
from journeyd.store import EventRecord, WalWriter

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
writer = WalWriter.open(Path(sys.argv[1]), 1)
batch = [
    EventRecord(received=float(n), scope="k", event=Event(type="track", messageId=f"m{n}"))
    for n in range(7)
]
last = 0
for _ in range(100000):
    try:
        last = writer.append(batch)
    except StorageFull as exc:
        error = str(exc)
        break
else:
    error = None
writer.sync()
print(json.dumps({"last": last, "error": error}))
"""


def test_real_file_size_limit_raises_storage_full_and_stays_readable(wal: Path) -> None:
    """RLIMIT_FSIZE (EFBIG, a real short write) gives StorageFull and a clean, readable WAL."""
    limit = 5000
    result = subprocess.run(
        [sys.executable, "-c", RLIMIT_CHILD, str(wal), str(limit), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["error"] is not None
    last = outcome["last"]
    assert last > 0 and last % 7 == 0
    ((_, path),) = segments(wal)
    assert path.stat().st_size <= limit
    assert find_torn_tail(wal) is None
    assert seqs(wal) == list(range(1, last + 1))
