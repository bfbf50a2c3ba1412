"""Load `journeyd.toml` and every journey in its `journeys_dir`, reporting all problems at once."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from journeyd.decoding import convert
from journeyd.errors import ConfigError, Problem
from journeyd.model import Journey
from journeyd.settings import Settings
from journeyd.validate import check_journey, check_settings


@dataclass(frozen=True, slots=True)
class Config:
    """A validated config: settings, journeys (sorted by id) and where each came from."""

    path: Path
    settings: Settings
    journeys: tuple[Journey, ...]
    journey_files: dict[str, str]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, path: str) -> Path:
        """Relative paths in the config are relative to the config file, never the cwd."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate


def load(path: str | Path) -> Config:
    """Read and validate everything; raise ConfigError listing every problem found."""
    config_path = Path(path)
    label = str(path)
    problems: list[Problem] = []
    raw = _read_toml(config_path, label, problems)
    if raw is None:
        raise ConfigError(problems)
    settings, found = convert(raw, Settings)
    problems += [Problem(label, where, what) for where, what in found]
    if settings is None:
        raise ConfigError(problems)
    problems += [Problem(label, where, what) for where, what in check_settings(settings)]

    journeys: list[Journey] = []
    journey_files: dict[str, str] = {}
    journeys_dir = Path(settings.daemon.journeys_dir)
    if not journeys_dir.is_absolute():
        journeys_dir = config_path.parent / journeys_dir
    if not journeys_dir.is_dir():
        problems.append(
            Problem(
                label,
                "daemon.journeys_dir",
                f"{settings.daemon.journeys_dir!r} is not a directory (resolved to {journeys_dir})",
            )
        )
        files: list[Path] = []
    else:
        files = sorted(journeys_dir.glob("*.toml"))
    for file in files:
        file_label = str(Path(settings.daemon.journeys_dir) / file.name)
        raw_journey = _read_toml(file, file_label, problems)
        if raw_journey is None:
            continue
        journey, found = convert(raw_journey, Journey)
        problems += [Problem(file_label, where, what) for where, what in found]
        if journey is None:
            continue
        problems += [
            Problem(file_label, where, what) for where, what in check_journey(journey, settings)
        ]
        if journey.id in journey_files:
            problems.append(
                Problem(
                    file_label,
                    "id",
                    f"journey id {journey.id!r} is already used by {journey_files[journey.id]}",
                )
            )
            continue
        journey_files[journey.id] = file_label
        journeys.append(journey)
    if problems:
        raise ConfigError(problems)
    journeys.sort(key=lambda j: j.id)
    return Config(config_path, settings, tuple(journeys), journey_files)


def _read_toml(path: Path, label: str, problems: list[Problem]) -> dict[str, object] | None:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        problems.append(Problem(label, "", "file not found"))
    except IsADirectoryError:
        problems.append(Problem(label, "", "is a directory, expected a TOML file"))
    except PermissionError:
        problems.append(Problem(label, "", "permission denied"))
    except UnicodeDecodeError:
        problems.append(Problem(label, "", "not UTF-8 text"))
    except tomllib.TOMLDecodeError as exc:
        problems.append(Problem(label, "", f"TOML syntax error: {exc}"))
    return None
