"""Bad input against a live server, with a raw WebSocket client (JSON protocol).

Every case asserts the exact reference outcome — a WebSocket close code and reason, an
HTTP status, or the exact error reply — and then checks that the server is still healthy
(a fresh client connects, subscribes and receives a publication).

References: client-protocol.md §1.4 to §1.6, §3, §5.2, §5.7, §6; reliability.md a5, a8,
B3 (#22, #25, #27 to #29, #31, #32), B4, B5, B6, B7.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from centrifuge_asgi.auth import connection_token
from centrifuge_asgi.handlers import DisconnectEvent, RPCEvent
from centrifuge_asgi.node import Node
from tests.conditions import unavailable

from .support import SECRET, WS_PATH, eventually, make_config, make_node, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

TIMEOUT = 5.0  # upper bound of every single wait in this module
Frame = dict[str, Any]


# --------------------------------------------------------------------------- server


@dataclass
class Env:
    """A live server, its node, and what its handlers observed."""

    srv: LiveServer
    node: Node
    disconnects: list[DisconnectEvent]

    async def num_clients(self) -> int:
        async def count() -> int:
            return self.node.registry.num_clients

        return await self.srv.acall(count())

    async def subscribers(self, channel: str) -> int:
        async def count() -> int:
            return self.node.registry.channels().get(channel, 0)

        return await self.srv.acall(count())

    async def disconnect_codes(self) -> list[tuple[str, int]]:
        """(user, code) of every connection whose disconnect handler has run."""

        async def read() -> list[tuple[str, int]]:
            return [(e.client.user, e.code) for e in self.disconnects]

        return await self.srv.acall(read())


ServerFactory = Callable[..., Env]


@pytest.fixture
def server(live_server: LiveServerFactory) -> ServerFactory:
    """``server(**client_overrides)`` or ``server(config=...)``: a live node.

    The node answers RPC ``whoami`` with the caller's user id and records disconnects.
    """

    def start(config: dict[str, Any] | None = None, **client_overrides: Any) -> Env:
        node = make_node(config if config is not None else make_config(**client_overrides))
        disconnects: list[DisconnectEvent] = []

        @node.on_rpc("whoami")
        async def whoami(event: RPCEvent) -> dict[str, str]:
            return {"user": event.client.user}

        @node.on_disconnect
        async def on_disconnect(event: DisconnectEvent) -> None:
            disconnects.append(event)

        return Env(live_server(node.asgi_app()), node, disconnects)

    return start


# --------------------------------------------------------------------------- raw client


class Closed(Exception):
    """The server closed the WebSocket (``code``/``reason`` of its close frame)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class RawClient:
    """A JSON-protocol client without any SDK logic: frames in, messages out."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[Frame] = []  # every message, in order (pings included)
        self._unread: list[Frame] = []
        self._ids = itertools.count(1)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, env: Env, **kwargs: Any) -> AsyncIterator[RawClient]:
        options: dict[str, Any] = {
            "open_timeout": TIMEOUT,
            "close_timeout": 1,
            "compression": None,
            "ping_interval": None,
            "proxy": None,
            "max_size": None,
        }
        options.update(kwargs)
        async with websockets.connect(env.srv.ws_url(WS_PATH), **options) as ws:
            yield cls(ws)

    def next_id(self) -> int:
        return next(self._ids)

    async def send_raw(self, frame: str) -> None:
        await self.ws.send(frame)

    async def send(self, *commands: Frame) -> None:
        """Send commands in one frame, newline-separated."""
        await self.ws.send("\n".join(json.dumps(c, separators=(",", ":")) for c in commands))

    async def message(self, within: float = TIMEOUT) -> Frame:
        """The next message; raises :class:`Closed` when the server closes instead."""
        if not self._unread:
            try:
                with anyio.fail_after(within):
                    frame = await self.ws.recv()
            except websockets.ConnectionClosed as exc:
                if exc.rcvd is None:
                    raise AssertionError("connection dropped without a close frame") from exc
                raise Closed(exc.rcvd.code, exc.rcvd.reason) from exc
            assert isinstance(frame, str), "JSON protocol replies must be text frames"
            messages = [json.loads(line) for line in frame.split("\n")]
            self.received.extend(messages)
            self._unread.extend(messages)
        return self._unread.pop(0)

    async def wait_for(self, match: Callable[[Frame], bool], within: float = TIMEOUT) -> Frame:
        """Skip messages (pings, other pushes) until one matches."""
        with anyio.fail_after(within):
            while True:
                msg = await self.message()
                if match(msg):
                    return msg

    async def reply(self, cmd_id: int, within: float = TIMEOUT) -> Frame:
        return await self.wait_for(lambda m: m.get("id") == cmd_id, within)

    async def call(self, method: str, params: Frame) -> Frame:
        """Send one command with a fresh id and return its reply."""
        cmd_id = self.next_id()
        await self.send({"id": cmd_id, method: params})
        return await self.reply(cmd_id)

    async def connect(self, user_token: str | None) -> Frame:
        """Connect; returns the connect result (asserting success)."""
        params = {} if user_token is None else {"token": user_token}
        reply = await self.call("connect", params)
        assert "connect" in reply, reply
        return reply["connect"]

    async def closed(self, within: float = TIMEOUT) -> tuple[int, str]:
        """Read until the server closes; returns the close frame's code and reason."""
        with anyio.fail_after(within):
            while True:
                try:
                    await self.message()
                except Closed as exc:
                    return exc.code, exc.reason


