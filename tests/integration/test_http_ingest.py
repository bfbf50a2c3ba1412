"""The Segment-compatible HTTP API of the real daemon (a subprocess), over real HTTP with httpx.

One daemon serves most tests (module fixture; unique user ids keep them apart); the
backpressure test starts its own with tiny queues and a destination that never answers.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from daemon_proc import CART, DaemonProcess, start_daemon
from held_webhook import HeldWebhook

KEY = "test-key"
SECOND_KEY = "second-key"
AUTH = (KEY, "")
OK = {"success": True}

# One send step, no wait: each accepted Ping (per identifier `n`) is exactly one delivery.
PING = {
    "id": "ping",
    "entry": {"event": "Ping", "rule": "re-enter", "unique_identifier": "n"},
    "steps": [{"id": "pong", "type": "send", "destination": "outbox", "event_name": "Pong"}],
}


# --- harness ---------------------------------------------------------------------------------


def launch(
    directory: Path,
    journeys: list[dict[str, Any]] | None = None,
    settings: dict[str, Any] | None = None,
) -> DaemonProcess:
    """start_daemon (HTTP on 127.0.0.1:0), returned once /readyz answers 200."""
    handle = start_daemon(directory, journeys, settings)
    try:
        assert handle.http_url is not None, "daemon.ready named no HTTP listener"
        wait_until(lambda: readyz(handle) == 200, timeout=30, what="/readyz")
    except BaseException:
        handle.kill()
        raise
    return handle


def readyz(handle: DaemonProcess) -> int | None:
    try:
        return httpx.get(f"{handle.http_url}/readyz", timeout=5).status_code
    except httpx.TransportError:
        return None


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ping(user: str, n: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"userId": user, "event": "Ping", "properties": {"n": n or user}, **fields}


def as_item(body: dict[str, Any], kind: str = "track") -> dict[str, Any]:
    return {"type": kind, **body}


def for_user(handle: DaemonProcess, user: str) -> list[dict[str, Any]]:
    return [d for d in handle.read_deliveries() if d.get("userId") == user]


def assert_error(response: httpx.Response, status: int, code: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["success"] is False
    assert body["code"] == code
    assert isinstance(body["message"], str)
    for fragment in fragments:
        assert fragment in body["message"], body


def settle(handle: DaemonProcess, client: httpx.Client) -> None:
    """Send a sentinel Ping and wait for its delivery: everything sent before is decided.

    The shared daemon has one delivery worker, so deliveries land in the order the engine
    produced them; once the sentinel's is in the file, earlier ones would be too.
    """
    sentinel = uid("sentinel")
    assert client.post("/v1/track", json=ping(sentinel)).status_code == 200
    wait_until(lambda: bool(for_user(handle, sentinel)), what=f"delivery for {sentinel}")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    handle = launch(
        tmp_path_factory.mktemp("http"),
        journeys=[CART, PING],
        settings={
            "daemon": {"write_keys": [KEY, SECOND_KEY]},
            "destinations": {
                "outbox": {"type": "file", "path": "deliveries.jsonl", "concurrency": 1}
            },
        },
    )
    try:
        yield handle
    finally:
        code = handle.stop()
        assert code == 0, handle.logs[-10:]


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[httpx.Client]:
    assert daemon.http_url is not None
    with httpx.Client(base_url=daemon.http_url, auth=AUTH, timeout=30) as http:
        yield http


def assert_still_serving(daemon: DaemonProcess, client: httpx.Client) -> None:
    assert daemon.proc.poll() is None, "the daemon exited"
    response = client.post("/v1/identify", json={"userId": uid("alive")})
    assert (response.status_code, response.json()) == (200, OK)


# --- endpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/track", {"userId": "ana", "event": "Viewed", "properties": {"a": 1}}),
        ("/v1/identify", {"userId": "ana", "traits": {"email": "ana@example.org"}}),
        ("/v1/page", {"userId": "ana", "name": "Home", "properties": {"url": "/"}}),
        ("/v1/screen", {"anonymousId": "anon-1", "name": "Main"}),
        ("/v1/group", {"userId": "ana", "groupId": "acme", "traits": {"plan": "pro"}}),
        ("/v1/alias", {"userId": "ana", "previousId": "anon-1"}),
        (
            "/v1/batch",
            {
                "batch": [
                    {"type": "identify", "userId": "ana", "traits": {"plan": "pro"}},
                    {"type": "track", "userId": "ana", "event": "Viewed"},
                    {"type": "page", "anonymousId": "anon-1"},
                    {"type": "screen", "userId": "ana"},
                    {"type": "group", "userId": "ana", "groupId": "acme"},
                    {"type": "alias", "userId": "ana", "previousId": "anon-1"},
                ]
            },
        ),
    ],
)
def test_every_endpoint_answers_200_success(
    client: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    """Each Segment endpoint accepts a valid body with 200 {"success": true}."""
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    assert response.json() == OK
    assert response.headers["content-type"] == "application/json"


def test_healthz_and_readyz(client: httpx.Client) -> None:
    """The liveness and readiness probes both answer 200 on a running daemon."""
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def test_unknown_endpoint_is_404_and_get_is_405(
    daemon: DaemonProcess, client: httpx.Client
) -> None:
    """Wrong path: 404; wrong method on an ingest path: 405; both JSON errors."""
    assert_error(client.post("/v1/nothing", json={}), 404, "not_found")
    assert_error(client.get("/v1/track"), 405, "method_not_allowed")
    assert_error(client.get("/v1/batch"), 405, "method_not_allowed")
    assert_still_serving(daemon, client)


def test_never_a_redirect(client: httpx.Client) -> None:
    """No path, method or body makes journeyd answer 3xx (SDKs disagree on its meaning)."""
    paths = [
        "/",
        "/v1",
        "/v1/",
        "/v1/track",
        "/v1/track/",
        "/v1/batch/",
        "/v1/Track",
        "/V1/track",
        "/v1/t",
        "/v1/b",
        "/healthz/",
        "/readyz",
        "/v1/track?x=1",
        "/index.html",
    ]
    seen = []
    for path in paths:
        for method in ("GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE"):
            response = client.request(method, path, content=b'{"userId":"r","event":"x"}')
            seen.append((method, path, response.status_code))
    redirects = [s for s in seen if 300 <= s[2] < 400]
    assert redirects == []


# --- auth ------------------------------------------------------------------------------------


def test_write_key_as_basic_auth(daemon: DaemonProcess) -> None:
    """Basic auth with the write key as user name and an empty password is accepted."""
    response = httpx.post(f"{daemon.http_url}/v1/track", json=ping(uid("b")), auth=AUTH)
    assert (response.status_code, response.json()) == (200, OK)


def test_write_key_in_body_only(daemon: DaemonProcess) -> None:
    """`writeKey` in the body with no Authorization header is accepted (single and batch)."""
    single = httpx.post(f"{daemon.http_url}/v1/track", json={**ping(uid("wk")), "writeKey": KEY})
    batch = httpx.post(
        f"{daemon.http_url}/v1/batch",
        json={"batch": [as_item(ping(uid("wk")))], "writeKey": KEY},
    )
    assert (single.status_code, single.json()) == (200, OK)
    assert (batch.status_code, batch.json()) == (200, OK)


@pytest.mark.parametrize(
    ("headers", "body_key", "fragment"),
    [
        ({}, None, "missing write key"),
        ({"Authorization": "Basic d3Jvbmc6"}, None, "unknown write key"),  # "wrong:"
        ({}, "wrong", "unknown write key"),
        ({"Authorization": f"Bearer {KEY}"}, None, "missing write key"),
    ],
    ids=["missing", "wrong-basic", "wrong-body", "bearer"],
)
def test_bad_or_missing_write_key_is_401(
    daemon: DaemonProcess,
    client: httpx.Client,
    headers: dict[str, str],
    body_key: str | None,
    fragment: str,
) -> None:
    """No usable write key: 401 with a JSON error, nothing runs, the daemon carries on."""
    user = uid("unauth")
    body = ping(user) if body_key is None else {**ping(user), "writeKey": body_key}
    response = httpx.post(f"{daemon.http_url}/v1/track", json=body, headers=headers)
    assert_error(response, 401, "unauthorized", fragment)
    settle(daemon, client)
    assert for_user(daemon, user) == []


# --- what real clients send ------------------------------------------------------------------


def test_json_null_for_optional_fields(daemon: DaemonProcess, client: httpx.Client) -> None:
    """analytics-python's nulls (anonymousId, name, category, context...) are accepted."""
    user = uid("nulls")
    body = {
        "batch": [
            {
                "type": "page",
                "userId": user,
                "anonymousId": None,
                "name": None,
                "category": None,
                "properties": None,
                "context": None,
                "integrations": None,
                "messageId": None,
                "timestamp": None,
            },
            {
                "type": "track",
                "userId": user,
                "anonymousId": None,
                "event": "Ping",
                "properties": {"n": user},
                "traits": None,
                "context": None,
                "timestamp": None,
            },
        ],
        "sentAt": None,
        "context": None,
        "integrations": None,
    }
    response = client.post("/v1/batch", json=body)
    assert (response.status_code, response.json()) == (200, OK)
    wait_until(lambda: len(for_user(daemon, user)) == 1, what="the Ping with nulls to run")


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-03-01T09:15:00+00:00",
        "2026-03-01T09:15:00.1+00:00",
        "2026-03-01T09:15:00.12+00:00",
        "2026-03-01T09:15:00.123+00:00",
        "2026-03-01T09:15:00.1234+00:00",
        "2026-03-01T09:15:00.12345+00:00",
        "2026-03-01T09:15:00.123456+00:00",
        "2026-03-01T09:15:00.123Z",
        "2026-03-01T14:45:00.123+05:30",
    ],
)
def test_rfc3339_timestamps_are_accepted(client: httpx.Client, timestamp: str) -> None:
    """Any offset and 0-6 fraction digits, in timestamp and in sentAt, are accepted."""
    single = client.post("/v1/track", json=ping(uid("ts"), timestamp=timestamp, sentAt=timestamp))
    batch = client.post(
        "/v1/batch",
        json={"batch": [as_item(ping(uid("ts"), timestamp=timestamp))], "sentAt": timestamp},
    )
    assert (single.status_code, single.json()) == (200, OK), single.text
    assert (batch.status_code, batch.json()) == (200, OK), batch.text


