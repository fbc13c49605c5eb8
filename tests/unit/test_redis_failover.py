"""What the Redis engine does when a failover loses data or a whole cluster goes away.

A stream that lost its tail under the same epoch (an asynchronous replica promoted after a
failover, an old snapshot restored) moves to a new epoch as soon as a node that saw the
lost offsets touches it, so subscribers are told instead of skipping the reissued offsets
as duplicates. The loss is made by hand here (the meta's top lowered and the last entries
deleted, which is what the promoted replica holds); ``tests/interop/test_failover.py``
makes it with real Sentinel and Cluster failovers.

Uses the Redis at 127.0.0.1:6379 and private ``redis-server`` processes.
"""

from __future__ import annotations

import anyio
import pytest

from centrifuge_asgi.config import Config
from centrifuge_asgi.engines.base import HistoryFilter, PublishOptions, StreamPosition
from centrifuge_asgi.engines.redis import RedisBroker
from centrifuge_asgi.errors import EngineUnavailable
from tests.engine_contract import EngineUnderTest, wait_for

from .test_redis_engine import (
    HISTORY,
    redis_cluster,
    redis_config,
    require_main_redis,
    started_engine,
    sync_redis,
    unique_prefix,
    until,
)

pytestmark = pytest.mark.anyio


def lose_tail(broker: RedisBroker, channel: str, keep: int) -> None:
    """What a replica that applied publications up to ``keep`` only holds."""
    client = sync_redis()
    stream = f"{broker.prefix}.stream.{channel}"
    client.hset(f"{broker.prefix}.stream.meta.{channel}", "s", keep)
    ids = [entry_id for entry_id, _ in client.xrange(stream, min=f"{keep + 1}")]
    if ids:
        client.xdel(stream, *ids)
    client.execute_command("XSETID", stream, f"{keep}-0")  # it never made the later IDs


async def publish(broker: RedisBroker, channel: str, n: int = 1) -> StreamPosition:
    for _ in range(n):
        position = (await broker.publish(channel, b"{}", HISTORY)).position
    return position


async def test_the_publishing_node_starts_a_new_epoch() -> None:
    require_main_redis()
    async with started_engine(redis_config("127.0.0.1:6379")) as eng:
        broker = eng.broker
        assert isinstance(broker, RedisBroker)
        before = await publish(broker, "lost-tail", 5)
        lose_tail(broker, "lost-tail", 3)
        after = await publish(broker, "lost-tail")
        # offset 4 again would be skipped by a subscriber at 5: a new epoch instead
        assert after.epoch != before.epoch
        assert after.offset == 4
        history = await broker.history("lost-tail", HistoryFilter(limit=-1))
        assert history.position == after
        assert [p.offset for p in history.publications] == [1, 2, 3, 4]
        assert (await publish(broker, "lost-tail")) == StreamPosition(5, after.epoch)


async def test_a_subscribed_node_starts_a_new_epoch_on_its_next_read() -> None:
    """Node B only received the publications; its next history read (the position check
    every ``channel_position_check_delay``, a subscribe) moves the stream on."""
    require_main_redis()
    config = redis_config("127.0.0.1:6379")
    async with started_engine(config) as a, started_engine(config) as b:
        assert isinstance(a.broker, RedisBroker) and isinstance(b.broker, RedisBroker)
        await b.broker.subscribe("seen-by-b")
        before = await publish(a.broker, "seen-by-b", 5)
        await wait_for(lambda: len(b.handler.publications) == 5)
        lose_tail(a.broker, "seen-by-b", 2)
        # a node that never saw the lost offsets cannot tell: the stream looks whole
        async with started_engine(config) as fresh:
            top = await fresh.broker.history("seen-by-b", HistoryFilter(limit=0))
            assert top.position == StreamPosition(2, before.epoch)
        top = await b.broker.history("seen-by-b", HistoryFilter(limit=0))
        assert top.position.offset == 2
        assert top.position.epoch != before.epoch
        # node A publishes into the new epoch; nothing moves it again
        assert await publish(a.broker, "seen-by-b") == StreamPosition(3, top.position.epoch)
        await wait_for(lambda: len(b.handler.publications) == 6)
        assert b.handler.publications[-1][2] == top.position.epoch


async def test_healthy_streams_keep_their_epoch() -> None:
    """Concurrent publishers and readers on two nodes never look like a lost tail."""
    require_main_redis()
    config = redis_config("127.0.0.1:6379")
    async with started_engine(config) as a, started_engine(config) as b:
        for engine in (a, b):
            await engine.broker.subscribe("busy")
        epochs: set[str] = set()

        async def work(engine: EngineUnderTest) -> None:
            for i in range(60):
                epochs.add((await engine.broker.publish("busy", b"{}", HISTORY)).position.epoch)
                if i % 5 == 0:
                    top = await engine.broker.history("busy", HistoryFilter(limit=0))
                    epochs.add(top.position.epoch)

        async with anyio.create_task_group() as tg:
            for engine in (a, b, a, b):
                tg.start_soon(work, engine)
        assert len(epochs) == 1
        await wait_for(lambda: len(a.handler.publications) == 240)
        assert [p.offset for _, p, _ in a.handler.publications] == list(range(1, 241))


async def test_remembered_positions_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    require_main_redis()
    monkeypatch.setattr("centrifuge_asgi.engines.redis.SEEN_LIMIT", 3)
    async with started_engine(redis_config("127.0.0.1:6379")) as eng:
        broker = eng.broker
        assert isinstance(broker, RedisBroker)
        for name in ("s1", "s2", "s3", "s4"):
            await broker.publish(name, b"{}", PublishOptions(10, 60.0))
        await broker.publish("s2", b"{}", PublishOptions(10, 60.0))  # recently used: kept
        await broker.publish("s5", b"{}", PublishOptions(10, 60.0))
        assert list(broker._seen) == ["s4", "s2", "s5"]


async def test_a_cluster_that_went_away_entirely_is_waited_for() -> None:
    """Every node of the cluster dies: the connections that served channels find no node
    to learn the slots from (redis-py's ``RedisClusterException``, which is not a
    ``RedisError``: an engine error all the same), keep redialling, and deliver again once
    the cluster is back."""
    with redis_cluster() as procs:
        seeds = ",".join(p.address for p in procs)
        block = {"cluster_address": [seeds], "prefix": unique_prefix(), "io_timeout": "1s"}
        config = Config.from_dict({"engine": {"type": "redis", "redis": block}})
        async with started_engine(config) as eng:
            broker = eng.broker
            assert isinstance(broker, RedisBroker)
            await broker.subscribe("everywhere")
            sub = broker._routes["everywhere"]
            for proc in procs:
                proc.kill()
            await until(lambda: not sub.connected)
            shard = broker._shards.all[0]
            with pytest.raises(EngineUnavailable):
                await shard.refresh_slots()
            await anyio.sleep(1.0)  # several failed redials, each asking for the slots
            for proc in procs:  # the same nodes (nodes.conf kept): the same slots
                proc.start()
            await until(
                lambda: all("cluster_state:ok" in p.cli("CLUSTER", "INFO") for p in procs), 20
            )
            redis_channel = shard.client_channel("everywhere")

            async def delivered() -> bool:
                try:
                    await broker.publish("everywhere", b'"back"', PublishOptions())
                except EngineUnavailable:
                    return False
                await anyio.sleep(0.1)
                return bool(eng.handler.data_in("everywhere"))

            with anyio.fail_after(20):
                while not await delivered():  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            assert redis_channel in broker._routes["everywhere"].active
