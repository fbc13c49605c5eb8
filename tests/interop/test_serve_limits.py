"""What an unauthenticated peer can make ``centrifuge-asgi serve`` wait for, and for how long.

Each test runs a real ``serve`` process with small timeouts: incomplete request headers
(``http_server.read_header_timeout``), incomplete request bodies
(``http_server.read_timeout``), connections that never send the connect command
(``client.stale_close_delay``), many silent sockets under a low file limit
(``http_server.max_pending_connections``), and SIGTERM while bodies are half-sent
(``shutdown.timeout``).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import websockets

from centrifuge_asgi import connection_token
from centrifuge_asgi.codes import DisconnectCode

from .raw_http import half_body, open_stream, read_until_closed
from .serve_process import Served, ServeProcesses, with_file_limit

pytestmark = pytest.mark.anyio

SECRET = "limits-secret"
API_KEY = "limits-key"

# One request of each endpoint that reads a body: the headers announce 100 bytes, 10 follow.
BODY_ENDPOINTS = {
    "api": ("/api/publish", [b"X-API-Key: " + API_KEY.encode()]),
    "emulation": ("/emulation", []),
    "http_stream": ("/connection/http_stream", []),
    "uni_http_stream": ("/connection/uni_http_stream", []),
}


def _config(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    data: dict[str, Any] = {
        "client": {"token": {"hmac_secret_key": SECRET}},
        "http_api": {"key": API_KEY},
        "http_stream": {"enabled": True},
        "uni_http_stream": {"enabled": True},
        "health": {"enabled": True},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    processes = ServeProcesses()

    def start(config: Path, *, nofile: int | None = None) -> Served:
        if nofile is None:
            return processes.start(config)
        # The limit is set by the child itself before it execs serve: a preexec_fn would
        # make subprocess fork() this process, whose gRPC threads (other tests load grpcio)
        # then run their at-fork handlers in the child, which can kill it before exec.
        return processes.start(config, prefix=with_file_limit(nofile))

    yield start
    processes.stop_all()


async def test_incomplete_headers_and_silent_sockets_are_closed(
    tmp_path: Path, serve: Callable[..., Served]
) -> None:
    served = serve(_config(tmp_path, http_server={"read_header_timeout": "1s"}))
    ws_upgrade = (
        b"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    )
    partial = [b"", b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n", ws_upgrade]
    # A keep-alive connection whose second request never completes its headers.
    keep_alive = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /health HTTP/1.1\r\n"
    async with AsyncExitStack() as stack:
        streams = [await open_stream(served.port, data) for data in [*partial, keep_alive]]
        for stream in streams:
            stack.push_async_callback(stream.aclose)
        started = anyio.current_time()
        with anyio.fail_after(4):
            answers = [await read_until_closed(stream) for stream in streams]
        assert anyio.current_time() - started >= 0.5  # not closed at once
    assert answers[:3] == [b"", b"", b""]  # Go's ReadHeaderTimeout: closed, no answer
    assert answers[3].startswith(b"HTTP/1.1 200") and answers[3].count(b"HTTP/1.1") == 1
    # The server is still fine.
    async with httpx.AsyncClient(timeout=2) as client:
        assert (await client.get(f"http://127.0.0.1:{served.port}/health")).status_code == 200


@pytest.mark.parametrize("endpoint", sorted(BODY_ENDPOINTS))
async def test_incomplete_body_is_answered_408(
    tmp_path: Path, serve: Callable[..., Served], endpoint: str
) -> None:
    served = serve(_config(tmp_path, http_server={"read_timeout": "1s"}))
    path, extra = BODY_ENDPOINTS[endpoint]
    stream = await open_stream(served.port, half_body(path, extra))
    async with stream:
        started = anyio.current_time()
        with anyio.fail_after(4):
            answer = await read_until_closed(stream)
        assert anyio.current_time() - started >= 0.5
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in answer.lower()


@pytest.mark.parametrize("endpoint", sorted(BODY_ENDPOINTS))
async def test_sigterm_with_a_half_sent_body_exits_within_the_bound(
    tmp_path: Path, serve: Callable[..., Served], endpoint: str
) -> None:
    # Bodies would wait a minute; shutdown.timeout is 3 s.
    config = _config(tmp_path, http_server={"read_timeout": "60s"}, shutdown={"timeout": "3s"})
    served = serve(config)
    token = connection_token("7", SECRET)
    url = f"ws://127.0.0.1:{served.port}/connection/websocket"
    async with websockets.connect(url, open_timeout=5) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        with anyio.fail_after(5):
            assert "connect" in json.loads(await ws.recv())
        path, extra = BODY_ENDPOINTS[endpoint]
        half = await open_stream(served.port, half_body(path, extra))
        silent = await open_stream(served.port)
        await anyio.sleep(0.3)  # the request reached the endpoint
        started = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(5):
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            answer = await read_until_closed(half)
            assert await read_until_closed(silent) == b""
        await half.aclose()
        await silent.aclose()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (3001, "shutdown")
    assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer
    code = await anyio.to_thread.run_sync(lambda: served.proc.wait(6))
    assert time.monotonic() - started < 3.5, served.output()
    assert code in (0, -signal.SIGTERM)


async def test_websocket_that_never_sends_connect_is_closed(
    tmp_path: Path, serve: Callable[..., Served]
) -> None:
    served = serve(_config(tmp_path, client={"stale_close_delay": "1s"}))
    url = f"ws://127.0.0.1:{served.port}/connection/websocket"
    async with websockets.connect(url, open_timeout=5) as ws:
        with anyio.fail_after(4):
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (DisconnectCode.STALE, "stale")


async def test_a_client_connects_while_200_silent_sockets_are_held(
    tmp_path: Path, serve: Callable[..., Served]
) -> None:
    # 128 files: without a bound on connections that have not sent their headers, 200
    # silent sockets exhaust them (accept fails with EMFILE) and nobody else gets in. The
    # default max_pending_connections is a quarter of the file limit (32 here).
    served = serve(_config(tmp_path), nofile=128)
    async with AsyncExitStack() as stack:
        for _ in range(200):
            stream = await open_stream(served.port)
            stack.push_async_callback(stream.aclose)
        token = connection_token("7", SECRET)
        url = f"ws://127.0.0.1:{served.port}/connection/websocket"
        with anyio.fail_after(5):
            async with websockets.connect(url, open_timeout=4) as ws:
                await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
                reply = json.loads(await ws.recv())
        assert reply["connect"]["client"], reply
    assert "Too many open files" not in served.output()
