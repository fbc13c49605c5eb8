"""Unidirectional transports with raw clients: a WebSocket client (``websockets``), an SSE
reader and a streaming HTTP reader (``httpx``), as a browser ``EventSource`` or ``curl``
would consume them. Each gets a Connect push first, then bare pushes, pings ``{}`` and a
final Disconnect push; subscriptions come from the token and the request's ``subs``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from centrifuge_asgi import ClientError, ConnectEvent, ConnectReply
from centrifuge_asgi.auth import connection_token
from centrifuge_asgi.node import Node

from .support import eventually, make_config, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

KINDS = ["uni_websocket", "uni_sse", "uni_http_stream"]
TIMEOUT = 5.0


def uni_node(**client: Any) -> Node:
    cfg = make_config(**client)
    for kind in KINDS:
        cfg[kind] = {"enabled": True}
    return Node(cfg)


def serve(live_server: LiveServerFactory, **client: Any) -> tuple[Node, LiveServer]:
    node = uni_node(**client)
    return node, live_server(node.asgi_app())


class UniReader:
    """Reads bare pushes from one unidirectional connection, whatever its transport."""

    def __init__(self) -> None:
        self.close_code: int | None = None
        self.close_reason = ""
        self._ws: ClientConnection | None = None
        self._lines: AsyncIterator[str] | None = None
        self._sse = False

    async def next(self) -> dict[str, Any] | None:
        """The next push (None when the stream ended), within TIMEOUT."""
        with anyio.fail_after(TIMEOUT):
            if self._ws is not None:
                try:
                    frame = await self._ws.recv()
                except ConnectionClosed as exc:
                    if exc.rcvd is not None:
                        self.close_code, self.close_reason = exc.rcvd.code, exc.rcvd.reason
                    return None
                return dict(json.loads(frame))
            assert self._lines is not None
            async for line in self._lines:
                if self._sse:
                    if not line.startswith("data: "):
                        continue  # the "\r\n" preamble and the blank line ending each event
                    line = line[len("data: ") :]
                return dict(json.loads(line))
            return None

    async def until(self, pred: Any) -> dict[str, Any]:
        """Skip pings and other pushes until ``pred(push)`` holds."""
        while True:
            push = await self.next()
            assert push is not None, "stream ended"
            if pred(push):
                return push


@contextlib.asynccontextmanager
async def open_uni(
    srv: LiveServer, kind: str, request: dict[str, Any], *, via_query: bool = False
) -> AsyncIterator[UniReader]:
    """Connect with ``request`` (a bare ConnectRequest) over ``kind``."""
    reader = UniReader()
    path = f"/connection/{kind}"
    payload = json.dumps(request)
    if kind == "uni_websocket":
        url = srv.ws_url(path)
        if via_query:
            url += "?" + str(httpx.QueryParams({"cf_connect": payload}))
        async with connect(url, open_timeout=TIMEOUT) as ws:
            if not via_query:
                await ws.send(payload)
            reader._ws = ws
            yield reader
        return
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        if kind == "uni_sse" and not via_query:
            req = http.build_request("GET", srv.url(path), params={"cf_connect": payload})
        else:
            req = http.build_request("POST", srv.url(path), content=payload.encode())
        response = await http.send(req, stream=True)
        try:
            assert response.status_code == 200, response.status_code
            reader._lines = response.aiter_lines()
            reader._sse = kind == "uni_sse"
            yield reader
        finally:
            await response.aclose()


async def counts(srv: LiveServer, node: Node) -> tuple[int, int, int]:
    async def read() -> tuple[int, int, int]:
        reg = node.registry
        return reg.num_clients, reg.num_channels, reg.num_subscriptions

    return await srv.acall(read())


async def no_leaks(srv: LiveServer, node: Node) -> None:
    async def read() -> tuple[int, int, int]:
        return await counts(srv, node)

    await eventually(read, (0, 0, 0))


# ----------------------------------------------------------------------------- delivery


@pytest.mark.parametrize("kind", KINDS)
async def test_connect_push_then_publications(live_server: LiveServerFactory, kind: str) -> None:
    node, srv = serve(live_server)
    request = {"token": token("u1", channels=["chat:tok"]), "subs": {"news:req": {}}}
    async with open_uni(srv, kind, request) as reader:
        first = await reader.next()
        assert first is not None
        connect_push = first["connect"]
        assert set(first) == {"connect"}
        assert connect_push["client"]
        assert connect_push["session"]
        assert connect_push["ping"] == 25
        assert "pong" not in connect_push and "node" not in connect_push
        assert set(connect_push["subs"]) == {"chat:tok", "news:req"}
        await srv.acall(node.publish("news:req", {"n": 1}))
        await srv.acall(node.publish("chat:tok", {"n": 2}))
        pub1 = await reader.until(lambda p: "pub" in p)
        pub2 = await reader.until(lambda p: "pub" in p)
        for pub in (pub1, pub2):
            pub["pub"].pop("time", None)  # set when the engine stamps publications
        assert pub1 == {"channel": "news:req", "pub": {"data": {"n": 1}, "offset": 1}}
        assert pub2 == {"channel": "chat:tok", "pub": {"data": {"n": 2}}}
        assert await counts(srv, node) == (1, 2, 2)
    await no_leaks(srv, node)


@pytest.mark.parametrize("kind", ["uni_websocket", "uni_sse"])
async def test_connect_request_in_the_other_place(
    live_server: LiveServerFactory, kind: str
) -> None:
    """uni_websocket: ``cf_connect`` query; uni_sse: a POST body."""
    node, srv = serve(live_server)
    async with open_uni(srv, kind, {"token": token("u1")}, via_query=True) as reader:
        first = await reader.next()
        assert first is not None and "connect" in first
    await no_leaks(srv, node)


@pytest.mark.parametrize("kind", KINDS)
async def test_disconnect_push_ends_the_stream(live_server: LiveServerFactory, kind: str) -> None:
    node, srv = serve(live_server)
    async with open_uni(srv, kind, {"token": token("u1")}) as reader:
        assert (await reader.next() or {}).get("connect")
        await srv.acall(node.disconnect("u1", code=3503, reason="go away"))
        push = await reader.until(lambda p: "disconnect" in p)
        assert push == {"disconnect": {"code": 3503, "reason": "go away"}}
        assert await reader.next() is None
        if kind == "uni_websocket":
            assert (reader.close_code, reader.close_reason) == (3503, "go away")
    await no_leaks(srv, node)


@pytest.mark.parametrize("kind", KINDS)
async def test_server_side_refresh_push(live_server: LiveServerFactory, kind: str) -> None:
    """A server-side refresh tells the unidirectional client its new expiry (a refresh push)."""
    node, srv = serve(live_server)
    async with open_uni(srv, kind, {"token": token("u1")}) as reader:
        assert (await reader.next() or {}).get("connect")
        expire_at = int(time.time()) + 600
        await srv.acall(node.refresh("u1", expire_at=expire_at))
        push = await reader.until(lambda p: "refresh" in p)
        assert push["refresh"]["expires"] is True
        assert 590 <= push["refresh"]["ttl"] <= 600
        await srv.acall(node.refresh("u1", expired=True))
        push = await reader.until(lambda p: "disconnect" in p)
        assert push["disconnect"]["code"] == 3005
    await no_leaks(srv, node)


async def test_join_leave_and_server_side_unsubscribe(live_server: LiveServerFactory) -> None:
    node, srv = serve(live_server)
    first = {"token": token("u1"), "subs": {"chat:r": {}}}
    second = {"token": token("u2"), "subs": {"chat:r": {}}}
    async with (
        open_uni(srv, "uni_http_stream", first) as r1,
        open_uni(srv, "uni_sse", second) as r2,
    ):
        assert "connect" in (await r1.next() or {})
        assert "connect" in (await r2.next() or {})
        join = await r1.until(lambda p: "join" in p and p["join"]["info"]["user"] == "u2")
        assert join["channel"] == "chat:r"
        await srv.acall(node.unsubscribe("u2", "chat:r"))
        push = await r2.until(lambda p: "unsubscribe" in p)
        assert push == {
            "channel": "chat:r",
            "unsubscribe": {"code": 2000, "reason": "server unsubscribe"},
        }
        leave = await r1.until(lambda p: "leave" in p)
        assert (leave["channel"], leave["leave"]["info"]["user"]) == ("chat:r", "u2")
    await no_leaks(srv, node)


async def test_recovery_through_request_subs(live_server: LiveServerFactory) -> None:
    node, srv = serve(live_server)
    for n in range(1, 4):
        await srv.acall(node.publish("news:rec", {"n": n}))
    page = await srv.acall(node.history("news:rec", limit=0))
    subs = {"news:rec": {"recover": True, "offset": 1, "epoch": page.epoch}}
    async with open_uni(srv, "uni_http_stream", {"token": token("u1"), "subs": subs}) as reader:
        result = ((await reader.next()) or {})["connect"]["subs"]["news:rec"]
        assert result["recovered"] is True and result["was_recovering"] is True
        assert [p["data"]["n"] for p in result["publications"]] == [2, 3]
        await srv.acall(node.publish("news:rec", {"n": 4}))
        pub = await reader.until(lambda p: "pub" in p)
        assert pub["pub"]["offset"] == 4
    await no_leaks(srv, node)


async def test_request_subs_need_permission(live_server: LiveServerFactory) -> None:
    """``secret:*`` allows no client subscribe: it is left out, the rest goes on."""
    node, srv = serve(live_server)
    request = {"token": token("u1"), "subs": {"secret:x": {}, "chat:ok": {}, "nope:x": {}}}
    async with open_uni(srv, "uni_sse", request) as reader:
        assert set(((await reader.next()) or {})["connect"]["subs"]) == {"chat:ok"}
    await no_leaks(srv, node)


async def test_pings(live_server: LiveServerFactory) -> None:
    node, srv = serve(live_server, ping_interval="1s", pong_timeout="500ms")
    async with open_uni(srv, "uni_http_stream", {"token": token("u1")}) as reader:
        assert ((await reader.next()) or {})["connect"]["ping"] == 1
        assert await reader.next() == {}
        assert await reader.next() == {}  # no pong expected: still connected
    await no_leaks(srv, node)


# ------------------------------------------------------------------------- connect errors


@pytest.mark.parametrize(
    ("make_token", "expected"),
    [
        (lambda: token("u1", ttl=-60), {"code": 3005, "reason": "connection expired"}),
        (lambda: connection_token("u1", "forged"), {"code": 3500, "reason": "invalid token"}),
        (lambda: "", {"code": 3501, "reason": "bad request"}),
    ],
    ids=["expired-109", "forged", "anonymous-refused"],
)
@pytest.mark.parametrize("kind", KINDS)
async def test_connect_error_is_a_disconnect(
    live_server: LiveServerFactory, kind: str, make_token: Any, expected: dict[str, Any]
) -> None:
    node, srv = serve(live_server)
    async with open_uni(srv, kind, {"token": make_token()}) as reader:
        assert await reader.next() == {"disconnect": expected}
        assert await reader.next() is None
        if kind == "uni_websocket":
            assert reader.close_code == expected["code"]
    await no_leaks(srv, node)


async def test_connect_code_to_http_response(live_server: LiveServerFactory) -> None:
    cfg = make_config()
    transform = {"code": 3500, "to": {"status_code": 401, "body": "bad token"}}
    cfg["uni_http_stream"] = {
        "enabled": True,
        "connect_code_to_http_response": {"enabled": True, "transforms": [transform]},
    }
    node = Node(cfg)
    srv = live_server(node.asgi_app())
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        body = json.dumps({"token": connection_token("u1", "forged")})
        r = await http.post(srv.url("/connection/uni_http_stream"), content=body)
        assert (r.status_code, r.text) == (401, "bad token")
    await no_leaks(srv, node)


# ---------------------------------------------------------------------------- bad input


async def test_bad_requests(live_server: LiveServerFactory) -> None:
    node, srv = serve(live_server)
    sse, stream = srv.url("/connection/uni_sse"), srv.url("/connection/uni_http_stream")
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        assert (await http.get(sse, params={"cf_connect": "{nope"})).status_code == 400
        assert (await http.get(sse)).status_code == 400
        assert (await http.post(stream, content=b"[1,2]")).status_code == 400
        assert (await http.post(stream, content=b"x" * 70_000)).status_code == 413
        assert (await http.post(sse, content=b"x" * 70_000)).status_code == 413
        assert (await http.get(stream)).status_code == 405
        assert (await http.put(sse)).status_code == 405
        preflight = await http.options(
            stream,
            headers={"origin": "http://app.test", "access-control-request-headers": "x-a"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "http://app.test"
        assert preflight.headers["access-control-allow-credentials"] == "true"
        assert preflight.headers["access-control-allow-headers"] == "x-a"
        assert preflight.headers["access-control-max-age"] == "300"
    async with connect(srv.ws_url("/connection/uni_websocket")) as ws:
        await ws.send("{nope")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 3501
    await no_leaks(srv, node)


async def test_origin_refused(live_server: LiveServerFactory) -> None:
    _, srv = serve(live_server, allowed_origins=["https://good.test"])
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        r = await http.post(
            srv.url("/connection/uni_http_stream"),
            content=b"{}",
            headers={"origin": "https://evil.test"},
        )
        assert r.status_code == 403
        assert "access-control-allow-origin" not in r.headers


def deep_request(levels: int = 2000) -> str:
    """A ConnectRequest whose data is valid JSON nested past any decoder's recursion limit."""
    return '{"token":"","data":' + "[" * levels + "]" * levels + "}"


