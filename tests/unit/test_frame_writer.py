"""The WebSocket write path: the node's flusher, inline sends and stalled sends.

The endpoint is driven at the ASGI level with scripted ``receive``/``send`` callables,
so a send can be made to stall exactly as uvicorn's does while a socket is not draining.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from centrifuge_asgi import DisconnectEvent, Node
from centrifuge_asgi.codes import DisconnectCode
from centrifuge_asgi.flusher import Flusher, Resumed, step
from centrifuge_asgi.transports.app import NodeApp
from centrifuge_asgi.transports.http_common import RequestHeaders
from centrifuge_asgi.transports.websocket import WebSocketEndpoint
from tests import conditions
from tests.interop.support import make_config, token

pytestmark = pytest.mark.anyio

CHANNEL = "chat:w"


class FakeSocket:
    """One ASGI WebSocket connection: scripted frames in, recorded messages out.

    While ``paused`` is set, a ``websocket.send`` waits, like uvicorn's send on a
    transport whose buffer is full.
    """

    def __init__(self, guarded: bool = False) -> None:
        self.guarded = guarded  # the send enters a timeout and a cancel scope, then waits
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.incoming.put_nowait({"type": "websocket.connect"})
        self.ended = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None  # the connection's handler task
        self.raise_cancelled = False  # the send fails with a CancelledError of its own
        self.swallow_cancels = 0  # how many cancellations a waiting send absorbs
        self.cancelled_sends = 0  # sends that ended by a cancellation

    def frame(self, **command: Any) -> None:
        self.incoming.put_nowait({"type": "websocket.receive", "text": json.dumps(command)})

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: dict[str, Any]) -> None:
        if not self.guarded:
            await self._send(message)
            return
        async with asyncio.timeout(5):
            with anyio.fail_after(5):
                await self._send(message)

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            while not self.writable.is_set():
                try:
                    await self.writable.wait()
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self.swallow_cancels <= 0 or task is None:
                        self.cancelled_sends += 1
                        raise
                    self.swallow_cancels -= 1
                    task.uncancel()
            if self.raise_cancelled:
                raise asyncio.CancelledError  # e.g. a future of the server's, cancelled
        self.sent.append(message)

    def pushes(self) -> list[int]:
        """The ``i`` of every publication received, in order, across frames."""
        out: list[int] = []
        for m in self.sent:
            for line in m.get("text", "").splitlines():
                pub = json.loads(line).get("push", {}).get("pub")
                if pub is not None:
                    out.append(pub["data"]["i"])
        return out

    def close_code(self) -> int | None:
        closes = [m["code"] for m in self.sent if m["type"] == "websocket.close"]
        assert len(closes) <= 1, self.sent
        return closes[0] if closes else None


SCOPE = {"type": "websocket", "path": "/connection/websocket", "headers": [], "query_string": b""}


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    config = make_config()
    config["websocket"] = {"write_timeout": "300ms"}
    async with Node(config) as n:
        yield n


async def open_socket(node: Node, tg: Any, user: str, guarded: bool = False) -> FakeSocket:
    sock = FakeSocket(guarded)
    endpoint = WebSocketEndpoint(node)

    async def run() -> None:
        sock.task = asyncio.current_task()
        try:
            await endpoint(dict(SCOPE), sock.receive, sock.send)
        finally:
            sock.ended.set()

    tg.start_soon(run)
    sock.frame(id=1, connect={"token": token(user)})
    sock.frame(id=2, subscribe={"channel": CHANNEL})
    with anyio.fail_after(5):
        await until(lambda: len(sock.sent) >= 2)
    return sock


until = functools.partial(conditions.until, within=2, every=0.005)


async def test_a_stalled_send_holds_up_no_one_and_loses_nothing(node: Node) -> None:
    async with anyio.create_task_group() as tg:
        fast = await open_socket(node, tg, "fast")
        slow = await open_socket(node, tg, "slow")
        slow.writable.clear()  # its socket stops draining
        for i in range(5):
            await node.publish(CHANNEL, {"i": i})
            await asyncio.sleep(0.01)
        assert fast.pushes() == [0, 1, 2, 3, 4]  # written while the other send waits
        assert slow.pushes() == []
        slow.writable.set()
        await until(lambda: slow.pushes() == [0, 1, 2, 3, 4])
        # the first frame was the stalled send; what queued behind it came as one frame
        frames = [m["text"] for m in slow.sent if '"pub"' in m.get("text", "")]
        assert [f.count('"pub"') for f in frames] == [1, 4]
        await node.publish(CHANNEL, {"i": 5})  # back on the inline path
        await asyncio.sleep(0.01)
        assert slow.pushes()[-1] == 5 and fast.pushes()[-1] == 5
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("guarded", [False, True], ids=["plain", "send-with-timeout"])
async def test_a_send_stalled_past_the_write_timeout_closes_with_3009(
    node: Node, guarded: bool
) -> None:
    async with anyio.create_task_group() as tg:
        fast = await open_socket(node, tg, "fast", guarded)
        slow = await open_socket(node, tg, "slow", guarded)
        slow.writable.clear()
        await node.publish(CHANNEL, {"i": 0})
        with anyio.fail_after(4):  # 0.3 s timeout, swept every second
            await slow.ended.wait()  # the reader was stopped and the session finished
        assert slow.close_code() is None  # nothing more is written to a stuck socket
        assert node.registry.num_clients == 1
        assert fast.pushes() == [0]
        await node.publish(CHANNEL, {"i": 1})  # the node and its flusher carry on
        await until(lambda: fast.pushes() == [0, 1])
        assert node.running
        tg.cancel_scope.cancel()


async def test_server_disconnect_sends_queued_replies_then_the_close(node: Node) -> None:
    async with anyio.create_task_group() as tg:
        sock = await open_socket(node, tg, "u1")
        await node.publish(CHANNEL, {"i": 0})
        await node.disconnect("u1")
        with anyio.fail_after(2):
            await sock.ended.wait()  # the idle reader was stopped
        assert sock.pushes() == [0]
        assert sock.close_code() == DisconnectCode.FORCE_DISCONNECT
        assert node.registry.num_clients == 0


async def test_peer_close_gets_no_close_frame_back(node: Node) -> None:
    async with anyio.create_task_group() as tg:
        sock = await open_socket(node, tg, "u1")
        sock.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        with anyio.fail_after(2):
            await sock.ended.wait()
        assert sock.close_code() is None
        assert node.registry.num_clients == 0


async def test_a_command_running_at_close_may_finish_first(node: Node) -> None:
    release = asyncio.Event()

    @node.on_rpc("m")
    async def slow_rpc(event: Any) -> Any:
        await node.disconnect("u1")
        await release.wait()  # goes on after its own user was disconnected
        return None

    async with anyio.create_task_group() as tg:
        sock = await open_socket(node, tg, "u1")
        sock.frame(id=3, rpc={"method": "m"})
        await until(lambda: sock.close_code() is not None)  # not held up by the command
        assert not sock.ended.is_set()
        release.set()
        with anyio.fail_after(2):
            await sock.ended.wait()


@pytest.mark.parametrize("stalled", [False, True], ids=["at-once", "after-stalling"])
async def test_a_cancelled_error_raised_by_a_send_fails_only_that_connection(
    node: Node, stalled: bool
) -> None:
    async with anyio.create_task_group() as tg:
        fast = await open_socket(node, tg, "fast")
        bad = await open_socket(node, tg, "bad")
        bad.raise_cancelled = True
        if stalled:
            bad.writable.clear()
        await node.publish(CHANNEL, {"i": 0})
        if stalled:
            await asyncio.sleep(0.02)
            bad.writable.set()
        with anyio.fail_after(3):
            await bad.ended.wait()
        await node.publish(CHANNEL, {"i": 1})  # the flusher and the node carry on
        await until(lambda: fast.pushes() == [0, 1])
        assert node.running and node.registry.num_clients == 1
        tg.cancel_scope.cancel()


async def test_the_session_is_released_when_the_handler_is_cancelled_while_closing(
    node: Node,
) -> None:
    """uvicorn's forced shutdown cancels handler tasks natively, through any shield."""
    async with anyio.create_task_group() as tg:
        sock = await open_socket(node, tg, "u1")
        sock.writable.clear()
        await node.publish(CHANNEL, {"i": 0})  # stalls in the flusher
        await asyncio.sleep(0.02)
        sock.incoming.put_nowait({"type": "websocket.receive", "text": "x" * 10})  # bad frame
        await asyncio.sleep(0.05)  # the handler now waits for the stalled send
        assert sock.task is not None and not sock.ended.is_set()
        sock.task.cancel()
        with anyio.fail_after(3):
            await sock.ended.wait()
        await until(lambda: node.registry.num_clients == 0)
        tg.cancel_scope.cancel()


