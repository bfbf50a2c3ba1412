"""The `customerio` destination: Track API v2 `POST {host}/api/v2/batch`, Basic `site_id:api_key`.

Each identified delivery becomes one operation `{"type":"person","identifiers":{…},
"action":"event","name","id","timestamp","attributes"}`. The identifier follows Segment's
rule: a `userId` starting with `cio_` is a `cio_id`, one that looks like an email address an
`email`, anything else an `id`. The `id` is a deterministic ULID (journeyd/delivery/ulid.py)
from the payload's timestamp and `messageId`, so Customer.io ignores a retried event it has
already accepted; that also makes "retry the whole request" safe whenever an answer cannot be
attributed to single operations. Readings of reference/wire-formats.md, section 3:

- ⚠ Anonymous users: the v2 API lists only `id`, `email`, `phone` and `cio_id` as identifiers
  (Segment's `anonymous_id` there is undocumented). A delivery without a `userId` therefore
  goes, one request each, to the documented v1 anonymous-event endpoint
  `POST {host}/api/v1/events` with `anonymous_id`, `name`, `id`, `timestamp` and `data`;
  Customer.io merges those events into the person once identified.
- ⚠ Sizes: "32 KB per operation" and "500 KB per request" are read as the smaller decimal
  figures, 32,000 and 500,000 bytes. An operation over 32,000 bytes is rejected alone before
  sending (the same cap is applied to a v1 anonymous event, below v1's 100,000-byte limit).
- ⚠ Rate: the newest OpenAPI says 1000 requests/s, older sources 100/s; the default is the
  lower, 100/s. No operation count per request is documented: we cap at 1000 operations
  (bytes bound a batch first for all but tiny events).
- ⚠ No 429 is documented for the Track API; should one come, it is retried like a 5xx and
  `Retry-After` is honoured.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from journeyd.delivery.adapter import BatchLimits, Outcome, PreparedRequest, Reject, Retry
from journeyd.delivery.adapters._shared import (
    ENCODER,
    USER_AGENT,
    Clock,
    PlannedAdapter,
    all_delivered,
    base_url,
    decode_json,
    failure_outcome,
    pack,
    require_env,
    time_ms,
)
from journeyd.delivery.destinations.webhook import public_url
from journeyd.delivery.ulid import ulid_for
from journeyd.engine import Delivery
from journeyd.settings import CustomerioDestination

HOSTS = {"us": "https://track.customer.io", "eu": "https://track-eu.customer.io"}
BATCH_PATH = "/api/v2/batch"
ANONYMOUS_PATH = "/api/v1/events"
MAX_OP_BYTES = 32_000
MAX_REQUEST_BYTES = 500_000
DEFAULTS = BatchLimits(
    max_items=1000,
    max_bytes=MAX_REQUEST_BYTES,
    max_wait_s=1.0,
    rate_per_s=100.0,
    concurrency=8,
)
_ENVELOPE = len(b'{"batch":[]}')
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def identifiers(user_id: str) -> dict[str, str]:
    """Segment's rule: `cio_…` is a cio_id, an email address an email, anything else an id."""
    if user_id.startswith("cio_"):
        return {"cio_id": user_id.removeprefix("cio_")}
    if _EMAIL.fullmatch(user_id):
        return {"email": user_id}
    return {"id": user_id}


