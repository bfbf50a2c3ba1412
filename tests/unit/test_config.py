"""Loading journeyd.toml and its journeys: files, shapes, settings rules, and error reporting."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import (
    REPO,
    SETTINGS,
    assert_problem,
    delay,
    exit_send,
    hold,
    journey,
    journey_problem,
    loads,
    only_problem,
    problems,
    send,
    write_config,
)

from journeyd.config import load
from journeyd.errors import ConfigError, Problem
from journeyd.settings import Limits

J = "journeys/j.toml"
STEP_TYPES = "hold_until, delay, data_split, random_split, send"
CONF = "journeyd.toml"


def settings_problem(tmp_path: Path, settings: str) -> Problem:
    """The single problem of a config file with no journeys."""
    problem = only_problem(write_config(tmp_path, settings=settings))
    assert problem.file.endswith(CONF), str(problem)
    return problem


def settings_ok(tmp_path: Path, settings: str) -> None:
    load(write_config(tmp_path, settings=settings))


# --- the repository's example --------------------------------------------------------------


def test_example_config_loads() -> None:
    """journeyd.toml.example and its journeys are valid, journeys sorted by id."""
    config = load(REPO / "journeyd.toml.example")
    assert [j.id for j in config.journeys] == ["cart-abandonment", "onboarding"]
    assert config.journey_files == {
        "cart-abandonment": "journeys/cart-abandonment.toml",
        "onboarding": "journeys/onboarding.toml",
    }
    assert list(config.settings.destinations) == ["outbox"]
    assert config.resolve("var/x") == REPO / "var/x"
    assert config.resolve("/abs/x") == Path("/abs/x")


def test_defaults_when_sections_are_left_out(tmp_path: Path) -> None:
    """An empty journeyd.toml gets the reference limits and default daemon settings."""
    config = load(write_config(tmp_path, settings=""))
    assert config.settings.limits == Limits()
    assert config.settings.limits.steps_per_journey == 50
    assert config.settings.daemon.journeys_dir == "journeys"
    assert config.journeys == ()


def test_problem_str_is_file_path_message() -> None:
    """`str(problem)` is `file: path: message`, or `file: message` without a path."""
    assert str(Problem("journeys/cart.toml", "steps[1].branches[0].event", "required")) == (
        "journeys/cart.toml: steps[1].branches[0].event: required"
    )
    assert str(Problem("journeyd.toml", "", "file not found")) == "journeyd.toml: file not found"


# --- files ---------------------------------------------------------------------------------


def test_missing_config_file(tmp_path: Path) -> None:
    """A config file that does not exist is one problem naming the file as given."""
    missing = tmp_path / "nope.toml"
    problem = only_problem(missing)
    assert (problem.file, problem.path, problem.message) == (str(missing), "", "file not found")


def test_config_toml_syntax_error(tmp_path: Path) -> None:
    """A TOML syntax error in journeyd.toml says where in the file."""
    problem = settings_problem(tmp_path, "[daemon\nhttp = 1\n")
    assert problem.path == ""
    assert "TOML syntax error" in problem.message
    assert "line 1" in problem.message


def test_journey_toml_syntax_error(tmp_path: Path) -> None:
    """A TOML syntax error in a journey names that journey file and the line."""
    problem = journey_problem(tmp_path, journey() + "\nbroken = \n")
    assert problem.file == J
    assert problem.path == ""
    assert "TOML syntax error" in problem.message
    assert "line" in problem.message


def test_journeys_dir_missing(tmp_path: Path) -> None:
    """A journeys_dir that does not exist is reported at daemon.journeys_dir."""
    config = write_config(tmp_path, settings='[daemon]\njourneys_dir = "flows"\n')
    problem = only_problem(config)
    assert_problem(
        problem,
        str(config),
        "daemon.journeys_dir",
        "'flows' is not a directory",
        str(tmp_path / "flows"),
    )


def test_journeys_dir_empty_string(tmp_path: Path) -> None:
    """journeys_dir = "" is one problem; the config's own directory is not read as journeys."""
    config = write_config(tmp_path, settings='[daemon]\njourneys_dir = ""\n')
    (tmp_path / "other.toml").write_text("not = 'a journey'\n")
    problem = only_problem(config)
    assert_problem(problem, str(config), "daemon.journeys_dir", "must not be empty")