async def test_deeply_nested_connect_request(live_server: LiveServerFactory) -> None:
    """Too deep to decode is malformed: 400 (uni_sse, uni_http_stream) or close 3501."""
    node, srv = serve(live_server)
    request = deep_request()
    sse, stream = srv.url("/connection/uni_sse"), srv.url("/connection/uni_http_stream")
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        assert (await http.get(sse, params={"cf_connect": request})).status_code == 400
        assert (await http.post(sse, content=request)).status_code == 400
        assert (await http.post(stream, content=request)).status_code == 400
    ws_url = srv.ws_url("/connection/uni_websocket")
    # 1200 levels in the query: the handshake's request line must stay under 8 KB
    query = str(httpx.QueryParams({"cf_connect": deep_request(1200)}))
    for url, first in ((ws_url, request), (f"{ws_url}?{query}", None)):
        async with connect(url, open_timeout=TIMEOUT) as ws:
            if first is not None:
                await ws.send(first)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (3501, "bad request")
    await no_leaks(srv, node)


PRETTY = b'{\n  "a": 1,\r\n  "b": [\n    "x y"\n  ]\n}'


@pytest.mark.parametrize("kind", KINDS)
async def test_pretty_printed_payload_is_one_message(
    live_server: LiveServerFactory, kind: str
) -> None:
    """Raw newlines in a JSON payload are whitespace: dropped, so a line or an SSE event
    stays whole (from ``node.publish`` and from the server API alike)."""
    cfg = make_config()
    for k in KINDS:
        cfg[k] = {"enabled": True}
    cfg["http_api"] = {"key": "k"}
    node = Node(cfg)
    srv = live_server(node.asgi_app())
    async with open_uni(srv, kind, {"token": token("u1"), "subs": {"chat:pretty": {}}}) as reader:
        assert "connect" in (await reader.next() or {})
        await srv.acall(node.publish("chat:pretty", msgspec.Raw(PRETTY)))
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            body = b'{"channel": "chat:pretty",\n "data": ' + PRETTY + b"\n}"
            r = await http.post(srv.url("/api/publish"), content=body, headers={"X-API-Key": "k"})
            assert r.json() == {"result": {}}
        for _ in range(2):
            push = await reader.until(lambda p: "pub" in p)
            assert push["pub"]["data"] == {"a": 1, "b": ["x y"]}
        await srv.acall(node.publish("chat:pretty", {"after": True}))
        push = await reader.until(lambda p: "pub" in p)
        assert push["pub"]["data"] == {"after": True}
    await no_leaks(srv, node)


