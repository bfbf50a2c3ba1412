"""The shipped systemd units: systemd itself accepts them, and they agree with each other, with
the production config and with the fd names the daemon looks up."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
UNIT_FILES = ("journeyd.service", "journeyd.socket", "journeyd-http.socket")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed"
)


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; comments and blank lines dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{path.name}: {line!r} is outside any section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def verifiable_copy(tmp_path: Path) -> Path:
    """The units copied into tmp_path with ExecStart pointing at a binary that exists here.

    `systemd-analyze verify` fails a unit whose ExecStart binary is missing, and
    /usr/local/bin/journeyd (the production path) is not installed on a test machine. The
    venv's own `journeyd` script (or /bin/true without one) stands in; only that path
    changes, so every other line is verified exactly as shipped."""
    stand_in = Path(sys.executable).with_name("journeyd")
    binary = str(stand_in) if stand_in.exists() and " " not in str(stand_in) else "/bin/true"
    for name in UNIT_FILES:
        shutil.copy(UNITS / name, tmp_path / name)
    service = tmp_path / "journeyd.service"
    text = service.read_text()
    rewritten, count = re.subn(
        r"^ExecStart=/usr/local/bin/journeyd ", f"ExecStart={binary} ", text, flags=re.M
    )
    assert count == 1, "journeyd.service should have exactly one ExecStart= to rewrite"
    service.write_text(rewritten)
    return tmp_path


def verify(directory: Path, *names: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *names],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    """systemd-analyze verify accepts all three units without an error or a warning."""
    # verify exits 0 on an unknown or misspelt directive, so the output must be empty too.
    directory = verifiable_copy(tmp_path)
    result = verify(directory, *UNIT_FILES)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_verify_would_catch_a_misspelt_directive(tmp_path: Path) -> None:
    """A misspelt directive shows in verify's output, so empty output means all understood."""
    directory = verifiable_copy(tmp_path)
    service = directory / "journeyd.service"
    service.write_text(service.read_text().replace("ProtectHome=", "ProtectHomes="))
    result = verify(directory, "journeyd.service")
    assert "ProtectHomes" in result.stdout + result.stderr


def test_socket_units_name_their_fds_as_the_daemon_expects() -> None:
    """The socket units pass fds named "unix" and "http" to journeyd.service, which takes both."""
    unix = parse_unit(UNITS / "journeyd.socket")["Socket"]
    http = parse_unit(UNITS / "journeyd-http.socket")["Socket"]
    service = parse_unit(UNITS / "journeyd.service")
    assert unix["FileDescriptorName"] == ["unix"]
    assert http["FileDescriptorName"] == ["http"]
    assert unix.get("Service", ["journeyd.service"]) == ["journeyd.service"]
    assert http["Service"] == ["journeyd.service"]
    sockets = " ".join(service["Service"]["Sockets"]).split()
    assert sorted(sockets) == ["journeyd-http.socket", "journeyd.socket"]
    assert "journeyd.socket" in service["Unit"]["Requires"]


def test_socket_units_listen_where_the_production_config_says() -> None:
    """The production config's socket and http addresses are where the socket units listen."""
    # `journeyd send -c /etc/journeyd/journeyd.toml` reads `socket` to find the daemon.
    daemon = tomllib.loads((UNITS / "journeyd.toml").read_text())["daemon"]
    unix = parse_unit(UNITS / "journeyd.socket")["Socket"]
    http = parse_unit(UNITS / "journeyd-http.socket")["Socket"]
    assert unix["ListenStream"] == [daemon["socket"]]
    assert unix["SocketMode"] == ["0660"]
    assert http["ListenStream"] == [daemon["http"]]


def test_service_matches_the_exit_code_contract() -> None:
    """Exits 78 (config) and 65 (damaged state) are not restarted, other failures are."""
    service = parse_unit(UNITS / "journeyd.service")["Service"]
    assert service["RestartPreventExitStatus"] == ["78 65"]
    assert service["Restart"] == ["on-failure"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