def test_only_toml_files_are_journeys(tmp_path: Path) -> None:
    """Files not ending in .toml in journeys_dir are ignored."""
    config = write_config(
        tmp_path, {"j.toml": journey(), "README.md": "# notes", "j.toml.bak": "x ="}
    )
    assert [j.id for j in load(config).journeys] == ["j"]


def test_relative_journeys_dir_resolves_against_config_dir(tmp_path: Path, monkeypatch) -> None:
    """journeys_dir is relative to the config file's directory, never the cwd."""
    config = write_config(tmp_path / "etc", {"j.toml": journey(id="right")})
    decoy = tmp_path / "cwd"
    (decoy / "journeys").mkdir(parents=True)
    (decoy / "journeys" / "j.toml").write_text(journey(id="wrong"))
    monkeypatch.chdir(decoy)
    assert [j.id for j in load(config).journeys] == ["right"]
    assert [j.id for j in load("../etc/journeyd.toml").journeys] == ["right"]


def test_nested_relative_journeys_dir(tmp_path: Path, monkeypatch) -> None:
    """A nested relative journeys_dir is also taken from the config's directory."""
    config = write_config(
        tmp_path / "etc",
        {"j.toml": journey()},
        settings=SETTINGS + '\n[daemon]\njourneys_dir = "conf/flows"\n',
        journeys_dir="conf/flows",
    )
    monkeypatch.chdir(tmp_path)
    loaded = load(config)
    assert loaded.journey_files == {"j": "conf/flows/j.toml"}


def test_absolute_journeys_dir(tmp_path: Path) -> None:
    """An absolute journeys_dir is used as it is."""
    elsewhere = tmp_path / "flows"
    elsewhere.mkdir()
    (elsewhere / "j.toml").write_text(journey())
    config = write_config(
        tmp_path / "etc", settings=SETTINGS + f'\n[daemon]\njourneys_dir = "{elsewhere}"\n'
    )
    assert [j.id for j in load(config).journeys] == ["j"]


def test_duplicate_journey_id_across_files(tmp_path: Path) -> None:
    """Two files with one journey id: the second is reported and names the first."""
    config = write_config(tmp_path, {"a.toml": journey(id="same"), "b.toml": journey(id="same")})
    problem = only_problem(config)
    assert_problem(problem, "journeys/b.toml", "id", "'same' is already used by journeys/a.toml")


# --- every problem at once -----------------------------------------------------------------


def test_all_problems_across_two_journey_files(tmp_path: Path) -> None:
    """Shape and semantic errors in two journey files all come in one ConfigError."""
    bad_shape = journey(hold("h", ['{ name = "x" }'], max_duration="2h"), id="a").replace(
        'rule = "once"', 'rule = "once"\ncolour = "red"'
    )
    bad_rules = journey(
        delay("d", duration="0s", next="gone") + send("s", extra='traits = ["journey_context"]'),
        id="b",
    )
    config = write_config(
        tmp_path,
        {"a.toml": bad_shape, "b.toml": bad_rules},
        settings=SETTINGS + '\n[daemon]\nhttp = "nowhere"\n',
    )
    found = problems(config)
    assert [(p.file, p.path) for p in found] == [
        (str(config), "daemon.http"),
        ("journeys/a.toml", "entry.colour"),
        ("journeys/a.toml", "steps[0].branches[0].event"),
        ("journeys/b.toml", "steps[0].duration"),
        ("journeys/b.toml", "steps[0].next"),
        ("journeys/b.toml", "steps[1].traits[0]"),
    ]
    with pytest.raises(ConfigError) as caught:
        load(config)
    text = str(caught.value)
    assert "journeys/a.toml: steps[0].branches[0].event: required" in text.splitlines()
    assert len(text.splitlines()) == 6


