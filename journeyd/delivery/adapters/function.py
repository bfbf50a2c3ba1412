"""The `function` destination: a user's Python callable instead of an HTTP API (a `Runner`).

What the callable receives, may return and may raise is documented for users in
journeyd/delivery/function_api.py. Here: importing it when the destination is built (so
`journeyd check` names a module that cannot be imported), running it on trio (`async def`)
or in a worker thread (plain `def`) under a timeout, and turning whatever happens into one
outcome per delivery. Nothing the function does escapes `run`, except trio's own
cancellation of the caller (which is never swallowed).

A plain `def` that outlives its timeout cannot be killed (Python has no way to stop a
thread): the lane stops waiting and retries the batch, but the thread runs on until it
returns by itself and keeps one of this destination's `concurrency` thread slots meanwhile,
so hung calls can slow this destination but never others. An `async def` that blocks the
event loop (e.g. `time.sleep`) cannot be interrupted at all: that is a bug in the function.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import msgspec
import structlog
import trio

from journeyd.delivery.adapter import BatchLimits, Delivered, Outcome, Reject, Retry
from journeyd.delivery.function_api import RejectItem, RetryLater
from journeyd.delivery.retry import DestinationConfigError, Verdict, classify_status
from journeyd.engine import Delivery
from journeyd.settings import FunctionDestination

log = structlog.get_logger("journeyd.delivery")

DEFAULT_TIMEOUT_S = 10.0  # DeliverySettings.timeout's default
DEFAULTS = BatchLimits(
    max_items=20,  # Segment's onBatch default
    max_bytes=1_000_000,
    max_wait_s=1.0,
    rate_per_s=None,
    concurrency=4,
)
_ERROR_CHARS = 200
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(list[dict[str, Any]])


class _Garbage(Exception):
    """The function's return value does not have the documented shape."""


def load_function(name: str, spec: str) -> Callable[..., Any]:
    """Import `package.module:attribute[.attribute…]`; every failure names its exact reason."""
    module_name, colon, path = spec.partition(":")
    if not colon or not module_name.strip() or not path.strip():
        raise DestinationConfigError(
            f'destination {name}: function = {spec!r} must look like "package.module:function"'
        )
    module_name, path = module_name.strip(), path.strip()
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise DestinationConfigError(
            f"destination {name}: cannot import module {module_name!r} (function = {spec!r}): {exc}"
        ) from exc
    except Exception as exc:
        raise DestinationConfigError(
            f"destination {name}: importing module {module_name!r} (function = {spec!r}) "
            f"raised {type(exc).__name__}: {exc}"
        ) from exc
    for attribute in path.split("."):
        try:
            target = getattr(target, attribute)
        except AttributeError as exc:
            raise DestinationConfigError(
                f"destination {name}: module {module_name!r} has no attribute {path!r} "
                f"(function = {spec!r})"
            ) from exc
    if not callable(target):
        raise DestinationConfigError(
            f"destination {name}: {spec} is not callable (it is a {type(target).__name__})"
        )
    return target  # type: ignore[no-any-return]


def is_async(function: Callable[..., Any]) -> bool:
    """`async def` functions, partials of them and objects with an `async def __call__`."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - the method itself, not callable()
    )


class FunctionRunner:
    def __init__(
        self,
        name: str,
        config: FunctionDestination,
        *,
        limits: BatchLimits = DEFAULTS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        function: Callable[..., Any] | None = None,
    ) -> None:
        self.name = name
        self.spec = config.function
        self.function = load_function(name, config.function) if function is None else function
        self.timeout_s = timeout_s
        self._limits = limits
        self._async = is_async(self.function)
        self._threads = trio.CapacityLimiter(limits.concurrency)

    @property
    def limits(self) -> BatchLimits:
        return self._limits

    async def run(
        self, batch: Sequence[Delivery], *, timeout_s: float | None = None
    ) -> Sequence[Outcome]:
        """One outcome per delivery; `timeout_s` (the lane's) overrides the configured one."""
        count = len(batch)
        if not count:
            return []
        limit_s = self.timeout_s if timeout_s is None else timeout_s
        # Copies, so the function cannot change what journeyd holds (or dead-letters).
        payloads = _DECODER.decode(_ENCODER.encode([delivery.payload for delivery in batch]))
        try:
            with trio.move_on_after(limit_s) as scope:
                if self._async:
                    result = await self.function(payloads)
                else:
                    result = await trio.to_thread.run_sync(
                        partial(_call_sync, self.function, payloads),
                        limiter=self._threads,
                        abandon_on_cancel=True,
                    )
        except RetryLater as exc:
            return [Retry(exc.message, after_s=exc.after_s)] * count
        except RejectItem as exc:
            return [Reject(exc.message)] * count
        except (Exception, SystemExit) as exc:
            error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
            log.warning("function.failed", destination=self.name, function=self.spec, error=error)
            return [Retry(f"function {self.spec} raised {error}")] * count
        if scope.cancelled_caught:
            log.warning("function.timed_out", destination=self.name, function=self.spec)
            return [Retry(f"function {self.spec} did not return within {limit_s:g} s")] * count
        try:
            return interpret(result, count)
        except _Garbage as exc:
            log.warning(
                "function.returned_garbage",
                destination=self.name,
                function=self.spec,
                error=str(exc),
            )
            return [Reject(f"function {self.spec} returned garbage: {exc}")] * count


class _Coroutine:
    """What a plain `def` returned a coroutine (trio refuses to hand one back from a thread)."""


def _call_sync(function: Callable[..., Any], payloads: list[dict[str, Any]]) -> object:
    result = function(payloads)
    if inspect.iscoroutine(result):
        result.close()
        return _Coroutine()
    return result


def interpret(result: object, count: int) -> list[Outcome]:
    """The documented return shapes (function_api) as outcomes; `_Garbage` for anything else."""
    if result is None:
        return [Delivered()] * count
    if inspect.iscoroutine(result):
        result.close()
    if isinstance(result, _Coroutine) or inspect.iscoroutine(result):
        raise _Garbage("a coroutine (declare the function `async def`)")
    if not isinstance(result, list | tuple):
        raise _Garbage(f"{type(result).__name__}, expected None or a list of {count} results")
    if len(result) != count:
        raise _Garbage(f"a list of {len(result)} results for a batch of {count}")
    return [_item(position, entry) for position, entry in enumerate(result)]


def _item(position: int, entry: object) -> Outcome:
    if entry is None or entry is True:
        return Delivered()
    if isinstance(entry, RetryLater):
        return Retry(entry.message, after_s=entry.after_s)
    if isinstance(entry, RejectItem):
        return Reject(entry.message)
    if isinstance(entry, dict):
        status = entry.get("status")
        if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
            error = entry.get("error") or entry.get("errormessage") or f"status {status}"
            verdict = classify_status(status)
            if verdict is Verdict.DELIVERED:
                return Delivered()
            if verdict is Verdict.RETRY:
                return Retry(str(error)[:_ERROR_CHARS], status=status)
            return Reject(str(error)[:_ERROR_CHARS], status=status)
        raise _Garbage(f"result {position} is a dict without an HTTP status (100-599)")
    raise _Garbage(f"result {position} is {type(entry).__name__} {entry!r:.60}")