async def assert_closed(client: RawClient, code: int, reason: str) -> None:
    assert await client.closed() == (code, reason)


_health_ids = itertools.count()


async def assert_healthy(env: Env) -> None:
    """A fresh valid client connects, subscribes and receives a publication."""
    n = next(_health_ids)
    channel = f"chat:health-{n}"
    async with RawClient.open(env) as client:
        result = await client.connect(token(f"healthy-{n}"))
        assert result["client"]
        assert await client.call("subscribe", {"channel": channel}) == {
            "id": 2,
            "subscribe": {},
        }
        await env.srv.acall(env.node.publish(channel, {"health": n}))
        push = await client.wait_for(lambda m: "pub" in m.get("push", {}))
        assert push["push"]["channel"] == channel
        assert _without_time(push["push"]["pub"]) == {"data": {"health": n}}


def _without_time(pub: Frame) -> Frame:
    """A publication without its optional server ``time`` (ms) field."""
    return {k: v for k, v in pub.items() if k != "time"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(header: Frame, claims: Frame, signature: str = "") -> str:
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), signature]
    )


CONNECT_OK = {"token": token("u1")}


# ------------------------------------------------------------------ protocol violations

# Valid JSON nested 2000 levels deep (4 KB): past the recursion limit of any decoder here.
DEEP = "[" * 2000 + "]" * 2000

