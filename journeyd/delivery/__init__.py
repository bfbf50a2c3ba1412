"""Delivery: the sender pool, its retry policy, dead letters and the destination adapters.

Import from here; the submodules are machinery.
"""

from journeyd.delivery.deadletter import DeadLetter, read_dead_letters
from journeyd.delivery.pool import DeliveryPool, PoolClosed
from journeyd.delivery.retry import (
    DeliveryError,
    DestinationConfigError,
    LastRequest,
    Permanent,
    Retryable,
    RetryPolicy,
)

__all__ = [
    "DeadLetter",
    "DeliveryError",
    "DeliveryPool",
    "DestinationConfigError",
    "LastRequest",
    "Permanent",
    "PoolClosed",
    "RetryPolicy",
    "Retryable",
    "read_dead_letters",
]
