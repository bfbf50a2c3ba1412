"""A bounded window of recently seen messageIds, so SDK retries are not run twice.

Keys are stored as 8-byte blake2b digests (stable across processes, so the window can be
snapshotted) with their expiry; insertion order is time order, so eviction pops the front.
Past `max_ids` the oldest ids are forgotten early: memory stays bounded at the cost of a
shorter effective window under extreme rates (reported by `evicted_early`).
"""

from __future__ import annotations

from hashlib import blake2b

_EVICT_EVERY = 256  # expired ids are swept in passes, not on every insert


class DedupWindow:
    __slots__ = ("_expiry", "_inserts", "_max_ids", "_window_s", "evicted_early")

    def __init__(self, window_s: float, max_ids: int) -> None:
        self._window_s = window_s
        self._max_ids = max_ids
        self._expiry: dict[bytes, float] = {}
        self._inserts = 0
        self.evicted_early = 0

    def __len__(self) -> int:
        return len(self._expiry)

    def seen(self, scope: str, message_id: str, now: float) -> bool:
        """True if (scope, messageId) was seen within the window; else remember it."""
        key = self._key(scope, message_id)
        expiry = self._expiry.get(key)
        if expiry is not None and expiry > now:
            return True
        self._inserts += 1
        if self._inserts >= _EVICT_EVERY or len(self._expiry) >= self._max_ids:
            self._inserts = 0
            self._evict(now)
        self._expiry.pop(key, None)  # re-insert at the end: keeps time order
        self._expiry[key] = now + self._window_s
        return False

    def export(self) -> list[tuple[bytes, float]]:
        """(key, expiry) pairs in time order, for snapshots."""
        return list(self._expiry.items())

    def restore(self, entries: list[tuple[bytes, float]]) -> None:
        self._expiry = dict(entries)

    def forget(self, scope: str, message_id: str) -> None:
        """Undo `seen` for an event that was not applied after all, so a retry runs."""
        self._expiry.pop(self._key(scope, message_id), None)

    @staticmethod
    def _key(scope: str, message_id: str) -> bytes:
        return blake2b(f"{scope}\x1f{message_id}".encode(), digest_size=8).digest()

    def _evict(self, now: float) -> None:
        """Drop expired ids, and the oldest beyond capacity, in one pass from the front.

        One pass, not a pop per id: `next(iter(d))` rescans every slot freed at the front
        since the dict last compacted, which made eviction quadratic at a million ids.
        """
        expiry = self._expiry
        # Past capacity, free a little headroom so the next inserts need no sweep.
        excess = len(expiry) - (self._max_ids - min(_EVICT_EVERY, self._max_ids // 4))
        victims = []
        for key, when in expiry.items():
            if when <= now:
                victims.append(key)
            elif len(victims) < excess:
                victims.append(key)
                self.evicted_early += 1
            else:
                break
        for key in victims:
            del expiry[key]
