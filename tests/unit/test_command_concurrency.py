"""``client.concurrency`` in the session, without sockets (see also
``tests/interop/test_command_concurrency.py``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from centrifuge_asgi import Node, RPCEvent
from centrifuge_asgi.config_loader import config_from_mapping
from centrifuge_asgi.errors import ConfigError
from centrifuge_asgi.handlers import SubscribeEvent, SubscribeReply
from centrifuge_asgi.session import Session, TransportInfo
from tests.interop.support import make_config, token

pytestmark = pytest.mark.anyio


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with Node(make_config(concurrency=2, channel_limit=2)) as n:
        yield n
        for s in list(n.registry.sessions()):
            await s.finish()


def frame(*commands: dict[str, Any]) -> bytes:
    return "\n".join(json.dumps(c) for c in commands).encode()


def replies(session: Session) -> list[dict[str, Any]]:
    return [json.loads(m) for m in session.outbox.drain()]


async def connected(node: Node) -> Session:
    s = node.create_session(TransportInfo())
    await s.handle_frame(frame({"id": 1, "connect": {"token": token("u1")}}))
    assert "connect" in replies(s)[0]
    return s


async def settle() -> None:
    for _ in range(20):
        await anyio.lowlevel.checkpoint()


def test_negative_concurrency_names_key_and_file() -> None:
    with pytest.raises(ConfigError, match=r"'client\.concurrency'.*conf\.json"):
        config_from_mapping({"client": {"concurrency": -1}}, source="conf.json")


async def test_default_runs_inline() -> None:
    async with Node(make_config()) as node:
        s = await connected(node)
        async with s.command_tasks():
            assert s._occasional is None  # no task group, nor any state for one
        # the shared no-op context lets errors through, and ``async with`` binds nothing
        # to it that a connection's reader would hold for its whole life
        with pytest.raises(KeyError):
            async with s.command_tasks():
                raise KeyError("through")
        tasks = s.command_tasks()
        assert type(tasks).__aexit__ is tasks.__aexit__
        await s.finish()


async def test_replies_in_the_order_commands_finish(node: Node) -> None:
    gate = anyio.Event()

    @node.on_rpc("slow")
    async def slow(event: RPCEvent) -> Any:
        await gate.wait()
        return {"slow": True}

    s = await connected(node)
    async with s.command_tasks():
        await s.handle_frame(
            frame(
                {"id": 2, "rpc": {"method": "slow"}},
                {"id": 3, "presence_stats": {"channel": "chat:a"}},
            )
        )
        await settle()
        assert [r["id"] for r in replies(s)] == [3]
        gate.set()
        await settle()
        assert replies(s) == [{"id": 2, "rpc": {"data": {"slow": True}}}]


async def test_running_subscribes_count_towards_the_channel_limit(node: Node) -> None:
    gate = anyio.Event()

    @node.on_subscribe
    async def on_subscribe(event: SubscribeEvent) -> SubscribeReply:
        await gate.wait()
        return SubscribeReply()

    s = await connected(node)
    async with s.command_tasks():
        await s.handle_frame(
            frame(
                {"id": 2, "subscribe": {"channel": "secret:a"}},
                {"id": 3, "subscribe": {"channel": "secret:b"}},
                {"id": 4, "subscribe": {"channel": "chat:c"}},  # no slot left either
            )
        )
        await settle()
        error = {"code": 106, "message": "limit exceeded"}
        assert replies(s) == [{"id": 4, "error": error}]
        gate.set()
        await settle()
        assert sorted(r["id"] for r in replies(s)) == [2, 3]
    assert set(s.subs) == {"secret:a", "secret:b"}


async def test_no_reply_after_the_connection_closed(node: Node) -> None:
    gate = anyio.Event()
    finished: list[str] = []

    @node.on_rpc("slow")
    async def slow(event: RPCEvent) -> Any:
        try:
            await gate.wait()
        finally:
            finished.append("cancelled" if not gate.is_set() else "done")
        return {}

    s = await connected(node)
    async with s.command_tasks():
        await s.handle_frame(frame({"id": 2, "rpc": {"method": "slow"}}))
        await settle()
        s.transport_closed()
    assert finished == ["cancelled"]
    assert s.outbox.drain() == []
    assert not s._subscribing()  # no subscribe left marked as running
