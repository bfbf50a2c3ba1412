"""The `iterable` destination: `POST /api/events/trackBulk` (or `/api/events/track` for one).

Each delivery becomes a `TrackRequest`: `userId` or `email` (per `identify_by`; the email is
the payload's `properties.email` trait), `eventName`, `id` = `messageId` (Iterable updates an
event whose id it already has, so a retry never duplicates), `createdAt` in unix seconds and
`dataFields` = the payload's properties, where every string that is a full ISO-8601 datetime
becomes `yyyy-MM-dd HH:mm:ss +00:00`, as Segment sends them, so Iterable types it as a date.
Readings of reference/wire-formats.md, section 4:

- Per-endpoint rates: trackBulk allows 10 requests/s per project, track 2000/s. The lane's
  single token bucket uses `limits.rate_per_s`, which is the bulk figure (10/s); a lane batch
  of exactly one delivery goes to `/api/events/track` and is charged to the same bucket,
  which only errs on the slow side. `ENDPOINT_RATES` names both figures for a lane that
  keeps one bucket per endpoint. Iterable processes the two endpoints separately; `createdAt`
  carries each event's own time, so the order Iterable shows does not depend on the route.
- ⚠ Bulk size: no item count is documented; "4 MB" is read as 4,000,000 bytes per request,
  and a request holds at most 1000 events.
- ⚠ Only one of `email` and `userId` is sent, as the spec asks ("provide one, not both").
- ⚠ Dates: only datetimes with an explicit zone (`Z` or `±hh:mm`) are converted; a naive
  one is ambiguous and stays as it is, as do date-only strings.
- ⚠ `Retry-After` on 429 is undocumented; it is honoured when present.
- A 2xx trackBulk answer lists failed identifiers, not positions: every event whose
  identifier is listed in `failedUpdates` (invalid, not found, forgotten) or whose name is
  in `disallowedEventNames` is rejected. If `failCount` says more events failed than those
  lists account for, the remaining events are retried (safe: ids make it an update).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
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
    unix_seconds,
)
from journeyd.delivery.destinations.webhook import public_url
from journeyd.engine import Delivery
from journeyd.settings import IterableDestination

HOSTS = {"us": "https://api.iterable.com", "eu": "https://api.eu.iterable.com"}
BULK_PATH = "/api/events/trackBulk"
SINGLE_PATH = "/api/events/track"
ENDPOINT_RATES = {BULK_PATH: 10.0, SINGLE_PATH: 2000.0}  # requests per second per project
MAX_ID_BYTES = 512
DEFAULTS = BatchLimits(
    max_items=1000,
    max_bytes=4_000_000,
    max_wait_s=1.0,
    rate_per_s=ENDPOINT_RATES[BULK_PATH],
    concurrency=8,
)
_ENVELOPE = len(b'{"events":[]}')
_EMAIL_LISTS = ("invalidEmails", "notFoundEmails", "forgottenEmails")
_USER_ID_LISTS = ("invalidUserIds", "notFoundUserIds", "forgottenUserIds")
_ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})"
)


def iterable_date(value: str) -> str | None:
    """`value` as `yyyy-MM-dd HH:mm:ss +00:00` if it is a full, zoned ISO datetime."""
    if not _ISO_DATETIME.fullmatch(value):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +00:00")


def convert_dates(value: Any) -> Any:
    """`value` with every ISO datetime string inside (at any depth) in Iterable's form."""
    if isinstance(value, str):
        converted = iterable_date(value)
        return value if converted is None else converted
    if isinstance(value, dict):
        return {key: convert_dates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [convert_dates(item) for item in value]
    return value


class IterableAdapter(PlannedAdapter):
    def __init__(
        self,
        name: str,
        config: IterableDestination,
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
        self._bulk_url = host + BULK_PATH
        self._single_url = host + SINGLE_PATH
        key = require_env(name, "api_key_env", config.api_key_env, environ)
        self._headers = {
            "api-key": key,
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }

    def size_of(self, delivery: Delivery) -> int:
        mapped = self._map(delivery)
        return 0 if isinstance(mapped, Reject) else len(mapped) + 1

    def outcomes(
        self,
        request: PreparedRequest,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Sequence[Outcome]:
        count = len(request.items)
        failed = failure_outcome(
            "Iterable",
            status,
            headers,
            body,
            now_wall=self._clock(),
            credentials_hint=f"the server-side API key in {self.config.api_key_env} "
            "(api_key_env) and the region",
        )
        if failed is not None:
            return [failed] * count
        answer = decode_json(body)
        if not request.url.endswith(BULK_PATH) or not isinstance(answer, dict):
            return all_delivered(count)
        events = decode_json(request.body)["events"]
        failures = answer.get("failedUpdates")
        failed_ids: dict[tuple[str, str], str] = {}
        if isinstance(failures, dict):
            for field, lists in (("email", _EMAIL_LISTS), ("userId", _USER_ID_LISTS)):
                for list_name in lists:
                    values = failures.get(list_name)
                    if isinstance(values, list):
                        for value in values:
                            failed_ids.setdefault((field, str(value)), list_name)
        disallowed = answer.get("disallowedEventNames")
        disallowed_names = set(map(str, disallowed)) if isinstance(disallowed, list) else set()
        outcomes = all_delivered(count)
        rejected = 0
        for position, event in enumerate(events):
            field = "email" if "email" in event else "userId"
            value = str(event.get(field))
            reason = failed_ids.get((field, value))
            if reason is not None:
                outcomes[position] = Reject(f"Iterable: {field} {value!r} is in {reason}", status)
                rejected += 1
            elif event.get("eventName") in disallowed_names:
                outcomes[position] = Reject(
                    f"Iterable: event name {event['eventName']!r} is not allowed "
                    "(disallowedEventNames)",
                    status,
                )
                rejected += 1
        fail_count = answer.get("failCount")
        if isinstance(fail_count, int) and fail_count > rejected:
            unexplained = Retry(
                f"Iterable reported {fail_count} failed events but named only {rejected}",
                status=status,
            )
            outcomes = [o if isinstance(o, Reject) else unexplained for o in outcomes]
        return outcomes

    def _map(self, delivery: Delivery) -> bytes | Reject:
        payload = delivery.payload
        name = payload.get("event")
        if not isinstance(name, str) or not name:
            return Reject("no event name")
        properties = payload.get("properties")
        fields: dict[str, Any] = properties if isinstance(properties, dict) else {}
        by = self.config.identify_by
        value = payload.get("userId") if by == "userId" else fields.get("email")
        if not isinstance(value, str) or not value:
            where = "userId" if by == "userId" else "properties.email trait"
            return Reject(
                f'no {where} (identify_by = "{by}"): Iterable needs it to identify the user'
            )
        message_id = payload.get("messageId")
        event_id = message_id if isinstance(message_id, str) else delivery.message_id
        if len(event_id.encode()) > MAX_ID_BYTES:
            return Reject(f"messageId is longer than Iterable's {MAX_ID_BYTES} bytes")
        return ENCODER.encode(
            {
                by: value,
                "eventName": name,
                "id": event_id,
                "createdAt": unix_seconds(delivery),
                "dataFields": convert_dates(fields),
            }
        )

    def _plan(self, batch: Sequence[Delivery]) -> tuple[list[PreparedRequest], dict[int, Reject]]:
        rejected: dict[int, Reject] = {}
        events: list[tuple[int, bytes]] = []
        for index, delivery in enumerate(batch):
            mapped = self._map(delivery)
            if isinstance(mapped, Reject):
                rejected[index] = mapped
            elif _ENVELOPE + len(mapped) > self._limits.max_bytes:
                rejected[index] = Reject(
                    f"the request for this event alone would exceed {self._limits.max_bytes} "
                    "bytes (batch_bytes)"
                )
            else:
                events.append((index, mapped))
        if len(events) == 1:
            index, body = events[0]
            return [self._request(self._single_url, body, (index,), "1 event")], rejected
        requests = [
            self._request(
                self._bulk_url,
                b'{"events":[' + b",".join(chunk.parts) + b"]}",
                chunk.items,
                f"{len(chunk.items)} events",
            )
            for chunk in pack(
                events,
                envelope_bytes=_ENVELOPE,
                max_items=self._limits.max_items,
                max_bytes=self._limits.max_bytes,
            )
        ]
        return requests, rejected

    def _request(self, url: str, body: bytes, items: tuple[int, ...], what: str) -> PreparedRequest:
        return PreparedRequest(
            method="POST",
            url=url,
            headers=self._headers,
            body=body,
            items=items,
            description=f"POST {public_url(url)} ({what}, {len(body)} bytes)",
            secret_headers=frozenset({"api-key"}),
        )
