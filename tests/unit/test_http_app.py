"""`SegmentApp` driven directly as an ASGI app inside trio, with a fake engine consumer.

No sockets and no hypercorn: each test hands the app scope/receive/send like a server would,
and a small consumer task plays the engine loop (it reads `Inbound.receive` and acks tickets).
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from journeyd.ingest.http import SegmentApp
from journeyd.ingest.inbound import Inbound, Item
from journeyd.model import Event
from journeyd.settings import IngestSettings

KEY = "wk-unit"
BASIC = b"Basic " + base64.b64encode(f"{KEY}:".encode())
TIMEOUT_S = 10


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Harness:
    app: SegmentApp
    inbound: Inbound
    consumed: list[Item] = field(default_factory=list)
    ready: bool = True
    reject_with: str | None = None  # when set, the fake engine rejects instead of accepting

    @property
    def events(self) -> list[Event]:
        return [item.event for item in self.consumed]

    async def request(
        self,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        *,
        method: str = "POST",
        headers: list[tuple[bytes, bytes]] | None = None,
        auth: bool = True,
        chunks: list[bytes] | None = None,
        disconnect: bool = False,
    ) -> Response:
        """One request through the app; `chunks` streams the body in several messages."""
        raw = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
        all_headers = [(b"content-type", b"application/json"), *(headers or [])]
        if auth:
            all_headers.append((b"authorization", BASIC))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": all_headers,
        }
        pieces = chunks if chunks is not None else [raw]
        messages: list[dict[str, Any]] = [
            {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
            for i, piece in enumerate(pieces)
        ]
        if disconnect:
            messages[-1]["more_body"] = True
            messages.append({"type": "http.disconnect"})
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        with trio.fail_after(TIMEOUT_S):
            await self.app(scope, receive, send)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        start, body_message = sent
        response_headers = dict(start["headers"])
        payload = body_message["body"]
        assert response_headers[b"content-type"] == b"application/json"
        assert int(response_headers[b"content-length"]) == len(payload)
        assert not 300 <= start["status"] < 400  # never a redirect
        return Response(start["status"], response_headers, payload)


async def fake_engine(harness: Harness) -> None:
    async for item in harness.inbound.receive:
        harness.consumed.append(item)
        if harness.reject_with is not None:
            item.ticket.rejected(item.position, harness.reject_with)
        else:
            item.ticket.accepted(item.position, item.event.messageId or "")


@asynccontextmanager
async def running(
    *, capacity: int = 100, keys: list[str] | None = None, consume: bool = True, **limits: Any
) -> AsyncIterator[Harness]:
    inbound = Inbound(capacity)
    harness = Harness(app=None, inbound=inbound)  # type: ignore[arg-type]
    harness.app = SegmentApp(
        inbound, [KEY] if keys is None else keys, IngestSettings(**limits), lambda: harness.ready
    )
    async with trio.open_nursery() as nursery:
        if consume:
            nursery.start_soon(fake_engine, harness)
        yield harness
        nursery.cancel_scope.cancel()


def track(user: str = "ana", **fields: Any) -> dict[str, Any]:
    return {"userId": user, "event": "Cart Modified", **fields}


def item(user: str = "ana", **fields: Any) -> dict[str, Any]:
    return {"type": "track", **track(user, **fields)}


def assert_error(response: Response, status: int, code: str, *fragments: str) -> None:
    body = response.json()
    assert response.status == status, body
    assert body["success"] is False
    assert body["code"] == code
    for fragment in fragments:
        assert fragment in body["message"], body


# --- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "kind"),
    [
        ("/v1/track", track(), "track"),
        ("/v1/identify", {"userId": "ana", "traits": {"email": "a@x"}}, "identify"),
        ("/v1/page", {"userId": "ana", "name": "Home"}, "page"),
        ("/v1/screen", {"anonymousId": "anon-1", "name": "Main"}, "screen"),
        ("/v1/group", {"userId": "ana", "groupId": "g-1"}, "group"),
        ("/v1/alias", {"userId": "ana", "previousId": "anon-1"}, "alias"),
        ("/v1/t", track(), "track"),
        ("/v1/i", {"userId": "ana"}, "identify"),
        ("/v1/p", {"userId": "ana"}, "page"),
        ("/v1/s", {"userId": "ana"}, "screen"),
        ("/v1/g", {"userId": "ana", "groupId": "g"}, "group"),
        ("/v1/a", {"userId": "ana", "previousId": "p"}, "alias"),
        ("/v1/track/", track(), "track"),
    ],
)
async def test_single_endpoints_accept_and_type_the_event(
    path: str, body: dict[str, Any], kind: str
) -> None:
    """Each single-call path (long and Analytics.js short form) queues one event of its type."""
    async with running() as h:
        response = await h.request(path, body)
    assert (response.status, response.json()) == (200, {"success": True})
    [event] = h.events
    assert event.type == kind
    assert event.receivedAt is not None
    assert event.messageId


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/b", "/v1/import"])
async def test_batch_paths_queue_every_item_in_order(path: str) -> None:
    """Every batch path queues all its items, in order, each with its index on the ticket."""
    body = {"batch": [item("u1"), {"type": "identify", "userId": "u2"}, item("u3")]}
    async with running() as h:
        response = await h.request(path, body)
    assert response.status == 200
    assert [(e.type, e.userId) for e in h.events] == [
        ("track", "u1"),
        ("identify", "u2"),
        ("track", "u3"),
    ]
    assert [i.position for i in h.consumed] == [0, 1, 2]
    assert len({id(i.ticket) for i in h.consumed}) == 1  # one ticket for the whole request


async def test_unknown_path_is_404_and_queues_nothing() -> None:
    """An unknown path is a JSON 404, never a redirect or an empty body."""
    async with running() as h:
        response = await h.request("/v2/track", track())
    assert_error(response, 404, "not_found", "/v2/track")
    assert h.events == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_are_405(method: str) -> None:
    """Only POST ingests; anything else on an ingest path is 405."""
    async with running() as h:
        response = await h.request("/v1/track", track(), method=method)
    assert_error(response, 405, "method_not_allowed")
    assert h.events == []


async def test_healthz_and_readyz() -> None:
    """/healthz is always 200; /readyz is 503 + Retry-After until ready, then 200."""
    async with running(consume=False) as h:
        h.ready = False
        assert (await h.request("/healthz", method="GET", auth=False)).status == 200
        starting = await h.request("/readyz", method="GET", auth=False)
        assert starting.status == 503
        assert starting.headers[b"retry-after"] == b"1"
        h.ready = True
        assert (await h.request("/readyz", method="GET", auth=False)).status == 200


async def test_type_must_match_the_single_endpoint() -> None:
    """A body whose type disagrees with the path is 400, not silently retyped."""
    async with running() as h:
        response = await h.request("/v1/track", {"type": "identify", "userId": "ana"})
    assert_error(response, 400, "invalid_request", "type")
    assert h.events == []


# --- auth ------------------------------------------------------------------------------------


async def test_body_write_key_alone_is_accepted_and_not_kept_on_the_event() -> None:
    """writeKey in the body authenticates (Auth option B) and is not stored on the event."""
    async with running() as h:
        single = await h.request("/v1/track", {**track(), "writeKey": KEY}, auth=False)
        batch = await h.request("/v1/batch", {"batch": [item()], "writeKey": KEY}, auth=False)
    assert (single.status, batch.status) == (200, 200)
    assert len(h.events) == 2
    assert all(i.scope == KEY for i in h.consumed)


async def test_basic_auth_without_the_colon_is_accepted() -> None:
    """The legacy `base64(key)` form (no trailing colon) still names the key."""
    header = b"Basic " + base64.b64encode(KEY.encode())
    async with running() as h:
        response = await h.request(
            "/v1/track", track(), auth=False, headers=[(b"authorization", header)]
        )
    assert response.status == 200


@pytest.mark.parametrize(
    ("headers", "body_key"),
    [
        ([], None),
        ([(b"authorization", b"Basic " + base64.b64encode(b"wrong:"))], None),
        ([], "wrong"),
        ([(b"authorization", b"Bearer " + KEY.encode())], None),
        ([(b"authorization", b"Basic !!!not-base64")], None),
    ],
    ids=["missing", "wrong-basic", "wrong-body", "bearer", "garbled-basic"],
)
async def test_auth_failures_are_401_and_queue_nothing(
    headers: list[tuple[bytes, bytes]], body_key: str | None
) -> None:
    """Without a known write key nothing is queued and the answer is 401."""
    body = track() if body_key is None else {**track(), "writeKey": body_key}
    async with running() as h:
        single = await h.request("/v1/track", body, auth=False, headers=headers)
        batch_body: dict[str, Any] = {"batch": [item()]}
        if body_key is not None:
            batch_body["writeKey"] = body_key
        batch = await h.request("/v1/batch", batch_body, auth=False, headers=headers)
    assert_error(single, 401, "unauthorized")
    assert_error(batch, 401, "unauthorized")
    assert h.events == []


async def test_empty_write_key_list_accepts_anything() -> None:
    """write_keys = [] (allowed on loopback only) means no auth check at all."""
    async with running(keys=[]) as h:
        response = await h.request("/v1/track", track(), auth=False)
    assert response.status == 200


# --- body decoding, sizes, gzip --------------------------------------------------------------


async def test_body_streamed_in_several_chunks_is_reassembled() -> None:
    """A body arriving in many http.request messages is read whole before parsing."""
    raw = json.dumps({"batch": [item(f"u{i}") for i in range(20)]}).encode()
    chunks = [raw[i : i + 97] for i in range(0, len(raw), 97)]
    async with running() as h:
        response = await h.request("/v1/batch", chunks=chunks)
    assert response.status == 200
    assert [e.userId for e in h.events] == [f"u{i}" for i in range(20)]


async def test_client_disconnect_mid_body_queues_nothing() -> None:
    """A client that hangs up mid-body gets no event queued."""
    async with running() as h:
        response = await h.request("/v1/batch", chunks=[b'{"batch": ['], disconnect=True)
    assert response.status == 400
    assert h.events == []


async def test_single_event_over_max_event_bytes_is_413() -> None:
    """One event over 32 KB (Segment's limit) is 413 and not queued."""
    async with running() as h:
        response = await h.request("/v1/track", track(properties={"x": "a" * 33_000}))
    assert_error(response, 413, "payload_too_large")
    assert h.events == []


async def test_single_event_just_under_the_limit_is_accepted() -> None:
    """The limit is a limit, not a guess: an event of 32 KB minus a little passes."""
    body = track(properties={"x": ""})
    filler = 32_768 - len(json.dumps(body).encode()) - 10
    body["properties"]["x"] = "a" * filler
    async with running() as h:
        response = await h.request("/v1/track", body)
    assert response.status == 200


async def test_batch_item_over_max_event_bytes_is_413_naming_it() -> None:
    """In a batch the oversize item is named and nothing from the batch is queued."""
    body = {"batch": [item("u0"), item("u1", properties={"x": "a" * 33_000})]}
    async with running() as h:
        response = await h.request("/v1/batch", body)
    assert_error(response, 413, "payload_too_large", "batch[1]")
    assert h.events == []


async def test_body_over_max_batch_bytes_is_413_even_when_streamed() -> None:
    """The request-size limit counts every chunk: a long stream cannot grow memory."""
    chunk = b" " * 10_000
    async with running(max_batch_bytes=50_000) as h:
        response = await h.request("/v1/batch", chunks=[chunk] * 6)
    assert_error(response, 413, "payload_too_large")
    assert h.events == []


async def test_too_many_events_in_a_batch_is_400() -> None:
    """More than max_batch_events items is refused whole, with the count in the message."""
    async with running(max_batch_events=3) as h:
        response = await h.request("/v1/batch", {"batch": [item(f"u{i}") for i in range(4)]})
    assert_error(response, 400, "invalid_request", "4 events")
    assert h.events == []


@pytest.mark.parametrize("encoding", [b"gzip", b"x-gzip", b"GZIP"])
async def test_gzip_body_is_decoded(encoding: bytes) -> None:
    """Content-Encoding gzip (as analytics-python gzip=True sends) is decompressed."""
    raw = gzip.compress(json.dumps({"batch": [item("gz")]}).encode())
    async with running() as h:
        response = await h.request("/v1/batch", raw, headers=[(b"content-encoding", encoding)])
    assert response.status == 200
    assert [e.userId for e in h.events] == ["gz"]


async def test_bad_gzip_is_400() -> None:
    """Bytes that are not gzip, under a gzip header, are a client error."""
    async with running() as h:
        response = await h.request(
            "/v1/batch", b"plain text", headers=[(b"content-encoding", b"gzip")]
        )
    assert_error(response, 400, "invalid_request", "gzip")


async def test_truncated_gzip_is_400() -> None:
    """A gzip stream cut short is refused, not half-parsed."""
    raw = gzip.compress(json.dumps({"batch": [item()]}).encode())[:-8]
    async with running() as h:
        response = await h.request("/v1/batch", raw, headers=[(b"content-encoding", b"gzip")])
    assert_error(response, 400, "invalid_request", "gzip")
    assert h.events == []


async def test_gzip_bomb_is_413() -> None:
    """A small body that decompresses past max_batch_bytes is 413, however small it is."""
    bomb = gzip.compress(b" " * 5_000_000)
    assert len(bomb) < 50_000
    async with running() as h:
        response = await h.request("/v1/batch", bomb, headers=[(b"content-encoding", b"gzip")])
    assert_error(response, 413, "payload_too_large", "decompressed")


async def test_unknown_content_encoding_is_415() -> None:
    """An encoding journeyd cannot read is 415, not a confusing JSON error."""
    async with running() as h:
        response = await h.request("/v1/track", track(), headers=[(b"content-encoding", b"br")])
    assert_error(response, 415, "unsupported_encoding")


async def test_text_plain_content_type_is_accepted() -> None:
    """Analytics.js sends text/plain to dodge CORS preflights; the body is still JSON."""
    async with running() as h:
        response = await h.request(
            "/v1/t", track(), headers=[(b"content-type", b"text/plain;charset=UTF-8")]
        )
    assert response.status == 200


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/v1/track", b"\x00\xffgarbage", "body"),
        ("/v1/track", b'{"userId": "a", "event": ', "body"),
        ("/v1/track", b"[1, 2]", "body"),
        ("/v1/track", b'{"userId": 7, "event": "x"}', "userId"),
        ("/v1/track", b'{"userId": "a", "event": "x", "properties": [1]}', "properties"),
        ("/v1/track", b'{"event": "x"}', "userId"),
        ("/v1/track", b'{"userId": "a"}', "event"),
        ("/v1/track", b'{"userId": "a", "event": "x", "timestamp": "soon"}', "timestamp"),
        ("/v1/group", b'{"userId": "a"}', "groupId"),
        ("/v1/batch", b'{"batch": {}}', "batch"),
        ("/v1/batch", b'{"sentAt": null}', "batch"),
        ("/v1/batch", b'{"batch": [{"type": "track", "userId": "a", "event": "x"}', "body"),
        ("/v1/batch", b'{"batch": [{"userId": "a", "event": "x"}]}', "batch[0].type"),
        ("/v1/batch", b'{"batch": [{"type": "nope", "userId": "a"}]}', "batch[0]"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(path: str, body: bytes, fragment: str) -> None:
    """Malformed or invalid input is 400 {success:false, code, message naming the field}."""
    async with running() as h:
        response = await h.request(path, body)
    assert_error(response, 400, "invalid_request", fragment)
    assert h.events == []


async def test_bad_item_in_a_batch_rejects_the_whole_batch() -> None:
    """One bad item: 400 naming `batch[i].field`, and none of the good items is queued."""
    body = {"batch": [item("u0"), {**item(), "userId": 5}, item("u2")]}
    async with running() as h:
        response = await h.request("/v1/batch", body)
    assert_error(response, 400, "invalid_request", "batch[1].userId")
    assert h.events == []


async def test_null_optional_fields_are_accepted() -> None:
    """analytics-python sends JSON null for absent fields; that is not an error."""
    body = {
        "batch": [
            {
                "type": "page",
                "userId": "ana",
                "anonymousId": None,
                "name": None,
                "category": None,
                "properties": None,
                "context": None,
                "integrations": None,
                "timestamp": None,
                "messageId": None,
            }
        ],
        "sentAt": None,
        "writeKey": None,
        "context": None,
        "integrations": None,
    }
    async with running() as h:
        response = await h.request("/v1/batch", body)
    assert response.status == 200
    [event] = h.events
    assert event.messageId  # generated, since it was null


# --- batch envelope --------------------------------------------------------------------------


async def test_batch_context_and_integrations_are_merged_into_items() -> None:
    """Envelope context/integrations reach every item; an item's own keys win."""
    body = {
        "batch": [
            item("u0"),
            item(
                "u1",
                context={"library": {"name": "mine"}},
                integrations={"All": True, "Braze": True},
            ),
        ],
        "context": {"ip": "203.0.113.9", "library": {"name": "envelope"}},
        "integrations": {"All": False},
    }
    async with running() as h:
        response = await h.request("/v1/batch", body)
    assert response.status == 200
    first, second = h.events
    assert first.context == {"ip": "203.0.113.9", "library": {"name": "envelope"}}
    assert first.integrations == {"All": False}
    assert second.context == {"ip": "203.0.113.9", "library": {"name": "mine"}}
    assert second.integrations == {"All": True, "Braze": True}


async def test_batch_sent_at_corrects_every_item() -> None:
    """The envelope's sentAt is the skew reference for each item's timestamp."""
    body = {
        "batch": [item("u0", timestamp="2026-03-01T09:15:00.000Z")],
        "sentAt": "2026-03-01T09:15:05.000Z",
    }
    async with running() as h:
        response = await h.request("/v1/batch", body)
    assert response.status == 200
    [event] = h.events
    assert event.originalTimestamp == "2026-03-01T09:15:00.000Z"
    assert event.receivedAt is not None
    assert event.timestamp is not None
    # corrected = receivedAt - 5 s: check the gap rather than a wall-clock value
    from journeyd.model import parse_timestamp

    gap = parse_timestamp(event.receivedAt) - parse_timestamp(event.timestamp)
    assert gap == pytest.approx(5.0, abs=0.002)


async def test_bad_batch_sent_at_is_400_naming_sent_at() -> None:
    """A bad envelope sentAt is a 400 whose message names `sentAt`."""
    body = {"batch": [item(timestamp="2026-03-01T09:15:00.000Z")], "sentAt": "yesterday"}
    async with running() as h:
        response = await h.request("/v1/batch", body)
    assert_error(response, 400, "invalid_request", "sentAt")
    assert h.events == []


async def test_empty_batch_is_accepted_without_touching_the_queue() -> None:
    """`{"batch": []}` is a valid no-op (SDKs never send it, but it is not an error)."""
    async with running(consume=False) as h:
        response = await h.request("/v1/batch", {"batch": []})
    assert response.status == 200
    assert h.inbound.free == h.inbound.capacity


async def test_dedup_scope_is_the_write_key() -> None:
    """Each queued item carries its write key as the de-duplication scope."""
    async with running() as h:
        await h.request("/v1/batch", {"batch": [item()]})
    assert [i.scope for i in h.consumed] == [KEY]


# --- backpressure ----------------------------------------------------------------------------


async def test_batch_larger_than_free_room_is_503_and_queues_nothing() -> None:
    """All or nothing: if the queue cannot take the whole batch, none of it goes in."""
    async with running(capacity=4, consume=False, retry_after_s=3) as h:
        answers: list[int] = []

        async def post(path: str, body: dict[str, Any]) -> None:
            answers.append((await h.request(path, body)).status)

        async with trio.open_nursery() as nursery:
            # Two single events take two slots and wait (nobody is consuming yet).
            nursery.start_soon(post, "/v1/track", track("w1"))
            nursery.start_soon(post, "/v1/track", track("w2"))
            await trio.testing.wait_all_tasks_blocked()
            assert h.inbound.free == 2
            full = await h.request("/v1/batch", {"batch": [item(f"b{i}") for i in range(3)]})
            assert_error(full, 503, "overloaded")
            assert full.headers[b"retry-after"] == b"3"
            assert h.inbound.free == 2  # nothing of the refused batch was queued
            nursery.start_soon(post, "/v1/batch", {"batch": [item("f0"), item("f1")]})
            await trio.testing.wait_all_tasks_blocked()
            assert h.inbound.free == 0
            engine = trio.CancelScope()

            async def consume() -> None:
                with engine:
                    await fake_engine(h)

            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            assert len(answers) == 3
            engine.cancel()
        assert answers == [200, 200, 200]
        assert sorted(e.userId or "" for e in h.events) == ["f0", "f1", "w1", "w2"]


async def test_answer_waits_for_the_engine_to_accept() -> None:
    """200 is sent only after the engine has accepted every event of the request."""
    async with running(consume=False) as h:
        answered = trio.Event()
        results: list[Response] = []

        async def post() -> None:
            results.append(await h.request("/v1/batch", {"batch": [item("a"), item("b")]}))
            answered.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(post)
            first = await h.inbound.receive.receive()
            await trio.testing.wait_all_tasks_blocked()
            assert not answered.is_set()
            first.ticket.accepted(first.position, "m")
            second = await h.inbound.receive.receive()
            await trio.testing.wait_all_tasks_blocked()
            assert not answered.is_set()  # one of two accepted is not enough
            second.ticket.accepted(second.position, "m")
        assert results[0].status == 200


async def test_engine_rejection_is_503_unavailable() -> None:
    """If the engine could not apply an event, the client is told to retry, not `ok`."""
    async with running() as h:
        h.reject_with = "internal error; the event was not applied"
        response = await h.request("/v1/track", track())
    assert_error(response, 503, "unavailable", "internal error")
    assert response.headers[b"retry-after"] == b"1"


async def test_batch_that_can_never_fit_the_queue_is_not_retryable() -> None:
    """A batch bigger than the whole queue must get a final error, not an endless 503."""
    async with running(capacity=5) as h:
        assert h.inbound.free == 5  # empty queue: this is not momentary saturation
        response = await h.request("/v1/batch", {"batch": [item(f"u{i}") for i in range(6)]})
    assert 400 <= response.status < 500
    assert response.status not in (408, 410, 429, 460)  # what SDKs retry
    assert h.events == []


# --- lifespan --------------------------------------------------------------------------------


async def test_lifespan_startup_and_shutdown_are_acknowledged() -> None:
    """The app answers the ASGI lifespan protocol, so hypercorn starts and stops cleanly."""
    app = SegmentApp(Inbound(1), [KEY], IngestSettings(), lambda: True)
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with trio.fail_after(TIMEOUT_S):
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert incoming == []


async def test_counters_track_requests_and_rejections() -> None:
    """`requests` counts every HTTP request, `rejected` the 400/413 ones."""
    async with running() as h:
        await h.request("/v1/track", track())
        await h.request("/v1/track", b"nope")
        await h.request("/v1/track", track(properties={"x": "a" * 40_000}))
        await h.request("/v1/track", track(), auth=False)
    assert (h.app.requests, h.app.rejected) == (4, 2)
