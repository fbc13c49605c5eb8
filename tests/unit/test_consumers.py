"""Consumers without a database: the ``consumers[]`` config and the command dispatcher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from centrifuge_asgi import Node
from centrifuge_asgi.config import Config, load_config
from centrifuge_asgi.consumers import CommandDispatcher, RetryLater, outbox_table
from centrifuge_asgi.consumers.backoff import MAX_DELAY, next_delay
from centrifuge_asgi.engines.base import PublishOptions, PublishResult
from centrifuge_asgi.errors import ConfigError, EngineUnavailable

PG = {"dsn": "postgresql://db/app", "outbox_table_name": "centrifugo_outbox"}


def consumer(**item: Any) -> dict[str, Any]:
    return {"name": "pg", "enabled": True, "type": "postgresql", "postgresql": PG, **item}


# ---------------------------------------------------------------------------- config


def test_defaults_follow_centrifugo() -> None:
    (c,) = Config.from_dict({"consumers": [consumer()]}).consumers
    pg = c.postgresql
    assert (pg.num_partitions, pg.partition_select_limit, pg.partition_poll_interval) == (
        1,
        100,
        0.3,
    )
    rs = c.redis_stream
    assert (rs.visibility_timeout, rs.num_workers, rs.payload_value, rs.method_value) == (
        30.0,
        1,
        "payload",
        "method",
    )
    js = c.nats_jetstream
    assert (js.url, js.deliver_policy, js.max_ack_pending, js.method_header) == (
        "nats://127.0.0.1:4222",
        "new",
        100,
        "centrifugo-method",
    )


@pytest.mark.parametrize(
    ("item", "key", "reason"),
    [
        ({"name": "a"}, "consumers[0].name", "^[a-zA-Z0-9_]{2,}$"),
        ({"name": "my-consumer"}, "consumers[0].name", "^[a-zA-Z0-9_]{2,}$"),
        ({"type": "rabbitmq"}, "consumers[0].type", "must be postgresql, redis_stream"),
        ({"type": "kafka"}, "consumers[0].type", "not supported by centrifuge-asgi"),
        ({"postgresql": {"dsn": "x"}}, "consumers[0].postgresql.outbox_table_name", "required"),
        ({"postgresql": {**PG, "dsn": ""}}, "consumers[0].postgresql.dsn", "required"),
        (
            {"postgresql": {**PG, "outbox_table_name": "x; DROP TABLE y"}},
            "consumers[0].postgresql.outbox_table_name",
            "[schema.]table",
        ),
        (
            {"postgresql": {**PG, "num_partitions": -1}},
            "consumers[0].postgresql.num_partitions",
            "at least 1",
        ),
        (
            {"type": "redis_stream", "redis_stream": {"consumer_group": "g"}},
            "consumers[0].redis_stream.streams",
            "required",
        ),
        (
            {
                "type": "redis_stream",
                "redis_stream": {
                    "streams": ["s"],
                    "consumer_group": "g",
                    "publication_data_mode": {"enabled": True},
                },
            },
            "consumers[0].redis_stream.publication_data_mode.enabled",
            "not supported",
        ),
        (
            {"postgresql": {**PG, "tls": {"enabled": True}}},
            "consumers[0].postgresql.tls.enabled",
            "sslmode=",
        ),
        (
            {
                "type": "redis_stream",
                "redis_stream": {
                    "streams": ["s"],
                    "consumer_group": "g",
                    "sentinel_address": ["127.0.0.1:26379"],
                },
            },
            "consumers[0].redis_stream.address",
            "Sentinel",
        ),
        (
            {"type": "nats_jetstream", "nats_jetstream": {"stream_name": "s"}},
            "consumers[0].nats_jetstream.durable_consumer_name",
            "required",
        ),
        (
            {
                "type": "nats_jetstream",
                "nats_jetstream": {
                    "stream_name": "s",
                    "durable_consumer_name": "d",
                    "deliver_policy": "last",
                },
            },
            "consumers[0].nats_jetstream.deliver_policy",
            "new or all",
        ),
    ],
)
def test_invalid_consumers_name_the_key_and_the_file(
    tmp_path: Path, item: dict[str, Any], key: str, reason: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"consumers": [consumer(**item)]}))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert f"'{key}'" in message
    assert reason in message
    assert str(path) in message


def test_duplicate_names_and_disabled_items() -> None:
    with pytest.raises(ConfigError, match=r"consumers\[1\].name.*duplicate"):
        Config.from_dict({"consumers": [consumer(), consumer()]})
    # a disabled consumer needs no options, and a disabled kafka one is accepted
    off = Config.from_dict(
        {"consumers": [{"name": "pg", "type": "postgresql"}, {"name": "kf", "type": "kafka"}]}
    )
    assert [c.enabled for c in off.consumers] == [False, False]


def test_environment_overrides_by_consumer_name() -> None:
    config = load_config(
        None,
        env={
            "CENTRIFUGO_CONSUMERS": "outbox",
            "CENTRIFUGO_CONSUMERS_OUTBOX_ENABLED": "true",
            "CENTRIFUGO_CONSUMERS_OUTBOX_TYPE": "postgresql",
            "CENTRIFUGO_CONSUMERS_OUTBOX_POSTGRESQL_DSN": "postgresql://env/db",
            "CENTRIFUGO_CONSUMERS_OUTBOX_POSTGRESQL_OUTBOX_TABLE_NAME": "app.outbox",
            "CENTRIFUGO_CONSUMERS_OUTBOX_POSTGRESQL_PARTITION_POLL_INTERVAL": "1s",
        },
    )
    (c,) = config.consumers
    assert (c.name, c.enabled, c.postgresql.dsn, c.postgresql.outbox_table_name) == (
        "outbox",
        True,
        "postgresql://env/db",
        "app.outbox",
    )
    assert c.postgresql.partition_poll_interval == 1.0
    assert Config.from_dict(config.to_dict()).consumers == config.consumers


def test_backoff_is_bounded() -> None:
    assert 0.01 <= next_delay(0) <= 0.02
    assert next_delay(3) < next_delay(6)
    assert next_delay(1000) == MAX_DELAY


def test_outbox_table_payloads() -> None:
    body = outbox_table.publish_payload("chat:1", {"a": 1}, tags={"k": "v"})
    assert body["channel"] == "chat:1" and body["data"] == {"a": 1} and body["tags"] == {"k": "v"}
    assert len(body["idempotency_key"]) == 36  # a UUID unless given
    assert outbox_table.publish_payload("c", 1, idempotency_key="")["idempotency_key"] == ""
    with pytest.raises(ValueError):
        outbox_table.broadcast_payload("chat:1", 1)  # a string is not a list of channels
    with pytest.raises(ValueError):
        outbox_table.create_table_sql("a.b.c")
    with pytest.raises(TypeError):
        outbox_table.publish_sync(object(), "c", 1)
    ddl = outbox_table.create_table_sql("app.outbox", "wake")
    assert "pg_notify('wake', NEW.partition::text)" in ddl[2]
    assert ddl[2].startswith("CREATE OR REPLACE FUNCTION app.app_outbox_notify_partition()")
    assert outbox_table.drop_table_sql("app.outbox") == [
        "DROP TABLE IF EXISTS app.outbox",
        "DROP FUNCTION IF EXISTS app.app_outbox_notify_partition()",
    ]


# ------------------------------------------------------------------------ dispatcher


async def _history(node: Node, channel: str) -> list[Any]:
    page = await node.history(channel, limit=-1)
    return [json.loads(p.data) for p in page.publications]


@pytest.mark.anyio
async def test_dispatch_runs_state_changing_commands_and_skips_the_rest(node: Node) -> None:
    d = CommandDispatcher(node)
    assert await d.dispatch("publish", b'{"channel": "news:1", "data": {"n": 1}}')
    envelope = {"method": "publish", "payload": {"channel": "news:1", "data": {"n": 2}}}
    assert await d.dispatch("", json.dumps(envelope).encode())
    as_string = json.dumps(json.dumps({"channel": "news:1", "data": {"n": 3}}))
    assert await d.dispatch("publish", as_string.encode())
    assert await d.dispatch("broadcast", b'{"channels": ["news:1", "news:2"], "data": 4}')
    for method, payload in [
        ("history", b'{"channel": "news:1"}'),  # a read
        ("batch", b"{}"),
        ("nope", b"{}"),
        ("publish", b'{"channel": 1}'),  # wrong type
        ("publish", b"not json"),
        ("", b"not json"),
        ("publish", b'{"channel": "unknown_ns:1", "data": 1}'),  # 102
        ("publish", b'{"channel": "news:1"}'),  # 107: no data
    ]:
        assert not await d.dispatch(method, payload), (method, payload)
    assert await _history(node, "news:1") == [{"n": 1}, {"n": 2}, {"n": 3}, 4]


@pytest.mark.anyio
async def test_dispatch_asks_to_retry_internal_errors(node: Node) -> None:
    class Down:
        async def publish(self, channel: str, data: bytes, opts: PublishOptions) -> PublishResult:
            raise EngineUnavailable("broker down")

    node.broker = Down()  # type: ignore[assignment]
    d = CommandDispatcher(node)
    with pytest.raises(RetryLater):
        await d.dispatch("publish", b'{"channel": "news:1", "data": 1}')
    with pytest.raises(RetryLater):  # one failed channel retries the whole broadcast
        await d.dispatch("broadcast", b'{"channels": ["news:1"], "data": 1}')
