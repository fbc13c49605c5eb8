"""gRPC proxies against a real grpcio backend: centrifuge-python 0.7.0 ↔ node ↔ backend.

The backend is a grpcio server (thread pool) on loopback implementing Centrifugo's
``centrifugal.centrifugo.proxy.CentrifugoProxy``; it records every call with its
metadata and answers by user, channel and method names. The node runs under uvicorn with
``grpc://`` proxy endpoints; each test drives the SDK and checks what both sides saw.
Also: subscription streams (unidirectional and bidirectional gRPC, and the Python
``on_subscribe_stream`` generator), TLS, and the config error without grpcio.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import grpc
import pytest
from centrifuge import ClientState, ReplyError, SubscriptionState

from centrifuge_asgi import (
    ClientError,
    ConfigError,
    Node,
    StreamPublication,
    SubscribeReply,
    SubscribeStreamEvent,
)
from centrifuge_asgi.grpc import proxy_pb2 as pb
from centrifuge_asgi.grpc import proxy_pb2_grpc as proxy_grpc

from . import test_python_sdk as sdk
from .support import SECRET, eventually, token
from .test_grpc_api import self_signed
from .test_python_sdk import TIMEOUT, ClientFactory, Env, SubEvents, subscribe

if TYPE_CHECKING:
    from conftest import ARunJs

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

server = sdk.server  # the node under uvicorn, and centrifuge-python clients
sdk_client = sdk.sdk_client


async def until(check: Callable[[], bool], within: float = TIMEOUT) -> None:
    """Poll a condition on the backend's records (they live in its threads)."""
    for _ in range(int(within / 0.05)):
        if check():
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"not true within {within} s")


# --------------------------------------------------------------------------- backend


@dataclass
class Call:
    method: str
    request: Any
    metadata: dict[str, str]


