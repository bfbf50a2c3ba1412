"""The Segment-compatible HTTP listener: an ASGI app served by hypercorn's trio worker.

What real SDKs do shapes this (see the wire-format notes): they post only to `/v1/batch`,
send the write key as Basic auth *and* as `writeKey` in the body, send JSON null for absent
fields, retry 408/429/5xx honouring Retry-After, and treat 3xx inconsistently, so this app
never answers 3xx. A batch is accepted whole or not at all: one bad event gets a 400 that
names it (`batch[3].userId: ...`) and nothing from that request is queued, so a client never
has to guess which half landed.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import trio

from journeyd import log
from journeyd.errors import BadInput
from journeyd.ingest.inbound import Inbound, Item, now, stamp
from journeyd.intake import check_event, decode_event
from journeyd.log import RateLimitedLog
from journeyd.model import Event, parse_timestamp
from journeyd.settings import IngestSettings

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

SINGLE_PATHS = {
    "/v1/track": "track",
    "/v1/identify": "identify",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/group": "group",
    "/v1/alias": "alias",
    # Analytics.js 2.0 short paths (it posts text/plain to dodge CORS preflights)
    "/v1/t": "track",
    "/v1/i": "identify",
    "/v1/p": "page",
    "/v1/s": "screen",
    "/v1/g": "group",
    "/v1/a": "alias",
}
BATCH_PATHS = frozenset({"/v1/batch", "/v1/b", "/v1/import"})

_log = log.get("journeyd.ingest.http")
_encode = msgspec.json.Encoder().encode


class Envelope(msgspec.Struct):
    """A /v1/batch body; items stay raw so each is size-checked and decoded on its own."""

    batch: list[msgspec.Raw]
    sentAt: str | None = None
    writeKey: str | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


_envelope = msgspec.json.Decoder(Envelope)
_object = msgspec.json.Decoder(dict[str, Any])


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class RequestTicket:
    """Counts down the events of one request; the handler answers once all are accepted."""

    def __init__(self, count: int) -> None:
        self.remaining = count
        self.error: str | None = None
        self.done = trio.Event()

    def accepted(self, index: int, message_id: str) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()

    def rejected(self, index: int, error: str) -> None:
        self.error = self.error or error
        self.accepted(index, "")


class SegmentApp:
    def __init__(
        self,
        inbound: Inbound,
        write_keys: Sequence[str],
        settings: IngestSettings,
        is_ready: Callable[[], bool],
    ) -> None:
        self._inbound = inbound
        self._write_keys = frozenset(write_keys)
        self._settings = settings
        self._is_ready = is_ready
        self._bad_input_log = RateLimitedLog()
        self.requests = 0
        self.rejected = 0

    def reconfigure(self, write_keys: Sequence[str], settings: IngestSettings) -> None:
        self._write_keys = frozenset(write_keys)
        self._settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.requests += 1
        try:
            status, body, headers = await self._route(scope, receive)
        except HttpError as exc:
            if exc.status in (400, 413):
                self.rejected += 1
                suppressed = self._bad_input_log.allow()
                if suppressed is not None:
                    _log.warning(
                        "ingest.rejected",
                        listener="http",
                        path=scope.get("path"),
                        status=exc.status,
                        error=exc.message,
                        suppressed_since_last=suppressed,
                    )
            status = exc.status
            body = {"success": False, "code": exc.code, "message": exc.message}
            headers = []
            if exc.status == 503:
                headers.append((b"retry-after", str(self._settings.retry_after_s).encode()))
        await _respond(send, status, body, headers)

    async def _route(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        path = scope["path"].rstrip("/") or "/"
        method = scope["method"]
        if path == "/healthz":
            return 200, {"status": "ok"}, []
        if path == "/readyz":
            if self._is_ready():
                return 200, {"status": "ready"}, []
            return 503, {"status": "starting"}, [(b"retry-after", b"1")]
        kind = SINGLE_PATHS.get(path)
        if kind is None and path not in BATCH_PATHS:
            raise HttpError(404, "not_found", f"no endpoint {path}; use /v1/batch or /v1/track")
        if method != "POST":
            raise HttpError(405, "method_not_allowed", f"{path} accepts POST only")
        headers = dict(scope["headers"])
        raw = await self._read_body(receive, headers)
        if kind is None:
            items, key, sent_at = self._parse_batch(raw)
        else:
            items, key, sent_at = self._parse_single(raw, kind)
        scope_key = self._authorize(headers, key)
        received = now()
        ticket = RequestTicket(len(items))
        queued = []
        for index, event in enumerate(items):
            try:
                stamp(event, received, sent_at)
            except ValueError as exc:
                where = f"batch[{index}]: " if kind is None else ""
                raise HttpError(400, "invalid_request", f"{where}{exc}") from None
            queued.append(Item(event, received, scope_key, ticket, index))
        if not queued:
            return 200, {"success": True}, []
        if len(queued) > self._inbound.capacity:
            # Retrying could never help, so this must not be a (retryable) 503.
            raise HttpError(
                413,
                "payload_too_large",
                f"batch of {len(queued)} events can never fit the ingest queue "
                f"({self._inbound.capacity}); send smaller batches or raise ingest.queue",
            )
        if not self._inbound.offer(queued):
            raise HttpError(503, "overloaded", "journeyd is saturated; retry after a moment")
        await ticket.done.wait()
        if ticket.error is not None:
            raise HttpError(503, "unavailable", ticket.error)
        return 200, {"success": True}, []

    async def _read_body(self, receive: Receive, headers: dict[bytes, bytes]) -> bytes:
        limit = self._settings.max_batch_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "invalid_request", "client disconnected mid-body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HttpError(413, "payload_too_large", f"body over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        encoding = headers.get(b"content-encoding", b"").strip().lower()
        if encoding in (b"gzip", b"x-gzip"):
            body = _gunzip(body, limit)
        elif encoding not in (b"", b"identity"):
            raise HttpError(
                415, "unsupported_encoding", f"Content-Encoding {encoding.decode()!r}: use gzip"
            )
        return body

    def _parse_batch(self, raw: bytes) -> tuple[list[Event], str | None, str | None]:
        try:
            envelope = _envelope.decode(raw)
        except msgspec.ValidationError as exc:
            raise HttpError(400, "invalid_request", _field_message(str(exc))) from None
        except msgspec.DecodeError as exc:
            raise HttpError(400, "invalid_request", f"body: {exc}") from None
        if envelope.sentAt is not None:
            try:
                parse_timestamp(envelope.sentAt)
            except ValueError as exc:
                raise HttpError(400, "invalid_request", f"sentAt: {exc}") from None
        limits = self._settings
        if len(envelope.batch) > limits.max_batch_events:
            raise HttpError(
                400,
                "invalid_request",
                f"batch: {len(envelope.batch)} events, over the limit of {limits.max_batch_events}",
            )
        events = []
        for index, item in enumerate(envelope.batch):
            if len(item) > limits.max_event_bytes:
                raise HttpError(
                    413,
                    "payload_too_large",
                    f"batch[{index}]: event is {len(item)} bytes, over the "
                    f"{limits.max_event_bytes}-byte limit",
                )
            try:
                event = decode_event(item)
            except BadInput as exc:
                raise HttpError(400, "invalid_request", _in_batch(index, str(exc))) from None
            if envelope.context:
                event.context = {**envelope.context, **(event.context or {})}
            if envelope.integrations:
                event.integrations = {**envelope.integrations, **(event.integrations or {})}
            events.append(event)
        return events, envelope.writeKey, envelope.sentAt

    def _parse_single(self, raw: bytes, kind: str) -> tuple[list[Event], str | None, str | None]:
        if len(raw) > self._settings.max_event_bytes:
            raise HttpError(
                413,
                "payload_too_large",
                f"event is {len(raw)} bytes, over the {self._settings.max_event_bytes}-byte limit",
            )
        try:
            body = _object.decode(raw)
        except msgspec.ValidationError:
            raise HttpError(400, "invalid_request", "body: expected a JSON object") from None
        except msgspec.DecodeError as exc:
            raise HttpError(400, "invalid_request", f"body: {exc}") from None
        key = body.pop("writeKey", None)
        body.setdefault("type", kind)
        if body["type"] != kind:
            raise HttpError(
                400, "invalid_request", f"type: {body['type']!r} posted to the {kind} endpoint"
            )
        try:
            event = msgspec.convert(body, Event)
            check_event(event)
        except msgspec.ValidationError as exc:
            raise HttpError(400, "invalid_request", _field_message(str(exc))) from None
        except BadInput as exc:
            raise HttpError(400, "invalid_request", str(exc)) from None
        return [event], key if isinstance(key, str) else None, event.sentAt

    def _authorize(self, headers: dict[bytes, bytes], body_key: str | None) -> str:
        """The write key that was checked (Basic auth wins over the body); it also scopes
        de-duplication, so one source cannot suppress another's messageIds."""
        key = _basic_user(headers)
        if key is None:
            key = body_key
        if not self._write_keys:
            return key or ""  # allowed only on loopback; `check` enforces that
        if key is None:
            raise HttpError(
                401,
                "unauthorized",
                "missing write key: send Basic auth with the write key as user name",
            )
        if key not in self._write_keys:
            raise HttpError(401, "unauthorized", "unknown write key")
        return key


