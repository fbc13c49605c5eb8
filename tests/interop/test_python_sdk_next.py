"""What centrifuge-python's master branch puts on the wire, replayed by a raw client.

The frames below are the ones centrifuge-python's master branch (0.5.0 at the snapshot
these tests were written from) sends, captured from it against this server and written
out by hand, so they run whatever SDK version is installed (``test_python_sdk.py`` drives
the installed 0.7.0 through its API). Two of its differences from 0.7.0 reach a server in
every session that uses them:

- The JSON handshake offers ``subprotocols=[]``, which websockets sends as an empty
  ``Sec-WebSocket-Protocol:`` header (every release from 0.3.0 to 0.6.0 does; 0.7.0 sends
  none). Centrifugo reads it as no subprotocol; uvicorn's default WebSocket implementation
  answers 400, so the server runs here as ``centrifuge-asgi serve`` and ``server.run`` run
  it: ``ws=WS_PROTOCOL``.
- ``sub_refresh`` carries only the token, no channel (0.7.0 adds the channel). Centrifugo
  closes such a connection with 3501 "bad request" ("channel required for sub refresh").

Commands are encoded as the SDK's JSON codec does (``json.dumps`` with its default
separators, one command a frame), with the SDK's field order and its command ids, which
keep counting across reconnects; replies are decoded as it does (split on newlines) and
checked for what it reads. Every subscribe carries ``flag`` 1 (channel compaction), 3
with ``get_state``; ``delta`` and ``tf`` when asked for. With the standard interop config
none of them is enabled, and the replies are Centrifugo's for that case: no channel ID
(pushes name the channel), no ``delta: true``, error 107 for a tags filter, and 112 for
an unrecoverable position when flag bit 2 asks for it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import websockets
from google.protobuf.json_format import ParseDict
from websockets.asyncio.client import ClientConnection

from centrifuge_asgi import __version__
from centrifuge_asgi.node import Node
from centrifuge_asgi.protocol import client_pb2 as pb
from centrifuge_asgi.protocol.protobuf_codec import split_delimited, uvarint
from centrifuge_asgi.server import WS_PROTOCOL

from .support import WS_PATH, make_config, make_node, sub_token, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

TIMEOUT = 5.0  # upper bound of every single wait in this module
Frame = dict[str, Any]

# Client(...) defaults of the SDK: name "python", no version, no data.
SDK_NAME = "python"
# SubscriptionFlag bits the SDK sets (centrifuge/codes.py).
CHANNEL_COMPACTION = 1
REJECT_UNRECOVERED = 2


def serve(live_server: LiveServerFactory, **client: Any) -> tuple[Node, LiveServer]:
    node = make_node(make_config(**client))
    return node, live_server(node.asgi_app(), ws=WS_PROTOCOL)


def subscribe_command(
    cmd_id: int,
    channel: str,
    *,
    token: str = "",
    positioned: bool = False,
    recoverable: bool = False,
    join_leave: bool = False,
    recover: tuple[str, int] | None = None,
    get_state: bool = False,
    delta: str = "",
    tf: Frame | None = None,
) -> Frame:
    """``Client._construct_subscribe_command``: the same fields, in the same order."""
    sub: Frame = {"channel": channel}
    if token:
        sub["token"] = token
    if positioned:
        sub["positioned"] = True
    if recoverable:
        sub["recoverable"] = True
    if join_leave:
        sub["join_leave"] = True
    if recover is not None:
        sub["recover"] = True
        sub["epoch"], sub["offset"] = recover
    sub["flag"] = CHANNEL_COMPACTION | (REJECT_UNRECOVERED if get_state else 0)
    if delta:
        sub["delta"] = delta
    if tf is not None:
        sub["tf"] = tf
    return {"id": cmd_id, "subscribe": sub}


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class SdkWire:
    """A JSON connection that sends what the SDK sends and reads replies as it does."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self._unread: list[Frame] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, srv: LiveServer) -> AsyncIterator[SdkWire]:
        # websockets.connect(address, subprotocols=[], additional_headers={}) with the
        # library's defaults (permessage-deflate offered, its User-Agent); bounded here.
        async with websockets.connect(
            srv.ws_url(WS_PATH),
            subprotocols=[],
            additional_headers={},
            proxy=None,
            open_timeout=TIMEOUT,
            close_timeout=1,
        ) as conn:
            yield cls(conn)

    async def send(self, command: Frame) -> None:
        await self.conn.send(json.dumps(command))  # _JsonCodec.encode_commands, one command

    async def message(self) -> Frame:
        if not self._unread:
            try:
                with anyio.fail_after(TIMEOUT):
                    data = await self.conn.recv()
            except websockets.ConnectionClosed as exc:
                assert exc.rcvd is not None, "closed without a close frame"
                raise Closed(exc.rcvd.code, exc.rcvd.reason) from exc
            assert isinstance(data, str), "JSON replies travel in text frames"
            self._unread = [json.loads(r) for r in data.strip().split("\n")]  # decode_replies
        return self._unread.pop(0)

    async def wait_for(self, match: Callable[[Frame], bool]) -> Frame:
        with anyio.fail_after(TIMEOUT):
            while True:
                msg = await self.message()
                if match(msg):
                    return msg

    async def call(self, command: Frame) -> Frame:
        await self.send(command)
        return await self.wait_for(lambda m: m.get("id") == command["id"])

    async def connect(self, user: str, cmd_id: int = 1) -> Frame:
        command = {"id": cmd_id, "connect": {"token": token(user), "name": SDK_NAME}}
        reply = await self.call(command)
        assert "error" not in reply, reply
        result: Frame = reply["connect"]
        return result

    async def closed(self) -> tuple[int, str]:
        with anyio.fail_after(TIMEOUT):
            while True:
                try:
                    await self.message()
                except Closed as exc:
                    return exc.code, exc.reason


