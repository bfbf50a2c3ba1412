"""The real `python -m journeyd` entry point on the repository's example config, offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "journeyd.toml.example"
EVENTS = REPO / "examples" / "cart-events.ndjson"


def journeyd(
    *args: str | Path, cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, from `cwd`, with the checkout importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "journeyd", *map(str, args)],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the example config and its journeys in a fresh directory."""
    shutil.copy(EXAMPLE, tmp_path / "journeyd.toml")
    shutil.copytree(REPO / "journeys", tmp_path / "journeys")
    return tmp_path


# --- check ---------------------------------------------------------------------------------


def test_check_example_ok(tmp_path: Path) -> None:
    """`check` on the example exits 0 and says OK, from any working directory."""
    result = journeyd("check", "-c", EXAMPLE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{EXAMPLE}: OK"
    assert "cart-abandonment, onboarding" in result.stdout
    assert result.stderr == ""


def test_check_broken_copy_reports_every_problem(copy: Path) -> None:
    """A broken copy exits 1 and lists each problem as file: path: message on stderr."""
    cart = copy / "journeys" / "cart-abandonment.toml"
    cart.write_text(
        cart.read_text().replace(
            '{ name = "purchased", event = "Order Completed" }', '{ name = "purchased" }'
        )
    )
    onboarding = copy / "journeys" / "onboarding.toml"
    onboarding.write_text(
        onboarding.read_text()
        .replace('percent = 50, next = "mail-b"', 'percent = 40, next = "mail-b"')
        .replace('duration = "1d"', 'duration = "one day"')
    )
    settings = copy / "journeyd.toml"
    settings.write_text(settings.read_text().replace('fsync = "batch"', 'fsync = "sometimes"'))

    result = journeyd("check", "-c", "journeyd.toml", cwd=copy)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "journeyd.toml: daemon.fsync: invalid value 'sometimes' "
        "(expected one of: always, batch, off)",
        "journeys/cart-abandonment.toml: steps[0].branches[1].event: required",
        "2 problems found",
    ]

    settings.write_text(settings.read_text().replace('"sometimes"', '"batch"'))
    result = journeyd("check", "-c", "journeyd.toml", cwd=copy)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "journeys/cart-abandonment.toml: steps[0].branches[1].event: required",
        "journeys/onboarding.toml: steps[0].duration: invalid duration 'one day': "
        'use a number and a unit s, m, h, d or w (e.g. "30s", "5m", "2h", "3d", "1w", "1h30m")',
        "journeys/onboarding.toml: steps[2].branches: percentages must total 100 (they total 90)",
        "3 problems found",
    ]


