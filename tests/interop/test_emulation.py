"""Bidirectional emulation: HTTP-streaming and SSE streams plus ``POST /emulation``.

centrifuge-js 5.7.4 drives both transports (``tests/js/scenarios/emulation_sdk.mjs``);
raw ``httpx`` clients check the wire details: headers, framing, pings and pongs through
the emulation endpoint, disconnect pushes, limits, CORS, and that a vanished client
leaves no session, subscription or emulation stream behind.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import websockets

from centrifuge_asgi.handlers import RPCEvent
from centrifuge_asgi.node import Node
from centrifuge_asgi.transports.emulation import deliver

from .support import eventually, make_config, token

if TYPE_CHECKING:
    from conftest import ARunJs, LiveServer, LiveServerFactory

pytestmark = [pytest.mark.interop]

TIMEOUT = 5.0
STREAM = "/connection/http_stream"
SSE = "/connection/sse"
BAD_REQUEST = {"push": {"disconnect": {"code": 3501, "reason": "bad request"}}}
DEEP = "[" * 2000 + "]" * 2000  # valid JSON, nested past any decoder's recursion limit


def emulation_node(**client: Any) -> Node:
    cfg = make_config(**client)
    cfg["http_stream"] = {"enabled": True}
    cfg["sse"] = {"enabled": True}
    return Node(cfg)


def serve(
    live_server: LiveServerFactory, node: Node | None = None, **client: Any
) -> tuple[Node, LiveServer]:
    """Start ``node`` with the scenario RPCs (see emulation_sdk.mjs)."""
    node = node or emulation_node(**client)

    async def publish_items(channel: str, items: list[Any]) -> None:
        for item in items:
            await node.publish(channel, item)

    @node.on_rpc("publish")
    async def rpc_publish(event: RPCEvent) -> Any:
        await publish_items(event.data["channel"], event.data["items"])
        return {"ok": True}

    @node.on_rpc("drop_and_publish")
    async def rpc_drop_and_publish(event: RPCEvent) -> Any:
        session = node.registry.session(event.client.client)
        assert session is not None
        session.transport_closed()  # the stream ends with no disconnect push
        node.spawn(publish_items, event.data["channel"], event.data["items"])
        return {}

    return node, live_server(node.asgi_app())


async def no_leaks(srv: LiveServer, node: Node) -> None:
    async def read() -> tuple[int, int, int]:
        reg = node.registry
        return reg.num_clients, reg.num_subscriptions, len(reg.emulation_streams)

    async def on_server() -> tuple[int, int, int]:
        return await srv.acall(read())

    await eventually(on_server, (0, 0, 0))


# --------------------------------------------------------------------------- centrifuge-js


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["http_stream", "sse"])
async def test_js_features(live_server: LiveServerFactory, arun_js: ARunJs, transport: str) -> None:
    node, srv = serve(live_server)
    result = await arun_js(
        "emulation_sdk.mjs", "features", srv.http_url, token("u1"), "news:js", transport
    )
    assert result["transport"] == transport
    assert result["subscribed"] == {"recoverable": True, "offset": 0}
    assert result["events"] == [{"pub": 1, "n": 1}, {"pub": 2, "n": 2}, {"pub": 3, "n": 3}]
    assert result["presenceUsers"] == ["u1"]
    assert result["stats"] == {"numClients": 1, "numUsers": 1}
    assert result["history"] == [1, 2, 3]
    assert result["rpc"] == {"ok": True}
    await no_leaks(srv, node)


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["http_stream", "sse"])
async def test_js_recovery_after_dropped_stream(
    live_server: LiveServerFactory, arun_js: ARunJs, transport: str
) -> None:
    node, srv = serve(live_server)
    result = await arun_js(
        "emulation_sdk.mjs", "recovery", srv.http_url, token("u1"), "news:rec", transport
    )
    assert result["transports"] == [transport, transport]
    # the stream ended without a disconnect push: JS "transport closed", then reconnects
    assert result["connecting"] == {"code": 1, "reason": "transport closed"}
    assert result["events"] == [
        {"subscribed": {"wasRecovering": False, "recovered": False}},
        {"pub": 1, "n": 1},
        {"subscribed": {"wasRecovering": True, "recovered": True}},
        {"pub": 2, "n": 2},
        {"pub": 3, "n": 3},
        {"pub": 4, "n": 4},
    ]
    await no_leaks(srv, node)


@pytest.mark.anyio
async def test_js_falls_back_from_refused_websocket(
    live_server: LiveServerFactory, arun_js: ARunJs
) -> None:
    cfg = make_config()
    cfg.update(websocket={"disabled": True}, http_stream={"enabled": True})
    node, srv = serve(live_server, Node(cfg))
    result = await arun_js("emulation_sdk.mjs", "fallback", srv.http_url, token("u1"), "chat:x")
    assert result["transport"] == "http_stream"
    assert result["rpc"] == {"ok": True}
    assert {"type": "transport", "transport": "websocket"} in result["errors"]
    await no_leaks(srv, node)


@pytest.mark.anyio
async def test_js_protobuf_over_http_stream(
    live_server: LiveServerFactory, arun_js: ARunJs
) -> None:
    node, srv = serve(live_server)
    result = await arun_js(
        "emulation_sdk.mjs",
        "features",
        srv.http_url,
        token("u1"),
        "news:pb",
        "http_stream",
        "protobuf",
    )
    assert result["transport"] == "http_stream"
    assert result["events"] == [{"pub": 1, "n": 1}, {"pub": 2, "n": 2}, {"pub": 3, "n": 3}]
    assert result["history"] == [1, 2, 3]
    await no_leaks(srv, node)


# ------------------------------------------------------------------------------ raw client


class Stream:
    """One emulated connection read with httpx: replies as dicts, plus /emulation posts."""

    def __init__(self, http: httpx.AsyncClient, srv: LiveServer, response: httpx.Response) -> None:
        self.http = http
        self.srv = srv
        self.response = response
        self._lines = response.aiter_lines()
        self.sse = response.headers.get("content-type", "").startswith("text/event-stream")
        self.connect: dict[str, Any] = {}

    async def next(self) -> dict[str, Any] | None:
        """The next reply (None at the end of the stream), within TIMEOUT."""
        with anyio.fail_after(TIMEOUT):
            async for line in self._lines:
                if self.sse:
                    if not line.startswith("data: "):
                        continue
                    line = line[len("data: ") :]
                return dict(json.loads(line))
            return None

    async def send(self, *commands: dict[str, Any]) -> httpx.Response:
        body = {
            "session": self.connect["session"],
            "node": self.connect["node"],
            "data": "\n".join(json.dumps(c) for c in commands),
        }
        return await self.http.post(self.srv.url("/emulation"), json=body)


@contextlib.asynccontextmanager
async def open_stream(
    srv: LiveServer, path: str = STREAM, user: str = "u1", **kwargs: Any
) -> AsyncIterator[Stream]:
    """Open a stream whose connect reply has been read (``stream.connect``)."""
    connect = json.dumps({"connect": {"token": token(user)}, "id": 1})
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        if path == SSE:
            req = http.build_request("GET", srv.url(path), params={"cf_connect": connect})
        else:
            headers = {"content-type": "application/json", "accept": "application/json"}
            req = http.build_request("POST", srv.url(path), content=connect, headers=headers)
        response = await http.send(req, stream=True)
        try:
            assert response.status_code == 200
            stream = Stream(http, srv, response)
            reply = await stream.next()
            assert reply is not None and reply["id"] == 1, reply
            stream.connect = reply["connect"]
            yield stream
        finally:
            await response.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("path", [STREAM, SSE])
async def test_stream_headers_and_framing(live_server: LiveServerFactory, path: str) -> None:
    node, srv = serve(live_server)
    origin = {"origin": "http://app.test"}
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        connect = json.dumps({"connect": {"token": token("u1")}, "id": 1})
        if path == SSE:
            req = http.build_request(
                "GET", srv.url(path), params={"cf_connect": connect}, headers=origin
            )
        else:
            req = http.build_request("POST", srv.url(path), content=connect, headers=origin)
        response = await http.send(req, stream=True)
        try:
            h = response.headers
            assert response.status_code == 200
            assert h["cache-control"] == "private, no-cache, no-store, must-revalidate, max-age=0"
            assert (h["pragma"], h["expire"], h["x-accel-buffering"]) == ("no-cache", "0", "no")
            assert h["access-control-allow-origin"] == "http://app.test"
            assert h["access-control-allow-credentials"] == "true"
            raw = b""
            with anyio.fail_after(TIMEOUT):
                async for chunk in response.aiter_raw():
                    raw += chunk
                    if raw.endswith(b"\n\n" if path == SSE else b"\n"):
                        break
        finally:
            await response.aclose()
    if path == SSE:
        assert h["content-type"] == "text/event-stream; charset=utf-8"
        assert raw.startswith(b'\r\ndata: {"id":1,"connect":{')
        assert raw.endswith(b"}}\n\n")
    else:
        assert raw.startswith(b'{"id":1,"connect":{') and raw.endswith(b"}}\n")
    reply = json.loads(raw.split(b"data: ")[-1])
    assert reply["connect"]["session"] and reply["connect"]["node"] == node.node_id
    assert reply["connect"]["pong"] is True
    await no_leaks(srv, node)


@pytest.mark.anyio
@pytest.mark.parametrize("path", [STREAM, SSE])
async def test_commands_through_emulation(live_server: LiveServerFactory, path: str) -> None:
    node, srv = serve(live_server)
    async with open_stream(srv, path) as stream:
        sub = {"subscribe": {"channel": "plain", "flag": 1}, "id": 2}
        pub = {"publish": {"channel": "plain", "data": {"x": 1}}, "id": 3}
        response = await stream.send(sub, pub)
        assert response.status_code == 204 and response.content == b""
        replies = [await stream.next() for _ in range(3)]
        assert {"id": 2, "subscribe": {}} in replies
        assert {"id": 3, "publish": {}} in replies
        push = next(r for r in replies if r and "push" in r)
        assert push["push"]["channel"] == "plain" and push["push"]["pub"]["data"] == {"x": 1}
        assert await srv.acall(_subscriptions(node)) == 1
    await no_leaks(srv, node)


async def _subscriptions(node: Node) -> int:
    return node.registry.num_subscriptions


@pytest.mark.anyio
async def test_pings_and_pongs(live_server: LiveServerFactory) -> None:
    node, srv = serve(live_server, ping_interval="1s", pong_timeout="500ms")
    async with open_stream(srv) as stream:
        assert stream.connect["ping"] == 1 and stream.connect["pong"] is True
        assert await stream.next() == {}
        assert (await stream.send({})).status_code == 204  # the pong
        assert await stream.next() == {}  # still connected: the next ping
        # no pong this time
        assert await stream.next() == {"push": {"disconnect": {"code": 3012, "reason": "no pong"}}}
        assert await stream.next() is None
    await no_leaks(srv, node)


@pytest.mark.anyio
@pytest.mark.parametrize("path", [STREAM, SSE])
async def test_server_disconnect_is_a_push(live_server: LiveServerFactory, path: str) -> None:
    node, srv = serve(live_server)
    async with open_stream(srv, path) as stream:
        await srv.acall(node.disconnect("u1"))
        assert await stream.next() == {
            "push": {"disconnect": {"code": 3503, "reason": "force disconnect"}}
        }
        assert await stream.next() is None
    await no_leaks(srv, node)


@pytest.mark.anyio
async def test_shutdown_disconnects_streams(live_server: LiveServerFactory) -> None:
    node, srv = serve(live_server)
    async with open_stream(srv) as a, open_stream(srv, SSE, user="u2") as b:
        await srv.acall(node.shutdown(grace=2))
        for stream in (a, b):
            assert await stream.next() == {
                "push": {"disconnect": {"code": 3001, "reason": "shutdown"}}
            }
            assert await stream.next() is None
    await no_leaks(srv, node)


@pytest.mark.anyio
@pytest.mark.parametrize("path", [STREAM, SSE])
async def test_vanished_client_leaves_nothing(live_server: LiveServerFactory, path: str) -> None:
    node, srv = serve(live_server)
    async with open_stream(srv, path) as stream:
        await stream.send({"subscribe": {"channel": "news:gone"}, "id": 2})
        assert await stream.next() is not None
        assert await srv.acall(_subscriptions(node)) == 1
    await no_leaks(srv, node)  # the response was closed mid-stream


@pytest.mark.anyio
async def test_bad_first_frames(live_server: LiveServerFactory) -> None:
    node, srv = serve(live_server)
    bad_request = b'{"push":{"disconnect":{"code":3501,"reason":"bad request"}}}'
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        empty = await http.post(srv.url(STREAM), content=b"")
        assert (empty.status_code, empty.content) == (200, bad_request + b"\n")
        garbage = await http.get(srv.url(SSE), params={"cf_connect": "{nope"})
        assert (garbage.status_code, garbage.content) == (
            200,
            b"\r\ndata: " + bad_request + b"\n\n",
        )
        not_connect = json.dumps({"rpc": {"method": "x"}, "id": 1})
        first = await http.post(srv.url(STREAM), content=not_connect)
        assert first.content == bad_request + b"\n"
        assert (await http.get(srv.url(SSE))).status_code == 400  # no cf_connect
    await no_leaks(srv, node)


@pytest.mark.anyio
async def test_limits_methods_and_preflight(live_server: LiveServerFactory) -> None:
    _, srv = serve(live_server)
    big = b"x" * 70_000
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        assert (await http.post(srv.url(STREAM), content=big)).status_code == 413
        assert (await http.post(srv.url(SSE), content=big)).status_code == 413
        assert (await http.post(srv.url("/emulation"), content=big)).status_code == 413
        assert (await http.get(srv.url(STREAM))).status_code == 405
        assert (await http.get(srv.url("/emulation"))).status_code == 405
        assert (await http.put(srv.url(SSE))).status_code == 405
        for path in (STREAM, "/emulation"):
            r = await http.options(
                srv.url(path),
                headers={
                    "origin": "http://app.test",
                    "access-control-request-headers": "content-type",
                },
            )
            assert r.status_code == 204
            assert r.headers["access-control-allow-origin"] == "http://app.test"
            assert r.headers["access-control-allow-headers"] == "content-type"
            assert r.headers["access-control-allow-methods"] == "POST, OPTIONS"
            assert r.headers["access-control-max-age"] == "300"


@pytest.mark.anyio
async def test_emulation_answers(live_server: LiveServerFactory) -> None:
    node, srv = serve(live_server)
    url = srv.url("/emulation")
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        assert (await http.post(url, content=b"{nope")).status_code == 400
        not_a_string = {"session": "s", "node": "n", "data": 1}
        assert (await http.post(url, json=not_a_string)).status_code == 400
        unknown_node = {"session": "s", "node": "elsewhere", "data": "{}"}
        assert (await http.post(url, json=unknown_node)).status_code == 404
        assert (await http.post(url, json={"session": "s", "data": "{}"})).status_code == 404
        # an unknown (or expired) session on this node: 204, the commands are dropped
        unknown_session = {"session": "gone", "node": node.node_id, "data": "{}"}
        assert (await http.post(url, json=unknown_session)).status_code == 204
    async with open_stream(srv) as stream:
        # a stream that ended is unknown too
        session = stream.connect["session"]
    await no_leaks(srv, node)
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        expired = {"session": session, "node": node.node_id, "data": "{}"}
        assert (await http.post(url, json=expired)).status_code == 204


@pytest.mark.anyio
async def test_origin_checks(live_server: LiveServerFactory) -> None:
    _, srv = serve(live_server, allowed_origins=["https://good.test"])
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        evil = {"origin": "https://evil.test"}
        refused = await http.post(srv.url(STREAM), content=b"{}", headers=evil)
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers
        # a preflight is answered, without CORS headers for a foreign origin (the browser
        # then refuses); the request itself is refused too (test_emulation_checks_the_origin)
        r = await http.options(srv.url("/emulation"), headers=evil)
        assert r.status_code == 204 and "access-control-allow-origin" not in r.headers


@pytest.mark.anyio
async def test_emulation_checks_the_origin(live_server: LiveServerFactory) -> None:
    """Not only CORS: a foreign Origin gets 403 and its commands never reach the stream."""
    node, srv = serve(live_server, allowed_origins=["https://good.test"])
    async with open_stream(srv) as stream:
        body = {
            "session": stream.connect["session"],
            "node": stream.connect["node"],
            "data": json.dumps({"subscribe": {"channel": "plain"}, "id": 2}),
        }
        url = srv.url("/emulation")
        refused = await stream.http.post(url, json=body, headers={"origin": "https://evil.test"})
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers
        assert await srv.acall(_subscriptions(node)) == 0
        good = await stream.http.post(url, json=body, headers={"origin": "https://good.test"})
        assert good.status_code == 204
        assert good.headers["access-control-allow-origin"] == "https://good.test"
        assert await stream.next() == {"id": 2, "subscribe": {}}
        body["data"] = json.dumps({"unsubscribe": {"channel": "plain"}, "id": 3})
        assert (await stream.http.post(url, json=body)).status_code == 204  # no Origin
        assert await stream.next() == {"id": 3, "unsubscribe": {}}
    await no_leaks(srv, node)


@pytest.mark.anyio
async def test_deeply_nested_json(live_server: LiveServerFactory) -> None:
    """JSON too deep to decode is bad input like any other, never a 500 or a hang."""
    node, srv = serve(live_server)
    connect = '{"id":1,"connect":{"data":' + DEEP + "}}"
    line = json.dumps(BAD_REQUEST, separators=(",", ":")).encode()
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        r = await http.post(srv.url("/emulation"), content='{"session":"s","x":' + DEEP + "}")
        assert r.status_code == 400
        r = await http.post(srv.url(STREAM), content=connect)
        assert (r.status_code, r.content) == (200, line + b"\n")
        r = await http.get(srv.url(SSE), params={"cf_connect": connect})
        assert (r.status_code, r.content) == (200, b"\r\ndata: " + line + b"\n\n")
    async with open_stream(srv) as stream:
        rpc = {"id": 2, "rpc": {"method": "publish", "data": "<deep>"}}
        command = json.dumps(rpc).replace('"<deep>"', DEEP)
        body = {"session": stream.connect["session"], "node": node.node_id, "data": command}
        assert (await stream.http.post(srv.url("/emulation"), json=body)).status_code == 204
        assert await stream.next() == BAD_REQUEST
        assert await stream.next() is None
    await no_leaks(srv, node)


API_KEY = "emulation-api-key"
RPC_DATA = {"channel": "other", "items": []}  # an RPC that only answers {"ok": true}


@pytest.mark.anyio
async def test_server_api_targets_one_session(live_server: LiveServerFactory) -> None:
    """API unsubscribe, disconnect and refresh with ``session`` reach that connection only.

    Emulated connections have a session id (in their connect result); the user's
    WebSocket connection has none and is never matched.
    """
    cfg = make_config()
    cfg.update(http_stream={"enabled": True}, sse={"enabled": True}, http_api={"key": API_KEY})
    node, srv = serve(live_server, Node(cfg))
    api = httpx.AsyncClient(
        base_url=srv.url("/api"), headers={"X-API-Key": API_KEY}, timeout=TIMEOUT
    )

    async def call(method: str, **params: Any) -> None:
        r = await api.post(f"/{method}", json={"user": "u1", **params})
        assert (r.status_code, r.json()) == (200, {"result": {}}), method

    async def rpc(stream: Stream, cmd_id: int) -> dict[str, Any] | None:
        await stream.send({"id": cmd_id, "rpc": {"method": "publish", "data": RPC_DATA}})
        return await stream.next()

    ws_url = f"ws://127.0.0.1:{srv.port}/connection/websocket"
    async with (
        api,
        open_stream(srv) as a,
        open_stream(srv, SSE) as b,
        websockets.connect(ws_url, proxy=None, open_timeout=TIMEOUT) as ws,
    ):
        await ws.send(json.dumps({"id": 1, "connect": {"token": token("u1")}}))
        assert "connect" in json.loads(await ws.recv())
        assert a.connect["session"] != b.connect["session"]
        for stream in (a, b):
            await stream.send({"subscribe": {"channel": "plain"}, "id": 2})
            assert await stream.next() == {"id": 2, "subscribe": {}}

        await call("unsubscribe", channel="plain", session=b.connect["session"])
        assert await b.next() == {
            "push": {
                "channel": "plain",
                "unsubscribe": {"code": 2000, "reason": "server unsubscribe"},
            }
        }
        await srv.acall(node.publish("plain", {"n": 1}))
        push = await a.next()
        assert push is not None and push["push"]["pub"]["data"] == {"n": 1}
        assert await rpc(b, 3) == {"id": 3, "rpc": {"data": {"ok": True}}}  # no publication

        await call("disconnect", session=a.connect["session"])
        assert await a.next() == {
            "push": {"disconnect": {"code": 3503, "reason": "force disconnect"}}
        }
        assert await a.next() is None
        assert await rpc(b, 4) == {"id": 4, "rpc": {"data": {"ok": True}}}

        await call("refresh", session=b.connect["session"], expired=True)
        assert await b.next() == {
            "push": {"disconnect": {"code": 3005, "reason": "connection expired"}}
        }
        assert await b.next() is None

        # the WebSocket connection was never targeted
        await ws.send(json.dumps({"id": 2, "rpc": {"method": "publish", "data": RPC_DATA}}))
        with anyio.fail_after(TIMEOUT):
            assert json.loads(await ws.recv()) == {"id": 2, "rpc": {"data": {"ok": True}}}
    await no_leaks(srv, node)


def test_emulation_endpoint_follows_the_streams(live_server: LiveServerFactory) -> None:
    for enabled in ({}, {"sse": {"enabled": True}}, {"http_stream": {"enabled": True}}):
        cfg = make_config()
        cfg.update(enabled)
        srv = live_server(Node(cfg).asgi_app())
        status = httpx.post(srv.url("/emulation"), content=b"{no", timeout=TIMEOUT).status_code
        assert status == (404 if not enabled else 400), enabled


@pytest.mark.anyio
async def test_forwarding_to_other_nodes() -> None:
    """A request that names another node becomes a cluster message addressed to it (in
    the wire format of earlier versions); 404 when the controller knows nobody listens."""
    node = emulation_node()
    calls: list[tuple[str, dict[str, Any]]] = []

    class Controller:
        async def publish_control(self, data: bytes, node_id: str = "") -> bool:
            calls.append((node_id, json.loads(data)))
            return node_id == "known"

    node.broker = Controller()  # type: ignore[assignment]
    assert await deliver(node, "known", "s1", b"{}") == 204
    assert await deliver(node, "other", "s2", b"{}") == 404
    assert await deliver(node, "", "s3", b"{}") == 404
    frame = base64.b64encode(b"{}").decode()
    assert calls == [
        ("known", {"op": "emulation", "origin": node.node_id, "client": "s1", "info": frame}),
        ("other", {"op": "emulation", "origin": node.node_id, "client": "s2", "info": frame}),
    ]
