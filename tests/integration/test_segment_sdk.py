"""The official Segment SDK (`segment-analytics-python`), unchanged, against the real daemon.

The SDK posts only to `/v1/batch`, sends the write key twice (Basic auth and body), JSON null
for absent fields, `+00:00` timestamps and microsecond `sentAt`; whatever it does, journeyd
must answer so that the SDK reports no error and the journeys run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import segment.analytics.consumer as sdk_consumer
from daemon_proc import CART, DaemonProcess, start_daemon
from segment.analytics import Client
from segment.analytics.request import APIError, post

KEY = "test-key"

PING = {
    "id": "ping",
    "entry": {"event": "Ping", "rule": "re-enter", "unique_identifier": "n"},
    "steps": [{"id": "pong", "type": "send", "destination": "outbox", "event_name": "Pong"}],
}


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def for_user(handle: DaemonProcess, user: str) -> list[dict[str, Any]]:
    return [d for d in handle.read_deliveries() if user in (d.get("userId"), d.get("anonymousId"))]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    handle = start_daemon(
        tmp_path_factory.mktemp("sdk"),
        journeys=[CART, PING],
        # one write at a time: deliveries land in the order they were made
        settings={
            "destinations": {
                "outbox": {"type": "file", "path": "deliveries.jsonl", "concurrency": 1}
            }
        },
    )
    try:
        assert handle.http_url is not None
        wait_until(
            lambda: httpx.get(f"{handle.http_url}/readyz", timeout=5).status_code == 200,
            what="/readyz",
        )
        yield handle
    finally:
        code = handle.stop()
        assert code == 0, handle.logs[-10:]


@dataclass
class Posts:
    """Every /v1/batch request the SDK's consumer thread made, and how each ended."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def statuses(self) -> list[int | str]:
        return [c["status"] for c in self.calls]


@pytest.fixture
def posts(monkeypatch: pytest.MonkeyPatch) -> Posts:
    """Wrap the SDK's real `post` (still sending for real) to see each request it made."""
    seen = Posts()

    def recording_post(*args: Any, **kwargs: Any) -> Any:
        record = {
            "events": len(kwargs.get("batch", [])),
            "gzip": kwargs.get("gzip"),
            "retry_count": kwargs.get("retry_count", 0),
            "status": "pending",
        }
        seen.calls.append(record)
        try:
            response = post(*args, **kwargs)
        except APIError as exc:
            record["status"] = exc.status
            raise
        except Exception as exc:
            record["status"] = type(exc).__name__
            raise
        record["status"] = response.status_code
        return response

    monkeypatch.setattr(sdk_consumer, "post", recording_post)
    return seen


@contextmanager
def sdk_client(daemon: DaemonProcess, **options: Any) -> Iterator[tuple[Client, list[Any]]]:
    """A Client pointed at the daemon, collecting every on_error report; stopped afterwards."""
    errors: list[Any] = []
    options.setdefault("write_key", KEY)
    client = Client(
        host=daemon.http_url,
        on_error=lambda error, batch: errors.append((error, len(batch))),
        max_retries=3,
        **options,
    )
    try:
        yield client, errors
    finally:
        if client.consumers:
            client.join()


@pytest.mark.parametrize("gzip", [True, False], ids=["gzip", "plain"])
def test_identify_and_track_run_the_cart_journey(
    daemon: DaemonProcess, posts: Posts, gzip: bool
) -> None:
    """SDK identify + Cart Modified (async mode) -> the nudge carries the identified email."""
    user = uid("ana")
    email = f"{user}@example.org"
    with sdk_client(daemon, sync_mode=False, gzip=gzip) as (client, errors):
        client.identify(user, {"email": email, "first_name": "Ana"})
        client.track(user, "Cart Modified", {"cart_id": "c-1", "total": 42.5})
        client.flush()
    assert errors == []
    assert posts.calls, "the SDK never posted"
    assert {c["status"] for c in posts.calls} == {200}
    assert {c["gzip"] for c in posts.calls} == {gzip}
    wait_until(lambda: bool(for_user(daemon, user)), what="the nudge")
    [nudge] = for_user(daemon, user)
    assert nudge["event"] == "Cart Abandoned"
    assert nudge["userId"] == user
    assert nudge["properties"]["email"] == email
    assert nudge["properties"]["journey_context"] == {
        "Cart Modified": {"cart_id": "c-1", "total": 42.5}
    }


