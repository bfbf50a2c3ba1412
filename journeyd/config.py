"""Load `journeyd.toml` and every journey in its `journeys_dir`, reporting all problems at once."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from journeyd.decoding import convert
from journeyd.errors import ConfigError, Problem
from journeyd.model import Journey
from journeyd.settings import DaemonSettings, Settings
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
        """Relative paths in the config are relative to the config file, never the cwd;
        the result is absolute, so it means the same after a chdir and in a file: URI."""
        candidate = Path(path).expanduser()
        if candidate.is_absolute():
            return candidate
        return (self.base_dir / candidate).absolute()


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
        # The journeys cannot be checked against broken settings, but their own shape can:
        # report those problems too, so one `check` run shows as much as possible.
        _shapes_only(config_path, label, _raw_journeys_dir(raw), problems)
        raise ConfigError(problems)
    problems += [Problem(label, where, what) for where, what in check_settings(settings)]

    journeys: list[Journey] = []
    journey_files: dict[str, str] = {}
    for file_label, raw_journey in _journey_files(
        config_path, label, settings.daemon.journeys_dir, problems
    ):
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
                    f"journey id {journey.id!r} is already used by {journey_files[journey.id]}; "
                    "every journey needs its own id",
                )
            )
            continue
        journey_files[journey.id] = file_label
        journeys.append(journey)
    if problems:
        raise ConfigError(problems)
    journeys.sort(key=lambda j: j.id)
    return Config(config_path, settings, tuple(journeys), journey_files)


def _raw_journeys_dir(raw: dict[str, object]) -> str | None:
    """journeys_dir as written (or its default); None when it is not even a string."""
    daemon = raw.get("daemon", {})
    value = (
        daemon.get("journeys_dir", DaemonSettings().journeys_dir)
        if isinstance(daemon, dict)
        else None
    )
    return value if isinstance(value, str) else None


def _shapes_only(
    config_path: Path, label: str, journeys_dir: str | None, problems: list[Problem]
) -> None:
    if journeys_dir is None:
        return  # its own shape problem is already reported
    for file_label, raw_journey in _journey_files(config_path, label, journeys_dir, problems):
        _, found = convert(raw_journey, Journey)
        problems += [Problem(file_label, where, what) for where, what in found]


def _journey_files(
    config_path: Path, label: str, journeys_dir: str, problems: list[Problem]
) -> list[tuple[str, dict[str, object]]]:
    """(label, raw table) of every readable *.toml in journeys_dir, relative to the config."""
    if not journeys_dir:
        return []  # check_settings reports the empty value
    directory = Path(journeys_dir).expanduser()
    if not directory.is_absolute():
        directory = config_path.parent / directory
    if not directory.is_dir():
        problems.append(
            Problem(
                label,
                "daemon.journeys_dir",
                f"{journeys_dir!r} is not a directory (resolved to {directory}, relative to "
                "the config file); create it or point journeys_dir at your journeys",
            )
        )
        return []
    found = []
    for file in sorted(directory.glob("*.toml")):
        file_label = str(Path(journeys_dir) / file.name)
        raw_journey = _read_toml(file, file_label, problems)
        if raw_journey is not None:
            found.append((file_label, raw_journey))
    return found


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