@dataclass
class Backend(proxy_grpc.CentrifugoProxyServicer):  # type: ignore[misc]
    """Scripted answers; ``calls`` is every request with its metadata."""

    calls: list[Call] = field(default_factory=list)
    stream_ended: threading.Event = field(default_factory=threading.Event)

    def record(self, method: str, request: Any, context: Any) -> None:
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.calls.append(Call(method, request, md))

    def of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def Connect(self, request: Any, context: Any) -> Any:
        self.record("Connect", request, context)
        data = json.loads(request.data or b"{}")
        user = data.get("user", "")
        if user == "deny":
            return pb.ConnectResponse(error=pb.Error(code=1403, message="denied"))
        if user == "kick":
            return pb.ConnectResponse(disconnect=pb.Disconnect(code=4501, reason="kicked"))
        expire = int(time.time()) + 1 if user == "short" else 0
        result = pb.ConnectResult(
            user=user,
            data=json.dumps({"welcome": user}).encode(),
            expire_at=expire,
            meta=b'{"tenant":"acme"}',
        )
        return pb.ConnectResponse(result=result)

    def Refresh(self, request: Any, context: Any) -> Any:
        self.record("Refresh", request, context)
        return pb.RefreshResponse(result=pb.RefreshResult(expire_at=int(time.time()) + 3600))

    def Subscribe(self, request: Any, context: Any) -> Any:
        self.record("Subscribe", request, context)
        if "deny" in request.channel:
            return pb.SubscribeResponse(error=pb.Error(code=1403, message="no"))
        expire = int(time.time()) + 1 if "short" in request.channel else 0
        result = pb.SubscribeResult(
            data=b'{"room":"ok"}', b64info="eyJyb2xlIjoib3duZXIifQ==", expire_at=expire
        )
        return pb.SubscribeResponse(result=result)

    def SubRefresh(self, request: Any, context: Any) -> Any:
        self.record("SubRefresh", request, context)
        result = pb.SubRefreshResult(expire_at=int(time.time()) + 3600)
        return pb.SubRefreshResponse(result=result)

    def Publish(self, request: Any, context: Any) -> Any:
        self.record("Publish", request, context)
        data = json.loads(request.data)
        data["checked"] = True
        return pb.PublishResponse(result=pb.PublishResult(data=json.dumps(data).encode()))

    def RPC(self, request: Any, context: Any) -> Any:
        self.record("RPC", request, context)
        method = request.method
        if method == "slow:wait":
            time.sleep(1.0)
        if method == "fail":
            context.abort(grpc.StatusCode.INTERNAL, "backend exploded")
        if method == "error":
            return pb.RPCResponse(error=pb.Error(code=1500, message="nope", temporary=True))
        if method == "bye":
            return pb.RPCResponse(disconnect=pb.Disconnect(code=4001, reason="bye"))
        if method == "garbage":
            return pb.RPCResponse(result=pb.RPCResult(b64data="***"))
        echo = {"method": method, "got": json.loads(request.data or b"null")}
        return pb.RPCResponse(result=pb.RPCResult(data=json.dumps(echo).encode()))

    def SubscribeUnidirectional(self, request: Any, context: Any) -> Iterator[Any]:
        self.record("SubscribeUnidirectional", request, context)
        if "deny" in request.channel:
            yield pb.StreamSubscribeResponse(
                subscribe_response=pb.SubscribeResponse(error=pb.Error(code=1403, message="no"))
            )
            return
        if "mute" in request.channel:  # never answers: the first message times out
            time.sleep(1.5)
            return
        yield pb.StreamSubscribeResponse(
            subscribe_response=pb.SubscribeResponse(result=pb.SubscribeResult(data=b'{"s":1}'))
        )
        try:
            for i in range(3):
                pub = pb.Publication(data=json.dumps({"tick": i}).encode(), tags={"n": str(i)})
                yield pb.StreamSubscribeResponse(publication=pub)
                time.sleep(0.05)
            if "forever" in request.channel:
                while context.is_active():
                    time.sleep(0.05)
                return
            if "break" in request.channel:
                context.abort(grpc.StatusCode.UNAVAILABLE, "gone")
        finally:
            self.stream_ended.set()

    def SubscribeBidirectional(self, requests: Any, context: Any) -> Iterator[Any]:
        first = next(requests)
        self.record("SubscribeBidirectional", first.subscribe_request, context)
        yield pb.StreamSubscribeResponse(
            subscribe_response=pb.SubscribeResponse(result=pb.SubscribeResult())
        )
        for message in requests:
            echoed = json.loads(message.publication.data)
            echoed["echo"] = True
            pub = pb.Publication(data=json.dumps(echoed).encode())
            yield pb.StreamSubscribeResponse(publication=pub)


@pytest.fixture
def backend() -> Iterator[tuple[Backend, int]]:
    yield from _serve_backend(None)


def _serve_backend(credentials: Any) -> Iterator[tuple[Backend, int]]:
    impl = Backend()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    proxy_grpc.add_CentrifugoProxyServicer_to_server(impl, grpc_server)
    if credentials is None:
        port = grpc_server.add_insecure_port("127.0.0.1:0")
    else:
        port = grpc_server.add_secure_port("127.0.0.1:0", credentials)
    grpc_server.start()
    try:
        yield impl, port
    finally:
        grpc_server.stop(grace=None)


# --------------------------------------------------------------------------- config


def proxy_config(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint": f"grpc://127.0.0.1:{port}",
        "timeout": "1s",
        "http_headers": ["x-tenant"],
        "include_connection_meta": True,
        "grpc": {
            "credentials_key": "authorization",
            "credentials_value": "apikey s3cret",
            "static_metadata": {"x-static": "yes"},
        },
        **extra,
    }


