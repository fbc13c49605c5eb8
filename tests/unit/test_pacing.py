"""The event loop is shared: a huge frame, a huge API batch or a mass disconnect runs a
slice at a time (``pacing.py``), so other connections are served meanwhile.

The fairness tests count how often a probe task gets to run while the heavy work goes
on. Before pacing, each of these ran in one or two event-loop iterations, so the probe
ran once or twice; with it the probe runs every slice (10 ms). Counting iterations rather
than timing them keeps the tests independent of the machine's speed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from centrifuge_asgi import Node
from centrifuge_asgi.pacing import Pacer
from tests import conditions

pytestmark = pytest.mark.anyio

CONFIG: dict[str, Any] = {
    "client": {"allow_anonymous_connect_without_token": True},
    "websocket": {"message_size_limit": 16 * 1024 * 1024},
    "http_api": {"key": "k", "max_body_size": 16 * 1024 * 1024},
    "channel": {
        "without_namespace": {
            "allow_subscribe_for_client": True,
            "allow_subscribe_for_anonymous": True,
            "presence": True,
            "allow_presence_for_subscriber": True,
        }
    },
}
SCOPE: dict[str, Any] = {
    "type": "websocket",
    "path": "/connection/websocket",
    "root_path": "",
    "query_string": b"",
    "subprotocols": [],
    "headers": [(b"host", b"localhost")],
}


class Probe:
    """Counts event-loop iterations it got to run in while ``active``."""

    def __init__(self) -> None:
        self.runs = 0
        self.active = False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0)
            if self.active:
                self.runs += 1


class Client:
    """One WebSocket connection at the ASGI level (no server, no socket)."""

    def __init__(self, app: Any, *frames: str) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.inbox.put_nowait({"type": "websocket.connect"})
        for text in frames:
            self.inbox.put_nowait({"type": "websocket.receive", "text": text})
        self.messages = 0
        self.close_code: int | None = None

    async def run(self) -> None:
        await self.app(dict(SCOPE), self.inbox.get, self._send)

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            self.messages += message["text"].count("\n") + 1
        elif message["type"] == "websocket.close":
            self.close_code = message.get("code")

    def leave(self) -> None:
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})


def frame(*commands: dict[str, Any]) -> str:
    return "\n".join(json.dumps(c) for c in commands)


def connect_and_subscribe(channel: str) -> str:
    return frame({"id": 1, "connect": {}}, {"id": 2, "subscribe": {"channel": channel}})


until = functools.partial(conditions.until, within=20, every=0.01)  # polls plain counters


def block(seconds: float) -> None:
    """A step of work that holds the loop (busy, as real work does)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with Node(CONFIG) as n:
        yield n


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    p = Probe()
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        yield p
        tg.cancel_scope.cancel()


# ----------------------------------------------------------------------------- Pacer


async def test_ticks_within_the_slice_do_not_suspend() -> None:
    pacer = Pacer(slice_seconds=60.0)
    probe = Probe()
    probe.active = True
    async with anyio.create_task_group() as tg:
        tg.start_soon(probe.run)
        await asyncio.sleep(0)  # the probe starts
        before = probe.runs
        for _ in range(1000):
            await pacer.tick()
        assert probe.runs == before  # nothing else ran: no tick suspended
        tg.cancel_scope.cancel()