# --- bad input -------------------------------------------------------------------------------

BAD_BODIES = [
    ("/v1/track", b"\x8b\x00garbage\xff", "body"),
    ("/v1/track", b'{"userId": "a", "event": "Ping", "properties": {"n"', "body"),
    ("/v1/track", b'{"userId": 42, "event": "Ping"}', "userId"),
    ("/v1/track", b'{"userId": "a", "event": "Ping", "properties": [1, 2]}', "properties"),
    ("/v1/track", b'{"event": "Ping", "properties": {"n": "x"}}', "userId"),
    ("/v1/track", b'{"userId": "a", "properties": {"n": "x"}}', "event"),
    ("/v1/identify", b'{"traits": {"email": "x@y"}}', "userId"),
    ("/v1/group", b'{"userId": "a"}', "groupId"),
    ("/v1/batch", b"garbage", "body"),
    ("/v1/batch", b'{"batch": [{"type": "track", "userId": "a", "event": "Ping"}', "body"),
    ("/v1/batch", b'{"batch": "nope"}', "batch"),
    (
        "/v1/batch",
        b'{"batch": [{"type": "track", "userId": "a", "event": "Ping"},'
        b' {"type": "track", "userId": 7, "event": "Ping"}]}',
        "batch[1].userId",
    ),
    (
        "/v1/batch",
        b'{"batch": [{"type": "track", "userId": "a", "event": "Ping"},'
        b' {"type": "track", "userId": "b", "event": "Ping", "properties": []}]}',
        "batch[1].properties",
    ),
    (
        "/v1/batch",
        b'{"batch": [{"type": "identify", "userId": "a"}, {"type": "track", "event": "Ping"}]}',
        "batch[1]",
    ),
    (
        "/v1/batch",
        b'{"batch": [{"type": "identify", "userId": "a"}, {"type": "track", "userId": "b"}]}',
        "batch[1].event",
    ),
]


