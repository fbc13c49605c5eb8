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

PG_DSN = os.environ.get("CENTRIFUGE_ASGI_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
CI = os.environ.get("CI") == "true"


def unavailable(problem: str) -> None:
    if CI:
        pytest.fail(problem, pytrace=False)
    pytest.skip(problem)


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
    """Poll ``check`` until it is true (bounded)."""
    with anyio.fail_after(within):
        while not await check():  # noqa: ASYNC110 (state in another process or loop)
            await anyio.sleep(0.02)


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