def is_pub(channel: str) -> Callable[[Frame], bool]:
    return lambda m: "pub" in m.get("push", {}) and m["push"].get("channel") == channel


# ------------------------------------------------------------------------- handshake


async def test_empty_subprotocol_header_then_connect(live_server: LiveServerFactory) -> None:
    _, srv = serve(live_server)
    async with SdkWire.open(srv) as wire:
        # the reproduction is faithful: the header goes out, empty
        assert wire.conn.request is not None and wire.conn.response is not None
        assert wire.conn.request.headers.get_all("Sec-WebSocket-Protocol") == [""]
        # none answered: websockets fails a handshake that picks a subprotocol not offered
        assert wire.conn.response.headers.get_all("Sec-WebSocket-Protocol") == []
        assert wire.conn.subprotocol is None
        result = await wire.connect("alice")
    assert result["client"]  # read as connect["client"]
    assert result["version"] == __version__
    assert result["expires"] is True and 3500 < result["ttl"] <= 3600  # refresh timer
    assert (result["ping"], result["pong"]) == (25, True)


async def test_pong_keeps_the_connection(live_server: LiveServerFactory) -> None:
    """A ping is an empty reply; the SDK answers ``json.dumps({})`` when ``pong`` is set."""
    _, srv = serve(live_server, ping_interval="500ms", pong_timeout="300ms")
    async with SdkWire.open(srv) as wire:
        result = await wire.connect("alice")
        assert (result["ping"], result["pong"]) == (1, True)
        for _ in range(3):  # past three pong timeouts
            assert await wire.message() == {}
            await wire.send({})


# ------------------------------------------------------------------------- subscribe


async def test_subscribe_fields_the_sdk_sends(live_server: LiveServerFactory) -> None:
    node, srv = serve(live_server)
    async with SdkWire.open(srv) as wire:
        await wire.connect("alice")

        # positioned + recoverable + join_leave, delta "fossil", flag 1
        reply = await wire.call(
            subscribe_command(
                2, "news:a", positioned=True, recoverable=True, join_leave=True, delta="fossil"
            )
        )
        sub = reply["subscribe"]
        assert sub["epoch"]
        assert reply == {
            "id": 2,
            "subscribe": {"recoverable": True, "epoch": sub["epoch"], "positioned": True},
        }  # no "id" (compaction) and no "delta": publications come whole, named
        await srv.acall(node.publish("news:a", {"n": 1}))
        push = (await wire.wait_for(is_pub("news:a")))["push"]
        assert "id" not in push
        assert push["pub"]["data"] == {"n": 1} and push["pub"]["offset"] == 1
        assert not push["pub"].get("delta")

        # a tags filter where the namespace allows none: 107, and the connection stays
        tf = {"key": "k", "cmp": "eq", "val": "v"}  # Filter.eq("k", "v")
        reply = await wire.call(subscribe_command(3, "chat:c", tf=tf))
        assert reply == {"id": 3, "error": {"code": 107, "message": "bad request"}}

        # get_state: the app's position, flag 3; a position the stream never had is 112
        reply = await wire.call(
            subscribe_command(4, "news:b", recoverable=True, recover=("x", 0), get_state=True)
        )
        assert reply == {"id": 4, "error": {"code": 112, "message": "unrecoverable position"}}
        # the app's backend keeps the position its publish returned: that one recovers
        top = await srv.acall(node.publish("news:b", {"n": 1}))
        assert top.offset == 1 and top.epoch
        await srv.acall(node.publish("news:b", {"n": 2}))
        reply = await wire.call(
            subscribe_command(5, "news:b", recoverable=True, recover=(top.epoch, 1), get_state=True)
        )
        sub = reply["subscribe"]
        assert (sub["recoverable"], sub["positioned"]) == (True, True)
        assert (sub["was_recovering"], sub["recovered"]) == (True, True)
        assert sub["epoch"] == top.epoch  # the SDK's position ends at the last publication
        assert [(p["offset"], p["data"]) for p in sub["publications"]] == [(2, {"n": 2})]

        # unsubscribe
        reply = await wire.call({"id": 6, "unsubscribe": {"channel": "news:a"}})
        assert reply == {"id": 6, "unsubscribe": {}}