@pytest.mark.parametrize(("path", "raw", "fragment"), BAD_BODIES)
def test_bad_input_is_400_naming_the_field_and_the_daemon_carries_on(
    daemon: DaemonProcess, client: httpx.Client, path: str, raw: bytes, fragment: str
) -> None:
    """Malformed or invalid bodies get 400 {success:false, code, message naming the field}."""
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_request", fragment)
    assert_still_serving(daemon, client)


def test_missing_id_in_a_batch_names_the_field_path(client: httpx.Client) -> None:
    """A batch item without userId/anonymousId: the message names `batch[1].userId`."""
    body = {"batch": [as_item(ping("a")), {"type": "track", "event": "Ping"}]}
    response = client.post("/v1/batch", json=body)
    assert_error(response, 400, "invalid_request", "batch[1].userId")


def test_oversize_single_event_is_413(daemon: DaemonProcess, client: httpx.Client) -> None:
    """A single event over 32 KB is 413, and a good event still goes through afterwards."""
    user = uid("big")
    response = client.post("/v1/track", json=ping(user, context={"blob": "x" * 33_000}))
    assert_error(response, 413, "payload_too_large")
    assert_still_serving(daemon, client)


def test_oversize_event_inside_a_batch_is_413(daemon: DaemonProcess, client: httpx.Client) -> None:
    """One item over 32 KB in an otherwise small batch is 413 naming the item."""
    body = {
        "batch": [as_item(ping(uid("s"))), as_item(ping(uid("b"), context={"x": "y" * 33_000}))]
    }
    response = client.post("/v1/batch", json=body)
    assert_error(response, 413, "payload_too_large", "batch[1]")
    assert_still_serving(daemon, client)


