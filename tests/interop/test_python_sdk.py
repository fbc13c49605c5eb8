"""The official centrifuge-python 0.7.0 SDK against the library under a live uvicorn.

Every feature is driven through the SDK's public API and observed through its events;
the server side is the node's in-process API, run on the server's own loop with
``srv.acall``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from centrifuge import (
    Client,
    ClientEventHandler,
    ClientState,
    ConnectedContext,
    ConnectingContext,
    DisconnectedContext,
    ErrorContext,
    Filter,
    JoinContext,
    LeaveContext,
    PublicationContext,
    ReplyError,
    ServerPublicationContext,
    ServerSubscribedContext,
    SubscribedContext,
    Subscription,
    SubscriptionEventHandler,
    SubscriptionState,
    UnsubscribedContext,
)

from centrifuge_asgi import __version__
from centrifuge_asgi.auth import connection_token
from centrifuge_asgi.handlers import RPCEvent
from centrifuge_asgi.node import Node

from .support import SECRET, WS_PATH, eventually, make_config, make_node, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

TIMEOUT = 5.0


# --------------------------------------------------------------------------- recording


class Recorder:
    """Every event an SDK object emitted, in order, with waiting helpers."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._changed = anyio.Event()

    def record(self, kind: str, ctx: Any) -> None:
        self.events.append((kind, ctx))
        self._changed.set()
        self._changed = anyio.Event()

    def of(self, kind: str) -> list[Any]:
        return [ctx for k, ctx in self.events if k == kind]

    async def wait(self, kind: str, count: int = 1, within: float = TIMEOUT) -> list[Any]:
        """Wait until at least ``count`` events of ``kind`` were emitted; return them all."""
        with anyio.fail_after(within):
            while len(self.of(kind)) < count:
                await self._changed.wait()
        return self.of(kind)


