"""Proxy hooks through the session (no client sockets) against a real HTTP backend.

The backend is :class:`tests.interop.test_proxies.Backend` served by uvicorn on loopback
once per module; tests script extra answers through ``backend.overrides``.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from msgspec import Raw
from starlette.responses import JSONResponse, PlainTextResponse, Response

from centrifuge_asgi import (
    ConnectEvent,
    ConnectReply,
    Node,
    RefreshEvent,
    RPCEvent,
    SubRefreshEvent,
    SubscribeEvent,
    SubscribeReply,
)
from centrifuge_asgi import proxy as proxy_module
from centrifuge_asgi.handlers import ClientRef, Handlers
from centrifuge_asgi.protocol.messages import ConnectRequest, SubscribeRequest
from centrifuge_asgi.session import Session, TransportInfo
from tests.conftest import LiveServer
from tests.interop.serve_process import free_port
from tests.interop.test_proxies import Backend, ok, proxy_config

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Backend, str]]:
    backend = Backend(slow_seconds=5.0)  # far past the slow proxy's 300 ms timeout
    srv = LiveServer(backend.app()).start()
    try:
        yield backend, srv.http_url
    finally:
        srv.stop()


@pytest.fixture
def backend(server: tuple[Backend, str]) -> Iterator[Backend]:
    b = server[0]
    b.calls.clear()
    b.overrides.clear()
    yield b
    b.overrides.clear()


@pytest.fixture
def base(server: tuple[Backend, str]) -> str:
    return server[1]


def config(base: str, **extra: Any) -> dict[str, Any]:
    """The interop config plus extra namespaces / named proxies used here."""
    cfg = proxy_config(base)
    cfg["channel"]["namespaces"] += [
        {"name": "open", "allow_subscribe_for_client": True, "allow_publish_for_client": True},
        {
            "name": "bin",
            "publish_proxy_enabled": True,
            "publish_proxy_name": "bin",
            "allow_subscribe_for_client": True,
        },
        {"name": "st", "subscribe_proxy_enabled": True, "subscribe_proxy_name": "status"},
        {"name": "junk", "subscribe_proxy_enabled": True, "subscribe_proxy_name": "junk"},
        {"name": "gone", "subscribe_proxy_enabled": True, "subscribe_proxy_name": "gone"},
        {
            "name": "pxdm",
            "subscribe_proxy_enabled": True,
            "allow_user_limited_channels": True,
            "allow_subscribe_for_client": True,
        },
    ]
    cfg["rpc"]["namespaces"] += [{"name": "bin", "proxy_enabled": True, "proxy_name": "bin"}]
    cfg["proxies"] += [
        {"name": "bin", "endpoint": f"{base}/bin", "binary_encoding": True},
        {
            "name": "status",
            "endpoint": f"{base}/status",
            "http": {
                "status_to_code_transforms": [
                    {"status_code": 403, "to_error": {"code": 1403, "message": "by status"}},
                    {"status_code": 401, "to_disconnect": {"code": 4401, "reason": "go away"}},
                ]
            },
        },
        {"name": "junk", "endpoint": f"{base}/junk"},
        {"name": "gone", "endpoint": f"http://127.0.0.1:{free_port()}/", "timeout": "2s"},  # closed
    ]
    for key, value in extra.items():
        section, _, name = key.partition("__")
        cfg[section][name] = value
    return cfg


@pytest.fixture
async def node(base: str) -> AsyncIterator[Node]:
    async with Node(config(base)) as n:
        yield n
        for s in list(n.registry.sessions()):
            await s.finish()


def replies(session: Session) -> list[dict[str, Any]]:
    return [json.loads(m) for m in session.outbox.drain()]


def frame(*commands: dict[str, Any]) -> bytes:
    return "\n".join(json.dumps(c) for c in commands).encode()


async def connect(node: Node, data: Any = None, **transport: Any) -> tuple[Session, dict[str, Any]]:
    s = node.create_session(TransportInfo(**transport))
    req: dict[str, Any] = {"data": data if data is not None else {"user": "u1"}}
    await s.handle_frame(frame({"id": 1, "connect": req}))
    out = replies(s)
    return s, out[0] if out else {}


async def command(s: Session, **cmd: Any) -> dict[str, Any]:
    await s.handle_frame(frame({"id": 7, **cmd}))
    out = replies(s)
    return next(r for r in out if r.get("id") == 7)


# ------------------------------------------------------------------------ connect


async def test_connect_result_becomes_credentials(node: Node, backend: Backend) -> None:
    s, reply = await connect(node)
    assert reply["connect"]["data"] == {"welcome": "u1"}
    assert set(reply["connect"]["subs"]) == {"px:news"}
    assert s.user == "u1" and json.loads(s.info or b"") == {"name": "U1"}
    assert s.meta == {"tenant": "acme"}


async def test_connect_without_result_is_bad_request(node: Node, backend: Backend) -> None:
    async def empty(body: dict[str, Any]) -> Response:
        return JSONResponse({})

    backend.overrides["connect"] = empty
    s, _ = await connect(node)
    assert (s.close_code, s.close_reason) == (3501, "bad request")


async def test_connect_unknown_namespace_is_102(node: Node, backend: Backend) -> None:
    backend.overrides["connect"] = _fixed(b'{"result": {"user": "u", "channels": ["nope:x"]}}')
    s, reply = await connect(node)
    assert reply["error"]["code"] == 102 and not s.connected


async def test_connect_backend_error_and_disconnect(node: Node, backend: Backend) -> None:
    _, reply = await connect(node, {"deny": True})
    assert reply["error"] == {"code": 1403, "message": "connect denied"}

    async def kick(body: dict[str, Any]) -> Response:
        return JSONResponse({"disconnect": {"code": 4503, "reason": "banned"}})

    backend.overrides["connect"] = kick
    s, _ = await connect(node)
    assert (s.close_code, s.close_reason) == (4503, "banned")


async def test_connect_failure_is_100_or_3004_for_unidirectional(
    node: Node, backend: Backend
) -> None:
    async def broken(body: dict[str, Any]) -> Response:
        return PlainTextResponse("oops", status_code=500)

    backend.overrides["connect"] = broken
    _, reply = await connect(node)
    assert reply["error"] == {"code": 100, "message": "internal server error", "temporary": True}
    s, _ = await connect(node, name="uni_websocket", unidirectional=True)
    assert s.close_code == 3004


async def test_forwarded_static_and_emulated_headers(base: str, backend: Backend) -> None:
    cfg = config(base)
    cfg["client"]["proxy"]["connect"].update(
        http_headers=["Authorization", "cookie", "Content-Length"],
        emulated_headers=["X-Emu"],
        http={"static_headers": {"X-Static": "yes", "Authorization": "static"}},
    )
    async with Node(cfg) as n:
        s = n.create_session(
            TransportInfo(),
            headers={"authorization": "Bearer t", "cookie": "c=1", "x-secret": "no"},
        )
        connect_req = {"data": {"user": "h"}, "headers": {"X-Emu": "e", "X-Other": "o"}}
        await s.handle_frame(frame({"id": 1, "connect": connect_req}))
        await s.finish()
    headers = backend.calls[-1].headers
    assert headers["authorization"] == "Bearer t"  # transport headers come last
    assert headers["cookie"] == "c=1" and headers["x-static"] == "yes"
    assert headers["x-emu"] == "e"
    assert "x-secret" not in headers and "x-other" not in headers
    assert headers["content-type"] == "application/json"


# ----------------------------------------------------------------------- channels


async def test_binary_encoding_uses_b64data(node: Node, backend: Backend) -> None:
    async def answer(body: dict[str, Any]) -> Response:
        assert body["encoding"] == "binary" and "data" not in body
        original = json.loads(base64.b64decode(body["b64data"]))
        new = json.dumps({"b64": original}).encode()
        return ok({"b64data": base64.b64encode(new).decode()})

    backend.overrides["bin"] = answer
    s, _ = await connect(node)
    assert "subscribe" in await command(s, subscribe={"channel": "bin:x"})
    await s.handle_frame(frame({"id": 8, "publish": {"channel": "bin:x", "data": {"v": 1}}}))
    out = replies(s)
    assert {"id": 8, "publish": {}} in out
    [push] = [r["push"] for r in out if "push" in r]
    assert push["pub"]["data"] == {"b64": {"v": 1}}
    reply = await command(s, rpc={"method": "bin:m", "data": {"v": 2}})
    assert reply["rpc"]["data"] == {"b64": {"v": 2}}
    [pub, rpc] = backend.bodies("bin")
    assert json.loads(base64.b64decode(pub["b64data"])) == {"v": 1}
    assert pub["channel"] == "bin:x" and pub["encoding"] == "binary"
    assert rpc["method"] == "bin:m"


async def test_binary_payload_must_be_json_for_json_clients(node: Node, backend: Backend) -> None:
    async def answer(body: dict[str, Any]) -> Response:
        return ok({"b64data": base64.b64encode(b"\x00\x01").decode()})

    backend.overrides["bin"] = answer
    s, _ = await connect(node)
    reply = await command(s, rpc={"method": "bin:m", "data": {}})
    assert reply["error"]["code"] == 100


async def test_status_to_code_transforms(node: Node, backend: Backend) -> None:
    statuses = iter([403, 500, 401])

    async def by_status(body: dict[str, Any]) -> Response:
        return PlainTextResponse("", status_code=next(statuses))

    backend.overrides["status"] = by_status
    s, _ = await connect(node)
    reply = await command(s, subscribe={"channel": "st:a"})
    assert reply["error"] == {"code": 1403, "message": "by status"}
    reply = await command(s, subscribe={"channel": "st:b"})  # no transform for 500
    assert reply["error"]["code"] == 100
    await s.handle_frame(frame({"id": 9, "subscribe": {"channel": "st:c"}}))
    assert (s.close_code, s.close_reason) == (4401, "go away")


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        b'{"result": "a string"}',
        b'{"result": {"expire_at": "soon"}}',
        b'{"error": {"code": 100, "message": "reserved range"}}',
        b'{"disconnect": {"code": 3000, "reason": "reserved range"}}',
        b'{"disconnect": {"code": 4000, "reason": "' + b"x" * 33 + b'"}}',
        b'{"result": {"b64data": "%%%"}}',
    ],
)
async def test_garbage_answers_are_100(node: Node, backend: Backend, answer: bytes) -> None:
    async def junk(body: dict[str, Any]) -> Response:
        return Response(answer, media_type="application/json")

    backend.overrides["junk"] = junk
    s, _ = await connect(node)
    reply = await command(s, subscribe={"channel": "junk:a"})
    assert reply["error"] == {"code": 100, "message": "internal server error", "temporary": True}
    assert s.connected


async def test_unreachable_backend_is_100(node: Node, backend: Backend) -> None:
    s, _ = await connect(node)
    reply = await command(s, subscribe={"channel": "gone:a"})
    assert reply["error"]["code"] == 100 and s.connected


async def test_slow_backend_is_bounded_by_the_timeout(node: Node, backend: Backend) -> None:
    s, _ = await connect(node)
    started = time.monotonic()
    reply = await command(s, subscribe={"channel": "slow:a"})
    assert reply["error"]["code"] == 100
    # timeout 300 ms, backend sleeps 5 s: well under 5 s proves the timeout cut it short
    assert time.monotonic() - started < 2.0
    assert (await command(s, rpc={"method": "echo", "data": 1}))["rpc"]["data"]["echo"] == 1


async def test_subscribe_override_and_expiry(node: Node, backend: Backend) -> None:
    expire_at = int(time.time()) + 100

    async def answer(body: dict[str, Any]) -> Response:
        override = {"presence": {"value": False}, "join_leave": {"value": True}}
        return ok({"override": override, "expire_at": expire_at, "b64info": ""})

    backend.overrides["subscribe"] = answer
    s, _ = await connect(node)
    assert "subscribe" in await command(s, subscribe={"channel": "px:o"})
    sub = s.subs["px:o"]
    assert sub.presence is False and sub.emit_join_leave is True
    assert sub.expire_at == expire_at and not sub.client_side_refresh


# ----------------------------------------------------------------- refresh hooks


def ref(session: Session) -> ClientRef:
    return session.client_ref()


async def test_refresh_hook_mapping(node: Node, backend: Backend) -> None:
    s, _ = await connect(node)
    refresh = node.handlers.refresh
    assert refresh is not None
    reply = await refresh(RefreshEvent(ref(s)))
    assert not reply.expired and reply.expire_at and reply.expire_at > time.time() + 3000
    assert backend.bodies("refresh")[-1]["meta"] == {"tenant": "acme"}

    async def answer(body: dict[str, Any]) -> Response:
        return ok({"info": {"v": 2}, "meta": {"tenant": "new"}})

    backend.overrides["refresh"] = answer
    reply = await refresh(RefreshEvent(ref(s)))
    assert reply.expire_at is None and json.loads(reply.info) == {"v": 2}
    assert s.meta == {"tenant": "new"}
    ignored = (b'{"error": {"code": 1400}}', b'{"disconnect": {"code": 1, "reason": "x"}}')
    for expired in (b'{"result": {"expired": true}}', *ignored):
        backend.overrides["refresh"] = _fixed(expired)
        assert (await refresh(RefreshEvent(ref(s)))).expired
    backend.overrides["refresh"] = _fixed(b"garbage")
    reply = await refresh(RefreshEvent(ref(s)))  # kept alive, checked again a minute later
    assert not reply.expired and reply.expire_at is not None
    assert 55 < reply.expire_at - time.time() <= 61


async def test_sub_refresh_hook_mapping(node: Node, backend: Backend) -> None:
    s, _ = await connect(node)
    assert "subscribe" in await command(s, subscribe={"channel": "px:r"})
    hook = node.handlers.sub_refresh
    assert hook is not None
    backend.overrides["sub_refresh"] = _fixed(b'{"result": {"expire_at": 2000000000, "info": 7}}')
    reply = await hook(SubRefreshEvent(ref(s), "px:r"))
    assert reply.expire_at == 2000000000 and s.subs["px:r"].chan_info == b"7"
    backend.overrides["sub_refresh"] = _fixed(b'{"result": {"expired": true}}')
    assert (await hook(SubRefreshEvent(ref(s), "px:r"))).expired
    backend.overrides["sub_refresh"] = _fixed(b"", status=502)
    reply = await hook(SubRefreshEvent(ref(s), "px:r"))
    assert not reply.expired and reply.expire_at and reply.expire_at > time.time() + 55
    # namespaces without the proxy and no Python handler expire, as without any handler
    assert (await hook(SubRefreshEvent(ref(s), "open:x"))).expired


def _fixed(content: bytes, status: int = 200) -> Any:
    async def answer(body: dict[str, Any]) -> Response:
        return Response(content, status_code=status, media_type="application/json")

    return answer


# -------------------------------------------------------------------- precedence


async def test_python_handlers_serve_namespaces_without_proxy(
    node: Node, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    @node.on_subscribe
    async def on_subscribe(event: SubscribeEvent) -> SubscribeReply | None:
        seen.append(event.channel)
        return SubscribeReply(data={"by": "python"})

    @node.on_rpc("local")
    async def local(event: RPCEvent) -> Any:
        return {"by": "python"}

    @node.on_rpc()
    async def anything(event: RPCEvent) -> Any:
        return {"fallback": event.method}

    with caplog.at_level(logging.WARNING, "centrifuge_asgi.proxy"):

        @node.on_connecting
        async def on_connecting(event: ConnectEvent) -> ConnectReply | None:
            raise AssertionError("the connect proxy decides")

    assert "client.proxy.connect is enabled" in caplog.text
    s, reply = await connect(node)
    assert "connect" in reply
    plain = await command(s, subscribe={"channel": "plain"})
    assert plain["subscribe"]["data"] == {"by": "python"}
    proxied = await command(s, subscribe={"channel": "px:p"})
    assert "data" not in proxied["subscribe"]
    assert seen == ["plain"]
    assert (await command(s, rpc={"method": "local"}))["rpc"]["data"] == {"by": "python"}
    assert (await command(s, rpc={"method": "off:m"}))["rpc"]["data"] == {"fallback": "off:m"}
    echoed = await command(s, rpc={"method": "echo"})
    assert echoed["rpc"]["data"]["method"] == "echo"


async def test_user_limited_channels_bypass_the_subscribe_proxy(
    node: Node, backend: Backend
) -> None:
    """Centrifugo's OnSubscribe: the user list alone decides a user-limited channel; the
    subscribe proxy is called for the namespace's other channels only."""
    mallory, _ = await connect(node, data={"user": "mallory"})
    assert (await command(mallory, subscribe={"channel": "pxdm:x#alice"}))["error"]["code"] == 103
    alice, _ = await connect(node, data={"user": "alice"})
    assert "subscribe" in await command(alice, subscribe={"channel": "pxdm:x#alice"})
    assert backend.bodies("subscribe") == []
    assert "subscribe" in await command(mallory, subscribe={"channel": "pxdm:x"})
    assert [b["channel"] for b in backend.bodies("subscribe")] == ["pxdm:x"]


