"""Each adapter's requests sent with a real httpx client to a fake service on 127.0.0.1."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fake_services import FakeBraze, FakeCustomerio, FakeIterable, FakeService
from receiver import Receiver, Reply

from journeyd.delivery.adapter import Adapter, Delivered, Outcome, Reject, Retry
from journeyd.delivery.adapters import build_adapter
from journeyd.delivery.adapters.customerio import CustomerioAdapter
from journeyd.delivery.adapters.webhook import WebhookAdapter
from journeyd.engine import Delivery
from journeyd.engine.payload import build_payload
from journeyd.settings import (
    BrazeDestination,
    CustomerioDestination,
    IterableDestination,
    WebhookDestination,
)

ENV = {"BRAZE_KEY": "braze-key", "CIO_SITE": "site", "CIO_KEY": "key", "IT_KEY": "iterable-key"}


def delivery(n: int, *, event: str = "Trial Started", anonymous: bool = False) -> Delivery:
    payload = build_payload(
        event_name=event,
        user=f"u-{n}",
        anonymous=anonymous,
        message_id=f"m-{n}",
        at=1772356682.0,
        journey_context={"signup": {"at": "2026-03-01T09:00:00Z"}},
        journey_id="onboarding",
        journey_version="v1",
        instance_id=f"i-{n}",
        step_id="welcome",
        traits={"email": f"user{n}@example.org", "plan": "pro"},
        selected_traits=["email", "plan"],
    )
    return Delivery(
        at=1772356682.0, user=f"u-{n}", step="welcome", destination="d", message_id=f"m-{n}",
        payload=payload,
    )  # fmt: skip


def braze(service: FakeService, env: dict[str, str] = ENV) -> Adapter:
    config = BrazeDestination(endpoint=service.base_url, api_key_env="BRAZE_KEY")
    return build_adapter("braze", config, environ=env)  # type: ignore[return-value]


def customerio(service: FakeService, env: dict[str, str] = ENV) -> Adapter:
    config = CustomerioDestination(
        site_id_env="CIO_SITE", api_key_env="CIO_KEY", endpoint=service.base_url
    )
    return build_adapter("cio", config, environ=env)  # type: ignore[return-value]


def iterable(service: FakeService, env: dict[str, str] = ENV) -> Adapter:
    config = IterableDestination(api_key_env="IT_KEY", endpoint=service.base_url)
    return build_adapter("it", config, environ=env)  # type: ignore[return-value]


SERVICES: list[tuple[type[FakeService], Callable[..., Adapter]]] = [
    (FakeBraze, braze),
    (FakeCustomerio, customerio),
    (FakeIterable, iterable),
]
IDS = ["braze", "customerio", "iterable"]


@asynccontextmanager
async def client(timeout_s: float = 5.0) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as http:
        yield http


async def deliver(
    adapter: Adapter, http: httpx.AsyncClient, batch: Sequence[Delivery]
) -> list[Outcome | None]:
    """Send every prepared request and put each answer's outcomes back in batch order."""
    results: list[Outcome | None] = [None] * len(batch)
    for index, rejection in adapter.rejected(batch).items():
        results[index] = rejection
    for request in adapter.requests(batch):
        response = await http.request(
            request.method, request.url, headers=dict(request.headers), content=request.body
        )
        outcomes = adapter.outcomes(
            request, response.status_code, response.headers, response.content
        )
        assert len(outcomes) == len(request.items)
        for index, outcome in zip(request.items, outcomes, strict=True):
            results[index] = outcome
    return results


@pytest.mark.parametrize(("kind", "make"), SERVICES, ids=IDS)
async def test_server_receives_exact_requests(
    kind: type[FakeService], make: Callable[..., Adapter]
) -> None:
    """The service receives exactly the prepared bodies and headers, and all are delivered."""
    async with kind.serve() as service, client() as http:
        adapter = make(service)
        batch = [delivery(n) for n in range(3)]
        prepared = adapter.requests(batch)
        assert await deliver(adapter, http, batch) == [Delivered()] * 3
        received = await service.wait_for(len(prepared))
        assert [r.body for r in received] == [p.body for p in prepared]
        for got, sent in zip(received, prepared, strict=True):
            assert got.method == "POST"
            assert service.base_url + got.path == sent.url
            for name, value in sent.headers.items():
                assert got.headers[name] == value