VIOLATIONS: dict[str, tuple[bool, list[str]]] = {
    # case: (connect first?, frames sent afterwards)
    "garbage-before-connect": (False, ["garbage"]),
    "malformed-json": (True, ['{"id":2,"subscribe":{"channel":"chat:x"']),
    "json-array": (True, ["[1,2,3]"]),
    "frame-without-command": (True, [" \n "]),
    "unknown-command": (True, ['{"id":2,"foo":{}}']),
    "command-before-connect": (False, ['{"id":1,"subscribe":{"channel":"chat:x"}}']),
    "duplicate-connect": (True, [json.dumps({"id": 2, "connect": CONNECT_OK})]),
    "no-id-subscribe": (True, ['{"subscribe":{"channel":"chat:x"}}']),
    "id-zero-rpc": (True, ['{"id":0,"rpc":{"method":"whoami"}}']),
    "legacy-ping-command": (True, ['{"id":2,"ping":{}}']),
    "subscribe-empty-channel": (True, ['{"id":2,"subscribe":{"channel":""}}']),
    "unsubscribe-empty-channel": (True, ['{"id":2,"unsubscribe":{"channel":""}}']),
    "connect-without-token": (False, ['{"id":1,"connect":{}}']),
    "deeply-nested-connect": (False, ['{"id":1,"connect":{"data":' + DEEP + "}}"]),
    "deeply-nested-publish": (
        True,
        ['{"id":2,"publish":{"channel":"chat:x","data":' + DEEP + "}}"],
    ),
    # Integer fields out of the range of their proto type: Go's JSON decoder
    # (segmentio/encoding/json, used by centrifugal/protocol) refuses the command.
    "id-negative": (True, ['{"id":-1,"rpc":{"method":"whoami"}}']),
    "id-2^32": (True, ['{"id":4294967296,"rpc":{"method":"whoami"}}']),
    "id-2^63": (True, ['{"id":9223372036854775808,"rpc":{"method":"whoami"}}']),
    "id-2^70": (True, ['{"id":1180591620717411303424,"rpc":{"method":"whoami"}}']),
    "id-fraction": (True, ['{"id":2.0,"rpc":{"method":"whoami"}}']),
    "connect-id-2^32": (False, [json.dumps({"id": 2**32 + 1, "connect": CONNECT_OK})]),
    "connect-flag-2^63": (False, [json.dumps({"id": 1, "connect": {**CONNECT_OK, "flag": 2**63}})]),
    "connect-subs-offset-2^64": (
        False,
        [json.dumps({"id": 1, "connect": {**CONNECT_OK, "subs": {"news:x": {"offset": 2**64}}}})],
    ),
    "subscribe-offset-negative": (True, ['{"id":2,"subscribe":{"channel":"news:x","offset":-1}}']),
    "subscribe-offset-2^64": (
        True,
        ['{"id":2,"subscribe":{"channel":"news:x","offset":18446744073709551616}}'],
    ),
    "subscribe-flag-2^63": (
        True,
        ['{"id":2,"subscribe":{"channel":"chat:x","flag":9223372036854775808}}'],
    ),
    "subscribe-type-2^31": (True, ['{"id":2,"subscribe":{"channel":"chat:x","type":2147483648}}']),
    "history-limit-2^31": (True, ['{"id":2,"history":{"channel":"news:x","limit":2147483648}}']),
    "history-limit-below-int32": (
        True,
        ['{"id":2,"history":{"channel":"news:x","limit":-2147483649}}'],
    ),
    "history-since-offset-2^64": (
        True,
        ['{"id":2,"history":{"channel":"news:x","since":{"offset":18446744073709551616}}}'],
    ),
}


@pytest.mark.parametrize(("connect_first", "frames"), VIOLATIONS.values(), ids=VIOLATIONS)
async def test_protocol_violation_closes_3501(
    server: ServerFactory, connect_first: bool, frames: list[str]
) -> None:
    env = server()
    async with RawClient.open(env) as client:
        if connect_first:
            await client.connect(CONNECT_OK["token"])
        for frame in frames:
            await client.send_raw(frame)
        await assert_closed(client, 3501, "bad request")
    await assert_healthy(env)


async def test_connect_and_subscribe_in_one_frame_is_not_a_violation(
    server: ServerFactory,
) -> None:
    """JS batches connect + subscribe in one frame (spec §1.5, §10.9)."""
    env = server()
    async with RawClient.open(env) as client:
        await client.send(
            {"id": 1, "connect": CONNECT_OK}, {"id": 2, "subscribe": {"channel": "news:batch"}}
        )
        connect = await client.message()
        assert connect["id"] == 1
        assert "connect" in connect
        subscribe = await client.reply(2)
        assert subscribe["subscribe"]["recoverable"] is True
    await assert_healthy(env)