async def test_recovering_resubscribe_after_reconnect(live_server: LiveServerFactory) -> None:
    """The resubscribe of a recoverable subscription: its last offset and epoch."""
    node, srv = serve(live_server)
    channel = "news:recovery"
    fields: dict[str, Any] = {"positioned": True, "recoverable": True, "join_leave": True}
    async with SdkWire.open(srv) as wire:
        await wire.connect("alice")
        epoch = (await wire.call(subscribe_command(2, channel, **fields)))["subscribe"]["epoch"]
        for n in (1, 2):
            await srv.acall(node.publish(channel, {"n": n}))
            await wire.wait_for(is_pub(channel))
        await srv.acall(node.disconnect("alice", code=3011, reason="force reconnect"))
        assert await wire.closed() == (3011, "force reconnect")  # >= 3000: code and reason
    for n in (3, 4):
        await srv.acall(node.publish(channel, {"n": n}))
    async with SdkWire.open(srv) as wire:
        await wire.connect("alice", cmd_id=3)  # the SDK's ids go on counting
        reply = await wire.call(subscribe_command(4, channel, recover=(epoch, 2), **fields))
    sub = reply["subscribe"]
    assert (sub["was_recovering"], sub["recovered"]) == (True, True)
    assert sub["epoch"] == epoch  # the SDK's position ends at the last publication
    assert [(p["offset"], p["data"]) for p in sub["publications"]] == [
        (3, {"n": 3}),
        (4, {"n": 4}),
    ]


@pytest.mark.parametrize("with_channel", [False, True], ids=["master", "0.7.0"])
async def test_sub_refresh(live_server: LiveServerFactory, with_channel: bool) -> None:
    """master sends ``{"sub_refresh": {"token": ...}}``: 3501, as Centrifugo answers it."""
    _, srv = serve(live_server)
    channel = "secret:refresh"
    async with SdkWire.open(srv) as wire:
        await wire.connect("alice")
        reply = await wire.call(
            subscribe_command(2, channel, token=sub_token("alice", channel, ttl=60))
        )
        assert reply["subscribe"]["expires"] is True and 0 < reply["subscribe"]["ttl"] <= 60
        refresh: Frame = {"token": sub_token("alice", channel, ttl=600)}
        if with_channel:
            refresh = {"channel": channel, **refresh}
        await wire.send({"id": 3, "sub_refresh": refresh})
        if not with_channel:
            assert await wire.closed() == (3501, "bad request")  # the SDK won't reconnect
            return
        reply = await wire.wait_for(lambda m: m.get("id") == 3)
    assert reply["sub_refresh"]["expires"] is True
    assert 540 < reply["sub_refresh"]["ttl"] <= 600


# -------------------------------------------------------------------------- protobuf


async def test_protobuf_connect_and_subscribe(live_server: LiveServerFactory) -> None:
    """``use_protobuf=True``: the same commands, ParseDict-ed and length-delimited."""
    _, srv = serve(live_server)

    def frame(command: Frame) -> bytes:
        body: bytes = ParseDict(command, pb.Command()).SerializeToString()
        return uvarint(len(body)) + body  # _ProtobufCodec.encode_commands, one command

    async def replies(conn: ClientConnection) -> list[pb.Reply]:
        with anyio.fail_after(TIMEOUT):
            data = await conn.recv()
        assert isinstance(data, bytes)
        return [pb.Reply.FromString(bytes(r)) for r in split_delimited(data)]

    async with websockets.connect(
        srv.ws_url(WS_PATH),
        subprotocols=["centrifuge-protobuf"],  # type: ignore[list-item]
        additional_headers={},
        proxy=None,
        open_timeout=TIMEOUT,
        close_timeout=1,
    ) as conn:
        assert conn.subprotocol == "centrifuge-protobuf"
        await conn.send(frame({"id": 1, "connect": {"token": token("bob"), "name": SDK_NAME}}))
        [connected] = await replies(conn)
        assert connected.id == 1 and connected.connect.client
        assert (connected.connect.ping, connected.connect.pong) == (25, True)
        command = subscribe_command(
            2, "news:pb", positioned=True, recoverable=True, join_leave=True, delta="fossil"
        )
        await conn.send(frame(command))
        [subscribed] = await replies(conn)
    assert subscribed.id == 2 and not subscribed.HasField("error")
    sub = subscribed.subscribe
    assert (sub.recoverable, sub.positioned, sub.delta, sub.id) == (True, True, False, 0)
    assert sub.epoch