@pytest.mark.parametrize(("kind", "make"), SERVICES, ids=IDS)
async def test_wrong_credentials_rejected(
    kind: type[FakeService], make: Callable[..., Adapter]
) -> None:
    """A wrong key gets the service's own 401, and every delivery is rejected (not retried)."""
    wrong = {name: "wrong" for name in ENV}
    async with kind.serve() as service, client() as http:
        outcomes = await deliver(make(service, wrong), http, [delivery(1), delivery(2)])
    assert all(isinstance(o, Reject) and o.status == 401 for o in outcomes)
    assert isinstance(outcomes[0], Reject)
    assert "(api_key_env)" in outcomes[0].error
    assert "wrong" not in outcomes[0].error


@pytest.mark.parametrize(("kind", "make"), SERVICES, ids=IDS)
@pytest.mark.parametrize(
    ("reply", "expected_after"),
    [
        (Reply(status=429, headers={"retry-after": "7"}), 7.0),
        (Reply(status=429), None),
        (Reply(status=503, body=b"maintenance"), None),
    ],
)
async def test_throttled_and_down_are_retried(
    kind: type[FakeService],
    make: Callable[..., Adapter],
    reply: Reply,
    expected_after: float | None,
) -> None:
    """429 (with and without Retry-After) and 5xx retry every delivery of the request."""
    async with kind.serve() as service, client() as http:
        service.script([reply])
        outcomes = await deliver(make(service), http, [delivery(1), delivery(2)])
    assert [type(o) for o in outcomes] == [Retry, Retry]
    assert all(isinstance(o, Retry) and o.after_s == expected_after for o in outcomes)
    assert all(isinstance(o, Retry) and o.status == reply.status for o in outcomes)


@pytest.mark.parametrize(("kind", "make"), SERVICES, ids=IDS)
async def test_slow_answer_times_out(kind: type[FakeService], make: Callable[..., Adapter]) -> None:
    """A service slower than the client timeout raises httpx's timeout (the lane retries it)."""
    async with kind.serve() as service, client(timeout_s=0.2) as http:
        service.script([Reply(delay_s=2.0)])
        with pytest.raises(httpx.TimeoutException):
            await deliver(make(service), http, [delivery(1), delivery(2)])
        assert len(await service.wait_for(1)) == 1


@pytest.mark.parametrize(("kind", "make"), SERVICES, ids=IDS)
async def test_connection_reset(kind: type[FakeService], make: Callable[..., Adapter]) -> None:
    """A reset connection is a transport error; the next attempt on a new connection works."""
    async with kind.serve() as service, client() as http:
        service.script([Reply(drop=True)])
        adapter = make(service)
        batch = [delivery(1), delivery(2)]
        with pytest.raises(httpx.TransportError):
            await deliver(adapter, http, batch)
        assert await deliver(adapter, http, batch) == [Delivered(), Delivered()]
        received = await service.wait_for(2)
        assert received[0].body == received[1].body  # a retry sends the same bytes


async def test_braze_partial_failure_and_object_limit() -> None:
    """Braze's per-object errors reject only that delivery; 80 deliveries stay within 75 objects."""
    async with FakeBraze.serve(invalid_event_names=frozenset({"Bad Event"})) as service:
        async with client() as http:
            batch = [delivery(n) for n in range(40)]
            batch[5] = delivery(5, event="Bad Event")
            outcomes = await deliver(braze(service), http, batch)
        received = service.requests
    assert outcomes[5] == Reject("Braze rejected the event: 'name' is not valid", status=201)
    assert outcomes[:5] + outcomes[6:] == [Delivered()] * 39
    for request in received:
        body = request.json()
        assert len(body["events"]) + len(body["attributes"]) <= 75
    assert [len(r.json()["events"]) for r in received] == [37, 3]
    assert received[0].headers["authorization"] == "Bearer braze-key"
    assert "x-braze-batch" not in received[0].headers


async def test_braze_over_75_objects_is_refused_by_fake() -> None:
    """The fake enforces Braze's 75-object limit (so the split test above can fail)."""
    async with FakeBraze.serve() as service, client() as http:
        body = {"events": [{"external_id": "u", "name": "e", "time": "t"}] * 76}
        response = await http.post(
            service.base_url + "/users/track",
            json=body,
            headers={"authorization": "Bearer braze-key"},
        )
    assert response.status_code == 400
    assert response.json() == {"message": "Max Input Length Exceeded"}


