"""One deadline structure for every instance: a heap with lazy deletion.

Cancelling (a reset, an exit) is O(1): the owner's `timer` token changes, and the old heap
entry is skipped when it surfaces. Stale entries are compacted away once they outnumber the
live ones, so a flood of resets cannot grow the heap without bound.
"""

from __future__ import annotations

import heapq
from typing import Any, Protocol


class TimerOwner(Protocol):
    timer: int


class TimerQueue:
    __slots__ = ("_next_token", "_stale", "heap")

    def __init__(self) -> None:
        # (deadline, key, token, owner); read-only outside this class. The engine peeks at
        # heap[0] on every event; a stale top entry only costs a call to pop_due.
        self.heap: list[tuple[float, str, int, Any]] = []
        self._next_token = 1
        self._stale = 0

    def __len__(self) -> int:
        """Live timers (the heap may hold stale entries too)."""
        return len(self.heap) - self._stale

    def arm(self, owner: TimerOwner, deadline: float, key: str) -> None:
        """Set the owner's single timer, replacing any earlier one.

        `key` orders timers that share a deadline. It must be stable across restarts (an
        instance id), so a recovered engine fires ties in the same order as the live one.
        """
        if owner.timer:
            self._stale += 1
        token = self._next_token
        self._next_token += 1
        owner.timer = token
        heapq.heappush(self.heap, (deadline, key, token, owner))
        if self._stale > 1024 and self._stale * 2 > len(self.heap):
            self._compact()

    def load(self, entries: list[tuple[float, str, int, Any]], next_token: int) -> None:
        """Arm many timers at once (restoring a snapshot of a million waiting instances):
        the caller built the heap entries and set each owner's `timer` to its entry's token
        (all below `next_token`); one heapify instead of a million pushes."""
        if self.heap:
            raise RuntimeError("TimerQueue.load needs an empty queue")
        self._next_token = max(self._next_token, next_token)
        self.heap.extend(entries)
        heapq.heapify(self.heap)

    def cancel(self, owner: TimerOwner) -> None:
        if owner.timer:
            owner.timer = 0
            self._stale += 1

    def next_deadline(self) -> float | None:
        heap = self.heap
        while heap and heap[0][3].timer != heap[0][2]:
            heapq.heappop(heap)
            self._stale -= 1
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> tuple[float, Any] | None:
        """The earliest live (deadline, owner) due at or before `now`, disarmed; else None.

        Ties break by key, so firing order is deterministic.
        """
        deadline = self.next_deadline()
        if deadline is None or deadline > now:
            return None
        owner = heapq.heappop(self.heap)[3]
        owner.timer = 0
        return deadline, owner

    def _compact(self) -> None:
        self.heap[:] = [entry for entry in self.heap if entry[3].timer == entry[2]]
        heapq.heapify(self.heap)  # in place: the engine holds a reference to this list
        self._stale = 0
