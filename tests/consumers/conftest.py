"""Fixtures of the consumer tests: the real PostgreSQL, Redis and NATS of the machine.

Each test gets its own schema (PostgreSQL), stream keys (Redis) or stream (NATS), named
after a random id. A missing service skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import pytest

from tests import conditions
from tests.conditions import unavailable

PG_DSN = os.environ.get("CENTRIFUGE_ASGI_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Outbox:
    """One test's outbox table: ``<schema>.centrifugo_outbox`` in the test database."""

    dsn: str
    schema: str
    channel: str  # the LISTEN/NOTIFY channel of its trigger

    @property
    def table(self) -> str:
        return f"{self.schema}.centrifugo_outbox"

    def consumer(self, name: str = "pg", **options: Any) -> dict[str, Any]:
        """A ``consumers[]`` item for this table (fast polling unless overridden)."""
        pg = {
            "dsn": self.dsn,
            "outbox_table_name": self.table,
            "partition_poll_interval": "50ms",
            **options,
        }
        return {"name": name, "enabled": True, "type": "postgresql", "postgresql": pg}

    async def count(self) -> int:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            return int(await conn.fetchval(f"SELECT count(*) FROM {self.table}"))
        finally:
            await conn.close()


async def create_outbox(dsn: str, notify: bool = True) -> Outbox:
    import asyncpg

    from centrifuge_asgi.consumers import outbox_table

    schema = f"cf_{uuid.uuid4().hex[:12]}"
    outbox = Outbox(dsn, schema, f"{schema}_wake")
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        for sql in outbox_table.create_table_sql(outbox.table, outbox.channel if notify else ""):
            await conn.execute(sql)
    finally:
        await conn.close()
    return outbox


async def drop_outbox(outbox: Outbox) -> None:
    import asyncpg

    conn = await asyncpg.connect(outbox.dsn, timeout=5)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {outbox.schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def outbox() -> AsyncIterator[Outbox]:
    try:
        import asyncpg
    except ImportError:
        unavailable("asyncpg is not installed (extra: postgresql)")
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
        await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL at {PG_DSN} is not available: {exc}")
    box = await create_outbox(PG_DSN)
    try:
        yield box
    finally:
        await drop_outbox(box)


async def until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Poll the async ``check`` until it is true (bounded: 10 s unless told)."""
    await conditions.until(check, within)


async def recording_subscriber(url: str, token: str, channel: str) -> tuple[Any, list[Any]]:
    """A centrifuge-python client at ``url`` subscribed to ``channel``, and the list that
    collects the data of each publication it receives (disconnect the client when done)."""
    from centrifuge import Client, PublicationContext, SubscriptionEventHandler

    received: list[Any] = []

    class Events(SubscriptionEventHandler):
        async def on_publication(self, ctx: PublicationContext) -> None:
            received.append(ctx.pub.data)

    client = Client(url, token=token, timeout=5)
    await client.connect()
    sub = client.new_subscription(channel, events=Events())
    await sub.subscribe()
    await sub.ready(timeout=5)
    return client, received


async def roll_back_then_commit(conn: Any, channel: str, table: str) -> None:
    """Publish ``{"n": 0}`` to the outbox in a transaction that rolls back (it must leave
    no row), then ``{"n": 1}`` in one that commits."""
    from centrifuge_asgi.consumers import outbox_table

    with pytest.raises(RuntimeError):
        async with conn.transaction():
            await outbox_table.publish(conn, channel, {"n": 0}, table=table)
            raise RuntimeError("the application fails: roll back")
    async with conn.transaction():
        await outbox_table.publish(conn, channel, {"n": 1}, table=table)


class Proxy:
    """A TCP proxy on a free loopback port to ``target``, which a test can cut and restore
    (``down()`` closes every connection and refuses new ones; ``up()`` accepts again)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepting = True
        self._scopes: set[anyio.CancelScope] = set()

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        await listener.serve(self._handle)

    async def _handle(self, client: Any) -> None:
        async with client:
            if not self.accepting:
                return
            with anyio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    upstream = await anyio.connect_tcp("127.0.0.1", self.target_port)
                    async with upstream, anyio.create_task_group() as tg:
                        tg.start_soon(_pipe, client, upstream)
                        tg.start_soon(_pipe, upstream, client)
                except OSError:
                    pass
                finally:
                    self._scopes.discard(scope)

    def down(self) -> None:
        self.accepting = False
        for scope in list(self._scopes):
            scope.cancel()

    def up(self) -> None:
        self.accepting = True


async def _pipe(source: Any, sink: Any) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
