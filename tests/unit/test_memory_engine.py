"""The memory engine: the shared engine contract plus memory-only behaviour (sweep)."""

from __future__ import annotations

import string
from collections.abc import AsyncIterator

import pytest

from centrifuge_asgi.engines.base import ClientInfo, HistoryFilter, PublishOptions, StreamPosition
from centrifuge_asgi.engines.memory import EMPTY_STREAM_TTL, MemoryBroker, MemoryPresenceManager
from centrifuge_asgi.errors import ClientError
from tests.engine_contract import EngineContract, EngineUnderTest, RecordingHandler


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
async def broker(clock: FakeClock, handler: RecordingHandler) -> AsyncIterator[MemoryBroker]:
    broker = MemoryBroker(clock=clock)
    broker.register_control_handler(handler, handler.node_id)
    await broker.start(handler)
    yield broker
    await broker.close()


class TestMemoryEngineContract(EngineContract):
    @pytest.fixture
    async def engine(
        self, broker: MemoryBroker, handler: RecordingHandler, clock: FakeClock
    ) -> AsyncIterator[EngineUnderTest]:
        presence = MemoryPresenceManager()
        yield EngineUnderTest(broker, presence, handler, clock.advance)
        await presence.close()


SHORT = PublishOptions(history_size=10, history_ttl=1.0, history_meta_ttl=5.0)


