"""`journeyd run`: every long-lived task under one root nursery.

    listeners (unix, http) ─> Inbound (bounded) ─> Pipeline (WAL, engine) ─> DeliveryPool
    timer loop ─(ticks)──────^                                     outcomes ─┘

Start-up recovers first (snapshot + WAL replay), then listens, then says READY=1. Shutdown
(SIGTERM/SIGINT) drains in order: stop reading input, apply and answer everything queued,
let in-flight deliveries finish (what does not stays in the outbox), write a final
snapshot, exit 0. SIGHUP reloads the config: a bad one is logged and the running one
stays. SIGUSR1 asks for a snapshot. An fsync failure stops the daemon with exit 74.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket as stdlib_socket
import time
from typing import Any

import hypercorn
import hypercorn.trio
import trio

from journeyd import __version__, log
from journeyd.config import Config, load
from journeyd.dedup import DedupWindow
from journeyd.delivery import DeliveryPool, DestinationConfigError, PoolClosed
from journeyd.durations import parse_duration
from journeyd.engine import Delivery
from journeyd.errors import ConfigError, DurabilityLost, JourneydError, StorageError
from journeyd.ingest.http import SegmentApp
from journeyd.ingest.inbound import Inbound, Reload, Tick
from journeyd.ingest.unix import bind_unix, serve_unix
from journeyd.pipeline import Pipeline
from journeyd.store.records import ConfigRecord
from journeyd.store.recovery import config_differs, recover
from journeyd.store.redrive import pending_redrives
from journeyd.store.wal import WalWriter
from journeyd.systemd import Notifier, listen_fds, watchdog_loop
from journeyd.validate import parse_listen_address

_log = log.get("journeyd.daemon")
DRAIN_TIMEOUT_S = 20.0
STATUS_EVERY_S = 5.0
EXIT_STORAGE = 74  # EX_IOERR: fsync failed; systemd restarts us and recovery replays the WAL


class Daemon:
    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        settings = config.settings
        self.notifier = notifier or Notifier()
        self.inbound = Inbound(settings.ingest.queue)
        state_dir = config.resolve(settings.daemon.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir
        self.pool = DeliveryPool(
            settings.destinations,
            settings.delivery,
            resolve_path=config.resolve,
            dead_letter_path=state_dir / "dead-letters.jsonl",
            spill_dir=state_dir / "spill",
            on_outcome=self._on_outcome,
            on_spilled=self._on_spilled,
            on_unspilled=self._on_unspilled,
        )
        self.http_app = SegmentApp(
            self.inbound, settings.daemon.write_keys, settings.ingest, lambda: self.ready
        )
        self.pipeline: Pipeline | None = None
        self.ready = False
        self._timer_wake = trio.Event()
        self._stop = trio.Event()
        self._stop_accepting = trio.Event()  # both listeners stop taking input
        self._pipeline_done = trio.Event()
        self._pool_done = trio.Event()
        self._redrive_wanted = trio.Event()

    # --- lifecycle -----------------------------------------------------------------------

    def _recover(self) -> Pipeline:
        """Rebuild the engine from disk and open the WAL for appending."""
        settings = self.config.settings
        ingest = settings.ingest
        dedup = DedupWindow(parse_duration(ingest.dedup_window), ingest.dedup_max_ids)
        journeys = self.config.journeys
        self.notifier.status("recovering")
        found = recover(self.state_dir, settings, journeys, dedup)
        _log.info(
            "recovery.done",
            snapshot_seq=found.snapshot_seq,
            replayed=found.replayed,
            last_seq=found.last_seq,
            instances=found.engine.instance_count(),
            owed_deliveries=len(found.outbox),
            seconds=round(found.seconds, 3),
            **found.replay_counts,
        )
        daemon = settings.daemon
        wal = WalWriter.open(
            self.state_dir / "wal",
            next_seq=found.last_seq + 1,
            segment_bytes=daemon.wal_segment_mb << 20,
        )
        if config_differs(found.engine, settings, journeys):
            wal.append([ConfigRecord(settings, list(journeys))])
            found.engine.load(journeys, settings)
        self._owed = found.outbox.pending()
        if found.spill is not None:
            # Deliveries the outbox owes again are re-queued below: any copy of them still
            # in a spill queue must not go out twice; nor may those settled since.
            owed = {d.message_id for d in self._owed}
            self.pool.restore(found.spill, skip_message_ids=found.settled_after_snapshot | owed)
        return Pipeline(
            engine=found.engine,
            dedup=dedup,
            outbox=found.outbox,
            wal=wal,
            wal_dir=self.state_dir / "wal",
            snapshots_dir=self.state_dir / "snapshots",
            fsync=daemon.fsync,
            pool=self.pool,
            inbound=self.inbound,
            snapshot_every_s=parse_duration(daemon.snapshot_every),
            snapshot_after_records=daemon.snapshot_after_records,
            last_now=found.last_now,
            on_applied=self._poke_timers,
        )

    async def run(self) -> int:
        lost: list[BaseException] = []
        try:
            return await self._run()
        except* DurabilityLost as group:
            lost.extend(group.exceptions)
        self.notifier.stopping("fsync failed")
        _log.critical("daemon.storage_failed", error=str(lost[0]))
        return EXIT_STORAGE

    async def _run(self) -> int:
        pipeline = self.pipeline = self._recover()
        gc.freeze()  # what recovery built is long-lived: keep it out of every collection
        sockets = self._bind()
        pid_file = self.state_dir / "journeyd.pid"
        pid_file.write_text(f"{os.getpid()}\n")
        try:
            async with trio.open_nursery() as root:
                root.start_soon(self._signals)
                await root.start(self._run_pool)
                await root.start(self._run_pipeline)
                root.start_soon(pipeline.reap_snapshots)
                timer_scope = trio.CancelScope()
                root.start_soon(self._timer_loop, timer_scope)
                if self._owed:
                    _log.info("outbox.requeued", deliveries=len(self._owed))
                    root.start_soon(pipeline.requeue, self._owed)
                root.start_soon(self._redrive_loop)
                listeners = await root.start(self._listeners, sockets)
                root.start_soon(watchdog_loop, self.notifier)
                root.start_soon(self._status_loop)
                self.ready = True
                self.notifier.ready(self._status_text())
                _log.info(
                    "daemon.ready",
                    version=__version__,
                    journeys=[j.id for j in self.config.journeys],
                    instances=pipeline.engine.instance_count(),
                    fsync=self.config.settings.daemon.fsync,
                    **listeners,
                )
                await self._stop.wait()

                _log.info("daemon.draining")
                self.notifier.stopping()
                self.ready = False
                self._stop_accepting.set()
                with trio.move_on_after(DRAIN_TIMEOUT_S):
                    await self._listeners_done.wait()
                timer_scope.cancel()
                self.inbound.close()
                with trio.move_on_after(DRAIN_TIMEOUT_S):
                    await self._pipeline_done.wait()
                self.pool.close()  # also frees an engine effect waiting on a full pool
                await self._pipeline_done.wait()
                with trio.move_on_after(DRAIN_TIMEOUT_S) as scope:
                    await self._pool_done.wait()
                if scope.cancelled_caught:
                    _log.warning("daemon.drain_timeout", pending=dict(self.pool.stats))
                root.cancel_scope.cancel()
            pipeline.final_snapshot()
            pipeline.wal.close()
        finally:
            with contextlib.suppress(OSError):
                pid_file.unlink()
        _log.info(
            "daemon.stopped",
            longest_snapshot_pause_ms=round(pipeline.longest_pause_s * 1000, 2),
            **pipeline.counts,
        )
        return 0

    def _bind(self) -> dict[str, stdlib_socket.socket]:
        """Sockets handed over by systemd, or else those the config asks for.

        When systemd activated us, only its sockets are served: a masked socket unit then
        really turns that listener off, and the socket file it owns is never touched.
        """
        daemon = self.config.settings.daemon
        inherited = listen_fds()
        if inherited:
            sockets = {
                name: found[0] for name in ("unix", "http") if (found := inherited.get(name))
            }
            unknown = sorted(set(inherited) - {"unix", "http"})
            if unknown:
                _log.warning("systemd.unknown_sockets", names=unknown, expected=["unix", "http"])
            return sockets
        sockets = {}
        if daemon.socket:
            sockets["unix"] = bind_unix(self.config.resolve(daemon.socket))
        if daemon.http:
            host, port = parse_listen_address(daemon.http)
            family = stdlib_socket.AF_INET6 if ":" in host else stdlib_socket.AF_INET
            sock = stdlib_socket.socket(family, stdlib_socket.SOCK_STREAM)
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                raise JourneydError(f"cannot listen on {daemon.http}: {exc.strerror}") from None
            sock.listen(1024)
            sockets["http"] = sock
        return sockets

    async def _listeners(
        self,
        sockets: dict[str, stdlib_socket.socket],
        *,
        task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._listeners_done = trio.Event()
        where: dict[str, Any] = {}
        try:
            async with trio.open_nursery() as nursery:
                unix = sockets.get("unix")
                if unix is not None:
                    max_line = self.config.settings.ingest.max_event_bytes
                    await nursery.start(
                        serve_unix, unix, self.inbound, max_line, self._stop_accepting
                    )
                    where["socket"] = unix.getsockname()
                http = sockets.get("http")
                if http is not None:
                    binds = await nursery.start(self._serve_http, http)
                    where["http"] = binds[0] if binds else None
                task_status.started(where)
        finally:
            self._listeners_done.set()

    async def _serve_http(
        self,
        sock: stdlib_socket.socket,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        config = hypercorn.Config()
        config.bind = [f"fd://{sock.fileno()}"]
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = DRAIN_TIMEOUT_S / 2
        config.keep_alive_timeout = 75  # longer than SDK connection pools keep sockets idle
        await hypercorn.trio.serve(
            self.http_app,  # type: ignore[arg-type]
            config,
            shutdown_trigger=self._stop_accepting.wait,
            task_status=task_status,
        )

    async def _run_pool(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self.pool.run(task_status=task_status)
        finally:
            self._pool_done.set()

    async def _signals(self) -> None:
        wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
        with trio.open_signal_receiver(*wanted) as signals:
            async for signum in signals:
                if self._stop.is_set() and signum in (
                    signal.SIGHUP,
                    signal.SIGUSR1,
                    signal.SIGUSR2,
                ):
                    _log.info("daemon.signal_ignored", signal=signal.Signals(signum).name)
                    continue  # draining: no reloads, snapshots or redrives any more
                if signum == signal.SIGHUP:
                    await self.reload()
                elif signum == signal.SIGUSR2:
                    self._redrive_wanted.set()
                elif signum == signal.SIGUSR1:
                    _log.info("snapshot.requested")
                    if self.pipeline is not None:
                        self.pipeline.snapshot_requested = True
                    self._timer_wake.set()
                else:
                    _log.info("daemon.signal", signal=signal.Signals(signum).name)
                    self._stop.set()

    async def reload(self) -> None:
        """Re-read the config; running instances finish on the journey version they began."""
        self.notifier.reloading()
        try:
            config = load(self.config.path)
        except ConfigError as exc:
            for problem in exc.problems:
                _log.error("config.reload_rejected", problem=str(problem))
            _log.error("config.reload_rejected", problems=len(exc.problems), kept="running config")
            self.notifier.ready(self._status_text())
            return
        old = self.config.settings
        new = config.settings
        for field in ("state_dir", "socket", "http", "fsync"):
            if getattr(old.daemon, field) != getattr(new.daemon, field):
                _log.warning("config.needs_restart", setting=f"daemon.{field}")
        try:
            self.pool.reconfigure(new.destinations)  # first: it is the step that can fail
        except DestinationConfigError as exc:
            _log.error("config.reload_rejected", problem=str(exc), kept="running config")
            self.notifier.ready(self._status_text())
            return
        # The engine takes the new journeys at this point of the log, so a replay does too.
        done = trio.Event()
        applied: list[bool] = []
        try:
            await self.inbound.put(Reload(new, config.journeys, done, applied))
        except trio.ClosedResourceError:
            return  # shutting down
        await done.wait()
        if applied != [True]:
            _log.error("config.reload_rejected", problem="the WAL cannot be written (disk full?)")
            self.pool.reconfigure(self.config.settings.destinations)  # back to the old ones
            self.notifier.ready(self._status_text())
            return
        self.http_app.reconfigure(new.daemon.write_keys, new.ingest)
        self.config = config
        assert self.pipeline is not None
        engine = self.pipeline.engine
        _log.info(
            "config.reloaded",
            journeys={j.id: j.version for j in engine.live_journeys() if engine.journey(j.id) is j},
        )
        self.notifier.ready(self._status_text())

    # --- the engine side -----------------------------------------------------------------

    async def _run_pipeline(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        assert self.pipeline is not None
        try:
            await self.pipeline.run(task_status=task_status)
        finally:
            self._pipeline_done.set()

    async def _timer_loop(self, scope: trio.CancelScope) -> None:
        """Ask the pipeline to fire timers when the earliest is due (and to snapshot when
        one is owed while no events arrive). Ticks go through the WAL like events."""
        assert self.pipeline is not None
        engine = self.pipeline.engine
        with scope:
            while True:
                deadline = engine.next_deadline()
                wait = 1.0 if deadline is None else deadline - time.time()
                if wait > 0 and not self.pipeline.snapshot_wanted():
                    self._timer_wake = trio.Event()
                    # Re-check at least every second: the wall clock can jump.
                    with trio.move_on_after(min(wait, 1.0)):
                        await self._timer_wake.wait()
                    continue
                done = trio.Event()
                await self.inbound.put(Tick(time.time(), done))
                await done.wait()

    async def _redrive_loop(self) -> None:
        """Pick up `journeyd dlq redrive` files: at start, then on each SIGUSR2."""
        assert self.pipeline is not None
        while True:
            for path, deliveries in pending_redrives(self.state_dir):
                try:
                    await self.pipeline.redrive(deliveries)
                except DurabilityLost:
                    raise
                except StorageError as exc:
                    # The file stays; the next SIGUSR2 or start tries again.
                    _log.error("dlq.redrive_failed", file=path.name, error=str(exc))
                    break
                except PoolClosed:
                    return  # shutting down: the intents are logged, the outbox owes them
                path.unlink()
                _log.info("dlq.redriven", deliveries=len(deliveries), file=path.name)
            await self._redrive_wanted.wait()
            self._redrive_wanted = trio.Event()

    def _poke_timers(self) -> None:
        """A batch was applied: the earliest deadline may have moved."""
        self._timer_wake.set()

    def _on_spilled(self, delivery: Delivery) -> None:
        """The delivery now waits in a spill file on disk: the outbox can drop it."""
        if self.pipeline is not None:
            self.pipeline.outbox.done(delivery.message_id)

    def _on_unspilled(self, delivery: Delivery) -> None:
        """Back in memory from its spill file, and still owed."""
        if self.pipeline is not None:
            self.pipeline.outbox.add(delivery)

    def _on_outcome(self, delivery: Delivery, outcome: str, attempts: int) -> None:
        if self.pipeline is not None:
            self.pipeline.record_outcome(delivery, outcome, attempts)

    # --- status --------------------------------------------------------------------------

    def _status_text(self) -> str:
        stats = self.pool.stats
        pipeline = self.pipeline
        instances = pipeline.engine.instance_count() if pipeline is not None else 0
        events = pipeline.counts["events"] if pipeline is not None else 0
        return (
            f"{instances} instances, {events} events, "
            f"{self.inbound.capacity - self.inbound.free} queued, "
            f"{stats.get('delivered', 0)} delivered, {stats.get('dead_lettered', 0)} dead-lettered"
        )

    async def _status_loop(self) -> None:
        while True:
            await trio.sleep(STATUS_EVERY_S)
            self.notifier.status(self._status_text())


def run(config: Config) -> int:
    """Run the daemon until SIGTERM; the return value is the process exit code."""
    # A file-size limit (RLIMIT_FSIZE) must read as a failed write we can refuse and
    # recover from, not as a signal that kills the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    daemon = Daemon(config)
    _log.info("daemon.starting", version=__version__, config=str(config.path))
    return trio.run(daemon.run)
