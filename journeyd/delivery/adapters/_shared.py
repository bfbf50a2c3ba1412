"""Machinery the HTTP adapters share: secrets from the environment, packing, status answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from journeyd import __version__
from journeyd.delivery.adapter import (
    BatchLimits,
    Delivered,
    Outcome,
    PreparedRequest,
    Reject,
    Retry,
)
from journeyd.delivery.retry import (
    DestinationConfigError,
    Verdict,
    classify_status,
    parse_retry_after,
)
from journeyd.delivery.ulid import timestamp_ms
from journeyd.engine import Delivery

ERROR_BODY_CHARS = 200
USER_AGENT = f"journeyd/{__version__}"
ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()

Clock = Callable[[], float]


def require_env(name: str, key: str, variable: str, environ: Mapping[str, str]) -> str:
    """The value of `variable`; the error names the destination, the key and the variable."""
    value = environ.get(variable, "").strip()
    if not value:
        raise DestinationConfigError(
            f"destination {name}: environment variable {variable} ({key}) is not set"
        )
    return value


def base_url(name: str, url: str) -> str:
    """A base URL without a trailing slash; only http(s) is accepted."""
    text = url.strip().rstrip("/")
    if not text.startswith(("https://", "http://")):
        raise DestinationConfigError(
            f"destination {name}: endpoint {url!r} must start with https:// (or http://)"
        )
    return text


def decode_json(body: bytes) -> Any:
    """The answer body as JSON, or None when it is empty or not JSON."""
    if not body:
        return None
    try:
        return _DECODER.decode(body)
    except msgspec.DecodeError:
        return None


def snippet(body: bytes) -> str:
    return body[:ERROR_BODY_CHARS].decode("utf-8", "replace").strip()


def time_ms(delivery: Delivery) -> int:
    """The payload's `timestamp` in unix milliseconds (falls back to the effect's time)."""
    text = delivery.payload.get("timestamp")
    if isinstance(text, str):
        try:
            return timestamp_ms(text)
        except ValueError:
            pass
    return int(delivery.at * 1000)


def unix_seconds(delivery: Delivery) -> int:
    """The payload's `timestamp` as whole unix seconds (what Customer.io and Iterable take)."""
    return time_ms(delivery) // 1000


def retry_after_s(headers: Mapping[str, str], now_wall: float) -> float | None:
    """`Retry-After` (seconds or HTTP-date), else `X-RateLimit-Reset` (epoch seconds)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    after = parse_retry_after(lowered.get("retry-after"), now_wall=now_wall)
    if after is not None:
        return after
    reset = lowered.get("x-ratelimit-reset", "").strip()
    if reset.isascii() and reset.isdigit():
        return max(0.0, int(reset) - now_wall)
    return None


def failure_outcome(
    service: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now_wall: float,
    credentials_hint: str,
) -> Outcome | None:
    """The one outcome every item of a non-2xx answer gets; None for a 2xx answer.

    401/403/404 are credentials (or a wrong endpoint): rejected with a hint about which key
    to check; 408, 429 and 5xx (but 501/505) are retried, honouring the server's wait; any
    other status is rejected as a bad request.
    """
    verdict = classify_status(status)
    if verdict is Verdict.DELIVERED:
        return None
    text = snippet(body)
    detail = f"{service} answered HTTP {status}" + (f": {text}" if text else "")
    if verdict is Verdict.RETRY:
        return Retry(detail, after_s=retry_after_s(headers, now_wall), status=status)
    if status in (401, 403, 404):
        return Reject(f"{detail} (check {credentials_hint})", status=status)
    return Reject(detail, status=status)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Deliveries (indexes into the batch) whose encoded items fit one request."""

    items: tuple[int, ...]
    parts: tuple[bytes, ...]


def pack(
    encoded: Sequence[tuple[int, bytes]],
    *,
    envelope_bytes: int,
    max_items: int,
    max_bytes: int,
) -> list[Chunk]:
    """Greedy, order-preserving split of `(index, item JSON)` pairs into request bodies.

    A body is `envelope_bytes` plus the items joined by commas, so a chunk's body length is
    exact and may equal `max_bytes`. An item too large to fit even alone must have been
    left out by the caller.
    """
    chunks: list[Chunk] = []
    items: list[int] = []
    parts: list[bytes] = []
    size = envelope_bytes
    for index, part in encoded:
        added = len(part) + (1 if parts else 0)
        if parts and (len(parts) >= max_items or size + added > max_bytes):
            chunks.append(Chunk(tuple(items), tuple(parts)))
            items, parts, size = [], [], envelope_bytes
            added = len(part)
        items.append(index)
        parts.append(part)
        size += added
    if parts:
        chunks.append(Chunk(tuple(items), tuple(parts)))
    return chunks


def all_delivered(count: int) -> list[Outcome]:
    return [Delivered()] * count


class PlannedAdapter:
    """What every batching HTTP adapter answers the same way: `requests` and `rejected`
    are the two halves of one plan of the batch, and `limits` is what it was built with."""

    _limits: BatchLimits

    @property
    def limits(self) -> BatchLimits:
        return self._limits

    def rejected(self, batch: Sequence[Delivery]) -> Mapping[int, Reject]:
        return self._plan(batch)[1]

    def requests(self, batch: Sequence[Delivery]) -> list[PreparedRequest]:
        return self._plan(batch)[0]

    def _plan(self, batch: Sequence[Delivery]) -> tuple[list[PreparedRequest], dict[int, Reject]]:
        raise NotImplementedError
