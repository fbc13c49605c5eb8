"""``centrifuge-asgi serve`` as a real process on a free loopback port, for the CLI tests.

:class:`ServeProcesses` starts them and kills whatever is still running at the end of a
test; :func:`free_port` and :class:`Served` are shared by the tests that use it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

CLI = [sys.executable, "-m", "centrifuge_asgi"]
START_TIMEOUT = 15.0


def with_file_limit(nofile: int) -> list[str]:
    """A command prefix that sets RLIMIT_NOFILE to ``nofile`` and execs the rest."""
    code = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile})); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", code]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """One running ``serve``: its process and port."""

    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def output(self) -> str:
        """Everything it printed (killing it first if it still runs)."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.communicate(timeout=10)[0]


def terminate(proc: subprocess.Popen[str], within: float) -> str:
    """SIGTERM ``proc`` and return everything it printed (SIGKILL after ``within`` s)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=within)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


class ServeProcesses:
    """Starts ``serve`` processes and waits until ``/health`` answers (health must be on)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(
        self,
        config: Path | None,
        *extra: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        prefix: Sequence[str] = (),
    ) -> Served:
        """``serve`` with ``config`` (None: no ``-c``, so ``config.json`` in ``cwd`` if any);
        ``prefix`` is a command that execs the rest (e.g. :func:`with_file_limit`)."""
        port = free_port()
        file = ["-c", str(config)] if config is not None else []
        proc = subprocess.Popen(
            [*prefix, *CLI, "serve", *file, "-a", "127.0.0.1", "-p", str(port), *extra],
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                return Served(proc, port)
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    out = proc.stdout.read() if proc.stdout else ""
                    raise AssertionError(f"serve did not start:\n{out}") from None
                time.sleep(0.1)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
