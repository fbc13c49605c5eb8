"""Transactional publishing: write a server API command into the outbox table inside the
caller's own transaction, so it is published if and only if the transaction commits.

    from centrifuge_asgi.consumers import outbox_table

    async with session.begin():                      # SQLAlchemy AsyncSession
        session.add(message)
        await outbox_table.publish(session, "chat:lobby", {"text": "hi"})

The ``postgresql`` consumer then runs the command. ``conn`` may be a SQLAlchemy
``AsyncSession``/``AsyncConnection`` (async functions) or ``Session``/``Connection``
(``*_sync`` functions), an asyncpg connection, a psycopg 3 (``AsyncConnection``,
``Connection``) connection or cursor, or any DB-API cursor/connection with the ``%s``
paramstyle (psycopg2, Django's ``connection.cursor()``). Nothing here imports a driver:
the kind of ``conn`` is recognised by its module.

:func:`publish` and :func:`broadcast` set an ``idempotency_key`` (a random UUID) unless
given one, so the repeat of a command that ran just before a consumer died is dropped by
the broker (within ``idempotent_result_ttl``): at-least-once delivery becomes
exactly-once for subscribers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

DEFAULT_TABLE = "centrifugo_outbox"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_encode = msgspec.json.encode


def create_table_sql(table: str = DEFAULT_TABLE, notification_channel: str = "") -> list[str]:
    """The statements that create Centrifugo's outbox table (and, with a channel, the
    trigger that sends ``NOTIFY <channel>, '<partition>'`` for each inserted row)."""
    _check_table(table)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {table} ("
        " id BIGSERIAL PRIMARY KEY,"
        " method TEXT NOT NULL,"
        " payload JSONB NOT NULL,"
        " partition INTEGER NOT NULL DEFAULT 0,"
        " created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {table.replace('.', '_')}_partition_id_idx"
        f" ON {table} (partition, id)",
    ]
    if notification_channel:
        fn = _notify_function(table)
        literal = "'" + notification_channel.replace("'", "''") + "'"
        statements += [
            f"CREATE OR REPLACE FUNCTION {fn}() RETURNS TRIGGER AS $$ BEGIN"
            f" PERFORM pg_notify({literal}, NEW.partition::text); RETURN NEW;"
            " END; $$ LANGUAGE plpgsql",
            f"CREATE OR REPLACE TRIGGER {table.replace('.', '_')}_notify_partition_trigger"
            f" AFTER INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {fn}()",
        ]
    return statements


def drop_table_sql(table: str = DEFAULT_TABLE) -> list[str]:
    """The statements that drop what :func:`create_table_sql` created (a migration's
    reverse): the table with its index and trigger, and the trigger's function."""
    _check_table(table)
    return [f"DROP TABLE IF EXISTS {table}", f"DROP FUNCTION IF EXISTS {_notify_function(table)}()"]


def _notify_function(table: str) -> str:
    """The trigger function's name, in the table's schema when the name has one (not in
    whichever schema the connection's ``search_path`` starts with)."""
    schema, _, _ = table.rpartition(".")
    name = f"{table.replace('.', '_')}_notify_partition"
    return f"{schema}.{name}" if schema else name


def publish_payload(
    channel: str,
    data: Any,
    *,
    idempotency_key: str | None = None,
    tags: dict[str, str] | None = None,
    skip_history: bool = False,
) -> dict[str, Any]:
    """The ``publish`` request body (``data`` is any JSON-encodable value)."""
    if not channel:
        raise ValueError("channel is required")
    payload: dict[str, Any] = {"channel": channel, "data": data}
    return _options(payload, idempotency_key, tags, skip_history)


def broadcast_payload(
    channels: Sequence[str],
    data: Any,
    *,
    idempotency_key: str | None = None,
    tags: dict[str, str] | None = None,
    skip_history: bool = False,
) -> dict[str, Any]:
    """The ``broadcast`` request body."""
    if isinstance(channels, str) or not channels:
        raise ValueError("channels must be a non-empty list of channel names")
    payload: dict[str, Any] = {"channels": list(channels), "data": data}
    return _options(payload, idempotency_key, tags, skip_history)


def _options(
    payload: dict[str, Any],
    idempotency_key: str | None,
    tags: dict[str, str] | None,
    skip_history: bool,
) -> dict[str, Any]:
    payload["idempotency_key"] = str(uuid.uuid4()) if idempotency_key is None else idempotency_key
    if tags:
        payload["tags"] = tags
    if skip_history:
        payload["skip_history"] = True
    return payload


# ----------------------------------------------------------------------------- async


