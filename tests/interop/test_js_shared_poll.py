"""Shared poll subscriptions driven by the official centrifuge-js 5.7.4 SDK, JSON and Protobuf.

The scenario (``tests/js/scenarios/sdk_shared_poll.mjs``) signs its track batches the way
Centrifugo's docs tell a backend to. The refresh backend is a Starlette app on loopback
reached through the ``shared_poll_refresh`` HTTP proxy, a grpcio server behind a
``grpc://`` proxy, or the Python handler registered with ``@node.on_shared_poll_refresh``;
all serve the same :class:`Backend`, whose state the scenario changes through RPCs. A last
test runs two nodes on Redis for ``shared_poll_publish``.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from centrifuge_asgi.handlers import (
    RPCEvent,
    SharedPollRefreshEvent,
    SharedPollRefreshReply,
    SharedPollResult,
)
from centrifuge_asgi.node import Node
from tests.unit.test_redis_engine import require_main_redis, unique_prefix

from .support import BASE_CONFIG, WS_PATH, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory, RunJs

pytestmark = pytest.mark.interop

POLL_SECRET = "shared-poll-secret"
INTERVAL = 0.3  # refresh_interval of the test namespaces (seconds)


class Backend:
    """The application's data: what a refresh answers, and a log of the keys asked for."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, Any] = {}
        self.versions: dict[str, int] = {}
        self.removed: set[str] = set()
        self.calls: list[list[str]] = []

    def refresh(self, channel: str, keys: list[str], versioned: bool) -> list[dict[str, Any]]:
        with self.lock:
            self.calls.append(keys)
            out: list[dict[str, Any]] = []
            for key in keys:
                if key in self.removed:
                    out.append({"key": key, "removed": True})
                    continue
                default = {"price": 1} if versioned else {"votes": 1}
                item = {"key": key, "data": self.data.get(key, default)}
                if versioned:
                    item["version"] = self.versions.get(key, 1)
                out.append(item)
            return out

    def set(self, key: str, data: Any) -> None:
        with self.lock:
            self.data[key] = data
            self.versions[key] = self.versions.get(key, 1) + 1


def config(proxy_endpoint: str = "") -> dict[str, Any]:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["shared_poll"] = {"hmac_secret_key": POLL_SECRET}
    if proxy_endpoint:
        cfg["channel"]["proxy"] = {"shared_poll_refresh": {"endpoint": proxy_endpoint}}
    common = {"refresh_interval": f"{int(INTERVAL * 1000)}ms", "max_keys_per_connection": 4}
    cfg["channel"]["namespaces"] += [
        {
            "name": "votes",
            "subscription_type": "shared_poll",
            "allow_subscribe_for_client": True,
            "shared_poll": dict(common),
        },
        {
            "name": "prices",
            "subscription_type": "shared_poll",
            "allow_subscribe_for_client": True,
            "shared_poll": {**common, "mode": "versioned", "publish_enabled": True},
        },
        {
            "name": "deltas",
            "subscription_type": "shared_poll",
            "allow_subscribe_for_client": True,
            "allowed_delta_types": ["fossil"],
            "shared_poll": dict(common),
        },
    ]
    return cfg


def backend_app(backend: Backend) -> Starlette:
    """The refresh endpoint as an application backend would serve it."""

    async def refresh(request: Request) -> JSONResponse:
        body = await request.json()
        keys = [item["key"] for item in body["items"]]
        versioned = body["channel"].startswith("prices:")
        items = backend.refresh(body["channel"], keys, versioned)
        return JSONResponse({"result": {"items": items}})

    return Starlette(routes=[Route("/refresh", refresh, methods=["POST"])])


