"""Observability: ``GET /metrics`` (Prometheus text format) and structured JSON logs.

The exposition is parsed with prometheus-client's own parser; counters are read before
and after real traffic (raw WebSocket clients plus server API calls on a live uvicorn).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import msgspec
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from centrifuge_asgi.config import LogConfig
from centrifuge_asgi.errors import EngineError
from centrifuge_asgi.logging_setup import configure_logging
from centrifuge_asgi.metrics import NodeMetrics as NodeMetricsType
from centrifuge_asgi.node import Node

from .support import WS_PATH, make_config, token
from .test_js_map import MAP_NAMESPACES
from .test_unidirectional import open_uni

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

KEY = "metrics-key"
AUTH = {"X-API-Key": KEY}
TIMEOUT = 5.0
P = "centrifugo_"

NS = {"channel_namespace": ""}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> Samples:
    """Samples by their exposed name: Prometheus keeps a counter's name as written
    (``..._count``), while prometheus-client's parser would append ``_total`` to it;
    that parser still has to accept the whole text."""
    families = list(text_string_to_metric_families(text))
    assert families
    out: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, line
        name, labels, number = match.groups()
        pairs = tuple(sorted(_LABEL.findall(labels or "")))
        out[(name, pairs)] = float(number)
    return out


def value(samples: Samples, name: str, /, **labels: str) -> float:
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
        assert value(before, "node_messages_sent_count", type="publication", **NS) == 0

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
        ws = {"transport": "websocket", "accept_protocol": "", "client_name": ""}
        assert value(during, "client_connections_inflight", client_version="", **ws) == 2
        assert value(during, "node_num_nodes") == 1
        # one publication to the broker, fanned out to two subscribers; the second join
        # went to the first
        assert value(during, "node_messages_sent_count", type="publication", **NS) == 1
        assert value(during, "node_messages_received_count", type="publication", **NS) == 1
        # counted per transport at the fan-out (once per batch), as Centrifugo names them
        sent = {"transport": "websocket", "frame_type": "push_publication", **NS}
        assert value(during, "transport_messages_sent", **sent) == 2
        assert value(during, "transport_messages_sent", **{**sent, "frame_type": "push_join"}) >= 1
        for method in ("connect", "subscribe"):
            name = "client_command_duration_seconds_histogram_count"
            assert value(during, name, method=method, **NS) == 2, method
            assert value(during, "client_command_duration_seconds_count", method=method, **NS) == 2
        err = {"protocol": "http", "method": "publish"}
        assert value(during, "api_command_errors_total", error="102", **err) == 1
        assert value(during, "api_command_duration_seconds_histogram_count", **err) == 2
        assert value(during, "api_command_duration_seconds_count", **err) == 2
        bucket = value(during, "api_command_duration_seconds_histogram_bucket", le="+Inf", **err)
        assert bucket == 2

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
    a.metrics_command("publish", 0.01, 103)
    a.metrics.broker_publish_error()
    sa, sb = parse(a.metrics.exposition().decode()), parse(b.metrics.exposition().decode())
    name = "client_command_duration_seconds_histogram_count"
    assert value(sa, name, method="publish", **NS) == 1
    assert value(sb, name, method="publish", **NS) == 0
    assert value(sa, "client_num_reply_errors", method="publish", code="103", **NS) == 1
    assert value(sa, "broker_publish_errors", broker_name="", error="publish") == 1
    assert value(sb, "broker_publish_errors", broker_name="", error="publish") == 0
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
    assert value(samples, "broker_publish_errors", broker_name="", error="publish") == 1


async def test_dashboard_13039_queries_find_their_series(live_server: LiveServerFactory) -> None:
    """Each query of Centrifugo's Grafana dashboard that shows data for Centrifugo OSS
    (:mod:`.grafana_13039`'s table, read off the dashboard) selects a series here, with
    every label its panel groups by, once each kind of traffic happened on a node with
    the Redis engine; the PRO, Go-runtime and absent rows select nothing, as documented."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from tests.unit.test_redis_engine import require_main_redis, unique_prefix

    from .grafana_13039 import DASHBOARD, VERSION_VARIABLE, Selector, unmet

    async def backend(request: Any) -> Response:
        if (await request.json()).get("method") == "fail":
            return Response(status_code=500)
        return JSONResponse({"result": {"data": {"ok": True}}})

    require_main_redis()
    backend_srv = live_server(Starlette(routes=[Route("/rpc", backend, methods=["POST"])]))
    redis = {"address": "127.0.0.1:6379", "prefix": unique_prefix()}
    cfg = node_config(engine={"type": "redis", "redis": redis})
    cfg["client"].update(ping_interval="300ms", pong_timeout="250ms")
    cfg["rpc"] = {
        "proxy": {"endpoint": backend_srv.url("/rpc")},
        "without_namespace": {"proxy_enabled": True},
    }
    node = Node(cfg)
    srv = live_server(node.asgi_app())
    # consumers are driven for real in the consumer tests; here their hooks are called
    # as a consumer calls them
    node.metrics.consumer_processed("outbox", 2)  # type: ignore[attr-defined]
    node.metrics.consumer_error("outbox")  # type: ignore[attr-defined]
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        subscriber(srv, "1", "chat:d") as ws,
        websockets.connect(srv.ws_url(WS_PATH), open_timeout=TIMEOUT) as rec,
    ):
        first = await _call(http, srv, "publish", {"channel": "news:d", "data": {"n": 1}})
        epoch = first["result"]["epoch"]
        await _call(http, srv, "publish", {"channel": "news:d", "data": {"n": 2}})
        await rec.send(json.dumps({"id": 1, "connect": {"token": token("2")}}))
        recover = {"channel": "news:d", "recover": True, "offset": 1, "epoch": epoch}
        await rec.send(json.dumps({"id": 2, "subscribe": recover}))
        await rec.send(json.dumps({"id": 3, "subscribe": {"channel": "zzz:1"}}))  # 102
        replies = await _frames(rec, lambda m: m.get("id") == 3)
        assert replies[-1]["error"]["code"] == 102
        await rec.send(json.dumps({"id": 4, "rpc": {"method": "ok", "data": {}}}))
        await rec.send(json.dumps({"id": 5, "rpc": {"method": "fail", "data": {}}}))
        replies = await _frames(rec, lambda m: m.get("id") == 5)
        assert "error" in replies[-1]
        await _frames(rec, lambda m: m == {})  # a ping, answered
        bad = await _call(http, srv, "publish", {"channel": "zzz:1", "data": 1})
        assert bad["error"]["code"] == 102
        await _call(http, srv, "publish", {"channel": "chat:d", "data": 1})
        await _frames(ws, lambda m: "pub" in m.get("push", {}))
        await _call(http, srv, "info", {})
        await _call(http, srv, "unsubscribe", {"user": "2", "channel": "news:d"})
        await _frames(rec, lambda m: "unsubscribe" in m.get("push", {}))
        await _call(http, srv, "disconnect", {"user": "1"})
        with anyio.fail_after(TIMEOUT), pytest.raises(websockets.ConnectionClosed):
            while True:
                await ws.recv()
        disconnects = P + "client_num_server_disconnects"
        with anyio.fail_after(TIMEOUT):  # the count follows the close
            while True:
                samples = await scrape(http, srv)
                if any(name == disconnects for name, _ in samples):
                    break
                await anyio.sleep(0.02)
    assert unmet(samples, DASHBOARD) == []
    for panel, text, _, kind in DASHBOARD:
        if kind != "oss":
            for selector in Selector.parse(text).expand():
                assert not selector.select(samples), (panel, kind, selector)
    family, label = VERSION_VARIABLE
    assert Selector.parse(family).select(samples) == [{label: node.version}]
    names = {name for name, _ in samples}
    # counters keep client_golang's names: no _total appended to ..._count
    assert "centrifugo_node_messages_sent_count_total" not in names