async def test_unidirectional_subs_skip_subscribe_proxy_namespaces(node: Node) -> None:
    """Centrifugo's OnClientConnecting takes a ``subs`` key only where no subscribe proxy
    is enabled (allow_subscribe_for_client there does not bypass the proxy)."""
    s = node.create_session(TransportInfo(name="uni_websocket", unidirectional=True))
    req = ConnectRequest(
        data=Raw(b'{"user": "alice"}'),
        subs={ch: SubscribeRequest() for ch in ("pxdm:x", "pxdm:y#alice", "open:z")},
    )
    assert await s.connect_unidirectional(req) is None
    assert set(s.subs) == {"px:news", "open:z"}  # px:news: from the connect proxy


async def test_nothing_installed_without_proxies() -> None:
    node = Node({})
    assert type(node.handlers) is Handlers


async def test_use_transport_and_close_on_shutdown(base: str) -> None:
    calls: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        return httpx.Response(200, json={"result": {"data": {"mocked": True}}})

    node = Node(config(base))
    proxy_module.use_transport(node, httpx.MockTransport(handler))
    async with node:
        s, _ = await connect(node)
        assert (await command(s, rpc={"method": "m"}))["rpc"]["data"] == {"mocked": True}
        caller = proxy_module._caller(node)
        assert caller is not None
        client = caller._client
        assert client is not None and not client.is_closed
        await s.finish()
    assert client.is_closed and caller._client is None
    assert calls[-1]["method"] == "m"