async def test_a_cancelled_host_scope_still_closes_every_client_with_3001() -> None:
    """``async with node`` inside a scope that gets cancelled: the flusher and timers
    outlive that cancellation until the node has said goodbye."""
    node = Node(make_config())
    socks: list[FakeSocket] = []
    async with anyio.create_task_group() as clients:

        async def host() -> None:
            async with node:
                socks.append(await open_socket(node, clients, "u1"))
                await anyio.sleep_forever()

        async with anyio.create_task_group() as hosting:
            hosting.start_soon(host)
            await until(lambda: bool(socks))
            started = anyio.current_time()
            hosting.cancel_scope.cancel()
        assert anyio.current_time() - started < 2  # not the 5 s grace
        assert socks[0].close_code() == DisconnectCode.SHUTDOWN
        with anyio.fail_after(2):
            await socks[0].ended.wait()


async def test_flusher_writes_each_target_and_survives_a_failing_one() -> None:
    written: list[str] = []

    class Target:
        def __init__(self, name: str) -> None:
            self.name = name

        def flush(self) -> Resumed | None:
            if self.name == "bad":
                raise RuntimeError("boom")
            written.append(self.name)
            return None

        async def complete(self, stalled: Resumed) -> None:
            raise AssertionError("nothing stalls here")

    async with anyio.create_task_group() as tg:

        def spawn(fn: Any) -> bool:
            tg.start_soon(fn)
            return True

        flusher = Flusher(spawn)
        for name in ("a", "bad", "b"):
            flusher.schedule(Target(name))
        tg.start_soon(flusher.run)
        await until(lambda: written == ["a", "b"])
        flusher.schedule(Target("c"))  # wakes the idle task
        await until(lambda: written[-1] == "c")
        tg.cancel_scope.cancel()
    flusher.schedule(Target("d"))  # the flusher stopped: dropped, not kept
    assert written == ["a", "b", "c"]


