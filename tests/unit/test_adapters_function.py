"""The `function` destination: importing user functions and turning what they do into outcomes."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
from fixtures import functions

from journeyd.delivery.adapter import Delivered, Reject, Retry
from journeyd.delivery.adapters import build_adapter, default_limits
from journeyd.delivery.adapters.function import FunctionRunner
from journeyd.delivery.function_api import RejectItem, RetryLater
from journeyd.delivery.retry import DestinationConfigError
from journeyd.engine import Delivery
from journeyd.settings import FunctionDestination


def delivery(n: int, **properties: Any) -> Delivery:
    payload = {
        "type": "track",
        "event": "Trial Started",
        "userId": f"u-{n}",
        "anonymousId": None,
        "messageId": f"m-{n}",
        "timestamp": "2026-03-01T09:18:02.000Z",
        "properties": {"journey_context": {}, **properties},
        "context": {"journeyd": {"version": "0.1.0"}},
    }
    return Delivery(
        at=1772356682.0,
        user=f"u-{n}",
        step="s",
        destination="fn",
        message_id=f"m-{n}",
        payload=payload,
    )


def runner(name: str, *, timeout_s: float = 10.0) -> FunctionRunner:
    config = FunctionDestination(function=f"fixtures.functions:{name}")
    built = build_adapter("fn", config, environ={})
    assert isinstance(built, FunctionRunner)
    built.timeout_s = timeout_s
    return built


BATCH = [delivery(1), delivery(2)]


@pytest.mark.parametrize("name", ["ok", "ok_sync", "record", "async_callable"])
async def test_success_delivers_all(name: str) -> None:
    """None (or all True) from an async or sync function means every payload was delivered."""
    assert await runner(name).run(BATCH) == [Delivered(), Delivered()]


async def test_function_receives_the_payloads() -> None:
    """The function is called with the list of payloads, equal to the deliveries' payloads."""
    functions.RECEIVED.clear()
    await runner("record").run(BATCH)
    assert [[BATCH[0].payload, BATCH[1].payload]] == functions.RECEIVED


async def test_function_gets_copies() -> None:
    """A function that mutates its payloads cannot change what journeyd holds."""
    before = [dict(d.payload) for d in BATCH]
    await runner("mutate").run(BATCH)
    assert [d.payload for d in BATCH] == before
    assert "injected" not in BATCH[0].payload["properties"]["journey_context"]


@pytest.mark.parametrize(("name", "after"), [("retry_later", 30.0), ("retry_later_sync", None)])
async def test_raising_retry_later_retries_all(name: str, after: float | None) -> None:
    """RetryLater raised retries the whole batch, with its after_s."""
    expected = Retry("crm is busy", after_s=after)
    assert await runner(name).run(BATCH) == [expected, expected]


@pytest.mark.parametrize("name", ["reject_item", "reject_item_sync"])
async def test_raising_reject_item_rejects_all(name: str) -> None:
    """RejectItem raised rejects the whole batch with its message."""
    expected = Reject("the crm refuses these")
    assert await runner(name).run(BATCH) == [expected, expected]


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("boom", "function fixtures.functions:boom raised ValueError: kaput"),
        ("boom_sync", "function fixtures.functions:boom_sync raised KeyError: 'missing'"),
        ("exits", "function fixtures.functions:exits raised SystemExit: 3"),
    ],
)
async def test_other_exception_is_retried(name: str, error: str) -> None:
    """Any other exception (even SystemExit) is retried with its type and message, not raised."""
    assert await runner(name).run(BATCH) == [Retry(error), Retry(error)]


async def test_async_hang_times_out(autojump_clock: trio.testing.MockClock) -> None:
    """A hanging async function is cancelled at the timeout and the batch retried."""
    start = trio.current_time()
    outcomes = await runner("hang", timeout_s=10).run(BATCH)
    assert trio.current_time() - start == pytest.approx(10)
    expected = Retry("function fixtures.functions:hang did not return within 10 s")
    assert outcomes == [expected, expected]


