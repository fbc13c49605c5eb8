"""``client.subscribe_to_user_personal_channel.single_connection`` with centrifuge-js: a new
connection of a user disconnects the user's other connections with 3504 "connection limit",
on one node and across two nodes sharing one Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from centrifuge_asgi.node import Node
from tests.unit.test_redis_engine import require_main_redis, unique_prefix
from tests.unit.test_single_connection import single_config

from .support import WS_PATH, token

if TYPE_CHECKING:
    from conftest import LiveServerFactory, RunJs

pytestmark = pytest.mark.interop

EXPECTED = {
    "first": {"code": 3504, "reason": "connection limit", "state": "disconnected"},
    "second": "connected",
    "other": "connected",
}


def single_connection_config(**engine: Any) -> dict[str, Any]:
    cfg = single_config()
    cfg.update(engine)
    return cfg


def test_one_node(live_server: LiveServerFactory, run_js: RunJs) -> None:
    node = Node(single_connection_config())
    url = live_server(node.asgi_app()).ws_url(WS_PATH)
    result = run_js("sdk_single_connection.mjs", url, url, token("u1"), token("u2"), timeout=15)
    assert result == EXPECTED


def test_two_nodes_on_redis(live_server: LiveServerFactory, run_js: RunJs) -> None:
    require_main_redis()
    redis = {"type": "redis", "redis": {"address": "127.0.0.1:6379", "prefix": unique_prefix()}}
    config = single_connection_config(engine=redis)
    first, second = (live_server(Node(config).asgi_app()).ws_url(WS_PATH) for _ in range(2))
    result = run_js(
        "sdk_single_connection.mjs", first, second, token("u1"), token("u2"), timeout=15
    )
    assert result == EXPECTED
