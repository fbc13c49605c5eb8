"""The ``postgresql`` outbox consumer against the real PostgreSQL (127.0.0.1:5432, db test).

What is proven: a rolled-back transaction publishes nothing; a committed one reaches a
centrifuge-python subscriber exactly once, also when the consumer is cancelled between
running a command and deleting its row (the row runs again; the idempotency key set by
``outbox_table.publish`` drops the repeat); bad rows are skipped and deleted; the consumer
starts and stops with the node's lifespan, wakes up by LISTEN/NOTIFY, reports in /health
and metrics; the transactional helpers work with SQLAlchemy (async and sync), asyncpg
and psycopg (async and sync).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from centrifuge_asgi.config import Config
from centrifuge_asgi.consumers import CommandDispatcher, outbox_table, statuses
from centrifuge_asgi.consumers.postgresql import PostgresConsumer
from centrifuge_asgi.consumers.status import ConsumerStatus, Reporter
from centrifuge_asgi.node import Node
from centrifuge_asgi.observer import NoObserver
from tests.conditions import module
from tests.interop.support import make_config

from .conftest import Outbox, recording_subscriber, roll_back_then_commit, unavailable, until

if TYPE_CHECKING:
    from tests.conftest import LiveServer, LiveServerFactory

pytestmark = [pytest.mark.anyio]

asyncpg = module("asyncpg")


def node_config(*consumers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    cfg = make_config()
    cfg["consumers"] = list(consumers)
    cfg.update(extra)
    return cfg


async def history(node: Node, channel: str) -> list[Any]:
    page = await node.history(channel, limit=-1)
    return [json.loads(pub.data) for pub in page.publications]


def pg_consumer(outbox: Outbox, dispatch: Any, **options: Any) -> PostgresConsumer:
    item = outbox.consumer(**options)
    config = Config.from_dict({"consumers": [item]}).consumers[0]
    status = ConsumerStatus(config.name, config.type)
    return PostgresConsumer(
        config.name, config.postgresql, dispatch, Reporter(status, NoObserver())
    )


# ----------------------------------------------------------------------- SDK delivery


async def rollback_commit_and_kill(outbox: Outbox, srv: LiveServer, node: Node) -> None:
    """Rows for ``chat:lobby``: one rolled back, ``{"n": 1}`` committed and run by a
    consumer cancelled before its DELETE, then ``{"n": 2, "last": True}``; a second
    consumer drains the table. Commands run on the server's loop."""
    real = CommandDispatcher(node)

    async def dispatch(method: str, payload: bytes) -> bool:
        return await srv.acall(real.dispatch(method, payload))

    conn = await asyncpg.connect(outbox.dsn)
    try:
        await roll_back_then_commit(conn, "chat:lobby", outbox.table)
        assert await outbox.count() == 1  # the rolled-back transaction left no row

        # killed (cancelled) after the command ran and before its row was deleted
        ran: list[bytes] = []
        with anyio.CancelScope() as scope:

            async def run_then_die(method: str, payload: bytes) -> bool:
                result = await dispatch(method, payload)
                ran.append(payload)
                scope.cancel()
                await anyio.lowlevel.checkpoint()  # cancelled here, inside the transaction
                return result

            with anyio.fail_after(10):
                await pg_consumer(outbox, run_then_die).run()
        assert len(ran) == 1
        assert await outbox.count() == 1  # the transaction rolled back: the row is still there

        async with conn.transaction():
            last = {"n": 2, "last": True}
            await outbox_table.publish(conn, "chat:lobby", last, table=outbox.table)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pg_consumer(outbox, dispatch).run)
            await until(lambda: _empty(outbox))
            tg.cancel_scope.cancel()
    finally:
        await conn.close()


async def test_committed_rows_reach_a_python_subscriber_exactly_once(
    outbox: Outbox, live_server: LiveServerFactory
) -> None:
    node = Node(node_config())
    srv = live_server(node.asgi_app())
    url = srv.ws_url("/connection/websocket")
    client, received = await recording_subscriber(url, _token("alice"), "chat:lobby")
    try:
        await rollback_commit_and_kill(outbox, srv, node)
        await until(lambda: _has(lambda: len(received) >= 2))
        await anyio.sleep(0.3)  # a duplicate would have arrived before n=2 anyway
    finally:
        await client.disconnect()
    assert received == [{"n": 1}, {"n": 2, "last": True}]  # n=1 ran twice, delivered once


