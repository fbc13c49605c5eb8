"""The map server API methods over HTTP under a live uvicorn (``/api/map_*`` and batch).

cent 5.2.0 has no map methods, so the calls are raw HTTP, as Centrifugo's docs show them.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from centrifuge_asgi.node import Node
from tests.unit.test_redis_engine import require_main_redis, unique_prefix

from .support import BASE_CONFIG
from .test_js_map import MAP_NAMESPACES

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory

pytestmark = pytest.mark.interop

KEY = "map-api-key"


@pytest.fixture
def srv(live_server: LiveServerFactory) -> LiveServer:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["channel"]["namespaces"] += MAP_NAMESPACES
    cfg["http_api"] = {"key": KEY}
    return live_server(Node(cfg).asgi_app())


def call(srv: LiveServer, method: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = httpx.post(srv.url(f"/api/{method}"), json=body, headers={"X-API-Key": KEY}, timeout=5)
    return resp.status_code, resp.json()


def test_map_publish_read_remove_stats_clear(srv: LiveServer) -> None:
    ch = "board:api"
    status, first = call(srv, "map_publish", {"channel": ch, "key": "a", "data": {"v": 1}})
    assert status == 200 and first["result"]["offset"] == 1
    epoch = first["result"]["epoch"]
    call(srv, "map_publish", {"channel": ch, "key": "b", "data": {"v": 2}, "tags": {"t": "x"}})
    _, suppressed = call(
        srv, "map_publish", {"channel": ch, "key": "a", "data": {"v": 9}, "key_mode": "if_new"}
    )
    assert suppressed["result"] == {
        "offset": 2,
        "epoch": epoch,
        "suppressed": True,
        "suppress_reason": "key_exists",
    }
    _, page = call(srv, "map_read_state", {"channel": ch, "limit": 1})
    assert page["result"]["cursor"] == "a"
    assert [e["key"] for e in page["result"]["entries"]] == ["a"]
    _, rest = call(srv, "map_read_state", {"channel": ch, "limit": 1, "cursor": "a"})
    entry = rest["result"]["entries"][0]
    assert (entry["key"], entry["data"], entry["tags"], entry["offset"]) == (
        "b",
        {"v": 2},
        {"t": "x"},
        2,
    )
    assert "cursor" not in rest["result"]
    _, one = call(srv, "map_read_state", {"channel": ch, "key": "b", "limit": -1})
    assert [e["key"] for e in one["result"]["entries"]] == ["b"]

    _, removed = call(srv, "map_remove", {"channel": ch, "key": "a"})
    assert removed["result"] == {"offset": 3, "epoch": epoch}
    _, missing = call(srv, "map_remove", {"channel": ch, "key": "a"})
    assert missing["result"]["suppress_reason"] == "key_not_found"

    _, stream = call(srv, "map_read_stream", {"channel": ch, "limit": -1})
    assert [(e["key"], e.get("removed", False)) for e in stream["result"]["entries"]] == [
        ("a", False),
        ("b", False),
        ("a", True),
    ]
    assert "data" not in stream["result"]["entries"][2]
    _, since = call(
        srv,
        "map_read_stream",
        {"channel": ch, "limit": 10, "since_offset": 2, "since_epoch": epoch},
    )
    assert [e["offset"] for e in since["result"]["entries"]] == [3]
    _, stale = call(
        srv,
        "map_read_stream",
        {"channel": ch, "limit": 10, "since_offset": 1, "since_epoch": "nope"},
    )
    assert stale["error"]["code"] == 112

    assert call(srv, "map_stats", {"channel": ch})[1]["result"] == {"num_keys": 1}
    assert call(srv, "map_clear", {"channel": ch})[1]["result"] == {}
    assert call(srv, "map_stats", {"channel": ch})[1]["result"] == {"num_keys": 0}
    _, fresh = call(srv, "map_read_state", {"channel": ch, "limit": -1})
    assert fresh["result"]["entries"] == [] and fresh["result"]["epoch"] != epoch


@pytest.mark.parametrize("map_broker", ["memory", "redis"])
def test_map_read_state_with_a_cursor_that_is_no_key(
    live_server: LiveServerFactory, map_broker: str
) -> None:
    """A cursor past every key is an empty last page (no cursor), not an error; one that
    sorts between keys starts the page after it."""
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["channel"]["namespaces"] += MAP_NAMESPACES
    cfg["http_api"] = {"key": KEY}
    if map_broker == "redis":
        require_main_redis()
        cfg["map_broker"] = {"type": "redis", "redis": {"prefix": unique_prefix()}}
    srv = live_server(Node(cfg).asgi_app())
    ch = "board:cursor"
    for key in ("a", "c"):
        _, published = call(srv, "map_publish", {"channel": ch, "key": key, "data": {"k": key}})
    epoch = published["result"]["epoch"]
    for cursor in ("zz", "garbage!!", "c\u0000"):
        status, page = call(srv, "map_read_state", {"channel": ch, "cursor": cursor})
        empty = {"result": {"entries": [], "offset": 2, "epoch": epoch}}
        assert (status, page) == (200, empty), cursor
    _, page = call(srv, "map_read_state", {"channel": ch, "cursor": "b", "limit": 1})
    assert [e["key"] for e in page["result"]["entries"]] == ["c"]
    assert "cursor" not in page["result"]


@pytest.mark.parametrize(
    ("method", "body", "code"),
    [
        ("map_publish", {"channel": "", "key": "a", "data": {}}, 107),
        ("map_publish", {"channel": "board:x", "key": "", "data": {}}, 107),
        ("map_publish", {"channel": "board:x", "key": "a", "data": {}, "key_mode": "x"}, 107),
        ("map_publish", {"channel": "chat:x", "key": "a", "data": {}}, 107),  # not a map
        ("map_publish", {"channel": "nope:x", "key": "a", "data": {}}, 102),
        ("map_publish", {"channel": "cursors:x", "key": "a", "data": [1]}, 107),  # json_object
        ("map_remove", {"channel": "board:x"}, 107),
        ("map_read_state", {"channel": ""}, 107),
        ("map_read_state", {"channel": "board:x", "revision_epoch": "zz"}, 112),
        ("map_stats", {"channel": "chat:x"}, 107),
        ("map_clear", {"channel": "nope:x"}, 102),
    ],
)
def test_map_api_errors(srv: LiveServer, method: str, body: dict[str, Any], code: int) -> None:
    _, reply = call(srv, method, body)
    assert reply["error"]["code"] == code


def test_map_methods_in_a_batch(srv: LiveServer) -> None:
    body = {
        "commands": [
            {"map_publish": {"channel": "board:b", "key": "k", "data": {"x": 1}}},
            {"map_stats": {"channel": "board:b"}},
        ]
    }
    _, reply = call(srv, "batch", body)
    assert reply["replies"][0]["map_publish"]["offset"] == 1
    assert reply["replies"][1] == {"map_stats": {"num_keys": 1}}
