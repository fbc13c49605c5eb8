"""OpenTelemetry tracing (``opentelemetry.*``): spans exported over OTLP/HTTP to an
in-process receiver that decodes the ExportTraceServiceRequest protobufs, with a
centrifuge-python client, a publish proxy backend and server API calls on a live uvicorn;
the embedding host's global provider (FastAPI) and the cost-free default in subprocesses.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from centrifuge import Client, SubscriptionState
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from centrifuge_asgi import tracing
from centrifuge_asgi.handlers import RPCEvent
from centrifuge_asgi.node import Node

from .support import WS_PATH, make_config, token

if TYPE_CHECKING:
    from conftest import LiveServerFactory

pytestmark = [pytest.mark.interop]

TIMEOUT = 5.0
KEY = "trace-key"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP trace endpoint: ``POST /v1/traces``, protobuf bodies."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, request: ExportTraceServiceRequest) -> None:
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    with self.lock:
                        self.spans.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "kind": span.kind,
                                "status": span.status.code,
                                "attributes": {a.key: _value(a.value) for a in span.attributes},
                                "resource": resource,
                                "scope": ss.scope.name,
                            }
                        )

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["name"] == name]

    async def wait_for(self, *names: str) -> None:
        with anyio.fail_after(TIMEOUT):
            while not all(self.named(n) for n in names):  # noqa: ASYNC110 (another thread)
                await anyio.sleep(0.05)


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    rec = Receiver()
    rec.thread.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{rec.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    # the spans go to the node's own provider only when no host installed one
    assert tracing._host_provider() is None
    try:
        yield rec
    finally:
        rec.server.shutdown()
        rec.server.server_close()


def backend_app(seen: list[dict[str, str]]) -> Starlette:
    """A publish proxy backend that records each request's headers."""

    async def publish(request: Request) -> JSONResponse:
        seen.append(dict(request.headers))
        return JSONResponse({"result": {}})

    return Starlette(routes=[Route("/publish", publish, methods=["POST"])])


def traced_node(backend_port: int) -> Node:
    cfg = make_config()
    cfg["http_api"] = {"key": KEY}
    cfg["opentelemetry"] = {"enabled": True, "api": True}
    cfg["channel"]["namespaces"].append(
        {
            "name": "px",
            "publish_proxy_enabled": True,
            "allow_subscribe_for_client": True,
        }
    )
    endpoint = f"http://127.0.0.1:{backend_port}/publish"
    cfg["channel"]["proxy"] = {"publish": {"endpoint": endpoint, "timeout": "2s"}}
    node = Node(cfg)

    @node.on_rpc("echo")
    async def echo(event: RPCEvent) -> Any:
        return event.data

    return node


