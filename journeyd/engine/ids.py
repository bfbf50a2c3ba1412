"""Stable hashes: shards, instance ids, message ids and random-split buckets.

All derive from blake2b, never Python's `hash()`, which is salted per process and would
make a replay (or a second machine) disagree with the live run.
"""

from __future__ import annotations

from hashlib import blake2b

SHARDS = 64
_SEP = "\x1f"


def _digest(*parts: str, size: int) -> bytes:
    return blake2b(_SEP.join(parts).encode("utf-8", "surrogatepass"), digest_size=size).digest()


def shard_of(user: str) -> int:
    return int.from_bytes(_digest(user, size=8), "big") % SHARDS


def instance_id(
    journey_id: str, user: str, identifier: str, entry_message_id: str, at_ms: int
) -> str:
    """16 hex chars naming one run of a journey for one (user, identifier)."""
    return _digest(journey_id, user, identifier, entry_message_id, str(at_ms), size=8).hex()


def message_id(instance: str, step_id: str, visit: int = 1) -> str:
    """A UUID-shaped id for a delivery: the same send always carries the same id.

    `visit` distinguishes repeated visits of one step; journeys are acyclic apart from
    reset loops on hold steps, so today every send step is visited once per instance.
    """
    hexed = _digest(instance, step_id, str(visit), size=16).hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def bucket(*parts: str) -> int:
    """A uniform number in [0, 10000): percent * 100, for randomized splits."""
    return int.from_bytes(_digest(*parts, size=8), "big") % 10000
