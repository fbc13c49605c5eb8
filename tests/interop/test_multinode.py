"""Several nodes behaving as one cluster, driven by centrifuge-js 5.7.4.

Nodes share the Redis at 127.0.0.1:6379 (a unique prefix per test) or the nats-server at
127.0.0.1:4222. Most tests run each node as its own in-process uvicorn (each with its own
Node, event loop and Redis connections: the same wire path as separate machines); the
fan-out tests run real ``python -m centrifuge_asgi serve`` processes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from centrifuge_asgi.handlers import RPCEvent
from centrifuge_asgi.node import Node
from tests.unit.test_redis_engine import (
    free_port,
    need,
    port_open,
    require_main_redis,
    unique_prefix,
)

from .support import BASE_CONFIG, WS_PATH, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory, RunJs

pytestmark = pytest.mark.interop


def redis_cluster_config(prefix: str, **client: Any) -> dict[str, Any]:
    """The standard interop config on the shared Redis under ``prefix``."""
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["client"].update(client)
    cfg["engine"] = {"type": "redis", "redis": {"address": "127.0.0.1:6379", "prefix": prefix}}
    return cfg


def nats_cluster_config(prefix: str) -> dict[str, Any]:
    """NATS fan-out; presence stays in each node's memory (the documented trade-off)."""
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["broker"] = {
        "enabled": True,
        "type": "nats",
        "nats": {"url": "nats://127.0.0.1:4222", "prefix": prefix},
    }
    return cfg


def serve_node(live_server: LiveServerFactory, config: dict[str, Any]) -> tuple[Node, LiveServer]:
    node = Node(config)

    @node.on_rpc("disconnect")
    async def rpc_disconnect(event: RPCEvent) -> Any:
        await node.disconnect(event.data["user"])
        return {}

    return node, live_server(node.asgi_app())


