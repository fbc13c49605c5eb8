"""Prometheus metrics of one node: the node's observer when ``prometheus.enabled``.

An edge module: ``edges.py`` builds it for a node only when Prometheus is enabled (see
``observer.py``), and the app assembly (``app.py``) serves ``GET /metrics`` from it.

Every node owns a :class:`prometheus_client.CollectorRegistry` (``node.metrics.registry``),
so several nodes in one process never clash. Names follow Centrifugo's ``centrifugo_*``
metrics (server-api spec §5.2) under the prefix ``centrifuge_asgi_``:

* gauges read from the connection registry at scrape time (no hot-path cost):
  ``node_num_clients``, ``node_num_users``, ``node_num_subscriptions``,
  ``node_num_channels``, ``node_build{version}``, ``transport_connections{transport}``;
* ``node_messages_sent_total{type}``: pushes handed to local connections by fan-out
  (publication, join, leave), and ``node_messages_received_total{type}``: broker
  messages fanned out to local subscribers;
* ``client_command_duration_seconds{method}`` (histogram): client protocol commands;
* ``api_command_duration_seconds{protocol,method}`` (histogram),
  ``api_command_errors_total{protocol,method,error}`` and
  ``api_commands_total{protocol,method,outcome}``: server API calls;
* ``broker_publish_errors_total``: publishes the broker failed;
* the standard ``process_*`` and ``python_info`` collectors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .host import SessionHost

PREFIX = "centrifuge_asgi"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_FANOUT_TYPES = ("publication", "join", "leave")


class _RegistryCollector(Collector):
    """Gauges computed from ``node.registry`` when Prometheus scrapes."""

    def __init__(self, node: SessionHost) -> None:
        self.node = node

    def _families(self) -> list[GaugeMetricFamily]:
        p = PREFIX
        return [
            GaugeMetricFamily(f"{p}_node_num_clients", "Connections on this node."),
            GaugeMetricFamily(f"{p}_node_num_users", "Distinct users connected to this node."),
            GaugeMetricFamily(f"{p}_node_num_subscriptions", "Subscriptions on this node."),
            GaugeMetricFamily(f"{p}_node_num_channels", "Channels with local subscribers."),
            GaugeMetricFamily(f"{p}_node_build", "Build information.", labels=["version"]),
            GaugeMetricFamily(
                f"{p}_transport_connections", "Connections by transport.", labels=["transport"]
            ),
        ]

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        reg = self.node.registry
        clients, users, subs, channels, build, transports = self._families()
        clients.add_metric([], reg.num_clients)
        users.add_metric([], reg.num_users)
        subs.add_metric([], reg.num_subscriptions)
        channels.add_metric([], reg.num_channels)
        build.add_metric([self.node.version], 1)
        counts: dict[str, int] = {}
        for session in reg.sessions():
            name = session.transport.name
            counts[name] = counts.get(name, 0) + 1
        for name, n in sorted(counts.items()):
            transports.add_metric([name], n)
        return [clients, users, subs, channels, build, transports]


class NodeMetrics:
    """The metrics of one node, a :class:`~centrifuge_asgi.observer.NodeObserver`; hooks
    are cheap (pre-resolved label children)."""

    def __init__(self, node: SessionHost) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg, p = self.registry, PREFIX
        self.registry.register(_RegistryCollector(node))
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        sent = Counter(
            f"{p}_node_messages_sent",
            "Pushes queued to local connections by fan-out, by type.",
            ["type"],
            registry=reg,
        )
        received = Counter(
            f"{p}_node_messages_received",
            "Broker messages fanned out to local subscribers, by type.",
            ["type"],
            registry=reg,
        )
        self._fanout = {t: (sent.labels(t), received.labels(t)) for t in _FANOUT_TYPES}
        self._client_commands = Histogram(
            f"{p}_client_command_duration_seconds",
            "Client command duration, by method.",
            ["method"],
            registry=reg,
        )
        self._api_duration = Histogram(
            f"{p}_api_command_duration_seconds",
            "Server API command duration, by method.",
            ["protocol", "method"],
            registry=reg,
        )
        self._api_errors = Counter(
            f"{p}_api_command_errors",
            "Server API errors, by method and error (code, read_body or unmarshal).",
            ["protocol", "method", "error"],
            registry=reg,
        )
        self._api_calls = Counter(
            f"{p}_api_commands",
            "Server API calls, by method and outcome (ok or error).",
            ["protocol", "method", "outcome"],
            registry=reg,
        )
        self.broker_publish_errors = Counter(
            f"{p}_broker_publish_errors", "Publications the broker failed to accept.", registry=reg
        )
        self._consumer_processed = Counter(
            f"{p}_consumers_processed",
            "Messages consumed, by consumer.",
            ["consumer_name"],
            registry=reg,
        )
        self._consumer_errors = Counter(
            f"{p}_consumers_errors",
            "Failed consumer attempts, by consumer.",
            ["consumer_name"],
            registry=reg,
        )
        self._command_children: dict[str, Histogram] = {}

    def command(self, method: str, duration: float) -> None:
        """A client protocol command finished (``Node.metrics_command``)."""
        child = self._command_children.get(method)
        if child is None:
            child = self._command_children[method] = self._client_commands.labels(method)
        child.observe(duration)

    def fanout(self, kind: str, count: int) -> None:
        """One broker message of ``kind`` was handed to ``count`` local connections."""
        if not count:
            return
        sent, received = self._fanout[kind]
        sent.inc(count)
        received.inc()

    def broker_publish_error(self) -> None:
        """The broker failed to accept a publication."""
        self.broker_publish_errors.inc()

    def api_call(self, method: str, duration: float, error: str = "") -> None:
        """A server API call finished; ``error`` is empty on success."""
        self._api_duration.labels("http", method).observe(duration)
        self._api_calls.labels("http", method, "error" if error else "ok").inc()
        if error:
            self._api_errors.labels("http", method, error).inc()

    def consumer_processed(self, name: str, count: int) -> None:
        """A consumer removed ``count`` messages from its source."""
        self._consumer_processed.labels(name).inc(count)

    def consumer_error(self, name: str) -> None:
        """A consumer attempt failed (it is retried with backoff)."""
        self._consumer_errors.labels(name).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric of this node."""
        return generate_latest(self.registry)
