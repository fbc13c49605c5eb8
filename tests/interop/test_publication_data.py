"""Publication data that JSON clients could not receive, at every edge, under uvicorn.

Such data (invalid UTF-8, bytes that are not JSON, arrays nested deeper than
``payload.MAX_DEPTH``) used to be acknowledged and stored, and then closed every JSON
subscriber of the channel with 3506, and every later client that recovered it. Now it is
refused where it enters (error 107: a client's publish, the server API, a publish proxy's
answer, ``node.publish``), nothing is stored, and every other connection stays up. Deep
but valid data (500 levels) reaches JSON and Protobuf subscribers intact.

Clients: centrifuge-python (JSON and Protobuf), raw JSON and Protobuf WebSocket
connections (to send what no SDK sends), httpx for the API, and a Starlette backend as
the publish proxy.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from centrifuge import Client, PublicationContext, SubscriptionEventHandler
from centrifuge.exceptions import ReplyError
from centrifuge.protocol import client_pb2 as sdk
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.client import ClientConnection, connect

from centrifuge_asgi import ClientError
from centrifuge_asgi.node import Node
from centrifuge_asgi.protocol.protobuf_codec import split_delimited, uvarint

from .support import WS_PATH, make_config, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

TIMEOUT = 5.0
KEY = "api-key"
CHANNEL = "news:data"  # history and recovery, default publication_data_format


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


DEEP_OK = nested(500)
# Past the limit but within what the JSON command decoder parses: it used to be stored,
# and then fail to encode for every JSON subscriber (Python's recursion limit).
DEEP_970 = nested(970)
NOT_UTF8 = b'"\xff\xfe"'


# ------------------------------------------------------------------------------ server


def serve(live_server: LiveServerFactory, proxy_url: str = "") -> tuple[Node, LiveServer]:
    cfg = make_config()
    cfg["http_api"] = {"key": KEY}
    if proxy_url:
        cfg["channel"]["proxy"] = {"publish": {"endpoint": proxy_url}}
        cfg["channel"]["namespaces"].append(
            {
                "name": "px",
                "publish_proxy_enabled": True,
                "allow_subscribe_for_client": True,
                "history_size": 10,
                "history_ttl": "300s",
            }
        )
    node = Node(cfg)
    return node, live_server(node.asgi_app())


async def stored(srv: LiveServer, node: Node, channel: str = CHANNEL) -> list[bytes]:
    page = await srv.acall(node.history(channel, limit=-1))
    return [p.data for p in page.publications]


# ----------------------------------------------------------------------- raw clients


class RawConnection:
    """A raw WebSocket client of either protocol: commands by id, pushes as they come."""

    def __init__(self, conn: ClientConnection, protobuf: bool) -> None:
        self.conn = conn
        self.protobuf = protobuf
        self.pushes: list[Any] = []
        self._replies: dict[int, Any] = {}
        self._next_id = 1

    async def _read(self) -> None:
        frame = await self.conn.recv()
        if self.protobuf:
            assert isinstance(frame, bytes)
            for record in split_delimited(frame):
                reply = sdk.Reply.FromString(bytes(record))
                if reply.id:
                    self._replies[reply.id] = reply
                elif reply.HasField("push"):
                    self.pushes.append(reply.push)
                else:
                    await self.conn.send(b"\x00")  # pong
            return
        assert isinstance(frame, str), "JSON replies travel in text frames"
        for message in map(json.loads, frame.split("\n")):
            if message.get("id"):
                self._replies[message["id"]] = message
            elif "push" in message:
                self.pushes.append(message["push"])
            else:
                await self.conn.send("{}")  # pong

    async def command(self, method: str, body: Any, *, raw: bytes | str = "") -> Any:
        """Send one command; ``raw``: the frame as it is (``$ID`` is the command id), bytes
        in a binary frame and str in a text frame."""
        cid = self._next_id
        self._next_id += 1
        if isinstance(raw, bytes):
            await self.conn.send(raw.replace(b"$ID", str(cid).encode()))
        elif raw:
            await self.conn.send(raw.replace("$ID", str(cid)))
        elif self.protobuf:
            body = sdk.Command(id=cid, **{method: body}).SerializeToString()
            await self.conn.send(uvarint(len(body)) + body)
        else:
            await self.conn.send(json.dumps({"id": cid, method: body}))
        with anyio.fail_after(TIMEOUT):
            while cid not in self._replies:
                await self._read()
        return self._replies.pop(cid)

    async def push(self) -> Any:
        with anyio.fail_after(TIMEOUT):
            while not self.pushes:
                await self._read()
        return self.pushes.pop(0)


@contextlib.asynccontextmanager
async def raw_client(
    srv: LiveServer, user: str, channel: str = CHANNEL, *, protobuf: bool = False
) -> AsyncIterator[RawConnection]:
    """Connected and subscribed to ``channel``."""
    subprotocols: Any = ["centrifuge-protobuf"] if protobuf else None
    async with connect(srv.ws_url(WS_PATH), subprotocols=subprotocols) as conn:
        client = RawConnection(conn, protobuf)
        if protobuf:
            await client.command("connect", sdk.ConnectRequest(token=token(user)))
            await client.command("subscribe", sdk.SubscribeRequest(channel=channel))
        else:
            await client.command("connect", {"token": token(user)})
            await client.command("subscribe", {"channel": channel})
        yield client


def publish_error(reply: Any) -> tuple[int, str] | None:
    if isinstance(reply, dict):
        error = reply.get("error")
        return None if error is None else (error["code"], error["message"])
    return (reply.error.code, reply.error.message) if reply.HasField("error") else None


# ------------------------------------------------------------------------ SDK clients


class Publications(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.data: list[Any] = []
        self._changed = anyio.Event()

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.data.append(ctx.pub.data)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, count: int) -> list[Any]:
        with anyio.fail_after(TIMEOUT):
            while len(self.data) < count:
                await self._changed.wait()
        return self.data


SdkFactory = Callable[..., Awaitable[tuple[Client, Publications]]]


@pytest.fixture
async def sdk_subscriber() -> AsyncIterator[SdkFactory]:
    """``client, pubs = await sdk_subscriber(srv, user, protobuf=False)``: subscribed."""
    clients: list[Client] = []

    async def make(
        srv: LiveServer, user: str, channel: str = CHANNEL, *, protobuf: bool = False
    ) -> tuple[Client, Publications]:
        client = Client(
            srv.ws_url(WS_PATH), token=token(user), timeout=TIMEOUT, use_protobuf=protobuf
        )
        clients.append(client)
        pubs = Publications()
        with anyio.fail_after(TIMEOUT):
            await client.connect()
            sub = client.new_subscription(channel, events=pubs)
            await sub.subscribe()
            await sub.ready(timeout=TIMEOUT)
        return client, pubs

    yield make
    for client in clients:
        with anyio.move_on_after(TIMEOUT), contextlib.suppress(Exception):
            await client.disconnect()


async def still_delivered(
    srv: LiveServer, node: Node, readers: list[RawConnection], sdk_pubs: list[Publications]
) -> None:
    """Every reader is still connected and gets the next (first stored) publication."""
    await srv.acall(node.publish(CHANNEL, {"after": True}))
    for reader in readers:
        push = await reader.push()
        if reader.protobuf:
            assert (push.pub.data, push.pub.offset) == (b'{"after":true}', 1)
        else:
            assert (push["pub"]["data"], push["pub"]["offset"]) == ({"after": True}, 1)
    for pubs in sdk_pubs:
        assert await pubs.wait(1) in ([{"after": True}], [b'{"after":true}'])


# ------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("data", "raw_frame"),
    [
        (DEEP_970, None),
        (nested(513), None),
        (NOT_UTF8, b'{"id":$ID,"publish":{"channel":"news:data","data":"\xff\xfe"}}'),
    ],
    ids=["970-deep", "513-deep", "not-utf8-in-binary-frame"],
)
async def test_json_client_publish_is_107(
    live_server: LiveServerFactory,
    sdk_subscriber: SdkFactory,
    data: bytes,
    raw_frame: bytes | None,
) -> None:
    node, srv = serve(live_server)
    _, json_pubs = await sdk_subscriber(srv, "sdk-json")
    _, pb_pubs = await sdk_subscriber(srv, "sdk-pb", protobuf=True)
    async with (
        raw_client(srv, "publisher") as publisher,
        raw_client(srv, "reader") as reader,
    ):
        if raw_frame is None:
            frame = b'{"id":$ID,"publish":{"channel":"news:data","data":' + data + b"}}"
            reply = await publisher.command("publish", None, raw=frame.decode())
        else:
            reply = await publisher.command("publish", None, raw=raw_frame)
        assert publish_error(reply) == (107, "bad request")
        assert await stored(srv, node) == []
        await still_delivered(srv, node, [publisher, reader], [json_pubs, pb_pubs])


async def test_sdk_json_client_publish_too_deep_is_107(
    live_server: LiveServerFactory, sdk_subscriber: SdkFactory
) -> None:
    node, srv = serve(live_server)
    publisher, _ = await sdk_subscriber(srv, "publisher")
    _, reader_pubs = await sdk_subscriber(srv, "reader")
    with pytest.raises(ReplyError) as refused:
        await publisher.publish(CHANNEL, json.loads(nested(600)))
    assert (refused.value.code, refused.value.message) == (107, "bad request")
    assert await stored(srv, node) == []
    await still_delivered(srv, node, [], [reader_pubs])


@pytest.mark.parametrize(
    "data", [b"\xff\xfe\x00", b"plain text", b"", DEEP_970], ids=lambda d: repr(d[:12])
)
async def test_protobuf_client_publish_is_107(
    live_server: LiveServerFactory, sdk_subscriber: SdkFactory, data: bytes
) -> None:
    node, srv = serve(live_server)
    _, json_pubs = await sdk_subscriber(srv, "sdk-json")
    async with (
        raw_client(srv, "publisher", protobuf=True) as publisher,
        raw_client(srv, "reader") as reader,
    ):
        reply = await publisher.command("publish", sdk.PublishRequest(channel=CHANNEL, data=data))
        assert publish_error(reply) == (107, "bad request")
        assert await stored(srv, node) == []
        await still_delivered(srv, node, [publisher, reader], [json_pubs])


@pytest.mark.parametrize(
    "body",
    [
        b'{"channel": "news:data", "data": "\xff\xfe"}',
        b'{"channel": "news:data", "data": ' + DEEP_970 + b"}",
        b'{"channel": "news:data", "data": ' + nested(600) + b"}",
        b'{"channel": "news:data", "b64data": "' + base64.b64encode(b"\xff\x00") + b'"}',
        b'{"channel": "news:data", "b64data": "' + base64.b64encode(b"text") + b'"}',
        b'{"channels": ["news:data"], "data": "\xff\xfe"}',
    ],
    ids=["not-utf8", "970-deep", "600-deep", "b64-binary", "b64-text", "broadcast"],
)
async def test_server_api_publish_is_107(
    live_server: LiveServerFactory, sdk_subscriber: SdkFactory, body: bytes
) -> None:
    node, srv = serve(live_server)
    _, json_pubs = await sdk_subscriber(srv, "sdk-json")
    async with raw_client(srv, "reader") as reader:
        method = "broadcast" if b'"channels"' in body else "publish"
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            r = await http.post(srv.url(f"/api/{method}"), content=body, headers={"X-API-Key": KEY})
        error = {"code": 107, "message": "bad request"}
        if method == "broadcast":
            assert r.json() == {"result": {"responses": [{"error": error}]}}
        else:
            assert r.json() == {"error": error}
        assert await stored(srv, node) == []
        await still_delivered(srv, node, [reader], [json_pubs])


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe", b"plain text", b"", b'{"a":1}\n{"b":2}', DEEP_970],
    ids=["not-utf8", "not-json", "empty", "two-values", "970-deep"],
)
async def test_node_publish_is_107(
    live_server: LiveServerFactory, sdk_subscriber: SdkFactory, data: bytes
) -> None:
    node, srv = serve(live_server)
    _, json_pubs = await sdk_subscriber(srv, "sdk-json")
    async with raw_client(srv, "reader") as reader:
        with pytest.raises(ClientError) as refused:
            await srv.acall(node.publish(CHANNEL, data))
        assert refused.value.code == 107
        assert await stored(srv, node) == []
        await still_delivered(srv, node, [reader], [json_pubs])


@pytest.mark.parametrize(
    "result",
    [
        {"b64data": base64.b64encode(b"\xff\xfe\x00").decode()},
        {"b64data": base64.b64encode(b"plain text").decode()},
        {"data": json.loads(nested(600))},
    ],
    ids=["b64-binary", "b64-text", "600-deep"],
)
@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
async def test_publish_proxy_answer_is_107(
    live_server: LiveServerFactory, result: dict[str, Any], protobuf: bool
) -> None:
    """The proxy replaces the client's data with data a JSON client cannot receive."""

    async def publish(request: Request) -> JSONResponse:
        return JSONResponse({"result": result})

    backend = live_server(Starlette(routes=[Route("/publish", publish, methods=["POST"])]))
    node, srv = serve(live_server, backend.url("/publish"))
    async with (
        raw_client(srv, "publisher", "px:1", protobuf=protobuf) as publisher,
        raw_client(srv, "reader", "px:1") as reader,
    ):
        if protobuf:
            body: Any = sdk.PublishRequest(channel="px:1", data=b'{"ok":1}')
        else:
            body = {"channel": "px:1", "data": {"ok": 1}}
        reply = await publisher.command("publish", body)
        assert publish_error(reply) == (107, "bad request")
        assert await stored(srv, node, "px:1") == []
        await srv.acall(node.publish("px:1", {"after": True}))
        push = await reader.push()
        assert (push["pub"]["data"], push["pub"]["offset"]) == ({"after": True}, 1)


async def test_deep_valid_payload_reaches_every_subscriber(
    live_server: LiveServerFactory, sdk_subscriber: SdkFactory
) -> None:
    """500 levels, from each edge, to JSON and Protobuf SDKs and raw clients; then
    recovered and read from history by a JSON client."""
    node, srv = serve(live_server)
    deep = json.loads(DEEP_OK)
    _, json_pubs = await sdk_subscriber(srv, "sdk-json")
    _, pb_pubs = await sdk_subscriber(srv, "sdk-pb", protobuf=True)
    async with (
        raw_client(srv, "json-publisher") as json_publisher,
        raw_client(srv, "pb-publisher", protobuf=True) as pb_publisher,
    ):
        frame = '{"id":$ID,"publish":{"channel":"news:data","data":' + DEEP_OK.decode() + "}}"
        assert publish_error(await json_publisher.command("publish", None, raw=frame)) is None
        request = sdk.PublishRequest(channel=CHANNEL, data=DEEP_OK)
        assert publish_error(await pb_publisher.command("publish", request)) is None
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            body = b'{"channel": "news:data", "data": ' + DEEP_OK + b"}"
            r = await http.post(srv.url("/api/publish"), content=body, headers={"X-API-Key": KEY})
            assert r.json()["result"]["offset"] == 3
        await srv.acall(node.publish(CHANNEL, deep))
        await srv.acall(node.publish(CHANNEL, DEEP_OK))

        assert await json_pubs.wait(5) == [deep] * 5
        assert await pb_pubs.wait(5) == [DEEP_OK] * 5
        for _ in range(5):
            assert (await json_publisher.push())["pub"]["data"] == deep
            assert (await pb_publisher.push()).pub.data == DEEP_OK

    async with raw_client(srv, "late") as late:
        epoch = (await srv.acall(node.history(CHANNEL, limit=0))).epoch
        await late.command("unsubscribe", {"channel": CHANNEL})
        sub = {"channel": CHANNEL, "recover": True, "offset": 0, "epoch": epoch}
        recovered = (await late.command("subscribe", sub))["subscribe"]
        assert recovered["recovered"] is True
        assert [p["data"] for p in recovered["publications"]] == [deep] * 5
        history = (await late.command("history", {"channel": CHANNEL, "limit": -1}))["history"]
        assert [p["data"] for p in history["publications"]] == [deep] * 5
