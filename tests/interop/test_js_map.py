"""Map subscriptions driven by the official centrifuge-js 5.7.4 SDK, JSON and Protobuf.

One scenario (``tests/js/scenarios/sdk_map.mjs``) covers the paged snapshot, live updates,
client publish/remove, a second client's view, catch-up after a forced reconnect, a fresh
sync after resubscribing, TTL removal, ``map_clients`` presence and the refusals.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

import pytest

from centrifuge_asgi.handlers import RPCEvent
from centrifuge_asgi.node import Node
from tests.unit.test_redis_engine import require_main_redis, unique_prefix

from .support import BASE_CONFIG, WS_PATH, token

if TYPE_CHECKING:
    from conftest import LiveServerFactory, RunJs

pytestmark = pytest.mark.interop

MAP_NAMESPACES: list[dict[str, Any]] = [
    {
        "name": "board",
        "subscription_type": "map",
        "allow_subscribe_for_client": True,
        "map_clients_presence_channel_prefix": "clients:",
        "map_users_presence_channel_prefix": "users:",
        "map": {
            "mode": "persistent",
            "allow_publish_for_subscriber": True,
            "allow_remove_for_subscriber": True,
        },
    },
    {
        "name": "clients",
        "subscription_type": "map_clients",
        "allow_subscribe_for_client": True,
        "map": {"mode": "recoverable", "key_ttl": "60s"},
    },
    {
        "name": "users",
        "subscription_type": "map_users",
        "allow_subscribe_for_client": True,
        "map": {"mode": "recoverable", "key_ttl": "60s"},
    },
    {
        "name": "cursors",
        "subscription_type": "map",
        "allow_subscribe_for_client": True,
        "publication_data_format": "json_object",
        "map": {
            "mode": "ephemeral",
            "key_ttl": "1s",
            "client_key": "client_id",
            "allow_publish_for_subscriber": True,
        },
    },
    {
        "name": "tagged",
        "subscription_type": "map",
        "allow_subscribe_for_client": True,
        "allow_tags_filter": True,
        "map": {"mode": "recoverable", "key_ttl": "60s"},
    },
    {
        "name": "deltamap",
        "subscription_type": "map",
        "allow_subscribe_for_client": True,
        "allowed_delta_types": ["fossil"],
        "delta_publish": True,
        "client_publish_debounce_interval": "50ms",
        "map": {"mode": "persistent"},
    },
    {
        "name": "readonly",
        "subscription_type": "map",
        "allow_subscribe_for_client": True,
        "map": {"mode": "persistent"},
    },
]


def map_node(map_broker: str = "memory") -> Node:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["channel"]["namespaces"] += MAP_NAMESPACES
    if map_broker == "redis":
        require_main_redis()
        cfg["map_broker"] = {"type": "redis", "redis": {"prefix": unique_prefix()}}
    node = Node(cfg)

    def data_of(event: RPCEvent) -> Any:
        raw = event.data
        return json.loads(raw) if isinstance(raw, bytes | bytearray) else raw

    @node.on_rpc("map_publish")
    async def rpc_map_publish(event: RPCEvent) -> Any:
        body = data_of(event)
        for item in body["items"]:
            await node.map_publish(
                body["channel"], item["key"], item["data"], tags=item.get("tags")
            )
        return {}

    @node.on_rpc("map_remove")
    async def rpc_map_remove(event: RPCEvent) -> Any:
        body = data_of(event)
        for key in body["keys"]:
            await node.map_remove(body["channel"], key)
        return {}

    @node.on_rpc("drop_and_map_publish")
    async def rpc_drop(event: RPCEvent) -> Any:
        await node.disconnect(event.client.user, code=3011, reason="force reconnect")
        return await rpc_map_publish(event)

    return node


EXPECTED: dict[str, Any] = {
    "firstSyncSize": 250,
    "firstSyncSample": [{"v": 0}, {"v": 249}],
    "live": [
        {"key": "k000", "removed": False, "data": {"v": "changed"}},
        {"key": "mine", "removed": False, "data": {"from": "client"}},
        {"key": "k001", "removed": True, "data": None},
    ],
    "otherSyncSize": 250,
    "otherSyncSample": [{"v": "changed"}, {"from": "client"}, None],
    "afterReconnect": [{"key": "k002", "data": {"v": "missed"}}],
    "subscribed": [
        {"recoverable": True, "recovered": False, "wasRecovering": False},
        {"recoverable": True, "recovered": True, "wasRecovering": True},
        {"recoverable": True, "recovered": True, "wasRecovering": True},
    ],
    "resubUpdates": [{"key": "k003", "removed": True}],
    "resyncs": 0,
    "curUpdates": [False, True],
    "presence": 2,
    "users": ["u1", "u2"],
    "tagged": {"sync": ["a1"], "updates": ["a2"]},
    "forbiddenPublish": 103,
    "wrongType": 103,
    "wrongType2": 103,
}


@pytest.mark.parametrize(
    ("protocol", "map_broker"), [("json", "memory"), ("protobuf", "memory"), ("json", "redis")]
)
def test_js_map_subscription(
    live_server: LiveServerFactory, run_js: RunJs, protocol: str, map_broker: str
) -> None:
    srv = live_server(map_node(map_broker).asgi_app())
    result = run_js(
        "sdk_map.mjs", srv.ws_url(WS_PATH), token("u1"), token("u2"), protocol, timeout=25
    )
    assert result == EXPECTED


@pytest.mark.parametrize(
    ("protocol", "map_broker"), [("json", "memory"), ("protobuf", "memory"), ("json", "redis")]
)
def test_js_map_fossil_delta(
    live_server: LiveServerFactory, run_js: RunJs, protocol: str, map_broker: str
) -> None:
    srv = live_server(map_node(map_broker).asgi_app())
    result = run_js("sdk_map_delta.mjs", srv.ws_url(WS_PATH), token("u1"), protocol, timeout=20)
    assert result == {
        "sync": [["a", 0], ["b", 0]],
        "updates": [
            ["a", 1],
            ["b", 1],
            ["a", 2],
            ["b", 2],
            ["a", 3],
            ["b", 3],
            ["b", None],
            ["a", 4],
            ["a", 5],
        ],
        "liveDeltas": True,
        "after": True,
    }
