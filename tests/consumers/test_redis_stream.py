"""The ``redis_stream`` consumer against the real Redis (127.0.0.1:6379).

Entries run through the node's API executor and are acknowledged after their command
ran or was skipped as bad; an entry whose consumer died before the XACK, or whose
command must be retried, stays pending and is claimed again after ``visibility_timeout``;
the idempotency key drops the repeat. Stream keys are unique per test.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from centrifuge_asgi.config import Config
from centrifuge_asgi.consumers import CommandDispatcher, RetryLater, outbox_table, statuses
from centrifuge_asgi.consumers.redis_stream import RedisStreamConsumer
from centrifuge_asgi.consumers.status import ConsumerStatus, Reporter
from centrifuge_asgi.node import Node
from centrifuge_asgi.observer import NoObserver
from tests.conditions import module
from tests.interop.support import make_config

from .conftest import Proxy, unavailable, until

pytestmark = [pytest.mark.anyio]

aioredis = module("redis.asyncio")
URL = "redis://127.0.0.1:6379"


@pytest.fixture
async def redis() -> AsyncIterator[tuple[Any, str]]:
    client = aioredis.Redis.from_url(URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        await client.aclose()
        unavailable(f"Redis at {URL} is not available: {exc}")
    stream = f"cf_test_{uuid.uuid4().hex[:12]}"
    try:
        yield client, stream
    finally:
        await client.delete(stream)
        await client.aclose()


def item(stream: str, **options: Any) -> dict[str, Any]:
    opts = {"address": [URL], "streams": [stream], "consumer_group": "cg", **options}
    return {"name": "rs", "enabled": True, "type": "redis_stream", "redis_stream": opts}


def publish_fields(channel: str, data: Any, **kw: Any) -> dict[str, str]:
    payload = outbox_table.publish_payload(channel, data, **kw)
    return {"method": "publish", "payload": json.dumps(payload)}


async def history(node: Node, channel: str) -> list[Any]:
    page = await node.history(channel, limit=-1)
    return [json.loads(p.data) for p in page.publications]


async def pending(client: Any, stream: str) -> int:
    return int((await client.xpending(stream, "cg"))["pending"])


async def test_entries_run_are_acked_and_bad_ones_skipped(redis: tuple[Any, str]) -> None:
    client, stream = redis
    cfg = make_config()
    cfg["consumers"] = [item(stream)]
    node = Node(cfg)
    async with node:
        await until(lambda: _state(node, "running"))
        await client.xadd(stream, publish_fields("news:r", {"n": 1}))
        envelope = {"method": "publish", "payload": {"channel": "news:r", "data": {"n": 2}}}
        await client.xadd(stream, {"payload": json.dumps(envelope)})  # no method field
        await client.xadd(stream, {"something": "else"})  # no payload: skipped
        await client.xadd(stream, {"method": "nope", "payload": "{}"})  # skipped
        await client.xadd(stream, publish_fields("news:r", {"n": 3}))
        await until(lambda: _has(lambda: statuses(node)["rs"].processed == 5))  # running: it exists
        assert await history(node, "news:r") == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert statuses(node)["rs"].skipped == 2
        assert await pending(client, stream) == 0


async def test_a_version_past_uint64_is_a_bad_entry(redis: tuple[Any, str]) -> None:
    """An entry whose version is past 2**64 - 1 is skipped and acked, not retried (Go's
    decoder refuses it): run, it would suppress every later version of the channel."""
    client, stream = redis
    cfg = make_config()
    cfg["consumers"] = [item(stream)]
    node = Node(cfg)
    async with node:
        await until(lambda: _state(node, "running"))
        for n, version in ((1, 2**64 + 1), (2, 2**64), (3, 5)):
            body = {"channel": "news:u64", "data": {"n": n}, "version": version}
            await client.xadd(stream, {"method": "publish", "payload": json.dumps(body)})
        await until(lambda: _has(lambda: statuses(node)["rs"].processed == 3))
        assert await history(node, "news:u64") == [{"n": 3}]
        assert statuses(node)["rs"].skipped == 2
        assert await pending(client, stream) == 0


async def test_undecodable_entries_are_logged_skipped_and_acked(
    redis: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Entries whose bytes are no command (a non-UTF-8 payload or method, truncated JSON,
    JSON nested past any decoder's depth) are each logged once, skipped and acked: none
    stays pending, and the valid entry written after them is published."""
    caplog.set_level(logging.INFO, "centrifuge_asgi.consumers")
    client, stream = redis
    cfg = make_config()
    cfg["consumers"] = [item(stream)]
    node = Node(cfg)
    nested = "[" * 5000 + "]" * 5000
    bad: list[dict[str, Any]] = [
        {"method": "publish", "payload": b"\xff\xfe\x00"},  # not UTF-8
        {"method": "publish", "payload": '{"channel":"news:bad","data":{"n"'},  # truncated
        {"payload": "[" * 5000},  # an envelope nested deep and never closed
        {"method": "publish", "payload": nested},  # nested deep and closed: not an object
        {"method": "publish", "payload": '"' + "[" * 5000 + '"'},  # a string of no JSON
        {"method": b"\xff", "payload": "{}"},  # a method that is not UTF-8
    ]
    with anyio.fail_after(3):
        async with node:
            await until(lambda: _state(node, "running"))
            for fields in bad:
                await client.xadd(stream, fields)
            await client.xadd(stream, publish_fields("news:bad", {"n": 1}))
            done = len(bad) + 1
            await until(lambda: _has(lambda: statuses(node)["rs"].processed == done))
            assert await history(node, "news:bad") == [{"n": 1}]
            status = statuses(node)["rs"]
            assert (status.skipped, status.errors) == (len(bad), 0)
            assert await pending(client, stream) == 0
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skip ")]
    assert len(skips) == len(bad), skips
    assert skips[-1] == "skip unsupported consumed API command method '\ufffd'"
    assert not any(r.exc_info for r in caplog.records)
    assert "Traceback" not in caplog.text


