"""The `webhook` destination as an Adapter: one delivery per request, Standard Webhooks signed.

The same wire behaviour as journeyd/delivery/destinations/webhook.py (whose helpers it uses):
the payload as JSON, `webhook-id` = the delivery's `message_id` (the same across retries),
`webhook-timestamp` = this attempt's unix seconds and `webhook-signature` over the exact
bytes sent. Because the timestamp is this attempt's, **`requests` must be called right before
each attempt** (receivers refuse timestamps more than about five minutes old); that is the
one place this adapter reads its clock. The secret is decoded once, at build time, and only
ever appears inside the signature.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from journeyd.delivery.adapter import BatchLimits, Outcome, PreparedRequest, Reject
from journeyd.delivery.adapters._shared import (
    ENCODER,
    USER_AGENT,
    Clock,
    all_delivered,
    failure_outcome,
)
from journeyd.delivery.destinations.webhook import load_secret, public_url, sign
from journeyd.engine import Delivery
from journeyd.settings import WebhookDestination

# A webhook has no documented size limit, so nothing is rejected for size; with one item per
# request `max_bytes` never splits anything.
DEFAULTS = BatchLimits(
    max_items=1,
    max_bytes=10_000_000,
    max_wait_s=0.0,
    rate_per_s=None,
    concurrency=8,
)
_SENSITIVE = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})


class WebhookAdapter:
    def __init__(
        self,
        name: str,
        config: WebhookDestination,
        *,
        environ: Mapping[str, str],
        limits: BatchLimits = DEFAULTS,
        clock: Clock = time.time,
    ) -> None:
        self.name = name
        self.config = config
        self._limits = limits
        self._clock = clock
        self._key = load_secret(name, config.secret_env, environ) if config.secret_env else None
        self._public_url = public_url(config.url)
        self._headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **{key.lower(): value for key, value in config.headers.items()},
        }
        self._secret_headers = frozenset(
            {"webhook-signature"} | (_SENSITIVE & self._headers.keys())
        )

    @property
    def limits(self) -> BatchLimits:
        return self._limits

    def size_of(self, delivery: Delivery) -> int:
        return len(ENCODER.encode(delivery.payload))

    def rejected(self, batch: Sequence[Delivery]) -> Mapping[int, Reject]:
        return {}

    def requests(self, batch: Sequence[Delivery]) -> list[PreparedRequest]:
        timestamp = int(self._clock())
        return [self._request(index, delivery, timestamp) for index, delivery in enumerate(batch)]

    def outcomes(
        self,
        request: PreparedRequest,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Sequence[Outcome]:
        failed = failure_outcome(
            "the webhook",
            status,
            headers,
            body,
            now_wall=self._clock(),
            credentials_hint="the url and headers",
        )
        count = len(request.items)
        return all_delivered(count) if failed is None else [failed] * count

    def _request(self, index: int, delivery: Delivery, timestamp: int) -> PreparedRequest:
        body = ENCODER.encode(delivery.payload)
        headers = dict(self._headers)
        headers["webhook-id"] = delivery.message_id
        headers["webhook-timestamp"] = str(timestamp)
        if self._key is not None:
            headers["webhook-signature"] = sign(self._key, delivery.message_id, timestamp, body)
        return PreparedRequest(
            method="POST",
            url=self.config.url,
            headers=headers,
            body=body,
            items=(index,),
            description=f"POST {self._public_url} ({len(body)} bytes)",
            secret_headers=self._secret_headers,
        )