@pytest.mark.anyio
async def test_spans_of_client_commands_proxy_handlers_and_api(
    live_server: LiveServerFactory, receiver: Receiver
) -> None:
    seen: list[dict[str, str]] = []
    backend = live_server(backend_app(seen))
    node = traced_node(backend.port)
    srv = live_server(node.asgi_app())
    client = Client(srv.ws_url(WS_PATH), token=token("u1"), timeout=TIMEOUT)
    try:
        with anyio.fail_after(TIMEOUT):
            await client.connect()
            await client.ready()
            sub = client.new_subscription("px:1")
            await sub.subscribe()
            await sub.ready()
            await sub.publish({"text": "hi"})
            assert (await client.rpc("echo", {"n": 1})).data == {"n": 1}
            refused = client.new_subscription("nope:1")
            await refused.subscribe()
            while refused.state is not SubscriptionState.UNSUBSCRIBED:  # noqa: ASYNC110
                await anyio.sleep(0.02)
    finally:
        await client.disconnect()
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    headers = {"X-API-Key": KEY, "traceparent": traceparent}
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        body = {"channel": "chat:1", "data": {"n": 1}}
        r = await http.post(srv.url("/api/publish"), json=body, headers=headers)
        assert r.json() == {"result": {}}
        body2 = {"channels": ["chat:1", "chat:2"], "data": {"n": 2}}
        r = await http.post(srv.url("/api/broadcast"), json=body2, headers={"X-API-Key": KEY})
        assert "error" not in r.text

    names = [
        "centrifugo.client.connect",
        "centrifugo.client.subscribe",
        "centrifugo.client.publish",
        "centrifugo.client.rpc",
        "centrifugo.handler.rpc",
        "centrifugo.proxy.publish",
        "centrifugo.publish",
        "centrifugo.api.publish",
        "centrifugo.api.broadcast",
    ]
    await receiver.wait_for(*names)
    (connect,) = receiver.named("centrifugo.client.connect")
    assert connect["resource"]["service.name"] == "centrifugo"
    assert connect["resource"]["service.instance.id"] == node.node_id
    assert connect["attributes"]["centrifugo.user"] == "u1"
    assert connect["attributes"]["centrifugo.transport"] == "websocket"
    assert connect["scope"] == "centrifuge_asgi"

    ok, failed = sorted(
        receiver.named("centrifugo.client.subscribe"),
        key=lambda s: s["attributes"]["centrifugo.channel"] != "px:1",
    )
    assert ok["status"] != 2 and "centrifugo.error_code" not in ok["attributes"]
    assert failed["attributes"]["centrifugo.channel"] == "nope:1"
    assert failed["attributes"]["centrifugo.error_code"] == 102
    assert failed["status"] == 2  # STATUS_CODE_ERROR

    (rpc,) = receiver.named("centrifugo.client.rpc")
    (handler,) = receiver.named("centrifugo.handler.rpc")
    assert rpc["attributes"]["centrifugo.rpc_method"] == "echo"
    assert (handler["trace_id"], handler["parent"]) == (rpc["trace_id"], rpc["span_id"])

    # the backend's request carried the proxy span's context: its trace continues there
    (publish,) = receiver.named("centrifugo.client.publish")
    (proxy,) = receiver.named("centrifugo.proxy.publish")
    assert (proxy["trace_id"], proxy["parent"]) == (publish["trace_id"], publish["span_id"])
    assert proxy["kind"] == 3  # SPAN_KIND_CLIENT
    (backend_headers,) = seen
    assert backend_headers["traceparent"][:-2] == f"00-{proxy['trace_id']}-{proxy['span_id']}-"
    node_publishes = receiver.named("centrifugo.publish")
    from_client = [s for s in node_publishes if s["parent"] == publish["span_id"]]
    assert from_client and from_client[0]["attributes"]["centrifugo.channel"] == "px:1"
    # the memory broker fans out inside the publish: one span for the delivery to the
    # channel's one subscriber, in the same trace
    await receiver.wait_for("centrifugo.fanout")
    (fanout,) = [
        s for s in receiver.named("centrifugo.fanout") if s["trace_id"] == publish["trace_id"]
    ]
    assert fanout["parent"] == from_client[0]["span_id"]
    assert fanout["attributes"]["centrifugo.channel"] == "px:1"
    assert fanout["attributes"]["centrifugo.num_subscribers"] == 1

    # a server API call continues the caller's trace, with Centrifugo's attributes
    (api,) = receiver.named("centrifugo.api.publish")
    assert (api["trace_id"], api["parent"]) == (TRACE_ID, PARENT_ID)
    assert api["attributes"]["centrifugo.channel"] == "chat:1"
    assert api["attributes"]["service.instance.id"] == node.node_id
    assert [s["parent"] for s in node_publishes if s["trace_id"] == TRACE_ID] == [api["span_id"]]
    (broadcast,) = receiver.named("centrifugo.api.broadcast")
    assert broadcast["attributes"]["centrifugo.num_channels"] == 2