async def test_integer_fields_at_the_edges_of_their_range(server: ServerFactory) -> None:
    """What Go's decoder accepts goes through: the largest uint32 id is echoed, and any
    int32 history limit is taken (a negative one means everything, capped as usual)."""
    env = server()
    for n in range(1, 4):
        await env.srv.acall(env.node.publish("news:edges", {"n": n}))
    async with RawClient.open(env) as client:
        await client.connect(CONNECT_OK["token"])
        await client.send({"id": 4294967295, "rpc": {"method": "whoami"}})
        assert await client.reply(4294967295) == {
            "id": 4294967295,
            "rpc": {"data": {"user": "u1"}},
        }
        assert "subscribe" in await client.call("subscribe", {"channel": "news:edges"})
        for limit, expected in ((-5, [1, 2, 3]), (-(2**31), [1, 2, 3]), (2**31 - 1, [1, 2, 3])):
            reply = await client.call("history", {"channel": "news:edges", "limit": limit})
            assert [p["data"]["n"] for p in reply["history"]["publications"]] == expected
        sub = {"channel": "chat:edges", "flag": -(2**63), "type": 0, "offset": 2**64 - 1}
        assert await client.call("subscribe", sub) == {"id": 6, "subscribe": {}}
    await assert_healthy(env)


@pytest.mark.parametrize("engine", ["memory", "redis"])
async def test_recovery_from_an_offset_past_the_top(server: ServerFactory, engine: str) -> None:
    """Any uint64 is an offset a client may hold: recovering from far past the top (1e14
    prints in exponent form in Lua; 2**64 - 1 is past any list index) is not recovered,
    with the current position, not an internal error; history since it is empty."""
    config = make_config()
    if engine == "redis":
        try:
            socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        except OSError:
            unavailable("Redis is not running at 127.0.0.1:6379")
        block = {"address": "127.0.0.1:6379", "prefix": f"test-{os.urandom(5).hex()}"}
        config["engine"] = {"type": "redis", "redis": block}
    env = server(config=config)
    async with RawClient.open(env) as client:
        await client.connect(CONNECT_OK["token"])
        epoch = (await client.call("subscribe", {"channel": "news:far"}))["subscribe"]["epoch"]
        await client.call("unsubscribe", {"channel": "news:far"})
        for n in (1, 2):
            await env.srv.acall(env.node.publish("news:far", {"n": n}))
        for offset in (10**14, 2**64 - 1):
            params = {"channel": "news:far", "recover": True, "offset": offset, "epoch": epoch}
            reply = (await client.call("subscribe", params))["subscribe"]
            assert reply == {
                "recoverable": True,
                "epoch": epoch,
                "offset": 2,
                "positioned": True,
                "was_recovering": True,
            }
            since = {"offset": offset, "epoch": epoch}
            reply = await client.call("history", {"channel": "news:far", "since": since})
            assert reply["history"] == {"publications": [], "offset": 2, "epoch": epoch}
            await client.call("unsubscribe", {"channel": "news:far"})
    await assert_healthy(env)


# -------------------------------------------------------------------------- frame size


def _rpc_frame(cmd_id: int, size: int) -> str:
    """A valid RPC command of exactly ``size`` bytes."""
    base = json.dumps({"id": cmd_id, "rpc": {"method": "whoami", "data": {"pad": ""}}})
    frame = base.replace('"pad": ""', '"pad": "' + "x" * (size - len(base)) + '"')
    assert len(frame.encode()) == size
    return frame


@pytest.mark.parametrize("limit", [None, 1024], ids=["default-65536", "configured-1024"])
async def test_oversized_frame_closes_1009(server: ServerFactory, limit: int | None) -> None:
    config = make_config()
    if limit is not None:
        config["websocket"] = {"message_size_limit": limit}
    env = server(config=config)
    size = limit or 65536
    async with RawClient.open(env) as client:
        await client.connect(CONNECT_OK["token"])
        # exactly at the limit: accepted
        await client.send_raw(_rpc_frame(2, size))
        assert await client.reply(2) == {"id": 2, "rpc": {"data": {"user": "u1"}}}
        # one byte over: closed with 1009 (reason text is not part of the contract)
        await client.send_raw(_rpc_frame(3, size + 1))
        code, _ = await client.closed()
        assert code == 1009
    await assert_healthy(env)


# --------------------------------------------------------------------------- JWT abuse


def _forged() -> str:
    return connection_token("u1", "not-" + SECRET)


def _alg_none() -> str:
    return _jwt({"alg": "none", "typ": "JWT"}, {"sub": "u1", "exp": int(time.time()) + 3600})