def test_check_missing_config(tmp_path: Path) -> None:
    """A config file that does not exist is reported and exits 1."""
    result = journeyd("check", "-c", "nope.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["nope.toml: file not found", "1 problem found"]


def test_check_resolves_journeys_dir_against_config(copy: Path, tmp_path_factory) -> None:
    """Run from another directory, `check` still finds the journeys beside the config."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = journeyd("check", "-c", copy / "journeyd.toml", cwd=elsewhere)
    assert result.returncode == 0, result.stderr


# --- simulate ------------------------------------------------------------------------------


def test_simulate_json(tmp_path: Path) -> None:
    """--json prints one object per line, ordered by `at`, with the cart nudge send."""
    result = journeyd("simulate", "-c", EXAMPLE, EVENTS, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stdout)
    assert records
    for record in records:
        assert {"kind", "at", "journey", "user", "instance"} <= record.keys(), record
    ats = [r["at"] for r in records]
    assert ats == sorted(ats)
    sends = [r for r in records if r["kind"] == "send"]
    nudge = [s for s in sends if s["payload"]["event"] == "Cart Abandoned"]
    assert len(nudge) == 1
    assert nudge[0]["destination"] == "outbox"
    assert nudge[0]["journey"] == "cart-abandonment"
    assert nudge[0]["user"] == "ana"
    assert nudge[0]["at"] == "2026-03-01T12:30:00.000Z"  # 2h after the reset at 10:30
    payload = nudge[0]["payload"]
    assert payload["type"] == "track"
    assert payload["userId"] == "ana"
    assert payload["properties"]["email"] == "ana@example.org"
    assert payload["properties"]["journey_metadata"]["journey_id"] == "cart-abandonment"
    assert payload["properties"]["journey_metadata"]["step_id"] == "nudge"
    assert payload["messageId"] == nudge[0]["message_id"]
    # the purchased cart (c-2) completes without a nudge
    assert {r["user"] for r in records if r["kind"] == "enter"} == {"ana", "ben"}


def test_simulate_json_is_deterministic(tmp_path: Path) -> None:
    """Two runs over the same events print the same lines (ids, message ids and all)."""
    first = journeyd("simulate", "-c", EXAMPLE, EVENTS, "--json", cwd=tmp_path)
    second = journeyd("simulate", "-c", EXAMPLE, EVENTS, "--json", cwd=tmp_path)
    assert first.stdout == second.stdout


def test_simulate_table(tmp_path: Path) -> None:
    """The default output is a table with a header, one row per effect, and a summary."""
    result = journeyd("simulate", "-c", EXAMPLE, EVENTS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "AT",
        "KIND",
        "JOURNEY",
        "USER",
        "INSTANCE",
        "STEP",
        "BRANCH",
        "DETAIL",
    ]
    send_rows = [line for line in lines if line.split()[1:2] == ["send"]]
    assert any("-> outbox: 'Cart Abandoned'" in row for row in send_rows)
    assert lines[-1].startswith("6 events; 3 entered, 2 sends")
    assert "0 still waiting" in lines[-1]


def test_simulate_stdin(tmp_path: Path) -> None:
    """`-` reads the events from stdin."""
    result = journeyd(
        "simulate", "-c", EXAMPLE, "-", "--json", cwd=tmp_path, stdin=EVENTS.read_text()
    )
    assert result.returncode == 0, result.stderr
    assert any(r["kind"] == "send" for r in json_lines(result.stdout))


def test_simulate_bad_line(tmp_path: Path) -> None:
    """A bad NDJSON line is reported with its line number, exit 1, and the rest still runs."""
    lines = EVENTS.read_text().splitlines()
    lines.insert(2, "{not json")
    events = tmp_path / "events.ndjson"
    events.write_text("\n".join(lines) + "\n")
    result = journeyd("simulate", "-c", EXAMPLE, events, "--json", cwd=tmp_path)
    assert result.returncode == 1
    assert f"{events}:3: " in result.stderr
    assert "1 line(s) rejected" in result.stderr
    records = json_lines(result.stdout)
    assert any(r["kind"] == "send" and r["payload"]["event"] == "Cart Abandoned" for r in records)


def test_simulate_until_stops_the_clock(tmp_path: Path) -> None:
    """--until stops before the 12:30 nudge timer; instances are left waiting."""
    until = "2026-03-01T11:00:00Z"
    result = journeyd("simulate", "-c", EXAMPLE, EVENTS, "--json", "--until", until, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stdout)
    assert records
    assert all(r["at"] <= "2026-03-01T11:00:00.000Z" for r in records)
    assert not [r for r in records if r["kind"] == "send"]
    table = journeyd("simulate", "-c", EXAMPLE, EVENTS, "--until", until, cwd=tmp_path)
    assert "2 still waiting at 2026-03-01T11:00:00.000Z" in table.stdout.splitlines()[-1]


def test_simulate_bad_until(tmp_path: Path) -> None:
    """A malformed --until is refused with the form to use."""
    result = journeyd("simulate", "-c", EXAMPLE, EVENTS, "--until", "tomorrow", cwd=tmp_path)
    assert result.returncode == 2
    assert "RFC 3339" in result.stderr


def test_simulate_missing_events_file(tmp_path: Path) -> None:
    """An events file that cannot be read is a clear error."""
    result = journeyd("simulate", "-c", EXAMPLE, "nope.ndjson", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot read nope.ndjson" in result.stderr


def test_simulate_with_broken_config(copy: Path) -> None:
    """simulate refuses a config with problems and prints them."""
    (copy / "journeys" / "bad.toml").write_text('id = "bad"\n')
    result = journeyd("simulate", "-c", "journeyd.toml", EVENTS, cwd=copy)
    assert result.returncode == 1
    assert "journeys/bad.toml: entry: required" in result.stderr.splitlines()


# --- preview -------------------------------------------------------------------------------


def test_preview_cart_nudge(tmp_path: Path) -> None:
    """preview prints the nudge payload as JSON, and the destination on stderr."""
    result = journeyd(
        "preview", "-c", EXAMPLE, "--journey", "cart-abandonment", "--step", "nudge", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["type"] == "track"
    assert payload["event"] == "Cart Abandoned"
    assert payload["properties"]["journey_metadata"]["journey_id"] == "cart-abandonment"
    assert payload["properties"]["journey_metadata"]["step_id"] == "nudge"
    assert "Cart Modified" in payload["properties"]["journey_context"]
    assert "outbox" in result.stderr


def test_preview_with_event_file(tmp_path: Path) -> None:
    """An EVENT.json becomes the entry event in the previewed journey context."""
    event = {
        "type": "track",
        "userId": "zoe",
        "event": "Cart Modified",
        "properties": {"cart_id": "c-9", "total": 12},
        "timestamp": "2026-03-01T09:00:00Z",
    }
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    result = journeyd(
        "preview",
        "-c",
        EXAMPLE,
        "--journey",
        "cart-abandonment",
        "--step",
        "nudge",
        path,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["userId"] == "zoe"
    assert payload["properties"]["journey_context"]["Cart Modified"] == {
        "cart_id": "c-9",
        "total": 12,
    }


def test_preview_unknown_journey(tmp_path: Path) -> None:
    """An unknown journey id is a clear error listing the known ones."""
    result = journeyd(
        "preview", "-c", EXAMPLE, "--journey", "nope", "--step", "nudge", cwd=tmp_path
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert "no journey 'nope'" in result.stderr
    assert "cart-abandonment, onboarding" in result.stderr


def test_preview_non_send_step(tmp_path: Path) -> None:
    """A step that is not a send step is a clear error listing the send steps."""
    result = journeyd(
        "preview", "-c", EXAMPLE, "--journey", "cart-abandonment", "--step", "wait", cwd=tmp_path
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert "'wait' is not a send step of cart-abandonment" in result.stderr
    assert "nudge" in result.stderr


# --- help ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (None, ["check", "simulate", "preview", "run"]),
        ("check", ["--config"]),
        ("simulate", ["--json", "--until", "--start", "EVENTS.ndjson"]),
        ("preview", ["--journey", "--step", "EVENT.json"]),
        ("run", ["--config"]),
    ],
)
def test_help(tmp_path: Path, command: str | None, words: list[str]) -> None:
    """`--help` of the program and of each command works and names its options."""
    args = [command, "--help"] if command else ["--help"]
    result = journeyd(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: journeyd")
    for word in words:
        assert word in result.stdout


def test_check_reports_destination_key_variables_that_are_not_set(tmp_path: Path) -> None:
    """`check` names each destination whose *_env variable is unset, and exits 1."""
    import os
    import subprocess
    import sys

    (tmp_path / "journeys").mkdir()
    (tmp_path / "journeyd.toml").write_text(
        "[destinations.crm]\n"
        'type = "braze"\n'
        'endpoint = "https://rest.iad-01.braze.com"\n'
        'api_key_env = "JD_TEST_BRAZE_KEY"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "JD_TEST_BRAZE_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "journeyd", "check", "-c", str(tmp_path / "journeyd.toml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    assert "destinations.crm.api_key_env: environment variable JD_TEST_BRAZE_KEY is not set" in (
        done.stderr
    )
    env["JD_TEST_BRAZE_KEY"] = "k"
    done = subprocess.run(
        [sys.executable, "-m", "journeyd", "check", "-c", str(tmp_path / "journeyd.toml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_check_reports_a_destination_function_that_does_not_import(tmp_path: Path) -> None:
    """`check` imports each destination function and names the exact reason it fails."""
    import subprocess
    import sys

    (tmp_path / "journeys").mkdir()
    (tmp_path / "journeyd.toml").write_text(
        '[destinations.crm]\ntype = "function"\nfunction = "no_such_module_jd:send"\n'
        '[destinations.ok]\ntype = "function"\nfunction = "json:dumps"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "journeyd", "check", "-c", str(tmp_path / "journeyd.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "destinations.crm.function" in done.stderr
    assert "cannot import module 'no_such_module_jd'" in done.stderr
    assert "destinations.ok" not in done.stderr