def grpc_node(port: int, *, proxy_extra: dict[str, Any] | None = None) -> Node:
    proxy = proxy_config(port, **(proxy_extra or {}))
    return Node(
        {
            "client": {
                "token": {"hmac_secret_key": SECRET},
                "allowed_origins": ["*"],
                "proxy": {
                    "connect": {"enabled": True, **proxy},
                    "refresh": {"enabled": True, **proxy},
                },
            },
            "channel": {
                "proxy": {
                    "subscribe": proxy,
                    "publish": proxy,
                    "sub_refresh": proxy,
                    "subscribe_stream": proxy,
                },
                "namespaces": [
                    {
                        "name": "px",
                        "subscribe_proxy_enabled": True,
                        "publish_proxy_enabled": True,
                        "sub_refresh_proxy_enabled": True,
                    },
                    {"name": "stream", "subscribe_stream_proxy_enabled": True},
                    {
                        "name": "bidi",
                        "subscribe_stream_proxy_enabled": True,
                        "subscribe_stream_proxy_bidirectional": True,
                    },
                ],
            },
            "rpc": {
                "proxy": proxy,
                "without_namespace": {"proxy_enabled": True},
                "namespaces": [
                    {"name": "slow", "proxy_enabled": True, "proxy_name": "slow"},
                    {"name": "down", "proxy_enabled": True, "proxy_name": "down"},
                ],
            },
            "proxies": [
                {"name": "slow", **proxy_config(port), "timeout": "0.3s"},
                {"name": "down", "endpoint": "grpc://127.0.0.1:1", "timeout": "1s"},
            ],
        }
    )


@pytest.fixture
def env(backend: tuple[Backend, int], server: Callable[..., Env]) -> Env:
    return server(grpc_node(backend[1]))


async def refused(client: Any, channel: str) -> tuple[int, str]:
    """Subscribe to ``channel`` and return the code and reason it was refused with."""
    events = SubEvents()
    sub = client.new_subscription(channel, events=events)
    await sub.subscribe()
    (ctx,) = await events.rec.wait("unsubscribed")
    assert sub.state is SubscriptionState.UNSUBSCRIBED
    return ctx.code, ctx.reason


async def connect(sdk_client: ClientFactory, env: Env, user: str, **options: Any) -> Any:
    client, events = await sdk_client(
        env, data={"user": user}, headers={"X-Tenant": "acme", "X-Other": "no"}, **options
    )
    return client, events


async def subscribed_with(client: Any, channel: str, data: Any) -> tuple[Any, SubEvents]:
    """Subscribe ``client`` to ``channel``; the subscribe answer must carry ``data``."""
    sub, events = await subscribe(client, channel)
    (subscribed,) = events.rec.of("subscribed")
    assert subscribed.data == data
    return sub, events


# --------------------------------------------------------------------------- unary proxies


async def test_connect_over_grpc_with_metadata(
    env: Env, backend: tuple[Backend, int], sdk_client: ClientFactory
) -> None:
    impl, _ = backend
    client, events = await connect(sdk_client, env, "alice")
    (connected,) = events.rec.of("connected")
    assert connected.data == {"welcome": "alice"}
    assert await env.users() == {client.client_id: "alice"}
    (call,) = impl.of("Connect")
    req = call.request
    assert (req.client, req.transport, req.protocol, req.encoding) == (
        client.client_id,
        "websocket",
        "json",
        "json",
    )
    assert json.loads(req.data) == {"user": "alice"}
    assert req.name == "python"
    md = call.metadata
    assert md["x-tenant"] == "acme"  # allowed by http_headers
    assert "x-other" not in md
    assert md["x-static"] == "yes"  # grpc.static_metadata
    assert md["authorization"] == "apikey s3cret"  # grpc.credentials_key/value


async def test_connect_error_and_disconnect_answers(env: Env, sdk_client: ClientFactory) -> None:
    client, events = await sdk_client(env, data={"user": "kick"}, connect=False)
    await client.connect()
    (disconnected,) = await events.rec.wait("disconnected")
    assert (disconnected.code, disconnected.reason) == (4501, "kicked")

    client, events = await sdk_client(env, data={"user": "deny"}, connect=False)
    await client.connect()
    (disconnected,) = await events.rec.wait("disconnected")
    assert (disconnected.code, disconnected.reason) == (1403, "denied")