def _tampered() -> str:
    header, _, signature = token("u1").split(".")
    claims = _b64(json.dumps({"sub": "admin", "exp": int(time.time()) + 3600}).encode())
    return f"{header}.{claims}.{signature}"


INVALID_TOKENS: dict[str, Callable[[], str]] = {
    "forged-signature": _forged,
    "alg-none": _alg_none,
    "tampered-payload": _tampered,
    "not-a-jwt": lambda: "not-a-jwt",
    "channel-claim": lambda: token("u1", channel="chat:x"),
}


@pytest.mark.parametrize("make_token", INVALID_TOKENS.values(), ids=INVALID_TOKENS)
async def test_invalid_token_closes_3500(
    server: ServerFactory, make_token: Callable[[], str]
) -> None:
    env = server()
    async with RawClient.open(env) as client:
        await client.send({"id": 1, "connect": {"token": make_token()}})
        await assert_closed(client, 3500, "invalid token")
    assert await env.num_clients() == 0
    await assert_healthy(env)


EXPIRED_TOKENS: dict[str, Callable[[], str]] = {
    "exp-in-past": lambda: token("u1", ttl=-60),
    "nbf-in-future": lambda: token("u1", nbf=int(time.time()) + 3600),
}


@pytest.mark.parametrize("make_token", EXPIRED_TOKENS.values(), ids=EXPIRED_TOKENS)
async def test_expired_token_gets_error_109(
    server: ServerFactory, make_token: Callable[[], str]
) -> None:
    env = server()
    async with RawClient.open(env) as client:
        await client.send({"id": 1, "connect": {"token": make_token()}})
        assert await client.message() == {
            "id": 1,
            "error": {"code": 109, "message": "token expired"},
        }
    await assert_healthy(env)


async def test_anonymous_connect_when_allowed(server: ServerFactory) -> None:
    env = server(allow_anonymous_connect_without_token=True)
    async with RawClient.open(env) as client:
        result = await client.connect(None)
        assert result["client"]
        assert await client.call("rpc", {"method": "whoami"}) == {
            "id": 2,
            "rpc": {"data": {"user": ""}},
        }
    await assert_healthy(env)


# ----------------------------------------------------------------- channel permissions


CHANNEL_ERRORS: dict[str, tuple[str, str, int, str]] = {
    # case: (method, channel, code, message)
    "secret-namespace": ("subscribe", "secret:x", 103, "permission denied"),
    "unknown-namespace": ("subscribe", "nope:x", 102, "unknown channel"),
    "private-without-token": ("subscribe", "$private", 103, "permission denied"),
    "too-long": ("subscribe", "chat:" + "a" * 251, 107, "bad request"),
    "non-ascii": ("subscribe", "chat:caf\u00e9", 107, "bad request"),
    "history-off": ("history", "chat:x", 108, "not available"),
    "presence-off": ("presence", "tiny:x", 108, "not available"),
    "presence-stats-off": ("presence_stats", "tiny:x", 108, "not available"),
    "publish-unknown-namespace": ("publish", "nope:x", 102, "unknown channel"),
    "publish-secret": ("publish", "secret:x", 103, "permission denied"),
}


@pytest.mark.parametrize(
    ("method", "channel", "code", "message"), CHANNEL_ERRORS.values(), ids=CHANNEL_ERRORS
)
async def test_channel_error_reply_keeps_connection(
    server: ServerFactory, method: str, channel: str, code: int, message: str
) -> None:
    env = server()
    async with RawClient.open(env) as client:
        await client.connect(CONNECT_OK["token"])
        params: Frame = {"channel": channel}
        if method == "publish":
            params["data"] = {"x": 1}
        assert await client.call(method, params) == {
            "id": 2,
            "error": {"code": code, "message": message},
        }
        # the connection stays usable
        assert await client.call("rpc", {"method": "whoami"}) == {
            "id": 3,
            "rpc": {"data": {"user": "u1"}},
        }
        assert await client.call("subscribe", {"channel": "news:after-error"}) == {
            "id": 4,
            "subscribe": await _subscribe_result(env, "news:after-error"),
        }
    await assert_healthy(env)


