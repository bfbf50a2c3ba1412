"""What a destination function may raise or return: the public API for user-written functions.

A `function` destination names a Python callable in the config::

    [destinations.crm]
    type = "function"
    function = "mycompany.journeys:send_to_crm"   # "package.module:callable"

The callable is imported when the destination is built (`journeyd check` reports a module
that cannot be imported, a missing attribute or something that is not callable). It is
called with one argument, a **list of delivery payloads** (plain dicts, copies: changing
them changes nothing in journeyd), at most `batch_size` of them::

    from journeyd.delivery.function_api import RejectItem, RetryLater

    async def send_to_crm(payloads: list[dict]) -> list | None:   # or a plain `def`
        ...

An `async def` runs on journeyd's trio event loop: it must not block (use trio or anyio
I/O, or `trio.to_thread.run_sync` for blocking calls). A plain `def` runs in a worker
thread, so blocking calls are fine there.

**What the function returns**

- `None`: every payload of the batch was delivered.
- A list with exactly one entry per payload, in the same order, each entry one of:
  - `None` or `True`: delivered;
  - a `RetryLater(...)` instance: try this payload again later;
  - a `RejectItem(...)` instance: never retry this payload; it goes to the dead letters;
  - a dict `{"status": <int>, "error": "..."}`, the way Segment's `onBatch` answers:
    a 2xx status is delivered; 408, 429 and 5xx (except 501 and 505) are retried; any
    other status is rejected. `"errormessage"` is accepted as a synonym of `"error"`.

Anything else (a list of the wrong length, an entry of another type, a dict without an
integer `status`) is a bug in the function: the whole batch is rejected with a
"returned garbage" error, so it lands in the dead letters where it can be redriven after
the function is fixed.

**What the function raises**

- `RetryLater(message, after_s=None)`: retry the whole batch, after `after_s` seconds if
  given (otherwise journeyd's backoff decides).
- `RejectItem(message)`: reject the whole batch (dead letters).
- Any other exception: retried like a network error, with the exception's type and message
  as the error (and logged). Retries are bounded by the destination's `max_attempts` and
  `max_age`, after which the delivery is dead-lettered.

**Timeouts.** Each call has the destination's `timeout` (default `delivery.timeout`). When it
passes, the batch is retried. An `async def` is cancelled. A plain `def` cannot be stopped:
Python cannot kill a thread, so journeyd stops waiting for it but the thread runs on until
the function returns by itself; while it does, it keeps one of the destination's
`concurrency` slots. Give blocking calls their own timeouts.

Nothing a function raises or returns can stop the daemon.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BatchResult",
    "DestinationFunctionError",
    "ItemResult",
    "RejectItem",
    "RetryLater",
]


class DestinationFunctionError(Exception):
    """Base of the exceptions a destination function raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RetryLater(DestinationFunctionError):
    """Deliver again later. Raised: the whole batch; returned as a list entry: that payload.

    `after_s` asks for a minimum wait in seconds (like an HTTP `Retry-After`); None lets
    journeyd's exponential backoff choose.
    """

    def __init__(self, message: str, after_s: float | None = None) -> None:
        super().__init__(message)
        if after_s is not None and not after_s >= 0:
            raise ValueError(f"after_s must be a number of seconds >= 0, got {after_s!r}")
        self.after_s = after_s

    def __repr__(self) -> str:
        return f"RetryLater({self.message!r}, after_s={self.after_s!r})"


class RejectItem(DestinationFunctionError):
    """Never deliver (bad data). Raised: the whole batch; returned as a list entry: that one."""

    def __repr__(self) -> str:
        return f"RejectItem({self.message!r})"


ItemResult = None | bool | RetryLater | RejectItem | dict[str, Any]
"""One entry of a returned list (see the module documentation)."""

BatchResult = list[ItemResult] | None
"""What a destination function returns."""
