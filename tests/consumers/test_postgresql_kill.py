"""A node killed (SIGKILL) between running an outbox row and deleting it: the row runs
again on the next start, and the subscriber still sees it once.

Node A is a real ``centrifuge-asgi serve`` process with the ``postgresql`` consumer; node
B, in this process, has a centrifuge-python subscriber; both use the Redis engine (one
prefix per test), so A's publications reach B's subscriber and the idempotency key is
shared. The test holds a row lock (``SELECT … FOR UPDATE``) on the outbox row, so A
runs the command and then waits in its ``DELETE``: the moment to kill it.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from centrifuge_asgi.consumers import outbox_table
from centrifuge_asgi.node import Node
from tests.conditions import module
from tests.interop.serve_process import ServeProcesses
from tests.interop.support import make_config, token

from .conftest import Outbox, recording_subscriber, until

if TYPE_CHECKING:
    from tests.conftest import LiveServerFactory

pytestmark = [pytest.mark.anyio]

asyncpg = module("asyncpg")
module("redis")


@pytest.fixture
def serve() -> Iterator[ServeProcesses]:
    procs = ServeProcesses()
    try:
        yield procs
    finally:
        procs.stop_all()


async def test_a_killed_node_reruns_the_row_and_the_subscriber_sees_it_once(
    outbox: Outbox, live_server: LiveServerFactory, serve: ServeProcesses, tmp_path: Path
) -> None:
    prefix = f"cf_kill_{uuid.uuid4().hex[:10]}"
    cfg = make_config()
    cfg["engine"] = {"type": "redis", "redis": {"address": ["127.0.0.1:6379"], "prefix": prefix}}
    node_b = Node(cfg)
    srv = live_server(node_b.asgi_app())
    url = srv.ws_url("/connection/websocket")
    client, received = await recording_subscriber(url, token("alice"), "chat:lobby")

    config_a = tmp_path / "config.json"
    config_a.write_text(
        json.dumps({**cfg, "health": {"enabled": True}, "consumers": [outbox.consumer()]})
    )
    writer = await asyncpg.connect(outbox.dsn)
    locker = await asyncpg.connect(outbox.dsn)
    try:
        await outbox_table.publish(writer, "chat:lobby", {"n": 1}, table=outbox.table)
        lock = locker.transaction()
        await lock.start()
        await locker.execute(f"SELECT id FROM {outbox.table} FOR UPDATE")

        a = await anyio.to_thread.run_sync(serve.start, config_a)
        await until(lambda: _true(len(received) == 1), within=15)  # A ran it
        await anyio.sleep(0.2)  # A is blocked in its DELETE now
        a.proc.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(a.proc.wait, 10)
        await lock.rollback()
        await until(lambda: _true(outbox.count), within=5)  # the row survived the kill

        # the next start runs it again; the idempotency key drops the repeat
        await outbox_table.publish(writer, "chat:lobby", {"n": 2}, table=outbox.table)
        await anyio.to_thread.run_sync(serve.start, config_a)
        await until(lambda: _empty(outbox), within=15)
        await until(lambda: _true(len(received) >= 2), within=5)
        await anyio.sleep(0.3)
    finally:
        await writer.close()
        await locker.close()
        await client.disconnect()
        await _drop_keys(prefix)
    assert received == [{"n": 1}, {"n": 2}]


async def _true(value: Any) -> bool:
    if callable(value):
        value = await value() == 1
    return bool(value)


async def _empty(outbox: Outbox) -> bool:
    return await outbox.count() == 0


async def _drop_keys(prefix: str) -> None:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url("redis://127.0.0.1:6379")
    try:
        keys = [key async for key in r.scan_iter(match=f"{prefix}*")]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()