def _basic_user(headers: dict[bytes, bytes]) -> str | None:
    value = headers.get(b"authorization")
    if not value or value[:6].lower() != b"basic ":
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0]


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decompress with a ceiling, so a small gzip bomb cannot become a huge allocation."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HttpError(400, "invalid_request", f"body: bad gzip data ({exc})") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise HttpError(413, "payload_too_large", f"body over {limit} bytes once decompressed")
    if not decompressor.eof:
        raise HttpError(400, "invalid_request", "body: truncated gzip data")
    return out


_FIELD_FIRST = re.compile(r"[A-Za-z_][\w.\[\]]*:")


def _in_batch(index: int, message: str) -> str:
    """Prefix an event error with its place: `batch[3].userId: ...`."""
    if _FIELD_FIRST.match(message):
        return f"batch[{index}].{message}"
    return f"batch[{index}]: {message}"


def _field_message(message: str) -> str:
    text, _, where = message.partition(" - at `$")
    text = text.replace("`", "")
    text = text[:1].lower() + text[1:]
    where = where.rstrip("`").lstrip(".")
    if "missing required field" in text:
        return f"{where + '.' if where else ''}{text.rsplit(' ', 1)[-1]}: required"
    return f"{where}: {text}" if where else f"body: {text}"


async def _respond(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    payload = _encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
