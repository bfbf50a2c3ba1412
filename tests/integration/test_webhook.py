"""The webhook destination against a real HTTP server on 127.0.0.1, on trio's virtual clock."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from receiver import Receiver, Recorded, Reply

from journeyd.delivery import DeadLetter, DeliveryPool, read_dead_letters
from journeyd.delivery.destinations.webhook import sign
from journeyd.engine import Delivery
from journeyd.settings import DeliverySettings, WebhookDestination

T0 = 1_772_356_500  # whole seconds, so webhook-timestamp is predictable
SECRET = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="  # bytes 0x01..0x20


def delivery(n: int = 1) -> Delivery:
    message_id = f"5f0c4a8e-0000-4000-8000-{n:012d}"
    return Delivery(
        at=float(T0),
        user=f"u-{n}",
        journey="cart-abandonment",
        instance="0123456789abcdef",
        step="nudge",
        destination="hook",
        message_id=message_id,
        payload={
            "type": "track",
            "event": "Cart Abandoned",
            "userId": f"u-{n}",
            "anonymousId": None,
            "messageId": message_id,
            "timestamp": "2026-03-01T09:15:00.120Z",
            "properties": {"journey_context": {}, "email": "ada@example.org", "total": 12.5},
        },
    )


@asynccontextmanager
async def running_pool(
    tmp_path: Path,
    receiver: Receiver,
    *,
    secret: str | None = SECRET,
    max_attempts: int = 5,
    attempt_timeout: str = "10s",
    headers: Mapping[str, str] | None = None,
    url: str | None = None,
) -> AsyncIterator[DeliveryPool]:
    """A pool with one webhook destination `hook`; leaving the block drains it."""
    config = WebhookDestination(
        url=url or receiver.url,
        secret_env="HOOK_SECRET" if secret else None,
        headers=dict(headers or {}),
    )
    pool = DeliveryPool(
        {"hook": config},
        DeliverySettings(queue=10, timeout=attempt_timeout, max_attempts=max_attempts),
        resolve_path=lambda p: tmp_path / p,
        dead_letter_path=tmp_path / "dead-letters.jsonl",
        environ={"HOOK_SECRET": secret} if secret else {},
        clock=lambda: T0 + trio.current_time(),
        rand=lambda: 0.5,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        yield pool
        pool.close()


def dead_letters(tmp_path: Path) -> list[DeadLetter]:
    return read_dead_letters(tmp_path / "dead-letters.jsonl")


def gaps(requests: list[Recorded]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(requests)]


def verify(secret: str, request: Recorded) -> bool:
    """Standard Webhooks verification written from the spec, independent of journeyd's code."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = b".".join(
        [
            request.headers["webhook-id"].encode(),
            request.headers["webhook-timestamp"].encode(),
            request.body,
        ]
    )
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1) for s in request.headers["webhook-signature"].split(" ")]
    return any(v == "v1" and hmac.compare_digest(sig, expected) for v, sig in offered)


def test_sign_matches_the_official_test_vector() -> None:
    """Our signer reproduces the Standard Webhooks reference libraries' own test vector."""
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    got = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


