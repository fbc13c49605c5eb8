"""A connection's publications through the Redis engine are pipelined (session.py,
engines/redis_pipeline.py): sent many per round trip, replied to in command order, each
reply what Redis answered for that publication, and any other command of the connection
waits until they are answered. Driven by centrifuge-python and by a raw WebSocket client
against a real uvicorn on the shared Redis (127.0.0.1:6379, a unique prefix per test).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest
from centrifuge import Client, PublicationContext, SubscriptionEventHandler
from websockets.sync.client import connect as ws_connect

from centrifuge_asgi.engines.redis import RedisBroker
from tests.unit.test_redis_engine import require_main_redis, sync_redis, unique_prefix

from .support import WS_PATH, make_config, make_node, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory

pytestmark = pytest.mark.interop

COUNT = 60


def redis_node(live_server: LiveServerFactory) -> tuple[Any, LiveServer, str]:
    require_main_redis()
    prefix = unique_prefix()
    cfg = make_config()
    cfg["engine"] = {"type": "redis", "redis": {"address": "127.0.0.1:6379", "prefix": prefix}}
    cfg["channel"]["namespaces"].append(
        {
            "name": "pipe",
            "allow_subscribe_for_client": True,
            "allow_publish_for_client": True,
            "allow_history_for_client": True,
            "history_size": 100,
            "history_ttl": "300s",
        }
    )
    node = make_node(cfg)
    return node, live_server(node.asgi_app()), prefix


def batches(node: Any) -> int:
    broker = node.broker
    assert isinstance(broker, RedisBroker)
    return sum(pipe.batches for pipe in broker._pipes.values())


@pytest.mark.anyio
async def test_python_sdk_publications_arrive_in_order_and_share_round_trips(
    live_server: LiveServerFactory,
) -> None:
    node, srv, _ = redis_node(live_server)
    received: list[int] = []
    done = asyncio.Event()

    class Handler(SubscriptionEventHandler):
        async def on_publication(self, ctx: PublicationContext) -> None:
            received.append(ctx.pub.data["n"])
            if len(received) == COUNT:
                done.set()

    reader = Client(srv.ws_url(WS_PATH), token=token("reader"), timeout=5)
    writer = Client(srv.ws_url(WS_PATH), token=token("writer"), timeout=5)
    sub = reader.new_subscription("pipe:sdk", events=Handler())
    await reader.connect()
    await writer.connect()
    try:
        await sub.subscribe()
        await sub.ready(timeout=5)
        # issued back to back: every command is on the wire before the first reply
        await asyncio.gather(*(writer.publish("pipe:sdk", {"n": n}) for n in range(COUNT)))
        await asyncio.wait_for(done.wait(), 10)
        assert received == list(range(COUNT))
        history = await writer.history("pipe:sdk", limit=-1)
        assert history.offset == COUNT  # the command after them saw every publication
        assert [p.data["n"] for p in history.publications] == list(range(COUNT))
        assert batches(node) < COUNT  # several publications shared a round trip
    finally:
        await writer.disconnect()
        await reader.disconnect()


def _replies(conn: Any, count: int) -> list[dict[str, Any]]:
    replies: list[dict[str, Any]] = []
    while len(replies) < count:
        replies += [json.loads(line) for line in str(conn.recv(timeout=10)).split("\n") if line]
    return replies


def test_replies_keep_command_order_and_a_failed_publication_is_reported_alone(
    live_server: LiveServerFactory,
) -> None:
    node, srv, prefix = redis_node(live_server)
    redis = sync_redis()
    redis.set(f"{prefix}.stream.meta.pipe:broken", "not a hash", ex=60)  # its script fails
    try:
        with ws_connect(srv.ws_url(WS_PATH), open_timeout=5) as conn:
            conn.send(json.dumps({"id": 1, "connect": {"token": token("u1")}}))
            assert "connect" in _replies(conn, 1)[0]
            commands = []
            for i in range(2, 32):
                channel = "pipe:broken" if i == 10 else "pipe:ok"
                commands.append({"id": i, "publish": {"channel": channel, "data": {"i": i}}})
            commands.append({"id": 32, "history": {"channel": "pipe:ok", "limit": 0}})
            conn.send("\n".join(json.dumps(c) for c in commands))
            replies = _replies(conn, 31)
        assert [r["id"] for r in replies] == list(range(2, 33))
        for reply in replies[:-1]:
            if reply["id"] == 10:
                assert reply["error"]["code"] == 100  # Redis refused this one only
            else:
                assert reply == {"id": reply["id"], "publish": {}}
        assert replies[-1]["history"]["offset"] == 29  # every other publication landed
        assert batches(node) < 30
    finally:
        redis.delete(f"{prefix}.stream.meta.pipe:broken")