async def test_step_runs_inline_and_hands_a_suspended_awaitable_over() -> None:
    log: list[str] = []
    context = contextvars.copy_context()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def quick() -> None:
        log.append("quick")

    assert step(quick(), context) is None
    assert log == ["quick"]

    gate = asyncio.Event()

    async def stalled() -> str:
        token = var.set("inside")
        log.append("started")
        try:
            await gate.wait()
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        finally:
            var.reset(token)  # the same context on every resumption, or this raises
        return "done"

    resumed = step(stalled(), context)
    assert resumed is not None and log[-1] == "started"
    assert var.get() == "unset" and context[var] == "inside"  # ran in ``context``
    asyncio.get_running_loop().call_soon(gate.set)
    assert await resumed == "done"
    assert var not in context  # reset in the context it was set in

    gate.clear()
    resumed = step(stalled(), context)
    assert resumed is not None

    async def finish() -> None:
        await resumed

    with anyio.move_on_after(0.05):  # cancellation reaches the suspended coroutine
        await finish()
    assert log[-1] == "cancelled"


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


async def test_sends_see_the_connection_context_also_when_the_flusher_writes(node: Node) -> None:
    """A variable set around the endpoint (as a middleware would) is seen by every send
    of that connection, fan-out written by the flusher task included; a connection whose
    context holds none writes in the flusher's (no copy kept) and sees none."""
    seen: dict[str, list[str]] = {"tagged": [], "plain": []}

    async def connection(name: str, tagged: bool, sock: FakeSocket) -> None:
        if tagged:
            REQUEST_ID.set("req-1")  # this task's own context (a copy of the group's)
        plain_send = sock.send

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                seen[name].append(REQUEST_ID.get())
            await plain_send(message)

        await WebSocketEndpoint(node)(dict(SCOPE), sock.receive, send)

    async with anyio.create_task_group() as tg:
        socks = {}
        for name in ("tagged", "plain"):
            sock = socks[name] = FakeSocket()
            sock.frame(id=1, connect={"token": token(name)})
            sock.frame(id=2, subscribe={"channel": CHANNEL})
            tg.start_soon(connection, name, name == "tagged", sock)
        await until(lambda: all(len(s.sent) >= 2 for s in socks.values()))
        await node.publish(CHANNEL, {"i": 0})
        await until(lambda: all(s.pushes() == [0] for s in socks.values()))
        tg.cancel_scope.cancel()
    assert seen["tagged"] and set(seen["tagged"]) == {"req-1"}
    assert seen["plain"] and set(seen["plain"]) == {""}


async def test_teardown_runs_a_disconnect_handler_that_enters_scopes_and_waits(
    node: Node,
) -> None:
    """The clean-up after a client left runs shielded as a whole: a disconnect handler may
    enter cancel scopes of its own and wait inside them (a shield entered only once the
    clean-up first waited would not nest with them), even while the reader's task is
    being cancelled."""
    finished: list[str] = []

    @node.on_disconnect
    async def gone(event: DisconnectEvent) -> None:
        with anyio.fail_after(2):
            await asyncio.sleep(0.02)
            await asyncio.sleep(0.02)
        finished.append(event.client.user)

    async with anyio.create_task_group() as tg:
        sock = await open_socket(node, tg, "leaving")
        sock.incoming.put_nowait({"type": "websocket.disconnect", "code": 1001})
        await asyncio.sleep(0.01)  # the handler is waiting in its scope
        tg.cancel_scope.cancel()  # and the reader's task group is cancelled meanwhile
    assert sock.ended.is_set()
    assert finished == ["leaving"]


