"""Shared pytest fixtures: anyio backend, live uvicorn servers, and Node scenario runner.

- ``live_server(app, **config) -> LiveServer``: uvicorn on 127.0.0.1 (free port) in a thread.
- ``run_js(script, *args, env=None, timeout=30) -> dict``: run ``tests/js/scenarios/<script>``
  with Node and return the JSON of its ``RESULT`` line (see ``tests/js/lib.mjs``).
- ``arun_js``: the same, awaitable (runs in a worker thread so the test's event loop keeps going).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
import pytest
import uvicorn

from tests.conditions import CI, unavailable

T = TypeVar("T")

TESTS_DIR = Path(__file__).resolve().parent
JS_DIR = TESTS_DIR / "js"
SCENARIOS_DIR = JS_DIR / "scenarios"
RESULT_PREFIX = "RESULT "


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only."""
    return "asyncio"


# --------------------------------------------------------------------------- live server


class LiveServer:
    """An ASGI app served by uvicorn on 127.0.0.1 from a background thread with its own loop.

    ``ws="auto"`` is used (uvicorn >= 0.35 resolves it to the websockets sans-I/O
    implementation; older versions to the legacy websockets one). Logs are not reconfigured
    (``log_config=None``) so uvicorn errors propagate to pytest's log capture.
    """

    def __init__(
        self,
        app: Any,
        *,
        startup_timeout: float = 10.0,
        server_class: Callable[[uvicorn.Config], uvicorn.Server] = uvicorn.Server,
        **config: Any,
    ) -> None:
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "lifespan": "on",
            "log_level": "warning",
            "log_config": None,
            "ws": "auto",
            "timeout_graceful_shutdown": 2,
        }
        options.update(config)
        self.server = server_class(uvicorn.Config(app, **options))
        self.startup_timeout = startup_timeout
        self.port = 0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def http_url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        """Absolute http URL for ``path``."""
        return self.http_url + _leading_slash(path)

    def ws_url(self, path: str = "/") -> str:
        """Absolute ws URL for ``path``, e.g. ``ws://127.0.0.1:54321/connection/websocket``."""
        return f"ws://127.0.0.1:{self.port}{_leading_slash(path)}"

    def _run(self) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve()

        try:
            asyncio.run(serve())
        except BaseException as exc:  # SystemExit on lifespan startup failure, etc.
            self._error = exc

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine on the server's event loop (e.g. ``node.publish``) and wait."""
        if self.loop is None:
            raise RuntimeError("server is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """:meth:`call` from an async test without blocking its loop (bounded to 10 s)."""
        if self.loop is None:
            raise RuntimeError("server is not running")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        with anyio.fail_after(10):
            return await asyncio.wrap_future(fut)

    def start(self) -> LiveServer:
        """Start serving; block until a TCP connect succeeds (or raise)."""
        self._thread = threading.Thread(target=self._run, name="live-uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"uvicorn exited during startup: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"uvicorn did not start within {self.startup_timeout} s")
            time.sleep(0.01)
        sockets = self.server.servers[0].sockets
        self.port = sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", self.port), timeout=self.startup_timeout):
            pass
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit (graceful, then forced) and join the thread."""
        if self._thread is None:
            return
        self.server.should_exit = True
        self._thread.join(timeout / 2)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(timeout / 2)
        if self._thread.is_alive():
            raise RuntimeError("uvicorn thread did not stop")
        self._thread = None

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _leading_slash(path: str) -> str:
    return path if path.startswith("/") else "/" + path


class LiveServerFactory(Protocol):
    def __call__(self, app: Any, **config: Any) -> LiveServer: ...


@pytest.fixture
def live_server() -> Iterator[LiveServerFactory]:
    """Factory: ``srv = live_server(app, **uvicorn_config)``; all are stopped at teardown."""
    started: list[LiveServer] = []

    def factory(app: Any, **config: Any) -> LiveServer:
        srv = LiveServer(app, **config)
        srv.start()
        started.append(srv)
        return srv

    yield factory
    for srv in reversed(started):
        srv.stop()


# --------------------------------------------------------------------------- node scenarios


NODE_MAJOR_MIN = 20


@functools.cache
def _node_problem() -> str | None:
    """Why the ``node`` on PATH cannot run the scenarios (None when it can)."""
    node = shutil.which("node")
    if node is None:
        return f"node is not on PATH (Node >= {NODE_MAJOR_MIN} required)"
    try:
        proc = subprocess.run(
            [node, "-p", "process.versions.node"], capture_output=True, text=True, timeout=30
        )
        version = proc.stdout.strip()
        major = int(version.split(".")[0])
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        return f"{node} does not report its version ({exc!r})"
    if major < NODE_MAJOR_MIN:
        return f"{node} is v{version}; Node >= {NODE_MAJOR_MIN} is required"
    return None


def _check_node() -> None:
    """Skip (locally) or fail (CI=true) when node (>= 20) or tests/js/node_modules is missing."""
    node_problem = _node_problem()
    if node_problem is not None:
        problem = node_problem
    elif not (JS_DIR / "node_modules" / "centrifuge").is_dir():
        problem = "node_modules missing: run npm ci " + (
            "in tests/js" if CI else "--prefix tests/js"
        )
    else:
        return
    unavailable(problem)


def run_js(
    script: str | Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> dict[str, Any]:
    """Run ``node <script> args...`` (cwd tests/js) and return its parsed ``RESULT`` JSON.

    A relative ``script`` is looked up in ``tests/js/scenarios/``. Unless ``env`` sets it,
    ``JS_TIMEOUT_MS`` is set 1 s below ``timeout`` so the script's own hard timeout fires first.
    Raises AssertionError (with stdout/stderr) on non-zero exit, timeout, or not exactly one
    ``RESULT`` line.
    """
    _check_node()
    path = Path(script)
    if not path.is_absolute():
        path = SCENARIOS_DIR / path
    assert path.is_file(), f"JS scenario not found: {path}"
    full_env = {**os.environ, "JS_TIMEOUT_MS": str(max(int(timeout * 1000) - 1000, 500))}
    full_env.update(env or {})
    cmd = ["node", str(path), *args]
    try:
        proc = subprocess.run(
            cmd, cwd=JS_DIR, env=full_env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{_fmt_cmd(cmd)} timed out after {timeout} s\n{_fmt_output(exc.stdout, exc.stderr)}"
        ) from None
    output = _fmt_output(proc.stdout, proc.stderr)
    if proc.returncode != 0:
        raise AssertionError(f"{_fmt_cmd(cmd)} exited with {proc.returncode}\n{output}")
    results = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if len(results) != 1:
        raise AssertionError(
            f"{_fmt_cmd(cmd)}: expected 1 RESULT line, got {len(results)}\n{output}"
        )
    try:
        value = json.loads(results[0][len(RESULT_PREFIX) :])
    except json.JSONDecodeError as exc:
        raise AssertionError(f"{_fmt_cmd(cmd)}: bad RESULT JSON ({exc})\n{output}") from None
    assert isinstance(value, dict), f"{_fmt_cmd(cmd)}: RESULT is not an object\n{output}"
    return value


def _fmt_cmd(cmd: list[str]) -> str:
    return "node " + " ".join(cmd[1:])


def _fmt_output(stdout: str | bytes | None, stderr: str | bytes | None) -> str:
    def text(value: str | bytes | None) -> str:
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        return (value or "").rstrip()[-20000:]

    return f"--- stdout ---\n{text(stdout)}\n--- stderr ---\n{text(stderr)}"


RunJs = Callable[..., dict[str, Any]]
ARunJs = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def requires_node() -> None:
    """Skip (or fail under CI=true) unless node and tests/js/node_modules are available."""
    _check_node()


@pytest.fixture(name="run_js")
def _run_js_fixture(requires_node: None) -> RunJs:
    """``run_js(script, *args, env=None, timeout=30) -> dict`` (see module docstring)."""
    return run_js


@pytest.fixture
def arun_js(requires_node: None) -> ARunJs:
    """Awaitable ``run_js``: ``await arun_js(script, *args, env=..., timeout=...)``."""

    async def call(
        script: str | Path,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 30,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        func = functools.partial(run_js, script, *args, env=env, timeout=timeout)
        return await anyio.to_thread.run_sync(func)

    return call
