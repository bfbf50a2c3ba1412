"""Recovery with the real daemon and the real CLI: timers across restarts, final snapshots,
WAL-only recovery, torn and corrupt files, and the operator commands (inspect, snapshot,
recover)."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import DaemonProcess, short_dir, start_daemon, write_config

from journeyd.engine.ids import message_id
from journeyd.model import Event, format_timestamp, parse_timestamp
from journeyd.store.records import EventRecord
from journeyd.store.wal import FRAME_HEADER_BYTES, HEADER_BYTES, WalWriter

LIMITS = {"events_per_second_per_user": 1_000_000, "instances_per_user": 1000}


def nudge_journey(hold: str) -> dict[str, Any]:
    """Cart Modified -> hold `hold` -> (timeout) send "nudge" to the file destination."""
    return {
        "id": "cart",
        "entry": {"event": "Cart Modified", "rule": "re-enter", "unique_identifier": "cart_id"},
        "steps": [
            {
                "id": "wait",
                "type": "hold_until",
                "max_duration": hold,
                "on_timeout": "nudge",
                "branches": [{"name": "purchased", "event": "Order Completed"}],
            },
            {
                "id": "nudge",
                "type": "send",
                "destination": "outbox",
                "event_name": "Cart Abandoned",
            },
        ],
    }


HOLD_2H = nudge_journey("2h")
SETTINGS: dict[str, Any] = {"limits": LIMITS}
RUN = [sys.executable, "-m", "journeyd", "run", "-c"]


def cart(user: str, cart_id: str, **more: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": "Cart Modified",
        "properties": {"cart_id": cart_id, **more},
    }


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_dir() as path:
        yield path


def cli(directory: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m journeyd ARGS` with `-c` pointing at the test config."""
    command = [sys.executable, "-m", "journeyd", *args, "-c", str(directory / "journeyd.toml")]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def inspect(directory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    done = cli(directory, "inspect", "--json", "--instances")
    assert done.returncode == 0, done.stderr
    summary, *rest = done.stdout.splitlines()
    return json.loads(summary), [json.loads(line) for line in rest if line.strip()]


def comparable(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(instances, key=lambda i: i["instance"])


def run_daemon_expecting_failure(directory: Path) -> subprocess.CompletedProcess[str]:
    """`journeyd run` on a state that must not start; returns once it has exited."""
    return subprocess.run(
        [*RUN, str(directory / "journeyd.toml"), "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=directory,
    )


def kill9(daemon: DaemonProcess) -> None:
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(30)


def frames(segment: Path) -> list[tuple[int, int, int]]:
    """(offset, seq, payload length) of every frame of a WAL segment (format in wal.py)."""
    data = segment.read_bytes()
    out = []
    offset = HEADER_BYTES
    while offset + FRAME_HEADER_BYTES <= len(data):
        length, _crc, seq = struct.unpack_from("<IIQ", data, offset)
        out.append((offset, seq, length))
        offset += FRAME_HEADER_BYTES + length
    return out


def two_clean_restarts(directory: Path, journeys: list[dict[str, Any]]) -> list[Path]:
    """Events, SIGTERM, more events, SIGTERM: two snapshots, the oldest WAL segment pruned.
    Returns the snapshot directories, newest first."""
    for round_ in range(2):
        daemon = start_daemon(directory, journeys=journeys, settings=SETTINGS)
        answers = daemon.send_events([cart(f"u{round_}-{i}", f"c{i}") for i in range(50)])
        assert all(a["ok"] for a in answers)
        assert daemon.stop() == 0
    snapshots = sorted((directory / "state" / "snapshots").iterdir(), reverse=True)
    assert len(snapshots) == 2, snapshots
    return snapshots


# --- timers -----------------------------------------------------------------------------------


def test_timers_that_expired_while_down_fire_after_restart(workdir: Path) -> None:
    """A hold that times out while the daemon is stopped sends its nudge after the restart,
    stamped with its own deadline."""
    journey = nudge_journey("5s")
    daemon = start_daemon(workdir, journeys=[journey], settings=SETTINGS)
    answers = daemon.send_events([cart("ana", "c-1"), cart("ben", "c-2")])
    assert all(a["ok"] for a in answers)
    assert daemon.stop() == 0
    _summary, instances = inspect(workdir)
    if len(instances) < 2 or daemon.read_deliveries():
        pytest.skip("the machine took longer than the 5 s hold to stop the daemon")
    deadlines = {i["instance"]: i["deadline"] for i in instances}
    latest = max(parse_timestamp(d) for d in deadlines.values())
    while time.time() < latest + 0.5:
        time.sleep(0.1)
    daemon = start_daemon(workdir, journeys=[journey], settings=SETTINGS)
    try:
        nudges = daemon.wait_for_deliveries(2, timeout=30)
        assert {n["messageId"] for n in nudges} == {message_id(i, "nudge") for i in deadlines}
        for nudge in nudges:
            instance = nudge["properties"]["journey_metadata"]["instance_id"]
            assert nudge["timestamp"] == deadlines[instance]
        assert daemon.stop() == 0
        assert inspect(workdir)[1] == []
    finally:
        daemon.kill()


def test_a_2h_hold_with_1h_left_still_has_1h_left_after_a_restart(workdir: Path) -> None:
    """The deadline is wall-clock and survives restarts: an instance that entered an hour ago
    (logged then) keeps its deadline, and its timer does not fire early."""
    write_config(workdir, [HOLD_2H], SETTINGS)
    entered = time.time() - 3600
    stamp = format_timestamp(entered)
    event = Event(
        type="track",
        messageId="0f9d1b2e-4c7a-4d7e-9a55-3c1e2b7f6a10",
        userId="ana",
        event="Cart Modified",
        properties={"cart_id": "old"},
        timestamp=stamp,
        receivedAt=stamp,
    )
    wal = WalWriter.open(workdir / "state" / "wal", 1)  # what the daemon logged an hour ago
    wal.append([EventRecord(entered, "", event)])
    wal.close()

    daemon = start_daemon(workdir, journeys=[HOLD_2H], settings=SETTINGS)
    try:
        assert all(a["ok"] for a in daemon.send_events([cart("ben", "new")]))
        _summary, before = inspect(workdir)
        by_id = {i["identifier"]: i for i in before}
        assert by_id["old"]["deadline"] == format_timestamp(entered + 7200)
        assert by_id["old"]["step"] == "wait"
        assert parse_timestamp(by_id["old"]["deadline"]) - time.time() > 3000  # ~1 h left
        assert daemon.stop() == 0

        daemon = start_daemon(workdir, journeys=[HOLD_2H], settings=SETTINGS)
        _summary, after = inspect(workdir)
        assert comparable(after) == comparable(before)
        assert daemon.stop() == 0  # a tick that fired it early would be in the final snapshot
        assert comparable(inspect(workdir)[1]) == comparable(before)
        assert daemon.read_deliveries() == []
    finally:
        daemon.kill()


# --- snapshots and the WAL ------------------------------------------------------------------


def test_clean_shutdown_writes_a_final_snapshot_and_restart_replays_nothing(
    workdir: Path,
) -> None:
    """SIGTERM ends with a snapshot covering the whole WAL; the next start replays nothing."""
    daemon = start_daemon(workdir, journeys=[HOLD_2H], settings=SETTINGS)
    assert all(a["ok"] for a in daemon.send_events([cart(f"u{i}", "c") for i in range(25)]))
    assert daemon.stop() == 0
    assert any(e.get("event") == "snapshot.written" and e.get("final") for e in daemon.logs)
    summary, instances = inspect(workdir)
    assert summary["snapshot"] is not None
    assert summary["snapshot"]["seq"] == summary["wal"]["last_seq"] > 0
    assert summary["replayed"] == 0
    assert len(instances) == 25

    daemon = start_daemon(workdir, journeys=[HOLD_2H], settings=SETTINGS)
    try:
        done = daemon.wait_for_log("recovery.done")
        assert done["snapshot_seq"] == summary["snapshot"]["seq"]
        assert done["replayed"] == 0
        assert done["instances"] == 25
    finally:
        daemon.kill()


def test_recovery_from_the_wal_alone_rebuilds_the_same_instances(workdir: Path) -> None:
    """With every snapshot deleted, replaying the whole WAL gives the same instances as
    snapshot + tail did."""
    daemon = start_daemon(workdir, journeys=[HOLD_2H], settings=SETTINGS)
    assert all(a["ok"] for a in daemon.send_events([cart(f"u{i}", "a") for i in range(20)]))
    assert daemon.stop() == 0  # a snapshot, and a new segment after it on the next start
    daemon = start_daemon(workdir, journeys=[HOLD_2H], settings=SETTINGS)
    more = [cart(f"u{i}", "b") for i in range(10, 30)] + [
        {
            "type": "track",
            "userId": f"u{i}",
            "event": "Order Completed",
            "properties": {"cart_id": "a"},
        }
        for i in range(5)
    ]
    assert all(a["ok"] for a in daemon.send_events(more))
    kill9(daemon)
    with_snapshot = inspect(workdir)
    assert with_snapshot[0]["snapshot"] is not None and with_snapshot[0]["replayed"] > 0

    for path in sorted((workdir / "state" / "snapshots").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    wal_only = inspect(workdir)
    assert wal_only[0]["snapshot"] is None
    assert comparable(wal_only[1]) == comparable(with_snapshot[1])
    assert len(wal_only[1]) == 35  # 20 + 20 carts, minus the 5 bought

    daemon = start_daemon(workdir, journeys=[HOLD_2H], settings=SETTINGS)
    try:
        done = daemon.wait_for_log("recovery.done")
        assert done["snapshot_seq"] is None
        assert done["instances"] == 35
        assert comparable(inspect(workdir)[1]) == comparable(with_snapshot[1])
    finally:
        daemon.kill()


# --- damaged files, with the real CLI ---------------------------------------------------------


def test_corruption_mid_wal_refuses_to_start_until_recover_truncates(workdir: Path) -> None:
    """A flipped byte with records after it: `run` exits 65 naming the file and offset and
    pointing at `journeyd recover`; `recover --truncate-after SEQ` lets it start again."""
    daemon = start_daemon(workdir, journeys=[HOLD_2H], settings=SETTINGS)
    assert all(a["ok"] for a in daemon.send_events([cart(f"u{i}", "c") for i in range(40)]))
    kill9(daemon)
    (segment,) = sorted((workdir / "state" / "wal").glob("*.wal"))
    found = frames(segment)
    assert len(found) == 40
    offset, seq, length = found[20]
    data = bytearray(segment.read_bytes())
    data[offset + FRAME_HEADER_BYTES + length // 2] ^= 0x40
    segment.write_bytes(bytes(data))

    failed = run_daemon_expecting_failure(workdir)
    assert failed.returncode == 65, failed.stderr
    assert str(segment) in failed.stderr
    assert f"corrupt at byte offset {offset}" in failed.stderr
    assert "journeyd recover" in failed.stderr

    checked = cli(workdir, "recover")
    assert checked.returncode == 65, checked
    assert str(segment) in checked.stderr
    repaired = cli(workdir, "recover", "--truncate-after", str(seq - 1))
    assert repaired.returncode == 0, repaired.stderr
    # 20 records dropped; the count names the 19 that still pass their checksum (documented)
    assert "dropped 19 WAL record(s)" in repaired.stdout

    daemon = start_daemon(workdir, journeys=[HOLD_2H], settings=SETTINGS)
    try:
        assert daemon.wait_for_log("recovery.done")["instances"] == 20
        assert {i["user"] for i in inspect(workdir)[1]} == {f"u{i}" for i in range(20)}
        assert all(a["ok"] for a in daemon.send_events([cart("late", "c")]))
    finally:
        daemon.kill()


def test_a_torn_tail_is_cut_and_logged(workdir: Path) -> None:
    """A last segment cut mid-record: the daemon starts, logs wal.torn_tail with the offset,
    and keeps every whole record before it."""
    daemon = start_daemon(workdir, journeys=[HOLD_2H], settings=SETTINGS)
    assert all(a["ok"] for a in daemon.send_events([cart(f"u{i}", "c") for i in range(10)]))
    kill9(daemon)
    (segment,) = sorted((workdir / "state" / "wal").glob("*.wal"))
    offset, _seq, length = frames(segment)[-1]
    with segment.open("r+b") as handle:
        handle.truncate(offset + FRAME_HEADER_BYTES + length // 2)

    daemon = start_daemon(workdir, journeys=[HOLD_2H], settings=SETTINGS)
    try:
        torn = daemon.wait_for_log("wal.torn_tail")
        assert torn["file"] == str(segment)
        assert torn["offset"] == offset
        assert daemon.wait_for_log("recovery.done")["instances"] == 9
        assert {i["user"] for i in inspect(workdir)[1]} == {f"u{i}" for i in range(9)}
    finally:
        daemon.kill()


def test_an_unknown_snapshot_version_with_the_wal_pruned_refuses_to_start(workdir: Path) -> None:
    """Snapshots of a format this build cannot read, and no WAL to rebuild from: a clear
    refusal (exit 65, the version and file named), never an empty state."""
    snapshots = two_clean_restarts(workdir, [HOLD_2H])
    assert not (workdir / "state" / "wal" / f"{1:020d}.wal").exists()  # pruned
    for snapshot in snapshots:
        meta = snapshot / "meta.bin"
        data = bytearray(meta.read_bytes())
        data[8:10] = struct.pack("<H", 99)  # the u16 format version after the 8-byte magic
        meta.write_bytes(bytes(data))

    failed = run_daemon_expecting_failure(workdir)
    output = failed.stdout + failed.stderr
    assert failed.returncode == 65, output
    assert "snapshot format version 99" in output
    assert str(snapshots[0] / "meta.bin") in output
    assert "journeyd recover" in failed.stderr
    assert "daemon.ready" not in output


def test_a_corrupt_newest_snapshot_falls_back_to_the_older_one(workdir: Path) -> None:
    """The newest snapshot fails its checksum: recovery logs snapshot.unusable, uses the
    older one plus the WAL after it, and loses nothing."""
    newest, older = two_clean_restarts(workdir, [HOLD_2H])
    shard = max(newest.glob("shard-*.bin"), key=lambda p: p.stat().st_size)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2 + 10] ^= 0xFF
    shard.write_bytes(bytes(data))

    daemon = start_daemon(workdir, journeys=[HOLD_2H], settings=SETTINGS)
    try:
        unusable = daemon.wait_for_log("snapshot.unusable")
        assert unusable["path"] == str(newest)
        done = daemon.wait_for_log("recovery.done")
        assert done["snapshot_seq"] == int(older.name)
        assert done["replayed"] > 0
        assert done["instances"] == 100
    finally:
        daemon.kill()


# --- operator commands on a running daemon ------------------------------------------------------


def test_inspect_and_snapshot_on_a_running_daemon(workdir: Path) -> None:
    """`journeyd inspect` (text and --json) summarises a live daemon's state dir, and
    `journeyd snapshot` makes a new snapshot appear."""
    daemon = start_daemon(workdir, journeys=[HOLD_2H], settings=SETTINGS)
    try:
        assert all(a["ok"] for a in daemon.send_events([cart(f"u{i}", "c") for i in range(7)]))
        text = cli(workdir, "inspect")
        assert text.returncode == 0, text.stderr
        assert "snapshot:  none" in text.stdout
        assert "7 instances of 7 users" in text.stdout
        assert "cart" in text.stdout and "wait" in text.stdout

        summary, instances = inspect(workdir)
        assert summary["snapshot"] is None
        assert summary["instances"] == 7 and summary["users"] == 7
        assert summary["steps"] == [
            {"journey": "cart", "version": instances[0]["version"], "step": "wait", "instances": 7}
        ]
        assert summary["wal"]["records"] == summary["wal"]["last_seq"] == 7
        assert {i["user"] for i in instances} == {f"u{i}" for i in range(7)}

        made = cli(workdir, "snapshot")
        assert made.returncode == 0, made.stderr
        seq = int(made.stdout.split("snapshot at seq ")[1].split(":")[0])
        assert seq >= 7  # the request itself is logged as a tick record
        assert (workdir / "state" / "snapshots" / f"{seq:020d}" / "meta.bin").exists()
        after, again = inspect(workdir)
        assert after["snapshot"]["seq"] == seq == after["wal"]["last_seq"]
        assert after["replayed"] == 0
        assert comparable(again) == comparable(instances)
        text = cli(workdir, "inspect")
        assert f"snapshot:  seq {seq}, taken" in text.stdout
    finally:
        daemon.kill()