@pytest.mark.parametrize("kind", KINDS)
async def test_binary_payload_is_skipped(
    live_server: LiveServerFactory, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are not JSON cannot reach a JSON client: refused (107) where the channel
    takes JSON; in a ``binary`` channel the JSON client skips them and stays connected."""
    node, srv = serve(live_server)
    subs = {"chat:bin": {}, "bin:x": {}}
    async with open_uni(srv, kind, {"token": token("u1"), "subs": subs}) as reader:
        assert "connect" in (await reader.next() or {})
        with pytest.raises(ClientError) as refused:
            await srv.acall(node.publish("chat:bin", msgspec.Raw(b"\xff\x00\n\xfe")))
        assert refused.value.code == 107
        await srv.acall(node.publish("bin:x", msgspec.Raw(b"\xff\x00\n\xfe")))
        await srv.acall(node.publish("bin:x", {"after": True}))
        push = await reader.until(lambda p: "pub" in p or "disconnect" in p)
        assert (push["pub"]["data"], push["pub"]["offset"]) == ({"after": True}, 2)
    await no_leaks(srv, node)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_recovery_leaves_out_binary_payloads(live_server: LiveServerFactory) -> None:
    """A connect push recovers the publications of a ``binary`` channel that a JSON client
    can receive, as the live fan-out delivers them."""
    node, srv = serve(live_server)
    await srv.acall(node.publish("bin:rec", {"n": 1}))
    await srv.acall(node.publish("bin:rec", b"\xff"))
    await srv.acall(node.publish("bin:rec", {"n": 3}))
    page = await srv.acall(node.history("bin:rec", limit=0))
    subs = {"bin:rec": {"recover": True, "offset": 0, "epoch": page.epoch}}
    async with open_uni(srv, "uni_http_stream", {"token": token("u1"), "subs": subs}) as reader:
        result = ((await reader.next()) or {})["connect"]["subs"]["bin:rec"]
        assert result["recovered"] is True
        assert [(p["offset"], p["data"]) for p in result["publications"]] == [
            (1, {"n": 1}),
            (3, {"n": 3}),
        ]
    await no_leaks(srv, node)


async def test_uni_websocket_never_sends_undecodable_text(
    live_server: LiveServerFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Defence in depth: should a push that is not UTF-8 get past the codec, the writer
    disconnects with 3506 instead of failing with a traceback."""
    from centrifuge_asgi.transports import unidirectional

    monkeypatch.setattr(unidirectional, "one_line", lambda data: data)  # no validation
    node, srv = serve(live_server)
    request = {"token": token("u1"), "subs": {"bin:x": {}}}
    async with open_uni(srv, "uni_websocket", request) as reader:
        assert "connect" in (await reader.next() or {})
        await srv.acall(node.publish("bin:x", msgspec.Raw(b"\xff\x00")))
        push = await reader.until(lambda p: "pub" in p or "disconnect" in p)
        assert push == {"disconnect": {"code": 3506, "reason": "inappropriate protocol"}}
        assert await reader.next() is None
        assert (reader.close_code, reader.close_reason) == (3506, "inappropriate protocol")
    await no_leaks(srv, node)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("kind", KINDS)
async def test_vanished_client_leaves_nothing(live_server: LiveServerFactory, kind: str) -> None:
    node, srv = serve(live_server)
    request = {"token": token("u1"), "subs": {"chat:gone": {}, "news:gone": {}}}
    async with open_uni(srv, kind, request) as reader:
        assert "connect" in (await reader.next() or {})
        assert await counts(srv, node) == (1, 2, 2)
    await no_leaks(srv, node)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (103, {"code": 3507, "reason": "permission denied"}),
        (110, {"code": 3005, "reason": "connection expired"}),
        (111, {"code": 3013, "reason": "too many requests"}),
        (4001, {"code": 3004, "reason": "internal server error"}),
    ],
)
async def test_connect_error_table(
    live_server: LiveServerFactory, error: int, expected: dict[str, Any]
) -> None:
    """Spec §8: 109/110 → 3005, 111 → 3013, 103 → 3507, any other error → 3004."""
    node = uni_node()

    @node.on_connecting
    async def refuse(event: ConnectEvent) -> ConnectReply | None:
        raise ClientError(error, "refused")

    srv = live_server(node.asgi_app())
    async with open_uni(srv, "uni_http_stream", {}) as reader:
        assert await reader.next() == {"disconnect": expected}
        assert await reader.next() is None
    await no_leaks(srv, node)


async def test_connect_code_transform(live_server: LiveServerFactory) -> None:
    transforms = [{"code": 109, "to": {"code": 4501, "reason": "log in again"}}]
    node, srv = serve(
        live_server,
        connect_code_to_unidirectional_disconnect={"enabled": True, "transforms": transforms},
    )
    async with open_uni(srv, "uni_sse", {"token": token("u1", ttl=-60)}) as reader:
        assert await reader.next() == {"disconnect": {"code": 4501, "reason": "log in again"}}
    await no_leaks(srv, node)


async def test_uni_websocket_without_disconnect_push(live_server: LiveServerFactory) -> None:
    cfg = make_config()
    cfg["uni_websocket"] = {"enabled": True, "disable_disconnect_push": True}
    node = Node(cfg)
    srv = live_server(node.asgi_app())
    async with open_uni(srv, "uni_websocket", {"token": token("u1")}) as reader:
        assert "connect" in (await reader.next() or {})
        await srv.acall(node.disconnect("u1"))
        assert await reader.next() is None  # straight to the close frame
        assert (reader.close_code, reader.close_reason) == (3503, "force disconnect")
    await no_leaks(srv, node)
