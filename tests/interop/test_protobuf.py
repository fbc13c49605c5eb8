"""The Protobuf protocol over WebSocket with the official SDKs and a raw client.

centrifuge-js's protobuf build (``centrifuge/build/protobuf``) and centrifuge-python with
``use_protobuf=True`` run against a live uvicorn; the raw ``websockets`` client checks the
handshake rules of spec §1.4 and the close code of a malformed frame.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from centrifuge import (
    Client,
    PublicationContext,
    SubscribedContext,
    Subscription,
    SubscriptionEventHandler,
)
from centrifuge.exceptions import ReplyError
from centrifuge.protocol import client_pb2 as sdk
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from centrifuge_asgi.handlers import RPCEvent
from centrifuge_asgi.node import Node
from centrifuge_asgi.protocol.protobuf_codec import split_delimited, uvarint

from .support import (
    TAGS_FILTER_RESULT,
    WS_PATH,
    add_tagged_publish_rpcs,
    make_config,
    make_node,
    recovery_events,
    token,
)

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory, RunJs

pytestmark = pytest.mark.interop

TIMEOUT = 5.0
# Every byte value, newline included.
BINARY = bytes(range(256))


def serve(live_server: LiveServerFactory, **client: Any) -> tuple[Node, LiveServer]:
    """The standard node (``client.*`` overrides) plus the RPCs the scenarios use."""
    node = make_node(make_config(**client))

    @node.on_rpc("sum")
    async def rpc_sum(event: RPCEvent) -> Any:
        return {"sum": event.data["a"] + event.data["b"]}

    @node.on_rpc("publish")
    async def rpc_publish(event: RPCEvent) -> Any:
        for item in event.data["items"]:
            await node.publish(event.data["channel"], item)
        return {"published": len(event.data["items"])}

    @node.on_rpc("drop_and_publish")
    async def rpc_drop_and_publish(event: RPCEvent) -> Any:
        await node.disconnect(event.client.user, code=3011, reason="force reconnect")
        return await rpc_publish(event)

    @node.on_rpc("echo")
    async def rpc_echo(event: RPCEvent) -> Any:
        return event.raw_data  # bytes pass through as the payload

    add_tagged_publish_rpcs(node)
    return node, live_server(node.asgi_app())


def ws(srv: LiveServer, query: str = "") -> str:
    return srv.ws_url(WS_PATH + query)


# ----------------------------------------------------------------------- centrifuge-js


def test_js_protobuf_tags_filter(live_server: LiveServerFactory, run_js: RunJs) -> None:
    """``tagsFilter`` travels as ``SubscribeRequest.tf`` (field 13) in the protobuf build."""
    _, srv = serve(live_server)
    result = run_js(
        "sdk_tags_filter.mjs", ws(srv), token("u1"), token("u2"), "protobuf", timeout=20
    )
    assert result == TAGS_FILTER_RESULT


def test_js_protobuf_pubsub_history_presence_rpc(
    live_server: LiveServerFactory, run_js: RunJs
) -> None:
    _, srv = serve(live_server)
    channel = "bin:pb"  # binary payloads need publication_data_format: binary
    result = run_js("protobuf_basic.mjs", ws(srv), token("u1"), channel, BINARY.hex(), timeout=15)
    me = result["client"]
    assert result["transport"] == "websocket"
    assert result["subscribed"] == {"recoverable": True, "positioned": True}
    assert result["publishRpc"] == {"bytes": True, "data": {"published": 1}}
    from_python = json.dumps({"text": "from python"}, separators=(",", ":")).encode()
    assert result["pubs"] == [
        {"bytes": True, "hex": from_python.hex(), "offset": 1},
        {"bytes": True, "hex": BINARY.hex(), "offset": 2, "user": "u1", "client": me},
    ]
    assert result["history"] == {
        "publications": [
            {"offset": 1, "hex": from_python.hex()},
            {"offset": 2, "hex": BINARY.hex()},
        ],
        "offset": 2,
        "epochSet": True,
    }
    assert result["presence"] == {me: {"user": "u1", "client": me}}
    assert result["stats"] == {"numClients": 1, "numUsers": 1}
    assert result["sum"] == {"sum": 5}
    assert result["unknown"]["code"] == 104  # method not found


@pytest.mark.parametrize(
    ("channel", "missed", "recovered"),
    [("news:pbrec", 3, True), ("tiny:pbrec", 4, False)],
    ids=["recovered", "trimmed"],
)
def test_js_protobuf_recovery_after_forced_reconnect(
    live_server: LiveServerFactory, run_js: RunJs, channel: str, missed: int, recovered: bool
) -> None:
    _, srv = serve(live_server)
    result = run_js("protobuf_recovery.mjs", ws(srv), token("u1"), channel, str(missed), timeout=15)
    assert result["connecting"] == {"code": 3011, "reason": "force reconnect"}
    assert result["events"] == recovery_events(missed, recovered)


# ------------------------------------------------------------------- centrifuge-python


class SubEvents(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.publications: list[PublicationContext] = []
        self.subscribed: list[SubscribedContext] = []
        self._changed = anyio.Event()

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.publications.append(ctx)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, count: int) -> list[Any]:
        """Data of the first ``count`` publications (waits for them)."""
        with anyio.fail_after(TIMEOUT):
            while len(self.publications) < count:
                await self._changed.wait()
        return [ctx.pub.data for ctx in self.publications]


ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def sdk_client() -> AsyncIterator[ClientFactory]:
    """``client = await sdk_client(url, user, use_protobuf=True)``: connected, closed later."""
    clients: list[Client] = []

    async def make(url: str, user: str, **options: Any) -> Client:
        client = Client(url, token=token(user), proxy=None, timeout=TIMEOUT, **options)
        clients.append(client)
        with anyio.fail_after(TIMEOUT):
            await client.connect()
            await client.ready()
        return client

    yield make
    for client in clients:
        with anyio.move_on_after(TIMEOUT), contextlib.suppress(Exception):
            await client.disconnect()


async def subscribe(client: Client, channel: str) -> tuple[Subscription, SubEvents]:
    events = SubEvents()
    sub = client.new_subscription(channel, events=events)
    await sub.subscribe()
    await sub.ready(timeout=TIMEOUT)
    return sub, events


@pytest.mark.anyio
async def test_python_sdk_protobuf(
    live_server: LiveServerFactory, sdk_client: ClientFactory
) -> None:
    node, srv = serve(live_server)
    channel = "bin:pypb"
    publisher = await sdk_client(ws(srv), "alice", use_protobuf=True)
    reader = await sdk_client(ws(srv), "bob", use_protobuf=True)
    _, pub_events = await subscribe(publisher, channel)
    sub, events = await subscribe(reader, channel)

    await publisher.publish(channel, BINARY)
    await srv.acall(node.publish(channel, b"\x00\x01\xfe\xff"))  # bytes from the server API
    assert await events.wait(2) == [BINARY, b"\x00\x01\xfe\xff"]
    assert await pub_events.wait(2) == [BINARY, b"\x00\x01\xfe\xff"]
    first = events.publications[0].pub
    assert first.offset == 1 and first.info is not None and first.info.user == "alice"

    history = await sub.history(limit=10)
    assert [(p.offset, p.data) for p in history.publications] == [
        (1, BINARY),
        (2, b"\x00\x01\xfe\xff"),
    ]
    assert history.offset == 2 and history.epoch == events.subscribed[0].stream_position.epoch

    presence = await sub.presence()
    assert {info.user for info in presence.clients.values()} == {"alice", "bob"}

    result = await reader.rpc("sum", b'{"a":2,"b":3}')
    assert result.data == b'{"sum":5}'
    echoed = await reader.rpc("echo", BINARY)
    assert echoed.data == BINARY


@pytest.mark.anyio
async def test_mixed_protocol_subscribers_get_the_same_publication(
    live_server: LiveServerFactory, sdk_client: ClientFactory
) -> None:
    node, srv = serve(live_server)
    channel = "chat:mixed"
    json_client = await sdk_client(ws(srv), "alice")
    pb_client = await sdk_client(ws(srv), "bob", use_protobuf=True)
    _, json_events = await subscribe(json_client, channel)
    _, pb_events = await subscribe(pb_client, channel)

    await srv.acall(node.publish(channel, {"text": "hi"}))
    assert await json_events.wait(1) == [{"text": "hi"}]
    assert await pb_events.wait(1) == [b'{"text":"hi"}']

    # a JSON publish from the JSON client reaches the protobuf client as its bytes
    await json_client.publish(channel, {"n": 1})
    assert json.loads((await pb_events.wait(2))[1]) == {"n": 1}
    assert (await json_events.wait(2))[1] == {"n": 1}


# ------------------------------------------------------------------------- raw clients


def delimited(*messages: Any) -> bytes:
    out = b""
    for m in messages:
        body = m.SerializeToString()
        out += uvarint(len(body)) + body
    return out


async def recv_replies(conn: ClientConnection) -> list[Any]:
    with anyio.fail_after(TIMEOUT):
        frame = await conn.recv()
    assert isinstance(frame, bytes), "protobuf replies travel in binary frames"
    return [sdk.Reply.FromString(bytes(r)) for r in split_delimited(frame)]


@contextlib.asynccontextmanager
async def json_subscriber(srv: LiveServer, channel: str) -> AsyncIterator[ClientConnection]:
    """A raw JSON-protocol connection subscribed to ``channel``."""
    async with connect(ws(srv)) as conn:
        commands = [
            {"id": 1, "connect": {"token": token("json-user")}},
            {"id": 2, "subscribe": {"channel": channel}},
        ]
        await conn.send("\n".join(json.dumps(c) for c in commands))
        ids: list[int] = []
        with anyio.fail_after(TIMEOUT):
            while ids != [1, 2]:
                frame = await conn.recv()
                assert isinstance(frame, str), "JSON replies travel in text frames"
                ids += [r["id"] for r in map(json.loads, frame.split("\n")) if r.get("id")]
        yield conn


async def closed_with(conn: ClientConnection, within: float = TIMEOUT) -> tuple[int, str]:
    """Read until the server closes; the close code and reason."""
    with anyio.fail_after(within), pytest.raises(ConnectionClosed) as closed:
        while True:
            await conn.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("offered", "answer"),
    [
        (["centrifuge-protobuf"], "centrifuge-protobuf"),
        (["centrifuge-json"], "centrifuge-json"),
        (None, None),
    ],
    ids=["protobuf", "json", "none"],
)
async def test_handshake_subprotocol(
    live_server: LiveServerFactory, offered: list[str] | None, answer: str | None
) -> None:
    _, srv = serve(live_server)
    async with connect(ws(srv), subprotocols=offered) as conn:  # type: ignore[arg-type]
        assert conn.response is not None
        assert conn.response.headers.get("Sec-WebSocket-Protocol") == answer
        assert conn.subprotocol == answer


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "offered"),
    [("", ["centrifuge-protobuf"]), ("?cf_protocol=protobuf", None), ("?format=protobuf", None)],
    ids=["subprotocol", "cf_protocol", "format"],
)
async def test_protobuf_selected_by_subprotocol_or_query(
    live_server: LiveServerFactory, query: str, offered: list[str] | None
) -> None:
    _, srv = serve(live_server)
    async with connect(ws(srv, query), subprotocols=offered) as conn:  # type: ignore[arg-type]
        await conn.send(
            delimited(
                sdk.Command(id=1, connect=sdk.ConnectRequest(token=token("u1"), name="raw")),
                sdk.Command(id=2, subscribe=sdk.SubscribeRequest(channel="news:raw")),
            )
        )
        replies = await recv_replies(conn)
        if len(replies) == 1:
            replies += await recv_replies(conn)
        connect_reply, subscribe_reply = replies
        assert connect_reply.id == 1 and connect_reply.connect.client
        assert connect_reply.connect.ping == 25 and connect_reply.connect.pong
        assert subscribe_reply.id == 2 and subscribe_reply.subscribe.recoverable
        await conn.send(b"\x00")  # a pong nobody asked for is ignored
        await conn.send(
            delimited(sdk.Command(id=3, rpc=sdk.RPCRequest(method="echo", data=b"\xff")))
        )
        [rpc] = await recv_replies(conn)
        assert rpc == sdk.Reply(id=3, rpc=sdk.RPCResult(data=b"\xff"))


@pytest.mark.anyio
async def test_protobuf_server_ping_and_client_pong(live_server: LiveServerFactory) -> None:
    _, srv = serve(live_server, ping_interval="500ms", pong_timeout="300ms")
    async with connect(ws(srv), subprotocols=["centrifuge-protobuf"]) as conn:  # type: ignore[list-item]
        await conn.send(delimited(sdk.Command(id=1, connect=sdk.ConnectRequest(token=token("u1")))))
        [reply] = await recv_replies(conn)
        assert reply.connect.ping == 1 and reply.connect.pong  # whole seconds, at least 1
        for _ in range(3):  # three pings answered: the connection stays up past the timeouts
            with anyio.fail_after(TIMEOUT):
                assert await conn.recv() == b"\x00"  # an empty Reply, length-prefixed
            await conn.send(b"\x00")  # an empty Command
        # no pong this time: closed with 3012 "no pong"
        with anyio.fail_after(TIMEOUT):
            assert await conn.recv() == b"\x00"
        assert await closed_with(conn) == (3012, "no pong")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "connect_first", [False, True], ids=["instead-of-connect", "after-connect"]
)
async def test_malformed_protobuf_frame_closes_3501(
    live_server: LiveServerFactory, connect_first: bool
) -> None:
    _, srv = serve(live_server)
    async with connect(ws(srv), subprotocols=["centrifuge-protobuf"]) as conn:  # type: ignore[list-item]
        if connect_first:
            await conn.send(
                delimited(sdk.Command(id=1, connect=sdk.ConnectRequest(token=token("u1"))))
            )
            [reply] = await recv_replies(conn)
            assert reply.connect.client
        await conn.send(b"\x05\x08\x01")  # the length says 5, the frame holds 2 bytes
        with anyio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as closed:
            await conn.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (3501, "bad request")


async def json_pushes(conn: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next ``count`` pushes on a raw JSON connection (pings are answered and skipped)."""
    pushes: list[dict[str, Any]] = []
    with anyio.fail_after(TIMEOUT):
        while len(pushes) < count:
            frame = await conn.recv()
            assert isinstance(frame, str), "JSON replies travel in text frames"
            for message in map(json.loads, frame.split("\n")):
                if not message:
                    await conn.send("{}")  # pong
                else:
                    pushes.append(message["push"])
    return pushes