async def test_a_send_that_enters_a_timeout_is_finished_by_the_task_that_started_it(
    node: Node,
) -> None:
    """A server whose send enters ``asyncio.timeout`` (or a cancel scope) and then waits,
    as the legacy websockets implementation does while closing: the timeout belongs to
    the task that started the send, which must be the one that finishes it."""
    async with anyio.create_task_group() as tg:
        fast = await open_socket(node, tg, "fast", guarded=True)
        slow = await open_socket(node, tg, "slow", guarded=True)
        slow.writable.clear()
        await node.publish(CHANNEL, {"i": 0})
        await node.publish(CHANNEL, {"i": 1})
        await asyncio.sleep(0.05)
        slow.writable.set()
        await until(lambda: slow.pushes() == [0, 1] and fast.pushes() == [0, 1])
        await node.publish(CHANNEL, {"i": 2})
        await until(lambda: slow.pushes() == [0, 1, 2] and fast.pushes() == [0, 1, 2])
        assert node.running and node.registry.num_clients == 2
        tg.cancel_scope.cancel()


def test_request_headers_are_read_on_demand() -> None:
    headers = RequestHeaders([(b"Origin", b"http://a"), (b"x-id", b"1"), (b"X-Id", b"2")])
    assert headers.get("origin") == "http://a"
    assert headers["X-ID"] == "2"  # names are case-insensitive; the last value wins
    assert headers.get("host") is None and "host" not in headers
    with pytest.raises(KeyError):
        headers["host"]
    assert dict(headers) == {"origin": "http://a", "x-id": "2"}
    assert len(headers) == 2


async def test_websocket_routes_skip_starlette_unless_middleware_was_added() -> None:
    from starlette.types import ASGIApp, Receive, Scope, Send

    seen: list[str] = []

    class Recorder:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(scope["type"])
            await self.app(scope, receive, send)

    node = Node(make_config())
    app = node.asgi_app()
    assert isinstance(app, NodeApp)
    app.add_middleware(Recorder)
    from starlette.testclient import TestClient

    with TestClient(app) as http, http.websocket_connect("/connection/websocket") as ws:
        ws.send_text(json.dumps({"id": 1, "connect": {"token": token("u1")}}))
        assert "connect" in json.loads(ws.receive_text())
    assert "websocket" in seen  # added middleware sees the connection

    plain = Node(make_config()).asgi_app()
    with (
        TestClient(plain, root_path="/rt") as http,
        http.websocket_connect("/rt/connection/websocket") as ws,
    ):
        ws.send_text(json.dumps({"id": 1, "connect": {"token": token("u1")}}))
        assert "connect" in json.loads(ws.receive_text())


async def test_the_node_app_reads_a_websocket_in_the_coroutine_the_server_awaits(
    node: Node,
) -> None:
    """No coroutine of the library stays suspended above the reader's: an idle
    connection's await chain goes from the app's coroutine straight to ``receive()``."""
    app = node.asgi_app()
    sock = FakeSocket()
    coro = app(dict(SCOPE), sock.receive, sock.send)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: coro)
        sock.frame(id=1, connect={"token": token("u1")})
        sock.frame(id=2, subscribe={"channel": CHANNEL})
        with anyio.fail_after(5):
            await until(lambda: len(sock.sent) >= 2)
        await until(lambda: sock.incoming.empty() and coro.cr_await is not None)
        awaited = coro.cr_await
        assert awaited.cr_code is FakeSocket.receive.__code__  # type: ignore[union-attr]
        assert "connect" in sock.sent[1]["text"] and "subscribe" in sock.sent[1]["text"]
        sock.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
    assert sock.close_code() is None  # the peer closed: no close frame back


async def test_a_send_that_swallows_its_write_timeout_is_cancelled_again(node: Node) -> None:
    """A server's send may absorb one cancellation and go on waiting; the write timeout
    then still closes the connection with 3009, and the send is cancelled again rather
    than left holding its task and the session."""
    async with anyio.create_task_group() as tg:
        slow = await open_socket(node, tg, "slow")
        slow.swallow_cancels = 1
        slow.writable.clear()
        await node.publish(CHANNEL, {"i": 0})
        with anyio.fail_after(5):
            await conditions.until(lambda: slow.swallow_cancels == 0, within=4, every=0.01)
        slow.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        with anyio.fail_after(5):
            await slow.ended.wait()
            await conditions.until(lambda: slow.cancelled_sends == 1, within=4, every=0.01)
        assert node.registry.num_clients == 0
        tg.cancel_scope.cancel()
