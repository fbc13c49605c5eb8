"""The ``nats_jetstream`` consumer against the real NATS with JetStream (127.0.0.1:4222).

Messages run through the node's API executor and are acked after their command ran or
was skipped as bad; a command to retry is nak'ed and redelivered; a missing consumer
with ``use_existing_consumer`` is reported and retried. Streams are unique per test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from centrifuge_asgi.consumers import outbox_table, statuses
from centrifuge_asgi.node import Node
from tests.conditions import module
from tests.interop.support import make_config

from .conftest import Proxy, unavailable, until

pytestmark = [pytest.mark.anyio]

nats = module("nats")
URL = "nats://127.0.0.1:4222"


@pytest.fixture
async def jetstream() -> AsyncIterator[tuple[Any, str]]:
    try:
        nc = await nats.connect(URL, connect_timeout=2, max_reconnect_attempts=0)
    except Exception as exc:
        unavailable(f"NATS at {URL} is not available: {exc}")
    js = nc.jetstream()
    name = f"cf_test_{uuid.uuid4().hex[:12]}"
    try:
        await js.add_stream(name=name, subjects=[f"{name}.>"])
    except Exception as exc:
        await nc.close()
        unavailable(f"NATS at {URL} has no JetStream (nats-server -js): {exc}")
    try:
        yield js, name
    finally:
        await js.delete_stream(name)
        await nc.close()


def item(stream: str, **options: Any) -> dict[str, Any]:
    opts = {
        "url": URL,
        "stream_name": stream,
        "subjects": [f"{stream}.>"],
        "durable_consumer_name": "cf_durable",
        "deliver_policy": "all",
        **options,
    }
    return {"name": "js", "enabled": True, "type": "nats_jetstream", "nats_jetstream": opts}


async def history(node: Node, channel: str) -> list[Any]:
    page = await node.history(channel, limit=-1)
    return [json.loads(p.data) for p in page.publications]


async def test_messages_run_are_acked_and_bad_ones_skipped(jetstream: tuple[Any, str]) -> None:
    js, stream = jetstream
    method = {"centrifugo-method": "publish"}
    body = outbox_table.publish_payload("news:j", {"n": 1})
    await js.publish(f"{stream}.a", json.dumps(body).encode(), headers=method)
    envelope = {"method": "publish", "payload": {"channel": "news:j", "data": {"n": 2}}}
    await js.publish(f"{stream}.b", json.dumps(envelope).encode())  # no header: an envelope
    await js.publish(f"{stream}.a", b"not json", headers=method)  # skipped
    await js.publish(f"{stream}.a", b"{}", headers={"centrifugo-method": "info"})  # skipped
    body3 = outbox_table.publish_payload("news:j", {"n": 3})
    await js.publish(f"{stream}.a", json.dumps(body3).encode(), headers=method)
    cfg = make_config()
    cfg["consumers"] = [item(stream)]
    node = Node(cfg)
    async with node:
        await until(lambda: _processed(node, 5))
        assert await history(node, "news:j") == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert statuses(node)["js"].skipped == 2
        info = await js.consumer_info(stream, "cf_durable")
        assert (info.num_ack_pending, info.num_pending) == (0, 0)


async def test_internal_errors_are_nacked_and_redelivered(jetstream: tuple[Any, str]) -> None:
    js, stream = jetstream
    cfg = make_config()
    cfg["consumers"] = [item(stream)]
    node = Node(cfg)

    class Down:
        async def publish(self, *args: Any) -> Any:
            from centrifuge_asgi.errors import EngineUnavailable

            raise EngineUnavailable("broker down")

    async with node:
        broker = node.broker
        node.broker = Down()  # type: ignore[assignment]
        body = outbox_table.publish_payload("news:n", "later")
        await js.publish(
            f"{stream}.a", json.dumps(body).encode(), headers={"centrifugo-method": "publish"}
        )
        await until(lambda: _errors(node, 2))  # nak'ed and redelivered, again and again
        node.broker = broker
        await until(lambda: _processed(node, 1))
        assert await history(node, "news:n") == ["later"]


async def test_a_missing_existing_consumer_is_reported(jetstream: tuple[Any, str]) -> None:
    _, stream = jetstream
    cfg = make_config()
    cfg["consumers"] = [item(stream, use_existing_consumer=True, durable_consumer_name="none")]
    node = Node(cfg)
    async with node:
        await until(lambda: _errors(node, 1))
        assert statuses(node)["js"].state == "retrying"


async def _processed(node: Node, count: int) -> bool:
    status = statuses(node).get("js")
    return status is not None and status.processed >= count


async def _errors(node: Node, count: int) -> bool:
    status = statuses(node).get("js")
    return status is not None and status.errors >= count


async def test_a_nats_outage_mid_stream_is_survived(jetstream: tuple[Any, str]) -> None:
    """The connection to NATS is cut (a proxy the test controls): the consumer reports
    ``retrying`` while nats-py reconnects, then consumes what was published meanwhile."""
    js, stream = jetstream
    method = {"centrifugo-method": "publish"}

    async def send(n: int) -> None:
        body = outbox_table.publish_payload("news:o", n)
        await js.publish(f"{stream}.a", json.dumps(body).encode(), headers=method)

    async with anyio.create_task_group() as tg:
        proxy = Proxy(4222)
        await tg.start(proxy.serve)
        cfg = make_config()
        cfg["consumers"] = [item(stream, url=f"nats://127.0.0.1:{proxy.port}")]
        cfg["prometheus"] = {"enabled": True}
        node = Node(cfg)
        async with node:
            for n in range(3):
                await send(n)
            await until(lambda: _processed(node, 3))
            proxy.down()
            await until(lambda: _state(node, "retrying"))
            for n in range(3, 6):
                await send(n)
            proxy.up()
            await until(lambda: _processed(node, 6), within=15)
            assert await history(node, "news:o") == list(range(6))
            assert statuses(node)["js"].state == "running"
            metrics = node.metrics.exposition().decode()  # type: ignore[attr-defined]
            assert 'centrifugo_consumers_errors_total{consumer_name="js"}' in metrics
        tg.cancel_scope.cancel()


async def _state(node: Node, state: str) -> bool:
    status = statuses(node).get("js")
    return status is not None and status.state == state