async def test_committed_rows_reach_a_js_subscriber_exactly_once(
    outbox: Outbox, live_server: LiveServerFactory, arun_js: Any
) -> None:
    node = Node(node_config())
    srv = live_server(node.asgi_app())

    async def subscribers() -> int:
        return node.channels().get("chat:lobby", 0)

    async with anyio.create_task_group() as tg:
        result: dict[str, Any] = {}

        async def listen() -> None:
            url = srv.ws_url("/connection/websocket")
            result.update(await arun_js("outbox_subscriber.mjs", url, _token("bob"), "chat:lobby"))

        tg.start_soon(listen)
        await until(lambda: _has_async(lambda: srv.acall(subscribers()), 1))
        await rollback_commit_and_kill(outbox, srv, node)
    assert result["got"] == [{"n": 1}, {"n": 2, "last": True}]


async def _has_async(read: Any, at_least: int) -> bool:
    return bool(await read() >= at_least)


async def _empty(outbox: Outbox) -> bool:
    return await outbox.count() == 0


def _token(user: str) -> str:
    from tests.interop.support import token

    return token(user)


# -------------------------------------------------------------- lifespan, LISTEN, health


@pytest.mark.parametrize("own_dsn", [False, True], ids=["pool", "notification_dsn"])
async def test_lifespan_listen_notify_health_and_metrics(outbox: Outbox, own_dsn: bool) -> None:
    # polling every 30 s: only NOTIFY can make the row run within the test's bound; the
    # LISTEN connection comes from the pool, or from partition_notification_dsn
    item = outbox.consumer(
        partition_poll_interval="30s",
        partition_notification_channel=outbox.channel,
        partition_notification_dsn=outbox.dsn if own_dsn else "",
    )
    off = {"name": "off", "enabled": False, "type": "postgresql", "postgresql": {}}
    node = Node(node_config(item, off, health={"enabled": True}, prometheus={"enabled": True}))
    conn = await asyncpg.connect(outbox.dsn)
    try:
        async with node:
            await until(lambda: _running(node))
            assert set(statuses(node)) == {"pg"}  # the disabled one does not run
            await anyio.sleep(0.3)  # the LISTEN is set up (its first wakeup has passed)
            await roll_back_then_commit(conn, "news:a", outbox.table)
            await until(lambda: _has_history(node, "news:a"), within=5)
            assert await history(node, "news:a") == [{"n": 1}]
            await until(lambda: _has(lambda: statuses(node)["pg"].processed == 1))
            transport = httpx.ASGITransport(app=node.asgi_app())
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                health = (await http.get("/health")).json()
                metrics = (await http.get("/metrics")).text
            assert health["consumers"]["pg"] == {
                "type": "postgresql",
                "status": "running",
                "processed": 1,
                "skipped": 0,
                "errors": 0,
            }
            assert 'centrifugo_consumers_messages_processed_total{consumer_name="pg"} 1' in metrics
    finally:
        await conn.close()
    assert statuses(node)["pg"].state == "stopped"