async def _subscribe_result(env: Env, channel: str) -> Frame:
    """The expected subscribe result of a fresh ``news:`` channel (force_recovery)."""
    page = await env.srv.acall(env.node.history(channel))
    return {"recoverable": True, "epoch": page.epoch, "positioned": True}


async def test_channel_of_max_length_is_accepted(server: ServerFactory) -> None:
    env = server()
    channel = "chat:" + "a" * 250
    assert len(channel) == 255
    async with RawClient.open(env) as client:
        await client.connect(CONNECT_OK["token"])
        assert await client.call("subscribe", {"channel": channel}) == {
            "id": 2,
            "subscribe": {},
        }
    await assert_healthy(env)


async def test_already_subscribed_105(server: ServerFactory) -> None:
    env = server()
    async with RawClient.open(env) as client:
        await client.connect(CONNECT_OK["token"])
        assert await client.call("subscribe", {"channel": "chat:dup"}) == {
            "id": 2,
            "subscribe": {},
        }
        assert await client.call("subscribe", {"channel": "chat:dup"}) == {
            "id": 3,
            "error": {"code": 105, "message": "already subscribed"},
        }
        assert await client.call("presence_stats", {"channel": "chat:dup"}) == {
            "id": 4,
            "presence_stats": {"num_clients": 1, "num_users": 1},
        }
    await assert_healthy(env)


async def test_client_channel_limit_106(server: ServerFactory) -> None:
    env = server(channel_limit=2)
    async with RawClient.open(env) as client:
        await client.connect(CONNECT_OK["token"])
        for cmd_id, channel in ((2, "chat:l1"), (3, "chat:l2")):
            assert await client.call("subscribe", {"channel": channel}) == {
                "id": cmd_id,
                "subscribe": {},
            }
        assert await client.call("subscribe", {"channel": "chat:l3"}) == {
            "id": 4,
            "error": {"code": 106, "message": "limit exceeded"},
        }
        # freeing a slot makes room again
        assert await client.call("unsubscribe", {"channel": "chat:l1"}) == {
            "id": 5,
            "unsubscribe": {},
        }
        assert await client.call("subscribe", {"channel": "chat:l3"}) == {
            "id": 6,
            "subscribe": {},
        }
    await assert_healthy(env)


async def test_unsubscribe_not_subscribed_succeeds(server: ServerFactory) -> None:
    env = server()
    async with RawClient.open(env) as client:
        await client.connect(CONNECT_OK["token"])
        assert await client.call("unsubscribe", {"channel": "chat:never"}) == {
            "id": 2,
            "unsubscribe": {},
        }
        assert await client.call("unsubscribe", {"channel": "nope:unknown-ns"}) == {
            "id": 3,
            "unsubscribe": {},
        }
    await assert_healthy(env)


# ------------------------------------------------------------------ timers and limits


async def test_stale_connection_closes_3502(server: ServerFactory) -> None:
    env = server(stale_close_delay="1s")
    async with RawClient.open(env) as client:
        started = time.monotonic()
        await assert_closed(client, 3502, "stale")
        elapsed = time.monotonic() - started
    assert 0.8 <= elapsed <= 2.5, elapsed
    await assert_healthy(env)


async def test_no_pong_closes_3012(server: ServerFactory) -> None:
    env = server(ping_interval="1s", pong_timeout="500ms")
    async with RawClient.open(env) as client:
        result = await client.connect(CONNECT_OK["token"])
        assert (result["ping"], result["pong"]) == (1, True)
        started = time.monotonic()
        await assert_closed(client, 3012, "no pong")
        elapsed = time.monotonic() - started
        assert {} in client.received, "a ping must precede the no-pong close"
    assert 1.0 <= elapsed <= 3.0, elapsed
    await eventually(env.disconnect_codes, [("u1", 3012)])
    await assert_healthy(env)


