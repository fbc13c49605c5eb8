"""Map publish/remove proxies over gRPC: a grpcio backend (``CentrifugoProxy.MapPublish`` /
``MapRemove``) on loopback, the node under uvicorn, centrifuge-js 5.7.4 (JSON and Protobuf).

The first test runs tests/interop/test_map_proxy.py's scenario with the HTTP backend
replaced by a gRPC one answering the same way, so both transports show the same result;
the second covers a refusal, a failed call, a disconnect and an unreachable backend.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import grpc
import pytest

from centrifuge_asgi import Node
from centrifuge_asgi.grpc import proxy_pb2 as pb
from centrifuge_asgi.grpc import proxy_pb2_grpc as proxy_grpc

from .grpc_support import free_port
from .support import BASE_CONFIG, WS_PATH, token
from .test_map_proxy import SCENARIO_RESULT, proxied_node

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory, RunJs

RunScenario = Callable[[Node, str, str], Any]

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("protocol", ["json", "protobuf"])]


@dataclass
class MapBackend(proxy_grpc.CentrifugoProxyServicer):  # type: ignore[misc]
    """Answers as test_map_proxy's HTTP backend, plus scripted failures by key."""

    calls: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)

    def _record(self, method: str, request: Any, context: Any) -> None:
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.calls.append((method, request, md))

    def MapPublish(self, request: Any, context: Any) -> Any:
        self._record("MapPublish", request, context)
        if request.key == "deny":
            return pb.MapPublishResponse(error=pb.Error(code=1403, message="denied"))
        if request.key == "fail":
            context.abort(grpc.StatusCode.INTERNAL, "backend exploded")
        if request.key == "kick":
            return pb.MapPublishResponse(disconnect=pb.Disconnect(code=4501, reason="kicked"))
        result = pb.MapPublishResult(key="owned-" + request.key, tags={"by": "proxy"})
        return pb.MapPublishResponse(result=result)

    def MapRemove(self, request: Any, context: Any) -> Any:
        self._record("MapRemove", request, context)
        return pb.MapRemoveResponse(error=pb.Error(code=1001, message="not yours"))


@pytest.fixture
def backend() -> Iterator[tuple[MapBackend, int]]:
    impl = MapBackend()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    proxy_grpc.add_CentrifugoProxyServicer_to_server(impl, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield impl, port
    finally:
        server.stop(grace=None)


@dataclass
class GrpcEndpoint:
    """Stands in for test_map_proxy's backend server: every path is the gRPC backend."""

    port: int

    def url(self, path: str = "") -> str:
        return f"grpc://127.0.0.1:{self.port}"


@pytest.fixture
def run_scenario(live_server: LiveServerFactory, run_js: RunJs, protocol: str) -> RunScenario:
    """Serve a node and run a centrifuge-js scenario against it as ``user``."""

    def run(node: Node, script: str, user: str) -> Any:
        srv = live_server(node.asgi_app())
        return run_js(script, srv.ws_url(WS_PATH), token(user), protocol, timeout=20)

    return run


def test_same_scenario_as_the_http_map_proxy(
    run_scenario: RunScenario, backend: tuple[MapBackend, int], protocol: str
) -> None:
    impl, port = backend
    node = proxied_node(cast("LiveServer", GrpcEndpoint(port)))
    result = run_scenario(node, "sdk_map_proxy.mjs", "u1")
    assert result == SCENARIO_RESULT
    (publish, req, _), (remove, req2, _) = impl.calls
    assert publish == "MapPublish" and remove == "MapRemove"
    assert (req.channel, req.key, req.user, req.transport) == (
        "proxied:x",
        "wanted",
        "u1",
        "websocket",
    )
    assert (req.protocol, req.encoding) == (protocol, "json")  # no binary_encoding
    assert req.client and json.loads(req.data) == {"v": 1}
    assert (req2.channel, req2.key, req2.user, req2.client) == (
        "proxied:x",
        "owned-wanted",
        "u1",
        req.client,
    )


def failing_node(port: int) -> Node:
    cfg = copy.deepcopy(BASE_CONFIG)
    creds = {"credentials_key": "authorization", "credentials_value": "apikey m4p"}
    cfg["proxies"] = [
        {"name": "grpc", "endpoint": f"grpc://127.0.0.1:{port}", "timeout": "2s", "grpc": creds},
        {"name": "down", "endpoint": f"grpc://127.0.0.1:{free_port()}", "timeout": "1s"},
    ]

    def namespace(name: str, proxy: str) -> dict[str, Any]:
        return {
            "name": name,
            "subscription_type": "map",
            "allow_subscribe_for_client": True,
            "map": {
                "mode": "persistent",
                "publish_proxy_enabled": True,
                "publish_proxy_name": proxy,
                "remove_proxy_enabled": True,
                "remove_proxy_name": proxy,
            },
        }

    cfg["channel"]["namespaces"] += [namespace("grpcmap", "grpc"), namespace("down", "down")]
    return Node(cfg)


def test_refusal_failure_disconnect_unavailable(
    run_scenario: RunScenario, backend: tuple[MapBackend, int]
) -> None:
    impl, port = backend
    result = run_scenario(failing_node(port), "grpc_map_proxy_fail.mjs", "u2")
    assert result == {
        "denied": [1403, "denied"],
        "failed": 100,
        "unavailable": 100,
        "removeUnavailable": 100,
        "stillConnected": "connected",
        "disconnect": {"code": 4501, "reason": "kicked"},
    }
    assert [(m, r.key) for m, r, _ in impl.calls] == [
        ("MapPublish", "deny"),
        ("MapPublish", "fail"),
        ("MapPublish", "kick"),
    ]
    assert all(md["authorization"] == "apikey m4p" for _, _, md in impl.calls)