def test_settings_shape_errors_do_not_hide_journey_shape_errors(tmp_path: Path) -> None:
    """A bad [daemon] value and a journey's missing key are reported together."""
    config = write_config(
        tmp_path, {"j.toml": 'id = "j"\n'}, settings='[daemon]\nfsync = "sometimes"\n'
    )
    found = problems(config)
    assert [(p.file, p.path) for p in found] == [
        (str(config), "daemon.fsync"),
        (J, "entry"),
        (J, "steps"),
    ]
    assert "expected one of: always, batch, off" in found[0].message


def test_settings_shape_error_with_missing_journeys_dir(tmp_path: Path) -> None:
    """A shape error in settings and a missing journeys_dir are reported together."""
    config = tmp_path / "journeyd.toml"
    config.write_text('[daemon]\nfsync = 1\njourneys_dir = "nope"\n')
    found = problems(config)
    assert [p.path for p in found] == ["daemon.fsync", "daemon.journeys_dir"]
    assert "'nope' is not a directory" in found[1].message


def test_settings_shape_error_with_bad_journeys_dir_type(tmp_path: Path) -> None:
    """A journeys_dir of the wrong type is one problem, not a guess at another directory."""
    config = write_config(
        tmp_path, {"j.toml": 'id = "j"\n'}, settings="[daemon]\njourneys_dir = 3\n"
    )
    found = problems(config)
    assert [(p.path, p.message) for p in found] == [
        ("daemon.journeys_dir", "expected a string, got an integer")
    ]


# --- shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        (
            journey(top='colour = "red"'),
            "colour",
            "description, entry, exit, exit_send, id, name, steps",
        ),
        (
            journey(entry='event = "E"\nrule = "once"\nwhen = 1'),
            "entry.when",
            "audience, event, filters, rule, unique_identifier",
        ),
        (
            journey(send("s", extra="wait = 1")),
            "steps[0].wait",
            "destination, event_name, id, mapping, name, next, traits, type",
        ),
        (
            journey(hold("h", ['{ name = "a", event = "A", go = "x" }'])),
            "steps[0].branches[0].go",
            "event, filters, name, next, reset",
        ),
        (
            journey(exit_send("to = 1") + send("s")),
            "exit_send.to",
            "destination, event_name, traits",
        ),
        (
            journey('[[exit]]\nevent = "X"\nfilter = []\n\n' + send("s")),
            "exit[0].filter",
            "event, filters, match_identifier, send",
        ),
    ],
    ids=["journey", "entry", "step", "branch", "exit_send", "exit"],
)
def test_unknown_keys_list_expected_keys(
    tmp_path: Path, text: str, path: str, expected: str
) -> None:
    """An unknown key is reported at its path with the keys that are allowed there."""
    problem = journey_problem(tmp_path, text)
    assert_problem(problem, J, path, f"unknown key (expected one of: {expected})")


