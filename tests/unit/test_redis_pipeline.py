"""Pipelined publishing on the Redis engine (engines/redis_pipeline.py): many
publications per round trip, in the order they were queued, each caller told its own
result. Uses the Redis at 127.0.0.1:6379 (skips locally without it, fails under CI=true).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from centrifuge_asgi.engines.base import HistoryFilter, PublishOptions
from centrifuge_asgi.engines.redis import RedisBroker
from centrifuge_asgi.engines.redis_pipeline import MAX_BATCH
from centrifuge_asgi.errors import EngineError
from centrifuge_asgi.pending import Pending
from tests.engine_contract import wait_for
from tests.unit.test_redis_engine import (
    redis_config,
    require_main_redis,
    started_engine,
    sync_redis,
)

pytestmark = pytest.mark.anyio

HISTORY = PublishOptions(history_size=1000, history_ttl=60.0)
PLAIN = PublishOptions()


@pytest.fixture(autouse=True)
def _redis() -> None:
    require_main_redis()


def _pipe_batches(broker: RedisBroker) -> int:
    return sum(p.batches for p in broker._pipes.values())


async def test_queued_publications_share_round_trips_and_keep_their_order() -> None:
    async with started_engine(redis_config("127.0.0.1:6379")) as e:
        broker = e.broker
        assert isinstance(broker, RedisBroker)
        pendings = [
            await broker.publish_pipelined("ordered", b'{"n":%d}' % i, HISTORY) for i in range(300)
        ]
        results = [await p.wait() for p in pendings]
        assert [r.position.offset for r in results] == list(range(1, 301))
        assert len({r.position.epoch for r in results}) == 1
        assert _pipe_batches(broker) < 300 // 2  # one round trip carried many
        history = await broker.history("ordered", HistoryFilter(limit=-1))
        assert [p.data for p in history.publications] == [b'{"n":%d}' % i for i in range(300)]


async def test_concurrent_callers_are_batched_and_each_gets_its_own_position() -> None:
    async with started_engine(redis_config("127.0.0.1:6379")) as e:
        broker = e.broker
        assert isinstance(broker, RedisBroker)
        await broker.subscribe("fan")
        offsets: dict[int, int] = {}

        async def one(i: int) -> None:
            result = await broker.publish("fan", b'{"n":%d}' % i, HISTORY)
            offsets[i] = result.position.offset

        async with anyio.create_task_group() as tg:
            for i in range(2 * MAX_BATCH):
                tg.start_soon(one, i)
        assert sorted(offsets.values()) == list(range(1, 2 * MAX_BATCH + 1))
        assert _pipe_batches(broker) < 2 * MAX_BATCH // 2
        # what subscribers receive is the stream order: offsets ascend on the topic
        await wait_for(lambda: len(e.handler.publications) >= 2 * MAX_BATCH)
        received = [pub.offset for _, pub, _ in e.handler.publications]
        assert received == sorted(received)


async def test_a_failing_publication_fails_alone_in_its_batch() -> None:
    config = redis_config("127.0.0.1:6379")
    prefix = config.engine.redis.prefix
    client = sync_redis()
    client.set(f"{prefix}.stream.meta.broken", "not a hash", ex=60)  # WRONGTYPE
    try:
        async with started_engine(config) as e:
            broker = e.broker
            assert isinstance(broker, RedisBroker)
            before = await broker.publish_pipelined("fine", b"1", HISTORY)
            broken = await broker.publish_pipelined("broken", b"2", HISTORY)
            plain = await broker.publish_pipelined("fine", b"3", PLAIN)
            after = await broker.publish_pipelined("fine", b"4", HISTORY)
            assert (await before.wait()).position.offset == 1
            with pytest.raises(EngineError, match="WRONGTYPE"):
                await broken.wait()
            assert (await plain.wait()).position.offset == 0  # no history: no position
            assert (await after.wait()).position.offset == 2
    finally:
        client.delete(f"{prefix}.stream.meta.broken")


async def test_scripts_are_loaded_again_after_a_script_flush() -> None:
    async with started_engine(redis_config("127.0.0.1:6379")) as e:
        broker = e.broker
        assert isinstance(broker, RedisBroker)
        assert (await broker.publish("flushed", b"1", HISTORY)).position.offset == 1
        sync_redis().script_flush()
        pendings = [await broker.publish_pipelined("flushed", b"%d" % i, HISTORY) for i in (2, 3)]
        assert [(await p.wait()).position.offset for p in pendings] == [2, 3]


async def test_close_fails_what_is_still_queued() -> None:
    async with started_engine(redis_config("127.0.0.1:6379")) as e:
        broker = e.broker
        assert isinstance(broker, RedisBroker)
        pendings = [await broker.publish_pipelined("late", b"1", PLAIN) for _ in range(50)]
        await broker.close()
        for pending in pendings:
            await pending.settled()
            assert pending.done()  # published or an error, never left hanging


def test_pending_settles_once_and_calls_back() -> None:
    seen: list[int] = []
    pending: Pending[int] = Pending()
    pending.add_done_callback(lambda p: seen.append(p.result()))
    pending.set_result(7)
    pending.add_done_callback(lambda p: seen.append(p.result() + 1))
    assert seen == [7, 8]
    with pytest.raises(RuntimeError):
        pending.set_result(8)
    failed: Pending[int] = Pending()
    failed.set_error(EngineError("boom"))
    with pytest.raises(EngineError):
        failed.result()


def test_a_failing_callback_does_not_stop_the_others() -> None:
    seen: list[int] = []
    pending: Pending[int] = Pending()

    def broken(_: Pending[int]) -> None:
        raise RuntimeError("a caller's bug")

    pending.add_done_callback(broken)
    pending.add_done_callback(lambda p: seen.append(p.result()))
    pending.set_result(3)
    assert seen == [3]


async def test_an_unexpected_failure_fails_its_batch_and_the_writer_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with started_engine(redis_config("127.0.0.1:6379")) as e:
        broker = e.broker
        assert isinstance(broker, RedisBroker)
        assert (await broker.publish("goes-on", b"1", HISTORY)).position.offset == 1
        pipe = next(iter(broker._pipes.values()))
        real = pipe._execute
        calls = 0

        async def once_broken(batch: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("unexpected")
            return await real(batch)

        monkeypatch.setattr(pipe, "_execute", once_broken)
        with pytest.raises(EngineError, match="unexpected"):
            await broker.publish("goes-on", b"2", HISTORY)
        assert (await broker.publish("goes-on", b"3", HISTORY)).position.offset == 2
        # a reply of the wrong shape fails that publication only
        bad = pipe.command(("PING",), lambda reply: int("not a number"))
        with pytest.raises(EngineError, match="bad reply"):
            await bad.wait()
        assert (await broker.publish("goes-on", b"4", HISTORY)).position.offset == 3
