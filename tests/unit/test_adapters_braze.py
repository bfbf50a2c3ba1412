"""The Braze adapter: exact /users/track requests, batching by objects and bytes, answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from journeyd.delivery.adapter import BatchLimits, Delivered, Reject, Retry
from journeyd.delivery.adapters import build_adapter, default_limits
from journeyd.delivery.adapters.braze import BrazeAdapter
from journeyd.delivery.retry import DestinationConfigError
from journeyd.engine import Delivery
from journeyd.engine.payload import build_payload
from journeyd.settings import BrazeDestination

KEY = "braze-secret-key-123"
NOW = 1772356700.0
CONFIG = BrazeDestination(
    endpoint="https://rest.iad-01.braze.com/", api_key_env="BRAZE_KEY", alias_label="anon_id"
)


def delivery(
    n: int,
    *,
    anonymous: bool = False,
    traits: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    user: str | None = None,
) -> Delivery:
    who = user or f"u-{n}"
    payload = build_payload(
        event_name="Trial Started",
        user=who,
        anonymous=anonymous,
        message_id=f"m-{n}",
        at=1772356682.0,
        journey_context=context if context is not None else {"signup": {"plan": "pro"}},
        journey_id="onboarding",
        journey_version="v1",
        instance_id=f"i-{n}",
        step_id="welcome",
        traits=traits,
        selected_traits=list(traits or {}),
    )
    return Delivery(
        at=1772356682.0, user=who, step="welcome", destination="braze", message_id=f"m-{n}",
        payload=payload,
    )  # fmt: skip


def adapter(limits: BatchLimits | None = None) -> BrazeAdapter:
    built = build_adapter("braze", CONFIG, environ={"BRAZE_KEY": KEY}, clock=lambda: NOW)
    assert isinstance(built, BrazeAdapter)
    if limits is not None:
        return BrazeAdapter(
            "braze", CONFIG, environ={"BRAZE_KEY": KEY}, limits=limits, clock=lambda: NOW
        )
    return built


METADATA = {"journey_id": "onboarding", "journey_version": "v1", "step_id": "welcome"}


def test_exact_request() -> None:
    """Fixed deliveries give exactly this URL, these headers and this JSON body."""
    batch = [
        delivery(1, traits={"plan": "pro", "email": "a@example.org"}),
        delivery(2, anonymous=True, user="anon-7f3e"),
    ]
    [request] = adapter().requests(batch)
    assert request.method == "POST"
    assert request.url == "https://rest.iad-01.braze.com/users/track"
    assert dict(request.headers) == {
        "authorization": f"Bearer {KEY}",
        "content-type": "application/json",
        "user-agent": "journeyd/0.1.0",
    }
    assert "x-braze-batch" not in request.headers
    assert request.items == (0, 1)
    assert request.secret_headers == frozenset({"authorization"})
    alias = {"alias_name": "anon-7f3e", "alias_label": "anon_id"}
    assert json.loads(request.body) == {
        "attributes": [
            {"external_id": "u-1", "plan": "pro", "email": "a@example.org"},
            {"user_alias": alias, "_update_existing_only": False},
        ],
        "events": [
            {
                "external_id": "u-1",
                "name": "Trial Started",
                "time": "2026-03-01T09:18:02.000Z",
                "properties": {
                    "journey_context": {"signup": {"plan": "pro"}},
                    "journey_metadata": {**METADATA, "instance_id": "i-1"},
                    "plan": "pro",
                    "email": "a@example.org",
                },
            },
            {
                "user_alias": alias,
                "_update_existing_only": False,
                "name": "Trial Started",
                "time": "2026-03-01T09:18:02.000Z",
                "properties": {
                    "journey_context": {"signup": {"plan": "pro"}},
                    "journey_metadata": {**METADATA, "instance_id": "i-2"},
                },
            },
        ],
    }


def test_no_traits_no_attributes() -> None:
    """An identified user without selected traits sends only its event (no attributes key)."""
    [request] = adapter().requests([delivery(1)])
    assert list(json.loads(request.body)) == ["events"]


def test_attributes_merged_per_user() -> None:
    """Two deliveries of one user in a request share one attributes object, later values win."""
    batch = [
        delivery(1, user="u", traits={"plan": "free", "age": 3}),
        delivery(2, user="u", traits={"plan": "pro"}),
    ]
    [request] = adapter().requests(batch)
    body = json.loads(request.body)
    assert body["attributes"] == [{"external_id": "u", "plan": "pro", "age": 3}]
    assert len(body["events"]) == 2


def test_invalid_keys_dropped() -> None:
    """Keys Braze refuses (empty, over 255 chars, leading $) are dropped at every depth."""
    long_key = "k" * 256
    context = {"ev": {"$secret": 1, "": 2, long_key: 3, "ok": [{"$x": 1, "y": 2}], "k" * 255: 4}}
    [request] = adapter().requests([delivery(1, context=context, traits={"$plan": "x"})])
    body = json.loads(request.body)
    assert body["events"][0]["properties"]["journey_context"] == {
        "ev": {"ok": [{"y": 2}], "k" * 255: 4}
    }
    assert "$plan" not in body["events"][0]["properties"]
    assert "attributes" not in body


def test_no_identifier_rejected() -> None:
    """A delivery with neither userId nor anonymousId is left out and rejected with a reason."""
    bad = delivery(1)
    payload = {**bad.payload, "userId": None, "anonymousId": None}
    batch = [delivery(0), Delivery(**{**_fields(bad), "payload": payload})]
    requests = adapter().requests(batch)
    assert [r.items for r in requests] == [(0,)]
    assert adapter().rejected(batch) == {
        1: Reject("no userId or anonymousId: Braze needs an external_id or a user_alias")
    }


def _fields(d: Delivery) -> dict[str, Any]:
    return {f: getattr(d, f) for f in d.__struct_fields__}


def test_oversize_properties_rejected_alone() -> None:
    """Properties over 50,000 bytes reject that delivery only; its neighbours are sent."""
    big = delivery(1, context={"blob": "x" * 50_000})
    batch = [delivery(0), big, delivery(2)]
    [request] = adapter().requests(batch)
    assert request.items == (0, 2)
    rejected = adapter().rejected(batch)
    assert list(rejected) == [1]
    assert "Braze accepts at most 50000 per event" in rejected[1].error


def test_split_at_75_objects() -> None:
    """75 single-object deliveries fit one request; the 76th starts a second."""
    requests = adapter().requests([delivery(n) for n in range(76)])
    assert [len(r.items) for r in requests] == [75, 1]
    assert len(json.loads(requests[0].body)["events"]) == 75


def test_split_counts_attributes_objects() -> None:
    """Events and attributes count together: 38 users with traits (76 objects) split 37 + 1."""
    requests = adapter().requests([delivery(n, traits={"plan": "pro"}) for n in range(38)])
    assert [len(r.items) for r in requests] == [37, 1]
    body = json.loads(requests[0].body)
    assert len(body["events"]) + len(body["attributes"]) == 74


def test_split_exactly_at_byte_limit() -> None:
    """A body exactly at max_bytes is sent whole; one byte less splits off the last delivery."""
    batch = [delivery(n) for n in range(3)]
    whole = len(adapter().requests(batch)[0].body)
    exact = BatchLimits(max_items=75, max_bytes=whole, max_wait_s=1, rate_per_s=None, concurrency=1)
    assert [r.items for r in adapter(exact).requests(batch)] == [(0, 1, 2)]
    under = BatchLimits(
        max_items=75, max_bytes=whole - 1, max_wait_s=1, rate_per_s=None, concurrency=1
    )
    requests = adapter(under).requests(batch)
    assert [r.items for r in requests] == [(0, 1), (2,)]
    assert all(len(r.body) <= whole - 1 for r in requests)


def test_size_of_matches_body_growth() -> None:
    """size_of is what a delivery adds to a body (its objects plus separators)."""
    one = adapter().requests([delivery(0, traits={"a": 1})])[0].body
    two = adapter().requests([delivery(0, traits={"a": 1}), delivery(1, traits={"a": 1})])[0].body
    assert len(two) - len(one) == adapter().size_of(delivery(1, traits={"a": 1}))


def test_partial_errors_map_to_deliveries() -> None:
    """Per-object errors reject only the listed events; attribute errors do not fail a delivery."""
    a = adapter()
    [request] = a.requests([delivery(n, traits={"p": n}) for n in range(3)])
    answer = {
        "message": "success",
        "events_processed": 1,
        "errors": [
            {"type": "'time' is not a valid time", "input_array": "events", "index": 2},
            {"type": "bad attribute", "input_array": "attributes", "index": 0},
            {"type": "bogus", "input_array": "events", "index": 99},
        ],
    }
    outcomes = a.outcomes(request, 201, {}, json.dumps(answer).encode())
    assert outcomes == [
        Delivered(),
        Delivered(),
        Reject("Braze rejected the event: 'time' is not a valid time", status=201),
    ]


def test_queued_is_success() -> None:
    """202 {"message": "queued"} (maintenance) counts as delivered."""
    a = adapter()
    [request] = a.requests([delivery(1), delivery(2)])
    assert a.outcomes(request, 202, {}, b'{"message":"queued"}') == [Delivered(), Delivered()]


@pytest.mark.parametrize("status", [401, 403, 404])
def test_credentials_reject_all(status: int) -> None:
    """401/403/404 reject every item with a message pointing at api_key_env."""
    a = adapter()
    [request] = a.requests([delivery(1), delivery(2)])
    outcomes = a.outcomes(request, status, {}, b'{"message":"Invalid API key"}')
    assert all(isinstance(o, Reject) and o.status == status for o in outcomes)
    assert len(outcomes) == 2
    assert isinstance(outcomes[0], Reject)
    assert "BRAZE_KEY (api_key_env)" in outcomes[0].error
    assert KEY not in outcomes[0].error


def test_bad_request_rejects_all() -> None:
    """400 rejects the whole request, quoting Braze's message."""
    a = adapter()
    [request] = a.requests([delivery(1)])
    assert a.outcomes(request, 400, {}, b'{"message":"Max Input Length Exceeded"}') == [
        Reject('Braze answered HTTP 400: {"message":"Max Input Length Exceeded"}', status=400)
    ]


