"""journeyd: a self-hosted engine for event-triggered customer journeys."""

__version__ = "0.1.0"

__all__ = ["__version__"]