def test_dashboard_check_reads_selectors_and_finds_gaps() -> None:
    """The check itself: selectors are read out of a dashboard's queries (instance
    matchers, ranges and grouping dropped), quantile panels expand to each value, and a
    missing series or grouping label is reported."""
    from .grafana_13039 import Selector, dashboard_selectors, drift, unmet

    dashboard = {
        "panels": [
            {
                "title": "A",
                "targets": [
                    {
                        "expr": 'sum(rate(m_total{instance=~"$instance", kind="x"}'
                        "[$__rate_interval])) by (code)"
                    },
                    {"expr": 'avg(q_seconds{quantile="$quantile", instance=~"$instance"}) by (op)'},
                ],
            },
            {"title": "B", "targets": [{"expr": "max(time() - start_time{})"}]},
        ]
    }
    assert dashboard_selectors(dashboard) == [
        ("A", 'm_total{kind="x"}'),
        ("A", 'q_seconds{quantile="$quantile"}'),
        ("B", "start_time"),
    ]
    rows = [
        ("A", 'm_total{kind="x"}', ("code",), "oss"),
        ("A", 'q_seconds{quantile="$quantile"}', ("op",), "oss"),
        ("B", "start_time", (), "go"),
    ]
    samples = {
        ("m_total", (("code", "1"), ("kind", "x"))): 1.0,
        ("q_seconds", (("op", "a"), ("quantile", "0.5"))): 1.0,
        ("q_seconds", (("quantile", "0.99"),)): 1.0,
    }
    assert unmet(samples, rows) == [
        "A: q_seconds lacks ['op']",
        "A: no series for " + repr(Selector("q_seconds", (("quantile", "=", "0.999"),))),
    ]
    assert unmet({("m_total", (("kind", "y"),)): 1.0}, rows[:1]) == [
        "A: no series for " + repr(Selector("m_total", (("kind", "=", "x"),)))
    ]
    assert Selector.parse('m{a!="",b=~"x.*"}').matches({"a": "1", "b": "xy"})
    assert not Selector.parse('m{a!=""}').matches({"b": "1"})
    # the repository's table and this toy dashboard disagree both ways
    unknown, unused = drift(dashboard)
    assert "m_total[('kind', '=', 'x')]" in unknown
    assert unused


