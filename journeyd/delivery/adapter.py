"""The seam between the delivery lanes (batching, rate limits, retries) and one service's API.

An adapter is sans-I/O: it turns a batch of deliveries into HTTP requests and an answer into
one outcome per delivery. The lane does the sending, the waiting and the retrying, the same
way for every service, so an adapter is a pure mapping that tests can check byte for byte.
The `function` destination is the exception: it runs user code instead of HTTP, behind the
`Runner` protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from journeyd.engine import Delivery


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How a lane groups deliveries for this service (defaults per adapter)."""

    max_items: int  # per request (Braze 75 objects, Customer.io by bytes, webhook 1)
    max_bytes: int  # per request body
    max_wait_s: float  # how long a partial batch may wait for company
    rate_per_s: float | None  # requests per second (token bucket); None = unlimited
    concurrency: int  # requests in flight at once


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """One HTTP request covering `items` (indexes into the batch it was built from)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    items: tuple[int, ...]
    # What may be logged or put in a dead letter: never a secret.
    description: str = ""
    secret_headers: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Delivered:
    pass


@dataclass(frozen=True, slots=True)
class Retry:
    """Try this item again later; `after_s` from Retry-After when the service said."""

    error: str
    after_s: float | None = None
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """Never retry this item (bad data, bad credentials): dead-letter it with the error."""

    error: str
    status: int | None = None


Outcome = Delivered | Retry | Reject


class Adapter(Protocol):
    """One destination type's wire mapping. Built once per destination (config + secrets)."""

    @property
    def limits(self) -> BatchLimits: ...

    def size_of(self, delivery: Delivery) -> int:
        """Bytes this delivery adds to a request body (for byte-bounded batches)."""
        ...

    def requests(self, batch: Sequence[Delivery]) -> list[PreparedRequest]:
        """Requests covering every delivery of `batch` exactly once. A delivery that can
        never be sent (over a size limit, no usable identifier) is left out of every
        request and reported by `rejected`."""
        ...

    def rejected(self, batch: Sequence[Delivery]) -> Mapping[int, Reject]:
        """Deliveries of `batch` that `requests` left out, with why."""
        ...

    def outcomes(
        self,
        request: PreparedRequest,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Sequence[Outcome]:
        """One outcome per item of `request`, in order, from the service's answer
        (partial failures inside a 2xx answer included)."""
        ...


class Runner(Protocol):
    """The `function` destination: user code instead of HTTP."""

    @property
    def limits(self) -> BatchLimits: ...

    async def run(self, batch: Sequence[Delivery]) -> Sequence[Outcome]: ...