def ws(srv: LiveServer) -> str:
    return srv.ws_url(WS_PATH)


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# --------------------------------------------------------------------------- processes


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``ports = processes(config, count)`` runs ``count`` CLI servers."""
    started: list[subprocess.Popen[bytes]] = []

    def start(config: dict[str, Any], count: int) -> list[int]:
        path = tmp_path / f"config-{len(started)}.json"
        path.write_text(json.dumps(config))
        ports = []
        for _ in range(count):
            port = free_port()
            cmd = [sys.executable, "-m", "centrifuge_asgi", "serve", "-c", str(path)]
            proc = subprocess.Popen(
                [*cmd, "-a", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            started.append(proc)
            ports.append(port)
        for port, proc in zip(ports, started[-count:], strict=True):
            deadline = time.monotonic() + 15
            while not port_open("127.0.0.1", port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"server on port {port} did not start:\n{err[-3000:]}")
                time.sleep(0.05)
        return ports

    yield start
    for proc in started:
        proc.terminate()
    for proc in started:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def ws_port(port: int) -> str:
    return f"ws://127.0.0.1:{port}{WS_PATH}"


def test_redis_two_processes_fan_out_and_share_presence(processes: Any, run_js: RunJs) -> None:
    require_main_redis()
    a, b = processes(redis_cluster_config(unique_prefix()), 2)
    result = run_js(
        "multinode_fanout.mjs", ws_port(a), ws_port(b), token("alice"), token("bob"), "chat:room"
    )
    assert result["gotA"] == ["a", "b"]
    assert result["gotB"] == ["a", "b"]
    assert result["clients"]["b"] in result["joinsA"]
    assert result["presence"] == sorted(result["clients"].values())
    assert result["stats"] == {"clients": 2, "users": 2}


def test_nats_two_processes_fan_out(processes: Any, run_js: RunJs) -> None:
    if not port_open("127.0.0.1", 4222):
        need("NATS is not running at 127.0.0.1:4222 (.ci/run starts nats-server)")
    a, b = processes(nats_cluster_config(unique_prefix()), 2)
    result = run_js(
        "multinode_fanout.mjs", ws_port(a), ws_port(b), token("alice"), token("bob"), "chat:room"
    )
    assert result["gotA"] == ["a", "b"]
    assert result["gotB"] == ["a", "b"]
    assert result["clients"]["b"] in result["joinsA"]  # join/leave travel over NATS
    # memory presence: each node knows only its own clients (documented for NATS)
    assert result["presence"] == [result["clients"]["a"]]
    assert result["stats"] == {"clients": 1, "users": 1}


# --------------------------------------------------------------------------- in-process


@pytest.fixture
def two_nodes(live_server: LiveServerFactory) -> tuple[tuple[Node, LiveServer], ...]:
    require_main_redis()
    config = redis_cluster_config(unique_prefix())
    return serve_node(live_server, config), serve_node(live_server, config)


def test_recovery_after_reconnecting_to_another_node(
    two_nodes: tuple[tuple[Node, LiveServer], ...], run_js: RunJs
) -> None:
    (_, srv_a), (_, srv_b) = two_nodes
    result = run_js("multinode_recovery.mjs", ws(srv_a), ws(srv_b), token("carol"), "news:multi")
    assert result["wasRecovering"] is True
    assert result["recovered"] is True
    assert result["epoch"] == result["since"]["epoch"]
    assert result["recoveredPubs"] == [{"offset": 2, "n": 2}, {"offset": 3, "n": 3}]


def test_disconnect_reaches_the_user_on_every_node(
    two_nodes: tuple[tuple[Node, LiveServer], ...], run_js: RunJs
) -> None:
    (_, srv_a), (node_b, srv_b) = two_nodes
    result = run_js("multinode_disconnect.mjs", ws(srv_a), ws(srv_b), token("bob"), token("admin"))
    assert result["a"] == {"code": 3503, "reason": "force disconnect"}
    assert result["b"] == {"code": 3503, "reason": "force disconnect"}
    assert result["adminState"] == "disconnected"  # it closed itself, after the RPC
    wait_until(lambda: node_b.registry.num_clients == 0)


def test_info_lists_every_node(live_server: LiveServerFactory) -> None:
    require_main_redis()
    config = redis_cluster_config(unique_prefix())
    nodes = [serve_node(live_server, config) for _ in range(3)]
    uids = sorted(node.node_id for node, _ in nodes)

    def listed(node: Node, srv: LiveServer) -> list[str]:
        async def info() -> dict[str, Any]:
            return node.info()

        return sorted(n["uid"] for n in srv.call(info())["nodes"])

    for node, srv in nodes:
        wait_until(lambda node=node, srv=srv: listed(node, srv) == uids, timeout=8)
    node, srv = nodes[0]

    async def info() -> dict[str, Any]:
        return node.info()

    entry = next(n for n in srv.call(info())["nodes"] if n["uid"] == nodes[1][0].node_id)
    assert set(entry) >= {"uid", "name", "version", "num_clients", "num_users", "uptime"}


@contextlib.contextmanager
def http_stream(srv: LiveServer) -> Iterator[tuple[httpx.Client, Iterator[str], dict[str, Any]]]:
    """An HTTP-streaming connection of user u1 opened on ``srv``: an HTTP client, the
    stream's lines and its connect result."""
    connect = json.dumps({"id": 1, "connect": {"token": token("u1")}})
    with (
        httpx.Client(timeout=10) as http,
        http.stream(
            "POST",
            srv.url("/connection/http_stream"),
            content=connect,
            headers={"content-type": "application/json"},
        ) as stream,
    ):
        lines = stream.iter_lines()
        yield http, lines, json.loads(next(lines))["connect"]


def test_emulation_post_reaches_the_stream_on_another_node(
    live_server: LiveServerFactory,
) -> None:
    """HTTP-streaming opened on node A; its /emulation POSTs land on node B and are routed."""
    require_main_redis()
    config = redis_cluster_config(unique_prefix())
    config["http_stream"] = {"enabled": True}
    node_a, srv_a = serve_node(live_server, config)
    _, srv_b = serve_node(live_server, config)
    with http_stream(srv_a) as (http, lines, result):
        assert result["node"] == node_a.node_id and result["session"]
        subscribe = json.dumps({"id": 2, "subscribe": {"channel": "chat:emu"}})
        answer = http.post(
            srv_b.url("/emulation"),
            json={"session": result["session"], "node": result["node"], "data": subscribe},
        )
        assert answer.status_code == 204
        reply = json.loads(next(lines))
        while reply == {}:  # a ping may come first
            reply = json.loads(next(lines))
        assert reply == {"id": 2, "subscribe": {}}
        # A node id nobody owns is refused.
        unknown = http.post(
            srv_b.url("/emulation"),
            json={"session": result["session"], "node": "no-such-node", "data": subscribe},
        )
        assert unknown.status_code == 404


