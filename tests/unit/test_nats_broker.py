"""The NATS broker against the nats-server at 127.0.0.1:4222 (``.ci/run`` starts it).

Without NATS the tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from centrifuge_asgi.config import Config, NatsConfig
from centrifuge_asgi.engines.base import ClientInfo, HistoryFilter, PublishOptions
from centrifuge_asgi.engines.factory import build_engine
from centrifuge_asgi.engines.memory import MemoryPresenceManager
from centrifuge_asgi.errors import ClientError, EngineUnavailable
from tests.conditions import unavailable
from tests.engine_contract import RecordingHandler, wait_for

if os.environ.get("CI") != "true":
    pytest.importorskip("nats")

from centrifuge_asgi.engines.nats import NatsBroker
from tests.interop.serve_process import free_port

pytestmark = pytest.mark.anyio
NATS_URL = "nats://127.0.0.1:4222"


def require_nats() -> None:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 4222), 0.5):
        return
    unavailable("NATS is not running at 127.0.0.1:4222 (.ci/run starts nats-server)")


Handler = RecordingHandler  # with a node_id: the control handler of this node


@contextlib.asynccontextmanager
async def nats_broker(prefix: str, **options: object) -> AsyncIterator[tuple[NatsBroker, Handler]]:
    cfg = NatsConfig(url=NATS_URL, prefix=prefix, **options)  # type: ignore[arg-type]
    broker, handler = NatsBroker(cfg), Handler()
    broker.register_control_handler(handler, handler.node_id)
    await broker.start(handler)
    try:
        await _wait_until_live(broker, handler)
        yield broker, handler
    finally:
        await broker.close()


async def _wait_until_live(
    broker: NatsBroker, handler: Handler, publisher: NatsBroker | None = None
) -> None:
    """Round-trip a probe from ``publisher`` (default: the broker itself) to ``broker``.

    A freshly connected client on a loaded CI machine can take a moment before its
    publications flow; the tests below are about routing, not connection start-up.
    Two-broker tests also probe across the connections before they start.
    """
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    await broker.subscribe(probe)
    with anyio.fail_after(10):
        while not handler.data_in(probe):
            await (publisher or broker).publish(probe, b'"probe"', PublishOptions())
            await anyio.sleep(0.05)
    await broker.unsubscribe(probe)
    handler.publications[:] = [p for p in handler.publications if p[0] != probe]


@contextlib.asynccontextmanager
async def nats_pair(
    prefix: str, **options_b: object
) -> AsyncIterator[tuple[NatsBroker, Handler, NatsBroker, Handler]]:
    """Two brokers on separate connections, with publications flowing a → b and b → a."""
    async with nats_broker(prefix) as (a, ha), nats_broker(prefix, **options_b) as (b, hb):
        await _wait_until_live(b, hb, publisher=a)
        await _wait_until_live(a, ha, publisher=b)
        yield a, ha, b, hb


@pytest.fixture
def prefix() -> str:
    require_nats()
    return f"test-{uuid.uuid4().hex[:8]}"


async def test_fan_out_between_two_brokers(prefix: str) -> None:
    async with nats_pair(prefix) as (a, ha, b, hb):
        await b.subscribe("news")
        info = ClientInfo("u1", "c1", conn_info=b'{"a":1}')
        opts = PublishOptions(history_size=10, history_ttl=60, client_info=info, tags={"k": "v"})
        result = await a.publish("news", b'{"text":"hi"}', opts)
        assert (result.position.offset, result.position.epoch) == (0, "")
        await a.publish_join("news", info)
        await a.publish_leave("news", info)
        await wait_for(lambda: len(hb.leaves) == 1, lambda: (hb.publications, hb.joins, hb.leaves))
        (channel, pub, epoch) = hb.publications[0]
        assert (channel, pub.data, pub.offset, pub.info, pub.tags, epoch) == (
            "news",
            b'{"text":"hi"}',
            0,
            info,
            {"k": "v"},
            "",
        )
        assert hb.joins == [("news", info)]
        assert ha.publications == []  # a never subscribed
        await b.unsubscribe("news")
        await b.subscribe("marker")
        await a.publish("news", b'"dropped"', PublishOptions())
        await a.publish("marker", b'"m"', PublishOptions())
        await wait_for(lambda: hb.data_in("marker") == [b'"m"'])
        assert hb.data_in("news") == [b'{"text":"hi"}']


def nats_subscriptions(broker: NatsBroker, channel: str) -> int:
    """Subscriptions the NATS client holds for the channel's subject (leaks included)."""
    nc = broker._nc
    assert nc is not None
    subject = broker._subject(channel)
    return sum(1 for sub in nc._subs.values() if sub.subject == subject)


