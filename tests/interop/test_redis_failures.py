"""Redis kill/restart under two live nodes, as centrifuge-js clients see it.

Each test runs a private ``redis-server`` on a spare port (killed at teardown). Node B's
``outage`` RPC kills Redis with SIGKILL, times a publish that must fail with error 100,
and restarts Redis 1.5 s later on the same port: from its append-only file ("stream
survived") or empty ("stream lost"). The Redis-level failure cases (every call failing
fast, resubscription of 600 channels, the liveness probe, NOSCRIPT) are in
``tests/unit/test_redis_engine.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from centrifuge_asgi.errors import ClientError
from centrifuge_asgi.handlers import RPCEvent
from centrifuge_asgi.node import Node
from tests.unit.test_redis_engine import RedisProcess, unique_prefix

from .support import WS_PATH, token
from .test_multinode import redis_cluster_config

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory, RunJs

pytestmark = pytest.mark.interop


@pytest.fixture(params=[True, False], ids=["stream survived", "stream lost"])
def redis(request: pytest.FixtureRequest) -> Iterator[RedisProcess]:
    proc = RedisProcess(persistent=request.param).start()
    try:
        yield proc
    finally:
        proc.stop()


def serve(live_server: LiveServerFactory, config: dict[str, Any], redis: RedisProcess) -> Any:
    node = Node(config)
    timers: list[threading.Timer] = []

    @node.on_rpc("publish")
    async def rpc_publish(event: RPCEvent) -> Any:
        for item in event.data["items"]:
            await node.publish(event.data["channel"], item)
        return {}

    @node.on_rpc("outage")
    async def rpc_outage(event: RPCEvent) -> Any:
        redis.kill()
        started = time.monotonic()
        code = 0
        try:
            await node.publish("news:while-down", {"n": 0})
        except ClientError as exc:
            code = exc.code
        elapsed = time.monotonic() - started
        timer = threading.Timer(1.5, redis.start)
        timers.append(timer)
        timer.start()
        return {"code": code, "elapsed": elapsed}

    srv: LiveServer = live_server(node.asgi_app())
    return node, srv, timers


def test_clients_recover_exactly_when_the_stream_survived(
    redis: RedisProcess, live_server: LiveServerFactory, run_js: RunJs
) -> None:
    persistent = redis.persistent
    config = redis_cluster_config(unique_prefix())
    config["engine"]["redis"].update(
        address=redis.address, io_timeout="1s", connect_timeout="500ms"
    )
    _, srv_a, _ = serve(live_server, config, redis)
    _, srv_b, timers = serve(live_server, config, redis)
    try:
        result = run_js(
            "multinode_redis_outage.mjs",
            srv_a.ws_url(WS_PATH),
            srv_b.ws_url(WS_PATH),
            token("x"),
            token("y"),
            token("p"),
            "news:outage",
            "chat:stay",
            timeout=30,
        )
    finally:
        for timer in timers:
            timer.join(15)
    assert result["outage"]["code"] == 100  # the API's internal error, no hang
    assert result["outage"]["elapsed"] < 3.0  # io_timeout (1 s) + 2 s margin: no hang
    assert result["subErrors"] == [100]  # subscribing while Redis is down: error 100
    first, again = result["subscribedX"]
    assert first == {"wasRecovering": False, "recovered": False}
    assert again == {"wasRecovering": True, "recovered": persistent}
    assert result["gotX"] == ([1, 2, 3, 4] if persistent else [1, 4])  # never a silent gap
    assert result["gotY"] == [5]  # node A resubscribed chat:stay by itself