async def test_subscribe_publish_rpc_over_grpc(
    env: Env, backend: tuple[Backend, int], sdk_client: ClientFactory
) -> None:
    impl, _ = backend
    client, _ = await connect(sdk_client, env, "bob")
    sub, sub_events = await subscribed_with(client, "px:room", {"room": "ok"})
    (call,) = impl.of("Subscribe")
    assert (call.request.channel, call.request.user) == ("px:room", "bob")
    assert json.loads(call.request.meta) == {"tenant": "acme"}  # include_connection_meta

    await sub.publish({"text": "hi"})
    (pub,) = await sub_events.rec.wait("publication")
    assert pub.pub.data == {"text": "hi", "checked": True}
    (publish,) = impl.of("Publish")
    assert json.loads(publish.request.data) == {"text": "hi"}
    assert publish.metadata["x-tenant"] == "acme"

    result = await client.rpc("echo", {"n": 1})
    assert result.data == {"method": "echo", "got": {"n": 1}}

    assert await refused(client, "px:deny") == (1403, "no")


async def test_rpc_failures_answer_100(env: Env, sdk_client: ClientFactory) -> None:
    client, _ = await connect(sdk_client, env, "carol")
    for method in ("slow:wait", "down:x", "fail", "garbage"):
        started = time.monotonic()
        with pytest.raises(ReplyError) as info:
            await client.rpc(method, {})
        assert info.value.code == 100, method
        assert time.monotonic() - started < 2.0, method
    with pytest.raises(ReplyError) as info:
        await client.rpc("error", {})
    assert (info.value.code, info.value.message) == (1500, "nope")
    assert client.state is ClientState.CONNECTED
    # a disconnect answer closes the connection with the backend's code (4001: reconnect)
    client2, events2 = await connect(sdk_client, env, "dave", min_reconnect_delay=5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_ignore_errors, client2.rpc("bye", {}))
        await events2.rec.wait("connecting", 2)
        tg.cancel_scope.cancel()
    assert [(c.code, c.reason) for c in events2.rec.of("connecting")][-1] == (4001, "bye")


async def test_refresh_and_sub_refresh_over_grpc(
    env: Env, backend: tuple[Backend, int], sdk_client: ClientFactory
) -> None:
    impl, _ = backend
    client, _ = await connect(sdk_client, env, "short")
    await subscribe(client, "px:short")
    await until(lambda: bool(impl.of("Refresh") and impl.of("SubRefresh")))
    (refresh,) = impl.of("Refresh")
    assert refresh.request.user == "short"
    assert json.loads(refresh.request.meta) == {"tenant": "acme"}
    (sub_refresh,) = impl.of("SubRefresh")
    assert sub_refresh.request.channel == "px:short"
    await anyio.sleep(0.3)
    assert client.state is ClientState.CONNECTED
    assert await env.subscribers("px:short") == 1


# --------------------------------------------------------------------------- streams


async def test_unidirectional_stream_feeds_the_subscriber(
    env: Env, backend: tuple[Backend, int], sdk_client: ClientFactory
) -> None:
    impl, _ = backend
    client, _ = await connect(sdk_client, env, "erin")
    _, events = await subscribed_with(client, "stream:ticks", {"s": 1})
    pubs = await events.rec.wait("publication", 3)
    assert [p.pub.data for p in pubs] == [{"tick": 0}, {"tick": 1}, {"tick": 2}]
    assert [p.pub.tags for p in pubs] == [{"n": "0"}, {"n": "1"}, {"n": "2"}]
    # the backend ended the stream: unsubscribed with 2000 (terminal)
    (unsub,) = await events.rec.wait("unsubscribed")
    assert unsub.code == 2000
    (call,) = impl.of("SubscribeUnidirectional")
    assert (call.request.channel, call.request.user) == ("stream:ticks", "erin")
    assert call.metadata["x-tenant"] == "acme"
    await eventually(lambda: env.subscribers("stream:ticks"), 0)


