"""The server HTTP API in-process (httpx ASGI transport): shapes, auth order, bad input.

Each case checks the exact answer of server-api spec §1 (status, body, content type).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from msgspec import Raw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from centrifuge_asgi import Node
from centrifuge_asgi.api import ApiHandler, api_app
from centrifuge_asgi.api_schema import LegacyCommand
from centrifuge_asgi.engines.base import ClientInfo

pytestmark = pytest.mark.anyio

KEY = "unit-key"
AUTH = {"X-API-Key": KEY}
CONFIG: dict[str, Any] = {
    "http_api": {"key": KEY},
    "channel": {
        "namespaces": [
            {"name": "news", "history_size": 5, "history_ttl": "60s", "presence": True},
            {"name": "chat", "presence": True},
            {"name": "obj", "publication_data_format": "json_object"},
            {"name": "bin", "publication_data_format": "binary"},
            {
                "name": "binlog",
                "publication_data_format": "binary",
                "history_size": 5,
                "history_ttl": "60s",
            },
        ]
    },
}


def config(**http_api: Any) -> dict[str, Any]:
    return {**CONFIG, "http_api": {**CONFIG["http_api"], **http_api}}


@pytest.fixture
async def make() -> AsyncIterator[Any]:
    """``await make(config, app=None) -> httpx.AsyncClient`` over a running node."""
    nodes: list[Node] = []
    clients: list[httpx.AsyncClient] = []

    async def factory(cfg: dict[str, Any] | None = None, app: Any = None) -> httpx.AsyncClient:
        node = Node(cfg if cfg is not None else CONFIG)
        await node.__aenter__()
        nodes.append(node)
        transport = httpx.ASGITransport(app=app(node) if app else node.asgi_app())
        client = httpx.AsyncClient(transport=transport, base_url="http://api")
        client.node = node  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield factory
    for c in clients:
        await c.aclose()
    for n in reversed(nodes):  # task groups nest: leave them in reverse order
        await n.__aexit__(None, None, None)


async def call(c: httpx.AsyncClient, method: str, body: Any, **kw: Any) -> Any:
    r = await c.post(f"/api/{method}", json=body, headers=kw.pop("headers", AUTH), **kw)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    return r.json()


# ------------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ({"X-API-Key": KEY}, "", 200),
        ({"Authorization": f"apikey {KEY}"}, "", 200),
        ({"Authorization": f"APIKEY {KEY}"}, "", 200),
        ({}, f"?api_key={KEY}", 200),
        # X-API-Key set: Authorization is never looked at, even if the header key is wrong
        ({"X-API-Key": "bad", "Authorization": f"apikey {KEY}"}, "", 401),
        # ... but the query key is still checked last
        ({"X-API-Key": "bad"}, f"?api_key={KEY}", 200),
        ({"Authorization": f"bearer {KEY}"}, "", 401),
        ({"Authorization": f"apikey {KEY} extra"}, "", 401),
        ({}, "", 401),
        ({}, "?api_key=bad", 401),
    ],
)
async def test_auth_order(make: Any, headers: dict[str, str], query: str, status: int) -> None:
    c = await make()
    r = await c.post(f"/api/info{query}", json={}, headers=headers)
    assert r.status_code == status
    if status == 401:
        assert r.content == b""


async def test_empty_key_rejects_everything_unless_insecure(make: Any) -> None:
    c = await make({"http_api": {"key": ""}})
    for headers in ({"X-API-Key": ""}, {}, {"Authorization": "apikey "}):
        r = await c.post("/api/info", json={}, headers=headers)
        assert (r.status_code, r.content) == (401, b"")
    c = await make({"http_api": {"insecure": True}})
    assert (await c.post("/api/info", json={})).status_code == 200


async def test_path_and_method_checks_come_before_auth(make: Any) -> None:
    c = await make()
    for path in ("/api/connections", "/api/device_register", "/api/", "/api/nope"):
        r = await c.post(path, json={})
        assert r.status_code == 404, path
    r = await c.get("/api/publish")  # no key: 405 still wins
    assert (r.status_code, r.content) == (405, b"")
    r = await c.get("/api")
    assert (r.status_code, r.content) == (405, b"")
    # cent with a base URL ending in "/" posts to //publish
    r = await c.post("/api//info", json={}, headers=AUTH)
    assert r.status_code == 200 and "nodes" in r.json()["result"]


async def test_disabled_and_custom_prefix(make: Any) -> None:
    c = await make(config(disabled=True))
    assert (await c.post("/api/info", json={}, headers=AUTH)).status_code == 404
    c = await make(config(handler_prefix="/srv/"))
    assert (await c.post("/srv/info", json={}, headers=AUTH)).status_code == 200
    r = await c.post("/srv", content=b'{"method":"info"}', headers=AUTH)
    assert "nodes" in r.json()["result"]


# ------------------------------------------------------------------- methods


async def test_publish_result_shapes(make: Any) -> None:
    c = await make()
    assert await call(c, "publish", {"channel": "chat:1", "data": {"x": 1}}) == {"result": {}}
    body = await call(c, "publish", {"channel": "news:1", "data": [1, 2]})
    assert body["result"]["offset"] == 1 and body["result"]["epoch"]
    extra = {"delta": True, "version": 3, "version_epoch": "v", "tags": {"k": "v"}}
    body = await call(c, "publish", {"channel": "news:1", "data": "s", **extra})
    assert body["result"]["offset"] == 2
    # idempotency: the cached result, no new publication
    first = await call(c, "publish", {"channel": "news:1", "data": 1, "idempotency_key": "k"})
    again = await call(c, "publish", {"channel": "news:1", "data": 1, "idempotency_key": "k"})
    assert first == again
    hist = await call(c, "history", {"channel": "news:1", "limit": -1})
    assert hist["result"]["offset"] == 3
    pubs = hist["result"]["publications"]
    assert [p["data"] for p in pubs] == [[1, 2], "s", 1]
    assert pubs[1]["tags"] == {"k": "v"} and "tags" not in pubs[0]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"data": 1}, 107),
        ({"channel": "news:1"}, 107),
        ({"channel": "news:1", "b64data": "!!"}, 107),
        ({"channel": "zzz:1", "data": 1}, 102),
        ({"channel": "obj:1", "data": [1]}, 107),
        ({"channel": "obj:1", "b64data": base64.b64encode(b"[1]").decode()}, 107),
    ],
)
async def test_publish_errors(make: Any, body: dict[str, Any], code: int) -> None:
    c = await make()
    out = await call(c, "publish", body)
    assert out == {"error": {"code": code, "message": _MESSAGES[code]}}


_MESSAGES = {
    100: "internal server error",
    102: "unknown channel",
    104: "not found",
    107: "bad request",
    108: "not available",
    112: "unrecoverable position",
}


async def test_publication_data_formats(make: Any) -> None:
    c = await make()
    assert await call(c, "publish", {"channel": "obj:1", "data": {"a": 1}}) == {"result": {}}
    assert await call(c, "publish", {"channel": "bin:1", "b64data": ""}) == {"result": {}}
    raw = base64.b64encode(b"\x00\n\x01").decode()
    assert await call(c, "publish", {"channel": "bin:1", "b64data": raw}) == {"result": {}}


async def test_broadcast(make: Any) -> None:
    c = await make()
    out = await call(c, "broadcast", {"channels": ["news:b", "", "zzz:1", "chat:1"], "data": 1})
    items = out["result"]["responses"]
    assert items[0]["result"]["offset"] == 1
    assert items[1] == {"error": {"code": 107, "message": "bad request"}}
    assert items[2] == {"error": {"code": 102, "message": "unknown channel"}}
    assert items[3] == {"result": {}}
    for bad in (
        {"channels": [], "data": 1},
        {"channels": ["a"]},
        {"channels": ["a"], "b64data": "?"},
    ):
        assert (await call(c, "broadcast", bad))["error"]["code"] == 107


async def test_presence_history_channels_info(make: Any) -> None:
    c = await make()
    node: Node = c.node  # type: ignore[attr-defined]
    await node.presence_manager.add_presence(
        "chat:1", "c1", ClientInfo("u1", "c1", conn_info=b'{"n":1}', chan_info=b"\x00bin")
    )
    out = await call(c, "presence", {"channel": "chat:1"})
    assert out == {
        "result": {"presence": {"c1": {"user": "u1", "client": "c1", "conn_info": {"n": 1}}}}
    }
    out = await call(c, "presence_stats", {"channel": "chat:1"})
    assert out == {"result": {"num_clients": 1, "num_users": 1}}
    assert await call(c, "presence", {"channel": "news:1"}) == {"result": {"presence": {}}}
    # history fields are present even when empty; an epoch appears on first read
    out = await call(c, "history", {"channel": "news:h"})
    assert out["result"]["publications"] == [] and out["result"]["offset"] == 0
    epoch = out["result"]["epoch"]
    assert epoch
    await call(c, "publish", {"channel": "news:h", "data": 1})
    await call(c, "publish", {"channel": "news:h", "data": 2})
    out = await call(c, "history", {"channel": "news:h", "limit": 1, "reverse": True})
    assert [p["data"] for p in out["result"]["publications"]] == [2]
    out = await call(
        c, "history", {"channel": "news:h", "limit": -1, "since": {"offset": 1, "epoch": epoch}}
    )
    assert [p["offset"] for p in out["result"]["publications"]] == [2]
    assert await call(c, "history_remove", {"channel": "news:h"}) == {"result": {}}
    out = await call(c, "history", {"channel": "news:h", "limit": -1})
    assert out["result"]["publications"] == [] and out["result"]["offset"] == 2
    out = await call(c, "channels", {"pattern": "*"})
    assert out == {"result": {"channels": {}}}
    node_info = (await call(c, "info", {}))["result"]["nodes"][0]
    for key in ("uid", "name", "version", "num_clients", "num_users", "num_channels", "num_subs"):
        assert key in node_info
    assert node_info["uid"] == node.node_id


@pytest.mark.parametrize(
    ("method", "body", "code"),
    [
        ("presence", {"channel": "news:1"}, None),
        ("presence", {"channel": "obj:1"}, 108),
        ("presence", {}, 107),
        ("presence_stats", {"channel": "zzz:1"}, 102),
        ("history", {"channel": "chat:1"}, 108),
        ("history", {"channel": "news:1", "since": {"offset": 0, "epoch": "other"}}, 112),
        (
            "history",
            {"channel": "news:1", "limit": 1, "reverse": True, "since": {"offset": 0}},
            100,
        ),
        ("history", {"channel": "news:1", "limit": -2}, 107),
        ("history_remove", {"channel": "chat:1"}, 108),
        ("subscribe", {"user": "u"}, 107),
        ("subscribe", {"user": "u", "channel": "zzz:1"}, 102),
        ("subscribe", {"user": "u", "channel": "chat:1", "b64info": "%%"}, 107),
        (
            "subscribe",
            {"user": "u", "channel": "chat:1", "override": {"presence": {"value": False}}},
            None,
        ),
        ("unsubscribe", {"user": "u", "channel": "zzz:1"}, 102),
        ("unsubscribe", {"user": "u", "channel": "chat:1"}, None),
        ("disconnect", {"user": "u", "disconnect": {"code": 4000, "reason": "x"}}, None),
        ("refresh", {"user": "u", "expire_at": 1, "info": {"a": 1}}, None),
        ("rpc", {"method": ""}, 107),
        ("rpc", {"method": "x", "params": {}}, 104),
    ],
)
async def test_method_errors(
    make: Any, method: str, body: dict[str, Any], code: int | None
) -> None:
    c = await make()
    out = await call(c, method, body)
    if code is None:
        assert "result" in out and "error" not in out, out
    else:
        assert out == {"error": {"code": code, "message": _MESSAGES[code]}}


async def test_binary_history_publication_answers_internal_error(make: Any) -> None:
    c = await make()
    node: Node = c.node  # type: ignore[attr-defined]
    raw = base64.b64encode(b"\xff\x00").decode()
    assert (await call(c, "publish", {"channel": "binlog:b", "b64data": raw}))["result"]
    out = await call(c, "history", {"channel": "binlog:b", "limit": -1})
    assert out["error"]["code"] == 100
    hist = await node.history("binlog:b", limit=-1)  # bytes intact for protobuf clients
    assert hist.publications[0].data == b"\xff\x00"


DEEP_OK = b"[" * 500 + b"]" * 500
TOO_DEEP = b"[" * 513 + b"]" * 513


@pytest.mark.parametrize(
    "body",
    [
        {"b64data": base64.b64encode(b"\xff\x00").decode()},  # not UTF-8
        {"b64data": base64.b64encode(b"plain text").decode()},  # UTF-8, not JSON
        {"b64data": base64.b64encode(TOO_DEEP).decode()},
        {"data": json.loads(TOO_DEEP)},
    ],
    ids=["b64-not-utf8", "b64-not-json", "b64-too-deep", "data-too-deep"],
)
async def test_publication_a_json_client_cannot_receive_is_107(
    make: Any, body: dict[str, Any]
) -> None:
    """Refused before it is stored, in every format but binary (default, json, json_object)."""
    c = await make()
    node: Node = c.node  # type: ignore[attr-defined]
    for channel in ("news:x", "obj:x"):
        out = await call(c, "publish", {"channel": channel, **body})
        assert out == {"error": {"code": 107, "message": "bad request"}}
    assert (await node.history("news:x", limit=-1)).publications == []
    out = await call(c, "broadcast", {"channels": ["news:x", "bin:x"], **body})
    assert [r.get("error", {}).get("code") for r in out["result"]["responses"]] == [107, None]


async def test_invalid_utf8_in_body_data_is_107(make: Any) -> None:
    """msgspec skips over ``data`` without checking UTF-8: the publication check does."""
    c = await make()
    body = b'{"channel": "news:x", "data": {"text": "\xff\xfe"}}'
    r = await c.post("/api/publish", content=body, headers=AUTH)
    assert r.json() == {"error": {"code": 107, "message": "bad request"}}
    assert (await c.node.history("news:x", limit=-1)).publications == []  # type: ignore[attr-defined]


async def test_deep_valid_payload_is_published(make: Any) -> None:
    c = await make()
    out = await call(c, "publish", {"channel": "news:x", "data": json.loads(DEEP_OK)})
    assert out == {"result": {"offset": 1, "epoch": out["result"]["epoch"]}}
    raw = base64.b64encode(b'{"a":' + DEEP_OK + b"}").decode()
    assert "result" in await call(c, "publish", {"channel": "obj:x", "b64data": raw})


async def test_unexpected_exception_is_a_100_not_a_traceback(make: Any) -> None:
    c = await make()
    node: Node = c.node  # type: ignore[attr-defined]

    def boom(pattern: str = "") -> dict[str, int]:
        raise RuntimeError("boom")

    node.channels = boom  # type: ignore[method-assign]
    assert (await call(c, "channels", {}))["error"]["code"] == 100


# --------------------------------------------------------------------- batch


async def test_batch_replies_sequential_and_parallel(make: Any) -> None:
    c = await make()
    for parallel in (False, True):
        commands = [
            {"publish": {"channel": "news:x", "data": 1}},
            {"publish": {"channel": "zzz:1", "data": 1}},
            {"connections": {}},
            None,
            {"subscribe": {"user": "u", "channel": "chat:1"}},
            {"presence_stats": {"channel": "chat:1"}},
        ]
        r = await c.post(
            "/api/batch", json={"commands": commands, "parallel": parallel}, headers=AUTH
        )
        assert r.status_code == 200
        replies = r.json()["replies"]
        assert set(replies[0]) == {"publish"} and replies[0]["publish"]["offset"] >= 1
        assert replies[1:5] == [
            {"error": {"code": 102, "message": "unknown channel"}},
            {"error": {"code": 104, "message": "not found"}},
            {"error": {"code": 107, "message": "bad request"}},
            {"subscribe": {}},
        ]
        assert replies[5] == {"presence_stats": {"num_clients": 0, "num_users": 0}}
    r = await c.post("/api/batch", json={"commands": []}, headers=AUTH)
    assert r.json() == {"replies": []}


async def test_batch_never_uses_transport_error_mode(make: Any) -> None:
    c = await make(config(error_mode="transport"))
    body = {"commands": [{"publish": {"channel": "zzz:1", "data": 1}}]}
    r = await c.post("/api/batch", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["replies"][0]["error"]["code"] == 102


# -------------------------------------------------------------- error modes


async def test_transport_error_mode(make: Any) -> None:
    c = await make()
    headers = {**AUTH, "X-Centrifugo-Error-Mode": "transport"}
    for body, status, code in [
        ({"channel": "zzz:1", "data": 1}, 404, 102),
        ({"channel": "", "data": 1}, 400, 107),
    ]:
        r = await c.post("/api/publish", json=body, headers=headers)
        assert r.status_code == status
        assert r.json() == {"code": code, "message": _MESSAGES[code]}
    r = await c.post("/api/broadcast", json={"channels": ["zzz:1"], "data": 1}, headers=headers)
    assert r.status_code == 200 and r.json()["result"]["responses"][0]["error"]["code"] == 102
    c = await make(config(error_mode="transport"))
    r = await c.post("/api/history", json={"channel": "chat:1"}, headers=AUTH)
    assert (r.status_code, r.json()) == (400, {"code": 108, "message": "not available"})


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[]",
        b'"x"',
        b'{"channel": 1, "data": 1}',
        b'{"channel": "news:1", "data": 1, "tags": {"a": 1}}',
        b'{"channel": "news:1", "data": 1, "skip_history": "yes"}',
        b"\xff\xfe",
    ],
)
async def test_undecodable_body_is_plain_400(make: Any, body: bytes) -> None:
    c = await make()
    r = await c.post("/api/publish", content=body, headers=AUTH)
    assert (r.status_code, r.text) == (400, "Bad Request")
    assert r.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("history", {"channel": "news:1", "limit": "1"}),
        ("history", {"channel": "news:1", "since": {"offset": -1}}),
        ("history", {"channel": "news:1", "limit": 2**31}),
        ("disconnect", {"user": "u", "disconnect": {"code": -1}}),
        ("broadcast", {"channels": "news:1", "data": 1}),
        ("batch", {"commands": [{"publish": {"channel": 5}}]}),
        ("batch", {"commands": {}}),
        ("info", None),
    ],
)
async def test_wrong_types_are_400(make: Any, method: str, body: Any) -> None:
    c = await make()
    content = b"" if body is None else json.dumps(body).encode()
    r = await c.post(f"/api/{method}", content=content, headers=AUTH)
    assert (r.status_code, r.text) == (400, "Bad Request")


UINT64_FIELDS = [
    ("publish", {"channel": "news:1", "data": 1}, ("version",)),
    ("broadcast", {"channels": ["news:1"], "data": 1}, ("version",)),
    ("map_publish", {"channel": "map:1", "key": "k", "data": {}}, ("version",)),
    ("shared_poll_publish", {"channel": "poll:1", "key": "k", "data": {}}, ("version",)),
    ("history", {"channel": "news:1"}, ("since", "offset")),
    ("subscribe", {"user": "u", "channel": "news:1"}, ("recover_since", "offset")),
    ("map_read_state", {"channel": "map:1"}, ("revision_offset",)),
    ("map_read_stream", {"channel": "map:1"}, ("since_offset",)),
]


def _with(body: dict[str, Any], path: tuple[str, ...], value: int) -> dict[str, Any]:
    if len(path) == 1:
        return {**body, path[0]: value}
    return {**body, path[0]: _with({}, path[1:], value)}


@pytest.mark.parametrize(
    ("method", "body", "path"),
    UINT64_FIELDS,
    ids=[f"{m}.{'.'.join(p)}" for m, _, p in UINT64_FIELDS],
)
async def test_uint64_fields_past_their_range_are_400(
    make: Any, method: str, body: dict[str, Any], path: tuple[str, ...]
) -> None:
    """A uint64 field above 2**64 - 1 fails the body as in Go's encoding/json (a version
    nothing can encode for Protobuf clients would suppress every later one); the largest
    uint64 is decoded (whatever the command then answers, it is no 400)."""
    c = await make()
    for request in (body, {"commands": [{method: body}]}):
        url = "/api/batch" if "commands" in request else f"/api/{method}"
        for value, bad in ((2**64, True), (2**64 + 1, True), (2**64 - 1, False)):
            if "commands" in request:
                content = {"commands": [{method: _with(body, path, value)}]}
            else:
                content = _with(body, path, value)
            r = await c.post(url, content=json.dumps(content).encode(), headers=AUTH)
            if bad:
                assert (r.status_code, r.text) == (400, "Bad Request"), (url, value)
            else:
                assert r.status_code == 200, (url, value, r.text)


DEEP = b"[" * 2000 + b"]" * 2000  # valid JSON, nested past any decoder's recursion limit


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/publish", b'{"channel": "news:1", "data": ' + DEEP + b"}"),
        ("/api/publish", b'{"channel": "news:1", "unknown": ' + DEEP + b"}"),
        (
            "/api/batch",
            b'{"commands": [{"publish": {"channel": "news:1", "data": ' + DEEP + b"}}]}",
        ),
        ("/api", b'{"method": "publish", "params": {"channel": "news:1", "data": ' + DEEP + b"}}"),
        ("/api", b'{"method": "info"}\n' + DEEP),
    ],
    ids=["publish-data", "unknown-field", "batch", "legacy", "legacy-second-command"],
)
async def test_deeply_nested_body_is_plain_400(make: Any, path: str, body: bytes) -> None:
    c = await make()
    r = await c.post(path, content=body, headers=AUTH)
    assert (r.status_code, r.text) == (400, "Bad Request")
    assert r.headers["content-type"].startswith("text/plain")
    assert (await c.post("/api/info", json={}, headers=AUTH)).status_code == 200


async def test_deeply_nested_legacy_params_are_107(make: Any) -> None:
    """A legacy command whose params cannot be decoded is a per-command 107."""
    c = await make()
    handler = ApiHandler(c.node)  # type: ignore[attr-defined]
    params = b'{"channel": "news:1", "data": ' + DEEP + b"}"
    command = LegacyCommand(id=7, method="publish", params=Raw(params))
    reply = await handler.executor.legacy(command)
    assert reply == {"id": 7, "error": {"code": 107, "message": "bad request"}}


async def test_deeply_nested_b64data_is_107(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    """b64data checked against a JSON data format: too deep to decode is not JSON."""
    c = await make()
    body = {"channel": "obj:1", "b64data": base64.b64encode(b'{"a":' + DEEP + b"}").decode()}
    assert await call(c, "publish", body) == {"error": {"code": 107, "message": "bad request"}}
    assert not [r for r in caplog.records if r.exc_info]  # no traceback logged


@pytest.mark.parametrize(
    ("disconnect", "code"),
    [
        ({"code": 3000, "reason": "r"}, None),
        ({"code": 4999, "reason": "x" * 123}, None),
        ({"code": 4000, "reason": "\u00e9" * 61}, None),  # 122 bytes
        ({"code": 2999, "reason": "r"}, 107),
        ({"code": 5000, "reason": "r"}, 107),
        ({"code": 0}, 107),
        ({"code": 1000, "reason": "normal"}, 107),
        ({"code": 4000, "reason": "x" * 124}, 107),
        ({"code": 4000, "reason": "\u00e9" * 62}, 107),  # 62 characters, 124 bytes
    ],
)
async def test_disconnect_code_and_reason_limits(
    make: Any, disconnect: dict[str, Any], code: int | None
) -> None:
    """A close frame carries a code in 3000-4999 and at most 123 bytes of reason."""
    c = await make()
    out = await call(c, "disconnect", {"user": "u", "disconnect": disconnect})
    if code is None:
        assert out == {"result": {}}
    else:
        assert out == {"error": {"code": code, "message": _MESSAGES[code]}}
    batch = {"commands": [{"disconnect": {"user": "u", "disconnect": disconnect}}]}
    replies = (await call(c, "batch", batch))["replies"]
    assert replies == [{"disconnect": {}} if code is None else out]


async def test_oversized_body_is_413(make: Any) -> None:
    c = await make(config(max_body_size=100))
    r = await c.post("/api/publish", json={"channel": "chat:1", "data": "x" * 200}, headers=AUTH)
    assert r.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(10):
            yield b" " * 20

    r = await c.post("/api/info", content=chunks(), headers=AUTH)
    assert r.status_code == 413
    assert (await c.post("/api/info", json={}, headers=AUTH)).status_code == 200


async def _stalled(reading: anyio.Event | None = None) -> AsyncIterator[bytes]:
    """A body that stops half-way (the peer never sends the rest); ``reading`` is set once
    the endpoint waits for the rest."""
    yield b'{"channel": "chat:1", '
    if reading is not None:
        reading.set()
    await anyio.sleep(30)


async def test_a_stalled_body_is_408_after_read_timeout(make: Any) -> None:
    c = await make({**CONFIG, "http_server": {"read_timeout": "200ms"}})
    for path in ("/api/publish", "/api"):  # per-method and legacy endpoints
        started = anyio.current_time()
        with anyio.fail_after(5):
            r = await c.post(path, content=_stalled(), headers=AUTH)
        assert (r.status_code, r.text, r.headers["connection"]) == (408, "Request Timeout", "close")
        assert anyio.current_time() - started >= 0.2
    assert len(c.node.body_reads) == 0


async def test_shutdown_ends_a_body_being_read_with_503(make: Any) -> None:
    c = await make({**CONFIG, "http_server": {"read_timeout": "60s"}})
    node: Node = c.node
    answers: list[httpx.Response] = []
    reading = anyio.Event()

    async def post() -> None:
        answers.append(await c.post("/api/publish", content=_stalled(reading), headers=AUTH))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(post)
            await reading.wait()
            assert len(node.body_reads) == 1
            await node.shutdown()
    assert (answers[0].status_code, answers[0].headers["connection"]) == (503, "close")
    # A body that starts once shutdown has begun is refused at once.
    with anyio.fail_after(5):
        r = await c.post("/api/publish", content=_stalled(), headers=AUTH)
    assert r.status_code == 503


# -------------------------------------------------------------------- legacy


async def test_legacy_endpoint(make: Any) -> None:
    c = await make()
    body = b"\n".join(
        [
            b'{"id": 1, "method": "publish", "params": {"channel": "news:l", "data": {"a": 1}}}',
            b'{"id": 2, "method": "PRESENCE_STATS", "params": {"channel": "chat:1"}}',
            b'{"id": 3, "method": 9}  {"id": 4, "method": "batch", "params": {}}',
            b'{"method": "history", "params": {"channel": "news:l", "limit": "x"}}',
            b'{"id": 6, "method": 0, "params": {"channel": "zzz:1", "data": 1}}',
        ]
    )
    r = await c.post("/api", content=body, headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    lines = [json.loads(line) for line in r.text.split("\n")]
    assert lines[0] == {"id": 1, "result": {"offset": 1, "epoch": lines[0]["result"]["epoch"]}}
    assert lines[1] == {"id": 2, "result": {"num_clients": 0, "num_users": 0}}
    assert lines[2]["id"] == 3 and "nodes" in lines[2]["result"]
    assert lines[3] == {"id": 4, "error": {"code": 104, "message": "not found"}}
    assert lines[4] == {"error": {"code": 107, "message": "bad request"}}
    assert lines[5] == {"id": 6, "error": {"code": 102, "message": "unknown channel"}}
    assert not r.text.endswith("\n")


@pytest.mark.parametrize("body", [b"", b"  \n", b'{"method": "info"', b"[1]", b'{"method": 1.5}'])
async def test_legacy_bad_body(make: Any, body: bytes) -> None:
    c = await make()
    r = await c.post("/api", content=body, headers=AUTH)
    assert r.status_code == 400


async def test_legacy_auth_and_shutdown(make: Any) -> None:
    c = await make()
    assert (await c.post("/api", content=b'{"method":"info"}')).status_code == 401
    node: Node = c.node  # type: ignore[attr-defined]
    await node.shutdown(grace=0)
    r = await c.post("/api", content=b'{"method":"info"}', headers=AUTH)
    assert r.status_code == 503


# ----------------------------------------------------------------- mounting


async def test_api_app_behind_host_auth(make: Any) -> None:
    """A host mounts the API alone, authenticates requests itself and skips the key."""

    def host(node: Node) -> Starlette:
        inner = api_app(node, insecure=True)

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            request = Request(scope)
            if request.headers.get("x-session") != "admin":
                await Response(status_code=403)(scope, receive, send)
                return
            await inner(scope, receive, send)

        return Starlette(routes=[Mount("/admin", app=guarded)])

    c = await make(config(disabled=True), app=host)
    assert (await c.post("/admin/api/info", json={})).status_code == 403
    r = await c.post("/admin/api/info", json={}, headers={"x-session": "admin"})
    assert r.status_code == 200 and r.json()["result"]["nodes"]
    r = await c.post("/admin/api", content=b'{"method":"info"}', headers={"x-session": "admin"})
    assert "nodes" in r.json()["result"]


def test_internal_port_split_apps() -> None:
    """``serve`` with an internal port: which routes each listener gets."""
    from centrifuge_asgi.cli import _internal_port, _split_apps

    def paths(app: Starlette) -> set[str]:
        return {getattr(r, "path", "") for r in app.routes}

    cfg = {**config(), "prometheus": {"enabled": True}, "health": {"enabled": True}}
    main, internal = _split_apps(Node(cfg))
    assert "/api" not in paths(main) and "/connection/websocket" in paths(main)
    assert {"/api", "/metrics", "/health"} <= paths(internal)
    main, internal = _split_apps(Node({**cfg, "http_api": {"key": KEY, "external": True}}))
    assert "/api" in paths(main) and "/api" not in paths(internal)
    assert {"/metrics", "/health"} <= paths(internal)
    assert [_internal_port(v) for v in ("", "0", 9001, "9002")] == [None, None, 9001, 9002]
