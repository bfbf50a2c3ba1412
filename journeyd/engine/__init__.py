"""The sans-I/O journey engine. Import from here; the submodules are machinery."""

from journeyd.engine.effects import (
    AnyEffect,
    Completed,
    Delivery,
    Dropped,
    Effect,
    Entered,
    Exited,
    Expired,
    Stepped,
)
from journeyd.engine.engine import Engine

__all__ = [
    "AnyEffect",
    "Completed",
    "Delivery",
    "Dropped",
    "Effect",
    "Engine",
    "Entered",
    "Exited",
    "Expired",
    "Stepped",
]