async def test_signed_post_verifies_and_carries_the_payload(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The receiver can verify webhook-signature over the exact body and decode the payload."""
    async with (
        Receiver.start() as receiver,
        running_pool(tmp_path, receiver, headers={"X-Team": "growth"}) as pool,
    ):
        await pool.submit(delivery(1))
        [request] = await receiver.wait_for(1)
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-team"] == "growth"
    assert request.headers["webhook-id"] == delivery(1).message_id
    assert request.headers["webhook-timestamp"] == str(T0)
    assert verify(SECRET, request)
    assert request.json() == delivery(1).payload
    assert pool.stats["delivered"] == 1


async def test_signature_fails_with_another_secret(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The check above is meaningful: a different key does not verify."""
    other = "whsec_" + base64.b64encode(bytes(range(2, 34))).decode()
    async with Receiver.start() as receiver, running_pool(tmp_path, receiver) as pool:
        await pool.submit(delivery(1))
        [request] = await receiver.wait_for(1)
    assert not verify(other, request)


async def test_unsigned_destination_sends_no_signature(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Without secret_env the POST goes out unsigned but still carries its idempotency id."""
    async with Receiver.start() as receiver, running_pool(tmp_path, receiver, secret=None) as pool:
        await pool.submit(delivery(1))
        [request] = await receiver.wait_for(1)
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] == delivery(1).message_id


async def test_retries_500_then_429_honouring_retry_after(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """5xx backs off; 429 waits exactly Retry-After; each attempt is re-signed, same id."""
    async with Receiver.start() as receiver, running_pool(tmp_path, receiver) as pool:
        receiver.script([Reply(status=500), Reply(status=429, headers={"Retry-After": "7"})])
        await pool.submit(delivery(1))
        requests = await receiver.wait_for(3)
    assert gaps(requests) == pytest.approx([0.75, 7.0], abs=0.01)
    assert {r.headers["webhook-id"] for r in requests} == {delivery(1).message_id}
    assert [r.headers["webhook-timestamp"] for r in requests] == [str(T0), str(T0), str(T0 + 7)]
    assert all(verify(SECRET, r) for r in requests)
    assert pool.stats == {
        "delivered": 1,
        "retried": 2,
        "dead_lettered": 0,
        "queued": 0,
        "in_flight": 0,
    }
    assert dead_letters(tmp_path) == []


async def test_retry_after_http_date(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A Retry-After HTTP-date is honoured against the pool's wall clock."""
    until = email.utils.formatdate(T0 + 100, usegmt=True)
    async with Receiver.start() as receiver, running_pool(tmp_path, receiver) as pool:
        receiver.script([Reply(status=503, headers={"retry-after": until})])
        await pool.submit(delivery(1))
        requests = await receiver.wait_for(2, limit_s=300)
    assert requests[1].at == pytest.approx(100.0, abs=0.01)


async def test_backoff_timing_is_exponential_with_jitter(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Without Retry-After the gaps follow the capped exponential with the injected random."""
    async with (
        Receiver.start() as receiver,
        running_pool(tmp_path, receiver, max_attempts=6) as pool,
    ):
        receiver.script([500, 502, 503, 504, 500])
        await pool.submit(delivery(1))
        requests = await receiver.wait_for(6)
    # rand=0.5 -> 3/4 of min(60, 2**(n-1)) seconds.
    assert gaps(requests) == pytest.approx([0.75, 1.5, 3.0, 6.0, 12.0], abs=0.01)
    assert pool.stats["delivered"] == 1


async def test_slow_receiver_times_out_and_is_retried(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """An answer slower than delivery.timeout counts as a failed attempt, then succeeds on retry."""
    async with (
        Receiver.start() as receiver,
        running_pool(tmp_path, receiver, attempt_timeout="2s") as pool,
    ):
        receiver.script([Reply(delay_s=30)])
        await pool.submit(delivery(1))
        requests = await receiver.wait_for(2)
    assert gaps(requests) == pytest.approx([2.75], abs=0.01)
    assert pool.stats["delivered"] == 1
    assert pool.stats["retried"] == 1


async def test_always_slow_receiver_is_dead_lettered_as_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """When every attempt times out, the dead letter says so and has no status."""
    async with (
        Receiver.start(default=Reply(delay_s=60)) as receiver,
        running_pool(tmp_path, receiver, attempt_timeout="2s", max_attempts=2) as pool,
    ):
        await pool.submit(delivery(1))
    assert len(receiver.requests) == 2
    [letter] = dead_letters(tmp_path)
    assert letter.error == "timeout: no answer within 2s"
    assert letter.attempts == 2
    assert letter.last_request is not None
    assert (letter.last_request.method, letter.last_request.status) == ("POST", None)


async def test_connection_reset_is_retried(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A reset connection (RST, no response) is a transport error worth retrying."""
    async with Receiver.start() as receiver, running_pool(tmp_path, receiver) as pool:
        receiver.script([Reply(drop=True)])
        await pool.submit(delivery(1))
        requests = await receiver.wait_for(2)
    assert len(requests) == 2
    assert pool.stats["delivered"] == 1
    assert pool.stats["retried"] == 1


async def test_connection_refused_is_retried_then_dead_lettered(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Nobody listening: every attempt is a transport error, then a dead letter naming it."""
    async with Receiver.start() as receiver:
        dead_url = receiver.url
    async with (
        Receiver.start() as receiver,
        running_pool(tmp_path, receiver, url=dead_url, max_attempts=3) as pool,
    ):
        await pool.submit(delivery(1))
    [letter] = dead_letters(tmp_path)
    assert letter.attempts == 3
    assert letter.error.startswith("transport error: ConnectError")
    assert pool.stats["retried"] == 2


async def test_400_is_dead_lettered_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A permanent 4xx is not retried; the dead letter has status, error body and payload only."""
    async with (
        Receiver.start() as receiver,
        running_pool(tmp_path, receiver, headers={"Authorization": "Bearer tok-123"}) as pool,
    ):
        receiver.script([Reply(status=400, body=b"properties.total: expected string")])
        await pool.submit(delivery(1))
    assert len(receiver.requests) == 1
    [letter] = dead_letters(tmp_path)
    assert letter.attempts == 1
    assert letter.error == "the webhook answered HTTP 400: properties.total: expected string"
    assert letter.last_request is not None
    assert (letter.last_request.method, letter.last_request.url, letter.last_request.status) == (
        "POST",
        receiver.url,
        400,
    )
    assert letter.payload == delivery(1).payload
    assert letter.message_id == delivery(1).message_id
    raw = (tmp_path / "dead-letters.jsonl").read_bytes()
    for secret in (SECRET, SECRET.removeprefix("whsec_"), "tok-123", "webhook-signature"):
        assert secret.encode() not in raw
    assert pool.stats["dead_lettered"] == 1
    assert pool.stats["retried"] == 0


async def test_dead_letter_after_max_attempts_keeps_the_last_error(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """After max_attempts retryable failures the record carries the last status and error."""
    async with (
        Receiver.start() as receiver,
        running_pool(tmp_path, receiver, max_attempts=3) as pool,
    ):
        receiver.script([500, 502, Reply(status=503, body=b"maintenance"), 200])
        await pool.submit(delivery(1))
    assert len(receiver.requests) == 3
    [letter] = dead_letters(tmp_path)
    assert (letter.attempts, letter.error) == (3, "the webhook answered HTTP 503: maintenance")
    assert letter.last_request is not None
    assert letter.last_request.status == 503
    assert letter.at == pytest.approx(T0 + 0.75 + 1.5, abs=0.01)
    as_json: dict[str, Any] = msgspec.json.decode(
        (tmp_path / "dead-letters.jsonl").read_bytes().splitlines()[0]
    )
    assert set(as_json) == {
        "at",
        "destination",
        "message_id",
        "attempts",
        "error",
        "last_request",
        "payload",
    }
    assert set(as_json["last_request"]) == {"method", "url", "status"}
