"""The Redis map broker: the map broker contract on the Redis at 127.0.0.1:6379 (a unique
key prefix per test), plus Redis-only behaviour. Skips locally without Redis; fails
under ``CI=true``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from centrifuge_asgi.config import Config
from centrifuge_asgi.engines.map_base import MapChannelOptions, MapPublishOptions
from centrifuge_asgi.engines.map_redis import RedisMapBroker
from tests.engine_contract import RecordingHandler, wait_for
from tests.map_broker_contract import MapBrokerContract, MapUnderTest
from tests.unit.test_redis_engine import require_main_redis, unique_prefix


def _broker(prefix: str) -> RedisMapBroker:
    cfg = Config.from_dict({"map_broker": {"type": "redis", "redis": {"prefix": prefix}}})
    broker = RedisMapBroker.from_config(cfg.map_broker.redis)
    broker._cleanup_interval = 0.05
    return broker


class TestRedisMapBroker(MapBrokerContract):
    @pytest.fixture
    async def map_engine(self) -> AsyncIterator[MapUnderTest]:
        require_main_redis()
        handler = RecordingHandler()
        broker = _broker(unique_prefix())
        await broker.start(handler)
        yield MapUnderTest(broker, handler, anyio.sleep)
        await broker.close()


@pytest.mark.anyio
async def test_two_brokers_share_state_and_changes() -> None:
    """Two nodes on one Redis: a change made through one reaches the other's handler."""
    require_main_redis()
    prefix = unique_prefix()
    first, second = RecordingHandler(), RecordingHandler()
    a, b = _broker(prefix), _broker(prefix)
    await a.start(first)
    await b.start(second)
    try:
        await b.subscribe("m:shared")
        opts = MapChannelOptions(mode="persistent")
        await a.publish("m:shared", "k", MapPublishOptions(data=b'{"x":1}'), opts)
        await wait_for(lambda: len(second.publications) == 1)
        _, pub, _ = second.publications[0]
        assert (pub.key, pub.data, pub.offset) == ("k", b'{"x":1}', 1)
        state = await b.read_state("m:shared")
        assert [p.key for p in state.publications] == ["k"]
    finally:  # task groups nest: the later one closes first
        await b.close()
        await a.close()


@pytest.mark.anyio
async def test_node_with_the_redis_map_broker_starts_and_stops() -> None:
    """The map broker's task group is entered after the broker's and must exit first."""
    require_main_redis()
    from centrifuge_asgi import Node

    config = {
        "map_broker": {"type": "redis", "redis": {"prefix": unique_prefix()}},
        "channel": {
            "namespaces": [
                {"name": "mm", "subscription_type": "map", "map": {"mode": "persistent"}}
            ]
        },
    }
    for _ in range(2):
        async with Node(config) as node:
            await node.map_publish("mm:1", "k", {"v": 1})
            assert await node.map_stats("mm:1") == 1
