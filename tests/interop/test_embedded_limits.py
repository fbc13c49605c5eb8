"""The same bounds for an app that embeds the node and runs uvicorn itself.

The body timeout (``http_server.read_timeout``) is the app's own, so plain uvicorn gets it;
the header bounds come from ``server.http_protocol`` passed as ``http=``, and the
shutdown bound from ``server.GracefulServer`` (both used by ``serve`` and ``server.run``).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from centrifuge_asgi import Node
from centrifuge_asgi.server import GracefulServer, http_protocol

from .raw_http import half_body, read_until_closed

if TYPE_CHECKING:
    from conftest import LiveServerFactory

pytestmark = pytest.mark.anyio

API_KEY = "embedded-key"
API_KEY_HEADER = [b"X-API-Key: " + API_KEY.encode()]


@pytest.mark.parametrize("path", ["/api/publish", "/emulation", "/connection/http_stream"])
async def test_body_timeout_under_plain_uvicorn(live_server: LiveServerFactory, path: str) -> None:
    node = Node(
        {
            "http_api": {"key": API_KEY},
            "http_stream": {"enabled": True},
            "http_server": {"read_timeout": "500ms"},
        }
    )
    srv = live_server(node.asgi_app())  # uvicorn's defaults: no http= protocol of ours
    stream = await anyio.connect_tcp("127.0.0.1", srv.port)
    async with stream:
        await stream.send(half_body(path, API_KEY_HEADER))
        started = anyio.current_time()
        with anyio.fail_after(4):
            answer = await read_until_closed(stream)
        assert anyio.current_time() - started >= 0.4
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in answer.lower()


@pytest.mark.parametrize("base", ["auto", "h11"])
async def test_http_protocol_bounds_time_and_number_of_pending_connections(
    live_server: LiveServerFactory, base: str
) -> None:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    async def ok(request: Request) -> Response:
        return Response("ok")

    kind = None if base == "auto" else H11Protocol  # auto: httptools here
    protocol = http_protocol(read_header_timeout=0.5, max_pending_connections=4, base=kind)
    assert not isinstance(protocol, str)  # uvicorn's protocol was extended
    srv = live_server(Starlette(routes=[Route("/", ok)]), http=protocol)
    async with AsyncExitStack() as stack:
        streams = []
        for _ in range(10):
            stream = await anyio.connect_tcp("127.0.0.1", srv.port)
            stack.push_async_callback(stream.aclose)
            streams.append(stream)
        await streams[-1].send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # partial headers
        # Above four, the oldest waiting connections went at once; the rest at the timeout.
        with anyio.fail_after(0.4):
            for stream in streams[:6]:
                assert await read_until_closed(stream) == b""
        with anyio.fail_after(2):
            for stream in streams[6:]:
                assert await read_until_closed(stream) == b""
        async with httpx.AsyncClient(timeout=2) as client:
            assert (await client.get(srv.url("/"))).text == "ok"


async def test_graceful_server_bounds_shutdown(live_server: LiveServerFactory) -> None:
    node = Node({"http_server": {"read_timeout": "60s"}})
    entered = threading.Event()

    async def stuck(request: Request) -> Response:  # an app route that never finishes
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError

    app = Starlette(
        routes=[Route("/stuck", stuck), Mount("/", node.asgi_app())], lifespan=node.lifespan
    )

    def server(config: uvicorn.Config) -> uvicorn.Server:
        return GracefulServer(config, [node], shutdown_timeout=1.0)

    # uvicorn alone would wait forever (no timeout_graceful_shutdown)
    srv = live_server(app, server_class=server, timeout_graceful_shutdown=None)
    async with AsyncExitStack() as stack:
        stuck_stream = await anyio.connect_tcp("127.0.0.1", srv.port)
        stack.push_async_callback(stuck_stream.aclose)
        await stuck_stream.send(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
        half = await anyio.connect_tcp("127.0.0.1", srv.port)
        stack.push_async_callback(half.aclose)
        await half.send(half_body("/api/publish", API_KEY_HEADER))
        assert await anyio.to_thread.run_sync(entered.wait, 5)
        started = time.monotonic()
        await anyio.to_thread.run_sync(srv.stop)
        assert time.monotonic() - started < 2.0


def test_last_resort_exit_after_shutdown_timeout() -> None:
    code = (
        "import time\n"
        "from centrifuge_asgi.server import _exit_after\n"
        "_exit_after(0.3)\n"
        "time.sleep(20)\n"
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=15, check=False
    )
    assert proc.returncode == 1
    assert "shutdown timeout reached" in proc.stderr
    assert time.monotonic() - started < 10


def test_run_uses_the_nodes_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    from centrifuge_asgi import server

    seen: dict[str, Any] = {}

    def fake_run(self: GracefulServer) -> None:
        seen.update(http=self.config.http, timeout=self.shutdown_timeout)

    monkeypatch.setattr(GracefulServer, "run", fake_run)
    node = Node({"http_server": {"read_header_timeout": "3s"}, "shutdown": {"timeout": "7s"}})
    server.run(Starlette(), node=node)
    assert seen["timeout"] == 7.0
    assert seen["http"].read_header_timeout == 3.0


def test_http_protocol_for_the_uvicorn_command_line() -> None:
    config = uvicorn.Config(Starlette(), http="centrifuge_asgi.server:HTTP_PROTOCOL")
    config.load()
    protocol: Any = config.http_protocol_class
    assert protocol.read_header_timeout == 10.0
    assert 16 <= protocol.max_pending <= 1024


async def test_unknown_protocol_internals_turn_the_bounds_off_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio

    class Bare(asyncio.Protocol):  # an HTTP protocol without uvicorn's ``cycle``
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

    protocol: Any = http_protocol(read_header_timeout=0.1, max_pending_connections=1, base=Bare)
    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, AsyncExitStack() as stack:
        with caplog.at_level("WARNING", logger="centrifuge_asgi.server"):
            streams = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(3)]
            for stream in streams:
                stack.push_async_callback(stream.aclose)
            with anyio.move_on_after(0.5):  # nothing is closed: the bounds are off
                await streams[0].receive()
                raise AssertionError("closed")
    assert protocol.unsupported
    assert "are not enforced" in caplog.text