async def test_traced_streams_send_traceparent_and_end_at_the_answer(
    backend: tuple[Backend, int], server: Callable[..., Env], sdk_client: ClientFactory
) -> None:
    """With tracing, opening a subscription stream is a span that ends with the subscribe
    answer (not with the stream), and its context reaches the backend in the metadata;
    a Python stream generator's span covers its first item."""
    from .test_tracing import memory_tracing

    impl, port = backend
    node = grpc_node(port)
    exporter = memory_tracing(node)
    env = server(node)
    client, _ = await connect(sdk_client, env, "erin")
    _, events = await subscribed_with(client, "stream:ticks", {"s": 1})
    await events.rec.wait("publication", 3)
    spans = exporter.get_finished_spans()
    (span,) = [s for s in spans if s.name == "centrifugo.proxy.subscribe_stream"]
    (call,) = impl.of("SubscribeUnidirectional")
    trace_id, span_id = f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"
    assert call.metadata["traceparent"][:-2] == f"00-{trace_id}-{span_id}-"
    (parent,) = [s for s in spans if s.name == "centrifugo.client.subscribe"]
    assert span.parent is not None and span.parent.span_id == parent.context.span_id
    assert span.status.status_code.name != "ERROR"
    await client.disconnect()

    # the Python generator: a span until its first item, while the stream goes on
    node = python_stream_node()
    exporter = memory_tracing(node)

    @node.on_subscribe_stream
    async def feed(event: SubscribeStreamEvent) -> Any:
        yield SubscribeReply(data={"own": True})
        yield {"n": 1}
        await anyio.sleep_forever()

    env = server(node)
    client, _ = await sdk_client(env, token=token("ivy"))
    _, events = await subscribed_with(client, "live:feed", {"own": True})
    await events.rec.wait("publication", 1)
    (handler,) = [
        s for s in exporter.get_finished_spans() if s.name == "centrifugo.handler.subscribe_stream"
    ]
    assert handler.attributes["centrifugo.handler"] == "feed"
    await client.disconnect()


async def test_stream_errors(
    env: Env, backend: tuple[Backend, int], sdk_client: ClientFactory
) -> None:
    impl, _ = backend
    client, _ = await connect(sdk_client, env, "frank")
    # a backend failure after the subscribe answer: 2500, the SDK resubscribes
    _, events = await subscribe(client, "stream:break")
    unsub_or_sub = await events.rec.wait("publication", 3)
    assert len(unsub_or_sub) >= 3
    await until(lambda: len(impl.of("SubscribeUnidirectional")) >= 2)  # resubscribed
    # an error answer in the first message rejects the subscribe with its code
    assert await refused(client, "stream:deny") == (1403, "no")
    # no first message within the proxy timeout: 100 (temporary: the SDK keeps retrying)
    muted = client.new_subscription("stream:mute")
    await muted.subscribe()
    await until(
        lambda: any(c.request.channel == "stream:mute" for c in impl.of("SubscribeUnidirectional"))
    )
    await anyio.sleep(1.2)  # past the 1 s timeout
    assert muted.state is SubscriptionState.SUBSCRIBING
    assert await env.subscribers("stream:mute") == 0
    await muted.unsubscribe()


async def test_unsubscribe_cancels_the_stream(
    env: Env, backend: tuple[Backend, int], sdk_client: ClientFactory
) -> None:
    impl, _ = backend
    client, _ = await connect(sdk_client, env, "gina")
    sub, events = await subscribe(client, "stream:forever")
    await events.rec.wait("publication", 3)
    await sub.unsubscribe()
    await until(impl.stream_ended.is_set)


