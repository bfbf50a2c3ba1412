"""Destination adapters: one class per `type`, all behind the `Sender` protocol the pool drives.

A sender makes exactly one attempt per `deliver` call and reports failure as `Retryable` or
`Permanent`; retries, timeouts and dead letters belong to the pool, so every adapter gets them
the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from journeyd.delivery.destinations.file import FileSender
from journeyd.delivery.destinations.webhook import WebhookSender
from journeyd.delivery.retry import DestinationConfigError, LastRequest
from journeyd.engine import Delivery
from journeyd.settings import Destination, FileDestination, WebhookDestination


class Sender(Protocol):
    name: str

    @property
    def config(self) -> Destination: ...

    def describe(self) -> LastRequest:
        """The request an attempt makes, before it has a status: for dead letters on timeout."""
        ...

    def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def deliver(self, delivery: Delivery) -> None:
        """One attempt; raises `Retryable` or `Permanent` on failure."""
        ...


class SenderFactory(Protocol):
    """The seam tests use to put a fake destination behind a real pool."""

    def __call__(
        self,
        name: str,
        config: Destination,
        *,
        resolve_path: Callable[[str], Path],
        environ: Mapping[str, str],
        clock: Callable[[], float],
        timeout_s: float,
        max_connections: int,
    ) -> Sender: ...


def build_sender(
    name: str,
    config: Destination,
    *,
    resolve_path: Callable[[str], Path],
    environ: Mapping[str, str],
    clock: Callable[[], float],
    timeout_s: float,
    max_connections: int,
) -> Sender:
    """Raises DestinationConfigError for a type this build cannot send to, or a missing secret."""
    if isinstance(config, FileDestination):
        return FileSender(name, config, path=resolve_path(config.path))
    if isinstance(config, WebhookDestination):
        return WebhookSender(
            name,
            config,
            environ=environ,
            clock=clock,
            timeout_s=timeout_s,
            max_connections=max_connections,
        )
    kind = type(config).__struct_config__.tag
    raise DestinationConfigError(f"destination {name}: type {kind} is not supported yet")


__all__ = ["FileSender", "Sender", "SenderFactory", "WebhookSender", "build_sender"]