async def test_sync_hang_stops_waiting() -> None:
    """A hanging plain def: the runner stops waiting at the timeout; its thread runs on."""
    functions.RELEASE.clear()
    try:
        started = time.monotonic()
        outcomes = await runner("hang_sync").run(BATCH, timeout_s=0.2)
        assert time.monotonic() - started < 5
        expected = Retry("function fixtures.functions:hang_sync did not return within 0.2 s")
        assert outcomes == [expected, expected]
    finally:
        functions.RELEASE.set()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("garbage", "str, expected None or a list of 2 results"),
        ("garbage_sync", "dict, expected None or a list of 2 results"),
        ("wrong_length", "a list of 3 results for a batch of 2"),
        ("garbage_entry", "result 1 is str 'yes'"),
        ("status_without_int", "result 0 is a dict without an HTTP status (100-599)"),
        ("returns_coroutine", "a coroutine (declare the function `async def`)"),
    ],
)
async def test_garbage_rejects_all(name: str, why: str) -> None:
    """A return value of the wrong shape rejects the whole batch with a 'returned garbage' error."""
    expected = Reject(f"function fixtures.functions:{name} returned garbage: {why}")
    assert await runner(name).run(BATCH) == [expected, expected]


@pytest.mark.parametrize("name", ["per_item", "per_item_sync"])
async def test_per_item_results(name: str) -> None:
    """Per-item results map one to one: True/None/2xx delivered, retry/reject/status classes."""
    outcomes = ["none", "true", "retry", "reject", "status200", "status429", "status500",
                "status400", "status501"]  # fmt: skip
    batch = [delivery(n, outcome=outcome) for n, outcome in enumerate(outcomes)]
    assert await runner(name).run(batch) == [
        Delivered(),
        Delivered(),
        Retry("later, please", after_s=5),
        Reject("invalid email"),
        Delivered(),
        Retry("slow down", status=429),
        Retry("upstream down", status=500),
        Reject("bad field", status=400),
        Reject("status 501", status=501),
    ]


async def test_empty_batch_does_not_call() -> None:
    """An empty batch gives no outcomes and does not call the function."""
    functions.RECEIVED.clear()
    assert await runner("record").run([]) == []
    assert functions.RECEIVED == []


def test_not_importable_names_the_module() -> None:
    """A function whose module cannot be imported fails the build, naming the module."""
    config = FunctionDestination(function="no_such_package.hooks:send")
    with pytest.raises(
        DestinationConfigError, match=r"cannot import module 'no_such_package.hooks'"
    ):
        build_adapter("crm", config, environ={})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fixtures.functions:nope", r"module 'fixtures.functions' has no attribute 'nope'"),
        ("fixtures.functions:NOT_CALLABLE", r"is not callable \(it is a int\)"),
        ("fixtures.functions", r'must look like "package.module:function"'),
        (":ok", r'must look like "package.module:function"'),
    ],
)
def test_bad_function_setting(spec: str, message: str) -> None:
    """A missing attribute, a non-callable or a malformed spec is a config error with the reason."""
    with pytest.raises(DestinationConfigError, match=message):
        build_adapter("crm", FunctionDestination(function=spec), environ={})


def test_timeout_and_limits_from_config() -> None:
    """The destination's timeout and batch_size reach the runner."""
    config = FunctionDestination(function="fixtures.functions:ok", timeout="3s", batch_size=5)
    built = build_adapter("fn", config, environ={})
    assert isinstance(built, FunctionRunner)
    assert built.timeout_s == 3.0
    assert built.limits == default_limits(config)
    assert built.limits.max_items == 5


def test_api_types() -> None:
    """The public exception types carry their message and after_s; a negative after_s is refused."""
    assert RetryLater("x", after_s=2).after_s == 2
    assert RetryLater("x").message == "x"
    assert RejectItem("y").message == "y"
    with pytest.raises(ValueError, match="after_s"):
        RetryLater("x", after_s=-1)
