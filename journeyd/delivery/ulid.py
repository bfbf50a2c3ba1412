"""Deterministic ULIDs: the same delivery always gets the same id, so a retry is de-duplicated.

A ULID is 128 bits written as 26 Crockford base32 characters: a 48-bit big-endian count of
milliseconds since the Unix epoch, then 80 bits that are normally random. Here the 80 bits
are the first 10 bytes of BLAKE2b (`digest_size=10`) over the UTF-8 `messageId`, so the id is
a pure function of (timestamp, messageId): Customer.io ignores an event whose `id` it has
already received, which turns our at-least-once retries into exactly-once events there.

Because the time comes first, ids sort by time (lexicographically and numerically); two
deliveries in the same millisecond sort by their hash, which is fine for de-duplication.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
LENGTH = 26
MAX_TIME_MS = (1 << 48) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def encode(value: int) -> str:
    """A 128-bit integer as 26 Crockford base32 characters (the top 2 of 130 bits are zero)."""
    if not 0 <= value < 1 << 128:
        raise ValueError("a ULID is a 128-bit unsigned integer")
    chars = []
    for _ in range(LENGTH):
        chars.append(ALPHABET[value & 0x1F])
        value >>= 5
    return "".join(reversed(chars))


def ulid_for(message_id: str, time_ms: int) -> str:
    """The ULID for `message_id` at `time_ms` (milliseconds since the epoch)."""
    if not 0 <= time_ms <= MAX_TIME_MS:
        raise ValueError(f"ULID time must be within 0..{MAX_TIME_MS} ms, got {time_ms}")
    tail = hashlib.blake2b(message_id.encode("utf-8"), digest_size=10).digest()
    return encode(time_ms << 80 | int.from_bytes(tail, "big"))


def timestamp_ms(iso: str) -> int:
    """Milliseconds since the epoch of an ISO-8601 timestamp (a naive one is taken as UTC).

    Integer arithmetic on `timedelta`, so "…T09:18:02.123Z" gives exactly …123, never …122.
    """
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS
