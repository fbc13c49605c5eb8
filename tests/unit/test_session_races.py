"""Races and edge cases of the session state machine: slow engines, concurrent server
actions, invalid close codes, timers, shutdown."""

from __future__ import annotations

import gc
import json
import time
import weakref
from typing import Any

import anyio
import pytest

from centrifuge_asgi import DisconnectEvent, Node
from centrifuge_asgi.engines.base import ClientInfo
from centrifuge_asgi.errors import EngineUnavailable
from centrifuge_asgi.session import Session, TransportInfo
from centrifuge_asgi.timers import Scheduler
from tests.interop.support import make_config, token

pytestmark = pytest.mark.anyio


def out(s: Session) -> list[dict[str, Any]]:
    return [json.loads(m) for m in s.outbox.drain()]


async def connected(node: Node, user: str = "u1", **transport: Any) -> Session:
    s = node.create_session(TransportInfo(**transport))
    await s.handle_frame(json.dumps({"id": 1, "connect": {"token": token(user)}}).encode())
    assert out(s)[0]["connect"]["client"] == s.client_id
    return s


async def subscribe(s: Session, channel: str, cmd_id: int = 2) -> None:
    await s.handle_frame(json.dumps({"id": cmd_id, "subscribe": {"channel": channel}}).encode())


async def test_finish_with_a_hanging_engine_still_releases_everything(node: Node) -> None:
    calls: list[str] = []

    @node.on_disconnect
    async def gone(event: DisconnectEvent) -> None:
        calls.append(event.client.client)

    s = await connected(node)
    for i in range(4):
        await subscribe(s, f"chat:h{i}", 10 + i)

    async def hang(*args: Any) -> None:
        await anyio.sleep(60)

    node.presence_manager.remove_presence = hang  # type: ignore[method-assign]
    with anyio.fail_after(5):  # each release is bounded; they run concurrently
        await s.finish()
    assert node.registry.num_channels == 0 and node.registry.num_clients == 0
    assert calls == [s.client_id]


async def test_failed_join_publish_does_not_break_the_subscription(node: Node) -> None:
    async def down(channel: str, info: ClientInfo) -> None:
        raise EngineUnavailable("redis is down")

    node.broker.publish_join = down  # type: ignore[method-assign]
    s = await connected(node)
    await subscribe(s, "chat:j")  # chat: emits join/leave
    assert out(s)[0] == {"id": 2, "subscribe": {}}
    assert s.connected and "chat:j" in s.subs


async def test_server_unsubscribe_during_subscribe_comes_after_the_reply(node: Node) -> None:
    s = await connected(node)
    gate = anyio.Event()
    original = node.broker.history

    async def slow_history(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await original(*args, **kwargs)

    node.broker.history = slow_history  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(subscribe, s, "news:race")
        await anyio.sleep(0.05)  # the subscribe is now waiting inside history
        await node.unsubscribe("u1", "news:race")
        gate.set()
    replies = out(s)
    assert replies[0]["id"] == 2 and "subscribe" in replies[0]
    assert replies[1]["push"]["unsubscribe"]["code"] == 2000
    assert "news:race" not in s.subs and not node.registry.has_subscribers("news:race")


async def test_closing_during_subscribe_leaves_no_presence(node: Node) -> None:
    s = await connected(node)
    gate = anyio.Event()
    original = node.presence_manager.add_presence

    async def slow_add(*args: Any) -> None:
        await gate.wait()
        await original(*args)

    node.presence_manager.add_presence = slow_add  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(subscribe, s, "chat:p")
        await anyio.sleep(0.05)
        await s.finish()  # the connection goes away mid-subscribe
        gate.set()
    assert (await node.presence_stats("chat:p")).num_clients == 0
    assert not node.registry.has_subscribers("chat:p")


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (0, "", (3004, "internal server error")),
        (1, "x", (3004, "internal server error")),
        (4500, "é" * 100, (4500, "é" * 61)),  # 123 bytes at most, cut on a character
        (3503, "", (3503, "force disconnect")),
    ],
)
async def test_close_codes_and_reasons_are_made_valid(
    node: Node, code: int, reason: str, expected: tuple[int, str]
) -> None:
    s = await connected(node)
    s.disconnect(code, reason)
    assert (s.close_code, s.close_reason) == expected
    assert len(s.close_reason.encode()) <= 123


def test_cancelled_timers_release_their_callbacks_and_are_compacted() -> None:
    clock = [0.0]
    sched = Scheduler(clock=lambda: clock[0])

    class Owner:
        def tick(self) -> None:
            raise AssertionError("cancelled timers never fire")

    owner = Owner()
    ref = weakref.ref(owner)
    timers = [sched.call_later(3600, owner.tick) for _ in range(3000)]
    for t in timers:
        t.cancel()
    del owner
    gc.collect()
    assert ref() is None  # the heap no longer keeps the owner alive
    for _ in range(3000):  # new timers trigger compaction of the cancelled ones
        sched.call_later(1, lambda: None).cancel()
    assert len(sched) < 6000
    clock[0] = 7200
    sched.fire_due()


async def test_no_push_before_the_connect_reply(node: Node) -> None:
    s = node.create_session(TransportInfo())
    s.push_message(b'{"early": true}')
    s.apply_refresh(int(time.time()) + 60, None, False)
    assert s.outbox.drain() == []


async def test_one_failing_connection_does_not_stop_a_control_fan_out(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await connected(node, "u1")
    second = await connected(node, "u1")
    original = Session.server_subscribe

    async def broken(self: Session, *args: Any, **kwargs: Any) -> Any:
        if self is first:
            raise RuntimeError("boom")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Session, "server_subscribe", broken)
    await node.subscribe("u1", "chat:fan")
    assert "chat:fan" in second.subs


async def test_session_targeted_disconnect(node: Node) -> None:
    a = await connected(node, "u1", emulation=True)
    b = await connected(node, "u1", emulation=True)
    await node.disconnect("u1", session=a.session_id)
    assert a.close_code == 3503 and not b.closing


async def test_negative_offsets_are_malformed(node: Node) -> None:
    s = await connected(node)
    bad = {"channel": "news:n", "recover": True, "offset": -5, "epoch": "x"}
    await s.handle_frame(json.dumps({"id": 2, "subscribe": bad}).encode())
    assert (s.close_code, s.close_reason) == (3501, "bad request")


async def test_buffer_while_subscribing_is_bounded(node: Node) -> None:
    s = await connected(node)
    s.outbox.max_bytes = 2000
    gate = anyio.Event()
    original = node.broker.history

    async def slow_history(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await original(*args, **kwargs)

    node.broker.history = slow_history  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(subscribe, s, "news:flood")
        await anyio.sleep(0.05)
        node.broker.history = original  # type: ignore[method-assign]
        for i in range(50):
            await node.publish("news:flood", {"pad": "x" * 100, "i": i})
        gate.set()
    assert (s.close_code, s.close_reason) == (3008, "slow")


async def test_publication_while_subscribing_comes_after_the_reply(node: Node) -> None:
    """A channel without positioning: fan-out's direct path must respect the pending window."""
    s = await connected(node)
    other = await connected(node, "u2")
    await subscribe(other, "plain")
    out(other)
    gate = anyio.Event()
    original = node.broker.subscribe

    async def slow_subscribe(channel: str) -> None:
        await gate.wait()
        await original(channel)

    node.broker.subscribe = slow_subscribe  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(subscribe, s, "plain")
        await anyio.sleep(0.05)
        assert s.subs["plain"].pending is not None
        await node.publish("plain", {"n": 1})
        assert out(s) == []  # buffered, not sent before the reply
        node.broker.subscribe = original  # type: ignore[method-assign]
        gate.set()
    await node.publish("plain", {"n": 2})
    got = out(s)
    assert got[0] == {"id": 2, "subscribe": {}}
    assert [m["push"]["pub"]["data"]["n"] for m in got[1:]] == [1, 2]
    assert [m["push"]["pub"]["data"]["n"] for m in out(other)] == [1, 2]


async def test_server_side_refresh_pushes_the_new_expiry(node: Node) -> None:
    s = await connected(node)
    await node.refresh("u1", expire_at=int(time.time()) + 100)
    [push] = out(s)
    assert push["push"]["refresh"]["expires"] is True
    assert 98 <= push["push"]["refresh"]["ttl"] <= 100


async def test_connect_during_shutdown_is_refused_with_3001() -> None:
    async with Node(make_config()) as n:
        await n.shutdown(grace=0.1)
        s = n.create_session(TransportInfo())
        await s.handle_frame(json.dumps({"id": 1, "connect": {"token": token("u")}}).encode())
        assert (s.close_code, s.close_reason) == (3001, "shutdown")


def test_write_watchdog_expires_only_hung_sends() -> None:
    from centrifuge_asgi.timers import WriteWatchdog

    clock = [0.0]
    dog = WriteWatchdog(clock=lambda: clock[0])
    expired: list[str] = []
    dog.start("slow", 1.0, lambda: expired.append("slow"))
    dog.start("quick", 1.0, lambda: expired.append("quick"))
    dog.done("quick")  # its send completed in time
    clock[0] = 0.5
    dog.sweep()
    assert expired == []
    clock[0] = 1.0
    dog.sweep()
    dog.sweep()
    assert expired == ["slow"]  # once


async def test_shutdown_waits_until_finishing_sessions_released_their_channels() -> None:
    """The broker closes after shutdown(): cleanup still running then would fail."""
    async with Node(make_config()) as node:
        s = await connected(node)
        await subscribe(s, "chat:c")
        released: list[str] = []
        original = node.broker.unsubscribe

        async def slow_unsubscribe(channel: str) -> None:
            await anyio.sleep(0.2)
            await original(channel)
            released.append(channel)

        node.broker.unsubscribe = slow_unsubscribe  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.finish)
            await anyio.sleep(0.02)
            assert node.registry.num_clients == 0  # unregistered, still releasing
            await node.shutdown(grace=2)
            assert released == ["chat:c"]
