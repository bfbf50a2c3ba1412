"""The `braze` destination: `POST {endpoint}/users/track` with `events[]` and `attributes[]`.

Each delivery becomes one event object (`external_id` from `userId`, or a `user_alias` for an
anonymous user) and, when it carries selected traits, an attributes object for its user; the
attributes of one user within one request are merged into a single object (later deliveries'
values win). Readings of the wire-format notes (reference/wire-formats.md, section 2):

- ⚠ Batch size: Braze's pages disagree between 75 per array and 75 objects combined; we take
  the safe reading, **at most 75 objects combined** per request, so a lane batch of 75
  deliveries with traits may become two requests.
- ⚠ Alias users: an event's `_update_existing_only` is "effectively true" for a `user_alias`,
  and an attributes object with `_update_existing_only: false` is what creates an alias-only
  user. So an anonymous delivery always sends that attributes object (with or without
  traits) ahead of its event, and the event carries `_update_existing_only: false` too.
- Property keys: Braze refuses keys that are empty, longer than 255 characters or start with
  `$`. Such keys are **dropped** (at every nesting level, and from traits too) so that one
  odd key in a journey's context does not cost the whole event; everything else is sent as
  it is. Trait names that would clash with the identifier fields are dropped as well.
- ⚠ The 50 KB limit on an event's nested properties is read as 50,000 bytes of the whole
  encoded `properties` object; a delivery over it is rejected alone, before sending.
- `X-Braze-Batch: true` is something Segment sends; Braze does not document it, so we don't.
- No idempotency: Braze records every event object it accepts. A failed *attributes* object
  whose user's event was accepted therefore does not fail the delivery (a retry would
  duplicate the event); it is logged as `braze.attributes_rejected`. A failed *event*
  object is rejected: Braze says the object itself is invalid.
- ⚠ Whether `/users/track` sends `Retry-After` is unconfirmed: we honour it when present,
  and `X-RateLimit-Reset` (epoch seconds) otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from journeyd.delivery.adapter import BatchLimits, Outcome, PreparedRequest, Reject
from journeyd.delivery.adapters._shared import (
    ENCODER,
    USER_AGENT,
    Clock,
    PlannedAdapter,
    all_delivered,
    base_url,
    decode_json,
    failure_outcome,
    require_env,
)
from journeyd.delivery.destinations.webhook import public_url
from journeyd.engine import Delivery
from journeyd.settings import BrazeDestination

log = structlog.get_logger("journeyd.delivery")

MAX_OBJECTS = 75  # events + attributes per request (the safe reading, see above)
MAX_PROPERTIES_BYTES = 50_000
MAX_KEY_CHARS = 255
DEFAULTS = BatchLimits(
    max_items=75,
    max_bytes=4_000_000,
    max_wait_s=1.0,
    rate_per_s=1000.0,  # 3,000 requests per 3 s per workspace
    concurrency=8,
)
_CONTEXT_KEYS = frozenset({"journey_context", "journey_metadata"})
_IDENTIFIER_KEYS = frozenset({"external_id", "user_alias", "braze_id", "_update_existing_only"})


def clean_keys(value: Any) -> Any:
    """`value` with every dict key Braze would refuse removed, at any depth."""
    if isinstance(value, dict):
        return {
            key: clean_keys(item)
            for key, item in value.items()
            if isinstance(key, str) and key and len(key) <= MAX_KEY_CHARS and key[0] != "$"
        }
    if isinstance(value, list):
        return [clean_keys(item) for item in value]
    return value


class _Mapped:
    """One delivery as Braze objects: its event, and its user's attributes (if any)."""

    __slots__ = ("attributes", "event", "user")

    def __init__(self, user: str, event: bytes, attributes: dict[str, Any] | None) -> None:
        self.user = user
        self.event = event
        self.attributes = attributes


_CACHE_ENTRIES = 4096  # a few batches' worth


