"""The exception hierarchy: one root so callers can catch everything journeyd raises on purpose."""

from __future__ import annotations

from dataclasses import dataclass


class JourneydError(Exception):
    """Root of every error journeyd raises deliberately."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config or journey file, located precisely enough to fix."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class ConfigError(JourneydError):
    """A config or journey file is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class BadInput(JourneydError):
    """An event (or request) cannot be accepted as it is; the message names what is wrong."""