@pytest.mark.parametrize(
    ("settings", "path", "expected"),
    [
        (
            "[daemon]\nport = 1\n",
            "daemon.port",
            "fsync, http, journeys_dir, socket, state_dir, write_keys",
        ),
        ("[limit]\nsteps = 1\n", "limit", "audiences, daemon, delivery, destinations, limits"),
        ("[limits]\nsteps = 1\n", "limits.steps", "steps_per_journey"),
        (
            '[destinations.x]\ntype = "file"\npath = "p"\nurl = "u"\n',
            "destinations.x.url",
            "path, type",
        ),
    ],
)
def test_settings_unknown_keys(tmp_path: Path, settings: str, path: str, expected: str) -> None:
    """Unknown keys in journeyd.toml list the allowed keys too."""
    problem = settings_problem(tmp_path, settings)
    assert problem.path == path
    assert problem.message.startswith("unknown key (expected one of: ")
    listed = problem.message.removeprefix("unknown key (expected one of: ").rstrip(")").split(", ")
    assert set(expected.split(", ")) <= set(listed)


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (
            journey(top="steps = 3").replace(send("s"), ""),
            "steps",
            "expected an array, got an integer",
        ),
        (journey(top="name = 1979-05-27"), "name", "expected a string, got a date"),
        (journey(top="exit_send = 3"), "exit_send", "expected a table, got an integer"),
        (
            journey(entry='event = "E"\nrule = "once"\nfilters = { property = "p" }'),
            "entry.filters",
            "expected an array, got a table",
        ),
        (
            journey(entry='event = "E"\nrule = "sometimes"'),
            "entry.rule",
            "invalid value 'sometimes' (expected one of: re-enter, once)",
        ),
        (journey(entry='event = ""\nrule = "once"'), "entry.event", "must not be empty"),
        (
            journey(hold("h", ['{ name = "a", event = "A", reset = "yes" }'])),
            "steps[0].branches[0].reset",
            "expected a boolean, got a string",
        ),
        (
            journey(
                hold(
                    "h",
                    [
                        '{ name = "a", event = "A", '
                        'filters = [{ property = "p", op = "equals", value = 1 }] }'
                    ],
                )
            ),
            "steps[0].branches[0].filters[0].op",
            "invalid value 'equals'",
        ),
        (
            journey(
                '[[steps]]\nid = "r"\ntype = "random_split"\n'
                'branches = [{ name = "A", percent = 100.0 }]\n'
            ),
            "steps[0].branches[0].percent",
            "expected an integer, got a number",
        ),
        (
            journey(send("s", extra='traits = "email"')),
            "steps[0].traits",
            "expected an array, got a string",
        ),
        (
            journey(delay("d").replace('duration = "1h"', "duration = 3600")),
            "steps[0].duration",
            "expected a string, got an integer",
        ),
    ],
    ids=[
        "steps",
        "date",
        "exit_send",
        "filters",
        "literal",
        "empty",
        "bool",
        "op",
        "percent",
        "traits",
        "duration",
    ],
)
def test_wrong_types(tmp_path: Path, text: str, path: str, message: str) -> None:
    """A value of the wrong type names what was expected and what was found."""
    assert_problem(journey_problem(tmp_path, text), J, path, message)


@pytest.mark.parametrize(
    ("text", "paths"),
    [
        ('id = "j"\n', ["entry", "steps"]),
        ("", ["id", "entry", "steps"]),
        (journey(hold("h", ['{ name = "a" }'])), ["steps[0].branches[0].event"]),
        (journey('[[steps]]\nid = "d"\ntype = "delay"\n'), ["steps[0].duration"]),
        (
            journey('[[steps]]\ntype = "send"\ndestination = "outbox"\n'),
            ["steps[0].id", "steps[0].event_name"],
        ),
        (
            journey(
                '[[exit]]\nevent = "X"\nsend = true\n\n[exit_send]\ndestination = "outbox"\n\n'
                + send("s")
            ),
            ["exit_send.event_name"],
        ),
        (journey("[[exit]]\nsend = false\n\n" + send("s")), ["exit[0].event"]),
    ],
    ids=[
        "entry and steps",
        "empty file",
        "branch event",
        "delay duration",
        "send keys",
        "exit_send",
        "exit event",
    ],
)
def test_missing_required_keys(tmp_path: Path, text: str, paths: list[str]) -> None:
    """Every missing required key is reported as `required` at its own path."""
    found = problems(write_config(tmp_path, {"j.toml": text}))
    assert [(p.file, p.path, p.message) for p in found] == [(J, path, "required") for path in paths]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (
            'type = "wait"',
            f"unknown type 'wait' (expected one of: {STEP_TYPES})",
        ),
        ("", "required (one of: hold_until, delay, data_split, random_split, send)"),
        (
            'type = ["send"]',
            f"expected a string (one of: {STEP_TYPES}), got an array",
        ),
        ("type = 1", "expected a string (one of: hold_until"),
    ],
    ids=["unknown", "missing", "array", "integer"],
)
def test_step_type(tmp_path: Path, step: str, message: str) -> None:
    """A step's type must be one of the five step types."""
    problem = journey_problem(tmp_path, journey(f'[[steps]]\nid = "s"\n{step}\n'))
    assert_problem(problem, J, "steps[0].type", message)


