"""Destination adapters: one wire mapping per service, built from its config section.

    adapter = build_adapter("crm", settings.destinations["crm"], environ=os.environ)

`build_adapter` reads the destination's secrets from `environ` once, imports a destination
function, and checks the policy keys, raising `DestinationConfigError` (naming the
destination, the key and the variable, never a secret's value) for anything that would make
every send fail, so `journeyd check` and startup can report it. `default_limits` is the
batching policy a lane applies: the adapter's defaults, overridden by the destination's
`batch_size`, `batch_bytes`, `batch_wait`, `rate` and `concurrency` keys.

Default limits (max items, max bytes, wait, requests/s, concurrency):

    braze       75    4,000,000  1 s  1000   8   (75 objects combined per request)
    customerio  1000    500,000  1 s   100   8   (32,000 bytes per operation)
    iterable    1000  4,000,000  1 s    10   8   (trackBulk's rate; track allows 2000/s)
    webhook     1    10,000,000  0 s    -    8
    function    20    1,000,000  1 s    -    4
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

from journeyd.delivery.adapter import Adapter, BatchLimits, Runner
from journeyd.delivery.adapters import braze, customerio, function, iterable, webhook
from journeyd.delivery.adapters._shared import Clock
from journeyd.delivery.adapters.braze import BrazeAdapter
from journeyd.delivery.adapters.customerio import CustomerioAdapter
from journeyd.delivery.adapters.function import FunctionRunner
from journeyd.delivery.adapters.iterable import IterableAdapter
from journeyd.delivery.adapters.webhook import WebhookAdapter
from journeyd.delivery.retry import DestinationConfigError
from journeyd.durations import parse_duration
from journeyd.settings import (
    BrazeDestination,
    CustomerioDestination,
    Destination,
    FunctionDestination,
    IterableDestination,
    WebhookDestination,
)

__all__ = [
    "DEFAULT_LIMITS",
    "BrazeAdapter",
    "CustomerioAdapter",
    "FunctionRunner",
    "IterableAdapter",
    "WebhookAdapter",
    "build_adapter",
    "default_limits",
]

DEFAULT_LIMITS: Mapping[str, BatchLimits] = {
    "braze": braze.DEFAULTS,
    "customerio": customerio.DEFAULTS,
    "iterable": iterable.DEFAULTS,
    "webhook": webhook.DEFAULTS,
    "function": function.DEFAULTS,
}

# What a setting may not exceed because the service would refuse the request.
_MAX_ITEMS = {"braze": braze.MAX_OBJECTS, "webhook": 1}
_MAX_BYTES = {"customerio": customerio.MAX_REQUEST_BYTES, "iterable": iterable.DEFAULTS.max_bytes}


def _type_of(config: Destination) -> str:
    return type(config).__struct_config__.tag  # type: ignore[return-value]


def default_limits(config: Destination, *, name: str = "") -> BatchLimits:
    """The adapter's default limits with the destination's policy keys applied and checked."""
    kind = _type_of(config)
    label = f"destination {name}" if name else f"a {kind} destination"
    defaults = DEFAULT_LIMITS.get(kind)
    if defaults is None:
        raise DestinationConfigError(f"{label}: type {kind!r} has no delivery adapter")
    limits = defaults
    if config.batch_size is not None:
        cap = _MAX_ITEMS.get(kind)
        if config.batch_size < 1 or (cap is not None and config.batch_size > cap):
            most = f" and at most {cap}" if cap is not None else ""
            raise DestinationConfigError(
                f"{label}: batch_size = {config.batch_size}: must be at least 1{most} for {kind}"
            )
        limits = dataclasses.replace(limits, max_items=config.batch_size)
    if config.batch_bytes is not None:
        cap = _MAX_BYTES.get(kind)
        if config.batch_bytes < 1024 or (cap is not None and config.batch_bytes > cap):
            most = f" and at most {cap}" if cap is not None else ""
            raise DestinationConfigError(
                f"{label}: batch_bytes = {config.batch_bytes}: must be at least 1024{most} "
                f"for {kind}"
            )
        limits = dataclasses.replace(limits, max_bytes=config.batch_bytes)
    if config.batch_wait is not None:
        try:
            wait_s = parse_duration(config.batch_wait) if config.batch_wait.strip() != "0" else 0
        except ValueError as exc:
            raise DestinationConfigError(f"{label}: batch_wait: {exc}") from exc
        limits = dataclasses.replace(limits, max_wait_s=float(wait_s))
    if config.rate is not None:
        if not config.rate > 0:
            raise DestinationConfigError(f"{label}: rate = {config.rate}: must be above 0")
        limits = dataclasses.replace(limits, rate_per_s=float(config.rate))
    if config.concurrency is not None:
        if config.concurrency < 1:
            raise DestinationConfigError(
                f"{label}: concurrency = {config.concurrency}: must be at least 1"
            )
        limits = dataclasses.replace(limits, concurrency=config.concurrency)
    return limits


def build_adapter(
    name: str,
    config: Destination,
    *,
    environ: Mapping[str, str],
    clock: Clock = time.time,
) -> Adapter | Runner:
    """The adapter (HTTP services) or runner (`function`) for one configured destination."""
    limits = default_limits(config, name=name)
    if isinstance(config, BrazeDestination):
        return BrazeAdapter(name, config, environ=environ, limits=limits, clock=clock)
    if isinstance(config, CustomerioDestination):
        return CustomerioAdapter(name, config, environ=environ, limits=limits, clock=clock)
    if isinstance(config, IterableDestination):
        return IterableAdapter(name, config, environ=environ, limits=limits, clock=clock)
    if isinstance(config, WebhookDestination):
        return WebhookAdapter(name, config, environ=environ, limits=limits, clock=clock)
    if isinstance(config, FunctionDestination):
        timeout_s = function.DEFAULT_TIMEOUT_S
        if config.timeout is not None:
            try:
                timeout_s = float(parse_duration(config.timeout))
            except ValueError as exc:
                raise DestinationConfigError(f"destination {name}: timeout: {exc}") from exc
        return FunctionRunner(name, config, limits=limits, timeout_s=timeout_s)
    raise DestinationConfigError(
        f"destination {name}: type {_type_of(config)!r} has no delivery adapter"
    )