async def test_customerio_207_and_anonymous() -> None:
    """A 207 rejects only the named op; an anonymous delivery goes to /api/v1/events."""
    async with FakeCustomerio.serve(invalid_names=frozenset({"Bad Event"})) as service:
        async with client() as http:
            batch = [delivery(0), delivery(1, event="Bad Event"), delivery(2, anonymous=True)]
            adapter = customerio(service)
            assert isinstance(adapter, CustomerioAdapter)
            outcomes = await deliver(adapter, http, batch)
        received = service.requests
    assert outcomes == [
        Delivered(),
        Reject("Customer.io rejected the operation: invalid: name: invalid event name", 207),
        Delivered(),
    ]
    assert [r.path for r in received] == ["/api/v2/batch", "/api/v1/events"]
    assert received[1].json()["anonymous_id"] == "u-2"
    token = base64.b64encode(b"site:key").decode()
    assert all(r.headers["authorization"] == f"Basic {token}" for r in received)


async def test_iterable_failed_updates() -> None:
    """Iterable's failedUpdates and disallowedEventNames reject exactly those deliveries."""
    options: dict[str, Any] = {
        "unknown_user_ids": frozenset({"u-1"}),
        "disallowed": frozenset({"Bad Event"}),
    }
    async with FakeIterable.serve(**options) as service, client() as http:
        batch = [delivery(0), delivery(1), delivery(2, event="Bad Event"), delivery(3)]
        outcomes = await deliver(iterable(service), http, batch)
        [received] = service.requests
    assert outcomes == [
        Delivered(),
        Reject("Iterable: userId 'u-1' is in notFoundUserIds", status=200),
        Reject("Iterable: event name 'Bad Event' is not allowed (disallowedEventNames)", 200),
        Delivered(),
    ]
    assert received.path == "/api/events/trackBulk"
    assert received.headers["api-key"] == "iterable-key"
    first = received.json()["events"][0]
    assert first["dataFields"]["journey_context"] == {
        "signup": {"at": "2026-03-01 09:00:00 +00:00"}
    }


async def test_iterable_single_track() -> None:
    """One delivery goes to /api/events/track and is delivered."""
    async with FakeIterable.serve() as service, client() as http:
        assert await deliver(iterable(service), http, [delivery(0)]) == [Delivered()]
        [received] = service.requests
    assert received.path == "/api/events/track"
    assert json.loads(received.body)["userId"] == "u-0"


async def test_webhook_adapter_signs_like_the_spec() -> None:
    """The webhook Adapter sends one signed request per delivery (Standard Webhooks vector)."""
    secret = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
    data = {"journey_id": "onboarding-v2", "step": "send_welcome", "user_id": "u-1001"}
    payload = {
        "type": "journey.step.entered",
        "timestamp": "2026-03-01T09:15:00.120Z",
        "data": data,
    }
    message_id = "jd_01HZX3Q7N4J1V9K2M5P8R6T0AB"
    item = Delivery(
        at=0, user="u-1001", step="s", destination="hook", message_id=message_id, payload=payload
    )
    async with Receiver.start() as receiver, client() as http:
        config = WebhookDestination(
            url=receiver.url, secret_env="HOOK_SECRET", headers={"Authorization": "Bearer t"}
        )
        adapter = WebhookAdapter(
            "hook", config, environ={"HOOK_SECRET": secret}, clock=lambda: 1772356500.9
        )
        [request] = adapter.requests([item])
        assert "Bearer t" not in request.description
        assert request.secret_headers == frozenset({"webhook-signature", "authorization"})
        assert await deliver(adapter, http, [item]) == [Delivered()]
        [received] = await receiver.wait_for(1)
    assert received.body == (
        b'{"type":"journey.step.entered","timestamp":"2026-03-01T09:15:00.120Z","data":'
        b'{"journey_id":"onboarding-v2","step":"send_welcome","user_id":"u-1001"}}'
    )
    assert received.headers["webhook-id"] == message_id
    assert received.headers["webhook-timestamp"] == "1772356500"
    assert (
        received.headers["webhook-signature"] == "v1,/xB3Hxm0r15MxSLxXoRUVujk7ZN8CimnxltyDWWbm1M="
    )
    assert received.headers["authorization"] == "Bearer t"