def test_unknown_destination_type(tmp_path: Path) -> None:
    """A destination's type must be one of the adapters."""
    problem = settings_problem(tmp_path, '[destinations.x]\ntype = "smtp"\n')
    assert problem.path == "destinations.x.type"
    assert (
        "unknown type 'smtp' (expected one of: "
        "file, webhook, braze, customerio, iterable, function)" in problem.message
    )


# --- limits are settings -------------------------------------------------------------------


def _chain(count: int) -> str:
    return "".join(
        delay(f"d{i}", next=f"d{i + 1}" if i + 1 < count else None) for i in range(count)
    )


def test_raising_steps_limit_allows_more_steps(tmp_path: Path) -> None:
    """limits.steps_per_journey = 60 accepts 51 steps that the default rejects."""
    only_problem(write_config(tmp_path / "default", {"j.toml": journey(_chain(51))}))
    loads(
        tmp_path / "raised",
        journey(_chain(51)),
        settings=SETTINGS + "\n[limits]\nsteps_per_journey = 60\n",
    )


@pytest.mark.parametrize(
    ("limits", "body", "path", "message"),
    [
        ("steps_per_journey = 2", _chain(3), "steps", "at most 2 steps"),
        (
            "branches_per_step = 1",
            hold("h", ['{ name = "a", event = "A" }', '{ name = "b", event = "B" }']),
            "steps[0].branches",
            "at most 1 branches",
        ),
        (
            "random_branches = 1",
            '[[steps]]\nid = "r"\ntype = "random_split"\nbranches = '
            '[{ name = "A", percent = 50 }, { name = "B", percent = 50 }]\n',
            "steps[0].branches",
            "at most 1 branches",
        ),
        ("name_chars = 3", send("long"), "steps[0].id", "at most 3 characters"),
        (
            "exit_rules = 1",
            '[[exit]]\nevent = "X"\n\n[[exit]]\nevent = "Y"\n\n' + send("s"),
            "exit",
            "at most 1 exit rules",
        ),
    ],
    ids=["steps", "branches", "random", "names", "exits"],
)
def test_lowered_limits_apply(
    tmp_path: Path, limits: str, body: str, path: str, message: str
) -> None:
    """Every journey limit comes from [limits], not from a constant."""
    loads(tmp_path / "default", journey(body))
    problem = journey_problem(
        tmp_path / "lowered", journey(body), settings=SETTINGS + f"\n[limits]\n{limits}\n"
    )
    assert_problem(problem, J, path, message, f"limits.{limits.split(maxsplit=1)[0]}")


# --- settings rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "http",
    [
        "127.0.0.1:8787",
        "localhost:80",
        "[::1]:8787",
        "0.0.0.0:8787",
        "example.com:443",
        "127.0.0.1:0",  # port 0: the kernel picks one and the daemon logs it
        "",
    ],
)
def test_http_address_accepted(tmp_path: Path, http: str) -> None:
    """daemon.http takes host:port or [v6]:port, or "" to disable."""
    settings_ok(tmp_path, f'[daemon]\nhttp = "{http}"\n')


@pytest.mark.parametrize(
    "http",
    [
        "8787",
        "localhost",
        ":8787",
        "127.0.0.1:",
        "127.0.0.1:65536",
        "127.0.0.1:http",
    ],
)
def test_http_address_rejected(tmp_path: Path, http: str) -> None:
    """A malformed daemon.http says which form to use."""
    problem = settings_problem(tmp_path, f'[daemon]\nhttp = "{http}"\n')
    assert problem.path == "daemon.http"
    assert f"invalid address {http!r}" in problem.message
    assert "host:port" in problem.message


