"""The one place a PreparedRequest goes on the wire: a shared httpx.AsyncClient per destination.

Whatever goes wrong below HTTP (refused, reset, DNS, TLS, a read that times out) comes back
as a `Retry` outcome, so adapters only ever classify real answers, and a bad URL comes back
as a `Reject`. Redirects are never followed: a 3xx is an answer the adapter classifies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from journeyd import __version__
from journeyd.delivery.adapter import PreparedRequest, Reject, Retry

# The lane's own per-attempt deadline fires first; httpx's is only a backstop.
_BACKSTOP_S = 1.0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


def public_url(url: str) -> str:
    """The URL without user:password, for logs and dead letters."""
    try:
        return str(httpx.URL(url).copy_with(username=None, password=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid url>"


class HttpTransport:
    """Owns one connection pool; `send` never raises for network trouble."""

    def __init__(
        self,
        *,
        max_connections: int,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s + _BACKSTOP_S),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
            transport=transport,
            headers={"user-agent": f"journeyd/{__version__}"},
        )

    async def send(self, request: PreparedRequest) -> Answer | Retry | Reject:
        try:
            response = await self._client.request(
                request.method, request.url, content=request.body, headers=dict(request.headers)
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return Reject(f"bad url: {exc}")
        except httpx.TimeoutException as exc:
            return Retry(f"timeout: {type(exc).__name__}")
        except httpx.TransportError as exc:
            detail = str(exc) or "connection failed"
            return Retry(f"transport error: {type(exc).__name__}: {detail}")
        except httpx.HTTPError as exc:  # decoding and the like: the answer was unusable
            return Retry(f"bad answer: {type(exc).__name__}: {exc}")
        return Answer(response.status_code, response.headers, response.content)

    async def aclose(self) -> None:
        await self._client.aclose()