async def test_work_past_the_slice_resumes_in_a_later_iteration_in_order() -> None:
    pacer = Pacer(slice_seconds=0.002)
    order: list[int] = []

    async def worker(n: int) -> None:
        await pacer.tick()
        block(0.001)
        order.append(n)

    probe = Probe()
    probe.active = True
    async with anyio.create_task_group() as tg:
        tg.start_soon(probe.run)
        await asyncio.gather(*(worker(n) for n in range(40)))
        tg.cancel_scope.cancel()
    assert order == list(range(40))  # first come, first served
    assert probe.runs >= 10  # ~40 ms of work in 2 ms slices: the loop turned meanwhile
    assert pacer.waiting == 0


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    pacer = Pacer(slice_seconds=0.001)

    hogged = anyio.Event()
    waiters = [anyio.CancelScope() for _ in range(3)]

    async def hog() -> None:  # uses up the slice of the iteration the others run in
        await pacer.tick()
        block(0.002)
        hogged.set()

    async def wait(scope: anyio.CancelScope) -> None:
        with scope:
            await pacer.tick()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hog)
            for scope in waiters:
                tg.start_soon(wait, scope)
            await asyncio.sleep(0)  # all four ran, in order
            assert hogged.is_set() and pacer.waiting == 3
            waiters[0].cancel()
        # the other two got their turns: the task group ended
    assert pacer.waiting == 0


async def test_threaded_work_runs_one_call_at_a_time() -> None:
    # several threads decoding at once would each take the GIL in turns with the loop
    pacer = Pacer()
    running: list[int] = []
    most = 0
    lock = threading.Lock()

    def work(n: int) -> int:
        nonlocal most
        with lock:
            running.append(n)
            most = max(most, len(running))
        block(0.005)
        with lock:
            running.remove(n)
        return n * 2

    results = await asyncio.gather(*(pacer.run_sync(work, n) for n in range(6)))
    assert results == [0, 2, 4, 6, 8, 10]
    assert most == 1


def test_slice_must_be_positive() -> None:
    with pytest.raises(ValueError, match="slice_seconds"):
        Pacer(slice_seconds=0)


# ----------------------------------------------------------------------- fairness


async def test_a_frame_of_many_commands_shares_the_loop_and_is_answered(
    node: Node, probe: Probe
) -> None:
    n = 20_000
    commands = [{"id": 1, "connect": {}}, {"id": 2, "subscribe": {"channel": "c"}}]
    commands += [{"id": i + 3, "presence": {"channel": "c"}} for i in range(n)]
    sender = Client(node.asgi_app(), frame(*commands))
    probe.active = True
    async with anyio.create_task_group() as tg:
        tg.start_soon(sender.run)
        await until(lambda: sender.messages >= n + 2 or sender.close_code is not None)
        probe.active = False
        # before pacing the replies piled up unsent and the reader was closed as slow (3008)
        assert sender.close_code is None
        assert sender.messages == n + 2
        assert probe.runs >= 5
        sender.leave()
        tg.cancel_scope.deadline = anyio.current_time() + 10  # the sender ends within 10 s
    assert not tg.cancel_scope.cancelled_caught, "the sender did not end within 10 s"


async def test_a_large_api_batch_shares_the_loop(node: Node, probe: Probe) -> None:
    n = 12_000
    commands = [{"publish": {"channel": "c", "data": {"i": i}}} for i in range(n)]
    body = json.dumps({"commands": commands}).encode()
    requests = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return requests.pop(0) if requests else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/batch",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"x-api-key", b"k"), (b"content-type", b"application/json")],
    }
    probe.active = True
    await asyncio.wait_for(node.asgi_app()(scope, receive, send), 30)
    probe.active = False
    assert sent[0]["status"] == 200
    replies = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["replies"]
    assert len(replies) == n and all("publish" in r for r in replies)
    assert probe.runs >= 5


async def test_many_connections_closing_at_once_share_the_loop(node: Node, probe: Probe) -> None:
    app = node.asgi_app()
    clients = [Client(app, connect_and_subscribe(f"c{i % 20}")) for i in range(2000)]
    async with anyio.create_task_group() as tg:
        for c in clients:
            tg.start_soon(c.run)
        await until(lambda: all(c.messages >= 2 for c in clients))
        probe.active = True
        for c in clients:
            c.leave()
        tg.cancel_scope.deadline = anyio.current_time() + 30  # every client ends within 30 s
    assert not tg.cancel_scope.cancelled_caught, "the clients did not end within 30 s"
    probe.active = False
    assert node.registry.num_clients == 0
    assert probe.runs >= 5
