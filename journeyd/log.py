"""structlog, configured once: JSON lines when stdout is not a TTY (journald keeps them),
readable console lines on a TTY. Event names are `noun.verb`; context is bound, not
formatted into strings.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog

_configured = False


def configure(*, level: str = "info", json: bool | None = None) -> None:
    global _configured  # noqa: PLW0603 - structlog is process-global by design
    if json is None:
        json = not sys.stdout.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    _configured = True


def get(name: str) -> Any:
    return structlog.get_logger(name)


class RateLimitedLog:
    """At most `per_interval` lines per `interval_s` for one kind of noise (bad input);
    the lines held back are counted and reported in the next line that gets through."""

    def __init__(self, per_interval: int = 10, interval_s: float = 10.0) -> None:
        self._per_interval = per_interval
        self._interval_s = interval_s
        self._window_start = 0.0
        self._in_window = 0
        self._suppressed = 0

    def allow(self, now: float | None = None) -> int | None:
        """None when this line should be dropped; else how many were dropped before it."""
        now = time.monotonic() if now is None else now
        if now - self._window_start >= self._interval_s:
            self._window_start = now
            self._in_window = 0
        if self._in_window >= self._per_interval:
            self._suppressed += 1
            return None
        self._in_window += 1
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