class ClientEvents(ClientEventHandler):
    def __init__(self) -> None:
        self.rec = Recorder()

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        self.rec.record("connecting", ctx)

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.rec.record("connected", ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.rec.record("disconnected", ctx)

    async def on_error(self, ctx: ErrorContext) -> None:
        self.rec.record("error", ctx)

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        self.rec.record("subscribed", ctx)

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        self.rec.record("publication", ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.rec = Recorder()

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.rec.record("subscribed", ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.rec.record("unsubscribed", ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.rec.record("publication", ctx)

    async def on_join(self, ctx: JoinContext) -> None:
        self.rec.record("join", ctx)

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.rec.record("leave", ctx)

    def data(self) -> list[Any]:
        return [ctx.pub.data for ctx in self.rec.of("publication")]

    def offsets(self) -> list[int]:
        return [ctx.pub.offset for ctx in self.rec.of("publication")]


# --------------------------------------------------------------------------- fixtures


@dataclass
class Env:
    srv: LiveServer
    node: Node

    @property
    def url(self) -> str:
        return self.srv.ws_url(WS_PATH)

    async def users(self) -> dict[str, str]:
        """client id → user of every connection the node holds."""

        async def read() -> dict[str, str]:
            return {s.client_id: s.user for s in self.node.registry.sessions()}

        return await self.srv.acall(read())

    async def subscribers(self, channel: str) -> int:
        async def count() -> int:
            return self.node.channels().get(channel, 0)

        return await self.srv.acall(count())


@pytest.fixture
def server(live_server: LiveServerFactory) -> Callable[..., Env]:
    """``server(node)`` or ``server(**client_overrides)``: a node served by uvicorn."""

    def start(node: Node | None = None, **client_overrides: Any) -> Env:
        node = node if node is not None else make_node(make_config(**client_overrides))
        return Env(live_server(node.asgi_app()), node)

    return start


ClientFactory = Callable[..., Awaitable[tuple[Client, ClientEvents]]]


@pytest.fixture
async def sdk_client() -> AsyncIterator[ClientFactory]:
    """``client, events = await sdk_client(env, token=..., connect=True, **options)``.

    Clients are disconnected at teardown.
    """
    clients: list[Client] = []

    async def make(
        env: Env, *, connect: bool = True, events: ClientEvents | None = None, **options: Any
    ) -> tuple[Client, ClientEvents]:
        events = events or ClientEvents()
        options.setdefault("proxy", None)
        options.setdefault("timeout", TIMEOUT)
        client = Client(env.url, events=events, **options)
        clients.append(client)
        if connect:
            with anyio.fail_after(TIMEOUT):
                await client.connect()
                await client.ready()
        return client, events

    yield make
    for client in clients:
        with anyio.move_on_after(TIMEOUT), contextlib.suppress(Exception):
            await client.disconnect()


async def subscribe(client: Client, channel: str, **options: Any) -> tuple[Subscription, SubEvents]:
    events = SubEvents()
    sub = client.new_subscription(channel, events=events, **options)
    await sub.subscribe()
    await sub.ready(timeout=TIMEOUT)
    return sub, events


# ------------------------------------------------------------------------------ connect


async def test_connect_with_token(server: Callable[..., Env], sdk_client: ClientFactory) -> None:
    env = server()
    client, events = await sdk_client(env, token=token("alice"))
    assert client.state is ClientState.CONNECTED
    (connected,) = events.rec.of("connected")
    assert connected.version == __version__
    assert connected.client == client.client_id
    assert await env.users() == {client.client_id: "alice"}

    await client.disconnect()
    (disconnected,) = events.rec.of("disconnected")
    assert (disconnected.code, disconnected.reason) == (0, "disconnect called")
    await eventually(env.users, {})


async def test_bad_token_disconnects_3500_without_reconnect(
    server: Callable[..., Env], sdk_client: ClientFactory
) -> None:
    env = server()
    forged = connection_token("alice", "not-" + SECRET)
    client, events = await sdk_client(env, token=forged, connect=False, min_reconnect_delay=0.05)
    await client.connect()
    (disconnected,) = await events.rec.wait("disconnected")
    assert (disconnected.code, disconnected.reason) == (3500, "invalid token")
    # no reconnect attempt follows a terminal code
    await anyio.sleep(0.5)
    assert client.state is ClientState.DISCONNECTED
    assert [(c.code, c.reason) for c in events.rec.of("connecting")] == [(0, "connect called")]
    assert events.rec.of("connected") == []
    assert await env.users() == {}


async def test_expired_token_calls_get_token(
    server: Callable[..., Env], sdk_client: ClientFactory
) -> None:
    env = server()
    calls: list[float] = []

    async def get_token() -> str:
        calls.append(time.monotonic())
        return token("alice")

    client, events = await sdk_client(
        env,
        token=token("alice", ttl=-60),
        get_token=get_token,
        connect=False,
        min_reconnect_delay=0.05,
    )
    with anyio.fail_after(TIMEOUT):
        await client.connect()
        await client.ready()
    assert len(calls) == 1
    (error,) = events.rec.of("error")
    assert isinstance(error.error, ReplyError)
    assert (error.error.code, error.error.message) == (109, "token expired")
    assert len(events.rec.of("connected")) == 1
    assert await env.users() == {client.client_id: "alice"}


async def test_server_side_subscription_from_token_channels(
    server: Callable[..., Env], sdk_client: ClientFactory
) -> None:
    env = server()
    _, events = await sdk_client(
        env, token=token("alice", channels=["news:server-side", "chat:server-side"])
    )
    subscribed = {ctx.channel: ctx for ctx in await events.rec.wait("subscribed", 2)}
    assert set(subscribed) == {"news:server-side", "chat:server-side"}
    news = subscribed["news:server-side"]
    epoch = (await env.srv.acall(env.node.history("news:server-side"))).epoch
    assert (news.recoverable, news.positioned, news.was_recovering, news.recovered) == (
        True,
        True,
        False,
        False,
    )
    assert (news.stream_position.offset, news.stream_position.epoch) == (0, epoch)
    chat = subscribed["chat:server-side"]
    assert (chat.recoverable, chat.positioned, chat.stream_position) == (False, False, None)

    await env.srv.acall(env.node.publish("news:server-side", {"n": 1}))
    await env.srv.acall(env.node.publish("chat:server-side", {"n": 2}))
    pubs = await events.rec.wait("publication", 2)
    assert [(p.channel, p.pub.data, p.pub.offset) for p in pubs] == [
        ("news:server-side", {"n": 1}, 1),
        ("chat:server-side", {"n": 2}, 0),
    ]


# -------------------------------------------------------------------------- pub / sub


async def test_subscribe_and_receive_server_publication(
    server: Callable[..., Env], sdk_client: ClientFactory
) -> None:
    env = server()
    client, _ = await sdk_client(env, token=token("alice"))
    sub, events = await subscribe(client, "chat:room")
    assert sub.state is SubscriptionState.SUBSCRIBED
    (subscribed,) = events.rec.of("subscribed")
    assert (subscribed.channel, subscribed.recoverable, subscribed.positioned) == (
        "chat:room",
        False,
        False,
    )

    await env.srv.acall(env.node.publish("chat:room", {"text": "hi"}))
    await env.srv.acall(env.node.publish("chat:room", ["a", 2, None]))
    await events.rec.wait("publication", 2)
    assert events.data() == [{"text": "hi"}, ["a", 2, None]]
    assert events.offsets() == [0, 0]
    assert [ctx.pub.info for ctx in events.rec.of("publication")] == [None, None]

    await sub.unsubscribe()
    (unsubscribed,) = events.rec.of("unsubscribed")
    assert (unsubscribed.code, unsubscribed.reason) == (0, "unsubscribe called")
    await eventually(lambda: env.subscribers("chat:room"), 0)


async def test_client_publish(server: Callable[..., Env], sdk_client: ClientFactory) -> None:
    env = server()
    alice, _ = await sdk_client(env, token=token("alice"))
    bob, _ = await sdk_client(env, token=token("bob"))
    _, alice_events = await subscribe(alice, "chat:publish")
    bob_sub, bob_events = await subscribe(bob, "chat:publish")

    await bob_sub.publish({"from": "bob"})
    await alice.publish("chat:publish", {"from": "alice"})
    for events in (alice_events, bob_events):
        pubs = await events.rec.wait("publication", 2)
        assert [(p.pub.data, p.pub.info.user, p.pub.info.client) for p in pubs] == [
            ({"from": "bob"}, "bob", bob.client_id),
            ({"from": "alice"}, "alice", alice.client_id),
        ]

    # a namespace that does not allow it answers with the reference error
    with pytest.raises(ReplyError) as denied:
        await alice.publish("secret:x", {"nope": True})
    assert (denied.value.code, denied.value.message) == (103, "permission denied")


async def test_presence_and_presence_stats(
    server: Callable[..., Env], sdk_client: ClientFactory
) -> None:
    env = server()
    alice, _ = await sdk_client(env, token=token("alice"))
    bob, _ = await sdk_client(env, token=token("bob"))
    alice_sub, _ = await subscribe(alice, "chat:presence")
    await subscribe(bob, "chat:presence")

    presence = await alice_sub.presence()
    assert {cid: (info.client, info.user) for cid, info in presence.clients.items()} == {
        alice.client_id: (alice.client_id, "alice"),
        bob.client_id: (bob.client_id, "bob"),
    }
    stats = await alice_sub.presence_stats()
    assert (stats.num_clients, stats.num_users) == (2, 2)

    # a second connection of the same user counts as a client, not a user
    alice2, _ = await sdk_client(env, token=token("alice"))
    await subscribe(alice2, "chat:presence")
    stats = await alice.presence_stats("chat:presence")
    assert (stats.num_clients, stats.num_users) == (3, 2)

    # presence is for subscribers only in this namespace
    outsider, _ = await sdk_client(env, token=token("carol"))
    with pytest.raises(ReplyError) as denied:
        await outsider.presence("chat:presence")
    assert (denied.value.code, denied.value.message) == (103, "permission denied")


async def test_history(server: Callable[..., Env], sdk_client: ClientFactory) -> None:
    env = server()
    for i in range(1, 6):
        await env.srv.acall(env.node.publish("news:history", {"n": i}))
    epoch = (await env.srv.acall(env.node.history("news:history"))).epoch
    client, _ = await sdk_client(env, token=token("alice"))
    sub, _ = await subscribe(client, "news:history")

    def summary(result: Any) -> tuple[list[tuple[int, Any]], int, str]:
        return [(p.offset, p.data) for p in result.publications], result.offset, result.epoch

    assert summary(await sub.history(limit=2)) == ([(1, {"n": 1}), (2, {"n": 2})], 5, epoch)
    assert summary(await sub.history(limit=2, reverse=True)) == (
        [(5, {"n": 5}), (4, {"n": 4})],
        5,
        epoch,
    )
    assert summary(await sub.history(limit=-1)) == (
        [(i, {"n": i}) for i in range(1, 6)],
        5,
        epoch,
    )
    assert summary(await sub.history()) == ([], 5, epoch)

    # a namespace without history
    with pytest.raises(ReplyError) as unavailable:
        await client.history("chat:no-history", limit=1)
    assert (unavailable.value.code, unavailable.value.message) == (108, "not available")


async def test_user_limited_channel_of_other_users_is_refused(
    server: Callable[..., Env], sdk_client: ClientFactory
) -> None:
    """``pm:dm#alice,bob`` in a namespace that also allows any client to subscribe: only
    alice and bob get in; mallory gets 103 for subscribe, history and presence."""
    config = make_config()
    config["channel"]["namespaces"].append(
        {
            "name": "pm",
            "allow_user_limited_channels": True,
            "allow_subscribe_for_client": True,
            "presence": True,
            "allow_presence_for_subscriber": True,
            "history_size": 10,
            "history_ttl": "300s",
            "allow_history_for_subscriber": True,
        }
    )
    env = server(make_node(config))
    channel = "pm:dm#alice,bob"
    alice, _ = await sdk_client(env, token=token("alice"))
    mallory, _ = await sdk_client(env, token=token("mallory"))

    alice_sub, alice_events = await subscribe(alice, channel)
    assert alice_sub.state is SubscriptionState.SUBSCRIBED

    mallory_events = SubEvents()
    mallory_sub = mallory.new_subscription(channel, events=mallory_events)
    await mallory_sub.subscribe()
    (refused,) = await mallory_events.rec.wait("unsubscribed")
    assert (refused.code, refused.reason) == (103, "permission denied")
    assert mallory_sub.state is SubscriptionState.UNSUBSCRIBED
    assert mallory_events.rec.of("subscribed") == []

    await env.srv.acall(env.node.publish(channel, {"text": "for alice and bob"}))
    assert [p.pub.data for p in await alice_events.rec.wait("publication")] == [
        {"text": "for alice and bob"}
    ]
    assert [p.data for p in (await alice_sub.history(limit=-1)).publications] == [
        {"text": "for alice and bob"}
    ]
    assert await env.subscribers(channel) == 1
    for read in (mallory.history, mallory.presence, mallory.presence_stats):
        with pytest.raises(ReplyError) as denied:
            await read(channel)
        assert (denied.value.code, denied.value.message) == (103, "permission denied")
    assert mallory_events.rec.of("publication") == []


async def test_join_and_leave(server: Callable[..., Env], sdk_client: ClientFactory) -> None:
    env = server()
    alice, _ = await sdk_client(env, token=token("alice"))
    bob, _ = await sdk_client(env, token=token("bob"))
    _, alice_events = await subscribe(alice, "chat:join-leave")
    # alice sees her own join first (Go publishes it after her subscribe reply)
    (own,) = await alice_events.rec.wait("join")
    assert (own.info.user, own.info.client) == ("alice", alice.client_id)

    bob_sub, _ = await subscribe(bob, "chat:join-leave")
    joins = await alice_events.rec.wait("join", 2)
    assert [(j.info.user, j.info.client) for j in joins] == [
        ("alice", alice.client_id),
        ("bob", bob.client_id),
    ]

    await bob_sub.unsubscribe()
    (leave,) = await alice_events.rec.wait("leave")
    assert (leave.info.user, leave.info.client) == ("bob", bob.client_id)

    # a disconnect leaves too
    await subscribe(bob, "chat:join-leave-2")
    carol, _ = await sdk_client(env, token=token("carol"))
    _, carol_events = await subscribe(carol, "chat:join-leave-2")
    await bob.disconnect()
    (leave,) = await carol_events.rec.wait("leave")
    assert (leave.info.user, leave.info.client) == ("bob", bob.client_id)


async def test_rpc(server: Callable[..., Env], sdk_client: ClientFactory) -> None:
    node = make_node()
    seen: list[tuple[str, str, Any]] = []

    @node.on_rpc("sum")
    async def rpc_sum(event: RPCEvent) -> dict[str, int]:
        seen.append((event.client.user, event.method, event.data))
        return {"sum": event.data["a"] + event.data["b"]}

    env = server(node)
    client, _ = await sdk_client(env, token=token("alice"))
    result = await client.rpc("sum", {"a": 2, "b": 3})
    assert result.data == {"sum": 5}
    assert seen == [("alice", "sum", {"a": 2, "b": 3})]

    with pytest.raises(ReplyError) as unknown:
        await client.rpc("nope", {})
    assert (unknown.value.code, unknown.value.message) == (104, "method not found")


# ----------------------------------------------------------------------------- recovery


class ReconnectHook(ClientEvents):
    """Runs ``hook`` when the client starts reconnecting (before its next attempt)."""

    def __init__(self, hook: Callable[[ConnectingContext], Awaitable[None]]) -> None:
        super().__init__()
        self.hook = hook

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        await super().on_connecting(ctx)
        await self.hook(ctx)


async def test_recovery_after_reconnect(
    server: Callable[..., Env], sdk_client: ClientFactory
) -> None:
    env = server()
    channel = "news:recovery"

    async def publish_while_away(ctx: ConnectingContext) -> None:
        # The SDK awaits this handler before scheduling its reconnect, so these
        # publications are certainly missed by the connection and must be recovered.
        if ctx.code == 3011:
            for n in (3, 4, 5):
                await env.srv.acall(env.node.publish(channel, {"n": n}))

    client, events = await sdk_client(
        env,
        token=token("alice"),
        events=ReconnectHook(publish_while_away),
        min_reconnect_delay=0.05,
    )
    sub, sub_events = await subscribe(client, channel, recoverable=True)
    for n in (1, 2):
        await env.srv.acall(env.node.publish(channel, {"n": n}))
    await sub_events.rec.wait("publication", 2)
    first_client = client.client_id

    await env.srv.acall(env.node.disconnect("alice", code=3011, reason="force reconnect"))
    subscribed = await sub_events.rec.wait("subscribed", 2)
    reconnecting = events.rec.of("connecting")[1]
    assert (reconnecting.code, reconnecting.reason) == (3011, "force reconnect")
    assert client.client_id != first_client
    epoch = subscribed[0].stream_position.epoch
    assert epoch
    first, second = subscribed
    assert (first.was_recovering, first.recovered) == (False, False)
    assert (second.was_recovering, second.recovered, second.recoverable) == (True, True, True)
    assert (second.stream_position.offset, second.stream_position.epoch) == (2, epoch)

    await sub_events.rec.wait("publication", 5)
    # a live publication after the recovery continues the stream
    await env.srv.acall(env.node.publish(channel, {"n": 6}))
    await sub_events.rec.wait("publication", 6)
    assert sub_events.data() == [{"n": n} for n in range(1, 7)]
    assert sub_events.offsets() == [1, 2, 3, 4, 5, 6]
    assert sub.state is SubscriptionState.SUBSCRIBED


# ---------------------------------------------------------------------------- pings


async def test_pings_keep_client_connected(
    server: Callable[..., Env], sdk_client: ClientFactory
) -> None:
    """PY re-arms its watchdog (ping + max_server_ping_delay) only when a ping arrives.

    With ``ping_interval`` 2 s and a 1 s delay allowance (the server re-arms each ping after
    it fires, so pings drift a little, and a loaded machine delays them more), staying
    connected for 6.5 s needs a ping by 3 s and every next one within 3 s of the previous:
    a server that never pinged would be caught at 3 s, one that pinged once at 5 s. It also
    needs our pongs within the 1 s pong timeout.
    """
    env = server(ping_interval="2s", pong_timeout="1s")
    client, events = await sdk_client(env, token=token("alice"), max_server_ping_delay=1.0)
    client_id = client.client_id
    # The SDK's copy of the advertised interval: with 0 its watchdog would be off and
    # this test vacuous.
    assert client._ping_interval == 2
    await anyio.sleep(6.5)
    assert client.state is ClientState.CONNECTED
    assert client.client_id == client_id
    assert [(c.code, c.reason) for c in events.rec.of("connecting")] == [(0, "connect called")]
    assert len(events.rec.of("connected")) == 1
    assert await env.users() == {client_id: "alice"}


# ------------------------------------------------------------------------------ tags filter


@pytest.mark.parametrize("use_protobuf", [False, True], ids=["json", "protobuf"])
async def test_tags_filter_live_and_recovered(
    server: Callable[..., Env], sdk_client: ClientFactory, use_protobuf: bool
) -> None:
    """``tags_filter``: only matching publications arrive, live and recovered; 107 where the
    namespace does not allow filters and for an invalid tree."""
    env = server()
    channel = "tags:py"
    tagged = [
        ({"n": 1}, {"kind": "trade", "size": "10"}),
        ({"n": 2}, {"kind": "quote", "size": "50"}),
        ({"n": 3}, None),
        ({"n": 4}, {"kind": "trade", "size": "3.5"}),
    ]
    missed = [
        ({"n": 5}, {"kind": "trade", "size": "12"}),
        ({"n": 6}, {"kind": "trade", "size": "4"}),
        ({"n": 7}, {"size": "100"}),
    ]

    async def publish(items: list[tuple[dict[str, int], dict[str, str] | None]]) -> None:
        for data, tags in items:
            await env.srv.acall(env.node.publish(channel, data, tags=tags))

    async def publish_while_away(ctx: ConnectingContext) -> None:
        if ctx.code == 3011:
            await publish(missed)

    client, _ = await sdk_client(
        env,
        token=token("alice"),
        events=ReconnectHook(publish_while_away),
        min_reconnect_delay=0.05,
        use_protobuf=use_protobuf,
    )
    # kind = trade and not size < 5
    tags_filter = Filter.all(Filter.eq("kind", "trade"), Filter.negate(Filter.lt("size", "5")))
    sub, sub_events = await subscribe(client, channel, tags_filter=tags_filter)
    await publish(tagged)
    await env.srv.acall(env.node.publish(channel, {"n": 99}, tags={"kind": "trade"}))
    await sub_events.rec.wait("publication", 2)  # 1, then 99 (no size: lt is false)

    await env.srv.acall(env.node.disconnect("alice", code=3011, reason="force reconnect"))
    subscribed = await sub_events.rec.wait("subscribed", 2)
    assert (subscribed[1].was_recovering, subscribed[1].recovered) == (True, True)
    assert subscribed[1].stream_position.offset == 5  # the client's offset (of 99)
    await sub_events.rec.wait("publication", 3)
    await env.srv.acall(env.node.publish(channel, {"n": 100}, tags={"kind": "trade"}))
    await sub_events.rec.wait("publication", 4)

    def value(data: Any) -> Any:
        return json.loads(data) if isinstance(data, bytes) else data

    pubs = [(value(ctx.pub.data)["n"], ctx.pub.offset) for ctx in sub_events.rec.of("publication")]
    assert pubs == [(1, 1), (99, 5), (5, 6), (100, 9)]
    assert sub_events.rec.of("publication")[0].pub.tags == {"kind": "trade", "size": "10"}
    assert sub.state is SubscriptionState.SUBSCRIBED

    for refused_channel, refused_filter in [
        ("chat:py", Filter.eq("kind", "trade")),  # namespace without allow_tags_filter
        ("tags:bad", Filter.any()),  # or without children
    ]:
        events = SubEvents()
        refused = client.new_subscription(
            refused_channel, events=events, tags_filter=refused_filter
        )
        await refused.subscribe()
        (ctx,) = await events.rec.wait("unsubscribed")
        assert (ctx.code, ctx.reason) == (107, "bad request")
