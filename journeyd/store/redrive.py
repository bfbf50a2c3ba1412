"""Dead letters sent back for another try (`journeyd dlq redrive`).

The command takes the chosen records out of the dead-letter file and writes them as
deliveries to `state_dir/redrive/*.jsonl`; the daemon picks those files up at start and on
SIGUSR2, logs each delivery as an intent (so it is owed like any other) and deletes the file.
The messageId is the original one, so a destination that de-duplicates still can.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgspec

from journeyd.delivery.deadletter import DeadLetter
from journeyd.engine import Delivery

DIRECTORY = "redrive"
_decode = msgspec.json.Decoder(Delivery).decode


def delivery_of(record: DeadLetter, now: float) -> Delivery:
    """The delivery a dead letter came from. Its clock restarts now, so `max_age` gives a
    redriven delivery a full new life."""
    payload: dict[str, Any] = record.payload
    properties = payload.get("properties") or {}
    metadata = properties.get("journey_metadata") or {}
    return Delivery(
        at=now,
        user=str(payload.get("userId") or payload.get("anonymousId") or ""),
        journey=metadata.get("journey_id"),
        instance=metadata.get("instance_id"),
        step=str(metadata.get("step_id") or ""),
        destination=record.destination,
        message_id=record.message_id,
        payload=payload,
    )


def write_redrive(state_dir: Path, records: list[DeadLetter]) -> Path:
    directory = state_dir / DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    path = directory / f"{time.time_ns()}-{os.getpid()}.jsonl"
    temp = path.with_suffix(".tmp")
    encode = msgspec.json.Encoder().encode
    with temp.open("wb") as handle:
        handle.writelines(encode(delivery_of(r, now)) + b"\n" for r in records)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)  # the daemon never sees a half-written file
    return path


def pending_redrives(state_dir: Path) -> list[tuple[Path, list[Delivery]]]:
    directory = state_dir / DIRECTORY
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.jsonl")):
        lines = path.read_bytes().splitlines()
        found.append((path, [_decode(line) for line in lines if line.strip()]))
    return found