def test_oversize_batch_is_413(daemon: DaemonProcess, client: httpx.Client) -> None:
    """A request body over 500 KB (each item under 32 KB) is 413; none of it runs."""
    users = [uid("ob") for _ in range(26)]
    body = {"batch": [as_item(ping(u, context={"pad": "p" * 20_000})) for u in users]}
    raw = json.dumps(body).encode()
    assert 512_000 < len(raw) < 600_000
    response = client.post("/v1/batch", content=raw, headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large")
    settle(daemon, client)
    assert [u for u in users if for_user(daemon, u)] == []


def test_gzip_body_is_accepted(daemon: DaemonProcess, client: httpx.Client) -> None:
    """A gzip-encoded batch (Content-Encoding: gzip) is decoded and runs."""
    user = uid("gz")
    raw = gzip.compress(json.dumps({"batch": [as_item(ping(user))]}).encode())
    response = client.post(
        "/v1/batch",
        content=raw,
        headers={"content-encoding": "gzip", "content-type": "application/json"},
    )
    assert (response.status_code, response.json()) == (200, OK)
    wait_until(lambda: len(for_user(daemon, user)) == 1, what="the gzip Ping to run")


def test_bad_gzip_is_400(daemon: DaemonProcess, client: httpx.Client) -> None:
    """Bytes that are not gzip under Content-Encoding: gzip are 400, and serving continues."""
    response = client.post(
        "/v1/batch", content=b'{"batch": []}', headers={"content-encoding": "gzip"}
    )
    assert_error(response, 400, "invalid_request", "gzip")
    assert_still_serving(daemon, client)


def test_gzip_bomb_is_413(daemon: DaemonProcess, client: httpx.Client) -> None:
    """~20 KB of gzip that inflates to 20 MB is refused with 413, and memory stays small."""
    bomb = gzip.compress(b" " * (20 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 64_000
    response = client.post("/v1/batch", content=bomb, headers={"content-encoding": "gzip"})
    assert_error(response, 413, "payload_too_large")
    assert rss_mb(daemon.proc.pid) < 200
    assert_still_serving(daemon, client)


# --- effects: de-duplication and all-or-nothing batches --------------------------------------


def test_repeated_message_id_is_acknowledged_but_runs_once(
    daemon: DaemonProcess, client: httpx.Client
) -> None:
    """The same messageId again (an SDK retry) gets 200, but only one journey instance runs."""
    user = uid("dup")
    message_id = str(uuid.uuid4())
    first = client.post("/v1/track", json=ping(user, messageId=message_id))
    again = client.post("/v1/track", json=ping(user, messageId=message_id))
    via_batch = client.post(
        "/v1/batch", json={"batch": [as_item(ping(user, messageId=message_id))]}
    )
    assert [r.status_code for r in (first, again, via_batch)] == [200, 200, 200]
    assert [r.json() for r in (first, again, via_batch)] == [OK, OK, OK]
    settle(daemon, client)
    assert len(for_user(daemon, user)) == 1
    # The check above can fail: a fresh messageId for the same event does run again.
    assert client.post("/v1/track", json=ping(user)).status_code == 200
    wait_until(lambda: len(for_user(daemon, user)) == 2, what="the non-duplicate to run")


def test_dedup_is_per_write_key(daemon: DaemonProcess, client: httpx.Client) -> None:
    """A messageId seen under one write key is new under another (dedup scope = write key)."""
    user = uid("scope")
    message_id = str(uuid.uuid4())
    first = client.post("/v1/track", json=ping(user, messageId=message_id))
    other = httpx.post(
        f"{daemon.http_url}/v1/track",
        json=ping(user, messageId=message_id),
        auth=(SECOND_KEY, ""),
    )
    assert (first.status_code, other.status_code) == (200, 200)
    wait_until(lambda: len(for_user(daemon, user)) == 2, what="both scopes to run")


def test_batch_with_one_invalid_event_is_rejected_whole(
    daemon: DaemonProcess, client: httpx.Client
) -> None:
    """400 for a batch means none of its events ran, and their messageIds stay unused."""
    good = [uid("whole") for _ in range(3)]
    ids = {u: str(uuid.uuid4()) for u in good}
    items = [as_item(ping(u, messageId=ids[u])) for u in good]
    items.insert(2, {"type": "track", "userId": ["not", "a", "string"], "event": "Ping"})
    response = client.post("/v1/batch", json={"batch": items})
    assert_error(response, 400, "invalid_request", "batch[2].userId")
    settle(daemon, client)
    assert [u for u in good if for_user(daemon, u)] == []
    # Sent again with the same messageIds they run: the rejected batch did not mark them seen.
    again = client.post(
        "/v1/batch", json={"batch": [as_item(ping(u, messageId=ids[u])) for u in good]}
    )
    assert again.status_code == 200
    wait_until(
        lambda: all(len(for_user(daemon, u)) == 1 for u in good), what="the resent batch to run"
    )


def test_track_over_http_starts_the_cart_journey(
    daemon: DaemonProcess, client: httpx.Client
) -> None:
    """The README's curl example: identify + Cart Modified over HTTP -> nudge with traits."""
    user = uid("cart")
    email = f"{user}@example.org"
    assert client.post("/v1/identify", json={"userId": user, "traits": {"email": email}}).is_success
    body = {"userId": user, "event": "Cart Modified", "properties": {"cart_id": "c-1", "total": 12}}
    assert client.post("/v1/track", json=body).is_success
    wait_until(lambda: bool(for_user(daemon, user)), what="the cart nudge")
    [nudge] = for_user(daemon, user)
    assert nudge["event"] == "Cart Abandoned"
    assert nudge["properties"]["email"] == email
    assert nudge["properties"]["journey_context"] == {
        "Cart Modified": {"cart_id": "c-1", "total": 12}
    }


# --- port 0 ----------------------------------------------------------------------------------


def test_http_port_zero_picks_a_free_port(daemon: DaemonProcess) -> None:
    """`daemon.http = "127.0.0.1:0"` (the harness default) binds a real port and says which."""
    assert daemon.http_url is not None
    host, _, port = daemon.http_url.removeprefix("http://").rpartition(":")
    assert host == "127.0.0.1"
    assert int(port) > 0
    assert httpx.get(f"{daemon.http_url}/healthz", timeout=10).status_code == 200


# --- backpressure ----------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


FLOOD_MB = 120  # if refused bodies were kept, RSS would grow by about this much
PADDING = "p" * 30_000  # ~90 KB per flood request on average: leaks would show in RSS

FLOOD = {
    "id": "flood",
    "entry": {"event": "Flood", "rule": "once"},
    "steps": [{"id": "out", "type": "send", "destination": "hook", "event_name": "Flooded"}],
}


def test_backpressure_503_with_bounded_memory_and_nothing_lost(tmp_path: Path) -> None:
    """A flood beyond what the engine takes gets 503 + Retry-After; a destination that is
    down meanwhile neither stalls ingest nor grows memory (its deliveries wait on disk);
    every event answered 200 is delivered once the destination is back."""
    hook = HeldWebhook()
    handle = launch(
        tmp_path,
        journeys=[FLOOD],
        settings={
            "daemon": {"fsync": "always"},  # a slower pipeline: the tiny queue fills
            "ingest": {"queue": 5, "max_batch_events": 5},
            "delivery": {"timeout": "60s"},
            "destinations": {
                "hook": {"type": "webhook", "url": hook.url, "concurrency": 4, "queue": 10}
            },
        },
    )
    assert handle.http_url is not None
    results: list[tuple[int, list[str], httpx.Response]] = []
    baseline_mb = rss_mb(handle.proc.pid)
    rss_samples: list[float] = []
    held_at_release: list[int] = []
    answered_at_release: list[int] = []

    def sent_mb() -> float:
        return sum(len(r.request.content) for _, _, r in results) / 1e6

    async def flood() -> None:
        stop = trio.Event()
        limits = httpx.Limits(max_connections=64)
        async with (
            httpx.AsyncClient(
                base_url=handle.http_url or "", auth=AUTH, timeout=60, limits=limits
            ) as http,
            trio.open_nursery() as nursery,
        ):

            async def worker(w: int) -> None:
                n = 0
                while not stop.is_set():
                    users = [f"w{w}-{n}-{i}" for i in range(1 + (w + n) % 5)]
                    n += 1
                    batch = [
                        {
                            "type": "track",
                            "userId": u,
                            "event": "Flood",
                            "messageId": u,
                            "properties": {"padding": PADDING},
                        }
                        for u in users
                    ]
                    response = await http.post("/v1/batch", json={"batch": batch})
                    results.append((response.status_code, users, response))
                    if response.status_code == 503:
                        await trio.sleep(0.005)

            async def sample() -> None:
                while not stop.is_set():
                    rss_samples.append(rss_mb(handle.proc.pid))
                    await trio.sleep(0.05)

            nursery.start_soon(sample)
            for w in range(24):
                nursery.start_soon(worker, w)
            started = trio.current_time()
            with trio.move_on_after(15):  # a slow machine floods less; it still checks
                while True:
                    refused = sum(1 for status, _, _ in results if status == 503)
                    if (
                        refused >= 300
                        and trio.current_time() - started >= 4
                        and sent_mb() >= FLOOD_MB
                    ):
                        break
                    await trio.sleep(0.05)
            stop.set()
            held_at_release.append(len(hook.bodies))
            answered_at_release.append(len(results))
            # Requests still held in the queue answer once the destination lets go.
            hook.released.set()

    try:
        trio.run(flood)
        statuses = {status for status, _, _ in results}
        assert statuses <= {200, 503}, statuses
        refused = [r for status, _, r in results if status == 503]
        assert refused, "the flood never saw a 503"
        for response in refused:
            assert response.headers["retry-after"] == "1"
            assert response.json()["success"] is False
            assert response.json()["code"] == "overloaded"
        accepted = {u for status, users, _ in results if status == 200 for u in users}
        # The destination held its requests the whole time, yet ingest went on accepting
        # far more than its in-memory queue (10) could hold: the rest waited on disk.
        assert 1 <= held_at_release[0] <= 4
        accepted_while_down = {
            u for status, users, _ in results[: answered_at_release[0]] if status == 200
            for u in users
        }  # fmt: skip
        assert len(accepted_while_down) > 100, len(accepted_while_down)
        # Bounded: far below both the absolute cap and what the flood pushed through.
        peak = max(rss_samples)
        assert peak < 200, f"RSS peaked at {peak:.0f} MB"
        assert peak - baseline_mb < 50, (
            f"RSS grew {peak - baseline_mb:.0f} MB while {sent_mb():.0f} MB were sent"
        )

        wait_until(lambda: hook.users() >= accepted, timeout=180, what="every 200 delivered")
        assert handle.stop() == 0
        # All-or-nothing: what was refused with 503 never ran.
        assert hook.users() == accepted
        assert len(hook.bodies) == len(accepted)  # one delivery each (no retries needed)
    finally:
        hook.close()
        handle.kill()
