"""``client.concurrency``: commands of one connection overtaking each other.

Centrifugo runs subscribe, publish, presence, presence_stats, history, rpc, refresh and
sub_refresh of one connection in goroutines of their own when ``client.concurrency`` > 1,
at most that many at once, the reader waiting for a free slot; replies are matched by id.
The official SDKs (centrifuge-js over WebSocket, HTTP-streaming and SSE, JSON and
Protobuf; centrifuge-python) issue a slow RPC and then a fast one; a raw client counts the
handlers in flight, watches the reader wait, and closes the socket under running handlers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import websockets
from centrifuge import Client

from centrifuge_asgi.handlers import RPCEvent, SubscribeEvent, SubscribeReply
from centrifuge_asgi.node import Node
from tests import conditions

from .support import WS_PATH, make_config, make_node, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory, RunJs

pytestmark = pytest.mark.interop

TIMEOUT = 5.0
SLOW_WAIT = 1.0  # how long "slow" waits for "fast" before it answers anyway
Frame = dict[str, Any]


@dataclass
class Probe:
    """Server-side bookkeeping of the test handlers (they run on the server's loop)."""

    in_flight: int = 0
    max_in_flight: int = 0
    started: int = 0
    cancelled: int = 0
    fast_ran: anyio.Event | None = None
    release: anyio.Event | None = None
    order: list[str] = field(default_factory=list)


def concurrent_node(concurrency: int, **config: Any) -> tuple[Node, Probe]:
    """A node whose ``slow`` RPC waits (bounded) for ``fast``, and whose ``hold`` RPC and
    ``secret:*`` subscribe handler wait until the test releases them."""
    cfg = make_config(concurrency=concurrency)
    cfg.update(config)
    node = make_node(cfg)
    probe = Probe()

    @node.on_rpc("slow")
    async def slow(event: RPCEvent) -> Any:
        probe.fast_ran = probe.fast_ran or anyio.Event()
        with anyio.move_on_after(SLOW_WAIT):
            await probe.fast_ran.wait()
        return {"overlapped": probe.fast_ran.is_set()}

    @node.on_rpc("fast")
    async def fast(event: RPCEvent) -> Any:
        if probe.fast_ran is not None:
            probe.fast_ran.set()
        return {"fast": True}

    async def held(what: str) -> None:
        probe.release = probe.release or anyio.Event()
        probe.started += 1
        probe.in_flight += 1
        probe.max_in_flight = max(probe.max_in_flight, probe.in_flight)
        try:
            with anyio.fail_after(TIMEOUT):
                await probe.release.wait()
            probe.order.append(what)
        except anyio.get_cancelled_exc_class():
            probe.cancelled += 1
            raise
        finally:
            probe.in_flight -= 1

    @node.on_rpc("hold")
    async def hold(event: RPCEvent) -> Any:
        await held(f"rpc {event.data['n']}")
        return {"n": event.data["n"]}

    @node.on_subscribe
    async def on_subscribe(event: SubscribeEvent) -> SubscribeReply:
        await held(f"subscribe {event.channel}")
        return SubscribeReply()

    return node, probe


# ------------------------------------------------------------------------------ the SDKs


@pytest.mark.parametrize(
    ("transport", "protobuf"),
    [("websocket", False), ("websocket", True), ("http_stream", True), ("sse", False)],
)
@pytest.mark.parametrize("concurrency", [0, 4])
def test_js_fast_rpc_overtakes_slow_one(
    live_server: LiveServerFactory,
    run_js: RunJs,
    transport: str,
    protobuf: bool,
    concurrency: int,
) -> None:
    node, _ = concurrent_node(concurrency, http_stream={"enabled": True}, sse={"enabled": True})
    srv = live_server(node.asgi_app())
    args = [srv.http_url, token("u1"), transport] + (["protobuf"] if protobuf else [])
    result = run_js("sdk_concurrency.mjs", *args, timeout=15)
    if concurrency > 1:
        expected = [["fast", {"fast": True}], ["slow", {"overlapped": True}]]
    else:  # one command at a time: "fast" waits until "slow" gave up waiting for it
        expected = [["slow", {"overlapped": False}], ["fast", {"fast": True}]]
    assert result == {"order": expected}


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [0, 4])
async def test_python_sdk_fast_rpc_overtakes_slow_one(
    live_server: LiveServerFactory, concurrency: int
) -> None:
    node, _ = concurrent_node(concurrency)
    srv = live_server(node.asgi_app())
    client = Client(srv.ws_url(WS_PATH), token=token("u1"), timeout=TIMEOUT)
    order: list[tuple[str, Any]] = []

    async def call(method: str) -> None:
        result = await client.rpc(method, {})
        order.append((method, result.data))

    try:
        with anyio.fail_after(TIMEOUT):
            await client.connect()
            await client.ready()
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "slow")
                await anyio.sleep(0.05)  # the SDK writes "slow" first
                tg.start_soon(call, "fast")
    finally:
        await client.disconnect()
    if concurrency > 1:
        assert order == [("fast", {"fast": True}), ("slow", {"overlapped": True})]
    else:
        assert order == [("slow", {"overlapped": False}), ("fast", {"fast": True})]