async def test_pending_entries_are_reclaimed_and_run_once(redis: tuple[Any, str]) -> None:
    client, stream = redis
    node = Node(make_config())
    async with node:
        real = CommandDispatcher(node).dispatch
        config = Config.from_dict({"consumers": [item(stream, visibility_timeout="300ms")]})
        rs = config.consumers[0].redis_stream

        def consumer(dispatch: Any, name: str) -> RedisStreamConsumer:
            report = Reporter(ConsumerStatus("rs", "redis_stream"), NoObserver())
            return RedisStreamConsumer("rs", rs, dispatch, report, name)

        # consumer a runs the command and dies before its XACK
        with anyio.CancelScope() as scope:

            async def run_then_die(method: str, payload: bytes) -> bool:
                ran = await real(method, payload)
                scope.cancel()
                await anyio.lowlevel.checkpoint()
                return ran

            async with anyio.create_task_group() as tg:
                tg.start_soon(consumer(run_then_die, "a").run)
                await anyio.sleep(0.2)  # its group exists: the entry is new to it
                await client.xadd(stream, publish_fields("news:p", "once"))
        assert await history(node, "news:p") == ["once"]
        assert await pending(client, stream) == 1

        # consumer b claims it after the visibility timeout; a first retry fails (100)
        failures = 0

        async def flaky(method: str, payload: bytes) -> bool:
            nonlocal failures
            if failures == 0:
                failures += 1
                raise RetryLater("internal")
            return await real(method, payload)

        b = consumer(flaky, "b")
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.run)
            await until(lambda: _pending_is(client, stream, 0))
            tg.cancel_scope.cancel()
        assert failures == 1
        assert b.report.status.errors == 1
        assert await history(node, "news:p") == ["once"]  # ran twice, published once


async def test_an_unreachable_redis_is_retried_and_reported() -> None:
    cfg = make_config()
    cfg["consumers"] = [item("s", address=["redis://127.0.0.1:1"])]
    node = Node(cfg)
    async with node:
        await until(
            lambda: _has(lambda: "rs" in statuses(node) and statuses(node)["rs"].errors >= 2)
        )
        status = statuses(node)["rs"]
        assert status.state == "retrying"
        assert status.last_error.startswith("ConnectionError: ")  # not a task group's wrapper


async def _state(node: Node, state: str) -> bool:
    status = statuses(node).get("rs")
    return status is not None and status.state == state


async def _has(check: Any) -> bool:
    return bool(check())


async def _pending_is(client: Any, stream: str, count: int) -> bool:
    return await pending(client, stream) == count


async def test_a_redis_outage_mid_stream_is_survived(redis: tuple[Any, str]) -> None:
    """The connection to Redis is cut (a proxy the test controls) while entries flow: the
    consumer reports ``retrying``, reconnects when Redis is back, and loses nothing."""
    client, stream = redis
    async with anyio.create_task_group() as tg:
        proxy = Proxy(6379)
        await tg.start(proxy.serve)
        cfg = make_config()
        cfg["consumers"] = [item(stream, address=[f"redis://127.0.0.1:{proxy.port}"])]
        node = Node(cfg)
        async with node:
            await until(lambda: _state(node, "running"))
            for n in range(5):
                await client.xadd(stream, publish_fields("news:o", n))
            await until(lambda: _has(lambda: statuses(node)["rs"].processed == 5))
            proxy.down()
            await until(lambda: _state(node, "retrying"))
            error = statuses(node)["rs"].last_error
            assert "Error" in error and "ExceptionGroup" not in error, error
            for n in range(5, 10):  # written while the consumer cannot reach Redis
                await client.xadd(stream, publish_fields("news:o", n))
            await anyio.sleep(0.3)
            proxy.up()
            await until(lambda: _has(lambda: statuses(node)["rs"].processed == 10), within=15)
            assert await history(node, "news:o") == list(range(10))
            assert statuses(node)["rs"].state == "running"
            assert await pending(client, stream) == 0
        tg.cancel_scope.cancel()