async def test_a_subscribe_is_on_the_wire_before_the_ping_that_confirms_it(prefix: str) -> None:
    """nats-py writes PING straight to the socket, ahead of its queued commands: the
    SUB must be written before the PING whose PONG ends ``subscribe``."""
    async with nats_broker(prefix) as (a, _):
        nc = a._nc
        assert nc is not None
        transport: Any = nc._transport
        wire: list[bytes] = []
        write, writelines = transport.write, transport.writelines

        def record(data: bytes) -> None:
            wire.append(bytes(data))
            write(data)

        def record_lines(lines: list[bytes]) -> None:
            wire.extend(bytes(line) for line in lines)
            writelines(lines)

        transport.write, transport.writelines = record, record_lines
        try:
            await a.subscribe("ordered")
        finally:
            transport.write, transport.writelines = write, writelines
        sent = b"".join(wire)
        assert b"SUB " + a._subject("ordered").encode() in sent
        assert sent.index(b"SUB " + a._subject("ordered").encode()) < sent.rindex(b"PING")


@contextlib.contextmanager
def stuck_queue_flush(broker: NatsBroker) -> Iterator[None]:
    """nats-py's queue flush stuck (its flusher task blocked in ``drain``), swallowing
    cancellation the way nats-py's own ``_flush_pending`` does."""
    nc: Any = broker._nc
    original = nc._flush_pending

    async def stuck(force_flush: bool = False) -> Any:
        if not force_flush:  # queueing a command: nats-py's own, which does not wait
            return await original(force_flush)
        with contextlib.suppress(asyncio.CancelledError):
            await anyio.sleep_forever()

    nc._flush_pending = stuck
    try:
        yield
    finally:
        nc._flush_pending = original


async def test_subscribe_fails_when_the_queue_is_not_written_in_time(prefix: str) -> None:
    async with nats_broker(prefix, write_timeout=1.0) as (a, _):
        with stuck_queue_flush(a), anyio.fail_after(5), pytest.raises(EngineUnavailable):
            await a.subscribe("never")


async def test_a_cancellation_swallowed_by_nats_py_is_passed_on(prefix: str) -> None:
    async with nats_broker(prefix, write_timeout=5.0) as (a, _):
        outcome: list[str] = []

        async def subscribe() -> None:
            try:
                await a.subscribe("cancelled")
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise
            outcome.append("returned")

        with stuck_queue_flush(a):
            started = anyio.current_time()
            async with anyio.create_task_group() as tg:
                tg.start_soon(subscribe)
                await anyio.sleep(0.1)
                tg.cancel_scope.cancel()
        assert outcome == ["cancelled"]
        assert anyio.current_time() - started < 2  # not the 5 s deadline