@pytest.mark.parametrize(
    "http", ["127.0.0.1:8787", "localhost:8787", "[::1]:8787", "127.5.5.5:1", ""]
)
def test_empty_write_keys_allowed_on_loopback(tmp_path: Path, http: str) -> None:
    """write_keys = [] is fine when HTTP only listens on loopback (or is off)."""
    settings_ok(tmp_path, f'[daemon]\nhttp = "{http}"\nwrite_keys = []\n')


@pytest.mark.parametrize("http", ["0.0.0.0:8787", "[::]:8787", "192.168.1.5:80", "example.com:80"])
def test_empty_write_keys_rejected_beyond_loopback(tmp_path: Path, http: str) -> None:
    """write_keys = [] with HTTP open beyond loopback is refused, with the fix."""
    problem = settings_problem(tmp_path, f'[daemon]\nhttp = "{http}"\nwrite_keys = []\n')
    assert problem.path == "daemon.write_keys"
    assert "must not be empty" in problem.message
    assert "127.0.0.1" in problem.message


def test_empty_write_key_entry(tmp_path: Path) -> None:
    """An empty string is not a write key."""
    problem = settings_problem(tmp_path, '[daemon]\nwrite_keys = ["k", ""]\n')
    assert (problem.path, problem.message) == ("daemon.write_keys[1]", "must not be empty")


@pytest.mark.parametrize("key", ["state_dir", "journeys_dir"])
def test_daemon_dirs_not_empty(tmp_path: Path, key: str) -> None:
    """state_dir and journeys_dir cannot be empty."""
    problem = settings_problem(tmp_path, f'[daemon]\n{key} = ""\n')
    assert (problem.path, problem.message) == (f"daemon.{key}", "must not be empty")


INT_LIMITS = [name for name in Limits.__struct_fields__ if isinstance(getattr(Limits(), name), int)]


@pytest.mark.parametrize("name", INT_LIMITS)
@pytest.mark.parametrize("value", [0, -1])
def test_limits_at_least_one(tmp_path: Path, name: str, value: int) -> None:
    """Every numeric limit must be at least 1."""
    problem = settings_problem(tmp_path, f"[limits]\n{name} = {value}\n")
    assert (problem.path, problem.message) == (f"limits.{name}", "must be at least 1")


def test_int_limits_cover_the_reference_table() -> None:
    """The numeric limits checked above include the reference's configurable ones."""
    assert {
        "steps_per_journey",
        "branches_per_step",
        "random_branches",
        "exit_rules",
        "name_chars",
        "events_per_second_per_user",
        "instances_per_user",
        "reset_passes",
    } <= set(INT_LIMITS)


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        ('[limits]\nmin_duration = "0s"\n', "limits.min_duration", "must be at least 1s"),
        (
            '[limits]\ninstance_lifetime = "forever"\n',
            "limits.instance_lifetime",
            "invalid duration 'forever'",
        ),
        (
            '[limits]\nmin_duration = "2d"\ninstance_lifetime = "1d"\n',
            "limits.min_duration",
            "longer than limits.instance_lifetime",
        ),
        ('[delivery]\ntimeout = "10"\n', "delivery.timeout", "invalid duration '10'"),
        ('[delivery]\ntimeout = "0s"\n', "delivery.timeout", "must be at least 1s"),
        ("[delivery]\nqueue = 0\n", "delivery.queue", "must be at least 1"),
        ("[delivery]\nmax_attempts = 0\n", "delivery.max_attempts", "must be at least 1"),
    ],
)
def test_duration_and_delivery_settings(
    tmp_path: Path, settings: str, path: str, message: str
) -> None:
    """Limit and delivery durations parse and are at least 1s; counts are at least 1."""
    problem = settings_problem(tmp_path, settings)
    assert problem.path == path
    assert message in problem.message


