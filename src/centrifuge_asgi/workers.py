"""``serve --workers N``: N processes on one port, each a node of one cluster.

A Python process runs on one core; Centrifugo's Go process uses them all. This supervisor
binds the listening sockets itself and starts N worker processes
(``python -m centrifuge_asgi serve ... --worker-fds M[,I]``) that inherit them and accept
on them, so every worker serves the same port and the kernel hands each new connection to
one of them. Each worker is an ordinary node over the configured broker (Redis or NATS):
a publication reaches subscribers on every worker as it reaches other machines. The
in-memory engine cannot be shared, so :func:`check_engine` refuses it.

The supervisor owns the sockets, so they stay open while workers come and go: a
connection that arrives while a worker restarts waits in the backlog for another one,
never refused. What it does with workers:

- start: one after another; each reports ready through a socket pair once its node and
  listeners run. A worker that exits before it is ready stops the server (status 1): the
  same failure would repeat (an error while importing or starting).
- crash: a worker that was ready and exits on its own is logged and restarted; more than
  :data:`MAX_RESTARTS` crashes in :data:`RESTART_WINDOW` seconds stop the server.
- SIGTERM or SIGINT: every worker gets SIGTERM and drains (clients get 3001 "shutdown",
  ``/health`` answers 503 until the internal listener closes); the supervisor waits for
  all, at most ``shutdown.timeout`` plus a margin, kills what is left and exits with 0, or
  1 when a worker did not stop cleanly.
- SIGHUP: rolling restart, one worker at a time: its replacement is started and ready
  before the old one retires (SIGUSR1: it stops accepting and disconnects its clients
  with 3001; they reconnect to the other workers and recover from history).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import Process, TaskGroup, TaskStatus

from .config import Config
from .errors import ConfigError

log = logging.getLogger("centrifuge_asgi.workers")

#: a ready worker may crash this many times within :data:`RESTART_WINDOW` seconds
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: how long a new worker may take to report ready
START_TIMEOUT = 60.0
#: metrics.MULTIPROCESS_ENV (not imported: prometheus_client is an optional extra)
METRICS_DIR_ENV = "CENTRIFUGE_ASGI_METRICS_DIR"
#: SIGUSR1 asks one worker to retire (rolling restart); SIGTERM stops it
RETIRE_SIGNAL = getattr(signal, "SIGUSR1", signal.SIGTERM)  # POSIX; SIGTERM elsewhere


def worker_count(config: Config) -> int:
    """``http_server.workers``: 0 means 1; a negative number is a config error."""
    count = config.http_server.workers
    if count < 0:
        raise ConfigError(f"http_server.workers: {count} is not a number of processes")
    return max(1, count)


def check_engine(config: Config, count: int) -> None:
    """Refuse several workers over an engine that lives in one process's memory."""
    broker = config.broker.type if config.broker.enabled else config.engine.type
    if count > 1 and broker == "memory":
        raise ConfigError(
            f"http_server.workers is {count}, but the memory engine keeps channels, history "
            "and presence inside one process, so the workers would not see each other's "
            "publications: configure Redis (engine.type: redis) or a Redis or NATS broker "
            "(broker.enabled with broker.type: redis or nats), or run one worker"
        )
    if count > 1 and config.presence_manager.enabled is False and broker == "nats":
        log.warning(
            "broker.type nats with %d workers: presence stays in each worker's memory "
            "(configure presence_manager with Redis to share it)",
            count,
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket that worker processes inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class WorkerFailed(Exception):
    """A worker that cannot be (re)started: the server stops."""


@dataclass
class Supervisor:
    """Runs ``count`` workers of ``command`` on ``sockets`` (see the module docstring)."""

    command: Sequence[str]  # the worker's command line, without the worker flags
    sockets: Sequence[socket.socket]  # main listener first, then the internal one if any
    count: int
    shutdown_timeout: float
    workers: dict[int, Process] = field(default_factory=dict)
    retiring: set[Process] = field(default_factory=set)
    started: list[Process] = field(default_factory=list)  # every worker process, ever
    crashes: list[float] = field(default_factory=list)
    stopping: bool = False
    failure: str = ""
    unclean: int = 0
    _restart_requested: bool = False

    def run(self) -> int:
        """Start the workers and supervise them until a stop signal or a failure."""
        # the workers' Prometheus samples meet in one directory (metrics.py), so a scrape
        # of the shared port answers with the totals of every worker
        with tempfile.TemporaryDirectory(prefix="centrifuge-asgi-metrics-") as metrics_dir:
            os.environ.setdefault(METRICS_DIR_ENV, metrics_dir)
            return anyio.run(self._run)

    async def _run(self) -> int:
        stop_signals = (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", signal.SIGINT))
        with anyio.open_signal_receiver(*stop_signals) as signals:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._signals, signals, tg)
                try:
                    for index in range(1, self.count + 1):
                        if self.stopping:
                            break
                        await tg.start(self._slot, index, tg)
                except WorkerFailed as exc:
                    await self._fail(str(exc), tg)
                else:
                    log.info("%d workers ready", self.count)
            await self._reap()
        if self.failure:
            log.critical("%s: stopping the server", self.failure)
            return 1
        return 1 if self.unclean else 0

    # ----------------------------------------------------------------- workers

    async def _spawn(self, index: int) -> Process:
        """Start worker ``index`` and wait until it reports ready (WorkerFailed if not)."""
        ours, theirs = socket.socketpair()
        fds = [sock.fileno() for sock in self.sockets]
        flags = ["--worker-fds", ",".join(map(str, fds))]
        flags += ["--worker-ready-fd", str(theirs.fileno()), "--worker-index", str(index)]
        with ours:
            try:
                process = await anyio.open_process(
                    [*self.command, *flags],
                    stdin=None,
                    stdout=None,
                    stderr=None,
                    pass_fds=[*fds, theirs.fileno()],
                    start_new_session=True,  # a terminal's Ctrl+C reaches only the supervisor
                )
            finally:
                theirs.close()
            self.started = [p for p in self.started if p.returncode is None] + [process]
            ready = b""
            with anyio.move_on_after(START_TIMEOUT):
                await anyio.wait_readable(ours)
                ready = ours.recv(1)  # b"" when the worker closed it: it exited
        if ready == b"R":
            log.info("worker %d ready (pid %d)", index, process.pid)
            return process
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with anyio.CancelScope(shield=True):
            status = await process.wait()
        if not ready:
            raise WorkerFailed(f"worker {index} did not start within {START_TIMEOUT:g} s")
        raise WorkerFailed(f"worker {index} exited with status {status} before it was ready")

    async def _slot(
        self,
        index: int,
        tg: TaskGroup,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run worker ``index``, restarting it after a crash, until the server stops."""
        process = await self._spawn(index)
        self.workers[index] = process
        task_status.started()
        await self._watch(index, process, tg)

    async def _watch(self, index: int, process: Process, tg: TaskGroup) -> None:
        while True:
            status = await process.wait()
            if process in self.retiring:  # replaced by a rolling restart
                self.retiring.discard(process)
                if status != 0:
                    log.warning("retired worker %d exited with status %d", index, status)
                return
            if self.stopping:
                if status != 0:
                    self.unclean += 1
                    log.warning("worker %d exited with status %d", index, status)
                return
            now = time.monotonic()
            self.crashes = [t for t in self.crashes if now - t < RESTART_WINDOW] + [now]
            if len(self.crashes) > MAX_RESTARTS:
                await self._fail(
                    f"worker {index} exited with status {status}; more than {MAX_RESTARTS} "
                    f"crashes in {RESTART_WINDOW:g} s",
                    tg,
                )
                return
            log.error(
                "worker %d (pid %d) exited with status %d: restarting", index, process.pid, status
            )
            try:
                process = await self._spawn(index)
            except WorkerFailed as exc:
                await self._fail(str(exc), tg)
                return
            self.workers[index] = process

    async def _rolling_restart(self, tg: TaskGroup) -> None:
        """Replace every worker, one at a time, the new one ready before the old retires."""
        log.info("rolling restart of %d workers", self.count)
        for index in sorted(self.workers):
            if self.stopping:
                return
            old = self.workers[index]
            try:
                new = await self._spawn(index)
            except WorkerFailed as exc:
                await self._fail(f"rolling restart: {exc}", tg)
                return
            self.retiring.add(old)
            self.workers[index] = new
            tg.start_soon(self._watch, index, new, tg)
            with contextlib.suppress(ProcessLookupError):
                old.send_signal(RETIRE_SIGNAL)
            with anyio.move_on_after(self.shutdown_timeout + 5):
                await old.wait()
            if old.returncode is None:
                old.kill()
        log.info("rolling restart done")

    # ------------------------------------------------------------------- stop

    async def _signals(self, signals: Any, tg: TaskGroup) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if not self.stopping and not self._restart_requested:
                    self._restart_requested = True
                    tg.start_soon(self._restart_then_clear, tg)
                continue
            if self.stopping:  # a second SIGINT/SIGTERM: do not wait any longer
                log.warning("second stop signal: killing the workers")
                self._signal_all(signal.SIGKILL)
                continue
            log.info("%s: draining %d workers", signal.Signals(signum).name, len(self.workers))
            tg.start_soon(self._stop, tg)

    async def _restart_then_clear(self, tg: TaskGroup) -> None:
        try:
            await self._rolling_restart(tg)
        finally:
            self._restart_requested = False

    def _signal_all(self, signum: signal.Signals) -> None:
        for process in [*self.workers.values(), *self.retiring]:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    async def _fail(self, message: str, tg: TaskGroup) -> None:
        if not self.failure:
            self.failure = message
        await self._stop(tg)

    async def _reap(self) -> None:
        """Stop any worker still running once the task group has ended: one that was
        starting or restarting when the stop began (SIGTERM, then SIGKILL after
        ``shutdown.timeout`` plus a margin)."""
        with anyio.CancelScope(shield=True):
            left = [p for p in self.started if p.returncode is None]
            for process in left:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
            with anyio.move_on_after(self.shutdown_timeout + 5):
                for process in left:
                    await process.wait()
            for process in left:
                if process.returncode is None:
                    self.unclean += 1
                    process.kill()
                    await process.wait()

    async def _stop(self, tg: TaskGroup) -> None:
        """SIGTERM every worker, wait (bounded) for all, then end the task group."""
        if self.stopping:
            return
        self.stopping = True
        with anyio.CancelScope(shield=True):
            self._signal_all(signal.SIGTERM)
            with anyio.move_on_after(self.shutdown_timeout + 5):
                for process in [*self.workers.values(), *self.retiring]:
                    await process.wait()
            for process in [*self.workers.values(), *self.retiring]:
                if process.returncode is None:
                    self.unclean += 1
                    process.kill()
                    await process.wait()
        tg.cancel_scope.cancel()


def worker_command(argv: Sequence[str]) -> list[str]:
    """The command that runs one worker: this interpreter, ``-m centrifuge_asgi`` and
    ``argv`` (the supervisor's ``serve`` arguments)."""
    return [sys.executable, "-m", "centrifuge_asgi", *argv]


def parent_gone(parent: int) -> bool:
    """True once the supervisor that started this worker has exited."""
    return os.getppid() != parent