async def test_namespace_replaces_the_prefix() -> None:
    node = Node(node_config(prometheus={"enabled": True, "namespace": "chat"}))
    async with node:
        transport = httpx.ASGITransport(app=node.asgi_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://n") as http:
            names = {name for name, _ in parse((await http.get("/metrics")).text)}
    assert "chat_node_num_clients" in names
    assert not any(name.startswith("centrifugo_") for name in names)


def test_workers_add_up(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With CENTRIFUGE_ASGI_METRICS_DIR, a scrape adds every fresh worker file to its own
    samples: counters and gauges summed, node_num_nodes and build the maximum, a stale
    file (a gone worker) left out."""
    import os
    import time

    from centrifuge_asgi import metrics as m

    monkeypatch.setenv(m.MULTIPROCESS_ENV, str(tmp_path))
    node = Node(node_config())
    node.metrics_command("connect", 0.002)
    assert isinstance(node.metrics, m.NodeMetrics)
    peer = [
        m.Family(
            "centrifugo_node_num_clients", "gauge", "", [("centrifugo_node_num_clients", (), 3)]
        ),
        m.Family("centrifugo_node_num_nodes", "gauge", "", [("centrifugo_node_num_nodes", (), 2)]),
        m.Family(
            "centrifugo_client_command_duration_seconds_histogram",
            "histogram",
            "",
            [
                (
                    "centrifugo_client_command_duration_seconds_histogram_count",
                    (("method", "connect"), ("channel_namespace", "")),
                    4,
                )
            ],
        ),
    ]
    (tmp_path / "1.json").write_bytes(msgspec.json.encode(peer))
    stale = [
        m.Family(
            "centrifugo_node_num_clients", "gauge", "", [("centrifugo_node_num_clients", (), 50)]
        )
    ]
    (tmp_path / "2.json").write_bytes(msgspec.json.encode(stale))
    old = time.time() - m.STALE_AFTER - 5
    os.utime(tmp_path / "2.json", (old, old))
    samples = parse(node.metrics.exposition().decode())
    assert value(samples, "node_num_clients") == 3
    assert value(samples, "node_num_nodes") == 2
    count = "client_command_duration_seconds_histogram_count"
    assert value(samples, count, method="connect", **NS) == 5
    assert (tmp_path / f"{os.getpid()}.json").exists()  # its own file, for the others


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


# ------------------------------------------------- every family of Centrifugo's docs

C, G, H, S = "counter", "gauge", "histogram", "summary"
_NS = ("channel_namespace",)
_TR = ("transport", "frame_type", "channel_namespace")
_PX = ("protocol", "type", "name")
_TRIG = ("trigger", "channel_namespace")

#: every open-source family on Centrifugo v6's observability page (docs/server/
#: observability.md of centrifugal.dev): name, type, label names (a Summary's
#: ``_histogram`` companion is a row of its own)
DOCUMENTED: list[tuple[str, str, tuple[str, ...]]] = [
    ("node_messages_sent_count", C, ("type", *_NS)),
    ("node_messages_received_count", C, ("type", *_NS)),
    ("node_action_count", C, ("action", *_NS)),
    ("node_num_clients", G, ()),
    ("node_num_users", G, ()),
    ("node_num_subscriptions", G, ()),
    ("node_num_nodes", G, ()),
    ("node_build", G, ("version",)),
    ("node_num_channels", G, ()),
    ("node_survey_duration_seconds", S, ("op",)),
    ("node_survey_duration_seconds_histogram", H, ("op",)),
    ("client_num_reply_errors", C, ("method", "code", *_NS)),
    ("client_num_server_unsubscribes", C, ("code", *_NS)),
    ("client_num_server_disconnects", C, ("code",)),
    ("client_command_duration_seconds", S, ("method", *_NS)),
    ("client_command_duration_seconds_histogram", H, ("method", *_NS)),
    ("client_recover", C, ("recovered", *_NS, "has_recovered_publications")),
    ("client_recovered_publications", H, _NS),
    ("node_client_connection_limit", C, ()),
    (
        "client_connections_accepted",
        C,
        ("transport", "accept_protocol", "client_name", "client_version"),
    ),
    (
        "client_connections_inflight",
        G,
        ("transport", "accept_protocol", "client_name", "client_version"),
    ),
    ("client_subscriptions_inflight", G, ("client_name", *_NS)),
    ("client_ping_pong_duration_seconds", H, ("transport",)),
    ("transport_messages_sent", C, _TR),
    ("transport_messages_sent_size", C, _TR),
    ("transport_messages_received", C, _TR),
    ("transport_messages_received_size", C, _TR),
    ("transport_outgoing_close_count", C, ("transport", "code")),
    ("proxy_duration_seconds", S, _PX),
    ("proxy_duration_seconds_histogram", H, _PX),
    ("proxy_errors", C, _PX),
    ("proxy_inflight_requests", G, _PX),
    ("api_command_duration_seconds", S, ("protocol", "method")),
    ("api_command_duration_seconds_histogram", H, ("protocol", "method")),
    ("api_command_errors_total", C, ("protocol", "method", "error")),
    ("api_rpc_duration_seconds", S, ("protocol", "method")),
    ("api_rpc_duration_seconds_histogram", H, ("protocol", "method")),
    ("node_pub_sub_lag_seconds", H, _NS),
    ("node_broadcast_duration_seconds", H, ("type", *_NS)),
    ("node_tags_filter_dropped_publications", C, _NS),
    ("broker_redis_pub_sub_errors", C, ("broker_name", "error")),
    ("broker_redis_pub_sub_dropped_messages", C, ("broker_name", "channel_type")),
    ("map_broker_redis_pub_sub_errors", C, ("broker_name", "error")),
    ("map_broker_redis_pub_sub_dropped_messages", C, ("broker_name", "channel_type")),
    ("broker_publish_suppressed_count", C, ("reason", *_NS)),
    ("map_broker_publish_suppressed_count", C, ("reason", *_NS)),
    ("map_broker_remove_suppressed_count", C, ("reason", *_NS)),
    ("map_broker_cleanup_removed_count", C, ("broker_name",)),
    ("map_broker_cleanup_errors_count", C, ("broker_name",)),
    ("consumers_messages_processed_total", C, ("consumer_name",)),
    ("consumers_errors_total", C, ("consumer_name",)),
    ("node_incoming_http_requests_total", C, ("path", "method", "status")),
    ("shared_poll_num_channels", G, ()),
    ("shared_poll_num_keys", G, ()),
    ("shared_poll_cycle_duration_seconds", H, _NS),
    ("shared_poll_cycle_work_duration_seconds", H, _NS),
    ("shared_poll_handler_duration_seconds", H, _TRIG),
    ("shared_poll_sem_wait_duration_seconds", H, _TRIG),
    ("shared_poll_handler_error_count", C, _TRIG),
    ("shared_poll_items_count", C, ("trigger", "result", *_NS)),
    ("shared_poll_publish_count", C, ("result", *_NS)),
    ("shared_poll_proxy_request_items", H, ("name",)),
    ("shared_poll_proxy_response_items", H, ("name",)),
]

#: on the page but not exposed here, and why (docs/observability.md says the same)
NOT_EXPOSED = {
    # no buffer: PUB/SUB messages are handled as they are read
    "broker_redis_pub_sub_buffered_messages",
    "map_broker_redis_pub_sub_buffered_messages",
    # not computed (the expiry loop does not look at the oldest pending entry)
    "map_broker_cleanup_lag_seconds",
    # no PostgreSQL broker here
    "broker_postgres_cleanup_removed_total",
    "broker_postgres_outbox_cursor_lag_seconds",
    "map_broker_postgres_outbox_cursor_lag_seconds",
    "broker_postgres_partitions",
    "map_broker_postgres_partitions",
    # no shared poll notification API here
    "shared_poll_notify_count",
    "shared_poll_dropped_notify_count",
}


#: exposed when the broker (or map broker) is the Redis one (see the Redis test)
REDIS_ONLY = {
    "broker_redis_pub_sub_errors",
    "broker_redis_pub_sub_dropped_messages",
    "map_broker_redis_pub_sub_errors",
    "map_broker_redis_pub_sub_dropped_messages",
    "map_broker_cleanup_removed_count",
    "map_broker_cleanup_errors_count",
}


def exposed_types(text: str) -> dict[str, str]:
    return dict(
        (line.split()[2], line.split()[3])
        for line in text.splitlines()
        if line.startswith("# TYPE")
    )


def total(samples: Samples, family: str, kind: str) -> float:
    """A family's sum over its label sets (a histogram or summary: its ``_count``)."""
    name = P + family + ("_count" if kind in (H, S) else "")
    return sum(v for (n, _), v in samples.items() if n == name)


def label_names(samples: Samples, family: str, kind: str) -> set[tuple[str, ...]]:
    name = P + family + ("_count" if kind in (H, S) else "")
    return {tuple(sorted(k for k, _ in labels)) for (n, labels), _ in samples.items() if n == name}


def test_documented_table_is_the_whole_page() -> None:
    """Every family the docs page names is either in the table or named as not exposed."""
    assert not {name for name, _, _ in DOCUMENTED} & NOT_EXPOSED
    assert len({name for name, _, _ in DOCUMENTED}) == len(DOCUMENTED)
    node = Node(node_config())
    assert isinstance(node.metrics, NodeMetricsType)
    types = exposed_types(node.metrics.exposition().decode())
    for name, kind, _ in DOCUMENTED:
        assert types.get(P + name) == (None if name in REDIS_ONLY else kind), name
    for name in NOT_EXPOSED:
        assert P + name not in types, name


async def _call(http: httpx.AsyncClient, srv: LiveServer, method: str, body: Any) -> Any:
    r = await http.post(srv.url(f"/api/{method}"), json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


async def _frames(ws: Any, until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Read JSON frames (answering pings) until one satisfies ``until``."""
    seen: list[dict[str, Any]] = []
    with anyio.fail_after(TIMEOUT):
        while True:
            for line in str(await ws.recv()).split("\n"):
                msg = json.loads(line)
                if msg == {}:
                    await ws.send("{}")  # pong
                seen.append(msg)
                if until(msg):
                    return seen


async def test_documented_families_move_with_their_events(
    live_server: LiveServerFactory,
) -> None:
    """Each family of the docs table gets samples when its event happens over a live
    uvicorn (WebSocket, uni_http_stream, server API, a proxy), with the documented label
    names; the engine, shared poll and connection limit ones are driven further below."""
    proxy_seen: list[float] = []
    node_box: list[Node] = []

    async def backend(request: Any) -> Any:
        from starlette.responses import JSONResponse

        # the call is in flight: the gauge shows it
        text = node_box[0].metrics.exposition().decode()  # type: ignore[attr-defined]
        proxy_seen.append(
            value(
                parse(text), "proxy_inflight_requests", protocol="http", type="rpc", name="default"
            )
        )
        return JSONResponse({"result": {"data": {"ok": True}}})

    from starlette.applications import Starlette
    from starlette.routing import Route

    backend_srv = live_server(Starlette(routes=[Route("/rpc", backend, methods=["POST"])]))
    cfg = node_config()
    cfg["client"].update(ping_interval="300ms", pong_timeout="250ms")
    cfg["channel"]["namespaces"] += MAP_NAMESPACES
    for uni in ("uni_http_stream", "uni_sse", "uni_websocket"):
        cfg[uni] = {"enabled": True}
    rpc_proxy = {"endpoint": backend_srv.url("/rpc")}
    cfg["rpc"] = {"proxy": rpc_proxy, "without_namespace": {"proxy_enabled": True}}
    node = Node(cfg)
    node_box.append(node)
    srv = live_server(node.asgi_app())
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        before = await scrape(http, srv)
        first = await _call(http, srv, "publish", {"channel": "news:r", "data": {"n": 1}})
        epoch = first["result"]["epoch"]
        async with (
            subscriber(srv, "1", "chat:e") as ws,
            websockets.connect(srv.ws_url(WS_PATH), open_timeout=TIMEOUT) as rec,
        ):
            # a recovering subscribe (one publication missed), and a tags filter
            await rec.send(json.dumps({"id": 1, "connect": {"token": token("2")}}))
            recover = {"channel": "news:r", "recover": True, "offset": 0, "epoch": epoch}
            await rec.send(json.dumps({"id": 2, "subscribe": recover}))
            tf = {"key": "k", "cmp": "eq", "val": "yes"}
            await rec.send(json.dumps({"id": 3, "subscribe": {"channel": "tags:t", "tf": tf}}))
            await rec.send(json.dumps({"id": 4, "rpc": {"method": "m", "data": {}}}))
            await _frames(rec, lambda m: m.get("id") == 4)
            assert proxy_seen == [1.0]
            pub = {"channel": "tags:t", "data": 1, "tags": {"k": "no"}}
            await _call(http, srv, "publish", pub)  # dropped by the tags filter
            await _call(http, srv, "publish", {"channel": "chat:e", "data": 2})
            dup = {"channel": "news:r", "data": 3, "idempotency_key": "once"}
            await _call(http, srv, "publish", dup)
            await _call(http, srv, "publish", dup)  # suppressed
            await _frames(ws, lambda m: "pub" in m.get("push", {}))
            await _frames(rec, lambda m: m == {})  # a ping, answered
            for method in ("presence", "presence_stats", "history", "history_remove"):
                await _call(http, srv, method, {"channel": "news:r"})
            await _call(http, srv, "channels", {})
            await _call(http, srv, "info", {})
            assert (await _call(http, srv, "rpc", {"method": "x"}))["error"]["code"] == 104
            board = {"channel": "board:1", "key": "a", "data": {}, "key_mode": "if_new"}
            await _call(http, srv, "map_publish", board)
            await _call(http, srv, "map_publish", board)  # suppressed: key_exists
            await _call(http, srv, "map_remove", {"channel": "board:1", "key": "zz"})
            await _call(http, srv, "unsubscribe", {"user": "1", "channel": "chat:e"})
            await _frames(ws, lambda m: "unsubscribe" in m.get("push", {}))
            # a unidirectional client: its connect push counts under its transport
            body = {"token": token("3")}
            url = srv.url("/connection/uni_http_stream")
            async with http.stream("POST", url, json=body) as stream:
                assert stream.status_code == 200
                async for chunk in stream.aiter_bytes():
                    if b"connect" in chunk:
                        break
            for kind in ("uni_sse", "uni_websocket"):
                async with open_uni(srv, kind, {"token": token("4")}) as uni:
                    await uni.until(lambda push: "connect" in push)
            during = await scrape(http, srv)
            await _call(http, srv, "disconnect", {"user": "1"})
            with anyio.fail_after(TIMEOUT), pytest.raises(websockets.ConnectionClosed):
                while True:
                    await ws.recv()
        after = await scrape(http, srv)

    moved = {
        name: total(after, name, kind) - total(before, name, kind) for name, kind, _ in DOCUMENTED
    }
    elsewhere = {  # driven by the tests below (engines, shared poll, connection limit)
        "broker_redis_pub_sub_errors",
        "broker_redis_pub_sub_dropped_messages",
        "map_broker_redis_pub_sub_errors",
        "map_broker_redis_pub_sub_dropped_messages",
        "map_broker_cleanup_removed_count",
        "map_broker_cleanup_errors_count",
        "consumers_messages_processed_total",
        "consumers_errors_total",
        "node_client_connection_limit",
        "proxy_errors",
        "client_num_reply_errors",
        "proxy_inflight_requests",  # seen at 1 during the call (above), 0 again after
    }
    gauges = {name for name, kind, _ in DOCUMENTED if kind == G}
    for name, kind, labels in DOCUMENTED:
        if name in elsewhere or name.startswith("shared_poll_"):
            continue
        if name in gauges:
            assert total(during, name, kind) > 0 or name == "node_num_nodes", name
        else:
            assert moved[name] > 0, name
        seen = label_names(during, name, kind) | label_names(after, name, kind)
        assert seen == {tuple(sorted(labels))}, (name, seen)
    assert value(after, "proxy_inflight_requests", protocol="http", type="rpc", name="default") == 0
    # transports and frame types as Centrifugo names them; replies are counted too
    for transport, frame in [
        ("websocket", "connect"),
        ("websocket", "subscribe"),
        ("websocket", "rpc"),
        ("websocket", "push_publication"),
        ("websocket", "push_unsubscribe"),
        ("websocket", "server_ping"),
        ("uni_http_stream", "push_connect"),
        ("uni_sse", "push_connect"),
        ("uni_websocket", "push_connect"),
    ]:
        labels = {"transport": transport, "frame_type": frame, **NS}
        assert value(during, "transport_messages_sent", **labels) >= 1, labels
        assert value(during, "transport_messages_sent_size", **labels) > 0, labels
    received = {"transport": "websocket", "frame_type": "subscribe", **NS}
    assert value(during, "transport_messages_received", **received) == 3
    dropped = {"transport": "websocket", "frame_type": "push_publication", **NS}
    # chat:e's to one, news:r's (once: the repeat was suppressed) to the other; the one
    # its tags filter left out is not counted
    assert value(during, "transport_messages_sent", **dropped) == 2
    assert (
        value(during, "client_recover", recovered="yes", has_recovered_publications="yes", **NS)
        == 1
    )
    closed = {"transport": "websocket", "code": str(ws.close_code)}
    assert value(after, "transport_outgoing_close_count", **closed) == 1
    ok = {"path": "/api/publish", "method": "POST", "status": "200"}
    assert value(during, "node_incoming_http_requests_total", **ok) == 5
    sup = {"reason": "idempotency_key", **NS}
    assert value(during, "broker_publish_suppressed_count", **sup) == 1
    assert value(during, "map_broker_publish_suppressed_count", reason="key_exists", **NS) == 1
    for action, times in [
        ("history", 1),
        ("add_client", 5),  # the three unidirectional clients too
        ("add_subscription", 3),
        ("broker_subscribe", 3),
        ("add_presence", 2),  # chat:e and news:r keep presence, tags:t does not
    ]:
        assert value(during, "node_action_count", action=action, **NS) == times, action
    for action in ("remove_client", "remove_subscription", "remove_presence"):
        assert value(after, "node_action_count", action=action, **NS) >= 1, action


def _families(node: Node) -> Samples:
    assert isinstance(node.metrics, NodeMetricsType)
    return parse(node.metrics.exposition().decode())


def _moved(before: Samples, after: Samples, family: str, kind: str = C) -> float:
    return total(after, family, kind) - total(before, family, kind)


async def test_redis_engine_families_move() -> None:
    """A private redis-server: undecodable PUB/SUB messages are dropped and counted (broker
    and map broker), expired map keys removed by the cleanup are counted, and killing the
    server counts PUB/SUB connection errors."""
    from tests.unit.test_redis_engine import RedisProcess, unique_prefix

    proc = RedisProcess().start()
    try:
        prefix = unique_prefix()
        redis = {"address": [f"redis://{proc.address}"], "prefix": prefix}
        cfg = node_config(
            engine={"type": "redis", "redis": redis},
            map_broker={"type": "redis", "redis": {**redis, "cleanup_interval": "100ms"}},
        )
        ephemeral = {"mode": "ephemeral", "key_ttl": "1s"}
        cfg["channel"]["namespaces"].append(
            {"name": "eph", "subscription_type": "map", "map": ephemeral}
        )
        node = Node(cfg)
        with anyio.fail_after(20):
            async with node:
                before = _families(node)
                types = exposed_types(node.metrics.exposition().decode())  # type: ignore[attr-defined]
                assert {name: types.get(P + name) for name in REDIS_ONLY} == dict.fromkeys(
                    REDIS_ONLY, C
                )
                await node.broker.subscribe("chat:r")
                await node.map_broker.subscribe("eph:1")
                proc.cli("PUBLISH", f"{prefix}.client.chat:r", "garbage")
                proc.cli("PUBLISH", f"{prefix}.map.client.eph:1", "garbage")
                await node.map_publish("eph:1", "k", {"v": 1})
                while True:
                    now = _families(node)
                    if (
                        _moved(before, now, "broker_redis_pub_sub_dropped_messages")
                        and _moved(before, now, "map_broker_redis_pub_sub_dropped_messages")
                        and _moved(before, now, "map_broker_cleanup_removed_count")
                    ):
                        break
                    await anyio.sleep(0.05)
                assert not _moved(before, now, "broker_redis_pub_sub_errors")
                proc.kill()
                while not (  # noqa: ASYNC110 (polls the node's counters)
                    _moved(before, now := _families(node), "broker_redis_pub_sub_errors")
                    and _moved(before, now, "map_broker_redis_pub_sub_errors")
                ):
                    await anyio.sleep(0.05)
                with anyio.move_on_after(0.5):  # cleanup rounds now fail
                    while not _moved(before, _families(node), "map_broker_cleanup_errors_count"):  # noqa: ASYNC110 (polls the node's counters)
                        await anyio.sleep(0.05)
                after = _families(node)
        assert _moved(before, after, "map_broker_cleanup_errors_count") > 0
        assert (
            value(
                after,
                "broker_redis_pub_sub_dropped_messages",
                broker_name="",
                channel_type="client",
            )
            == 1
        )
    finally:
        proc.kill()


async def test_shared_poll_families_move() -> None:
    """A shared poll channel polled by a Python handler: its gauges, cycle and handler
    durations, items by result, publish results and handler errors move."""
    from centrifuge_asgi.session import TransportInfo
    from tests.unit.test_shared_poll import Backend, FakeConn, poll_config, subscribe, track

    class SseConn(FakeConn):
        transport = TransportInfo(name="sse")

    backend = Backend()
    backend.data, backend.versions = {"a": b'{"n":1}', "b": b'{"n":2}'}, {"a": 1, "b": 1}
    cfg = {**node_config(), **poll_config(mode="versioned", publish_enabled=True)}
    node = Node(cfg)
    node.on_shared_poll_refresh(backend)
    with anyio.fail_after(10):
        async with node:
            before = _families(node)
            conn = SseConn("u")
            subscribe(node, conn)
            track(node, conn, ["a", "b"])
            during = _families(node)
            assert value(during, "shared_poll_num_channels") == 1
            assert value(during, "shared_poll_num_keys") == 2
            while not _moved(before, _families(node), "shared_poll_cycle_duration_seconds", H):  # noqa: ASYNC110 (polls the node's counters)
                await anyio.sleep(0.02)
            await node.shared_poll_publish("vv:1", "a", b"5", 9)
            await node.shared_poll_publish("vv:1", "a", b"4", 8)  # stale
            backend.fail = True
            while not _moved(before, _families(node), "shared_poll_handler_error_count"):  # noqa: ASYNC110 (polls the node's counters)
                await anyio.sleep(0.02)
            after = _families(node)
    for name, kind, _ in DOCUMENTED:
        if name.startswith("shared_poll_") and kind != G:
            assert _moved(before, after, name, kind) > 0, name
    track_changed = {"trigger": "track", "result": "changed", **NS}
    assert value(after, "shared_poll_items_count", **track_changed) == 2
    assert value(after, "shared_poll_publish_count", result="delivered", **NS) == 1
    assert value(after, "shared_poll_publish_count", result="stale", **NS) == 1
    assert value(after, "shared_poll_proxy_request_items_count", name="default") >= 2
    # the pushes to the tracker count under its transport, sizes included
    pushes = {"transport": "sse", "frame_type": "push_publication", **NS}
    assert value(after, "transport_messages_sent", **pushes) == len(conn.pushes) == 3
    assert value(after, "transport_messages_sent_size", **pushes) > 0


async def test_connection_limit_and_upgrades_are_counted(live_server: LiveServerFactory) -> None:
    """client.connection_limit: the refused upgrade is counted (and as a 503 request)."""
    node = Node(node_config(client={**make_config()["client"], "connection_limit": 1}))
    srv = live_server(node.asgi_app())
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        subscriber(srv, "1", "chat:l"),
    ):
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(srv.ws_url(WS_PATH), open_timeout=TIMEOUT):
                pass
        samples = await scrape(http, srv)
    assert value(samples, "node_client_connection_limit") == 1
    upgrade = {"path": WS_PATH, "method": "GET"}
    assert value(samples, "node_incoming_http_requests_total", status="503", **upgrade) == 1
    assert value(samples, "node_incoming_http_requests_total", status="101", **upgrade) == 1


def test_fanout_costs_one_observer_call_per_fanout() -> None:
    """The fan-out tells the observer once per publication, whatever the subscriber count
    (transport_messages_sent is counted from the per-channel tally, not per delivery)."""
    from centrifuge_asgi.engines.base import Publication

    node = Node(node_config())
    calls: list[tuple[str, dict[Any, int]]] = []
    real = node.metrics.fanout_sent

    def spy(frame_type: str, channel: str, tally: Any, data: Any, unsent: Any = ()) -> None:
        calls.append((frame_type, dict(tally)))
        real(frame_type, channel, tally, data, unsent)

    node.registry.observer.fanout_sent = spy  # type: ignore[union-attr,method-assign]

    class Sess:
        def __init__(self, i: int, transport: str) -> None:
            from centrifuge_asgi.protocol.json_codec import JSON
            from centrifuge_asgi.session import TransportInfo

            self.client_id, self.user, self.codec = str(i), str(i), JSON
            self.transport = TransportInfo(name=transport)
            self.sub_slot = type(  # one subscription, held as Session holds it
                "S",
                (),
                {
                    "channel": "c",
                    "pending": None,
                    "flags": 0,
                    "tags_filter": None,
                },
            )()
            self.sent: list[bytes] = []

        def send(self, data: bytes) -> None:
            self.sent.append(data)

    sessions = [Sess(i, "websocket" if i % 3 else "sse") for i in range(30)]
    for s in sessions:
        node.registry.add_subscriber("c", s)  # type: ignore[arg-type]
    node.registry.remove_subscriber("c", sessions[0])  # type: ignore[arg-type]
    node.handle_publication("c", Publication(data=b'{"x":1}'), "")
    assert len(calls) == 1
    assert calls[0][0] == "push_publication"
    assert sorted((t, n) for (t, _), n in calls[0][1].items()) == [("sse", 9), ("websocket", 20)]
    samples = _families(node)
    sent = {"frame_type": "push_publication", **NS}
    assert value(samples, "transport_messages_sent", transport="websocket", **sent) == 20
    assert value(samples, "transport_messages_sent", transport="sse", **sent) == 9
    size = len(sessions[1].sent[0])
    assert value(samples, "transport_messages_sent_size", transport="sse", **sent) == 9 * size


def test_summaries_have_quantiles() -> None:
    """The deprecated Summaries carry Centrifugo's quantiles over the latest observations."""
    node = Node(node_config())
    for ms in range(1, 101):
        node.metrics_command("publish", ms / 1000)
    samples = _families(node)
    name = "client_command_duration_seconds"
    got = {q: value(samples, name, method="publish", quantile=q, **NS) for q in ("0.5", "0.99")}
    assert got == {"0.5": 0.051, "0.99": 0.1}
    assert value(samples, name + "_count", method="publish", **NS) == 100
