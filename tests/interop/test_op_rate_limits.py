"""Operation rate limits (``client.rate_limit``), with Centrifugo PRO's semantics.

Centrifugo OSS has no such limits; PRO refuses an operation over its limit with error
111 "too many requests" (temporary, so the SDKs retry subscribes, refreshes and
connects), and a unidirectional connect over it with disconnect 3013. Driven by a raw
client (the exact replies), centrifuge-js and centrifuge-python.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import websockets
from centrifuge import Client, ReplyError

from centrifuge_asgi.handlers import RPCEvent
from centrifuge_asgi.node import Node

from .support import WS_PATH, make_config, make_node, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory, RunJs

pytestmark = pytest.mark.interop

TIMEOUT = 5.0
TOO_MANY = {"code": 111, "message": "too many requests", "temporary": True}


def per_minute(rate: int) -> dict[str, Any]:
    return {"enabled": True, "buckets": [{"interval": "1m", "rate": rate}]}


def serve(live_server: LiveServerFactory, **rate_limit: Any) -> tuple[Node, LiveServer]:
    cfg = make_config(rate_limit=rate_limit)
    cfg["uni_http_stream"] = {"enabled": True}
    node = make_node(cfg)

    @node.on_rpc("echo")
    async def echo(event: RPCEvent) -> Any:
        return event.data

    return node, live_server(node.asgi_app())


async def replies(ws: websockets.ClientConnection, *commands: dict[str, Any]) -> list[Any]:
    """Send ``commands`` in one frame; their replies by id (pings skipped)."""
    await ws.send("\n".join(json.dumps(c) for c in commands))
    got: dict[int, Any] = {}
    with anyio.fail_after(TIMEOUT):
        while len(got) < len(commands):
            frame = await ws.recv()
            assert isinstance(frame, str)
            for line in frame.split("\n"):
                msg = json.loads(line)
                if msg.get("id"):
                    got[msg["id"]] = msg
    return [got[c["id"]] for c in commands]


@pytest.mark.anyio
async def test_raw_client_gets_111_and_keeps_its_connection(
    live_server: LiveServerFactory,
) -> None:
    _, srv = serve(
        live_server,
        client_command={
            "enabled": True,
            "publish": per_minute(1),
            "total": per_minute(5),
            "rpc": {**per_minute(5), "method_overrides": [{"method": "echo", **per_minute(1)}]},
        },
    )
    async with websockets.connect(srv.ws_url(WS_PATH)) as ws:
        (connected,) = await replies(ws, {"id": 1, "connect": {"token": token("u1")}})
        assert "connect" in connected
        pub = {"channel": "chat:a", "data": {"x": 1}}
        out = await replies(
            ws,
            {"id": 2, "subscribe": {"channel": "chat:a"}},  # no bucket of its own: total only
            {"id": 3, "publish": pub},
            {"id": 4, "publish": pub},
            {"id": 5, "rpc": {"method": "echo", "data": 1}},
            {"id": 6, "rpc": {"method": "echo", "data": 2}},
            {"id": 7, "presence_stats": {"channel": "chat:a"}},
            {"id": 8, "presence": {"channel": "chat:a"}},  # the fifth that passed: total spent
        )
        assert "subscribe" in out[0]
        assert out[1] == {"id": 3, "publish": {}}
        assert out[2] == {"id": 4, "error": TOO_MANY}
        assert out[3] == {"id": 5, "rpc": {"data": 1}}
        assert out[4] == {"id": 6, "error": TOO_MANY}
        assert "presence_stats" in out[5]
        assert "presence" in out[6]
        (refused,) = await replies(ws, {"id": 9, "presence_stats": {"channel": "chat:a"}})
        assert refused == {"id": 9, "error": TOO_MANY}


@pytest.mark.anyio
async def test_user_limits_span_connections_and_refuse_connects(
    live_server: LiveServerFactory,
) -> None:
    _, srv = serve(
        live_server,
        user_command={"enabled": True, "connect": per_minute(2), "rpc": per_minute(1)},
    )
    url = srv.ws_url(WS_PATH)
    rpc = {"method": "echo", "data": {}}
    async with websockets.connect(url) as a, websockets.connect(url) as b:
        connect = {"id": 1, "connect": {"token": token("u1")}}
        assert "connect" in (await replies(a, connect))[0]
        assert "connect" in (await replies(b, connect))[0]
        assert await replies(a, {"id": 2, "rpc": rpc}) == [{"id": 2, "rpc": {"data": {}}}]
        assert await replies(b, {"id": 2, "rpc": rpc}) == [{"id": 2, "error": TOO_MANY}]
    async with websockets.connect(url) as c:
        assert await replies(c, connect) == [{"id": 1, "error": TOO_MANY}]
    async with websockets.connect(url) as d:  # another user has buckets of its own
        assert "connect" in (await replies(d, {"id": 1, "connect": {"token": token("u2")}}))[0]

    # a unidirectional connect over the limit is disconnect 3013 (spec §8)
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        http.stream(
            "POST",
            srv.url("/connection/uni_http_stream"),
            content=json.dumps({"token": token("u1")}),
        ) as response,
    ):
        lines = [json.loads(line) async for line in response.aiter_lines() if line]
    assert lines == [{"disconnect": {"code": 3013, "reason": "too many requests"}}]


def test_js_sdk(live_server: LiveServerFactory, run_js: RunJs) -> None:
    _, srv = serve(
        live_server,
        client_command={
            "enabled": True,
            "rpc": per_minute(2),
            "subscribe": {"enabled": True, "buckets": [{"interval": "1s", "rate": 1}]},
        },
    )
    result = run_js("sdk_rate_limits.mjs", srv.ws_url(WS_PATH), token("u1"), timeout=20)
    refused = {"code": 111, "message": "too many requests"}
    assert result == {
        "rpc": [{"resolved": {"data": {"i": 0}}}, {"resolved": {"data": {"i": 1}}}, refused],
        "subscribeErrors": [{"type": "subscribe", **refused}],
        "subscribed": "subscribed",
    }


@pytest.mark.anyio
async def test_python_sdk(live_server: LiveServerFactory) -> None:
    _, srv = serve(live_server, user_command={"enabled": True, "rpc": per_minute(2)})
    clients = [Client(srv.ws_url(WS_PATH), token=token("u1"), timeout=TIMEOUT) for _ in range(2)]
    try:
        with anyio.fail_after(TIMEOUT):
            for client in clients:
                await client.connect()
                await client.ready()
            assert (await clients[0].rpc("echo", {"n": 1})).data == {"n": 1}
            assert (await clients[1].rpc("echo", {"n": 2})).data == {"n": 2}
            with pytest.raises(ReplyError) as exc:
                await clients[0].rpc("echo", {"n": 3})
    finally:
        for client in clients:
            await client.disconnect()
    assert (exc.value.code, exc.value.message, exc.value.temporary) == (
        111,
        "too many requests",
        True,
    )
