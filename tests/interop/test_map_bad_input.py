"""Bad map commands from a raw WebSocket client (JSON) get Centrifugo's error codes.

Wrong phase (107), a state cursor or a stream page without a started subscribe (103), a
stream phase on an ephemeral map (107), a stale epoch (112), the wrong subscription type
(103), forbidden or keyless map publishes (103, 107), and the connection stays usable.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import websockets

from centrifuge_asgi.node import Node

from .support import BASE_CONFIG, WS_PATH, token
from .test_js_map import MAP_NAMESPACES, map_node

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]


@pytest.fixture
def srv(live_server: LiveServerFactory) -> LiveServer:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["channel"]["namespaces"] += MAP_NAMESPACES
    return live_server(Node(cfg).asgi_app())


class Conn:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, **cmd: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, **cmd}))
        with anyio.fail_after(5):
            while True:
                for line in str(await self.ws.recv()).split("\n"):
                    reply = json.loads(line)
                    if reply.get("id") == self.next_id:
                        return dict(reply)


def _error(reply: dict[str, Any]) -> int:
    return int(reply.get("error", {}).get("code", 0))


async def test_bad_map_commands(srv: LiveServer) -> None:
    async with websockets.connect(srv.ws_url(WS_PATH)) as ws:
        c = Conn(ws)
        assert "connect" in await c.call(connect={"token": token("u1")})
        sub = {"channel": "board:bad", "type": 1}
        assert _error(await c.call(subscribe={**sub, "phase": 7})) == 107
        assert _error(await c.call(subscribe={**sub, "phase": 2, "cursor": "k"})) == 103
        assert _error(await c.call(subscribe={**sub, "phase": 1, "offset": 0})) == 103
        eph = {"channel": "cursors:bad", "type": 1}
        assert _error(await c.call(subscribe={**eph, "phase": 1, "recover": True})) == 107
        stale = {**sub, "phase": 1, "recover": True, "offset": 5, "epoch": "zzzz"}
        assert _error(await c.call(subscribe=stale)) == 112
        assert _error(await c.call(subscribe={"channel": "board:bad"})) == 103  # stream type
        assert _error(await c.call(subscribe={**sub, "type": 2, "phase": 2})) == 103
        publish = {"channel": "readonly:x", "type": 1, "key": "k", "data": {"a": 1}}
        assert _error(await c.call(publish=publish)) == 103
        keyless = {"channel": "board:bad", "type": 1, "key": "", "data": {"a": 1}}
        assert _error(await c.call(publish=keyless)) == 103  # not subscribed yet
        # a full subscribe still works on this connection, then the keyless publish is 107
        live = await c.call(subscribe={**sub, "phase": 2})
        assert live["subscribe"]["type"] == 1 and "phase" not in live["subscribe"]
        assert _error(await c.call(publish=keyless)) == 107
        again = await c.call(subscribe={**sub, "phase": 2})
        assert _error(again) == 105
        wrong_format = {"channel": "cursors:bad", "type": 1, "key": "x", "data": [1]}
        await c.call(subscribe={**eph, "phase": 2})
        assert _error(await c.call(publish=wrong_format)) == 107
        ok = {"channel": "board:bad", "type": 1, "key": "k", "data": {"a": 1}}
        assert await c.call(publish=ok) == {"id": c.next_id, "publish": {}}
        debounced = await c.call(subscribe={"channel": "deltamap:d", "type": 1, "phase": 2})
        assert debounced["subscribe"]["publish_debounce"] == 50  # client_publish_debounce_interval


async def test_unfinished_map_subscribes_count_toward_the_channel_limit(
    live_server: LiveServerFactory,
) -> None:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["channel"]["namespaces"] += MAP_NAMESPACES
    cfg["client"]["channel_limit"] = 1
    node = Node(cfg)
    srv = live_server(node.asgi_app())

    async def seed() -> None:
        for i in range(150):  # two state pages of 100
            await node.map_publish("board:big", f"k{i:03d}", {"i": i})

    await srv.acall(seed())
    async with websockets.connect(srv.ws_url(WS_PATH)) as ws:
        c = Conn(ws)
        await c.call(connect={"token": token("u1")})
        first = await c.call(subscribe={"channel": "board:big", "type": 1, "phase": 2})
        assert first["subscribe"]["phase"] == 2 and first["subscribe"]["cursor"] == "k099"
        other = await c.call(subscribe={"channel": "board:other", "type": 1, "phase": 2})
        assert _error(other) == 106
        page = {"channel": "board:big", "type": 1, "phase": 2, "cursor": "k099"}
        last = await c.call(subscribe=page)
        assert len(last["subscribe"]["state"]) == 50 and "phase" not in last["subscribe"]


async def test_map_subscribe_phase_and_page_size_edges(
    live_server: LiveServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A negative phase is 107 and leaves the connection usable; a page size that is
    negative gets the default page (100), one of 2**31 - 1 the largest page (1000)."""
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["channel"]["namespaces"] += MAP_NAMESPACES
    node = Node(cfg)
    srv = live_server(node.asgi_app())

    async def seed() -> None:
        for i in range(1001):
            await node.map_publish("board:lim", f"k{i:04d}", {"i": i})

    await srv.acall(seed())
    with anyio.fail_after(5):
        async with websockets.connect(srv.ws_url(WS_PATH)) as ws:
            c = Conn(ws)
            assert "connect" in await c.call(connect={"token": token("u1")})
            sub = {"channel": "board:lim", "type": 1}
            assert _error(await c.call(subscribe={**sub, "phase": -1})) == 107
            for limit, size in ((-5, 100), (0, 100), (2**31 - 1, 1000)):
                page = (await c.call(subscribe={**sub, "phase": 2, "limit": limit}))["subscribe"]
                assert page["phase"] == 2, limit
                assert len(page["state"]) == size, limit
                assert page["cursor"] == f"k{size - 1:04d}", limit
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize("map_broker", ["memory", "redis"])
async def test_client_map_publish_with_a_60kb_key(
    live_server: LiveServerFactory, map_broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Map keys have no length limit of their own (as in Centrifugo): a 60 KB key in a
    frame under the message size limit is published and stored on either broker."""
    node = map_node(map_broker)
    srv = live_server(node.asgi_app())
    key = "k" * 60_000
    with anyio.fail_after(5):
        async with websockets.connect(srv.ws_url(WS_PATH)) as ws:
            c = Conn(ws)
            assert "connect" in await c.call(connect={"token": token("u1")})
            live = await c.call(subscribe={"channel": "board:big", "type": 1, "phase": 2})
            assert "phase" not in live["subscribe"]
            publish = {"channel": "board:big", "type": 1, "key": key, "data": {"a": 1}}
            assert await c.call(publish=publish) == {"id": c.next_id, "publish": {}}
    state = await srv.acall(node.map_broker.read_state("board:big", key=key))
    assert len(state.publications) == 1
    stored = state.publications[0]
    assert stored.key == key and json.loads(stored.data) == {"a": 1}
    assert not any(r.exc_info for r in caplog.records)