@pytest.mark.parametrize("gzip", [True, False], ids=["gzip", "plain"])
def test_many_events_in_several_batches_are_all_accepted(
    daemon: DaemonProcess, posts: Posts, gzip: bool
) -> None:
    """250 events with upload_size=100: several /v1/batch posts, all 200, all 250 run."""
    users = [uid("many") for _ in range(250)]
    with sdk_client(daemon, sync_mode=False, gzip=gzip, upload_size=100) as (client, errors):
        for user in users:
            ok, _ = client.track(user, "Ping", {"n": user})
            assert ok
        client.flush()
    assert errors == []
    assert len(posts.calls) >= 3  # at most 100 events per request
    assert max(c["events"] for c in posts.calls) <= 100
    assert sum(c["events"] for c in posts.calls) == 250
    assert {c["status"] for c in posts.calls} == {200}
    assert {c["retry_count"] for c in posts.calls} == {0}  # nothing needed a retry

    def all_ran() -> bool:
        delivered = {d["userId"] for d in daemon.read_deliveries()}
        return delivered.issuperset(users)

    wait_until(all_ran, what="250 Pong deliveries")
    for user in users[::50]:
        [pong] = for_user(daemon, user)
        assert pong["event"] == "Pong"


@pytest.mark.parametrize("gzip", [True, False], ids=["gzip", "plain"])
def test_sync_mode_posts_each_call_and_runs_the_journey(daemon: DaemonProcess, gzip: bool) -> None:
    """sync_mode=True posts each call as its own batch; a non-2xx would raise right here."""
    user = uid("sync")
    email = f"{user}@example.org"
    with sdk_client(daemon, sync_mode=True, gzip=gzip) as (client, errors):
        assert client.identify(user, {"email": email})[0]
        assert client.track(user, "Cart Modified", {"cart_id": "s-1", "total": 5})[0]
    assert errors == []
    wait_until(lambda: bool(for_user(daemon, user)), what="the nudge")
    [nudge] = for_user(daemon, user)
    assert nudge["properties"]["email"] == email


def test_every_call_type_is_accepted(daemon: DaemonProcess) -> None:
    """page, screen, group and alias (with the SDK's null name/category) raise nothing."""
    user = uid("calls")
    with sdk_client(daemon, sync_mode=True) as (client, errors):
        client.page(user, properties={"url": "/"})  # name and category go out as null
        client.page(user, "Docs", "Help")
        client.screen(user, name="Main")
        client.group(user, "acme", {"plan": "pro"})
        client.alias("anon-previous", user)
        client.identify(anonymous_id=f"anon-{user}", traits={"email": "x@example.org"})
    assert errors == []


def test_anonymous_only_track_runs_for_the_anonymous_user(daemon: DaemonProcess) -> None:
    """A track with only anonymousId (userId null on the wire) starts an instance for it."""
    anonymous = uid("anon")
    with sdk_client(daemon, sync_mode=True) as (client, errors):
        client.track(anonymous_id=anonymous, event="Ping", properties={"n": anonymous})
    assert errors == []
    wait_until(lambda: bool(for_user(daemon, anonymous)), what="the Pong")
    [pong] = for_user(daemon, anonymous)
    assert (pong["userId"], pong["anonymousId"]) == (None, anonymous)


def test_an_sdk_retry_of_the_same_batch_runs_once(daemon: DaemonProcess) -> None:
    """The SDK's retry (same messageIds, new sentAt, X-Retry-Count) is acknowledged, not rerun."""
    user = uid("retry")
    # send=False builds the exact message the SDK would queue, without sending it.
    with sdk_client(daemon, sync_mode=True, send=False) as (client, _):
        _, message = client.track(user, "Ping", {"n": user})
    first = post(KEY, host=daemon.http_url, gzip=True, batch=[message])
    again = post(KEY, host=daemon.http_url, gzip=True, batch=[message], retry_count=1)
    assert (first.status_code, again.status_code) == (200, 200)
    # A different user afterwards, to know the engine has handled both posts above.
    sentinel = uid("sentinel")
    with sdk_client(daemon, sync_mode=True) as (client, _):
        client.track(sentinel, "Ping", {"n": sentinel})
    # One delivery worker: deliveries land in engine order, so once the sentinel's is in,
    # a second run of the retried message would be too.
    wait_until(lambda: bool(for_user(daemon, sentinel)), what="the sentinel's Pong")
    assert len(for_user(daemon, user)) == 1


def test_wrong_write_key_is_reported_by_the_sdk_and_not_retried(
    daemon: DaemonProcess, posts: Posts
) -> None:
    """A bad key reaches on_error as APIError 401 with journeyd's code, after one attempt."""
    with sdk_client(daemon, sync_mode=False, write_key="not-the-key") as (client, errors):
        client.track(uid("nokey"), "Ping", {"n": "x"})
        client.flush()
    assert len(errors) == 1
    error, count = errors[0]
    assert isinstance(error, APIError)
    assert (error.status, error.code, count) == (401, "unauthorized", 1)
    assert posts.statuses() == [401]  # final: the SDK did not retry it
