"""Node lifecycle under a real uvicorn: startup, graceful shutdown codes, no lifespan."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
import websockets
from fastapi import FastAPI

from centrifuge_asgi import Node
from centrifuge_asgi.server import GracefulServer
from tests.interop.support import WS_PATH, make_config, make_node, token

pytestmark = pytest.mark.anyio


async def connect(url: str, user: str = "u1") -> Any:
    ws = await websockets.connect(url, open_timeout=5)
    await ws.send(json.dumps({"id": 1, "connect": {"token": token(user)}}))
    with anyio.fail_after(5):
        reply = json.loads(await ws.recv())
    assert reply["id"] == 1 and reply["connect"]["client"]
    return ws


async def closed_with(ws: Any) -> tuple[int | None, str | None]:
    with anyio.fail_after(5):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as exc:
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, None)


async def test_node_shutdown_disconnects_clients_with_3001(live_server: Any) -> None:
    node = make_node()
    srv = live_server(node.asgi_app())
    ws = await connect(srv.ws_url(WS_PATH))
    await srv.acall(node.shutdown())
    assert await closed_with(ws) == (3001, "shutdown")
    assert node.registry.num_clients == 0


async def test_graceful_server_stop_sends_3001_not_1012(live_server: Any) -> None:
    node = make_node()
    srv = live_server(node.asgi_app(), server_class=lambda cfg: GracefulServer(cfg, [node]))
    first = await connect(srv.ws_url(WS_PATH), "u1")
    second = await connect(srv.ws_url(WS_PATH), "u2")
    srv.server.should_exit = True  # what SIGINT/SIGTERM does
    assert await closed_with(first) == (3001, "shutdown")
    assert await closed_with(second) == (3001, "shutdown")


async def test_connection_refused_when_node_lifespan_is_missing(live_server: Any) -> None:
    node = Node()
    app = FastAPI()  # forgot lifespan=node.lifespan
    app.mount("/", node.asgi_app())
    srv = live_server(app)
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(srv.ws_url(WS_PATH), open_timeout=5)
    assert info.value.response.status_code == 503


async def test_mounted_under_a_prefix(live_server: Any) -> None:
    node = make_node()
    app = FastAPI(lifespan=node.lifespan)
    app.mount("/rt", node.asgi_app())
    srv = live_server(app)
    ws = await connect(srv.ws_url("/rt" + WS_PATH))
    await ws.close()


async def test_node_connection_limit_answers_503(live_server: Any) -> None:
    node = Node(make_config(connection_limit=1))
    srv = live_server(node.asgi_app())
    first = await connect(srv.ws_url(WS_PATH))
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(srv.ws_url(WS_PATH), open_timeout=5)
    assert info.value.response.status_code == 503
    await first.close()


async def test_publish_loop_in_one_task_never_overflows_healthy_readers(live_server: Any) -> None:
    """Back-to-back publishes coalesce, but writers get to drain before outboxes fill."""
    node = Node(make_config(queue_max_size=65536))
    srv = live_server(node.asgi_app())
    readers = [await connect(srv.ws_url(WS_PATH), f"u{i}") for i in range(2)]
    for ws in readers:
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "chat:loop"}}))

    async def publish_all() -> None:
        for i in range(300):
            await node.publish("chat:loop", {"i": i, "pad": "x" * 4000})

    async def collect(ws: Any) -> list[int]:
        got: list[int] = []
        with anyio.fail_after(20):
            while len(got) < 300:
                for line in (await ws.recv()).split("\n"):
                    msg = json.loads(line)
                    if "pub" in msg.get("push", {}):
                        got.append(msg["push"]["pub"]["data"]["i"])
        return got

    async with anyio.create_task_group() as tg:
        results: list[list[int]] = []

        async def run(ws: Any) -> None:
            results.append(await collect(ws))

        for ws in readers:
            tg.start_soon(run, ws)
        await anyio.sleep(0.2)  # both subscribed
        await srv.acall(publish_all())
    assert results == [list(range(300))] * 2
    assert node.registry.num_clients == 2