async def test_bidirectional_stream_takes_client_publications(
    env: Env, backend: tuple[Backend, int], sdk_client: ClientFactory
) -> None:
    impl, _ = backend
    client, _ = await connect(sdk_client, env, "hank")
    sub, events = await subscribe(client, "bidi:chat")
    await sub.publish({"text": "ping"})
    await sub.publish({"text": "pong"})
    pubs = await events.rec.wait("publication", 2)
    assert [p.pub.data for p in pubs] == [
        {"text": "ping", "echo": True},
        {"text": "pong", "echo": True},
    ]
    (call,) = impl.of("SubscribeBidirectional")
    assert call.request.channel == "bidi:chat"
    # publishing to a unidirectional stream channel is not available (108)
    uni, _ = await subscribe(client, "stream:forever")
    with pytest.raises(ReplyError) as info:
        await uni.publish({"x": 1})
    assert info.value.code == 108


async def test_streams_with_centrifuge_js(
    env: Env, backend: tuple[Backend, int], arun_js: ARunJs
) -> None:
    result = await arun_js("proxy_grpc_stream.mjs", env.url, timeout=20)
    assert result == {
        "ticksData": {"s": 1},
        "ticks": [{"data": {"tick": i}, "tags": {"n": str(i)}} for i in range(3)],
        "unsubscribed": {"code": 2000, "reason": "server unsubscribe"},
        "chat": [{"text": "ping", "echo": True}, {"text": "pong", "echo": True}],
        "denied": {"code": 1403, "reason": "no"},
    }
    impl, _ = backend
    assert {c.request.user for c in impl.of("SubscribeUnidirectional")} == {"js"}


# --------------------------------------------------------------------------- Python streams


def python_stream_node() -> Node:
    return Node(
        {
            "client": {"token": {"hmac_secret_key": SECRET}, "allowed_origins": ["*"]},
            "channel": {
                "namespaces": [
                    {"name": "live", "subscribe_stream_proxy_enabled": True},
                    {
                        "name": "talk",
                        "subscribe_stream_proxy_enabled": True,
                        "subscribe_stream_proxy_bidirectional": True,
                    },
                ]
            },
        }
    )


async def test_python_stream_generator_feeds_a_channel(
    server: Callable[..., Env], sdk_client: ClientFactory
) -> None:
    node = python_stream_node()
    closed: list[str] = []
    opened: list[str] = []

    @node.on_subscribe_stream
    async def stream(event: SubscribeStreamEvent) -> Any:
        opened.append(event.channel)
        if event.channel == "live:secret":
            raise ClientError(1403, "secret")
        try:
            yield SubscribeReply(data={"hello": event.client.user})
            if event.bidirectional:
                async for data in event.publications:
                    yield StreamPublication({"said": json.loads(data)}, tags={"by": "me"})
                return
            for i in range(3):
                yield {"n": i}
            yield StreamPublication(b'{"raw":true}')
            await anyio.sleep_forever()
        finally:
            closed.append(event.channel)

    env = server(node)
    client, _ = await sdk_client(env, token=token("ivy"))
    sub, events = await subscribed_with(client, "live:feed", {"hello": "ivy"})
    pubs = await events.rec.wait("publication", 4)
    assert [p.pub.data for p in pubs] == [{"n": 0}, {"n": 1}, {"n": 2}, {"raw": True}]
    await sub.unsubscribe()
    await eventually(lambda: _value(closed), ["live:feed"])

    talk, talk_events = await subscribe(client, "talk:x")
    await talk.publish({"q": 1})
    (pub,) = await talk_events.rec.wait("publication")
    assert (pub.pub.data, pub.pub.tags) == ({"said": {"q": 1}}, {"by": "me"})

    assert await refused(client, "live:secret") == (1403, "secret")
    # a private channel needs a token: 103 before any stream, as in Centrifugo
    assert await refused(client, "$live:private") == (103, "permission denied")
    assert "$live:private" not in opened
    # the connection closes: the remaining stream generator is closed too
    await client.disconnect()
    await eventually(lambda: _value(sorted(closed)), ["live:feed", "talk:x"])


async def _ignore_errors(call: Any) -> None:
    with contextlib.suppress(Exception):
        await call


async def _value(value: Any) -> Any:
    return value