# ------------------------------------------------------------------------- a raw client


class RawClient:
    """JSON over WebSocket: commands out, replies collected by id."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.replies: list[Frame] = []

    async def send(self, *commands: Frame) -> None:
        await self.ws.send("\n".join(json.dumps(c) for c in commands))

    async def read(self, count: int) -> list[Frame]:
        """The next ``count`` replies that carry an id (pings skipped)."""
        got: list[Frame] = []
        with anyio.fail_after(TIMEOUT):
            while len(got) < count:
                frame = await self.ws.recv()
                assert isinstance(frame, str)
                got += [m for line in frame.split("\n") if (m := json.loads(line)).get("id")]
        self.replies += got
        return got


@asynccontextmanager
async def raw_client(srv: LiveServer) -> AsyncIterator[RawClient]:
    async with websockets.connect(srv.ws_url(WS_PATH)) as ws:
        client = RawClient(ws)
        await client.send({"id": 1, "connect": {"token": token("u1")}})
        assert "connect" in (await client.read(1))[0]
        yield client


async def until(check: Callable[[], bool], what: str) -> None:
    """Poll server-side state (``what`` names it in a failure) for up to TIMEOUT."""
    await conditions.until(check, TIMEOUT, every=0.01, what=what)


def hold(cmd_id: int) -> Frame:
    return {"id": cmd_id, "rpc": {"method": "hold", "data": {"n": cmd_id}}}


@pytest.mark.anyio
async def test_limit_bounds_handlers_and_the_reader_waits(live_server: LiveServerFactory) -> None:
    node, probe = concurrent_node(3)
    srv = live_server(node.asgi_app())

    async def release() -> None:
        assert probe.release is not None
        probe.release.set()

    async with raw_client(srv) as client:
        await client.send(*(hold(n) for n in range(2, 10)))  # eight RPCs in one frame
        await until(lambda: probe.in_flight == 3, "three handlers running")
        await anyio.sleep(0.2)
        assert (probe.started, probe.in_flight) == (3, 3)  # the other five wait for a slot
        await srv.acall(release())  # from now on every handler returns at once
        replies = await client.read(8)
    assert sorted(r["id"] for r in replies) == list(range(2, 10))
    assert all(r["rpc"]["data"] == {"n": r["id"]} for r in replies)
    assert (probe.started, probe.max_in_flight, probe.cancelled) == (8, 3, 0)


@pytest.mark.anyio
async def test_default_runs_one_command_at_a_time(live_server: LiveServerFactory) -> None:
    node, probe = concurrent_node(0)
    srv = live_server(node.asgi_app())

    async def release() -> None:
        assert probe.release is not None
        probe.release.set()
        probe.release = None

    async with raw_client(srv) as client:
        await client.send(hold(2), hold(3), hold(4))
        for n in (2, 3, 4):
            await until(lambda: probe.in_flight == 1, "one handler running")
            await srv.acall(release())
            assert [r["id"] for r in await client.read(1)] == [n]
    assert probe.max_in_flight == 1


@pytest.mark.anyio
async def test_closing_the_socket_cancels_running_commands(
    live_server: LiveServerFactory,
) -> None:
    node, probe = concurrent_node(4)
    srv = live_server(node.asgi_app())
    async with raw_client(srv) as client:
        await client.send(hold(2), hold(3), {"id": 4, "subscribe": {"channel": "secret:a"}})
        await until(lambda: probe.in_flight == 3, "three handlers running")
    await until(lambda: probe.cancelled == 3, "handlers cancelled")
    assert probe.order == []
    await until(lambda: node.registry.num_clients == 0, "session released")


@pytest.mark.anyio
async def test_subscribe_in_flight_is_reserved(live_server: LiveServerFactory) -> None:
    """A second subscribe of a channel whose subscribe runs gets 105; an unsubscribe of it
    waits for the subscribe, then removes the subscription (as Centrifugo's wait-gate)."""
    node, probe = concurrent_node(4)
    srv = live_server(node.asgi_app())

    async def release() -> None:
        assert probe.release is not None
        probe.release.set()

    async with raw_client(srv) as client:
        await client.send({"id": 2, "subscribe": {"channel": "secret:a"}})
        await until(lambda: probe.in_flight == 1, "subscribe handler running")
        await client.send(
            {"id": 3, "subscribe": {"channel": "secret:a"}},
            {"id": 4, "unsubscribe": {"channel": "secret:a"}},
        )
        (refused,) = await client.read(1)
        assert refused == {"id": 3, "error": {"code": 105, "message": "already subscribed"}}
        await srv.acall(release())
        subscribed, unsubscribed = await client.read(2)
        assert (subscribed["id"], "subscribe" in subscribed) == (2, True)
        assert unsubscribed == {"id": 4, "unsubscribe": {}}
        await client.send({"id": 5, "presence_stats": {"channel": "secret:a"}})
        await client.read(1)
    assert not node.registry.has_subscribers("secret:a")


@pytest.mark.anyio
async def test_server_disconnect_cancels_running_commands(live_server: LiveServerFactory) -> None:
    """The server closes the connection (the writer stops the reader, which waits for a
    frame while the commands run in their tasks): the commands are cancelled too."""
    node, probe = concurrent_node(4)
    srv = live_server(node.asgi_app())
    async with raw_client(srv) as client:
        await client.send(hold(2), hold(3))
        await until(lambda: probe.in_flight == 2, "two handlers running")
        await srv.acall(node.disconnect("u1"))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.read(1)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 3503
    await until(lambda: probe.cancelled == 2, "handlers cancelled")
    await until(lambda: node.registry.num_clients == 0, "session released")
    assert probe.order == []


@pytest.mark.anyio
async def test_http_stream_closing_cancels_running_commands(
    live_server: LiveServerFactory,
) -> None:
    """HTTP-streaming: commands posted to /emulation run concurrently on the stream's
    session; the client closing the stream cancels them."""
    node, probe = concurrent_node(4, http_stream={"enabled": True})
    srv = live_server(node.asgi_app())
    connect = json.dumps({"id": 1, "connect": {"token": token("u1")}})
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        http.stream("POST", srv.url("/connection/http_stream"), content=connect) as response,
    ):
        lines = response.aiter_lines()
        with anyio.fail_after(TIMEOUT):
            result = json.loads(await anext(lines))["connect"]
        body = {
            "session": result["session"],
            "node": result["node"],
            "data": "\n".join(
                json.dumps(c) for c in (hold(2), hold(3), {"id": 4, "rpc": {"method": "fast"}})
            ),
        }
        assert (await http.post(srv.url("/emulation"), json=body)).status_code == 204
        with anyio.fail_after(TIMEOUT):
            assert json.loads(await anext(lines)) == {"id": 4, "rpc": {"data": {"fast": True}}}
        await until(lambda: probe.in_flight == 2, "two handlers running")
    await until(lambda: probe.cancelled == 2, "handlers cancelled")
    await until(lambda: node.registry.num_clients == 0, "session released")