class BrazeAdapter(PlannedAdapter):
    def __init__(
        self,
        name: str,
        config: BrazeDestination,
        *,
        environ: Mapping[str, str],
        limits: BatchLimits = DEFAULTS,
        clock: Clock = time.time,
    ) -> None:
        self.name = name
        self.config = config
        self._limits = limits
        self._clock = clock
        self._url = base_url(name, config.endpoint) + "/users/track"
        self._public_url = public_url(self._url)
        self._cache: dict[str, _Mapped | Reject] = {}
        key = require_env(name, "api_key_env", config.api_key_env, environ)
        self._headers = {
            "authorization": f"Bearer {key}",
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }

    def size_of(self, delivery: Delivery) -> int:
        mapped = self._mapped(delivery)
        if isinstance(mapped, Reject):
            return 0
        size = len(mapped.event) + 1
        if mapped.attributes is not None:
            size += len(ENCODER.encode(mapped.attributes)) + 1
        return size

    def outcomes(
        self,
        request: PreparedRequest,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Sequence[Outcome]:
        count = len(request.items)
        failed = failure_outcome(
            "Braze",
            status,
            headers,
            body,
            now_wall=self._clock(),
            credentials_hint=f"the REST API key in {self.config.api_key_env} (api_key_env), "
            "its users.track permission and the endpoint",
        )
        if failed is not None:
            return [failed] * count
        # 2xx: "success" (maybe with per-object errors) or 202 "queued". Objects not listed
        # in `errors` were processed.
        outcomes: list[Outcome] = all_delivered(count)
        answer = decode_json(body)
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if not isinstance(errors, list):
            return outcomes
        for error in errors:
            if not isinstance(error, dict):
                continue
            index = error.get("index")
            kind = str(error.get("type", "invalid object"))
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                continue
            array = error.get("input_array")
            if array == "events" and index < count:
                outcomes[index] = Reject(f"Braze rejected the event: {kind}", status=status)
            elif array == "attributes":
                log.warning(
                    "braze.attributes_rejected", destination=self.name, index=index, type=kind
                )
        return outcomes

    def _mapped(self, delivery: Delivery) -> _Mapped | Reject:
        """`_map`, remembered per messageId: the lane asks for a delivery's size when it
        batches it and for its request when it sends, and mapping dominated profiles.
        A messageId always names the same payload, so the cache cannot go stale."""
        cached = self._cache.get(delivery.message_id)
        if cached is None:
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.clear()
            cached = self._cache[delivery.message_id] = self._map(delivery)
        return cached

    def _map(self, delivery: Delivery) -> _Mapped | Reject:
        payload = delivery.payload
        user_id = payload.get("userId")
        anonymous_id = payload.get("anonymousId")
        identifier: dict[str, Any]
        if isinstance(user_id, str) and user_id:
            identifier = {"external_id": user_id}
            user = "e:" + user_id
        elif isinstance(anonymous_id, str) and anonymous_id:
            identifier = {
                "user_alias": {"alias_name": anonymous_id, "alias_label": self.config.alias_label},
                "_update_existing_only": False,
            }
            user = "a:" + anonymous_id
        else:
            return Reject("no userId or anonymousId: Braze needs an external_id or a user_alias")
        name = payload.get("event")
        if not isinstance(name, str) or not name:
            return Reject("no event name")
        raw = payload.get("properties")
        properties: dict[str, Any] = clean_keys(raw) if isinstance(raw, dict) else {}
        encoded = ENCODER.encode(properties)
        if len(encoded) > MAX_PROPERTIES_BYTES:
            return Reject(
                f"event properties are {len(encoded)} bytes; Braze accepts at most "
                f"{MAX_PROPERTIES_BYTES} per event"
            )
        event: dict[str, Any] = {
            **identifier,
            "name": name,
            "time": payload.get("timestamp"),
            "properties": properties,
        }
        traits = {
            key: value
            for key, value in properties.items()
            if key not in _CONTEXT_KEYS and key not in _IDENTIFIER_KEYS
        }
        attributes = {**identifier, **traits} if traits or "user_alias" in identifier else None
        return _Mapped(user, ENCODER.encode(event), attributes)

    def _plan(self, batch: Sequence[Delivery]) -> tuple[list[PreparedRequest], dict[int, Reject]]:
        rejected: dict[int, Reject] = {}
        requests: list[PreparedRequest] = []
        group = _Group()
        for index, delivery in enumerate(batch):
            mapped = self._mapped(delivery)
            if isinstance(mapped, Reject):
                rejected[index] = mapped
                continue
            if group.fits(mapped, self._limits):
                group.add(index, mapped)
                continue
            if group.items:
                requests.append(self._request(group))
                group = _Group()
            if group.fits(mapped, self._limits):
                group.add(index, mapped)
            else:
                rejected[index] = Reject(
                    f"the request for this event alone would exceed {self._limits.max_bytes} "
                    "bytes (batch_bytes)"
                )
        if group.items:
            requests.append(self._request(group))
        return requests, rejected

    def _request(self, group: _Group) -> PreparedRequest:
        body = group.body()
        return PreparedRequest(
            method="POST",
            url=self._url,
            headers=self._headers,
            body=body,
            items=tuple(group.items),
            description=f"POST {self._public_url} ({len(group.events)} events, "
            f"{len(group.attributes)} attributes, {len(body)} bytes)",
            secret_headers=frozenset({"authorization"}),
        )


class _Group:
    """The objects of one request being filled: events in order, attributes merged per user."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.events: list[bytes] = []
        self.attributes: dict[str, dict[str, Any]] = {}
        self._attribute_bytes: dict[str, bytes] = {}

    def fits(self, mapped: _Mapped, limits: BatchLimits) -> bool:
        objects = len(self.events) + len(self.attributes) + 1
        attribute_bytes = dict(self._attribute_bytes)
        if mapped.attributes is not None:
            if mapped.user not in self.attributes:
                objects += 1
            merged = {**self.attributes.get(mapped.user, {}), **mapped.attributes}
            attribute_bytes[mapped.user] = ENCODER.encode(merged)
        if objects > MAX_OBJECTS or len(self.items) >= limits.max_items:
            return False
        return _body_size([*self.events, mapped.event], attribute_bytes) <= limits.max_bytes

    def add(self, index: int, mapped: _Mapped) -> None:
        self.items.append(index)
        self.events.append(mapped.event)
        if mapped.attributes is not None:
            merged = {**self.attributes.get(mapped.user, {}), **mapped.attributes}
            self.attributes[mapped.user] = merged
            self._attribute_bytes[mapped.user] = ENCODER.encode(merged)

    def body(self) -> bytes:
        events = b'"events":[' + b",".join(self.events) + b"]"
        if not self._attribute_bytes:
            return b"{" + events + b"}"
        attributes = b'"attributes":[' + b",".join(self._attribute_bytes.values()) + b"]"
        return b"{" + attributes + b"," + events + b"}"


def _body_size(events: Sequence[bytes], attributes: Mapping[str, bytes]) -> int:
    size = len(b'{"events":[]}') + sum(map(len, events)) + len(events) - 1
    if attributes:
        size += len(b'"attributes":[],') + sum(map(len, attributes.values()))
        size += len(attributes) - 1
    return size
