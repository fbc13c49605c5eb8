"""HTTP proxies against a real backend: centrifuge-js 5.7.4 ↔ node ↔ a Starlette backend.

Two uvicorn servers on loopback: :class:`Backend` (the application's proxy endpoints,
scripted by channel and method names) and the node with the proxies configured to call
it. Each test runs one ``tests/js/scenarios/proxy_*.mjs`` and then also checks what the
backend received.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from centrifuge_asgi import Node
from centrifuge_asgi.transports import websocket

from .support import SECRET, WS_PATH

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory, RunJs

pytestmark = pytest.mark.interop

Responder = Callable[[dict[str, Any]], Awaitable[Response]]


# --------------------------------------------------------------------------- backend


@dataclass
class Call:
    """One request the backend received."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]


def ok(result: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse({"result": result or {}})


def error(code: int, message: str, temporary: bool = False) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "temporary": temporary}})


def disconnect(code: int, reason: str) -> JSONResponse:
    return JSONResponse({"disconnect": {"code": code, "reason": reason}})


def payload(body: dict[str, Any]) -> Any:
    """The request payload, decoded from ``b64data`` in binary mode."""
    import json

    if "b64data" in body:
        return json.loads(base64.b64decode(body["b64data"]))
    return body.get("data")


@dataclass
class Backend:
    """A proxy backend: records every call; answers by path (overridable per test)."""

    calls: list[Call] = field(default_factory=list)
    overrides: dict[str, Responder] = field(default_factory=dict)
    slow_seconds: float = 1.0

    def app(self) -> Starlette:
        routes = [
            Route("/{path:path}", self._endpoint, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [c.body for c in self.calls if c.path == path]

    async def _endpoint(self, request: Request) -> Response:
        path = request.path_params["path"]
        body = await request.json()
        self.calls.append(Call(path, body, dict(request.headers)))
        responder = self.overrides.get(path) or getattr(self, "on_" + path.replace("/", "_"))
        response: Response = await responder(body)
        return response

    # -- default answers

    async def on_connect(self, body: dict[str, Any]) -> Response:
        data = payload(body) or {}
        if data.get("deny"):
            return error(1403, "connect denied")
        user = data.get("user", "")
        result: dict[str, Any] = {
            "user": user,
            "data": {"welcome": user},
            "info": {"name": user.title()},
            "channels": ["px:news"],
            "meta": {"tenant": "acme"},
        }
        if "ttl" in data:
            result["expire_at"] = int(time.time()) + data["ttl"]
        return ok(result)

    async def on_refresh(self, body: dict[str, Any]) -> Response:
        return ok({"expire_at": int(time.time()) + 3600})

    async def on_subscribe(self, body: dict[str, Any]) -> Response:
        channel = body["channel"]
        if "deny" in channel:
            return error(1403, "not allowed")
        if "kick" in channel:
            return disconnect(4501, "kicked")
        if "modify" in channel:
            return ok({"info": {"role": "vip"}, "data": {"greeting": "hi"}})
        if "expiring" in channel:
            return ok({"expire_at": int(time.time()) + 2})
        return ok()

    async def on_publish(self, body: dict[str, Any]) -> Response:
        channel = body["channel"]
        if "deny" in channel:
            return error(1404, "publish denied")
        if "modify" in channel:
            return ok({"data": {"modified": True, "original": payload(body)}})
        return ok()

    async def on_sub_refresh(self, body: dict[str, Any]) -> Response:
        return ok({"expire_at": int(time.time()) + 3600})

    async def on_rpc(self, body: dict[str, Any]) -> Response:
        method = body.get("method", "")
        if method == "fail":
            return error(1500, "backend says no")
        if method == "whoami":
            return ok({"data": {"user": body.get("user"), "meta": body.get("meta")}})
        return ok({"data": {"method": method, "echo": payload(body)}})

    async def on_slow(self, body: dict[str, Any]) -> Response:
        await asyncio.sleep(self.slow_seconds)
        return ok()


# --------------------------------------------------------------------------- node


def proxy_config(base: str) -> dict[str, Any]:
    """Every proxy kind pointed at ``base``; namespace ``px`` proxied, ``slow`` times out."""
    return {
        "client": {
            "token": {"hmac_secret_key": SECRET},
            "allowed_origins": ["*"],
            "proxy": {
                "connect": {"enabled": True, "endpoint": f"{base}/connect"},
                "refresh": {
                    "enabled": True,
                    "endpoint": f"{base}/refresh",
                    "include_connection_meta": True,
                },
            },
        },
        "channel": {
            "proxy": {
                "subscribe": {"endpoint": f"{base}/subscribe"},
                "publish": {"endpoint": f"{base}/publish"},
                "sub_refresh": {"endpoint": f"{base}/sub_refresh"},
            },
            "namespaces": [
                {
                    "name": "px",
                    "subscribe_proxy_enabled": True,
                    "publish_proxy_enabled": True,
                    "sub_refresh_proxy_enabled": True,
                    "presence": True,
                    "allow_presence_for_subscriber": True,
                },
                {
                    "name": "slow",
                    "subscribe_proxy_enabled": True,
                    "subscribe_proxy_name": "slow",
                    "publish_proxy_enabled": True,
                    "publish_proxy_name": "slow",
                },
            ],
        },
        "rpc": {
            "proxy": {"endpoint": f"{base}/rpc", "include_connection_meta": True},
            "without_namespace": {"proxy_enabled": True},
            "namespaces": [
                {"name": "slow", "proxy_enabled": True, "proxy_name": "slow"},
                {"name": "off"},
            ],
        },
        "proxies": [{"name": "slow", "endpoint": f"{base}/slow", "timeout": "300ms"}],
    }


def node_app(node: Node) -> Starlette:
    """Only the WebSocket endpoint (keeps these tests independent of other transports)."""
    return Starlette(routes=websocket.routes(node), lifespan=node.lifespan)


def serve(live_server: LiveServerFactory) -> tuple[Backend, LiveServer]:
    backend = Backend()
    backend_srv = live_server(backend.app())
    node = Node(proxy_config(backend_srv.http_url))
    return backend, live_server(node_app(node))


def ws(srv: LiveServer) -> str:
    return srv.ws_url(WS_PATH)


# --------------------------------------------------------------------------- tests


def test_connect_proxy_authenticates_tokenless_client(
    live_server: LiveServerFactory, run_js: RunJs
) -> None:
    backend, srv = serve(live_server)
    result = run_js("proxy_connect.mjs", ws(srv), timeout=15)
    assert result["data"] == {"welcome": "alice"}
    assert result["serverSubs"] == ["px:news"]
    assert result["denied"] == {"code": 1403, "reason": "connect denied"}
    [first, *_] = backend.bodies("connect")
    assert first["client"] == result["client"]
    assert first["transport"] == "websocket"
    assert first["protocol"] == "json" and first["encoding"] == "json"
    assert first["data"] == {"user": "alice"}
    assert first["name"] == "js"
    assert "meta" not in first  # never sent to the connect proxy


def test_rpc_proxy_answers_rpc(live_server: LiveServerFactory, run_js: RunJs) -> None:
    backend, srv = serve(live_server)
    result = run_js("proxy_rpc.mjs", ws(srv), timeout=15)
    assert result["echo"] == {"method": "echo", "echo": {"hello": "world"}}
    # the connection meta from the connect proxy goes to proxies with include_connection_meta
    assert result["whoami"] == {"user": "alice", "meta": {"tenant": "acme"}}
    assert result["failed"] == {"code": 1500, "message": "backend says no"}
    assert result["unknownNamespace"]["code"] == 104
    assert result["disabledNamespace"]["code"] == 108
    methods = [b["method"] for b in backend.bodies("rpc")]
    assert methods == ["echo", "whoami", "fail"]  # the 104/108 cases never reach it


def test_subscribe_and_publish_proxies_allow_deny_modify(
    live_server: LiveServerFactory, run_js: RunJs
) -> None:
    backend, srv = serve(live_server)
    result = run_js("proxy_channels.mjs", ws(srv), timeout=15)
    assert result["allowPubs"] == [{"text": "as is"}]
    assert result["modifySubscribeData"] == {"greeting": "hi"}
    assert result["modifyPubs"] == [{"modified": True, "original": {"text": "hello"}}]
    assert result["modifyPubChanInfo"] == {"role": "vip"}
    assert result["presenceChanInfo"] == {"role": "vip"}
    assert result["subscribeDenied"] == {"code": 1403, "reason": "not allowed"}
    assert result["publishDenied"] == {"code": 1404, "message": "publish denied"}
    assert result["kicked"] == {"code": 4501, "reason": "kicked"}
    subscribes = {b["channel"]: b for b in backend.bodies("subscribe")}
    assert set(subscribes) >= {"px:allow", "px:modify", "px:deny", "px:kick"}
    assert subscribes["px:allow"]["user"] == "carol"
    publishes = {b["channel"]: b for b in backend.bodies("publish")}
    assert publishes["px:modify"]["data"] == {"text": "hello"}
    assert publishes["px:deny"]["data"] == {"text": "nope"}


def test_refresh_and_sub_refresh_proxies_extend_expiry(
    live_server: LiveServerFactory, run_js: RunJs
) -> None:
    backend, srv = serve(live_server)
    result = run_js("proxy_refresh.mjs", ws(srv), timeout=15)
    assert result["disconnects"] == [] and result["unsubscribes"] == []
    assert result["state"] == "connected" and result["subState"] == "subscribed"
    assert result["echo"]["echo"] == {"after": "expiry"}
    [refresh] = backend.bodies("refresh")
    assert refresh["user"] == "bob" and refresh["meta"] == {"tenant": "acme"}
    [sub_refresh] = backend.bodies("sub_refresh")
    assert sub_refresh["channel"] == "px:expiring" and sub_refresh["user"] == "bob"


def test_slow_backend_times_out_with_100_and_client_stays_usable(
    live_server: LiveServerFactory, run_js: RunJs
) -> None:
    _, srv = serve(live_server)
    result = run_js("proxy_slow.mjs", ws(srv), timeout=15)
    assert result["slowRpc"]["code"] == 100
    assert result["slowPublish"]["code"] == 100
    assert result["slowSubscribe"] == 100
    assert result["rpcMs"] < 1000  # bounded by the 300ms proxy timeout, not the 1s sleep
    assert result["echo"] == {"method": "echo", "echo": {"still": "here"}}
    assert result["state"] == "connected"
