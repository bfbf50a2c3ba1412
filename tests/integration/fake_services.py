"""Braze, Customer.io and Iterable as real HTTP servers on 127.0.0.1, per the wire-format notes.

Each fake is a `receiver.Receiver` (trio TCP + h11): it records every request and can be
scripted (`script([...])`) to answer a 429 with or without `Retry-After`, a 5xx, a slow answer
(`delay_s`) or a connection reset (`drop=True`). Unscripted requests get what the real
service would answer, checked in this order:

1. authentication exactly as the service checks it (Braze: `Authorization: Bearer <key>`;
   Customer.io: Basic `site_id:api_key`; Iterable: `Api-Key` header), else 401 in the
   service's error shape;
2. the path (404 otherwise) and the body limits (Braze: more than 75 objects combined is a
   400 "Max Input Length Exceeded"; Customer.io: 500,000 bytes per request, 400; an op over
   32,000 bytes is a 207 error for that op; Iterable: 4,000,000 bytes, 400 BatchTooLarge);
3. per-object validation answered as a partial failure inside a 2xx (Braze `errors[]`,
   Customer.io 207 `errors[]` with `batch_index`, Iterable `failedUpdates` /
   `disallowedEventNames`), driven by the sets `invalid_*` / `unknown_*` a test fills.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
from receiver import Receiver, Reply

_JSON = {"content-type": "application/json"}


def _json_reply(status: int, body: Any) -> Reply:
    return Reply(status=status, headers=_JSON, body=json.dumps(body).encode())


class FakeService(Receiver):
    """A Receiver whose unscripted answers come from `answer(path, headers, body)`."""

    paths: tuple[str, ...] = ()

    def __init__(self, port: int, *, default: Reply, path: str) -> None:
        super().__init__(port, default=default, path=path)
        self.base_url = f"http://127.0.0.1:{port}"
        self._last: tuple[str, dict[str, str], bytes] = ("", {}, b"")

    @classmethod
    @asynccontextmanager
    async def serve(cls, **options: Any) -> AsyncIterator[Any]:
        async with cls.start(path="") as service:
            for key, value in options.items():
                setattr(service, key, value)
            yield service

    def _record(self, request: h11.Request, body: bytes) -> None:
        super()._record(request, body)
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in request.headers
        }
        self._last = (request.target.decode("latin-1"), headers, body)

    def _next_reply(self) -> Reply:
        if self._script:
            return self._script.popleft()
        path, headers, body = self._last
        if path not in self.paths:
            return _json_reply(404, {"message": "not found"})
        return self.answer(path, headers, body)

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        raise NotImplementedError


class FakeBraze(FakeService):
    paths = ("/users/track",)
    api_key = "braze-key"
    invalid_event_names: frozenset[str] = frozenset()

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return _json_reply(401, {"message": "Invalid API key: ..."})
        try:
            request = json.loads(body)
        except ValueError:
            return _json_reply(400, {"message": "Invalid JSON"})
        events = request.get("events", [])
        attributes = request.get("attributes", [])
        if len(events) + len(attributes) + len(request.get("purchases", [])) > 75:
            return _json_reply(400, {"message": "Max Input Length Exceeded"})
        errors = [
            {"type": "'name' is not valid", "input_array": "events", "index": index}
            for index, event in enumerate(events)
            if not event.get("name") or event["name"] in self.invalid_event_names
            or not event.get("time")
        ]  # fmt: skip
        answer: dict[str, Any] = {
            "message": "success",
            "attributes_processed": len(attributes),
            "events_processed": len(events) - len(errors),
        }
        if errors:
            answer["errors"] = errors
        return _json_reply(201, answer)


class FakeCustomerio(FakeService):
    paths = ("/api/v2/batch", "/api/v1/events")
    site_id = "site"
    api_key = "key"
    invalid_names: frozenset[str] = frozenset()

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        expected = base64.b64encode(f"{self.site_id}:{self.api_key}".encode()).decode()
        if headers.get("authorization") != f"Basic {expected}":
            return _json_reply(401, {"meta": {"error": "Unauthorized request"}})
        if len(body) > 500_000:
            return _json_reply(400, {"errors": [{"reason": "too_large", "message": "batch"}]})
        try:
            request = json.loads(body)
        except ValueError:
            return _json_reply(400, {"errors": [{"reason": "invalid", "message": "json"}]})
        if path == "/api/v1/events":
            if not request.get("name") or not request.get("anonymous_id"):
                return _json_reply(400, {"meta": {"errors": ["name is required"]}})
            return _json_reply(200, {})
        errors = []
        for index, op in enumerate(request.get("batch", [])):
            size = len(json.dumps(op, separators=(",", ":")).encode())
            if size > 32_000:
                errors.append({"batch_index": index, "reason": "too_large", "field": "",
                               "message": "operation over 32KB"})  # fmt: skip
            elif len(op.get("identifiers", {})) != 1:
                errors.append({"batch_index": index, "reason": "invalid",
                               "field": "identifiers", "message": "exactly one"})  # fmt: skip
            elif not op.get("name") or op["name"] in self.invalid_names:
                errors.append({"batch_index": index, "reason": "invalid", "field": "name",
                               "message": "invalid event name"})  # fmt: skip
        if errors:
            return _json_reply(207, {"errors": errors})
        return _json_reply(200, {})


class FakeIterable(FakeService):
    paths = ("/api/events/trackBulk", "/api/events/track")
    api_key = "iterable-key"
    unknown_user_ids: frozenset[str] = frozenset()
    forgotten_emails: frozenset[str] = frozenset()
    disallowed: frozenset[str] = frozenset()

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if headers.get("api-key") != self.api_key:
            return _json_reply(401, {"msg": "Invalid API key", "code": "BadApiKey", "params": None})
        if len(body) > 4_000_000:
            return _json_reply(400, {"msg": "too large", "code": "BatchTooLarge", "params": None})
        try:
            request = json.loads(body)
        except ValueError:
            return _json_reply(400, {"msg": "bad json", "code": "BadJsonBody", "params": None})
        if path == "/api/events/track":
            if "email" not in request and "userId" not in request:
                return _json_reply(400, {"msg": "no id", "code": "BadParams", "params": None})
            return _json_reply(
                200, {"msg": "tracked", "code": "Success", "params": {"id": request.get("id")}}
            )
        failed: dict[str, list[str]] = {"notFoundUserIds": [], "forgottenEmails": []}
        disallowed: list[str] = []
        fail = 0
        for event in request.get("events", []):
            if event.get("userId") in self.unknown_user_ids:
                failed["notFoundUserIds"].append(event["userId"])
            elif event.get("email") in self.forgotten_emails:
                failed["forgottenEmails"].append(event["email"])
            elif event.get("eventName") in self.disallowed:
                disallowed.append(event["eventName"])
            else:
                continue
            fail += 1
        return _json_reply(
            200,
            {
                "successCount": len(request.get("events", [])) - fail,
                "failCount": fail,
                "failedUpdates": failed,
                "disallowedEventNames": disallowed,
            },
        )