@pytest.fixture
def grpc_backend() -> Iterator[tuple[Backend, int]]:
    """The same backend as a grpcio server of Centrifugo's ``SharedPollRefresh``."""
    import grpc  # the grpc extra is in the dev lock

    from centrifuge_asgi.grpc import proxy_pb2 as pb
    from centrifuge_asgi.grpc import proxy_pb2_grpc

    backend = Backend()

    class Servicer(proxy_pb2_grpc.CentrifugoProxyServicer):  # type: ignore[misc]
        def SharedPollRefresh(self, request: Any, context: Any) -> Any:
            keys = [item.key for item in request.items]
            versioned = request.channel.startswith("prices:")
            items = []
            for item in backend.refresh(request.channel, keys, versioned):
                data = json.dumps(item["data"]).encode() if "data" in item else b""
                items.append(
                    pb.SharedPollRefreshResultItem(
                        key=item["key"],
                        data=data,
                        version=item.get("version", 0),
                        removed=item.get("removed", False),
                    )
                )
            return pb.SharedPollRefreshResponse(result=pb.SharedPollRefreshResult(items=items))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    proxy_pb2_grpc.add_CentrifugoProxyServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield backend, port
    server.stop(grace=None)


def poll_node(
    backend: Backend, proxy_endpoint: str = "", node_config: dict[str, Any] | None = None
) -> Node:
    node = Node(node_config or config(proxy_endpoint))

    if not proxy_endpoint:

        @node.on_shared_poll_refresh
        async def refresh(event: SharedPollRefreshEvent) -> SharedPollRefreshReply:
            keys = [item.key for item in event.items]
            items = backend.refresh(event.channel, keys, event.versioned)
            return SharedPollRefreshReply(items=[SharedPollResult(**item) for item in items])

    def body(event: RPCEvent) -> Any:
        raw = event.data
        return json.loads(raw) if isinstance(raw, bytes | bytearray) else raw

    @node.on_rpc()
    async def rpc(event: RPCEvent) -> Any:
        args = body(event)
        if event.method == "set":
            backend.set(args["key"], args["data"])
        elif event.method == "remove":
            backend.removed.add(args["key"])
        elif event.method == "reset_calls":
            backend.calls.clear()
        elif event.method == "calls":
            return list(backend.calls)
        elif event.method == "drop_and_set":
            await node.disconnect(event.client.user, code=3011, reason="force reconnect")
            backend.set(args["key"], args["data"])
        elif event.method == "publish":
            channel, key = args["channel"], args["key"]
            await node.shared_poll_publish(channel, key, args["data"], args["version"])
        return {}

    return node


def check(result: dict[str, Any]) -> None:
    assert result["epochs"] == {"versionless": True, "versioned": ""}
    assert result["cold"] == {"a": {"votes": 1}, "b": {"votes": 1}}
    assert result["versionAdvanced"] is True
    assert result["second"] == {"votes": 2}
    # one backend call per key per interval for both trackers of "a": 1.5 s of 0.3 s cycles
    calls = result["calls"]
    assert all(len(keys) == len(set(keys)) for keys in calls), calls
    per_key = {key: sum(key in keys for keys in calls) for key in ("a", "b")}
    assert 2 <= per_key["a"] <= 6 and per_key["a"] == per_key["b"], calls  # ~5; per tracker: ~10
    assert result["tracked"] == ["a"]  # b was removed by the backend
    assert result["afterUntrack"] == []
    assert result["replay"] == {"getSignatureCalls": 0}  # the cached signature was replayed
    assert result["forgedUpdates"] == 0
    errors = result["errors"]
    assert {"channel": "votes:forged", "type": "track", "code": 103} in errors
    assert {"channel": "votes:exp", "type": "track", "code": 109} in errors
    assert {"channel": "votes:big", "type": "track", "code": 106} in errors
    assert len(errors) == 3, errors
    assert result["expired"] == {"data": {"votes": 1}, "getSignatureCalls": 1}
    assert result["limitUpdates"] == 0
    versioned = result["versioned"]
    polled = {"key": "p1", "removed": False, "data": {"price": 1}, "version": 1}
    assert versioned["polled"] == polled
    assert versioned["published"] == {
        "key": "p1",
        "removed": False,
        "data": {"price": 42},
        "version": 100,
    }
    assert versioned["count"] == 2  # the stale publish (version 50) was dropped