class CustomerioAdapter(PlannedAdapter):
    def __init__(
        self,
        name: str,
        config: CustomerioDestination,
        *,
        environ: Mapping[str, str],
        limits: BatchLimits = DEFAULTS,
        clock: Clock = time.time,
    ) -> None:
        self.name = name
        self.config = config
        self._limits = limits
        self._clock = clock
        host = base_url(name, config.endpoint or HOSTS[config.region])
        self._batch_url = host + BATCH_PATH
        self._anonymous_url = host + ANONYMOUS_PATH
        site_id = require_env(name, "site_id_env", config.site_id_env, environ)
        api_key = require_env(name, "api_key_env", config.api_key_env, environ)
        token = base64.b64encode(f"{site_id}:{api_key}".encode()).decode("ascii")
        self._headers = {
            "authorization": f"Basic {token}",
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }

    def size_of(self, delivery: Delivery) -> int:
        mapped = self._map(delivery)
        return 0 if isinstance(mapped, Reject) else len(mapped[1]) + 1

    def outcomes(
        self,
        request: PreparedRequest,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Sequence[Outcome]:
        count = len(request.items)
        failed = failure_outcome(
            "Customer.io",
            status,
            headers,
            body,
            now_wall=self._clock(),
            credentials_hint=f"the site id in {self.config.site_id_env} (site_id_env), the "
            f"Track API key in {self.config.api_key_env} (api_key_env) and the region",
        )
        if failed is not None:
            return [failed] * count
        if status != 207:
            return all_delivered(count)
        # 207: the listed operations are invalid, the others were accepted.
        answer = decode_json(body)
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if not isinstance(errors, list):
            # Which operations failed is unknown; the ULID ids make a full retry harmless.
            return [Retry("Customer.io answered 207 without an errors list", status=207)] * count
        outcomes = all_delivered(count)
        for error in errors:
            if not isinstance(error, dict):
                continue
            index = error.get("batch_index")
            if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < count:
                parts = [
                    str(error[key]) for key in ("reason", "field", "message") if error.get(key)
                ]
                detail = ": ".join(parts) or "invalid operation"
                outcomes[index] = Reject(f"Customer.io rejected the operation: {detail}", 207)
        return outcomes

    def _map(self, delivery: Delivery) -> tuple[bool, bytes] | Reject:
        """(anonymous?, encoded operation or v1 event) for one delivery."""
        payload = delivery.payload
        name = payload.get("event")
        if not isinstance(name, str) or not name.strip():
            return Reject("no event name")
        properties = payload.get("properties")
        attributes: dict[str, Any] = properties if isinstance(properties, dict) else {}
        message_id = payload.get("messageId")
        ulid = ulid_for(
            message_id if isinstance(message_id, str) else delivery.message_id, time_ms(delivery)
        )
        timestamp = time_ms(delivery) // 1000
        user_id = payload.get("userId")
        anonymous_id = payload.get("anonymousId")
        anonymous = False
        if isinstance(user_id, str) and user_id:
            item: dict[str, Any] = {
                "type": "person",
                "identifiers": identifiers(user_id),
                "action": "event",
                "name": name,
                "id": ulid,
                "timestamp": timestamp,
                "attributes": attributes,
            }
        elif isinstance(anonymous_id, str) and anonymous_id:
            anonymous = True
            item = {
                "anonymous_id": anonymous_id,
                "name": name,
                "id": ulid,
                "timestamp": timestamp,
                "data": attributes,
            }
        else:
            return Reject("no userId or anonymousId to identify the person by")
        encoded = ENCODER.encode(item)
        if len(encoded) > MAX_OP_BYTES:
            return Reject(
                f"the operation is {len(encoded)} bytes; Customer.io accepts at most "
                f"{MAX_OP_BYTES} per operation"
            )
        return anonymous, encoded

    def _plan(self, batch: Sequence[Delivery]) -> tuple[list[PreparedRequest], dict[int, Reject]]:
        rejected: dict[int, Reject] = {}
        operations: list[tuple[int, bytes]] = []
        anonymous: list[tuple[int, bytes]] = []
        for index, delivery in enumerate(batch):
            mapped = self._map(delivery)
            if isinstance(mapped, Reject):
                rejected[index] = mapped
            elif _ENVELOPE + len(mapped[1]) > self._limits.max_bytes:
                rejected[index] = Reject(
                    f"the request for this event alone would exceed {self._limits.max_bytes} "
                    "bytes (batch_bytes)"
                )
            else:
                (anonymous if mapped[0] else operations).append((index, mapped[1]))
        requests = [
            self._request(
                self._batch_url,
                b'{"batch":[' + b",".join(chunk.parts) + b"]}",
                chunk.items,
                f"{len(chunk.items)} operations",
            )
            for chunk in pack(
                operations,
                envelope_bytes=_ENVELOPE,
                max_items=self._limits.max_items,
                max_bytes=self._limits.max_bytes,
            )
        ]
        requests.extend(
            self._request(self._anonymous_url, body, (index,), "1 anonymous event")
            for index, body in anonymous
        )
        return requests, rejected

    def _request(self, url: str, body: bytes, items: tuple[int, ...], what: str) -> PreparedRequest:
        return PreparedRequest(
            method="POST",
            url=url,
            headers=self._headers,
            body=body,
            items=items,
            description=f"POST {public_url(url)} ({what}, {len(body)} bytes)",
            secret_headers=frozenset({"authorization"}),
        )
