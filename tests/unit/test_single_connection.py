"""``client.subscribe_to_user_personal_channel.single_connection`` through sessions: a new
connection of a user disconnects the user's other connections with 3504."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from centrifuge_asgi import Node
from centrifuge_asgi.engines.base import PresenceStats
from centrifuge_asgi.errors import EngineError
from centrifuge_asgi.session import Session, TransportInfo
from tests.interop.support import BASE_CONFIG, token

pytestmark = pytest.mark.anyio


def single_config(single: bool = True, **client: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["channel"]["namespaces"].append({"name": "personal", "presence": True})
    cfg["client"]["subscribe_to_user_personal_channel"] = {
        "enabled": True,
        "personal_channel_namespace": "personal",
        "single_connection": single,
    }
    cfg["client"].update(client)
    return cfg


async def connect(node: Node, user: str) -> tuple[Session, dict[str, Any]]:
    s = node.create_session(TransportInfo())
    await s.handle_frame(json.dumps({"id": 1, "connect": {"token": token(user)}}).encode())
    replies = [json.loads(m) for m in s.outbox.drain()]
    return s, replies[0] if replies else {}


async def test_the_new_connection_disconnects_the_old_one() -> None:
    async with Node(single_config()) as node:
        first, _ = await connect(node, "u1")
        other, _ = await connect(node, "u2")
        second, reply = await connect(node, "u1")
        assert "connect" in reply and second.connected
        assert (first.close_code, first.close_reason) == (3504, "connection limit")
        assert not other.closing and not second.closing
        for s in (first, other, second):
            await s.finish()


async def test_off_keeps_both() -> None:
    async with Node(single_config(single=False)) as node:
        first, _ = await connect(node, "u1")
        second, _ = await connect(node, "u1")
        assert not first.closing and not second.closing
        for s in (first, second):
            await s.finish()


async def test_anonymous_connections_are_not_limited() -> None:
    cfg = single_config(allow_anonymous_connect_without_token=True)
    async with Node(cfg) as node:
        sessions = []
        for _ in range(2):
            s = node.create_session(TransportInfo())
            await s.handle_frame(b'{"id":1,"connect":{}}')
            sessions.append(s)
        assert [s.connected and not s.closing for s in sessions] == [True, True]
        for s in sessions:
            await s.finish()


async def test_presence_failure_refuses_with_3004(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Node(single_config()) as node:

        async def failing(channel: str) -> PresenceStats:
            raise EngineError("presence down")

        monkeypatch.setattr(node.presence_manager, "presence_stats", failing)
        s, reply = await connect(node, "u1")
        assert reply == {} and s.close_code == 3004 and not s.connected
        await s.finish()


def test_policy_names_the_personal_channel_only_when_on() -> None:
    assert Node(single_config()).policy.single_connection_channel("u1") == "personal:#u1"
    assert Node(single_config()).policy.single_connection_channel("") is None
    assert Node(single_config(single=False)).policy.single_connection_channel("u1") is None