async def test_user_connection_limit_3504(server: ServerFactory) -> None:
    env = server(user_connection_limit=1)
    async with RawClient.open(env) as first:
        await first.connect(token("limited"))
        async with RawClient.open(env) as second:
            await second.send({"id": 1, "connect": {"token": token("limited")}})
            await assert_closed(second, 3504, "connection limit")
        # the first connection is untouched
        assert await first.call("rpc", {"method": "whoami"}) == {
            "id": 2,
            "rpc": {"data": {"user": "limited"}},
        }
        # another user is not limited by it
        async with RawClient.open(env) as other:
            assert (await other.connect(token("someone-else")))["client"]
    await assert_healthy(env)


# ------------------------------------------------------------------------------ origin


async def _handshake_status(env: Env, origin: str | None) -> int:
    """101 when the upgrade is accepted (and a connect works), else the HTTP status."""
    kwargs: dict[str, Any] = {} if origin is None else {"origin": origin}
    try:
        async with RawClient.open(env, **kwargs) as client:
            assert (await client.connect(CONNECT_OK["token"]))["client"]
            return 101
    except websockets.InvalidStatus as exc:
        return exc.response.status_code


async def test_origin_empty_allow_list(server: ServerFactory) -> None:
    env = server(allowed_origins=[])
    same_host = f"http://127.0.0.1:{env.srv.port}"
    assert await _handshake_status(env, "http://evil.example") == 403
    assert await _handshake_status(env, same_host) == 101
    assert await _handshake_status(env, None) == 101
    await assert_healthy(env)


async def test_origin_allow_list(server: ServerFactory) -> None:
    env = server(allowed_origins=["http://good.example"])
    assert await _handshake_status(env, "http://good.example") == 101
    assert await _handshake_status(env, "HTTP://GOOD.EXAMPLE") == 101
    assert await _handshake_status(env, "http://evil.example") == 403
    assert await _handshake_status(env, "http://good.example.evil.example") == 403
    await assert_healthy(env)


# ------------------------------------------------- every connection endpoint: admission

ENDPOINTS = ["websocket", "http_stream", "sse", "uni_websocket", "uni_sse", "uni_http_stream"]


def _every_transport(**client_overrides: Any) -> dict[str, Any]:
    cfg = make_config(**client_overrides)
    for kind in ENDPOINTS[1:]:
        cfg[kind] = {"enabled": True}
    return cfg


async def _open_status(env: Env, kind: str, origin: str | None) -> int:
    """Open a connection on ``/connection/<kind>`` with this Origin and connect.

    An accepted connection must deliver its connect reply (or Connect push); the answer is
    then 101 for a WebSocket and 200 for an HTTP stream. A refusal gives its HTTP status.
    """
    path = f"/connection/{kind}"
    headers = {} if origin is None else {"origin": origin}
    bidirectional = kind in ("websocket", "http_stream", "sse")
    request = json.dumps({"id": 1, "connect": CONNECT_OK} if bidirectional else CONNECT_OK)

    def connected(message: str) -> bool:  # a connect reply or a Connect push
        return "connect" in json.loads(message)

    if kind in ("websocket", "uni_websocket"):
        try:
            async with websockets.connect(
                env.srv.ws_url(path), origin=origin, open_timeout=TIMEOUT, proxy=None
            ) as ws:
                await ws.send(request)
                with anyio.fail_after(TIMEOUT):
                    first = await ws.recv()
                assert isinstance(first, str) and connected(first), first
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        if kind in ("sse", "uni_sse"):
            req = http.build_request(
                "GET", env.srv.url(path), params={"cf_connect": request}, headers=headers
            )
        else:
            req = http.build_request("POST", env.srv.url(path), content=request, headers=headers)
        response = await http.send(req, stream=True)
        try:
            if response.status_code == 200:
                with anyio.fail_after(TIMEOUT):
                    async for line in response.aiter_lines():
                        line = line.removeprefix("data: ")
                        if line.strip():
                            assert connected(line), line
                            break
            return response.status_code
        finally:
            await response.aclose()


ACCEPTED = {kind: 101 if kind.endswith("websocket") else 200 for kind in ENDPOINTS}


