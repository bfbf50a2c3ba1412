"""`journeyd run`: every long-lived task under one root nursery.

    listeners (unix, http) -> Inbound (bounded) -> engine loop -> DeliveryPool (bounded)
                                                   timer loop -^

Shutdown (SIGTERM/SIGINT) drains in order: stop reading input, let the engine finish what
was queued and answer it, stop the timers, let the pool finish or give up, exit 0.
SIGHUP reloads the config: a bad one is logged and the running one stays.
"""

from __future__ import annotations

import gc
import signal
import socket as stdlib_socket
import time
from collections import Counter
from typing import Any

import hypercorn
import hypercorn.trio
import trio

from journeyd import __version__, log
from journeyd.config import Config, load
from journeyd.dedup import DedupWindow
from journeyd.delivery import DeliveryPool, DestinationConfigError
from journeyd.durations import parse_duration
from journeyd.engine import Delivery, Dropped, Engine
from journeyd.errors import ConfigError, JourneydError
from journeyd.ingest.http import SegmentApp
from journeyd.ingest.inbound import Inbound
from journeyd.ingest.unix import bind_unix, serve_unix
from journeyd.log import RateLimitedLog
from journeyd.systemd import Notifier, listen_fds, watchdog_loop
from journeyd.validate import parse_listen_address

_log = log.get("journeyd.daemon")
ENGINE_BATCH = 1024
DRAIN_TIMEOUT_S = 20.0
STATUS_EVERY_S = 5.0


class Daemon:
    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        settings = config.settings
        self.notifier = notifier or Notifier()
        self.engine = Engine(config.journeys, settings)
        self.inbound = Inbound(settings.ingest.queue)
        self.dedup = DedupWindow(
            parse_duration(settings.ingest.dedup_window), settings.ingest.dedup_max_ids
        )
        state_dir = config.resolve(settings.daemon.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir
        self.pool = DeliveryPool(
            settings.destinations,
            settings.delivery,
            resolve_path=config.resolve,
            dead_letter_path=state_dir / "dead-letters.jsonl",
        )
        self.http_app = SegmentApp(
            self.inbound, settings.daemon.write_keys, settings.ingest, lambda: self.ready
        )
        self.ready = False
        self.counts: Counter[str] = Counter()
        self._last_now = 0.0
        self._timer_wake = trio.Event()
        self._stop = trio.Event()
        self._stop_accepting = trio.Event()  # both listeners stop taking input
        self._engine_done = trio.Event()
        self._pool_done = trio.Event()
        self._drop_log = RateLimitedLog()

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        gc.freeze()  # what startup built is long-lived: keep it out of every collection
        sockets = self._bind()
        async with trio.open_nursery() as root:
            root.start_soon(self._signals)
            await root.start(self._run_pool)
            root.start_soon(self._engine_loop)
            timer_scope = trio.CancelScope()
            root.start_soon(self._timer_loop, timer_scope)
            listeners = await root.start(self._listeners, sockets)
            root.start_soon(watchdog_loop, self.notifier)
            root.start_soon(self._status_loop)
            self.ready = True
            self.notifier.ready(self._status_text())
            _log.info(
                "daemon.ready",
                version=__version__,
                journeys=[j.id for j in self.config.journeys],
                **listeners,
            )
            await self._stop.wait()

            _log.info("daemon.draining")
            self.notifier.stopping()
            self.ready = False
            self._stop_accepting.set()
            with trio.move_on_after(DRAIN_TIMEOUT_S):
                await self._listeners_done.wait()
            self.inbound.close()
            await self._engine_done.wait()
            timer_scope.cancel()
            self.pool.close()
            with trio.move_on_after(DRAIN_TIMEOUT_S) as scope:
                await self._pool_done.wait()
            if scope.cancelled_caught:
                _log.warning("daemon.drain_timeout", pending=dict(self.pool.stats))
            root.cancel_scope.cancel()
        _log.info("daemon.stopped", **self.counts)
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
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload()
                else:
                    _log.info("daemon.signal", signal=signal.Signals(signum).name)
                    self._stop.set()

    def reload(self) -> None:
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
        self.engine.load(config.journeys, new)
        self.http_app.reconfigure(new.daemon.write_keys, new.ingest)
        self.config = config
        _log.info(
            "config.reloaded",
            journeys={j.id: self.engine.journey(j.id).version for j in config.journeys},  # type: ignore[union-attr]
        )
        self.notifier.ready(self._status_text())

    # --- the engine side -----------------------------------------------------------------

    async def _engine_loop(self) -> None:
        receive = self.inbound.receive
        engine = self.engine
        try:
            async for first in receive:
                batch = [first]
                while len(batch) < ENGINE_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                before = engine.next_deadline()
                for event, received, scope, ticket, index in batch:
                    message_id = event.messageId or ""
                    if self.dedup.seen(scope, message_id, received):
                        self.counts["duplicates"] += 1
                        ticket.accepted(index, message_id)
                        continue
                    now = received if received > self._last_now else self._last_now
                    self._last_now = now
                    try:
                        effects = engine.handle(event, now)
                    except Exception:
                        _log.exception("engine.failed", message_id=message_id)
                        self.dedup.forget(scope, message_id)  # a retry must run, not be skipped
                        ticket.rejected(index, "internal error; the event was not applied")
                        continue
                    self.counts["events"] += 1
                    ticket.accepted(index, message_id)
                    if effects:
                        await self._dispatch(effects)
                after = engine.next_deadline()
                if after is not None and (before is None or after < before):
                    self._timer_wake.set()
        finally:
            self._engine_done.set()

    async def _timer_loop(self, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                deadline = self.engine.next_deadline()
                wait = 1.0 if deadline is None else deadline - time.time()
                if wait > 0:
                    self._timer_wake = trio.Event()
                    # Re-check at least every second: the wall clock can jump.
                    with trio.move_on_after(min(wait, 1.0)):
                        await self._timer_wake.wait()
                    continue
                effects = self.engine.fire_due(max(time.time(), self._last_now))
                if effects:
                    await self._dispatch(effects)

    async def _dispatch(self, effects: list[Any]) -> None:
        for effect in effects:
            kind = type(effect)
            if kind is Delivery:
                await self.pool.submit(effect)
            elif kind is Dropped:
                suppressed = self._drop_log.allow()
                if suppressed is not None:
                    _log.warning(
                        "engine.dropped",
                        reason=effect.reason,
                        user=effect.user,
                        journey=effect.journey,
                        event_name=effect.event,
                        suppressed_since_last=suppressed,
                    )

    # --- status --------------------------------------------------------------------------

    def _status_text(self) -> str:
        stats = self.pool.stats
        return (
            f"{self.engine.instance_count()} instances, {self.counts['events']} events, "
            f"{self.inbound.capacity - self.inbound.free} queued, "
            f"{stats.get('delivered', 0)} delivered, {stats.get('dead_lettered', 0)} dead-lettered"
        )

    async def _status_loop(self) -> None:
        while True:
            await trio.sleep(STATUS_EVERY_S)
            self.notifier.status(self._status_text())


def run(config: Config) -> int:
    """Run the daemon until SIGTERM; the return value is the process exit code."""
    daemon = Daemon(config)
    _log.info("daemon.starting", version=__version__, config=str(config.path))
    return trio.run(daemon.run)