@pytest.mark.parametrize(
    ("headers", "after"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "Sun, 01 Mar 2026 09:18:40 GMT"}, 20.0),  # NOW is 09:18:20
        ({"X-RateLimit-Reset": str(int(NOW) + 12)}, 12.0),
        ({"Retry-After": "3", "X-RateLimit-Reset": str(int(NOW) + 12)}, 3.0),
        ({}, None),
    ],
)
def test_429_retry_after(headers: dict[str, str], after: float | None) -> None:
    """429 retries every item after Retry-After (seconds or date), else X-RateLimit-Reset."""
    a = adapter()
    [request] = a.requests([delivery(1), delivery(2)])
    outcomes = a.outcomes(request, 429, headers, b"")
    assert outcomes == [Retry("Braze answered HTTP 429", after_s=after, status=429)] * 2


@pytest.mark.parametrize(("status", "retry"), [(500, True), (503, True), (501, False)])
def test_5xx(status: int, retry: bool) -> None:
    """5xx is retried, except 501 which no retry can fix."""
    a = adapter()
    [request] = a.requests([delivery(1)])
    [outcome] = a.outcomes(request, status, {}, b"oops")
    assert isinstance(outcome, Retry if retry else Reject)


def test_secret_never_in_description() -> None:
    """The API key appears in the auth header only, never in the loggable description."""
    for request in adapter().requests([delivery(n) for n in range(80)]):
        assert KEY not in request.description
        assert request.description.startswith("POST https://rest.iad-01.braze.com/users/track (")


