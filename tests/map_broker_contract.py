"""The map broker contract: behaviour every :class:`~centrifuge_asgi.engines.map_base.MapBroker`
must show (map subscriptions).

Subclass :class:`MapBrokerContract` in a ``test_*.py`` module with a ``map_engine`` fixture
yielding a :class:`MapUnderTest` whose broker was started with its
:class:`~tests.engine_contract.RecordingHandler`. ``expire(seconds)`` lets that much time
pass and runs the broker's key expiry (a fake clock plus ``sweep()`` for memory, a sleep
for a backend with its own cleanup). Every test uses its own channel names.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import pytest

from centrifuge_asgi.engines.base import HistoryFilter, StreamPosition
from centrifuge_asgi.engines.map_base import (
    MapBroker,
    MapChannelOptions,
    MapPublishOptions,
    MapRemoveOptions,
)
from centrifuge_asgi.errors import ClientError
from tests.engine_contract import RecordingHandler, wait_for

PERSISTENT = MapChannelOptions(mode="persistent")
RECOVERABLE = MapChannelOptions(mode="recoverable", key_ttl=1.0, stream_size=3)
EPHEMERAL = MapChannelOptions(mode="ephemeral", key_ttl=1.0)


class MapUnderTest(NamedTuple):
    broker: MapBroker
    handler: RecordingHandler
    expire: Callable[[float], Awaitable[None]]


def _ch() -> str:
    return f"map:{uuid.uuid4().hex[:10]}"


def _data(value: str) -> MapPublishOptions:
    return MapPublishOptions(data=f'{{"v":"{value}"}}'.encode())


@pytest.mark.anyio
class MapBrokerContract:
    async def test_publish_state_and_live_delivery(self, map_engine: MapUnderTest) -> None:
        b, h = map_engine.broker, map_engine.handler
        ch = _ch()
        await map_engine.broker.subscribe(ch)
        for key in ("b", "a", "c"):
            res = await b.publish(ch, key, _data(key), PERSISTENT)
            assert not res.suppressed
        assert res.position.offset == 3
        state = await b.read_state(ch)
        assert [p.key for p in state.publications] == ["a", "b", "c"]
        assert [p.offset for p in state.publications] == [2, 1, 3]
        assert state.position == res.position and state.cursor == ""
        await wait_for(lambda: len([p for c, p, _ in h.publications if c == ch]) == 3)
        live = [(p.key, p.offset) for c, p, _ in h.publications if c == ch]
        assert live == [("b", 1), ("a", 2), ("c", 3)]

    async def test_pages_with_cursor(self, map_engine: MapUnderTest) -> None:
        b = map_engine.broker
        ch = _ch()
        await map_engine.broker.subscribe(ch)
        for i in range(5):
            await b.publish(ch, f"k{i}", _data(str(i)), PERSISTENT)
        keys: list[str] = []
        cursor = ""
        for _ in range(10):
            page = await b.read_state(ch, cursor=cursor, limit=2)
            keys += [p.key for p in page.publications]
            cursor = page.cursor
            if not cursor:
                break
        assert keys == ["k0", "k1", "k2", "k3", "k4"]
        one = await b.read_state(ch, key="k3")
        assert [p.data for p in one.publications] == [b'{"v":"3"}']
        assert (await b.read_state(ch, limit=0)).publications == []
        assert await b.stats(ch) == 5

    async def test_a_cursor_that_is_no_key_is_an_exclusive_lower_bound(
        self, map_engine: MapUnderTest
    ) -> None:
        """A cursor names no key of the map: the page starts after it in key order (byte
        order, also for characters Redis' ZRANGEBYLEX gives meaning: ``( [ + -``), and
        one past every key is an empty last page."""
        b = map_engine.broker
        ch = _ch()
        for key in ("b", "d", "f"):
            await b.publish(ch, key, _data(key), PERSISTENT)
        cases = {
            "zz": [],
            "garbage!!": [],  # 'g' sorts after every key
            "999999999999999999999999": ["b", "d", "f"],
            "-1": ["b", "d", "f"],
            "+": ["b", "d", "f"],
            "\x00[(+-": ["b", "d", "f"],
            "c": ["d", "f"],
            "d\x00": ["f"],
            "[d": ["b", "d", "f"],
            "(d": ["b", "d", "f"],
        }
        for cursor, keys in cases.items():
            for limit in (-1, 2, 10):
                page = await b.read_state(ch, cursor=cursor, limit=limit)
                got = [p.key for p in page.publications]
                want = keys if limit < 0 else keys[:limit]
                assert got == want, (cursor, limit)
                more = 0 < limit < len(keys)
                assert page.cursor == (want[-1] if more else ""), (cursor, limit)
                assert page.position.offset == 3

    async def test_remove_and_suppressions(self, map_engine: MapUnderTest) -> None:
        b, h = map_engine.broker, map_engine.handler
        ch = _ch()
        await map_engine.broker.subscribe(ch)
        tags = {"t": "1"}
        await b.publish(ch, "a", MapPublishOptions(data=b"1", tags=tags), PERSISTENT)
        again = await b.publish(
            ch, "a", MapPublishOptions(data=b"2", key_mode="if_new"), PERSISTENT
        )
        assert (again.suppressed, again.suppress_reason) == (True, "key_exists")
        nope = await b.publish(
            ch, "z", MapPublishOptions(data=b"2", key_mode="if_exists"), PERSISTENT
        )
        assert nope.suppress_reason == "key_not_found"
        removed = await b.remove(ch, "a", MapRemoveOptions(), PERSISTENT)
        assert removed.position.offset == 2 and not removed.suppressed
        missing = await b.remove(ch, "a", MapRemoveOptions(), PERSISTENT)
        assert missing.suppress_reason == "key_not_found"
        await wait_for(lambda: any(p.removed for c, p, _ in h.publications if c == ch))
        gone = next(p for c, p, _ in h.publications if c == ch and p.removed)
        assert (gone.key, gone.data, gone.tags, gone.offset) == ("a", b"", tags, 2)
        assert (await b.read_state(ch)).publications == []

    async def test_idempotency_version_and_cas(self, map_engine: MapUnderTest) -> None:
        b = map_engine.broker
        ch = _ch()
        await map_engine.broker.subscribe(ch)
        opts = MapPublishOptions(data=b"1", idempotency_key="x")
        first = await b.publish(ch, "a", opts, PERSISTENT)
        dup = await b.publish(ch, "a", opts, PERSISTENT)
        assert dup.suppress_reason == "idempotency" and dup.position == first.position
        v2 = await b.publish(ch, "v", MapPublishOptions(data=b"2", version=2), PERSISTENT)
        old = await b.publish(ch, "v", MapPublishOptions(data=b"1", version=1), PERSISTENT)
        assert not v2.suppressed and old.suppress_reason == "version"
        stale = StreamPosition(1, first.position.epoch)
        cas = await b.publish(
            ch, "a", MapPublishOptions(data=b"3", expected_position=stale), PERSISTENT
        )
        assert cas.suppress_reason == "position_mismatch"
        top = (await b.read_stream(ch, HistoryFilter())).position
        ok = await b.publish(
            ch, "a", MapPublishOptions(data=b"3", expected_position=top), PERSISTENT
        )
        assert not ok.suppressed and ok.position.offset == top.offset + 1

    async def test_stream_reads_and_unrecoverable_positions(self, map_engine: MapUnderTest) -> None:
        b = map_engine.broker
        ch = _ch()
        await map_engine.broker.subscribe(ch)
        for i in range(5):  # stream_size 3 keeps offsets 3..5
            await b.publish(ch, f"k{i}", _data(str(i)), RECOVERABLE)
        top = (await b.read_stream(ch, HistoryFilter())).position
        assert top.offset == 5
        since = await b.read_stream(ch, HistoryFilter(limit=-1, since=StreamPosition(3, top.epoch)))
        assert [p.offset for p in since.publications] == [4, 5]
        rev = await b.read_stream(ch, HistoryFilter(limit=2, reverse=True))
        assert [p.offset for p in rev.publications] == [5, 4]
        before = HistoryFilter(limit=-1, since=StreamPosition(5, top.epoch), reverse=True)
        assert [p.offset for p in (await b.read_stream(ch, before)).publications] == [4, 3]
        with pytest.raises(ClientError) as err:
            await b.read_stream(ch, HistoryFilter(limit=-1, since=StreamPosition(1, top.epoch)))
        assert err.value.code == 112
        with pytest.raises(ClientError) as err:
            await b.read_stream(ch, HistoryFilter(limit=-1, since=StreamPosition(5, "other")))
        assert err.value.code == 112
        with pytest.raises(ClientError) as err:
            await b.read_state(ch, revision=StreamPosition(5, "other"))
        assert err.value.code == 112
        at_top = await b.read_stream(ch, HistoryFilter(limit=-1, since=top))
        assert at_top.publications == []

    @pytest.mark.parametrize("since", [10**14, 2**53 + 1, 2**64 - 1])
    async def test_stream_since_an_offset_past_the_top(
        self, map_engine: MapUnderTest, since: int
    ) -> None:
        """Any uint64 is a position a client may send (10**14 and above print in exponent
        form as a Lua number): nothing follows it, everything retained precedes it."""
        b = map_engine.broker
        ch = _ch()
        for i in range(4):  # stream_size 3 keeps offsets 2..4
            await b.publish(ch, f"k{i}", _data(str(i)), RECOVERABLE)
        top = (await b.read_stream(ch, HistoryFilter())).position
        position = StreamPosition(since, top.epoch)
        for limit in (-1, 0, 2):
            forward = await b.read_stream(ch, HistoryFilter(limit=limit, since=position))
            assert (forward.publications, forward.position) == ([], top)
        backward = await b.read_stream(ch, HistoryFilter(limit=-1, since=position, reverse=True))
        assert [p.offset for p in backward.publications] == [4, 3, 2]
        assert backward.position == top
        with pytest.raises(ClientError) as err:
            await b.read_stream(ch, HistoryFilter(limit=-1, since=StreamPosition(since, "x")))
        assert err.value.code == 112

    async def test_versions_above_two_to_the_53_compare_exactly(
        self, map_engine: MapUnderTest
    ) -> None:
        b = map_engine.broker
        ch = _ch()

        async def publish(key: str, version: int, epoch: str = "") -> str:
            opts = MapPublishOptions(data=b"{}", version=version, version_epoch=epoch)
            return (await b.publish(ch, key, opts, PERSISTENT)).suppress_reason

        assert await publish("a", 2**60 + 1) == ""
        assert await publish("a", 2**60 + 2) == ""
        assert await publish("a", 2**60 + 1) == "version"
        assert await publish("a", 2**60 + 2) == "version"
        assert await publish("a", 2**64 - 1) == ""
        assert await publish("a", 10**18) == "version"  # fewer digits, lower
        assert await publish("b", 2**60 + 1) == ""  # versions are per key
        assert await publish("b", 2**60 + 1, "e") == ""  # a new version epoch resets
        assert await publish("b", 2**60, "e") == "version"
        assert [p.offset for p in (await b.read_state(ch)).publications] == [3, 5]

    async def test_key_ttl_expiry_is_a_removal(self, map_engine: MapUnderTest) -> None:
        b, h = map_engine.broker, map_engine.handler
        ch = _ch()
        await map_engine.broker.subscribe(ch)
        await b.publish(ch, "gone", _data("x"), RECOVERABLE)
        await map_engine.expire(0.5)
        await b.publish(ch, "kept", _data("y"), RECOVERABLE)
        await map_engine.expire(0.8)  # "gone" is 1.3 s old, "kept" 0.8 s
        await wait_for(lambda: any(p.removed for c, p, _ in h.publications if c == ch))
        state = await b.read_state(ch)
        assert [p.key for p in state.publications] == ["kept"]
        removal = next(p for c, p, _ in h.publications if c == ch and p.removed)
        assert (removal.key, removal.offset) == ("gone", 3)
        stream = await b.read_stream(ch, HistoryFilter(limit=-1))
        assert [(p.key, p.removed) for p in stream.publications] == [
            ("gone", False),
            ("kept", False),
            ("gone", True),
        ]

    async def test_ephemeral_keeps_no_stream(self, map_engine: MapUnderTest) -> None:
        b, h = map_engine.broker, map_engine.handler
        ch = _ch()
        await map_engine.broker.subscribe(ch)
        res = await b.publish(ch, "a", _data("a"), EPHEMERAL)
        assert res.position.offset == 0 and res.position.epoch
        assert (await b.read_stream(ch, HistoryFilter(limit=-1))).publications == []
        await wait_for(lambda: any(c == ch for c, _, _ in h.publications))
        assert [p.offset for c, p, _ in h.publications if c == ch] == [0]
        await map_engine.expire(1.5)
        await wait_for(lambda: any(p.removed for c, p, _ in h.publications if c == ch))

    async def test_clear_starts_a_new_epoch(self, map_engine: MapUnderTest) -> None:
        b = map_engine.broker
        ch = _ch()
        await map_engine.broker.subscribe(ch)
        first = await b.publish(ch, "a", _data("a"), PERSISTENT)
        await b.clear(ch)
        assert await b.stats(ch) == 0
        after = await b.read_state(ch)
        assert after.publications == [] and after.position.epoch != first.position.epoch
        assert after.position.offset == 0

    async def test_suppressed_publish_can_renew_the_ttl(self, map_engine: MapUnderTest) -> None:
        """What map presence does: add once (``if_new``), then only renew the TTL."""
        b, h = map_engine.broker, map_engine.handler
        ch = _ch()
        await b.subscribe(ch)
        renew = MapPublishOptions(data=b"{}", key_mode="if_new", refresh_ttl_on_suppress=True)
        assert not (await b.publish(ch, "me", renew, RECOVERABLE)).suppressed
        await map_engine.expire(0.7)
        again = await b.publish(ch, "me", renew, RECOVERABLE)
        assert again.suppress_reason == "key_exists" and again.position.offset == 1
        await map_engine.expire(0.7)  # 1.4 s after the add, 0.7 s after the renewal
        assert [p.key for p in (await b.read_state(ch)).publications] == ["me"]
        await map_engine.expire(0.6)
        await wait_for(lambda: any(p.removed for c, p, _ in h.publications if c == ch))
