"""The engine contract: behaviour every Broker + PresenceManager pair must show.

Plugging in an engine: subclass :class:`EngineContract` in a ``test_*.py`` module and
give the subclass an ``engine`` fixture that yields an :class:`EngineUnderTest` whose
broker has already been started with the yielded :class:`RecordingHandler`::

    class TestRedisEngine(EngineContract):
        @pytest.fixture
        async def engine(self) -> AsyncIterator[EngineUnderTest]:
            handler = RecordingHandler()
            broker = RedisBroker(prefix=unique_prefix())
            presence = RedisPresenceManager(prefix=unique_prefix())
            broker.register_control_handler(handler, handler.node_id)
            await broker.start(handler)
            yield EngineUnderTest(broker, presence, handler, advance=anyio.sleep)
            await broker.close()
            await presence.close()

The tests are ``@pytest.mark.anyio`` coroutines, so an ``anyio_backend`` fixture must be
in scope (``tests/conftest.py`` provides a session-scoped one; the memory test module
also defines its own).

``advance(seconds)`` must let that much engine time pass: an engine with an injectable
clock moves a fake clock (instant), a real backend simply sleeps. The suite uses TTLs of
one or two seconds, so a sleeping engine spends a few seconds in the expiry tests.

Delivery to the handler may be asynchronous (a Redis PUB/SUB round trip), so tests wait
for events with :func:`wait_for`, and prove that something was *not* delivered by
publishing a marker afterwards and waiting for the marker. Every test uses its own
channel names, so one backend instance may be shared between tests.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import anyio
import pytest

from centrifuge_asgi.engines.base import (
    Broker,
    ClientInfo,
    HistoryFilter,
    HistoryResult,
    PresenceManager,
    PresenceStats,
    Publication,
    PublishOptions,
    StreamPosition,
)
from centrifuge_asgi.errors import ClientError
from centrifuge_asgi.subscriptions import _cache_recovered, _is_recovered

HISTORY = PublishOptions(history_size=10, history_ttl=60.0)
NO_HISTORY = PublishOptions()
ALL = -1
WAIT_SECONDS = 5.0  # generous: only a failing test waits this long


@dataclass
class RecordingHandler:
    """A BrokerEventHandler and ControlEventHandler that records every event it receives
    (register it as the control handler with its ``node_id``)."""

    node_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    publications: list[tuple[str, Publication, str]] = field(default_factory=list)
    joins: list[tuple[str, ClientInfo]] = field(default_factory=list)
    leaves: list[tuple[str, ClientInfo]] = field(default_factory=list)
    controls: list[bytes] = field(default_factory=list)

    def handle_publication(self, channel: str, pub: Publication, epoch: str) -> None:
        self.publications.append((channel, pub, epoch))

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        self.joins.append((channel, info))

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        self.leaves.append((channel, info))

    def handle_control(self, data: bytes) -> None:
        self.controls.append(data)

    def data_in(self, channel: str) -> list[bytes]:
        """Payloads delivered into ``channel``, in arrival order."""
        return [pub.data for ch, pub, _ in self.publications if ch == channel]


class EngineUnderTest(NamedTuple):
    broker: Broker
    presence: PresenceManager
    handler: RecordingHandler
    advance: Callable[[float], Awaitable[None]]


async def wait_for(predicate: Callable[[], bool], seen: Callable[[], object] = lambda: "") -> None:
    """Wait until ``predicate()`` holds; fails the test after ``WAIT_SECONDS``.

    Polling keeps the handler a plain recorder that any backend can call. ``seen``
    describes what did arrive, for the failure message.
    """
    try:
        with anyio.fail_after(WAIT_SECONDS):
            while not predicate():  # noqa: ASYNC110
                await anyio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"not met within {WAIT_SECONDS} s; seen: {seen()!r}") from None


def recovery_outcome(result: HistoryResult, since_offset: int) -> tuple[bool, list[int]]:
    """The node's own recovery decision (``subscriptions._is_recovered``, what a subscribe
    with ``recover`` uses) for a read since ``since_offset`` (epoch already matched).

    Returns ``(recovered, offsets sent to the client)``; recovery is all or nothing.
    """
    pubs = result.publications
    recovered = _is_recovered(since_offset, pubs, result.position)
    return recovered, [pub.offset for pub in pubs] if recovered else []


def offsets(result: HistoryResult) -> list[int]:
    return [pub.offset for pub in result.publications]


def history_opts(size: int = 10, ttl: float = 60.0, **kwargs: Any) -> PublishOptions:
    """Publish options with history enabled (``kwargs`` are further PublishOptions fields)."""
    return PublishOptions(history_size=size, history_ttl=ttl, **kwargs)


@pytest.mark.anyio
class EngineContract:
    """Contract tests; a subclass supplies the ``engine`` fixture (see module docstring)."""

    @pytest.fixture
    def channel(self) -> str:
        return f"contract-{uuid.uuid4().hex[:12]}"

    @staticmethod
    async def publish_many(
        engine: EngineUnderTest, channel: str, count: int, opts: PublishOptions = HISTORY
    ) -> StreamPosition:
        position = StreamPosition()
        for i in range(1, count + 1):
            position = (await engine.broker.publish(channel, b'{"n":%d}' % i, opts)).position
        return position

    @staticmethod
    async def read(
        engine: EngineUnderTest,
        channel: str,
        limit: int = ALL,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        return await engine.broker.history(channel, HistoryFilter(limit, since, reverse))

    # --- offsets and epochs -------------------------------------------------------------

    async def test_offsets_are_consecutive_from_one_with_a_stable_epoch(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        results = [await engine.broker.publish(channel, b"{}", HISTORY) for _ in range(5)]
        assert [r.position.offset for r in results] == [1, 2, 3, 4, 5]
        epochs = {r.position.epoch for r in results}
        assert len(epochs) == 1
        assert epochs != {""}
        assert not any(r.suppressed for r in results)

    async def test_channels_have_independent_streams(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        await self.publish_many(engine, channel, 3)
        other = await engine.broker.publish(channel + "-other", b"{}", HISTORY)
        assert other.position.offset == 1

    async def test_reading_an_unknown_channel_creates_its_epoch(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        first = await self.read(engine, channel, limit=0)
        assert first.position.offset == 0
        assert first.position.epoch != ""
        assert first.publications == []
        again = await self.read(engine, channel, limit=0)
        assert again.position == first.position
        published = await engine.broker.publish(channel, b"{}", HISTORY)
        assert published.position == StreamPosition(1, first.position.epoch)

    async def test_publish_without_history_has_no_position(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        result = await engine.broker.publish(channel, b"{}", NO_HISTORY)
        assert result.position == StreamPosition(0, "")
        ttl_only = PublishOptions(history_size=0, history_ttl=60.0)
        size_only = PublishOptions(history_size=10, history_ttl=0.0)
        assert (await engine.broker.publish(channel, b"{}", ttl_only)).position.offset == 0
        assert (await engine.broker.publish(channel, b"{}", size_only)).position.offset == 0
        assert (await self.read(engine, channel)).position.offset == 0

    # --- history queries ----------------------------------------------------------------

    async def test_limit_zero_returns_only_the_position(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        top = await self.publish_many(engine, channel, 3)
        result = await self.read(engine, channel, limit=0)
        assert result.publications == []
        assert result.position == top == StreamPosition(3, top.epoch)

    async def test_forward_history_from_the_oldest(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        top = await self.publish_many(engine, channel, 5)
        everything = await self.read(engine, channel, limit=ALL)
        assert offsets(everything) == [1, 2, 3, 4, 5]
        assert [p.data for p in everything.publications][:2] == [b'{"n":1}', b'{"n":2}']
        assert everything.position == top
        assert offsets(await self.read(engine, channel, limit=2)) == [1, 2]
        assert offsets(await self.read(engine, channel, limit=50)) == [1, 2, 3, 4, 5]

    async def test_forward_history_since(self, engine: EngineUnderTest, channel: str) -> None:
        top = await self.publish_many(engine, channel, 5)
        since = StreamPosition(2, top.epoch)
        assert offsets(await self.read(engine, channel, since=since)) == [3, 4, 5]
        assert offsets(await self.read(engine, channel, limit=2, since=since)) == [3, 4]
        assert offsets(await self.read(engine, channel, since=StreamPosition(0, ""))) == [
            1,
            2,
            3,
            4,
            5,
        ]
        at_top = await self.read(engine, channel, since=top)
        assert at_top.publications == []
        assert at_top.position == top
        future = await self.read(engine, channel, since=StreamPosition(100, top.epoch))
        assert future.publications == []

    async def test_reverse_history(self, engine: EngineUnderTest, channel: str) -> None:
        top = await self.publish_many(engine, channel, 5)
        assert offsets(await self.read(engine, channel, reverse=True)) == [5, 4, 3, 2, 1]
        assert offsets(await self.read(engine, channel, limit=2, reverse=True)) == [5, 4]
        since = StreamPosition(4, top.epoch)
        assert offsets(await self.read(engine, channel, since=since, reverse=True)) == [3, 2, 1]
        limited = await self.read(engine, channel, limit=2, since=since, reverse=True)
        assert offsets(limited) == [3, 2]
        assert limited.position == top
        oldest = StreamPosition(1, top.epoch)
        assert (await self.read(engine, channel, since=oldest, reverse=True)).publications == []
        beyond = StreamPosition(50, top.epoch)
        assert offsets(await self.read(engine, channel, since=beyond, reverse=True)) == [
            5,
            4,
            3,
            2,
            1,
        ]

    @pytest.mark.parametrize("since", [10**14, 2**53 + 1, 2**64 - 1])
    async def test_history_since_an_offset_past_the_top(
        self, engine: EngineUnderTest, channel: str, since: int
    ) -> None:
        """Any uint64 is a position a client may send: past the top (10**14 and above print
        in exponent form as a Lua number) nothing follows it and everything precedes it."""
        top = await self.publish_many(engine, channel, 3)
        position = StreamPosition(since, top.epoch)
        for limit in (ALL, 0, 2):
            forward = await self.read(engine, channel, limit=limit, since=position)
            assert (forward.publications, forward.position) == ([], top)
        assert recovery_outcome(forward, since) == (False, [])
        backward = await self.read(engine, channel, since=position, reverse=True)
        assert (offsets(backward), backward.position) == ([3, 2, 1], top)
        limited = await self.read(engine, channel, limit=2, since=position, reverse=True)
        assert offsets(limited) == [3, 2]
        with pytest.raises(ClientError) as info:
            await self.read(engine, channel, since=StreamPosition(since, top.epoch + "x"))
        assert info.value.code == 112

    async def test_reverse_since_zero_is_a_bad_request(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        top = await self.publish_many(engine, channel, 2)
        with pytest.raises(ClientError) as info:
            await self.read(engine, channel, since=StreamPosition(0, top.epoch), reverse=True)
        assert info.value.code == 107

    async def test_wrong_epoch_is_an_unrecoverable_position(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        top = await self.publish_many(engine, channel, 2)
        wrong = StreamPosition(1, top.epoch + "x")
        for limit in (0, ALL):
            with pytest.raises(ClientError) as info:
                await self.read(engine, channel, limit=limit, since=wrong)
            assert info.value.code == 112
        with pytest.raises(ClientError) as info:
            await self.read(engine, channel, since=wrong, reverse=True)
        assert info.value.code == 112
        no_epoch = StreamPosition(1, "")
        assert offsets(await self.read(engine, channel, since=no_epoch)) == [2]

    async def test_history_is_trimmed_to_its_size(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        top = await self.publish_many(engine, channel, 15, history_opts(size=10))
        assert top.offset == 15
        assert offsets(await self.read(engine, channel)) == list(range(6, 16))
        assert offsets(await self.read(engine, channel, limit=3)) == [6, 7, 8]
        assert offsets(await self.read(engine, channel, reverse=True, limit=2)) == [15, 14]
        trimmed_since = StreamPosition(2, top.epoch)
        after_trim = await self.read(engine, channel, since=trimmed_since)
        assert offsets(after_trim) == list(range(6, 16))
        assert recovery_outcome(after_trim, 2) == (False, [])

    async def test_history_data_expires_but_position_remains(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        opts = history_opts(ttl=1.0)
        top = await self.publish_many(engine, channel, 3, opts)
        await engine.advance(1.5)
        expired = await self.read(engine, channel)
        assert expired.publications == []
        assert expired.position == top
        after = await engine.broker.publish(channel, b"{}", opts)
        assert after.position == StreamPosition(4, top.epoch)
        assert offsets(await self.read(engine, channel)) == [4]

    async def test_history_ttl_slides_with_the_last_publish(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        opts = history_opts(ttl=1.0)
        await engine.broker.publish(channel, b"{}", opts)
        await engine.advance(0.6)
        await engine.broker.publish(channel, b"{}", opts)
        await engine.advance(0.6)
        assert offsets(await self.read(engine, channel)) == [1, 2]

    async def test_expired_meta_starts_a_new_epoch(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        opts = history_opts(ttl=1.0, history_meta_ttl=2.0)
        old = await self.publish_many(engine, channel, 3, opts)
        await engine.advance(2.5)
        fresh = await engine.broker.history(channel, HistoryFilter(limit=ALL), meta_ttl=2.0)
        assert fresh.publications == []
        assert fresh.position.offset == 0
        assert fresh.position.epoch not in ("", old.epoch)
        with pytest.raises(ClientError) as info:
            await self.read(engine, channel, since=old)
        assert info.value.code == 112
        restarted = await engine.broker.publish(channel, b"{}", opts)
        assert restarted.position == StreamPosition(1, fresh.position.epoch)

    async def test_history_reads_keep_the_meta_alive(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        opts = history_opts(ttl=1.0, history_meta_ttl=2.0)
        top = await self.publish_many(engine, channel, 2, opts)
        for _ in range(2):
            await engine.advance(1.5)
            kept = await engine.broker.history(channel, HistoryFilter(limit=0), meta_ttl=2.0)
            assert kept.position == top

    async def test_remove_history_keeps_the_position(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        top = await self.publish_many(engine, channel, 4)
        await engine.broker.remove_history(channel)
        emptied = await self.read(engine, channel)
        assert emptied.publications == []
        assert emptied.position == top
        after = await engine.broker.publish(channel, b"{}", HISTORY)
        assert after.position == StreamPosition(5, top.epoch)
        await engine.broker.remove_history(channel + "-never-used")

    async def test_skip_history_delivers_without_storing(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        await engine.broker.subscribe(channel)
        top = await self.publish_many(engine, channel, 2)
        skipped = await engine.broker.publish(channel, b"skipped", history_opts(skip_history=True))
        assert skipped.position.offset == 0
        await wait_for(lambda: b"skipped" in engine.handler.data_in(channel))
        _, pub, _ = engine.handler.publications[-1]
        assert pub.offset == 0
        result = await self.read(engine, channel)
        assert offsets(result) == [1, 2]
        assert result.position == top

    # --- idempotency and versions -------------------------------------------------------

    async def test_idempotency_key_publishes_once(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        await engine.broker.subscribe(channel)
        keyed = history_opts(idempotency_key="k1")
        first = await engine.broker.publish(channel, b"first", keyed)
        repeat = await engine.broker.publish(channel, b"repeat", keyed)
        assert first.position.offset == 1
        assert not first.suppressed
        assert repeat.position == first.position
        assert repeat.suppressed
        other = await engine.broker.publish(channel, b"other", history_opts(idempotency_key="k2"))
        assert other.position.offset == 2
        elsewhere = await engine.broker.publish(channel + "-b", b"x", keyed)
        assert not elsewhere.suppressed
        await wait_for(lambda: b"other" in engine.handler.data_in(channel))
        assert engine.handler.data_in(channel) == [b"first", b"other"]
        assert offsets(await self.read(engine, channel)) == [1, 2]

    async def test_idempotency_without_history(self, engine: EngineUnderTest, channel: str) -> None:
        await engine.broker.subscribe(channel)
        keyed = PublishOptions(idempotency_key="k")
        first = await engine.broker.publish(channel, b"first", keyed)
        repeat = await engine.broker.publish(channel, b"repeat", keyed)
        assert first.position == repeat.position == StreamPosition(0, "")
        await engine.broker.publish(channel, b"marker", NO_HISTORY)
        await wait_for(lambda: b"marker" in engine.handler.data_in(channel))
        assert engine.handler.data_in(channel) == [b"first", b"marker"]

    async def test_idempotent_result_expires(self, engine: EngineUnderTest, channel: str) -> None:
        keyed = history_opts(idempotency_key="k", idempotent_result_ttl=1.0)
        first = await engine.broker.publish(channel, b"{}", keyed)
        await engine.advance(1.5)
        again = await engine.broker.publish(channel, b"{}", keyed)
        assert not again.suppressed
        assert again.position == StreamPosition(2, first.position.epoch)

    async def test_versions_suppress_stale_publications(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        await engine.broker.subscribe(channel)

        async def publish(data: bytes, version: int, version_epoch: str = "") -> tuple[int, bool]:
            opts = history_opts(version=version, version_epoch=version_epoch)
            result = await engine.broker.publish(channel, data, opts)
            return result.position.offset, result.suppressed

        assert await publish(b"v1", 1) == (1, False)
        assert await publish(b"v1-again", 1) == (1, True)
        assert await publish(b"v3", 3) == (2, False)
        assert await publish(b"v2", 2) == (2, True)
        assert await publish(b"e-v1", 1, "e") == (3, False)  # new version epoch resets
        assert await publish(b"e-v1-again", 1, "e") == (3, True)
        assert await publish(b"any-epoch-v1", 1) == (3, True)
        assert await publish(b"unversioned", 0) == (4, False)
        await wait_for(lambda: b"unversioned" in engine.handler.data_in(channel))
        assert engine.handler.data_in(channel) == [b"v1", b"v3", b"e-v1", b"unversioned"]
        assert offsets(await self.read(engine, channel)) == [1, 2, 3, 4]

    async def test_versions_above_two_to_the_53_compare_exactly(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        """uint64 versions (nanosecond timestamps, say) differing by less than a double's
        spacing up there are still ordered."""
        await engine.broker.subscribe(channel)

        async def publish(data: bytes, version: int) -> tuple[int, bool]:
            result = await engine.broker.publish(channel, data, history_opts(version=version))
            return result.position.offset, result.suppressed

        assert await publish(b"a", 2**60 + 1) == (1, False)
        assert await publish(b"b", 2**60 + 2) == (2, False)
        assert await publish(b"c", 2**60 + 1) == (2, True)
        assert await publish(b"d", 2**60 + 2) == (2, True)
        assert await publish(b"e", 2**64 - 2) == (3, False)
        assert await publish(b"f", 2**64 - 1) == (4, False)
        assert await publish(b"g", 2**64 - 1) == (4, True)
        assert await publish(b"h", 10**18) == (4, True)  # fewer digits, lower
        assert await publish(b"end", 0) == (5, False)
        await wait_for(lambda: b"end" in engine.handler.data_in(channel))
        assert engine.handler.data_in(channel) == [b"a", b"b", b"e", b"f", b"end"]

    async def test_versions_are_ignored_without_history(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        opts = PublishOptions(version=1)
        first = await engine.broker.publish(channel, b"{}", opts)
        second = await engine.broker.publish(channel, b"{}", opts)
        assert not first.suppressed
        assert not second.suppressed

    # --- delivery -----------------------------------------------------------------------

    async def test_publication_is_delivered_with_its_position(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        await engine.broker.subscribe(channel)
        info = ClientInfo(user="u1", client="c1", conn_info=b'{"a":1}', chan_info=b'{"b":2}')
        opts = history_opts(client_info=info, tags={"k": "v"})
        before = int(time.time() * 1000)
        result = await engine.broker.publish(channel, b'{"text":"hi"}', opts)
        after = int(time.time() * 1000)
        await wait_for(lambda: len(engine.handler.data_in(channel)) == 1)
        delivered_channel, pub, epoch = engine.handler.publications[-1]
        assert delivered_channel == channel
        assert epoch == result.position.epoch
        assert pub.offset == 1
        assert pub.data == b'{"text":"hi"}'
        assert pub.info == info
        assert pub.tags == {"k": "v"}
        assert before - 1000 <= pub.time <= after + 1000
        (stored,) = (await self.read(engine, channel)).publications
        assert (stored.data, stored.offset, stored.info, stored.tags) == (
            pub.data,
            1,
            info,
            {"k": "v"},
        )

    async def test_publication_without_history_is_delivered_without_epoch(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        await engine.broker.subscribe(channel)
        await engine.broker.publish(channel, b"plain", NO_HISTORY)
        await wait_for(lambda: engine.handler.data_in(channel) == [b"plain"])
        _, pub, epoch = engine.handler.publications[-1]
        assert (pub.offset, epoch) == (0, "")

    async def test_join_leave_and_control_are_delivered(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        await engine.broker.subscribe(channel)
        info = ClientInfo(user="u1", client="c1")
        await engine.broker.publish_join(channel, info)
        await engine.broker.publish_leave(channel, info)
        await wait_for(lambda: len(engine.handler.leaves) == 1)
        assert engine.handler.joins == [(channel, info)]
        assert engine.handler.leaves == [(channel, info)]
        marker = uuid.uuid4().bytes
        await engine.broker.publish_control(marker)
        await wait_for(lambda: marker in engine.handler.controls)

    # --- presence -----------------------------------------------------------------------

    async def test_presence_add_remove_and_stats(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        presence = engine.presence
        assert await presence.presence(channel) == {}
        assert await presence.presence_stats(channel) == PresenceStats(0, 0)
        alice1 = ClientInfo(user="alice", client="c1")
        alice2 = ClientInfo(user="alice", client="c2", conn_info=b'{"x":1}')
        bob = ClientInfo(user="bob", client="c3")
        for info in (alice1, alice2, bob):
            await presence.add_presence(channel, info.client, info)
        assert await presence.presence(channel) == {"c1": alice1, "c2": alice2, "c3": bob}
        assert await presence.presence_stats(channel) == PresenceStats(3, 2)
        await presence.add_presence(channel, "c1", alice1)  # a refresh adds nobody
        assert await presence.presence_stats(channel) == PresenceStats(3, 2)
        await presence.remove_presence(channel, "c3", "bob")
        assert await presence.presence_stats(channel) == PresenceStats(2, 1)
        await presence.remove_presence(channel, "c1", "alice")
        await presence.remove_presence(channel, "c2", "alice")
        await presence.remove_presence(channel, "c2", "alice")  # removing twice is harmless
        assert await presence.presence(channel) == {}
        assert await presence.presence_stats(channel) == PresenceStats(0, 0)

    async def test_presence_is_per_channel(self, engine: EngineUnderTest, channel: str) -> None:
        info = ClientInfo(user="u", client="c")
        await engine.presence.add_presence(channel, "c", info)
        assert await engine.presence.presence(channel + "-other") == {}
        assert (await engine.presence.presence(channel))["c"] == info

    # --- recovery (reliability.md a3) ---------------------------------------------------

    @pytest.mark.parametrize(
        ("size", "ttl", "published", "since", "sleep", "limit", "recovered", "returned"),
        [
            pytest.param(10, 60.0, 0, 0, 0.0, ALL, True, 0, id="empty stream"),
            pytest.param(10, 60.0, 10, 8, 0.0, ALL, True, 2, id="from position"),
            pytest.param(10, 60.0, 10, 5, 0.0, 2, False, 0, id="limited by recovery limit"),
            pytest.param(10, 60.0, 20, 8, 0.0, ALL, False, 0, id="position already trimmed"),
            pytest.param(10, 60.0, 20, 108, 0.0, ALL, False, 0, id="position in the future"),
            pytest.param(10, 60.0, 7, 7, 0.0, ALL, True, 0, id="same position"),
            pytest.param(10, 60.0, 4, 0, 0.0, ALL, True, 4, id="since 0"),
            pytest.param(10, 1.0, 10, 8, 3.0, ALL, False, 0, id="stream expired, old position"),
            pytest.param(10, 1.0, 1, 1, 3.0, ALL, True, 0, id="stream expired, same position"),
        ],
    )
    async def test_recovery_table(
        self,
        engine: EngineUnderTest,
        channel: str,
        size: int,
        ttl: float,
        published: int,
        since: int,
        sleep: float,
        limit: int,
        recovered: bool,
        returned: int,
    ) -> None:
        epoch = (await self.read(engine, channel, limit=0)).position.epoch
        top = await self.publish_many(engine, channel, published, history_opts(size, ttl))
        assert top.epoch in ("", epoch)
        if sleep:
            await engine.advance(sleep)
        result = await self.read(engine, channel, limit=limit, since=StreamPosition(since, epoch))
        assert result.position == StreamPosition(published, epoch)
        outcome, sent = recovery_outcome(result, since)
        assert outcome is recovered
        assert len(sent) == returned
        if recovered:
            assert sent == list(range(since + 1, published + 1))

    async def test_recovery_with_a_wrong_epoch_fails(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        await self.publish_many(engine, channel, 3)
        with pytest.raises(ClientError) as info:
            await self.read(engine, channel, since=StreamPosition(3, "stale"))
        assert info.value.code == 112

    # --- cache recovery (force_recovery_mode: cache) ------------------------------------

    @pytest.mark.parametrize(
        ("size", "ttl", "published", "since", "epoch", "recovered", "sent"),
        [
            pytest.param(10, 60.0, 0, 0, "", False, None, id="never published"),
            pytest.param(10, 60.0, 3, 0, "", True, 3, id="first subscribe"),
            pytest.param(10, 60.0, 5, 2, "same", True, 5, id="behind"),
            pytest.param(2, 60.0, 7, 1, "same", True, 7, id="behind a trimmed history"),
            pytest.param(10, 60.0, 4, 4, "same", True, None, id="at the top"),
            pytest.param(10, 60.0, 4, 4, "stale", True, 4, id="another epoch"),
        ],
    )
    async def test_cache_recovery_table(
        self,
        engine: EngineUnderTest,
        channel: str,
        size: int,
        ttl: float,
        published: int,
        since: int,
        epoch: str,
        recovered: bool,
        sent: int | None,
    ) -> None:
        """The node's cache recovery: one newest-first read of one publication, then
        ``subscriptions._cache_recovered`` decides."""
        current = (await self.read(engine, channel, limit=0)).position.epoch
        await self.publish_many(engine, channel, published, history_opts(size, ttl))
        result = await self.read(engine, channel, limit=1, reverse=True)
        assert result.position == StreamPosition(published, current)
        latest = result.publications[0] if result.publications else None
        client_epoch = current if epoch == "same" else epoch
        pubs, outcome = _cache_recovered(latest, latest, result.position, since, client_epoch)
        assert outcome is recovered
        assert [p.offset for p in pubs] == ([] if sent is None else [sent])
        if pubs:
            assert pubs[0].data == b'{"n":%d}' % sent

    async def test_cache_recovery_after_the_history_expired(
        self, engine: EngineUnderTest, channel: str
    ) -> None:
        """The publications expired, the position stays: only a client at the top is
        recovered (with nothing), one behind is not."""
        top = await self.publish_many(engine, channel, 3, history_opts(10, 1.0))
        await engine.advance(3.0)
        result = await self.read(engine, channel, limit=1, reverse=True)
        assert result.publications == [] and result.position.offset == 3
        epoch = result.position.epoch
        assert top.epoch in ("", epoch)
        for since, recovered in ((3, True), (1, False), (0, False)):
            pubs, outcome = _cache_recovered(None, None, result.position, since, epoch)
            assert (pubs, outcome) == ([], recovered), since