def run_scenario(run_js: RunJs, srv: LiveServer, protocol: str) -> None:
    """``sdk_shared_poll.mjs`` against ``srv`` in ``protocol``, and its result checked."""
    result = run_js(
        "sdk_shared_poll.mjs",
        srv.ws_url(WS_PATH),
        token("u1"),
        token("u2"),
        protocol,
        POLL_SECRET,
        timeout=40,
    )
    check(result)


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
def test_js_shared_poll_http_proxy(
    live_server: LiveServerFactory, run_js: RunJs, protocol: str
) -> None:
    backend = Backend()
    api = live_server(backend_app(backend))
    srv = live_server(poll_node(backend, api.url("/refresh")).asgi_app())
    run_scenario(run_js, srv, protocol)


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
def test_js_shared_poll_python_handler(
    live_server: LiveServerFactory, run_js: RunJs, protocol: str
) -> None:
    backend = Backend()
    srv = live_server(poll_node(backend).asgi_app())
    run_scenario(run_js, srv, protocol)


def test_js_shared_poll_grpc_proxy(
    live_server: LiveServerFactory, run_js: RunJs, grpc_backend: tuple[Backend, int]
) -> None:
    backend, port = grpc_backend
    srv = live_server(poll_node(backend, f"grpc://127.0.0.1:{port}").asgi_app())
    run_scenario(run_js, srv, "json")


def test_js_shared_poll_publish_reaches_other_nodes(
    live_server: LiveServerFactory, run_js: RunJs
) -> None:
    """Two nodes on Redis: a publish on node A reaches a tracker connected to node B."""
    require_main_redis()
    prefix = unique_prefix()
    backend = Backend()
    servers = []
    for _ in range(2):
        cfg = config()
        cfg["engine"] = {"type": "redis", "redis": {"address": "127.0.0.1:6379", "prefix": prefix}}
        node = poll_node(backend, node_config=cfg)
        servers.append(live_server(node.asgi_app()))
    a, b = servers
    result = run_js(
        "sdk_shared_poll_multinode.mjs",
        a.ws_url(WS_PATH),
        b.ws_url(WS_PATH),
        token("u1"),
        POLL_SECRET,
        timeout=20,
    )
    assert result["updates"] == [
        {"key": "p1", "data": {"price": 1}, "version": 1},
        {"key": "p1", "data": {"price": 7}, "version": 100},
    ]


def test_js_shared_poll_publish_over_grpc_api(
    live_server: LiveServerFactory, run_js: RunJs
) -> None:
    """``SharedPollPublish`` of the gRPC server API reaches a centrifuge-js tracker."""
    import grpc

    from centrifuge_asgi.grpc import api_pb2 as pb
    from centrifuge_asgi.grpc.api_pb2_grpc import CentrifugoApiStub

    from .grpc_support import free_port

    backend = Backend()
    cfg = config()
    port = free_port()
    cfg["grpc_api"] = {"enabled": True, "address": "127.0.0.1", "port": port}
    node = poll_node(backend, node_config=cfg)
    errors: list[int] = []

    @node.on_rpc("publish")
    async def publish_over_grpc(event: RPCEvent) -> Any:
        args = event.data
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = CentrifugoApiStub(channel)
            data = json.dumps(args["data"]).encode()
            bad = pb.SharedPollPublishRequest(channel=args["channel"], key=args["key"], data=data)
            errors.append((await stub.SharedPollPublish(bad)).error.code)  # version 0: 107
            request = pb.SharedPollPublishRequest(
                channel=args["channel"], key=args["key"], data=data, version=args["version"]
            )
            reply = await stub.SharedPollPublish(request)
            errors.append(reply.error.code)
        return {}

    srv = live_server(node.asgi_app())
    url = srv.ws_url(WS_PATH)
    result = run_js("sdk_shared_poll_multinode.mjs", url, url, token("u1"), POLL_SECRET, timeout=20)
    assert result["updates"][1] == {"key": "p1", "data": {"price": 7}, "version": 100}
    assert errors == [107, 0]


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
def test_js_shared_poll_fossil_delta(
    live_server: LiveServerFactory, run_js: RunJs, protocol: str
) -> None:
    """delta: 'fossil' is negotiated per subscription; changes after the first go as deltas."""
    backend = Backend()
    srv = live_server(poll_node(backend).asgi_app())
    result = run_js(
        "sdk_shared_poll_delta.mjs",
        srv.ws_url(WS_PATH),
        token("u1"),
        protocol,
        POLL_SECRET,
        timeout=20,
    )
    assert result == {
        "ns": [0, 1, 2, 3, "removed"],
        "intact": True,
        "numFull": 2,  # the first data, and the removal (its "null")
        "numDelta": 3,
    }