async def test_subscribe_unsubscribe_churn_keeps_one_subscription(prefix: str) -> None:
    """Interleaved subscribe/unsubscribe of one channel never leaks a NATS subscription."""
    rng = random.Random(7)
    async with nats_pair(prefix) as (a, ha, b, _):
        nc = a._nc
        assert nc is not None
        original_subscribe = nc.subscribe

        async def slow_subscribe(*args: Any, **kwargs: Any) -> Any:
            # nats-py's subscribe awaits its flusher queue; when that queue is busy the
            # call yields, which is what opens the window for a second subscriber
            for _ in range(rng.randrange(3)):
                await anyio.lowlevel.checkpoint()
            return await original_subscribe(*args, **kwargs)

        nc.subscribe = slow_subscribe  # type: ignore[method-assign]

        async def churn(steps: int) -> None:
            for _ in range(steps):
                if rng.random() < 0.5:
                    await a.subscribe("churn")
                else:
                    await a.unsubscribe("churn")
                for _ in range(rng.randrange(3)):
                    await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(churn, 25)
        await a.subscribe("churn")
        assert nats_subscriptions(a, "churn") == 1
        await b.publish("churn", b'"once"', PublishOptions())
        await b.publish("marker", b'"m"', PublishOptions())
        # nats-py only queues a publish: without this round trip the server could route
        # b's first marker after a's SUB below (their connections are read in parallel),
        # and a would see two markers
        await b._flush()
        await a.subscribe("marker")
        await b.publish("churn", b'"twice"', PublishOptions())
        await b.publish("marker", b'"m"', PublishOptions())
        await wait_for(lambda: ha.data_in("marker") == [b'"m"'], lambda: ha.data_in("marker"))
        await wait_for(lambda: b'"twice"' in ha.data_in("churn"))
        assert ha.data_in("churn").count(b'"once"') == 1
        assert ha.data_in("churn").count(b'"twice"') == 1
        await a.unsubscribe("churn")
        assert nats_subscriptions(a, "churn") == 0
        assert "churn" not in a._locks  # no lock is left behind once nobody uses it


async def test_control_to_all_and_to_one(prefix: str) -> None:
    async with nats_pair(prefix) as (a, ha, _, hb):
        await a.publish_control(b"all")
        await a.publish_control(b"only-b", node_id=hb.node_id)
        await wait_for(lambda: hb.controls == [b"all", b"only-b"])
        await wait_for(lambda: ha.controls == [b"all"])


async def test_no_history(prefix: str) -> None:
    async with nats_broker(prefix) as (broker, _):
        for call in (
            broker.history("ch", HistoryFilter(limit=-1)),
            broker.remove_history("ch"),
        ):
            with pytest.raises(ClientError) as info:
                await call
            assert info.value.code == 108


async def test_wildcards_need_allow_wildcards(prefix: str) -> None:
    async with nats_broker(prefix) as (plain, _):
        with pytest.raises(ClientError):
            await plain.subscribe("room.*")
    async with nats_pair(prefix, allow_wildcards=True) as (pub, _, wild, hw):
        await wild.subscribe("room.*")
        await pub.publish("room.1", b'"one"', PublishOptions())
        await wait_for(lambda: hw.data_in("room.*") == [b'"one"'])


async def test_raw_mode_exchanges_bare_payloads(prefix: str) -> None:
    raw = {"enabled": True, "prefix": f"{prefix}-raw.", "channel_replacements": {":": "."}}
    cfg = Config.from_dict({"broker": {"nats": {"raw_mode": raw}}}).broker.nats
    async with nats_broker(prefix, raw_mode=cfg.raw_mode) as (a, ha):
        await a.subscribe("ns:chan")
        assert a._subject("ns:chan") == f"{prefix}-raw.ns.chan"
        await a.publish("ns:chan", b"plain bytes", PublishOptions())
        await wait_for(lambda: ha.data_in("ns:chan") == [b"plain bytes"])


async def test_unreachable_nats_fails_fast() -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    broker = NatsBroker(NatsConfig(url=url, dial_timeout=0.5))
    with pytest.raises(EngineUnavailable):
        await broker.start(Handler())
    await broker.close()
    with pytest.raises(EngineUnavailable):
        await broker.publish("ch", b"{}", PublishOptions())


def test_factory_builds_nats_with_memory_presence() -> None:
    config = Config.from_dict(
        {"broker": {"enabled": True, "type": "nats", "nats": {"url": NATS_URL}}}
    )
    broker, presence = build_engine(config)
    assert isinstance(broker, NatsBroker)
    assert isinstance(presence, MemoryPresenceManager)
