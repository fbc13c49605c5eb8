"""The channel permission order (server-api spec §2.4) and the client-side limits."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from centrifuge_asgi import Node, SubscribeEvent, SubscribeReply
from centrifuge_asgi.protocol.messages import ConnectRequest, SubscribeRequest
from centrifuge_asgi.session import Session, TransportInfo
from tests.interop.support import SECRET, sub_token, token

pytestmark = pytest.mark.anyio

NS = [
    {"name": "closed", "presence": True, "history_size": 5, "history_ttl": "60s"},
    {"name": "clients", "allow_subscribe_for_client": True, "allow_publish_for_client": True},
    {
        "name": "anon",
        "allow_subscribe_for_client": True,
        "allow_subscribe_for_anonymous": True,
        "allow_publish_for_subscriber": True,
        "allow_publish_for_anonymous": True,
    },
    {
        "name": "subs",
        "allow_subscribe_for_client": True,
        "allow_publish_for_subscriber": True,
        "presence": True,
        "allow_presence_for_subscriber": True,
        "history_size": 500,
        "history_ttl": "60s",
        "allow_history_for_subscriber": True,
    },
    {"name": "rx", "allow_subscribe_for_client": True, "channel_regex": "^[a-z]+$"},
    # user-limited channels in a namespace open to every client (and anonymous ones)
    {
        "name": "dm",
        "allow_user_limited_channels": True,
        "allow_subscribe_for_client": True,
        "allow_subscribe_for_anonymous": True,
        "allow_publish_for_subscriber": True,
        "presence": True,
        "allow_presence_for_subscriber": True,
        "history_size": 10,
        "history_ttl": "60s",
        "allow_history_for_subscriber": True,
    },
    # the *_for_client read permissions cover the whole namespace, # channels too
    {
        "name": "dmread",
        "allow_user_limited_channels": True,
        "presence": True,
        "allow_presence_for_client": True,
        "history_size": 10,
        "history_ttl": "60s",
        "allow_history_for_client": True,
    },
]


def config(**client: Any) -> dict[str, Any]:
    return {
        "client": {
            "token": {"hmac_secret_key": SECRET},
            "allow_anonymous_connect_without_token": True,
            **client,
        },
        "channel": {"namespaces": NS},
    }


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with Node(config()) as n:
        yield n
        for s in list(n.registry.sessions()):
            await s.finish()


async def client(node: Node, user: str | None) -> Session:
    s = node.create_session(TransportInfo())
    connect = {"token": token(user)} if user is not None else {}
    await s.handle_frame(json.dumps({"id": 1, "connect": connect}).encode())
    assert json.loads(s.outbox.drain()[0])["connect"]["client"]
    return s


async def call(s: Session, **command: Any) -> dict[str, Any]:
    await s.handle_frame(json.dumps({"id": 9, **command}).encode())
    out = [json.loads(m) for m in s.outbox.drain()]
    return next(r for r in out if r.get("id") == 9)


def code(reply: dict[str, Any]) -> int:
    return int(reply["error"]["code"]) if "error" in reply else 0


@pytest.mark.parametrize(
    ("channel", "user", "expected"),
    [
        ("closed:a", "u1", 103),
        ("clients:a", "u1", 0),
        ("clients:a", None, 103),  # anonymous needs *_for_anonymous
        ("anon:a", None, 0),
        ("missing:a", "u1", 102),
        ("$clients:a", "u1", 103),  # private channel without a token
        ("clients:" + "x" * 300, "u1", 107),
        ("clients:é", "u1", 107),  # not ASCII
        ("rx:abc", "u1", 0),
        ("rx:ABC", "u1", 107),
    ],
)
async def test_subscribe_permission(
    node: Node, channel: str, user: str | None, expected: int
) -> None:
    s = await client(node, user)
    assert code(await call(s, subscribe={"channel": channel})) == expected


async def test_publish_for_subscriber_needs_the_subscription(node: Node) -> None:
    s = await client(node, "u1")
    assert code(await call(s, publish={"channel": "subs:a", "data": {}})) == 103
    await call(s, subscribe={"channel": "subs:a"})
    assert code(await call(s, publish={"channel": "subs:a", "data": {}})) == 0


async def test_presence_and_history_need_feature_then_permission(node: Node) -> None:
    s = await client(node, "u1")
    assert code(await call(s, presence={"channel": "clients:a"})) == 108
    assert code(await call(s, history={"channel": "clients:a"})) == 108
    assert code(await call(s, presence={"channel": "closed:a"})) == 103
    assert code(await call(s, history={"channel": "closed:a"})) == 103
    assert code(await call(s, presence_stats={"channel": "subs:a"})) == 103
    await call(s, subscribe={"channel": "subs:a"})
    assert code(await call(s, presence_stats={"channel": "subs:a"})) == 0


async def test_client_history_is_capped(node: Node) -> None:
    for i in range(310):
        await node.publish("subs:h", {"i": i})
    s = await client(node, "u1")
    await call(s, subscribe={"channel": "subs:h"})
    everything = await call(s, history={"channel": "subs:h", "limit": -1})
    assert len(everything["history"]["publications"]) == 300
    assert everything["history"]["offset"] == 310
    back = await call(s, history={"channel": "subs:h", "limit": 2, "reverse": True})
    assert [p["offset"] for p in back["history"]["publications"]] == [310, 309]
    since = await call(s, history={"channel": "subs:h", "limit": 3, "since": {"offset": 305}})
    assert [p["offset"] for p in since["history"]["publications"]] == [306, 307, 308]
    bad = await call(s, history={"channel": "subs:h", "since": {"offset": 1, "epoch": "x"}})
    assert code(bad) == 112


async def test_subscription_token_decides_alone(node: Node) -> None:
    s = await client(node, "u1")
    ok = await call(s, subscribe={"channel": "closed:a", "token": sub_token("u1", "closed:a")})
    assert code(ok) == 0
    expired = await call(
        s, subscribe={"channel": "closed:b", "token": sub_token("u1", "closed:b", ttl=-10)}
    )
    assert code(expired) == 109
    forged = sub_token("u1", "closed:c")[:-2] + "xx"
    assert code(await call(s, subscribe={"channel": "closed:c", "token": forged})) == 103
    mismatch = {"channel": "closed:d", "token": sub_token("u2", "closed:d")}
    await s.handle_frame(json.dumps({"id": 10, "subscribe": mismatch}).encode())
    assert (s.close_code, s.close_reason) == (3500, "invalid token")


async def test_subscribe_handler_allows_and_falls_through(node: Node) -> None:
    @node.on_subscribe
    async def decide(event: SubscribeEvent) -> SubscribeReply | None:
        if event.channel == "closed:vip":
            return SubscribeReply(data={"welcome": event.client.user})
        return None

    s = await client(node, "u1")
    vip = await call(s, subscribe={"channel": "closed:vip"})
    assert vip["subscribe"] == {"data": {"welcome": "u1"}}
    assert code(await call(s, subscribe={"channel": "closed:other"})) == 103
    assert code(await call(s, subscribe={"channel": "clients:x"})) == 0


async def test_insecure_mode_allows_everything_and_warns(caplog: Any) -> None:
    with caplog.at_level(logging.WARNING):
        n = Node(config(insecure=True))
    assert any("insecure" in r.getMessage() for r in caplog.records)
    async with n:
        s = await client(n, None)
        assert code(await call(s, subscribe={"channel": "closed:a"})) == 0
        assert code(await call(s, presence={"channel": "closed:a"})) == 0
        assert code(await call(s, publish={"channel": "closed:a", "data": 1})) == 0
        await s.finish()


async def test_channel_limit_and_already_subscribed() -> None:
    async with Node(config(channel_limit=2)) as n:
        s = await client(n, "u1")
        assert code(await call(s, subscribe={"channel": "clients:1"})) == 0
        assert code(await call(s, subscribe={"channel": "clients:1"})) == 105
        assert code(await call(s, subscribe={"channel": "clients:2"})) == 0
        assert code(await call(s, subscribe={"channel": "clients:3"})) == 106
        await s.finish()


async def test_server_side_channel_limit_disconnects_3505() -> None:
    async with Node(config(channel_limit=1)) as n:
        s = n.create_session(TransportInfo())
        tok = token("u1", channels=["clients:1", "clients:2"])
        await s.handle_frame(json.dumps({"id": 1, "connect": {"token": tok}}).encode())
        assert (s.close_code, s.close_reason) == (3505, "channel limit")
        await s.finish()


# ------------------------------------------------------------- user-limited channels
# Centrifugo v6 internal/client/handler.go, OnSubscribe: a user-limited channel is allowed
# when its user list names the client's user; the subscribe proxy and
# allow_subscribe_for_client skip it (``!isUserLimitedChannel``); client.insecure still
# allows it. hasAccessToHistory / hasAccessToPresence and OnPublish do not look at it.


@pytest.mark.parametrize(
    ("channel", "user", "expected"),
    [
        ("dm:x#alice,bob", "alice", 0),
        ("dm:x#alice,bob", "bob", 0),
        ("dm:x#alice,bob", "mallory", 103),  # allow_subscribe_for_client does not apply
        ("dm:x#alice,bob", None, 103),  # nor allow_subscribe_for_anonymous
        ("dm:x#alice", "alice", 0),
        ("dm:x#alice", "alic", 103),  # exact ids, not prefixes
        ("dm:x#", "alice", 103),  # an empty user list lets nobody in
        ("dm:x#", None, 103),
        ("dm:a#b#alice", "alice", 0),  # the list follows the last boundary
        ("dm:alice#bob", "alice", 103),
        ("dm:x", "mallory", 0),  # no boundary: an ordinary channel of the namespace
        ("clients:x#alice", "mallory", 0),  # boundary without allow_user_limited_channels
        ("$dm:x#alice", "alice", 103),  # private: a token is needed even for a listed user
    ],
)
async def test_user_limited_subscribe(
    node: Node, channel: str, user: str | None, expected: int
) -> None:
    s = await client(node, user)
    assert code(await call(s, subscribe={"channel": channel})) == expected


async def test_user_limited_channel_never_reaches_the_subscribe_handler(node: Node) -> None:
    seen: list[str] = []

    @node.on_subscribe
    async def allow_all(event: SubscribeEvent) -> SubscribeReply | None:
        seen.append(event.channel)
        return SubscribeReply(data={"by": "handler"})

    mallory = await client(node, "mallory")
    assert code(await call(mallory, subscribe={"channel": "dm:x#alice,bob"})) == 103
    alice = await client(node, "alice")
    assert await call(alice, subscribe={"channel": "dm:x#alice,bob"}) == {"id": 9, "subscribe": {}}
    assert seen == []  # the user list decided both
    assert code(await call(mallory, subscribe={"channel": "dm:open"})) == 0
    assert seen == ["dm:open"]


async def test_user_limited_history_presence_publish_of_an_outsider(node: Node) -> None:
    """With *_for_subscriber permissions an outsider, who cannot subscribe, gets 103."""
    channel = "dm:x#alice,bob"
    await node.publish(channel, {"n": 1})
    mallory = await client(node, "mallory")
    assert code(await call(mallory, subscribe={"channel": channel})) == 103
    assert channel not in mallory.subs
    for command in ("history", "presence", "presence_stats"):
        assert code(await call(mallory, **{command: {"channel": channel}})) == 103
    assert code(await call(mallory, publish={"channel": channel, "data": {}})) == 103

    alice = await client(node, "alice")
    assert code(await call(alice, subscribe={"channel": channel})) == 0
    history = await call(alice, history={"channel": channel, "limit": -1})
    assert [p["data"] for p in history["history"]["publications"]] == [{"n": 1}]
    assert code(await call(alice, presence={"channel": channel})) == 0
    assert code(await call(alice, publish={"channel": channel, "data": {}})) == 0


async def test_user_limited_channel_with_for_client_read_permissions(node: Node) -> None:
    """Centrifugo's history/presence checks do not look at the user list: the namespace's
    allow_history_for_client / allow_presence_for_client cover its # channels too."""
    mallory = await client(node, "mallory")
    assert code(await call(mallory, subscribe={"channel": "dmread:x#alice"})) == 103
    assert code(await call(mallory, history={"channel": "dmread:x#alice"})) == 0
    assert code(await call(mallory, presence={"channel": "dmread:x#alice"})) == 0


