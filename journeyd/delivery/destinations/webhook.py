"""The `webhook` destination: POST the delivery payload as JSON, signed per Standard Webhooks.

The secret is read from the environment once, when the destination is built, so a missing or
malformed secret stops startup (or a reload) instead of failing every send; it is kept only
as decoded bytes and never appears in a log line, an error or a dead letter.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping

import httpx
import msgspec

from journeyd import __version__
from journeyd.delivery.retry import (
    DestinationConfigError,
    LastRequest,
    Permanent,
    Retryable,
    Verdict,
    classify_status,
    parse_retry_after,
)
from journeyd.engine import Delivery
from journeyd.settings import WebhookDestination

SECRET_PREFIX = "whsec_"
_ERROR_BODY_CHARS = 200


def load_secret(name: str, secret_env: str, environ: Mapping[str, str]) -> bytes:
    """The HMAC key behind `whsec_<base64>`; errors name the variable, never its value."""
    raw = environ.get(secret_env)
    if raw is None or not raw.strip():
        raise DestinationConfigError(
            f"destination {name}: environment variable {secret_env} (secret_env) is not set"
        )
    text = raw.strip()
    if not text.startswith(SECRET_PREFIX):
        raise DestinationConfigError(
            f"destination {name}: {secret_env} must hold a Standard Webhooks secret "
            f"({SECRET_PREFIX}<base64>)"
        )
    encoded = text.removeprefix(SECRET_PREFIX)
    try:
        # Reference libraries tolerate missing padding; so do we.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise DestinationConfigError(
            f"destination {name}: {secret_env} is not valid base64 after {SECRET_PREFIX}"
        )
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` over the exact bytes sent, as the spec requires."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def public_url(url: str) -> str:
    """The URL without user:password, for logs and dead letters."""
    try:
        return str(httpx.URL(url).copy_with(username=None, password=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid url>"


class WebhookSender:
    def __init__(
        self,
        name: str,
        config: WebhookDestination,
        *,
        environ: Mapping[str, str],
        clock: Callable[[], float],
        timeout_s: float,
        max_connections: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._key = load_secret(name, config.secret_env, environ) if config.secret_env else None
        self._clock = clock
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._encoder = msgspec.json.Encoder()
        self._public_url = public_url(config.url)
        self._headers = {
            "content-type": "application/json",
            "user-agent": f"journeyd/{__version__}",
            **{key.lower(): value for key, value in config.headers.items()},
        }

    def describe(self) -> LastRequest:
        return LastRequest(method="POST", url=self._public_url)

    def open(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout_s),
            limits=httpx.Limits(
                max_connections=self._max_connections,
                max_keepalive_connections=self._max_connections,
            ),
            follow_redirects=False,
            transport=self._transport,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def deliver(self, delivery: Delivery) -> None:
        if self._client is None:
            raise Permanent(f"destination {self.name} is not open", request=self.describe())
        body = self._encoder.encode(delivery.payload)
        headers = dict(self._headers)
        headers["webhook-id"] = delivery.message_id
        timestamp = int(self._clock())
        headers["webhook-timestamp"] = str(timestamp)
        if self._key is not None:
            headers["webhook-signature"] = sign(self._key, delivery.message_id, timestamp, body)
        try:
            response = await self._client.post(self.config.url, content=body, headers=headers)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise Permanent(f"bad url: {exc}", request=self.describe()) from exc
        except httpx.TimeoutException as exc:
            raise Retryable(f"timeout: {type(exc).__name__}", request=self.describe()) from exc
        except httpx.TransportError as exc:
            detail = str(exc) or "connection failed"
            raise Retryable(
                f"transport error: {type(exc).__name__}: {detail}", request=self.describe()
            ) from exc
        request = LastRequest(method="POST", url=self._public_url, status=response.status_code)
        verdict = classify_status(response.status_code)
        if verdict is Verdict.DELIVERED:
            return
        snippet = response.text[:_ERROR_BODY_CHARS].strip()
        message = f"HTTP {response.status_code}" + (f": {snippet}" if snippet else "")
        if verdict is Verdict.RETRY:
            retry_after = parse_retry_after(
                response.headers.get("retry-after"), now_wall=self._clock()
            )
            raise Retryable(message, request=request, retry_after_s=retry_after)
        raise Permanent(message, request=request)
