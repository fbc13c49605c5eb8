"""Self-tests for the interop harness (tests/conftest.py + tests/js/lib.mjs)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

if TYPE_CHECKING:
    from conftest import ARunJs, LiveServerFactory, RunJs

pytestmark = pytest.mark.interop
LIB_MJS = Path(__file__).resolve().parents[1] / "js" / "lib.mjs"


def make_echo_app() -> Starlette:
    """Tiny app: GET /health -> "ok" (after lifespan startup), WS /ws echoes text frames."""
    state = {"started": False}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["started"] = True
        yield

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok" if state["started"] else "no lifespan")

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send_text(await ws.receive_text())
        except WebSocketDisconnect:
            pass

    return Starlette(
        routes=[Route("/health", health), WebSocketRoute("/ws", echo)], lifespan=lifespan
    )


def test_live_server_http(live_server: LiveServerFactory) -> None:
    srv = live_server(make_echo_app())
    assert srv.port > 0
    assert srv.http_url == f"http://127.0.0.1:{srv.port}"
    assert srv.ws_url("ws") == f"ws://127.0.0.1:{srv.port}/ws"
    resp = httpx.get(srv.url("/health"), timeout=5)
    assert resp.status_code == 200
    assert resp.text == "ok"


def test_live_server_stops(live_server: LiveServerFactory) -> None:
    srv = live_server(make_echo_app())
    assert httpx.get(srv.url("/health"), timeout=5).text == "ok"
    srv.stop()  # idempotent; the fixture's teardown calls it again
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url("/health"), timeout=2)


def test_js_echo(live_server: LiveServerFactory, run_js: RunJs) -> None:
    srv = live_server(make_echo_app())
    result = run_js("echo.mjs", srv.ws_url("/ws"), "hello from node")
    assert result == {"echo": "hello from node", "sdk": True}


@pytest.mark.anyio
async def test_async_clients_and_arun_js(live_server: LiveServerFactory, arun_js: ARunJs) -> None:
    srv = live_server(make_echo_app())
    async with httpx.AsyncClient(base_url=srv.http_url) as client:
        assert (await client.get("/health")).text == "ok"
    async with websockets.connect(srv.ws_url("/ws")) as ws:
        await ws.send("ping")
        assert await ws.recv() == "ping"
    result = await arun_js("echo.mjs", srv.ws_url("/ws"), "async")
    assert result["echo"] == "async"


def _script(tmp_path: Path, body: str) -> Path:
    """Write a throw-away scenario that imports lib.mjs by absolute file URL."""
    path = tmp_path / "scenario.mjs"
    lib = LIB_MJS.as_uri()
    path.write_text(f"import {{ main, report, sleep }} from '{lib}';\n{body}\n")
    return path


@pytest.mark.parametrize(
    ("body", "env", "match"),
    [
        ("main(async () => { throw new Error('boom'); });", None, "exited with 1.*ERROR boom"),
        (
            "main(() => new Promise(() => setInterval(() => {}, 1000)));",
            {"JS_TIMEOUT_MS": "300"},
            "exited with 2.*hard timeout",
        ),
        ("setTimeout(() => process.exit(0), 10);", None, "expected 1 RESULT line, got 0"),
        (
            "main(async () => { await report({a: 1}); return {b: 2}; });",
            None,
            "report\\(\\) called twice",
        ),
    ],
    ids=["exception", "hard-timeout", "no-result", "double-report"],
)
def test_run_js_never_silently_passes(
    tmp_path: Path, run_js: RunJs, body: str, env: dict[str, str] | None, match: str
) -> None:
    with pytest.raises(AssertionError, match=f"(?s){match}"):
        run_js(_script(tmp_path, body), env=env, timeout=10)


def test_run_js_python_timeout(tmp_path: Path, run_js: RunJs) -> None:
    body = "main(() => new Promise(() => setInterval(() => {}, 1000)));"
    with pytest.raises(AssertionError, match="timed out after 1 s"):
        run_js(_script(tmp_path, body), env={"JS_TIMEOUT_MS": "60000"}, timeout=1)