def run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_fastapi_host_provider_gets_the_spans() -> None:
    """A host that installed a global SDK provider: a publication made inside a traced
    FastAPI request is a span of that request's trace, under its span."""
    out = run_python(
        """
        import anyio, httpx
        from fastapi import FastAPI
        from opentelemetry import propagate, trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from centrifuge_asgi import Node

        # the node is created before the host sets up OpenTelemetry (a module-level
        # Node, instrumentation configured at startup): its spans still go there
        node = Node({"opentelemetry": {"enabled": True, "api": True},
                     "http_api": {"insecure": True},
                     "channel": {"without_namespace": {}}})
        PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        tracer = trace.get_tracer("host")
        app = FastAPI()

        @app.middleware("http")
        async def traced(request, call_next):  # what opentelemetry-instrumentation does
            context = propagate.extract(request.headers)
            name = f"{request.method} {request.url.path}"
            with tracer.start_as_current_span(name, context=context):
                return await call_next(request)

        @app.post("/announce")
        async def announce() -> dict:
            await node.publish("news", {"text": "hello"})
            return {"ok": True}

        app.mount("/", node.asgi_app())

        async def main() -> None:
            async with node:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://h") as c:
                    assert (await c.post("/announce")).json() == {"ok": True}
                    # the server API inside the host's traced request, with and without
                    # a caller's traceparent (the host continued that trace itself)
                    body = {"channel": "news", "data": {}}
                    for headers in ({}, {"traceparent": PARENT}):
                        r = await c.post("/api/publish", json=body, headers=headers)
                        assert r.json() == {"result": {}}, r.text

        anyio.run(main)
        finished = exporter.get_finished_spans()
        by_id = {s.context.span_id: s for s in finished}
        # the middleware's spans (recent FastAPI releases also make server spans of their own)
        host = [s for s in finished if s.instrumentation_scope.name == "host"]
        (request,) = [s for s in host if s.name == "POST /announce"]
        (publish,) = [
            s for s in finished
            if s.name == "centrifugo.publish" and s.context.trace_id == request.context.trace_id
        ]
        assert publish.context.trace_id == request.context.trace_id
        ancestors, span = [], publish  # FastAPI adds spans of its own in between
        while span.parent is not None:
            span = by_id[span.parent.span_id]
            ancestors.append(span)
        assert ancestors[-1] is request, [s.name for s in ancestors]
        assert publish.attributes["centrifugo.channel"] == "news"
        assert publish.instrumentation_scope.name == "centrifuge_asgi"
        # each API call is a span under the host's request span, in the host's trace
        # (the one with traceparent in the caller's trace, which the host continued)
        requests = [s for s in host if s.name == "POST /api/publish"]
        calls = sorted(
            (s for s in finished if s.name == "centrifugo.api.publish"),
            key=lambda s: s.start_time,
        )
        assert len(requests) == 2 and len(calls) == 2
        for call, parented in zip(calls, (False, True)):
            span, outer = call, None
            while span.parent is not None and span.parent.span_id in by_id:
                span = by_id[span.parent.span_id]
                if span in requests:
                    outer = span
            assert outer is not None, call.parent
            assert call.context.trace_id == outer.context.trace_id
            assert (outer.parent is not None) == parented
        assert f"{calls[1].context.trace_id:032x}" == PARENT.split("-")[1]
        print("ok")
        """
    )
    assert out.strip() == "ok"