DESTINATIONS_OK = """
[destinations.hook]
type = "webhook"
url = "https://example.org/hook"
secret_env = "HOOK_SECRET"

[destinations.braze]
type = "braze"
endpoint = "https://rest.iad-01.braze.com"
api_key_env = "BRAZE_API_KEY"

[destinations.cio]
type = "customerio"
site_id_env = "CIO_SITE"
api_key_env = "CIO_KEY"
region = "eu"

[destinations.iter]
type = "iterable"
api_key_env = "_ITERABLE1"

[destinations.fn]
type = "function"
function = "my_pkg.hooks:deliver"

[destinations.file]
type = "file"
path = "out.jsonl"
"""


def test_every_destination_type_accepted(tmp_path: Path) -> None:
    """Well-formed destinations of every type load."""
    settings_ok(tmp_path, DESTINATIONS_OK)


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        (
            '[destinations.x]\ntype = "webhook"\nurl = "ftp://example.org"\n',
            "destinations.x.url",
            "must start with http:// or https://",
        ),
        (
            '[destinations.x]\ntype = "webhook"\nurl = "example.org"\n',
            "destinations.x.url",
            "must start with http:// or https://",
        ),
        (
            '[destinations.x]\ntype = "webhook"\nurl = "https://e.org"\nsecret_env = "MY-SECRET"\n',
            "destinations.x.secret_env",
            "not an environment variable name",
        ),
        (
            '[destinations.x]\ntype = "braze"\nendpoint = "rest.braze.com"\napi_key_env = "K"\n',
            "destinations.x.endpoint",
            "must start with http:// or https://",
        ),
        (
            '[destinations.x]\ntype = "braze"\nendpoint = "https://b"\napi_key_env = "1KEY"\n',
            "destinations.x.api_key_env",
            "not an environment variable name",
        ),
        (
            '[destinations.x]\ntype = "customerio"\nsite_id_env = "SITE ID"\napi_key_env = "K"\n',
            "destinations.x.site_id_env",
            "not an environment variable name",
        ),
        (
            '[destinations.x]\ntype = "iterable"\napi_key_env = ""\n',
            "destinations.x.api_key_env",
            "not an environment variable name",
        ),
        (
            '[destinations.x]\ntype = "function"\nfunction = "my_pkg.hooks.deliver"\n',
            "destinations.x.function",
            '"package.module:function"',
        ),
        (
            '[destinations.x]\ntype = "function"\nfunction = "my_pkg:hooks:deliver"\n',
            "destinations.x.function",
            '"package.module:function"',
        ),
        (
            '[destinations.x]\ntype = "function"\nfunction = ":deliver"\n',
            "destinations.x.function",
            '"package.module:function"',
        ),
        (
            '[destinations.x]\ntype = "file"\npath = ""\n',
            "destinations.x.path",
            "must not be empty",
        ),
        ('[destinations.x]\ntype = "file"\n', "destinations.x.path", "required"),
        (
            '[destinations.x]\ntype = "customerio"\nsite_id_env = "S"\napi_key_env = "K"\n'
            'region = "ap"\n',
            "destinations.x.region",
            "expected one of: us, eu",
        ),
    ],
    ids=[
        "ftp",
        "no scheme",
        "secret_env",
        "endpoint",
        "api_key digit",
        "site id space",
        "empty env",
        "function dots",
        "function two colons",
        "function no module",
        "file path",
        "file no path",
        "region",
    ],
)
def test_destination_rules(tmp_path: Path, settings: str, path: str, message: str) -> None:
    """Destinations: URL schemes, environment variable names, function references."""
    problem = settings_problem(tmp_path, settings)
    assert problem.path == path
    assert message in problem.message