async def test_python_and_grpc_streams_together(
    backend: tuple[Backend, int], server: Callable[..., Env], sdk_client: ClientFactory
) -> None:
    """A namespace whose stream proxy has an endpoint uses it; one without, the generator."""
    node = Node(
        {
            "client": {"token": {"hmac_secret_key": SECRET}, "allowed_origins": ["*"]},
            "proxies": [{"name": "remote", **proxy_config(backend[1])}],
            "channel": {
                "namespaces": [
                    {"name": "live", "subscribe_stream_proxy_enabled": True},
                    {
                        "name": "stream",
                        "subscribe_stream_proxy_enabled": True,
                        "subscribe_stream_proxy_name": "remote",
                    },
                ]
            },
        }
    )

    @node.on_subscribe_stream
    async def local(event: SubscribeStreamEvent) -> Any:
        yield SubscribeReply(data={"local": True})
        yield {"from": "python"}
        await anyio.sleep_forever()

    env = server(node)
    client, _ = await sdk_client(env, token=token("lee"))
    _, local_events = await subscribe(client, "live:x")
    _, remote_events = await subscribe(client, "stream:ticks")
    (pub,) = await local_events.rec.wait("publication")
    assert pub.pub.data == {"from": "python"}
    remote = await remote_events.rec.wait("publication", 3)
    assert [p.pub.data for p in remote] == [{"tick": 0}, {"tick": 1}, {"tick": 2}]
    assert [c.request.channel for c in backend[0].of("SubscribeUnidirectional")] == ["stream:ticks"]


async def test_stream_namespace_without_handler_is_108(
    server: Callable[..., Env], sdk_client: ClientFactory
) -> None:
    env = server(python_stream_node())
    client, _ = await sdk_client(env, token=token("jack"))
    assert await refused(client, "live:none") == (108, "not available")


# --------------------------------------------------------------------------- TLS, no grpcio


async def test_tls_proxy(server: Callable[..., Env], sdk_client: ClientFactory) -> None:
    cert, key = self_signed()  # for 127.0.0.1
    creds = grpc.ssl_server_credentials([(key.encode(), cert.encode())])
    serving = _serve_backend(creds)
    impl, port = next(serving)
    try:
        tls = {"enabled": True, "server_ca_pem": cert}
        env = server(grpc_node(port, proxy_extra={"grpc": {"tls": tls}}))
        client, _ = await connect(sdk_client, env, "kate")
        assert await env.users() == {client.client_id: "kate"}
        result = await client.rpc("echo", {"tls": True})
        assert result.data == {"method": "echo", "got": {"tls": True}}
        # without the CA the handshake fails: 100
        env2 = server(grpc_node(port))
        client2, _ = await sdk_client(env2, token="", data={"user": "x"}, connect=False)
        await client2.connect()
        await anyio.sleep(0.5)
        assert client2.state is not ClientState.CONNECTED
    finally:
        serving.close()
    assert impl.of("Connect")


def test_bad_tls_pem_is_a_config_error() -> None:
    tls = {"enabled": True, "server_ca_pem": "/no/such/ca.pem"}
    with pytest.raises(ConfigError) as info:
        grpc_node(1, proxy_extra={"grpc": {"tls": tls}})
    assert str(info.value).startswith("client.proxy.connect.grpc.tls.server_ca_pem: ")


def test_grpc_endpoint_without_grpcio_is_a_config_error() -> None:
    code = (
        "import sys; sys.modules['grpc'] = None\n"
        "import centrifuge_asgi\n"
        "from centrifuge_asgi import Node, ConfigError\n"
        "try:\n"
        "    Node({'rpc': {'proxy': {'endpoint': 'grpc://127.0.0.1:1'},\n"
        "                  'without_namespace': {'proxy_enabled': True}}})\n"
        "except ConfigError as exc:\n"
        "    print('ConfigError', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.startswith("ConfigError rpc.proxy.endpoint needs grpcio"), out
    assert "centrifuge-asgi[grpc]" in out.stdout
