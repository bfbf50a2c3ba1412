"""The daemon config file (`journeyd.toml`) as msgspec structs, with the reference defaults.

Kept apart from the loader (`journeyd.config`) so the engine can import the limits it obeys
without pulling in file handling.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from journeyd.model import Condition


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class DaemonSettings(_Section, kw_only=True, frozen=True):
    state_dir: str = "var/lib/journeyd"
    socket: str = "var/run/journeyd.sock"
    http: str = "127.0.0.1:8787"
    write_keys: list[str] = msgspec.field(default_factory=lambda: ["dev-key"])
    fsync: Literal["always", "batch", "off"] = "batch"
    journeys_dir: str = "journeys"
    snapshot_every: str = "5m"  # a snapshot at least this often (when anything changed)
    snapshot_after_records: int = 1000000  # ... or after this many WAL records
    wal_segment_mb: int = 64


class IngestSettings(_Section, kw_only=True, frozen=True):
    """How events come in: queue bound, size limits (Segment's), de-duplication window."""

    queue: int = 10000  # events waiting for the engine; full -> HTTP 503 / slower socket acks
    max_event_bytes: int = 32768
    max_batch_bytes: int = 512000
    max_batch_events: int = 2500
    dedup_window: str = "24h"  # a repeated messageId within this window is acked, not re-run
    dedup_max_ids: int = 1000000  # memory bound on the window (about 100 bytes per id)
    retry_after_s: int = 1  # what a saturated HTTP listener tells clients to wait


class Limits(_Section, kw_only=True, frozen=True):
    """Every limit of the reference product, as a setting with the reference number."""

    events_per_second_per_user: int = 25
    instances_per_user: int = 25
    steps_per_journey: int = 50
    branches_per_step: int = 9
    random_branches: int = 5
    exit_rules: int = 10
    name_chars: int = 73
    identifier_chars: int = 500
    reset_passes: int = 100
    instance_lifetime: str = "365d"
    context_bytes: int = 32768
    min_duration: str = "1s"
    mapping_fields: int = 100


class DeliverySettings(_Section, kw_only=True, frozen=True):
    """Defaults for every destination; each destination's own keys override them."""

    queue: int = 10000  # deliveries kept in memory when a spill disk refuses writes
    timeout: str = "10s"
    max_attempts: int = 8


class _Destination(_Section, tag_field="type", kw_only=True, frozen=True):
    """Delivery policy keys every destination takes; unset ones use the adapter's default."""

    batch_size: int | None = None  # deliveries per request
    batch_bytes: int | None = None  # request body bytes
    batch_wait: str | None = None  # how long a partial batch waits for company
    rate: float | None = None  # requests per second (token bucket)
    concurrency: int | None = None  # requests in flight
    timeout: str | None = None  # per attempt (default: delivery.timeout)
    max_attempts: int | None = None  # default: delivery.max_attempts
    max_age: str | None = None  # give up on a delivery older than this (default "3d")
    queue: int | None = None  # deliveries held in memory; beyond that they wait on disk


class FileDestination(_Destination, tag="file", kw_only=True, frozen=True):
    path: str


class WebhookDestination(_Destination, tag="webhook", kw_only=True, frozen=True):
    url: str
    secret_env: str | None = None
    headers: dict[str, str] = {}


class BrazeDestination(_Destination, tag="braze", kw_only=True, frozen=True):
    endpoint: str  # the instance's REST endpoint, e.g. https://rest.iad-01.braze.com
    api_key_env: str
    alias_label: str = "anonymous_id"  # user_alias label for anonymous users


class CustomerioDestination(_Destination, tag="customerio", kw_only=True, frozen=True):
    site_id_env: str
    api_key_env: str
    region: Literal["us", "eu"] = "us"
    endpoint: str | None = None


class IterableDestination(_Destination, tag="iterable", kw_only=True, frozen=True):
    api_key_env: str
    region: Literal["us", "eu"] = "us"
    identify_by: Literal["userId", "email"] = "userId"
    endpoint: str | None = None


class FunctionDestination(_Destination, tag="function", kw_only=True, frozen=True):
    function: str


Destination = (
    FileDestination
    | WebhookDestination
    | BrazeDestination
    | CustomerioDestination
    | IterableDestination
    | FunctionDestination
)
DESTINATION_TYPES = ("file", "webhook", "braze", "customerio", "iterable", "function")


class Audience(_Section, kw_only=True, frozen=True):
    """A named set of trait conditions, evaluated against a profile when a rule asks."""

    all: list[Condition] = []
    any: list[Condition] = []


class Settings(_Section, kw_only=True, frozen=True):
    daemon: DaemonSettings = DaemonSettings()
    ingest: IngestSettings = IngestSettings()
    limits: Limits = Limits()
    delivery: DeliverySettings = DeliverySettings()
    destinations: dict[str, Destination] = {}
    audiences: dict[str, Audience] = {}