@pytest.mark.anyio
async def test_admin_calls_are_api_spans_of_protocol_admin(receiver: Receiver) -> None:
    """The admin page's commands run through the server API executor: with
    ``opentelemetry.api`` each is a ``centrifugo.api.<method>`` span, protocol ``admin``."""
    cfg = make_config()
    cfg["opentelemetry"] = {"enabled": True, "api": True}
    cfg["admin"] = {"enabled": True, "password": "pw", "secret": "admin-secret"}
    node = Node(cfg)
    async with node:
        transport = httpx.ASGITransport(app=node.asgi_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://n") as http:
            tok = (await http.post("/admin/auth", json={"password": "pw"})).json()["token"]
            command = {"method": "publish", "params": {"channel": "chat:adm", "data": {}}}
            headers = {"Authorization": f"token {tok}"}
            reply = (await http.post("/admin/api", json=command, headers=headers)).json()
            assert "result" in reply, reply
    await receiver.wait_for("centrifugo.api.publish")
    (span,) = receiver.named("centrifugo.api.publish")
    assert span["attributes"]["centrifugo.api.protocol"] == "admin"
    assert span["attributes"]["centrifugo.channel"] == "chat:adm"


@pytest.mark.anyio
async def test_refused_and_unidirectional_commands_have_spans(
    live_server: LiveServerFactory,
) -> None:
    """A command refused by an operation rate limit (111) is a failed span too, a failed
    command carries its user, and a unidirectional connect is a ``client.connect`` span."""
    import json

    import websockets

    cfg = make_config(
        rate_limit={
            "client_command": {
                "enabled": True,
                "rpc": {"enabled": True, "buckets": [{"interval": "1m", "rate": 1}]},
            }
        }
    )
    cfg["uni_http_stream"] = {"enabled": True}
    node = Node(cfg)
    exporter = memory_tracing(node)

    @node.on_rpc("echo")
    async def echo(event: RPCEvent) -> Any:
        return event.data

    srv = live_server(node.asgi_app())
    async with websockets.connect(srv.ws_url(WS_PATH), open_timeout=TIMEOUT) as ws:
        frames = [
            {"id": 1, "connect": {"token": token("u7")}},
            {"id": 2, "rpc": {"method": "echo", "data": {}}},
            {"id": 3, "rpc": {"method": "echo", "data": {}}},
            {"id": 4, "subscribe": {"channel": "nope:1"}},
        ]
        await ws.send("\n".join(json.dumps(f) for f in frames))
        got: dict[int, Any] = {}
        with anyio.fail_after(TIMEOUT):
            while len(got) < 4:
                for line in str(await ws.recv()).split("\n"):
                    msg = json.loads(line)
                    got.setdefault(msg.get("id", 0), msg)
                got.pop(0, None)
    assert got[3]["error"]["code"] == 111
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        http.stream(
            "POST", srv.url("/connection/uni_http_stream"), json={"token": token("u8")}
        ) as stream,
    ):
        assert stream.status_code == 200
        async for chunk in stream.aiter_bytes():
            if b"connect" in chunk:
                break

    def connects() -> int:
        return sum(s.name == "centrifugo.client.connect" for s in exporter.get_finished_spans())

    with anyio.fail_after(TIMEOUT):
        while connects() < 2:  # noqa: ASYNC110 (spans end on the server's side)
            await anyio.sleep(0.02)
    spans = exporter.get_finished_spans()
    rpcs = [s for s in spans if s.name == "centrifugo.client.rpc"]
    assert [s.attributes.get("centrifugo.error_code") for s in rpcs] == [None, 111]
    assert rpcs[1].status.status_code.name == "ERROR"
    (refused,) = [s for s in spans if s.name == "centrifugo.client.subscribe"]
    assert refused.attributes["centrifugo.error_code"] == 102
    assert refused.attributes["centrifugo.user"] == "u7"
    connects = {
        s.attributes["centrifugo.transport"]: s.attributes["centrifugo.user"]
        for s in spans
        if s.name == "centrifugo.client.connect"
    }
    assert connects == {"websocket": "u7", "uni_http_stream": "u8"}


@pytest.mark.anyio
async def test_shared_poll_refresh_handler_is_traced() -> None:
    node = Node(make_config())
    exporter = memory_tracing(node)

    @node.on_shared_poll_refresh
    async def refresh(event: Any) -> Any:
        return "reply"

    assert node.handlers.shared_poll_refresh is not None
    assert await node.handlers.shared_poll_refresh(object()) == "reply"  # type: ignore[arg-type]
    (span,) = exporter.get_finished_spans()
    assert span.name == "centrifugo.handler.shared_poll_refresh"
    assert span.attributes["centrifugo.handler"] == "refresh"


