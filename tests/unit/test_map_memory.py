"""The memory map broker: the map broker contract with a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from centrifuge_asgi.engines.map_memory import MemoryMapBroker
from tests.engine_contract import RecordingHandler
from tests.map_broker_contract import MapBrokerContract, MapUnderTest


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


class TestMemoryMapBroker(MapBrokerContract):
    @pytest.fixture
    async def map_engine(self) -> AsyncIterator[MapUnderTest]:
        clock = FakeClock()
        handler = RecordingHandler()
        broker = MemoryMapBroker(clock=clock)
        await broker.start(handler)

        async def expire(seconds: float) -> None:
            clock.now += seconds
            broker.sweep()

        yield MapUnderTest(broker, handler, expire)
        await broker.close()