def test_missing_key_env() -> None:
    """An unset api_key_env variable is a config error naming the variable."""
    with pytest.raises(DestinationConfigError, match=r"BRAZE_KEY \(api_key_env\) is not set"):
        build_adapter("braze", CONFIG, environ={})


def test_policy_keys_override_defaults() -> None:
    """batch_size etc. override the Braze defaults; a batch_size above 75 is refused."""
    assert default_limits(CONFIG) == BatchLimits(
        max_items=75, max_bytes=4_000_000, max_wait_s=1.0, rate_per_s=1000.0, concurrency=8
    )
    tuned = BrazeDestination(
        endpoint="https://x", api_key_env="K", batch_size=10, batch_wait="5s", rate=50,
        concurrency=2, batch_bytes=100_000,
    )  # fmt: skip
    assert default_limits(tuned) == BatchLimits(
        max_items=10, max_bytes=100_000, max_wait_s=5.0, rate_per_s=50.0, concurrency=2
    )
    with pytest.raises(DestinationConfigError, match="batch_size = 100"):
        default_limits(BrazeDestination(endpoint="https://x", api_key_env="K", batch_size=100))
    with pytest.raises(DestinationConfigError, match="batch_wait"):
        default_limits(BrazeDestination(endpoint="https://x", api_key_env="K", batch_wait="soon"))
