"""Client map publishes and removes decided by an HTTP map proxy (a Starlette backend on
loopback) and by Python handlers, driven by centrifuge-js 5.7.4 (JSON and Protobuf)."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any, Final

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from centrifuge_asgi import ClientError, Node
from centrifuge_asgi.handlers import MapPublishEvent, MapPublishReply, MapRemoveEvent

from .support import BASE_CONFIG, WS_PATH, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory, RunJs

pytestmark = pytest.mark.interop


# what sdk_map_proxy.mjs reports against proxied_node (also with a gRPC backend)
SCENARIO_RESULT: Final = {
    "proxied": [
        {"key": "owned-wanted", "removed": False, "data": {"v": 1}, "tags": {"by": "proxy"}}
    ],
    "deniedRemove": 1001,
    "handled": [
        {"key": "k", "removed": False, "data": {"v": 1, "by": "u1"}},
        {"key": "k", "removed": True, "data": None},
    ],
    "refused": 4003,
}


def backend(calls: list[tuple[str, dict[str, Any]]]) -> Starlette:
    async def map_publish(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        calls.append(("map_publish", body))
        return JSONResponse({"result": {"key": "owned-" + body["key"], "tags": {"by": "proxy"}}})

    async def map_remove(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        calls.append(("map_remove", body))
        return JSONResponse({"error": {"code": 1001, "message": "not yours"}})

    routes = [
        Route("/map_publish", map_publish, methods=["POST"]),
        Route("/map_remove", map_remove, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def proxied_node(backend_srv: LiveServer) -> Node:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["proxies"] = [
        {"name": "mp", "endpoint": backend_srv.url("/map_publish")},
        {"name": "mr", "endpoint": backend_srv.url("/map_remove")},
    ]
    cfg["channel"]["namespaces"] += [
        {
            "name": "proxied",
            "subscription_type": "map",
            "allow_subscribe_for_client": True,
            "map": {
                "mode": "persistent",
                "publish_proxy_enabled": True,
                "publish_proxy_name": "mp",
                "remove_proxy_enabled": True,
                "remove_proxy_name": "mr",
            },
        },
        {
            "name": "handled",
            "subscription_type": "map",
            "allow_subscribe_for_client": True,
            "map": {"mode": "persistent", "allow_remove_for_subscriber": True},
        },
    ]
    node = Node(cfg)

    @node.on_map_publish
    async def on_map_publish(event: MapPublishEvent) -> MapPublishReply | None:
        if event.key == "forbidden":
            raise ClientError(4003, "forbidden key")
        return MapPublishReply(data={"v": event.data["v"], "by": event.client.user})

    @node.on_map_remove
    async def on_map_remove(event: MapRemoveEvent) -> None:
        return None  # the namespace's allow_remove_for_* flags decide

    return node


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
def test_map_proxy_and_handlers(
    live_server: LiveServerFactory, run_js: RunJs, protocol: str
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    backend_srv = live_server(backend(calls))
    srv = live_server(proxied_node(backend_srv).asgi_app())
    result = run_js("sdk_map_proxy.mjs", srv.ws_url(WS_PATH), token("u1"), protocol, timeout=20)
    assert result == SCENARIO_RESULT
    (kind, body), (kind2, body2) = calls
    assert (kind, body["channel"], body["key"], body["user"]) == (
        "map_publish",
        "proxied:x",
        "wanted",
        "u1",
    )
    assert "data" in body or "b64data" in body
    assert (kind2, body2["key"]) == ("map_remove", "owned-wanted")