@pytest.mark.anyio
@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe\x00", b"plain text", b"[" * 600 + b"]" * 600],
    ids=["not-utf8", "not-json", "too-deep"],
)
async def test_protobuf_publication_a_json_client_cannot_receive_is_107(
    live_server: LiveServerFactory, sdk_client: ClientFactory, data: bytes
) -> None:
    """Where the channel takes JSON (the default), the Protobuf publisher gets 107, nothing
    is stored, and no subscriber is disconnected (they were closed with 3506 before)."""
    node, srv = serve(live_server)
    channel = "news:binary"
    pb_client = await sdk_client(ws(srv), "bob", use_protobuf=True)
    _, pb_events = await subscribe(pb_client, channel)
    async with json_subscriber(srv, channel) as json_conn:
        with pytest.raises(ReplyError) as refused:
            await pb_client.publish(channel, data)
        assert (refused.value.code, refused.value.message) == (107, "bad request")
        assert (await srv.acall(node.history(channel, limit=-1))).publications == []
        await pb_client.publish(channel, b'{"after":true}')
        [push] = await json_pushes(json_conn, 1)
        assert (push["pub"]["data"], push["pub"]["offset"]) == ({"after": True}, 1)
    assert await pb_events.wait(1) == [b'{"after":true}']


@pytest.mark.anyio
async def test_binary_channel_json_subscriber_skips_what_it_cannot_receive(
    live_server: LiveServerFactory, sdk_client: ClientFactory
) -> None:
    """``publication_data_format: binary`` takes any bytes (as Centrifugo does). Protobuf
    subscribers get them; a JSON subscriber skips them and stays connected, live and in
    history."""
    _, srv = serve(live_server)
    channel = "bin:mixed"
    pb_client = await sdk_client(ws(srv), "bob", use_protobuf=True)
    _, pb_events = await subscribe(pb_client, channel)
    async with json_subscriber(srv, channel) as json_conn:
        await pb_client.publish(channel, b"\xff\xfe\x00")
        await pb_client.publish(channel, b'{"n":2}')
        [push] = await json_pushes(json_conn, 1)
        assert (push["pub"]["data"], push["pub"]["offset"]) == ({"n": 2}, 2)
        await json_conn.send(json.dumps({"id": 3, "history": {"channel": channel, "limit": -1}}))
        with anyio.fail_after(TIMEOUT):
            reply = json.loads(await json_conn.recv())
        pubs = reply["history"]["publications"]
        assert [(p["offset"], p["data"]) for p in pubs] == [(2, {"n": 2})]
    assert await pb_events.wait(2) == [b"\xff\xfe\x00", b'{"n":2}']