async def test_sqlalchemy_async_session(outbox: Outbox) -> None:
    """``AsyncSession`` and ``AsyncConnection`` (SQLAlchemy's asyncio needs greenlet)."""
    try:
        import greenlet  # noqa: F401
    except ImportError:
        unavailable("greenlet is not installed: SQLAlchemy's asyncio needs sqlalchemy[asyncio]")
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine(outbox.dsn.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        async with AsyncSession(engine) as session:
            with pytest.raises(RuntimeError):
                async with session.begin():
                    await outbox_table.publish(session, "news:s", "rolled back", table=outbox.table)
                    raise RuntimeError("roll back")
            async with session.begin():
                await outbox_table.publish(session, "news:s", "session", table=outbox.table)
        async with engine.begin() as connection:
            await outbox_table.broadcast(connection, ["news:s"], "connection", table=outbox.table)
    finally:
        await engine.dispose()
    node = Node(node_config(outbox.consumer()))
    async with node:
        await until(lambda: _empty(outbox))
        assert await history(node, "news:s") == ["session", "connection"]


async def _running(node: Node) -> bool:
    status = statuses(node).get("pg")
    return status is not None and status.state == "running"


# ------------------------------------------------------------------ the other drivers


async def test_helpers_write_in_the_callers_transaction_for_every_driver(outbox: Outbox) -> None:
    import psycopg
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    table, channel = outbox.table, "news:drivers"

    def sync_side() -> None:  # what a sync web app does (in a worker thread here)
        engine = create_engine(outbox.dsn.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with Session(engine) as session, session.begin():
                outbox_table.publish_sync(session, channel, "orm-sync", table=table)
            with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
                outbox_table.publish_sync(session, channel, "orm-sync-rolled-back", table=table)
                raise RuntimeError
        finally:
            engine.dispose()
        with psycopg.connect(outbox.dsn) as conn:  # commits at the end of the block
            outbox_table.publish_sync(conn, channel, "psycopg-sync", table=table)
            with conn.cursor() as cur:
                outbox_table.broadcast_sync(cur, [channel], "psycopg-cursor", table=table)
        with pytest.raises(RuntimeError), psycopg.connect(outbox.dsn) as conn:
            outbox_table.publish_sync(conn, channel, "psycopg-rolled-back", table=table)
            raise RuntimeError

    await anyio.to_thread.run_sync(sync_side)

    async with await psycopg.AsyncConnection.connect(outbox.dsn) as aconn:
        await outbox_table.publish(aconn, channel, "psycopg-async", table=table)
    conn = await asyncpg.connect(outbox.dsn)
    try:
        async with conn.transaction():
            await outbox_table.command(
                conn, "publish", {"channel": channel, "data": "raw-command"}, table=table
            )
        rows = await conn.fetch(f"SELECT method, payload::text FROM {table} ORDER BY id")
    finally:
        await conn.close()
    assert [r["method"] for r in rows] == ["publish", "publish", "broadcast", "publish", "publish"]
    assert all(json.loads(r["payload"]).get("idempotency_key") for r in rows[:-1])

    node = Node(node_config(outbox.consumer()))
    async with node:
        await until(lambda: _has_history(node, channel, 5))
        assert await history(node, channel) == [
            "orm-sync",
            "psycopg-sync",
            "psycopg-cursor",
            "psycopg-async",
            "raw-command",
        ]
    with pytest.raises(TypeError, match="async"):
        outbox_table.publish_sync(conn, channel, "x", table=table)
    with pytest.raises(ValueError, match="identifier"):
        await outbox_table.publish(conn, channel, "x", table="t; DROP TABLE x")


# -------------------------------------------------------------------------- bad rows


async def test_bad_rows_are_logged_skipped_and_deleted(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [
        ("publish", {"channel": "news:bad", "data": {"n": 1}}),
        ("no_such_method", {"channel": "news:bad", "data": 1}),  # unknown: skipped
        ("history", {"channel": "news:bad"}),  # a read: skipped, as Centrifugo does
        ("publish", {"channel": 5, "data": 1}),  # undecodable payload
        ("publish", {"channel": "nope:x", "data": 1}),  # error 102: not retried
        ("publish", {"channel": "", "data": 1}),  # error 107
        ("publish", {"channel": "news:bad", "data": {"n": 2}}),
    ]
    conn = await asyncpg.connect(outbox.dsn)
    try:
        for method, payload in rows:
            await outbox_table.command(conn, method, payload, table=outbox.table)
        # JSONB holding a JSON string (Debezium's shape) is unwrapped
        await conn.execute(
            f"INSERT INTO {outbox.table} (method, payload) VALUES ('publish', to_jsonb($1::text))",
            json.dumps({"channel": "news:bad", "data": {"n": 3}}),
        )
    finally:
        await conn.close()
    node = Node(node_config(outbox.consumer()))
    async with node:
        await until(lambda: _empty(outbox))
        assert await history(node, "news:bad") == [{"n": 1}, {"n": 2}, {"n": 3}]
        status = statuses(node)["pg"]
        assert (status.processed, status.skipped, status.errors) == (8, 5, 0)
    assert "skip" in caplog.text
    assert "Traceback" not in caplog.text


async def test_payloads_that_are_no_object_are_skipped_and_deleted(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """A payload that is JSONB ``null``, ``[]``, a number, or a JSON string whose text is
    not JSON is logged, skipped and deleted; it does not hold up the row after it."""
    bad = ["null", "[]", "123", '"not json"']
    conn = await asyncpg.connect(outbox.dsn)
    try:
        for payload in bad:
            await conn.execute(
                f"INSERT INTO {outbox.table} (method, payload) VALUES ('publish', $1::jsonb)",
                payload,
            )
        await outbox_table.command(
            conn, "publish", {"channel": "news:nobj", "data": {"n": 1}}, table=outbox.table
        )
    finally:
        await conn.close()
    node = Node(node_config(outbox.consumer()))
    with anyio.fail_after(3):
        async with node:
            await until(lambda: _empty(outbox))
            assert await history(node, "news:nobj") == [{"n": 1}]
            status = statuses(node)["pg"]
            assert (status.processed, status.skipped, status.errors) == (5, 4, 0)
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skip ")]
    assert len(skips) == len(bad), skips
    assert all(m.startswith("skip consumed publish: bad payload: ") for m in skips), skips
    assert not any(r.exc_info for r in caplog.records)
    assert "Traceback" not in caplog.text


async def test_a_version_past_uint64_is_a_bad_row(outbox: Outbox) -> None:
    """A row whose version is past 2**64 - 1 is skipped as undecodable (Go's decoder
    refuses it): run, it would suppress every later version of the channel."""
    rows = [
        ("publish", {"channel": "news:u64", "data": {"n": 1}, "version": 2**64 + 1}),
        ("broadcast", {"channels": ["news:u64"], "data": {"n": 2}, "version": 2**64}),
        ("publish", {"channel": "news:u64", "data": {"n": 3}, "version": 5}),
    ]
    conn = await asyncpg.connect(outbox.dsn)
    try:
        for method, payload in rows:
            payload["version_epoch"] = "e"
            await outbox_table.command(conn, method, payload, table=outbox.table)
    finally:
        await conn.close()
    node = Node(node_config(outbox.consumer()))
    async with node:
        await until(lambda: _empty(outbox))
        assert await history(node, "news:u64") == [{"n": 3}]
        status = statuses(node)["pg"]
        assert (status.processed, status.skipped, status.errors) == (3, 2, 0)


async def test_internal_errors_keep_the_row_and_retry_in_order(outbox: Outbox) -> None:
    """Error 100 stops the batch: the rows before it are deleted, it and the rest stay."""
    calls: list[str] = []
    fail = True

    async def dispatch(method: str, payload: bytes) -> bool:
        data = json.loads(payload)["data"]
        calls.append(data)
        if data == "b" and fail:
            from centrifuge_asgi.consumers import RetryLater

            raise RetryLater("internal")
        return True

    conn = await asyncpg.connect(outbox.dsn)
    try:
        for data in "abc":
            await outbox_table.publish(conn, "news:x", data, table=outbox.table)
    finally:
        await conn.close()
    consumer = pg_consumer(outbox, dispatch)
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await until(lambda: _has(lambda: consumer.report.status.errors >= 2))
        assert await outbox.count() == 2  # a done; b and c kept
        fail = False
        await until(lambda: _empty(outbox))
        tg.cancel_scope.cancel()
    assert calls[0] == "a" and calls[-2:] == ["b", "c"] and set(calls[1:-2]) == {"b"}
    assert consumer.report.status.state == "running"


async def _has(check: Any) -> bool:
    return bool(check())


async def _has_history(node: Node, channel: str, count: int = 1) -> bool:
    return len(await history(node, channel)) >= count


async def test_partitions_and_nodes_side_by_side(outbox: Outbox) -> None:
    """Two partitions, two consumers on one table (as two nodes would be), with
    ``use_try_lock``: every row runs once, and each partition in order."""
    seen: list[tuple[int, int]] = []

    async def dispatch(method: str, payload: bytes) -> bool:
        data = json.loads(payload)["data"]
        seen.append((data["p"], data["n"]))
        await anyio.sleep(0.001)
        return True

    conn = await asyncpg.connect(outbox.dsn)
    try:
        async with conn.transaction():
            for n in range(200):
                p = n % 2
                await outbox_table.publish(
                    conn, "news:p", {"p": p, "n": n}, table=outbox.table, partition=p
                )
    finally:
        await conn.close()
    options = {"num_partitions": 2, "use_try_lock": True, "partition_select_limit": 10}
    first, second = (
        pg_consumer(outbox, dispatch, **options),
        pg_consumer(outbox, dispatch, **options),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run)
        tg.start_soon(second.run)
        await until(lambda: _empty(outbox))
        tg.cancel_scope.cancel()
    assert sorted(n for _, n in seen) == list(range(200))  # each once
    for p in (0, 1):
        assert [n for q, n in seen if q == p] == list(range(p, 200, 2))  # in order
    # which consumer takes a partition is up to the locks; together they removed each once
    assert first.report.status.processed + second.report.status.processed == 200


async def test_table_ddl_stays_in_the_tables_schema_and_drops_cleanly(outbox: Outbox) -> None:
    """The NOTIFY trigger's function is created in the table's schema, not in the
    connection's ``search_path`` (``public``), so dropping the schema leaves nothing
    behind; ``drop_table_sql`` removes the table and the function."""
    table = f"{outbox.schema}.ddl_check"
    conn = await asyncpg.connect(outbox.dsn)
    where = (
        "SELECT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE p.proname = $1"
    )
    function = f"{outbox.schema}_ddl_check_notify_partition"
    try:
        for sql in outbox_table.create_table_sql(table, "wake"):
            await conn.execute(sql)
        assert [r[0] for r in await conn.fetch(where, function)] == [outbox.schema]
        for sql in outbox_table.drop_table_sql(table):
            await conn.execute(sql)
        assert await conn.fetch(where, function) == []
        assert await conn.fetchval("SELECT to_regclass($1)", table) is None
    finally:
        await conn.close()