async def command(
    conn: Any,
    method: str,
    payload: dict[str, Any],
    *,
    table: str = DEFAULT_TABLE,
    partition: int = 0,
) -> None:
    """Insert one ``method`` + ``payload`` row through an async connection or session."""
    sql, params = _statement(conn, table, method, payload, partition)
    result = conn.execute(sql, *params) if _kind(conn) == "asyncpg" else conn.execute(sql, params)
    await result


async def publish(
    conn: Any,
    channel: str,
    data: Any,
    *,
    table: str = DEFAULT_TABLE,
    partition: int = 0,
    idempotency_key: str | None = None,
    tags: dict[str, str] | None = None,
    skip_history: bool = False,
) -> None:
    """Publish ``data`` into ``channel`` when the caller's transaction commits."""
    body = publish_payload(
        channel, data, idempotency_key=idempotency_key, tags=tags, skip_history=skip_history
    )
    await command(conn, "publish", body, table=table, partition=partition)


async def broadcast(
    conn: Any,
    channels: Sequence[str],
    data: Any,
    *,
    table: str = DEFAULT_TABLE,
    partition: int = 0,
    idempotency_key: str | None = None,
    tags: dict[str, str] | None = None,
    skip_history: bool = False,
) -> None:
    """Publish ``data`` into each of ``channels`` when the caller's transaction commits."""
    body = broadcast_payload(
        channels, data, idempotency_key=idempotency_key, tags=tags, skip_history=skip_history
    )
    await command(conn, "broadcast", body, table=table, partition=partition)


# ------------------------------------------------------------------------------ sync


def command_sync(
    conn: Any,
    method: str,
    payload: dict[str, Any],
    *,
    table: str = DEFAULT_TABLE,
    partition: int = 0,
) -> None:
    """:func:`command` for a sync connection, session or DB-API cursor."""
    if _kind(conn) == "asyncpg":
        raise TypeError("an asyncpg connection is async: use await outbox_table.command()")
    sql, params = _statement(conn, table, method, payload, partition)
    conn.execute(sql, params)


def publish_sync(
    conn: Any,
    channel: str,
    data: Any,
    *,
    table: str = DEFAULT_TABLE,
    partition: int = 0,
    idempotency_key: str | None = None,
    tags: dict[str, str] | None = None,
    skip_history: bool = False,
) -> None:
    """:func:`publish` for a sync connection, session or DB-API cursor."""
    body = publish_payload(
        channel, data, idempotency_key=idempotency_key, tags=tags, skip_history=skip_history
    )
    command_sync(conn, "publish", body, table=table, partition=partition)


def broadcast_sync(
    conn: Any,
    channels: Sequence[str],
    data: Any,
    *,
    table: str = DEFAULT_TABLE,
    partition: int = 0,
    idempotency_key: str | None = None,
    tags: dict[str, str] | None = None,
    skip_history: bool = False,
) -> None:
    """:func:`broadcast` for a sync connection, session or DB-API cursor."""
    body = broadcast_payload(
        channels, data, idempotency_key=idempotency_key, tags=tags, skip_history=skip_history
    )
    command_sync(conn, "broadcast", body, table=table, partition=partition)


# --------------------------------------------------------------------------- helpers


def _check_table(table: str) -> None:
    if not _IDENT.match(table):
        raise ValueError(f"outbox table name {table!r} must be [schema.]identifier")


def _kind(conn: Any) -> str:
    """``sqlalchemy``, ``asyncpg`` or ``dbapi`` (psycopg, psycopg2, Django, …)."""
    module = type(conn).__module__
    if module.startswith("sqlalchemy"):
        return "sqlalchemy"
    if module.startswith("asyncpg"):
        return "asyncpg"
    if not callable(getattr(conn, "execute", None)):
        raise TypeError(f"cannot write an outbox row through {type(conn).__name__}")
    return "dbapi"


def _statement(
    conn: Any, table: str, method: str, payload: dict[str, Any], partition: int
) -> tuple[Any, Any]:
    _check_table(table)
    if not method:
        raise ValueError("method is required")
    if not isinstance(partition, int) or partition < 0:
        raise ValueError("partition must be an integer >= 0")
    body = _encode(payload).decode()
    columns = f"INSERT INTO {table} (method, payload, partition)"
    kind = _kind(conn)
    if kind == "asyncpg":
        return f"{columns} VALUES ($1, $2::jsonb, $3)", (method, body, partition)
    if kind == "sqlalchemy":
        from sqlalchemy import text

        sql = text(f"{columns} VALUES (:method, CAST(:payload AS JSONB), :partition)")
        return sql, {"method": method, "payload": body, "partition": partition}
    return f"{columns} VALUES (%s, %s::jsonb, %s)", (method, body, partition)
