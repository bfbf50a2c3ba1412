"""`journeyd test-send`: one real request through the daemon's own adapter, shown with its
answer and the verdict, secrets masked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio
from fake_services import FakeBraze

JOURNEY = """
id = "welcome"
[entry]
event = "Signed Up"
rule = "once"
[[steps]]
id = "hello"
type = "send"
destination = "crm"
event_name = "Welcome"
traits = ["email"]
"""


def write(tmp_path: Path, endpoint: str) -> Path:
    (tmp_path / "journeys").mkdir(exist_ok=True)
    (tmp_path / "journeys" / "welcome.toml").write_text(JOURNEY)
    config = tmp_path / "journeyd.toml"
    config.write_text(
        "[destinations.crm]\n"
        'type = "braze"\n'
        f'endpoint = "{endpoint}"\n'
        'api_key_env = "JD_TEST_SEND_KEY"\n'
    )
    return config


def test_send(config: Path, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "journeyd", "test-send", "-c", str(config), "--destination", "crm"],
        capture_output=True,
        text=True,
        env={**os.environ, "JD_TEST_SEND_KEY": key},
        timeout=60,
    )


test_send.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


async def test_test_send_shows_request_answer_and_verdict(tmp_path: Path) -> None:
    """A sample payload from the journey's send step goes out once; the output shows the
    request with the key masked, Braze's answer, and `verdict: delivered`."""
    async with FakeBraze.serve(api_key="sekret-key") as braze:
        config = write(tmp_path, braze.base_url)
        done = await trio.to_thread.run_sync(test_send, config, "sekret-key")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"> POST {braze.base_url}/users/track" in done.stdout
        assert "> authorization: Bearer ****" in done.stdout
        assert "sekret-key" not in done.stdout + done.stderr
        assert '"name": "Welcome"' in done.stdout
        assert "< HTTP 201" in done.stdout
        assert "verdict: delivered" in done.stdout
        (request,) = braze.requests
        assert request.headers["authorization"] == "Bearer sekret-key"


async def test_test_send_with_a_wrong_key_is_rejected(tmp_path: Path) -> None:
    """A 401 is shown with the verdict the daemon would reach (dead letter), exit 1."""
    async with FakeBraze.serve(api_key="right") as braze:
        config = write(tmp_path, braze.base_url)
        done = await trio.to_thread.run_sync(test_send, config, "wrong")
        assert done.returncode == 1
        assert "< HTTP 401" in done.stdout
        assert "verdict: rejected" in done.stdout
