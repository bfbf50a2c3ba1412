"""The Iterable adapter: exact track/trackBulk requests, identifiers, dates and bulk answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from journeyd.delivery.adapter import BatchLimits, Delivered, Reject, Retry
from journeyd.delivery.adapters import build_adapter, default_limits
from journeyd.delivery.adapters.iterable import (
    ENDPOINT_RATES,
    IterableAdapter,
    convert_dates,
    iterable_date,
)
from journeyd.delivery.retry import DestinationConfigError
from journeyd.engine import Delivery
from journeyd.engine.payload import build_payload
from journeyd.settings import IterableDestination

KEY = "iterable-server-key"
ENV = {"ITERABLE_KEY": KEY}
CONFIG = IterableDestination(api_key_env="ITERABLE_KEY")
BY_EMAIL = IterableDestination(api_key_env="ITERABLE_KEY", identify_by="email", region="eu")
NOW = 1772356700.0


def delivery(
    n: int, *, traits: dict[str, Any] | None = None, context: Any = None, anonymous: bool = False
) -> Delivery:
    traits = {"email": f"user{n}@example.org"} if traits is None else traits
    payload = build_payload(
        event_name="Trial Started",
        user=f"u-{n}",
        anonymous=anonymous,
        message_id=f"m-{n}",
        at=1772356682.9,
        journey_context=context if context is not None else {"trial_ends": "2026-03-15T09:18:02Z"},
        journey_id="onboarding",
        journey_version="v1",
        instance_id=f"i-{n}",
        step_id="welcome",
        traits=traits,
        selected_traits=list(traits),
    )
    return Delivery(
        at=1772356682.9, user=f"u-{n}", step="welcome", destination="it", message_id=f"m-{n}",
        payload=payload,
    )  # fmt: skip


def adapter(
    config: IterableDestination = CONFIG, limits: BatchLimits | None = None
) -> IterableAdapter:
    if limits is not None:
        return IterableAdapter("it", config, environ=ENV, limits=limits, clock=lambda: NOW)
    built = build_adapter("it", config, environ=ENV, clock=lambda: NOW)
    assert isinstance(built, IterableAdapter)
    return built


def event(n: int, identifier: dict[str, str]) -> dict[str, Any]:
    return {
        **identifier,
        "eventName": "Trial Started",
        "id": f"m-{n}",
        "createdAt": 1772356682,
        "dataFields": {
            "journey_context": {"trial_ends": "2026-03-15 09:18:02 +00:00"},
            "journey_metadata": {
                "journey_id": "onboarding",
                "journey_version": "v1",
                "instance_id": f"i-{n}",
                "step_id": "welcome",
            },
            "email": f"user{n}@example.org",
        },
    }


def test_exact_bulk_request() -> None:
    """Two deliveries go to trackBulk with exactly these headers and events."""
    [request] = adapter().requests([delivery(1), delivery(2)])
    assert request.url == "https://api.iterable.com/api/events/trackBulk"
    assert dict(request.headers) == {
        "api-key": KEY,
        "content-type": "application/json",
        "user-agent": "journeyd/0.1.0",
    }
    assert request.secret_headers == frozenset({"api-key"})
    assert json.loads(request.body) == {
        "events": [event(1, {"userId": "u-1"}), event(2, {"userId": "u-2"})]
    }


def test_single_delivery_uses_track() -> None:
    """A batch of one goes to /api/events/track with the bare TrackRequest body."""
    [request] = adapter(BY_EMAIL).requests([delivery(1)])
    assert request.url == "https://api.eu.iterable.com/api/events/track"
    assert json.loads(request.body) == event(1, {"email": "user1@example.org"})


def test_rates_exposed() -> None:
    """The lane's bucket gets trackBulk's 10 req/s; both endpoint figures are exposed."""
    assert default_limits(CONFIG).rate_per_s == 10.0
    assert ENDPOINT_RATES == {"/api/events/trackBulk": 10.0, "/api/events/track": 2000.0}
    assert default_limits(CONFIG) == BatchLimits(
        max_items=1000, max_bytes=4_000_000, max_wait_s=1.0, rate_per_s=10.0, concurrency=8
    )


def test_missing_identifier_rejected() -> None:
    """Without the chosen identifier a delivery is rejected with a clear reason, alone."""
    no_email = delivery(2, traits={})
    batch = [delivery(1), no_email, delivery(3)]
    requests = adapter(BY_EMAIL).requests(batch)
    assert [r.items for r in requests] == [(0, 2)]
    assert adapter(BY_EMAIL).rejected(batch) == {
        1: Reject(
            'no properties.email trait (identify_by = "email"): Iterable needs it to identify '
            "the user"
        )
    }
    anonymous = delivery(1, anonymous=True)
    assert adapter().rejected([anonymous]) == {
        0: Reject('no userId (identify_by = "userId"): Iterable needs it to identify the user')
    }
    assert adapter().requests([anonymous]) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-15T09:18:02Z", "2026-03-15 09:18:02 +00:00"),
        ("2026-03-15T09:18:02.123Z", "2026-03-15 09:18:02 +00:00"),
        ("2026-03-15T11:18:02+02:00", "2026-03-15 09:18:02 +00:00"),
        ("2026-03-15T09:18Z", "2026-03-15 09:18:00 +00:00"),
        ("2026-03-15", None),
        ("2026-03-15T09:18:02", None),
        ("on 2026-03-15T09:18:02Z", None),
        ("2026-13-15T09:18:02Z", None),
        ("hello", None),
    ],
)
def test_date_conversion(value: str, expected: str | None) -> None:
    """Only full, zoned ISO datetimes become 'yyyy-MM-dd HH:mm:ss +00:00' (in UTC)."""
    assert iterable_date(value) == expected


def test_dates_converted_at_any_depth() -> None:
    """Nested dicts and lists are converted; other values are untouched."""
    assert convert_dates(
        {"a": [{"at": "2026-01-02T03:04:05Z"}, 3, "x"], "b": {"c": "2026-01-02"}, "n": None}
    ) == {"a": [{"at": "2026-01-02 03:04:05 +00:00"}, 3, "x"], "b": {"c": "2026-01-02"}, "n": None}


def test_split_exactly_at_bytes() -> None:
    """trackBulk bodies split where the next event would pass max_bytes, equal allowed."""
    batch = [delivery(n) for n in range(5)]
    whole = len(adapter().requests(batch[:2])[0].body)
    limits = BatchLimits(max_items=1000, max_bytes=whole, max_wait_s=1, rate_per_s=10,
                         concurrency=1)  # fmt: skip
    requests = adapter(limits=limits).requests(batch)
    assert [r.items for r in requests] == [(0, 1), (2, 3), (4,)]
    assert len(requests[0].body) == whole
    assert all(r.url.endswith("/trackBulk") for r in requests)


def test_split_by_count() -> None:
    """1001 deliveries make a request of 1000 and one of 1."""
    requests = adapter().requests([delivery(n) for n in range(1001)])
    assert [len(r.items) for r in requests] == [1000, 1]


def test_oversize_rejected_alone() -> None:
    """A delivery whose request alone would pass max_bytes is rejected; the others are sent."""
    limits = BatchLimits(max_items=1000, max_bytes=2000, max_wait_s=1, rate_per_s=10,
                         concurrency=1)  # fmt: skip
    batch = [delivery(0), delivery(1, context={"blob": "z" * 3000}), delivery(2)]
    [request] = adapter(limits=limits).requests(batch)
    assert request.items == (0, 2)
    assert list(adapter(limits=limits).rejected(batch)) == [1]


def test_failed_updates_map_to_deliveries() -> None:
    """failedUpdates and disallowedEventNames reject exactly the events that carried them."""
    a = adapter()
    batch = [delivery(n) for n in range(4)]
    payload = {**batch[3].payload, "event": "Forbidden"}
    batch[3] = Delivery(
        at=batch[3].at, user="u-3", step="welcome", destination="it", message_id="m-3",
        payload=payload,
    )  # fmt: skip
    [request] = a.requests(batch)
    answer = {
        "successCount": 1,
        "failCount": 3,
        "failedUpdates": {
            "invalidUserIds": ["u-1"],
            "notFoundUserIds": [],
            "forgottenUserIds": ["u-2"],
            "invalidEmails": ["u-0"],
        },
        "disallowedEventNames": ["Forbidden"],
    }
    assert a.outcomes(request, 200, {}, json.dumps(answer).encode()) == [
        Delivered(),
        Reject("Iterable: userId 'u-1' is in invalidUserIds", status=200),
        Reject("Iterable: userId 'u-2' is in forgottenUserIds", status=200),
        Reject(
            "Iterable: event name 'Forbidden' is not allowed (disallowedEventNames)", status=200
        ),
    ]


def test_unattributed_failures_retried() -> None:
    """failCount beyond the named failures retries the rest (ids make the retry an update)."""
    a = adapter()
    [request] = a.requests([delivery(0), delivery(1)])
    answer = {"successCount": 0, "failCount": 2, "failedUpdates": {"notFoundUserIds": ["u-0"]}}
    assert a.outcomes(request, 200, {}, json.dumps(answer).encode()) == [
        Reject("Iterable: userId 'u-0' is in notFoundUserIds", status=200),
        Retry("Iterable reported 2 failed events but named only 1", status=200),
    ]


def test_single_track_success() -> None:
    """A 200 from /api/events/track delivers its one item."""
    a = adapter()
    [request] = a.requests([delivery(0)])
    body = b'{"msg":"Event with id: m-0 tracked.","code":"Success","params":{"id":"m-0"}}'
    assert a.outcomes(request, 200, {}, body) == [Delivered()]


@pytest.mark.parametrize(
    ("status", "headers", "kind", "after"),
    [
        (400, {}, Reject, None),
        (401, {}, Reject, None),
        (429, {"Retry-After": "2"}, Retry, 2.0),
        (429, {}, Retry, None),
        (502, {}, Retry, None),
    ],
)
def test_status_classes(
    status: int, headers: dict[str, str], kind: type, after: float | None
) -> None:
    """400/401 reject every event, 429/5xx retry every event (Retry-After honoured)."""
    a = adapter()
    [request] = a.requests([delivery(0), delivery(1)])
    body = b'{"msg":"nope","code":"BadApiKey","params":null}'
    outcomes = a.outcomes(request, status, headers, body)
    assert len(outcomes) == 2
    assert all(type(o) is kind and o.status == status for o in outcomes)
    if isinstance(outcomes[0], Retry):
        assert outcomes[0].after_s == after
    if status == 401:
        assert isinstance(outcomes[0], Reject)
        assert "ITERABLE_KEY (api_key_env)" in outcomes[0].error


def test_secret_never_in_description() -> None:
    """The API key never appears in a description."""
    for request in adapter().requests([delivery(0), delivery(1)]) + adapter().requests(
        [delivery(2)]
    ):
        assert KEY not in request.description


def test_missing_key() -> None:
    """An unset api_key_env is a config error naming the variable."""
    with pytest.raises(DestinationConfigError, match=r"ITERABLE_KEY \(api_key_env\) is not set"):
        build_adapter("it", CONFIG, environ={"ITERABLE_KEY": "  "})