@pytest.mark.anyio
class TestMemoryOnly:
    async def test_epoch_is_four_ascii_letters(self, broker: MemoryBroker) -> None:
        epoch = (await broker.publish("ch", b"{}", SHORT)).position.epoch
        assert len(epoch) == 4
        assert set(epoch) <= set(string.ascii_letters)

    async def test_sweep_drops_expired_data_and_keeps_meta(
        self, broker: MemoryBroker, clock: FakeClock
    ) -> None:
        await broker.publish("idle", b"{}", SHORT)
        await clock.advance(0.5)
        await broker.publish("busy", b"{}", SHORT)
        await clock.advance(0.7)
        broker.sweep()
        assert len(broker._streams["idle"].publications) == 0
        assert broker._streams["idle"].top == 1
        assert len(broker._streams["busy"].publications) == 1

    async def test_sweep_frees_channels_whose_meta_expired(
        self, broker: MemoryBroker, clock: FakeClock
    ) -> None:
        for i in range(100):
            await broker.publish(f"ch{i}", b"{}", SHORT)
        await broker.history("read-only", HistoryFilter(), meta_ttl=5.0)
        await clock.advance(4.0)
        await broker.publish("ch0", b"{}", SHORT)
        broker.sweep()
        assert len(broker._streams) == 101
        await clock.advance(1.5)
        broker.sweep()
        assert list(broker._streams) == ["ch0"]

    async def test_sweep_drops_expired_idempotent_results(
        self, broker: MemoryBroker, clock: FakeClock
    ) -> None:
        keyed = PublishOptions(idempotency_key="k", idempotent_result_ttl=300.0)
        await broker.publish("a", b"{}", keyed)
        await broker.publish("b", b"{}", PublishOptions(idempotency_key="k"))
        await clock.advance(299.0)
        broker.sweep()
        assert len(broker._results) == 2
        await clock.advance(2.0)
        broker.sweep()
        assert broker._results == {}

    async def test_default_meta_ttl_is_thirty_days(
        self, broker: MemoryBroker, clock: FakeClock
    ) -> None:
        epoch = (await broker.publish("ch", b"{}", PublishOptions(10, 1.0))).position.epoch
        await clock.advance(30 * 24 * 3600 - 10)
        broker.sweep()
        assert (await broker.history("ch", HistoryFilter())).position.epoch == epoch
        await clock.advance(30 * 24 * 3600 + 1)
        broker.sweep()
        assert "ch" not in broker._streams

    async def test_publish_before_start_stores_without_delivery(self, clock: FakeClock) -> None:
        broker = MemoryBroker(clock=clock)
        result = await broker.publish("ch", b"{}", SHORT)
        await broker.publish_join("ch", ClientInfo("u", "c"))
        await broker.publish_control(b"x")
        assert result.position.offset == 1
        handler = RecordingHandler()
        broker.register_control_handler(handler, handler.node_id)
        await broker.start(handler)
        await broker.publish("ch", b"late", SHORT)
        assert handler.data_in("ch") == [b"late"]
        assert handler.joins == []
        assert handler.controls == []

    async def test_close_stops_delivery_and_is_idempotent(
        self, broker: MemoryBroker, handler: RecordingHandler
    ) -> None:
        await broker.subscribe("ch")
        assert broker.subscribed_channels == {"ch"}
        await broker.close()
        await broker.close()
        await broker.publish("ch", b"{}", SHORT)
        assert handler.publications == []
        assert broker.subscribed_channels == frozenset()

    async def test_subscriptions_are_tracked(self, broker: MemoryBroker) -> None:
        await broker.subscribe("a")
        await broker.subscribe("b")
        await broker.unsubscribe("a")
        await broker.unsubscribe("never")
        assert broker.subscribed_channels == {"b"}

    async def test_limit_below_minus_one_is_rejected(self, broker: MemoryBroker) -> None:
        with pytest.raises(ValueError, match="limit"):
            await broker.history("ch", HistoryFilter(limit=-2))
        assert "ch" not in broker._streams  # validated before the stream is touched

    async def test_history_filter_validate(self) -> None:
        for ok in (
            HistoryFilter(),
            HistoryFilter(limit=-1, since=StreamPosition(0, ""), reverse=False),
            HistoryFilter(limit=5, since=StreamPosition(1, "e"), reverse=True),
            HistoryFilter(limit=5, reverse=True),
        ):
            ok.validate()
        with pytest.raises(ValueError, match="limit"):
            HistoryFilter(limit=-2).validate()
        with pytest.raises(ClientError) as info:
            HistoryFilter(since=StreamPosition(0, "e"), reverse=True).validate()
        assert info.value.code == 107

    async def test_reading_many_channel_names_does_not_pin_streams(
        self, broker: MemoryBroker, clock: FakeClock
    ) -> None:
        for i in range(1000):
            await broker.history(f"probe-{i}", HistoryFilter(limit=0))
        assert len(broker._streams) == 1000
        await clock.advance(EMPTY_STREAM_TTL - 1)
        broker.sweep()
        assert len(broker._streams) == 1000  # still within the empty-stream window
        await clock.advance(2)
        broker.sweep()
        assert broker._streams == {}

    async def test_empty_stream_epoch_is_stable_while_read_or_subscribed(
        self, broker: MemoryBroker, clock: FakeClock
    ) -> None:
        read = await broker.history("polled", HistoryFilter(limit=0))
        for _ in range(20):  # a reader every 40 s (the position check) keeps the epoch
            await clock.advance(40)
            broker.sweep()
            assert (await broker.history("polled", HistoryFilter(limit=0))).position == (
                read.position
            )
        await broker.subscribe("watched")
        watched = await broker.history("watched", HistoryFilter(limit=0))
        await clock.advance(10 * EMPTY_STREAM_TTL)
        broker.sweep()
        published = await broker.publish("watched", b"{}", PublishOptions(10, 60.0))
        assert published.position == StreamPosition(1, watched.position.epoch)
        # the last subscriber leaves: the empty stream goes after EMPTY_STREAM_TTL idle
        await broker.subscribe("left")
        left = await broker.history("left", HistoryFilter(limit=0))
        await broker.unsubscribe("left")
        await clock.advance(EMPTY_STREAM_TTL + 1)
        broker.sweep()
        assert "left" not in broker._streams
        assert (await broker.history("left", HistoryFilter())).position.epoch != (
            left.position.epoch
        )

    async def test_streams_with_publications_keep_the_meta_ttl(
        self, broker: MemoryBroker, clock: FakeClock
    ) -> None:
        top = (await broker.publish("ch", b"{}", PublishOptions(10, 1.0))).position
        await clock.advance(10 * EMPTY_STREAM_TTL)
        broker.sweep()
        assert (await broker.history("ch", HistoryFilter())).position == top

    async def test_presence_forgets_empty_channels(self) -> None:
        presence = MemoryPresenceManager()
        await presence.add_presence("ch", "c1", ClientInfo("u", "c1"))
        await presence.remove_presence("ch", "c1", "u")
        await presence.remove_presence("never", "c1", "u")
        assert presence._channels == {}

    async def test_presence_returns_a_copy(self) -> None:
        presence = MemoryPresenceManager()
        await presence.add_presence("ch", "c1", ClientInfo("u", "c1"))
        snapshot = await presence.presence("ch")
        snapshot.clear()
        assert list(await presence.presence("ch")) == ["c1"]
