"""The Customer.io adapter: exact Track v2 batch requests, ULID ids, sizes and 207 answers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from journeyd.delivery.adapter import BatchLimits, Delivered, Reject, Retry
from journeyd.delivery.adapters import build_adapter, default_limits
from journeyd.delivery.adapters.customerio import CustomerioAdapter, identifiers
from journeyd.delivery.retry import DestinationConfigError
from journeyd.delivery.ulid import ulid_for
from journeyd.engine import Delivery
from journeyd.engine.payload import build_payload
from journeyd.settings import CustomerioDestination

SITE, KEY = "site-42", "cio-secret-key"
ENV = {"CIO_SITE": SITE, "CIO_KEY": KEY}
CONFIG = CustomerioDestination(site_id_env="CIO_SITE", api_key_env="CIO_KEY")
NOW = 1772356700.0


def delivery(
    n: int, *, user: str | None = None, anonymous: bool = False, context: Any = None
) -> Delivery:
    who = user or f"u-{n}"
    payload = build_payload(
        event_name="Trial Started",
        user=who,
        anonymous=anonymous,
        message_id=f"m-{n}",
        at=1772356682.25,
        journey_context=context if context is not None else {"signup": {"plan": "pro"}},
        journey_id="onboarding",
        journey_version="v1",
        instance_id=f"i-{n}",
        step_id="welcome",
        traits={"plan": "pro"},
        selected_traits=["plan"],
    )
    return Delivery(
        at=1772356682.25, user=who, step="welcome", destination="cio", message_id=f"m-{n}",
        payload=payload,
    )  # fmt: skip


def adapter(
    config: CustomerioDestination = CONFIG, limits: BatchLimits | None = None
) -> CustomerioAdapter:
    if limits is not None:
        return CustomerioAdapter("cio", config, environ=ENV, limits=limits, clock=lambda: NOW)
    built = build_adapter("cio", config, environ=ENV, clock=lambda: NOW)
    assert isinstance(built, CustomerioAdapter)
    return built


def properties(n: int) -> dict[str, Any]:
    return {
        "journey_context": {"signup": {"plan": "pro"}},
        "journey_metadata": {
            "journey_id": "onboarding",
            "journey_version": "v1",
            "instance_id": f"i-{n}",
            "step_id": "welcome",
        },
        "plan": "pro",
    }


def test_exact_request() -> None:
    """Fixed deliveries give exactly this URL, Basic auth and JSON batch body."""
    batch = [delivery(1), delivery(2, user="ana@example.org"), delivery(3, user="cio_abc123")]
    [request] = adapter().requests(batch)
    assert request.url == "https://track.customer.io/api/v2/batch"
    token = base64.b64encode(f"{SITE}:{KEY}".encode()).decode()
    assert dict(request.headers) == {
        "authorization": f"Basic {token}",
        "content-type": "application/json",
        "user-agent": "journeyd/0.1.0",
    }
    assert request.items == (0, 1, 2)

    def op(n: int, ids: dict[str, str]) -> dict[str, Any]:
        return {
            "type": "person",
            "identifiers": ids,
            "action": "event",
            "name": "Trial Started",
            "id": ulid_for(f"m-{n}", 1772356682250),
            "timestamp": 1772356682,
            "attributes": properties(n),
        }

    assert json.loads(request.body) == {
        "batch": [
            op(1, {"id": "u-1"}),
            op(2, {"email": "ana@example.org"}),
            op(3, {"cio_id": "abc123"}),
        ]
    }


def test_ulid_id_is_stable_across_retries() -> None:
    """The same delivery gets the same event id every time it is prepared."""
    first = json.loads(adapter().requests([delivery(1)])[0].body)["batch"][0]["id"]
    again = json.loads(adapter().requests([delivery(1)])[0].body)["batch"][0]["id"]
    assert first == again == "01KJMB1GGAGN1ZQCHKBEY8FWP7"


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [
        ("u-1", {"id": "u-1"}),
        ("ana@example.org", {"email": "ana@example.org"}),
        ("cio_03000001", {"cio_id": "03000001"}),
        ("not an@email", {"id": "not an@email"}),
        ("ana@localhost", {"id": "ana@localhost"}),
    ],
)
def test_identifier_selection(user_id: str, expected: dict[str, str]) -> None:
    """cio_ prefix -> cio_id, an email address -> email, anything else -> id."""
    assert identifiers(user_id) == expected


def test_region_and_endpoint() -> None:
    """The EU region uses track-eu; an endpoint overrides both."""
    eu = CustomerioDestination(site_id_env="CIO_SITE", api_key_env="CIO_KEY", region="eu")
    assert adapter(eu).requests([delivery(1)])[0].url == "https://track-eu.customer.io/api/v2/batch"
    local = CustomerioDestination(
        site_id_env="CIO_SITE", api_key_env="CIO_KEY", endpoint="http://127.0.0.1:9/"
    )
    assert adapter(local).requests([delivery(1)])[0].url == "http://127.0.0.1:9/api/v2/batch"


def test_anonymous_goes_to_v1_events() -> None:
    """An anonymous delivery is sent alone to /api/v1/events with anonymous_id."""
    batch = [delivery(1), delivery(2, user="anon-9", anonymous=True)]
    requests = adapter().requests(batch)
    assert [(r.url, r.items) for r in requests] == [
        ("https://track.customer.io/api/v2/batch", (0,)),
        ("https://track.customer.io/api/v1/events", (1,)),
    ]
    assert json.loads(requests[1].body) == {
        "anonymous_id": "anon-9",
        "name": "Trial Started",
        "id": ulid_for("m-2", 1772356682250),
        "timestamp": 1772356682,
        "data": properties(2),
    }


def test_oversize_op_rejected_alone() -> None:
    """An operation over 32,000 bytes is rejected alone; the rest of the batch is sent."""
    batch = [delivery(0), delivery(1, context={"blob": "x" * 32_000}), delivery(2)]
    [request] = adapter().requests(batch)
    assert request.items == (0, 2)
    rejected = adapter().rejected(batch)
    assert list(rejected) == [1]
    assert "at most 32000 per operation" in rejected[1].error


def test_op_at_limit_is_sent() -> None:
    """An operation of exactly 32,000 bytes is still sent."""
    base = len(adapter().requests([delivery(0, context={"blob": ""})])[0].body) - len(
        b'{"batch":[]}'
    )
    exact = delivery(0, context={"blob": "x" * (32_000 - base)})
    [request] = adapter().requests([exact])
    assert len(request.body) - len(b'{"batch":[]}') == 32_000
    assert adapter().rejected([exact]) == {}


def test_split_by_bytes_exactly() -> None:
    """Requests split where the next op would pass max_bytes; a body may equal it exactly."""
    batch = [delivery(n) for n in range(4)]
    whole = len(adapter().requests(batch[:3])[0].body)
    limits = BatchLimits(max_items=1000, max_bytes=whole, max_wait_s=1, rate_per_s=None,
                         concurrency=1)  # fmt: skip
    requests = adapter(limits=limits).requests(batch)
    assert [r.items for r in requests] == [(0, 1, 2), (3,)]
    assert len(requests[0].body) == whole


def test_split_by_500kb() -> None:
    """With the defaults, no request body passes 500,000 bytes and every delivery is covered."""
    batch = [delivery(n, context={"blob": "y" * 20_000}) for n in range(60)]
    requests = adapter().requests(batch)
    assert len(requests) > 1
    assert all(len(r.body) <= 500_000 for r in requests)
    assert [i for r in requests for i in r.items] == list(range(60))


def test_split_by_count() -> None:
    """batch_size bounds the operations per request."""
    config = CustomerioDestination(site_id_env="CIO_SITE", api_key_env="CIO_KEY", batch_size=2)
    requests = adapter(config).requests([delivery(n) for n in range(5)])
    assert [r.items for r in requests] == [(0, 1), (2, 3), (4,)]


def test_207_rejects_listed_ops() -> None:
    """A 207 rejects exactly the ops named by batch_index; the others are delivered."""
    a = adapter()
    [request] = a.requests([delivery(n) for n in range(3)])
    answer = {
        "errors": [
            {"batch_index": 1, "reason": "invalid", "field": "name", "message": "too long"},
            {"batch_index": 7, "reason": "invalid"},
        ]
    }
    assert a.outcomes(request, 207, {}, json.dumps(answer).encode()) == [
        Delivered(),
        Reject("Customer.io rejected the operation: invalid: name: too long", status=207),
        Delivered(),
    ]


def test_207_unreadable_retries_all() -> None:
    """A 207 whose errors cannot be read retries everything (the ULID ids de-duplicate)."""
    a = adapter()
    [request] = a.requests([delivery(1), delivery(2)])
    expected = Retry("Customer.io answered 207 without an errors list", status=207)
    assert a.outcomes(request, 207, {}, b"<html>") == [expected, expected]


def test_200_delivers_all() -> None:
    """200 {} delivers every op."""
    a = adapter()
    [request] = a.requests([delivery(1), delivery(2)])
    assert a.outcomes(request, 200, {}, b"{}") == [Delivered(), Delivered()]


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (400, {}, Reject('Customer.io answered HTTP 400: {"errors":[]}', status=400)),
        (429, {"Retry-After": "9"}, Retry('Customer.io answered HTTP 429: {"errors":[]}', 9, 429)),
        (503, {}, Retry('Customer.io answered HTTP 503: {"errors":[]}', None, 503)),
    ],
)
def test_status_classes(status: int, headers: dict[str, str], expected: object) -> None:
    """400 rejects all; 429 and 5xx retry all, honouring Retry-After."""
    a = adapter()
    [request] = a.requests([delivery(1), delivery(2)])
    assert a.outcomes(request, status, headers, b'{"errors":[]}') == [expected, expected]


def test_401_names_credentials() -> None:
    """401 rejects all with a message naming both variables, never their values."""
    a = adapter()
    [request] = a.requests([delivery(1)])
    [outcome] = a.outcomes(request, 401, {}, b"")
    assert isinstance(outcome, Reject)
    assert "CIO_SITE (site_id_env)" in outcome.error
    assert "CIO_KEY (api_key_env)" in outcome.error
    assert KEY not in outcome.error


def test_secrets_never_in_description() -> None:
    """Neither the site id nor the key (nor their base64) is in a description."""
    token = base64.b64encode(f"{SITE}:{KEY}".encode()).decode()
    for request in adapter().requests([delivery(1), delivery(2, anonymous=True)]):
        for secret in (SITE, KEY, token):
            assert secret not in request.description


def test_missing_site_id() -> None:
    """An unset site_id_env is a config error naming it."""
    with pytest.raises(DestinationConfigError, match=r"CIO_SITE \(site_id_env\) is not set"):
        build_adapter("cio", CONFIG, environ={"CIO_KEY": KEY})


def test_defaults_and_byte_cap() -> None:
    """Defaults: 1000 ops, 500,000 bytes, 1 s, 100 req/s, 8; batch_bytes above 500,000 refused."""
    assert default_limits(CONFIG) == BatchLimits(
        max_items=1000, max_bytes=500_000, max_wait_s=1.0, rate_per_s=100.0, concurrency=8
    )
    too_big = CustomerioDestination(site_id_env="S", api_key_env="K", batch_bytes=600_000)
    with pytest.raises(DestinationConfigError, match="at most 500000"):
        default_limits(too_big)
