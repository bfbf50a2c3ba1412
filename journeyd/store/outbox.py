"""Deliveries decided but not yet finished: the outbox's in-memory side.

Every delivery the engine decides is an intent record in the WAL before the pool gets it,
and its outcome (delivered or dead-lettered) is a record after. What is decided and not
finished lives here, goes into every snapshot, and is re-queued with the same messageId
after a restart: delivery is at least once, with a stable idempotency key.
"""

from __future__ import annotations

from collections.abc import Iterable

from journeyd.engine import Delivery


class Outbox:
    __slots__ = ("_pending",)

    def __init__(self, pending: Iterable[Delivery] = ()) -> None:
        self._pending: dict[str, Delivery] = {d.message_id: d for d in pending}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._pending

    def add(self, delivery: Delivery) -> None:
        self._pending[delivery.message_id] = delivery

    def done(self, message_id: str) -> None:
        self._pending.pop(message_id, None)

    def pending(self) -> list[Delivery]:
        """In decision order (dicts keep insertion order), so a restart re-sends in order."""
        return list(self._pending.values())