def test_environment_resource_attributes_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_RESOURCE_ATTRIBUTES overrides the node's own resource attributes, as in
    Centrifugo (a pod name as service.instance.id, say)."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-7,team=rt")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    provider = tracing.build_provider("node-1", "1.2.3")
    try:
        attributes = provider.resource.attributes
        assert attributes["service.instance.id"] == "pod-7"
        assert attributes["team"] == "rt"
        assert attributes["version"] == "1.2.3"
        assert attributes["service.name"] == "centrifugo"
    finally:
        provider.shutdown()


@pytest.mark.anyio
async def test_otlp_over_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL=grpc: the node's own provider exports to an OTLP/gRPC
    receiver."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc

    got: list[tuple[str, str]] = []

    class Collector(pb_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            for rs in request.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    got.extend((span.name, resource["service.instance.id"]) for span in ss.spans)
            return pb.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
        assert tracing._host_provider() is None
        cfg = make_config()
        cfg["http_api"] = {"key": KEY}
        cfg["opentelemetry"] = {"enabled": True, "api": True}
        node = Node(cfg)
        async with node:
            transport = httpx.ASGITransport(app=node.asgi_app())
            async with httpx.AsyncClient(transport=transport, base_url="http://n") as http:
                body = {"channel": "chat:1", "data": {}}
                r = await http.post("/api/publish", json=body, headers={"X-API-Key": KEY})
                assert r.json() == {"result": {}}
        # the node's stop flushed its provider
        assert ("centrifugo.api.publish", node.node_id) in got
        assert ("centrifugo.publish", node.node_id) in got
    finally:
        server.stop(0)


def test_off_by_default_imports_nothing_and_missing_packages_name_the_key() -> None:
    out = run_python(
        """
        import sys
        import anyio
        from centrifuge_asgi import ConfigError, Node

        node = Node({"channel": {"without_namespace": {}}})
        assert node.tracing is None

        async def main() -> None:
            async with node:
                await node.publish("news", {"n": 1})

        anyio.run(main)
        assert not [m for m in sys.modules if m.startswith("opentelemetry")], "imported"
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
        try:
            Node({"opentelemetry": {"enabled": True}})
        except ConfigError as exc:
            print(exc)
        """
    )
    assert out.startswith("opentelemetry.enabled: the OpenTelemetry packages are not installed")


def memory_tracing(node: Node) -> Any:
    """The node's tracing into an in-memory exporter (no OTLP)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    node.tracing = tracing.OtelTracing(node, provider)
    return exporter


@pytest.mark.anyio
@pytest.mark.parametrize("consuming", [True, False])
async def test_consumed_commands_with_consuming(consuming: bool) -> None:
    from centrifuge_asgi.consumers.dispatch import CommandDispatcher

    cfg = make_config()
    cfg["opentelemetry"] = {"consuming": consuming}
    node = Node(cfg)
    exporter = memory_tracing(node)
    async with node:
        dispatcher = CommandDispatcher(node)
        assert await dispatcher.dispatch("publish", b'{"channel": "chat:1", "data": {}}')
        assert not await dispatcher.dispatch("publish", b'{"channel": "zzz:1", "data": {}}')
    spans = [s for s in exporter.get_finished_spans() if s.name == "centrifugo.consume.publish"]
    if not consuming:
        assert spans == []
        return
    ok, failed = spans
    assert ok.attributes["centrifugo.channel"] == "chat:1"
    assert failed.attributes["centrifugo.error_code"] == 102
    assert failed.status.status_code.name == "ERROR"
    publish = [s for s in exporter.get_finished_spans() if s.name == "centrifugo.publish"]
    assert [p.parent.span_id for p in publish] == [ok.context.span_id]


@pytest.mark.anyio
async def test_grpc_proxy_metadata_carries_traceparent() -> None:
    """A gRPC proxy call gets the proxy span's context in its metadata (the headers
    handed to the gRPC side become the call's metadata), and is counted."""
    from centrifuge_asgi.config import ProxyConfig
    from centrifuge_asgi.errors import ProxyFailure
    from centrifuge_asgi.proxy_grpc import metadata
    from centrifuge_asgi.proxy_http import ProxyCaller, decoder

    cfg = make_config()
    cfg["prometheus"] = {"enabled": True}
    node = Node(cfg)
    exporter = memory_tracing(node)
    sent: list[list[tuple[str, str]]] = []
    proxy = ProxyConfig(endpoint="grpc://127.0.0.1:1")

    class FakeGrpc:
        async def call(self, proxy: Any, kind: str, body: Any, headers: Any) -> bytes:
            if body.get("fail"):
                raise ProxyFailure("unavailable")
            sent.append(metadata(proxy, headers))
            return b'{"result": {}}'

    caller = ProxyCaller(node)
    caller._grpc = FakeGrpc()  # type: ignore[assignment]
    env = await caller.call(proxy, {"channel": "c"}, {"x-a": "1"}, decoder(dict), kind="rpc")
    assert env.result == {}
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "centrifugo.proxy.rpc"]
    (md,) = sent
    trace_id, span_id = f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"
    assert dict(md)["traceparent"][:-2] == f"00-{trace_id}-{span_id}-"
    assert dict(md)["x-a"] == "1"
    text = node.metrics.exposition().decode()  # type: ignore[attr-defined]
    labels = 'protocol="grpc",type="rpc",name="default"'
    assert f"centrifugo_proxy_duration_seconds_histogram_count{{{labels}}} 1" in text
    assert "centrifugo_proxy_errors{" not in text
    with pytest.raises(ProxyFailure):
        await caller.call(proxy, {"fail": True}, {}, decoder(dict), kind="rpc")
    text = node.metrics.exposition().decode()  # type: ignore[attr-defined]
    assert f"centrifugo_proxy_errors{{{labels}}} 1" in text
    failed = [s for s in exporter.get_finished_spans() if s.name == "centrifugo.proxy.rpc"][-1]
    assert failed.status.status_code.name == "ERROR"