@pytest.mark.parametrize("kind", ENDPOINTS)
async def test_origin_refused_on_every_endpoint(server: ServerFactory, kind: str) -> None:
    env = server(config=_every_transport(allowed_origins=["http://good.example"]))
    assert await _open_status(env, kind, "http://evil.example") == 403
    assert await _open_status(env, kind, "http://good.example") == ACCEPTED[kind]
    assert await _open_status(env, kind, None) == ACCEPTED[kind]  # not a browser
    await eventually(env.num_clients, 0)
    await assert_healthy(env)


@pytest.mark.parametrize("kind", ENDPOINTS)
async def test_no_new_connections_during_shutdown(server: ServerFactory, kind: str) -> None:
    env = server(config=_every_transport())
    assert await _open_status(env, kind, None) == ACCEPTED[kind]
    async with RawClient.open(env) as client:
        await client.connect(CONNECT_OK["token"])
        await env.srv.acall(env.node.shutdown(grace=0))
        await assert_closed(client, 3001, "shutdown")
    assert await _open_status(env, kind, None) == 503
    await eventually(env.num_clients, 0)


# ------------------------------------------------------------------------ slow consumer


def _kernel_send_buffer_max() -> int:
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 << 20


async def test_slow_consumer_is_dropped_and_others_get_everything(
    server: ServerFactory,
) -> None:
    """reliability.md a5 / B3 #22: 64 KiB queue, a reader that stops, 4 KiB publications.

    Loopback TCP buffers absorb megabytes before the server's writes block (the
    server-side send buffer autotunes up to ``tcp_wmem`` max), so the publication count
    is sized past that (3000 x 4 KiB, the reference's own numbers, on a 4 MiB default).
    """
    env = server(queue_max_size=65536)
    channel = "chat:slow"
    pad_bytes = 2048  # hex-encoded: 4 KiB of data per publication
    count = max(3000, (_kernel_send_buffer_max() * 3) // (2 * pad_bytes))

    # A: a tiny receive buffer and no reading at all once subscribed
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", env.srv.port))  # loopback: immediate
    sock.setblocking(False)
    async with (
        RawClient.open(env, sock=sock, max_queue=1) as slow,
        RawClient.open(env) as fast,
    ):
        await slow.connect(token("slow"))
        assert await slow.call("subscribe", {"channel": channel}) == {"id": 2, "subscribe": {}}
        await fast.connect(token("fast"))
        assert await fast.call("subscribe", {"channel": channel}) == {"id": 2, "subscribe": {}}
        assert await env.subscribers(channel) == 2

        async def publish_all() -> tuple[float, float]:
            started = time.monotonic()
            slowest = 0.0
            for i in range(count):
                before = time.monotonic()
                await env.node.publish(channel, {"i": i, "pad": os.urandom(pad_bytes).hex()})
                slowest = max(slowest, time.monotonic() - before)
                await anyio.lowlevel.checkpoint()  # a well-behaved publisher yields
            return time.monotonic() - started, slowest

        received: list[int] = []

        async def read_fast() -> None:
            while len(received) < count:
                msg = await fast.message()
                pub = msg.get("push", {}).get("pub")
                if pub is not None:
                    received.append(pub["data"]["i"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_fast)
            total, slowest = await env.srv.acall(publish_all())
        # publishing never waited for the slow client: a publish that did would take the
        # 1 s websocket write timeout or forever (acall bounds the whole run to 10 s)
        assert slowest < 1.0, (slowest, total)
        # the normal reader got everything, in order
        assert received == list(range(count))

        # the slow client is dropped and the channel released within a bounded time
        await eventually(env.num_clients, 1)
        assert await env.subscribers(channel) == 1
        await eventually(env.disconnect_codes, [("slow", 3008)])

        # its socket ends (what was already in flight drains first); if a close frame
        # makes it through at all, it carries 3008 or 3009 (a5: a stopped reader may
        # never see it, so its absence is not a failure)
        with anyio.fail_after(2 * TIMEOUT):
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await slow.ws.recv()
        close = slow.ws.protocol.close_rcvd
        assert close is None or close.code in (3008, 3009), close

        # the fast client is still fine
        assert await fast.call("rpc", {"method": "whoami"}) == {
            "id": 3,
            "rpc": {"data": {"user": "fast"}},
        }
    await assert_healthy(env)
