"""Crash tests with the real daemon as a subprocess: `kill -9` at random points, restart on the
same state directory, and check that every acknowledged event took effect exactly once and
every decided delivery arrives at least once with its stable messageId.

The journey is built for exact checking: every "Cart Modified" for a cart either starts its
instance (and sends "entered") or resets the instance's hold, capturing the event's `n` under
the alias "Cart Modified - updated cart". Events of one cart carry n = 0, 1, 2, ..., so the
instance's `resets` and the alias's `n` say exactly how many of the cart's events were applied.

Each crash session reproduces from its seed: JOURNEYD_CRASH_SEED=<seed> pytest -k <test>.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import DaemonProcess, short_dir, start_daemon
from held_webhook import HeldWebhook

from journeyd.engine.ids import message_id

ENTRY = "Cart Modified"
ALIAS = "Cart Modified - updated cart"
CRASH_JOURNEY: dict[str, Any] = {
    "id": "crash",
    "entry": {"event": ENTRY, "rule": "re-enter", "unique_identifier": "cart_id"},
    "steps": [
        {
            "id": "entered",
            "type": "send",
            "destination": "outbox",
            "event_name": "Cart Entered",
            "next": "wait",
        },
        {
            "id": "wait",
            "type": "hold_until",
            "max_duration": "1d",
            "branches": [{"name": "updated cart", "event": ENTRY, "reset": True}],
        },
    ],
}
LIMITS = {"events_per_second_per_user": 1_000_000, "instances_per_user": 1000}
DELIVERY_WAIT_S = 30.0
SNAPSHOT_CLI = [sys.executable, "-m", "journeyd", "snapshot", "-c"]


def crash_settings(
    fsync: str = "batch", snapshot_after: int = 1_000_000, snapshot_every: str = "5m"
) -> dict[str, Any]:
    return {
        "daemon": {
            "fsync": fsync,
            "snapshot_after_records": snapshot_after,
            "snapshot_every": snapshot_every,
        },
        "limits": LIMITS,
    }


def cart_event(user: str, cart: str, n: int) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": ENTRY,
        "properties": {"cart_id": cart, "n": n},
    }


# --- reading the state back -----------------------------------------------------------------


def inspect(daemon: DaemonProcess) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`journeyd inspect --json --instances`: (summary, instances); stderr shown on failure."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "journeyd",
            "inspect",
            "-c",
            str(daemon.dir / "journeyd.toml"),
            "--json",
            "--instances",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"inspect failed ({done.returncode}): {done.stderr}"
    summary, *rest = done.stdout.splitlines()
    return json.loads(summary), [json.loads(line) for line in rest if line.strip()]


def delivered(daemon: DaemonProcess) -> list[dict[str, Any]]:
    """Every line of the file destination; a torn or merged line is a failure, not skipped."""
    if not daemon.deliveries.exists():
        return []
    out = []
    for number, line in enumerate(daemon.deliveries.read_bytes().splitlines(), 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(
                f"{daemon.deliveries}:{number} is not one JSON line: {line!r}"
            ) from None
    return out


def wait_for_message_ids(daemon: DaemonProcess, wanted: set[str], timeout: float) -> set[str]:
    """Poll the file destination until every wanted messageId is there; return those missing."""
    deadline = time.monotonic() + timeout
    while True:
        daemon.read_logs()  # keep the daemon's stdout pipe drained
        seen = {d["messageId"] for d in delivered(daemon)}
        missing = wanted - seen
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.05)


# --- one crash session: several trials on one state directory -----------------------------


@dataclass
class Cart:
    user: str
    cart: str
    sent: int = 0  # S: events written to the socket
    acked: int = 0  # A: events answered ok
    applied: int | None = None  # P as recovered after the crash that ended its trial


@dataclass
class SessionResult:
    seed: int
    fsync: str
    trials: int = 0
    events_sent: int = 0
    events_acked: int = 0
    lost_acked: int = 0
    applied_twice: int = 0
    problems: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"crash session seed={self.seed} fsync={self.fsync} "
            f"(rerun: JOURNEYD_CRASH_SEED={self.seed}): {self.trials} trials, "
            f"{self.events_sent} events sent, {self.events_acked} acked, "
            f"{self.lost_acked} acked events lost, {self.applied_twice} applied twice\n"
            + "\n".join(self.log)
            + ("\nproblems:\n  " + "\n  ".join(self.problems[:40]) if self.problems else "")
        )


def _stream_and_kill(
    daemon: DaemonProcess, events: list[dict[str, Any]], rng: random.Random
) -> tuple[int, list[dict[str, Any]], str]:
    """Write events in order on one connection, kill -9 at a random point; (sent, acks, how)."""
    lines = [json.dumps(e).encode() + b"\n" for e in events]
    kill_after = rng.randint(0, len(lines))
    delay = rng.choice([0.0, rng.uniform(0, 0.003), rng.uniform(0, 0.03), rng.uniform(0, 0.15)])
    acks: list[dict[str, Any]] = []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(str(daemon.socket_path))

    def read() -> None:
        buffer = b""
        try:
            while chunk := sock.recv(65536):
                buffer += chunk
        except OSError:
            pass  # the daemon died under us: a reset is as good as the end
        *complete, _partial = buffer.split(b"\n")
        acks.extend(json.loads(line) for line in complete if line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent = 0
    try:
        while sent < kill_after:
            chunk = rng.randint(1, 8)
            part = lines[sent : min(kill_after, sent + chunk)]
            sock.sendall(b"".join(part))
            sent += len(part)
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 0.002))
        if delay:
            time.sleep(delay)
    finally:
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(30)
    reader.join(60)
    sock.close()
    assert not reader.is_alive(), "the ack reader did not finish after the daemon died"
    return sent, acks, f"kill after {sent}/{len(lines)} events written, +{delay * 1000:.1f} ms"


def check_state(
    daemon: DaemonProcess, carts: dict[tuple[str, str], Cart], result: SessionResult, label: str
) -> dict[tuple[str, str], int]:
    """Instances and deliveries against what was sent and acked (problems go to `result`);
    returns how many events of each cart were applied."""
    _summary, instances = inspect(daemon)
    by_key = {(i["user"], i["identifier"]): i for i in instances}
    problems = result.problems
    expected_ids: dict[str, str] = {}
    found: dict[tuple[str, str], int] = {}
    for key, cart in carts.items():
        inst = by_key.pop(key, None)
        applied = found[key] = 0 if inst is None else inst["resets"] + 1
        where = f"{label} cart {cart.user}/{cart.cart} (sent {cart.sent}, acked {cart.acked})"
        if applied < cart.acked:
            result.lost_acked += cart.acked - applied
            problems.append(f"{where}: only {applied} applied: acked events lost")
        if applied > cart.sent:
            result.applied_twice += applied - cart.sent
            problems.append(f"{where}: {applied} applied, more than were sent")
        if cart.applied is not None and applied != cart.applied:
            problems.append(f"{where}: {applied} applied now, {cart.applied} after its crash")
        if inst is None:
            continue
        context = inst["context"]
        if inst["step"] != "wait":
            problems.append(f"{where}: at step {inst['step']!r}, not 'wait'")
        if context.get(ENTRY, {}).get("n") != 0:
            problems.append(f"{where}: entry context {context.get(ENTRY)} does not hold n == 0")
        if applied >= 2 and context.get(ALIAS, {}).get("n") != applied - 1:
            problems.append(f"{where}: resets {inst['resets']} but {ALIAS} = {context.get(ALIAS)}")
        if applied == 1 and ALIAS in context:
            problems.append(f"{where}: no reset, yet {ALIAS} = {context[ALIAS]}")
        expected_ids[message_id(inst["instance"], "entered")] = inst["instance"]
    for key in by_key:
        problems.append(f"{label}: an instance nobody sent events for: {key}")
    missing = wait_for_message_ids(daemon, set(expected_ids), DELIVERY_WAIT_S)
    for mid in sorted(missing):
        problems.append(f"{label}: 'entered' of instance {expected_ids[mid]} never delivered")
    for line in delivered(daemon):
        meta = line["properties"]["journey_metadata"]
        if expected_ids.get(line["messageId"]) != meta["instance_id"]:
            problems.append(f"{label}: a delivery for no recovered instance: {line['messageId']}")
    return found


def run_session(
    seed: int,
    trials: int,
    *,
    max_carts: int = 8,
    max_events_per_cart: int = 20,
    fsync: str | None = None,
) -> SessionResult:
    """`trials` crash trials chained on one state directory; returns what was found.

    Each trial streams events for fresh carts, is killed at a random point, restarted, and
    checked together with every cart of the earlier trials (their state must not move).
    """
    rng = random.Random(seed)
    fsync = fsync or rng.choice(["batch", "batch", "always", "off"])
    settings = crash_settings(
        fsync, snapshot_after=rng.choice([30, 100, 400, 1_000_000]), snapshot_every="1s"
    )
    result = SessionResult(seed, fsync)
    carts: dict[tuple[str, str], Cart] = {}
    with short_dir() as directory:
        daemon = start_daemon(directory, journeys=[CRASH_JOURNEY], settings=settings)
        try:
            for trial in range(trials):
                fresh: list[Cart] = [
                    Cart(f"u{trial}-{c}", f"cart-{trial}-{c}")
                    for c in range(rng.randint(1, max_carts))
                ]
                order = [cart for cart in fresh for _ in range(rng.randint(1, max_events_per_cart))]
                rng.shuffle(order)
                events, owner, next_n = [], [], dict.fromkeys(range(len(fresh)), 0)
                for cart in order:
                    index = fresh.index(cart)
                    events.append(cart_event(cart.user, cart.cart, next_n[index]))
                    owner.append(cart)
                    next_n[index] += 1
                sent, acks, how = _stream_and_kill(daemon, events, rng)
                daemon.read_logs()
                daemon.proc.stdout.close()  # type: ignore[union-attr]
                if len(acks) > sent:
                    result.problems.append(f"trial {trial}: {len(acks)} answers to {sent} lines")
                for cart, ack in zip(owner, acks, strict=False):
                    if ack.get("ok") is not True:
                        result.problems.append(f"trial {trial}: refused: {ack}")
                        continue
                    cart.acked += 1
                for cart in owner[:sent]:
                    cart.sent += 1
                for cart in fresh:
                    carts[(cart.user, cart.cart)] = cart
                result.trials += 1
                result.events_sent += sent
                result.events_acked += sum(1 for a in acks if a.get("ok"))
                result.log.append(
                    f"  trial {trial}: {len(events)} events, {how}, {len(acks)} acked"
                )
                daemon = start_daemon(directory, journeys=[CRASH_JOURNEY], settings=settings)
                before = len(result.problems)
                found = check_state(daemon, carts, result, f"trial {trial}")
                if len(result.problems) > before:
                    break
                for cart in fresh:  # from now on its state is fixed: no more events for it
                    cart.applied = found[(cart.user, cart.cart)]
        finally:
            daemon.kill()
    return result


def new_seed() -> int:
    """JOURNEYD_CRASH_SEED if set (to replay a failure), else a fresh random one."""
    fixed = os.environ.get("JOURNEYD_CRASH_SEED")
    return int(fixed) if fixed else random.SystemRandom().randrange(1 << 32)


@pytest.fixture
def slow_enabled(request: pytest.FixtureRequest) -> None:
    """`slow` tests run only when asked for: `pytest -m slow`."""
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with `pytest -m slow`")


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("session", range(4))
def test_kill_9_at_random_points_loses_no_acked_event(session: int) -> None:
    """kill -9 mid-stream: every acked event applied exactly once, every send delivered."""
    seed = new_seed()
    result = run_session(seed, trials=6)
    print(result.describe())
    assert result.trials == 6 and not result.problems, result.describe()


@pytest.mark.slow
@pytest.mark.usefixtures("slow_enabled")
@pytest.mark.parametrize("session", range(8))
def test_kill_9_at_random_points_many_trials(session: int) -> None:
    """The same crash check, 8 x 15 = 120 trials with larger streams (`pytest -m slow`)."""
    seed = new_seed()
    result = run_session(seed, trials=15, max_carts=20, max_events_per_cart=60)
    print(result.describe())
    assert result.trials == 15 and not result.problems, result.describe()


@pytest.mark.parametrize("fsync", ["always", "batch"])
def test_acked_events_survive_kill_9_right_after_the_acks(fsync: str) -> None:
    """Under fsync always and batch, everything acked just before kill -9 is recovered."""
    with short_dir() as directory:
        daemon = start_daemon(directory, journeys=[CRASH_JOURNEY], settings=crash_settings(fsync))
        try:
            events = [cart_event(f"u{c}", f"c{c}", n) for n in range(5) for c in range(40)]
            answers = daemon.send_events(events)
            daemon.proc.send_signal(signal.SIGKILL)  # no drain, no final snapshot
            daemon.proc.wait(30)
            assert [a["ok"] for a in answers] == [True] * len(events)
            daemon = start_daemon(directory, journeys=[CRASH_JOURNEY], settings=crash_settings())
            _summary, instances = inspect(daemon)
            assert sorted((i["identifier"], i["resets"]) for i in instances) == sorted(
                (f"c{c}", 4) for c in range(40)
            )
            assert all(i["context"][ALIAS]["n"] == 4 for i in instances)
            wanted = {message_id(i["instance"], "entered") for i in instances}
            assert not wait_for_message_ids(daemon, wanted, DELIVERY_WAIT_S)
        finally:
            daemon.kill()


def _snapshot_children(snapshots: Path) -> list[int]:
    """Pids of snapshot children writing right now (from their `.tmp-{seq}-{pid}` dirs)."""
    try:
        names = os.listdir(snapshots)
    except FileNotFoundError:
        return []
    return [int(n.rsplit("-", 1)[1]) for n in names if n.startswith(".tmp-")]


HOLD_ONLY: dict[str, Any] = {**CRASH_JOURNEY, "id": "hold", "steps": [CRASH_JOURNEY["steps"][1]]}


@pytest.mark.parametrize("child", ["killed too", "left running"])
def test_kill_9_while_a_snapshot_child_is_writing(child: str) -> None:
    """kill -9 during a forked snapshot (its child killed too, or left to finish): restart
    recovers every instance from the older snapshot plus the WAL."""
    users = 12_000
    settings = crash_settings("batch")
    with short_dir() as directory:
        daemon = start_daemon(directory, journeys=[HOLD_ONLY], settings=settings)
        snapshots = directory / "state" / "snapshots"
        try:
            for base in range(0, users, 3000):
                answers = daemon.send_events(
                    [cart_event(f"u{i}", f"c{i}", 0) for i in range(base, base + 3000)]
                )
                assert all(a["ok"] for a in answers)
                if base == 3000:  # an older snapshot, so the WAL tail after it matters
                    subprocess.run(
                        [*SNAPSHOT_CLI, str(directory / "journeyd.toml")],
                        check=True,
                        capture_output=True,
                        timeout=120,
                    )
            caught: list[int] = []
            for _attempt in range(5):  # a fast machine may finish before we look
                daemon.proc.send_signal(signal.SIGUSR1)
                deadline = time.monotonic() + 30
                while not caught and time.monotonic() < deadline:
                    caught = _snapshot_children(snapshots)
                    if not caught:
                        time.sleep(0.0005)
                if caught:
                    break
                daemon.wait_for_log("snapshot.written", timeout=60)
            assert caught, "never saw a snapshot being written"
            daemon.proc.send_signal(signal.SIGKILL)
            if child == "killed too":
                for pid in caught:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            daemon.proc.wait(30)
            daemon = start_daemon(directory, journeys=[HOLD_ONLY], settings=settings)
            done = daemon.wait_for_log("recovery.done")
            assert done["instances"] == users, done
            assert done["snapshot_seq"] is not None, done
            if child == "killed too":  # only the older snapshot is whole: the tail is replayed
                assert done["replayed"] > 0, done
            # A snapshot child outliving its parent must not leave the state unreadable.
            for pid in caught:
                deadline = time.monotonic() + 60
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
            _summary, instances = inspect(daemon)
            assert len(instances) == users
            assert {i["identifier"] for i in instances} == {f"c{i}" for i in range(users)}
            assert all(i["resets"] == 0 and i["step"] == "wait" for i in instances)
            assert daemon.stop() == 0
            assert len(inspect(daemon)[1]) == users
        finally:
            daemon.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, IndexError):
        return False


HOOK_JOURNEY: dict[str, Any] = {
    **CRASH_JOURNEY,
    "id": "hooked",
    "steps": [{**CRASH_JOURNEY["steps"][0], "destination": "hook"}, CRASH_JOURNEY["steps"][1]],
}


@pytest.fixture
def webhook() -> Iterator[HeldWebhook]:
    hook = HeldWebhook()
    yield hook
    hook.close()


def test_kill_9_during_slow_webhook_delivery_resends_with_the_same_message_id(
    webhook: HeldWebhook,
) -> None:
    """Deliveries in flight at kill -9 are re-sent after restart with the same messageIds,
    and once they succeed no restart sends them again."""
    carts = 12
    settings = {
        **crash_settings("batch"),
        "delivery": {"timeout": "120s"},
        "destinations": {"hook": {"type": "webhook", "url": webhook.url, "concurrency": 16}},
    }
    with short_dir() as directory:
        daemon = start_daemon(directory, journeys=[HOOK_JOURNEY], settings=settings)
        try:
            answers = daemon.send_events([cart_event(f"u{c}", f"c{c}", 0) for c in range(carts)])
            assert all(a["ok"] for a in answers)
            deadline = time.monotonic() + 30
            while len(webhook.bodies) < carts and time.monotonic() < deadline:
                time.sleep(0.02)
            first = [json.loads(b) for b in list(webhook.bodies)]
            assert len(first) == carts  # all held: none answered yet
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait(30)

            webhook.released.set()
            daemon = start_daemon(directory, journeys=[HOOK_JOURNEY], settings=settings)
            requeued = daemon.wait_for_log("outbox.requeued", timeout=30)
            assert requeued["deliveries"] == carts
            _summary, instances = inspect(daemon)
            wanted = {message_id(i["instance"], "entered") for i in instances}
            assert wanted == {b["messageId"] for b in first}
            deadline = time.monotonic() + DELIVERY_WAIT_S
            while time.monotonic() < deadline:
                again = [json.loads(b) for b in list(webhook.bodies)[carts:]]
                if {b["messageId"] for b in again} >= wanted:
                    break
                time.sleep(0.05)
            assert {b["messageId"] for b in again} >= wanted
            by_id = {b["messageId"]: b for b in first}
            for body in again:
                assert body == by_id[body["messageId"]]  # the same payload, byte for byte

            # The outcomes are logged: once settled, nothing is owed, and a restart is quiet.
            deadline = time.monotonic() + DELIVERY_WAIT_S
            while inspect(daemon)[0]["owed_deliveries"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert inspect(daemon)[0]["owed_deliveries"] == 0
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait(30)
            daemon = start_daemon(directory, journeys=[HOOK_JOURNEY], settings=settings)
            assert daemon.wait_for_log("recovery.done")["owed_deliveries"] == 0
        finally:
            daemon.kill()