@pytest.mark.anyio
async def test_grpc_api_calls_continue_the_callers_trace(
    live_server: LiveServerFactory, receiver: Receiver
) -> None:
    import grpc

    from centrifuge_asgi.grpc import api_pb2 as pb
    from centrifuge_asgi.grpc.api_pb2_grpc import CentrifugoApiStub

    from .grpc_support import API_KEY, grpc_config, start

    cfg = grpc_config(uni=False)
    cfg["opentelemetry"] = {"enabled": True, "api": True}
    env = start(live_server, cfg)
    metadata = (
        ("authorization", f"apikey {API_KEY}"),
        ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
    )
    async with grpc.aio.insecure_channel(env.api_target) as channel:
        stub = CentrifugoApiStub(channel)
        reply = await stub.Publish(
            pb.PublishRequest(channel="chat:g", data=b'{"n": 1}'), metadata=metadata
        )
        assert not reply.HasField("error")
        broadcast = pb.BroadcastRequest(channels=["chat:1", "chat:2", "chat:3"], data=b"{}")
        await stub.Broadcast(broadcast, metadata=metadata[:1])
    await receiver.wait_for("centrifugo.api.publish", "centrifugo.api.broadcast")
    (api,) = receiver.named("centrifugo.api.publish")
    assert (api["trace_id"], api["parent"]) == (TRACE_ID, PARENT_ID)
    assert api["attributes"]["centrifugo.channel"] == "chat:g"
    assert api["attributes"]["centrifugo.api.protocol"] == "grpc"
    assert api["kind"] == 2  # SPAN_KIND_SERVER
    (broadcast_span,) = receiver.named("centrifugo.api.broadcast")
    assert broadcast_span["attributes"]["centrifugo.num_channels"] == 3
    assert broadcast_span["trace_id"] != TRACE_ID  # no traceparent: a trace of its own
    assert env.node.tracing is not None