async def test_subscription_token_grants_a_user_limited_channel(node: Node) -> None:
    mallory = await client(node, "mallory")
    channel = "dm:x#alice,bob"
    granted = {"channel": channel, "token": sub_token("mallory", channel)}
    assert code(await call(mallory, subscribe=granted)) == 0
    assert code(await call(mallory, history={"channel": channel})) == 0


async def test_insecure_mode_allows_user_limited_channels() -> None:
    async with Node(config(insecure=True)) as n:
        s = await client(n, "mallory")
        assert code(await call(s, subscribe={"channel": "dm:x#alice,bob"})) == 0
        await s.finish()


async def uni_subs(node: Node, user: str, channels: list[str]) -> set[str]:
    s = node.create_session(TransportInfo(name="uni_websocket", unidirectional=True))
    req = ConnectRequest(token=token(user), subs={ch: SubscribeRequest() for ch in channels})
    assert await s.connect_unidirectional(req) is None
    subscribed = set(s.subs)
    await s.finish()
    return subscribed


async def test_unidirectional_subs_of_user_limited_channels(node: Node) -> None:
    wanted = ["dm:x#alice,bob", "dm:open", "dm:y#mallory"]
    assert await uni_subs(node, "mallory", wanted) == {"dm:open", "dm:y#mallory"}
    assert await uni_subs(node, "alice", wanted) == {"dm:x#alice,bob", "dm:open"}
