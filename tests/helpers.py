"""Build journeyd configs in a temporary directory and look at the problems they produce."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeyd.config import Config, load
from journeyd.errors import ConfigError, Problem

REPO = Path(__file__).resolve().parents[1]

SETTINGS = """
[destinations.outbox]
type = "file"
path = "var/out.jsonl"

[audiences.vip]
all = [{ trait = "tier", op = "eq", value = "gold" }]
"""

ONCE = 'event = "Signed Up"\nrule = "once"'
REENTER = 'event = "Cart Modified"\nrule = "re-enter"\nunique_identifier = "cart_id"'


def journey(body: str = "", *, top: str = "", entry: str = ONCE, id: str = "j") -> str:
    """A journey file: top-level keys, then [entry], then `body` (steps, exits...)."""
    body = body or send("s")
    return f'id = "{id}"\n{top}\n\n[entry]\n{entry}\n\n{body}\n'


def send(id: str, *, next: str | None = None, extra: str = "") -> str:
    nxt = f'next = "{next}"\n' if next is not None else ""
    return (
        f'[[steps]]\nid = "{id}"\ntype = "send"\ndestination = "outbox"\n'
        f'event_name = "Hello"\n{nxt}{extra}\n'
    )


def delay(id: str, *, duration: str = "1h", next: str | None = None, extra: str = "") -> str:
    nxt = f'next = "{next}"\n' if next is not None else ""
    return f'[[steps]]\nid = "{id}"\ntype = "delay"\nduration = "{duration}"\n{nxt}{extra}\n'


def hold(
    id: str,
    branches: list[str],
    *,
    max_duration: str = "1h",
    on_timeout: str | None = None,
    extra: str = "",
) -> str:
    timeout = f'on_timeout = "{on_timeout}"\n' if on_timeout is not None else ""
    listed = ",\n  ".join(branches)
    return (
        f'[[steps]]\nid = "{id}"\ntype = "hold_until"\nmax_duration = "{max_duration}"\n'
        f"{timeout}{extra}branches = [\n  {listed},\n]\n\n"
    )


def data_split(id: str, branches: list[str], *, else_: str | None = None) -> str:
    other = f'else = "{else_}"\n' if else_ is not None else ""
    listed = ",\n  ".join(branches)
    return f'[[steps]]\nid = "{id}"\ntype = "data_split"\n{other}branches = [\n  {listed},\n]\n\n'


def random_split(id: str, branches: list[str]) -> str:
    listed = ",\n  ".join(branches)
    return f'[[steps]]\nid = "{id}"\ntype = "random_split"\nbranches = [\n  {listed},\n]\n\n'


def exit_send(extra: str = "", *, send_rule: bool = True) -> str:
    """An exit rule on "X" (with send = true unless told otherwise) and an [exit_send] table."""
    rule = '[[exit]]\nevent = "X"\n' + ("send = true\n" if send_rule else "")
    table = '[exit_send]\ndestination = "outbox"\nevent_name = "Bye"\n'
    return f"{rule}\n{table}{extra}\n"


def write_config(
    root: Path,
    journeys: dict[str, str] | None = None,
    *,
    settings: str = SETTINGS,
    journeys_dir: str = "journeys",
    name: str = "journeyd.toml",
) -> Path:
    """Write `name` and `journeys_dir/<file>` under root; return the config file's path."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / name
    config.write_text(settings)
    directory = root / journeys_dir
    directory.mkdir(parents=True, exist_ok=True)
    for file, text in (journeys or {}).items():
        (directory / file).write_text(text)
    return config


def problems(config: Path | str) -> list[Problem]:
    """Every problem `load` reports; fails the test when the config loads cleanly."""
    with pytest.raises(ConfigError) as caught:
        load(config)
    assert caught.value.problems, "ConfigError without problems"
    return caught.value.problems


def only_problem(config: Path | str) -> Problem:
    """The single problem `load` reports (so the fixture is valid in every other way)."""
    found = problems(config)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def journey_problem(tmp_path: Path, text: str, *, settings: str = SETTINGS) -> Problem:
    """The single problem of one journey file `journeys/j.toml`."""
    return only_problem(write_config(tmp_path, {"j.toml": text}, settings=settings))


def loads(tmp_path: Path, text: str, *, settings: str = SETTINGS) -> Config:
    """Load a config with one journey file, failing with every problem if it does not load."""
    config = write_config(tmp_path, {"j.toml": text}, settings=settings)
    try:
        return load(config)
    except ConfigError as exc:  # pragma: no cover - the message is the point
        pytest.fail(f"expected a valid config, got:\n{exc}")


def assert_problem(problem: Problem, file: str, path: str, *fragments: str) -> None:
    """The problem is at file:path and its message says every fragment."""
    assert (problem.file, problem.path) == (file, path), str(problem)
    for fragment in fragments:
        assert fragment in problem.message, str(problem)