def test_channels_survey_sums_every_node(live_server: LiveServerFactory) -> None:
    require_main_redis()
    config = redis_cluster_config(unique_prefix())
    (node_a, srv_a), (_, srv_b) = (serve_node(live_server, config) for _ in range(2))

    async def peers(node: Node) -> int:
        return len(node.info()["nodes"])

    wait_until(lambda: srv_a.call(peers(node_a)) == 2, timeout=8)
    with contextlib.ExitStack() as stack:
        for srv, user, channel in [
            (srv_a, "u1", "chat:both"),
            (srv_b, "u2", "chat:both"),
            (srv_b, "u3", "chat:b-only"),
        ]:
            conn = stack.enter_context(ws_connect(ws(srv), open_timeout=5))
            conn.send(json.dumps({"id": 1, "connect": {"token": token(user)}}))
            conn.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
            replies: list[Any] = []
            while len(replies) < 2:
                replies += [json.loads(line) for line in str(conn.recv(timeout=5)).split("\n")]
        everything = {"chat:both": 2, "chat:b-only": 1}
        assert srv_a.call(node_a.cluster_channels("chat:*")) == everything
        assert srv_a.call(node_a.cluster_channels("chat:b*")) == everything
        assert node_a.channels() == {"chat:both": 1}  # the local view stays local


def test_server_api_info_asks_every_node(
    live_server: LiveServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's info asks each node for its statistics (a survey), so a client that just
    connected to node B is counted by node A although B announced itself before it came."""
    from centrifuge_asgi import cluster

    require_main_redis()
    monkeypatch.setattr(cluster, "NODE_INTERVAL", 60.0)  # no announcement during the test
    monkeypatch.setattr(cluster, "NODE_TTL", 120.0)
    config = redis_cluster_config(unique_prefix())
    config["http_api"] = {"key": "api-key"}
    (node_a, srv_a), (node_b, srv_b) = (serve_node(live_server, config) for _ in range(2))

    def api_info() -> dict[str, dict[str, Any]]:
        answer = httpx.post(
            srv_a.url("/api/info"), json={}, headers={"X-API-Key": "api-key"}, timeout=5
        )
        assert answer.status_code == 200, answer.text
        return {n["uid"]: n for n in answer.json()["result"]["nodes"]}

    # the nodes met (each announces itself at start and answers a newcomer at once)
    wait_until(lambda: node_b.node_id in api_info(), timeout=8)
    with ws_connect(ws(srv_b), open_timeout=5) as conn:
        conn.send(json.dumps({"id": 1, "connect": {"token": token("u1")}}))
        assert "connect" in json.loads(str(conn.recv(timeout=5)).split("\n")[0])
        announced = {n["uid"]: n for n in node_a.info()["nodes"]}[node_b.node_id]
        assert announced["num_clients"] == 0  # what B last announced
        assert api_info()[node_b.node_id]["num_clients"] == 1  # what B says when asked


def test_forwarded_emulation_frames_are_acknowledged(live_server: LiveServerFactory) -> None:
    """Node B forwards /emulation frames to node A's stream as requests A replies to: 204
    once queued there, 503 when A's stream queue stays full (as for a stream on B)."""
    require_main_redis()
    config = redis_cluster_config(unique_prefix())
    config["http_stream"] = {"enabled": True}
    node_a, srv_a = serve_node(live_server, config)
    node_b, srv_b = serve_node(live_server, config)
    wait_until(lambda: "emulation" in node_b.cluster._answers.get(node_a.node_id, ()), timeout=8)
    with http_stream(srv_a) as (http, lines, result):
        subscribe = json.dumps({"id": 2, "subscribe": {"channel": "chat:ack"}})
        body = {"session": result["session"], "node": node_a.node_id, "data": subscribe}
        assert http.post(srv_b.url("/emulation"), json=body).status_code == 204
        reply = json.loads(next(lines))
        while reply == {}:  # a ping may come first
            reply = json.loads(next(lines))
        assert reply == {"id": 2, "subscribe": {}}

        async def full(session_id: str, frame: bytes) -> bool:
            raise TimeoutError  # as EmulationStream.feed when the queue stays full

        node_a.registry.feed_emulation = full  # type: ignore[method-assign]
        assert http.post(srv_b.url("/emulation"), json=body).status_code == 503
