"""Observability: ``GET /metrics`` (Prometheus text format) and structured JSON logs.

The exposition is parsed with prometheus-client's own parser; counters are read before
and after real traffic (raw WebSocket clients plus server API calls on a live uvicorn).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from centrifuge_asgi.config import LogConfig
from centrifuge_asgi.errors import EngineError
from centrifuge_asgi.logging_setup import configure_logging
from centrifuge_asgi.node import Node

from .support import WS_PATH, make_config, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

KEY = "metrics-key"
AUTH = {"X-API-Key": KEY}
TIMEOUT = 5.0
P = "centrifuge_asgi_"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((P + name, tuple(sorted(labels.items()))), 0.0)


def node_config(**extra: Any) -> dict[str, Any]:
    cfg = make_config()
    cfg["http_api"] = {"key": KEY}
    cfg["prometheus"] = {"enabled": True}
    cfg.update(extra)
    return cfg


async def scrape(http: httpx.AsyncClient, srv: LiveServer) -> Samples:
    r = await http.get(srv.url("/metrics"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


@contextlib.asynccontextmanager
async def subscriber(srv: LiveServer, user: str, channel: str) -> AsyncIterator[Any]:
    """A raw JSON-protocol connection subscribed to ``channel``."""
    async with websockets.connect(srv.ws_url(WS_PATH), open_timeout=TIMEOUT) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token(user)}}))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
        with anyio.fail_after(TIMEOUT):
            seen: set[int] = set()
            while seen != {1, 2}:
                for line in str(await ws.recv()).split("\n"):
                    msg = json.loads(line)
                    assert "error" not in msg, msg
                    seen.add(msg.get("id", 0))
                seen.discard(0)
        yield ws


async def test_metrics_move_with_traffic(live_server: LiveServerFactory) -> None:
    node = Node(node_config())
    srv = live_server(node.asgi_app())
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        before = await scrape(http, srv)
        assert value(before, "node_num_clients") == 0
        assert value(before, "node_build", version=node.version) == 1
        assert value(before, "node_messages_sent_total", type="publication") == 0

        async with subscriber(srv, "1", "chat:m") as first, subscriber(srv, "2", "chat:m"):
            publish = {"channel": "chat:m", "data": {"n": 1}}
            r = await http.post(srv.url("/api/publish"), json=publish, headers=AUTH)
            assert r.json() == {"result": {}}
            bad = {"channel": "zzz:1", "data": 1}
            r = await http.post(srv.url("/api/publish"), json=bad, headers=AUTH)
            assert r.json()["error"]["code"] == 102
            with anyio.fail_after(TIMEOUT):
                while "pub" not in await first.recv():
                    pass
            during = await scrape(http, srv)

        for gauge, expected in [
            ("node_num_clients", 2),
            ("node_num_users", 2),
            ("node_num_subscriptions", 2),
            ("node_num_channels", 1),
        ]:
            assert value(during, gauge) == expected, gauge
        assert value(during, "transport_connections", transport="websocket") == 2
        # one publication fanned out to two subscribers; the second join went to the first
        assert value(during, "node_messages_sent_total", type="publication") == 2
        assert value(during, "node_messages_received_total", type="publication") == 1
        assert value(during, "node_messages_sent_total", type="join") >= 1
        for method in ("connect", "subscribe"):
            count = value(during, "client_command_duration_seconds_count", method=method)
            assert count == 2, method
        ok = value(during, "api_commands_total", protocol="http", method="publish", outcome="ok")
        assert ok == 1
        err = {"protocol": "http", "method": "publish"}
        assert value(during, "api_commands_total", outcome="error", **err) == 1
        assert value(during, "api_command_errors_total", error="102", **err) == 1
        assert value(during, "api_command_duration_seconds_count", **err) == 2

        # gauges are read at scrape time: back to zero once the clients left
        with anyio.fail_after(TIMEOUT):
            while True:
                after = await scrape(http, srv)
                if not value(after, "node_num_clients"):
                    break
                await anyio.sleep(0.02)
        assert value(after, "node_num_channels") == 0


async def test_metrics_disabled_by_default(live_server: LiveServerFactory) -> None:
    cfg = node_config()
    del cfg["prometheus"]
    srv = live_server(Node(cfg).asgi_app())
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        assert (await http.get(srv.url("/metrics"))).status_code == 404


def test_nodes_in_one_process_do_not_clash() -> None:
    a, b = Node(node_config()), Node(node_config())
    a.metrics_command("publish", 0.01)
    a.metrics.broker_publish_errors.inc()
    sa, sb = parse(a.metrics.exposition().decode()), parse(b.metrics.exposition().decode())
    assert value(sa, "client_command_duration_seconds_count", method="publish") == 1
    assert value(sb, "client_command_duration_seconds_count", method="publish") == 0
    assert value(sa, "broker_publish_errors_total") == 1
    assert value(sb, "broker_publish_errors_total") == 0
    assert a.metrics.registry is not b.metrics.registry


async def test_broker_publish_errors_are_counted() -> None:
    node = Node(node_config())

    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise EngineError("broker down")

    node.broker.publish = failing  # type: ignore[method-assign]
    async with node:
        transport = httpx.ASGITransport(app=node.asgi_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://n") as http:
            body = {"channel": "chat:1", "data": 1}
            r = await http.post("/api/publish", json=body, headers=AUTH)
            assert r.json() == {"error": {"code": 100, "message": "internal server error"}}
            samples = parse((await http.get("/metrics")).text)
    assert value(samples, "broker_publish_errors_total") == 1


# ---------------------------------------------------------------------------- logs


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Root logging switched to ``log.json`` for one test (restored afterwards)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    handler = configure_logging(LogConfig(level="info", json=True), stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_json_logs_carry_connection_fields(
    live_server: LiveServerFactory, json_logs: io.StringIO
) -> None:
    node = Node(node_config())
    srv = live_server(node.asgi_app())

    def boom(pattern: str = "") -> dict[str, int]:
        raise RuntimeError("boom")

    node.channels = boom  # type: ignore[method-assign]
    async with subscriber(srv, "77", "chat:l") as ws, httpx.AsyncClient(timeout=TIMEOUT) as http:
        r = await http.post(srv.url("/api/channels"), json={}, headers=AUTH)
        assert r.json()["error"]["code"] == 100
        body = {"user": "77", "disconnect": {"code": 4000, "reason": "bye"}}
        await http.post(srv.url("/api/disconnect"), json=body, headers=AUTH)
        with anyio.fail_after(TIMEOUT), pytest.raises(websockets.ConnectionClosed):
            while True:
                await ws.recv()

    logged = records(json_logs)
    disconnect = next(r for r in logged if r["msg"].startswith("disconnect "))
    assert disconnect["logger"] == "centrifuge_asgi.session" and disconnect["level"] == "info"
    assert (disconnect["user"], disconnect["code"], disconnect["reason"]) == ("77", 4000, "bye")
    assert disconnect["client"] and disconnect["time"]
    failure = next(r for r in logged if r["logger"] == "centrifuge_asgi.api")
    assert (failure["method"], failure["code"], failure["level"]) == ("channels", 100, "error")
    assert "RuntimeError: boom" in failure["error"]