def test_env_name_message_says_the_form(tmp_path: Path) -> None:
    """The env var name message shows what a valid name looks like."""
    problem = settings_problem(
        tmp_path, '[destinations.x]\ntype = "iterable"\napi_key_env = "my-key"\n'
    )
    assert "letters, digits and _" in problem.message


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        ("[audiences.empty]\n", "audiences.empty", "at least one condition"),
        ("[audiences.a]\nall = []\nany = []\n", "audiences.a", "at least one condition"),
        (
            '[audiences.a]\nall = [{ audience = "b" }]\n',
            "audiences.a.all[0]",
            "use { trait, op, value }",
        ),
        (
            '[audiences.a]\nany = [{ context = "E", property = "p", op = "exists" }]\n',
            "audiences.a.any[0]",
            "use { trait, op, value }",
        ),
        (
            '[audiences.a]\nall = [{ trait = "t", not_audience = "b", op = "exists" }]\n',
            "audiences.a.all[0]",
            "use { trait, op, value }",
        ),
        (
            '[audiences.a]\nall = [{ trait = "t", op = "in", value = "x" }]\n',
            "audiences.a.all[0].value",
            "needs an array",
        ),
        ('[audiences.a]\nall = [{ trait = "t" }]\n', "audiences.a.all[0].op", "required"),
        (
            '[audiences.a]\nall = [{ trait = "t", op = "nope" }]\n',
            "audiences.a.all[0].op",
            "invalid value 'nope'",
        ),
    ],
)
def test_audience_rules(tmp_path: Path, settings: str, path: str, message: str) -> None:
    """Audiences need conditions, and only trait conditions with a valid op/value."""
    problem = settings_problem(tmp_path, settings)
    assert problem.path == path
    assert message in problem.message


def test_audience_any_only_is_valid(tmp_path: Path) -> None:
    """An audience with only `any` conditions loads."""
    settings_ok(
        tmp_path,
        '[audiences.a]\nany = [{ trait = "t", op = "exists" }, '
        '{ trait = "u", op = "eq", value = 1 }]\n',
    )


def test_all_settings_problems_reported_together(tmp_path: Path) -> None:
    """Several semantic problems in journeyd.toml are all reported in one go."""
    config = write_config(
        tmp_path,
        settings='[daemon]\nhttp = "x"\n[limits]\nexit_rules = 0\n'
        '[delivery]\ntimeout = "soon"\n[audiences.a]\n',
    )
    assert [p.path for p in problems(config)] == [
        "daemon.http",
        "limits.exit_rules",
        "delivery.timeout",
        "audiences.a",
    ]


def test_copied_example_with_relative_dirs(tmp_path: Path) -> None:
    """A copy of the example elsewhere loads its own journeys directory."""
    shutil.copy(REPO / "journeyd.toml.example", tmp_path / "journeyd.toml")
    shutil.copytree(REPO / "journeys", tmp_path / "journeys")
    (tmp_path / "journeys" / "onboarding.toml").unlink()
    assert [j.id for j in load(tmp_path / "journeyd.toml").journeys] == ["cart-abandonment"]


# --- [ingest] ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        ("[ingest]\nqueue = 0\n", "ingest.queue", "must be at least 1"),
        ('[ingest]\ndedup_window = "soon"\n', "ingest.dedup_window", "invalid duration"),
        ("[ingest]\nqueue = 100\n", "ingest.queue", "must hold at least one whole batch"),
        (
            "[ingest]\nmax_event_bytes = 600000\n",
            "ingest.max_event_bytes",
            "must not exceed ingest.max_batch_bytes",
        ),
    ],
)
def test_ingest_settings_rejected(tmp_path: Path, settings: str, path: str, message: str) -> None:
    """Ingest settings that could never work are named with the fix."""
    problem = settings_problem(tmp_path, settings)
    assert problem.path == path
    assert message in problem.message


def test_small_ingest_queue_with_small_batches_is_accepted(tmp_path: Path) -> None:
    """A tiny queue is fine when no batch can exceed it."""
    settings_ok(tmp_path, "[ingest]\nqueue = 5\nmax_batch_events = 5\n")
