"""Prometheus metrics of one node under Centrifugo's names: the node's observer when
``prometheus.enabled``.

An edge module: ``edges.py`` builds it for a node only when Prometheus is enabled (see
``observer.py``), and the app assembly (``app.py``) serves ``GET /metrics`` from it.

The names, types and labels are Centrifugo v6's (``centrifugo_node_num_clients``,
``centrifugo_client_num_reply_errors``, ``centrifugo_api_command_duration_seconds_histogram``,
...), so its Grafana dashboard (id 13039) reads them unchanged; ``prometheus.namespace``
replaces the ``centrifugo`` prefix. Counters keep Go's names: ``..._count`` and
``transport_messages_sent`` carry no ``_total`` suffix, as client_golang exposes them.
docs/observability.md has the table of every metric and what it counts here.

The values live in plain dicts (no locks: one event loop updates them), exposed by
:func:`render`; ``process_*`` and ``python_info`` come from prometheus_client's
collectors. Every node owns its store, so several nodes in one process never clash.

Several worker processes (``serve --workers``, or any server whose workers set
``CENTRIFUGE_ASGI_METRICS_DIR``): each worker writes its samples to a file in that
directory every second and at each scrape; the worker that answers a scrape adds up its
own samples and every other worker's fresh file, so one scrape of the shared port gives
the totals of the host (gauges such as ``node_num_nodes`` take the maximum instead).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

if TYPE_CHECKING:
    from .host import SessionHost
    from .protocol.codec import Codec, EncodedOnce

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: the environment variable naming the directory the workers of one server share
MULTIPROCESS_ENV = "CENTRIFUGE_ASGI_METRICS_DIR"
#: a worker's file older than this is left out (the worker is gone)
STALE_AFTER = 10.0
#: how often a worker writes its file
WRITE_INTERVAL = 1.0
#: client_golang's default buckets (Centrifugo's histograms use them)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: the deprecated Summaries' quantiles (Centrifugo's objectives)
QUANTILES = (0.5, 0.99, 0.999)
#: how many latest observations per label set the quantiles are computed over
WINDOW = 512

Labels = tuple[tuple[str, str], ...]

NS = "channel_namespace"  # always empty here: a Centrifugo PRO label
_CYCLE = (NS,)
_TRIGGER = ("trigger", NS)
_TRANSPORT = ("transport", "frame_type", NS)
_PROXY = ("protocol", "type", "name")
#: Centrifugo's buckets where they are not client_golang's defaults (BUCKETS)
_FINE = (0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
COMMAND_BUCKETS = (*_FINE, 1.0, 2.5, 5.0, 10.0)
_ITEMS = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0)
_POLL = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Centrifugo's families updated through :meth:`NodeMetrics.count` / ``observe``: name
#: (without the namespace) → (type, label names, help). A ``summary`` is the deprecated
#: Summary plus its ``_histogram`` companion, both fed by one ``observe``.
EVENTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "node_action_count": ("counter", ("action", NS), "Number of various actions called."),
    "node_survey_duration_seconds": ("summary", ("op",), "Survey duration summary."),
    "node_pub_sub_lag_seconds": ("histogram", (NS,), "Pub sub lag in seconds."),
    "node_broadcast_duration_seconds": (
        "histogram",
        ("type", NS),
        "Broadcast duration in seconds.",
    ),
    "node_tags_filter_dropped_publications": (
        "counter",
        (NS,),
        "Number of publications dropped due to tags filtering.",
    ),
    "node_client_connection_limit": (
        "counter",
        (),
        "Number of refused requests due to node client connection limit.",
    ),
    "node_incoming_http_requests_total": (
        "counter",
        ("path", "method", "status"),
        "Number of incoming HTTP requests.",
    ),
    "client_num_server_unsubscribes": (
        "counter",
        ("code", NS),
        "Number of server initiated unsubscribes.",
    ),
    "client_recover": (
        "counter",
        ("recovered", NS, "has_recovered_publications"),
        "Count of recover operations with success/fail resolution.",
    ),
    "client_recovered_publications": (
        "histogram",
        (NS,),
        "Number of publications recovered during subscription recovery.",
    ),
    "client_connections_accepted": (
        "counter",
        ("transport", "accept_protocol", "client_name", "client_version"),
        "Count of accepted transports.",
    ),
    "client_ping_pong_duration_seconds": (
        "histogram",
        ("transport",),
        "Ping/Pong duration in seconds.",
    ),
    "transport_messages_sent": (
        "counter",
        _TRANSPORT,
        "Number of messages sent to client connections over specific transport.",
    ),
    "transport_messages_sent_size": (
        "counter",
        _TRANSPORT,
        "Size in bytes of messages sent to client connections over specific transport.",
    ),
    "transport_messages_received": (
        "counter",
        _TRANSPORT,
        "Number of messages received from client connections over specific transport.",
    ),
    "transport_messages_received_size": (
        "counter",
        _TRANSPORT,
        "Size in bytes of messages received from client connections over specific transport.",
    ),
    "transport_outgoing_close_count": (
        "counter",
        ("transport", "code"),
        "Number of close frames sent to client connections.",
    ),
    "proxy_inflight_requests": ("gauge", _PROXY, "Number of proxy requests in flight."),
    "api_rpc_duration_seconds": ("summary", ("protocol", "method"), "Duration of API RPC."),
    "broker_publish_suppressed_count": (
        "counter",
        ("reason", NS),
        "Number of suppressed publish operations.",
    ),
    "map_broker_publish_suppressed_count": (
        "counter",
        ("reason", NS),
        "Number of suppressed map publish operations.",
    ),
    "map_broker_remove_suppressed_count": (
        "counter",
        ("reason", NS),
        "Number of suppressed map remove operations.",
    ),
    "shared_poll_cycle_duration_seconds": (
        "histogram",
        _CYCLE,
        "Full shared poll cycle duration including the spread delay.",
    ),
    "shared_poll_cycle_work_duration_seconds": (
        "histogram",
        _CYCLE,
        "Shared poll cycle duration without the spread delay.",
    ),
    "shared_poll_handler_duration_seconds": (
        "histogram",
        _TRIGGER,
        "Shared poll handler duration.",
    ),
    "shared_poll_sem_wait_duration_seconds": (
        "histogram",
        _TRIGGER,
        "Time waiting for a shared poll concurrency slot.",
    ),
    "shared_poll_handler_error_count": (
        "counter",
        _TRIGGER,
        "Number of shared poll handler errors.",
    ),
    "shared_poll_items_count": (
        "counter",
        ("trigger", "result", NS),
        "Items returned by shared poll handlers by result.",
    ),
    "shared_poll_publish_count": (
        "counter",
        ("result", NS),
        "Number of publications produced by shared poll.",
    ),
    "shared_poll_proxy_request_items": (
        "histogram",
        ("name",),
        "Number of items per shared poll refresh proxy request.",
    ),
    "shared_poll_proxy_response_items": (
        "histogram",
        ("name",),
        "Number of items per shared poll refresh proxy response.",
    ),
}
#: the buckets of EVENTS histograms (BUCKETS when not listed)
_BUCKETS_OF: dict[str, tuple[float, ...]] = {
    "node_survey_duration_seconds": (0.001, *BUCKETS[:-4], 1.0, 2.5, 5.0, 10.0),
    "node_pub_sub_lag_seconds": (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
    "node_broadcast_duration_seconds": (1e-06, 5e-06, 1e-05, 5e-05, *COMMAND_BUCKETS),
    "client_ping_pong_duration_seconds": COMMAND_BUCKETS,
    "client_recovered_publications": (*_ITEMS, 5000.0, 10000.0),
    "shared_poll_cycle_duration_seconds": (*_POLL, 60.0),
    "shared_poll_cycle_work_duration_seconds": (*_POLL, 60.0),
    "shared_poll_handler_duration_seconds": (0.001, 0.005, *_POLL),
    "shared_poll_sem_wait_duration_seconds": (0.0001, 0.0005, 0.001, 0.005, *_POLL),
    "shared_poll_proxy_request_items": _ITEMS,
    "shared_poll_proxy_response_items": _ITEMS,
}


class Family(msgspec.Struct, array_like=True):
    """One metric family as exposed: the name on its ``# TYPE`` line, and its samples
    as (sample name, labels, value)."""

    name: str
    type: str
    help: str
    samples: list[tuple[str, Labels, float]]


class _Histogram:
    """Bucketed observations per label set (client_golang's histogram, cumulated when
    exposed), plus the latest :data:`WINDOW` values per label set for the deprecated
    Summary's quantiles."""

    __slots__ = ("buckets", "recent", "series")

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        # label set (pairs, or an EVENTS family's values) → per-bucket counts, +Inf, sum
        self.series: dict[tuple[Any, ...], list[float]] = {}
        self.recent: dict[tuple[Any, ...], deque[float]] = {}

    def observe(self, labels: tuple[Any, ...], value: float) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.buckets) + 2)
            self.recent[labels] = deque(maxlen=WINDOW)
        row[bisect.bisect_left(self.buckets, value)] += 1
        row[-1] += value
        self.recent[labels].append(value)

    def samples(self, name: str, names: Sequence[str] = ()) -> list[tuple[str, Labels, float]]:
        """The exposed samples; ``names`` label the values of an :data:`EVENTS` family."""
        out: list[tuple[str, Labels, float]] = []
        for _, labels, row in self._rows(names):
            total = 0.0
            for bound, count in zip((*self.buckets, math.inf), row, strict=False):
                total += count
                le = "+Inf" if bound == math.inf else repr(bound)
                out.append((f"{name}_bucket", (*labels, ("le", le)), total))
            out.append((f"{name}_sum", labels, row[-1]))
            out.append((f"{name}_count", labels, total))
        return out

    def _rows(self, names: Sequence[str]) -> list[tuple[tuple[Any, ...], Labels, list[float]]]:
        """(key, labels, row) by key: a key is the labels, or with ``names`` their values."""
        rows = sorted(self.series.items())
        if names:
            return [(key, tuple(zip(names, key, strict=True)), row) for key, row in rows]
        return [(key, key, row) for key, row in rows]

    def summary(self, name: str, names: Sequence[str] = ()) -> list[tuple[str, Labels, float]]:
        """The deprecated Summary: Centrifugo's quantiles (0.5, 0.99, 0.999) over the
        latest :data:`WINDOW` observations of each label set, ``_sum`` and ``_count``."""
        out: list[tuple[str, Labels, float]] = []
        for key, labels, row in self._rows(names):
            recent = sorted(self.recent.get(key, ()))
            for q in QUANTILES if recent else ():  # (a row always has observations)
                at = recent[min(len(recent) - 1, int(q * len(recent)))]
                out.append((name, (*labels, ("quantile", repr(q))), at))
            out.append((f"{name}_sum", labels, row[-1]))
            out.append((f"{name}_count", labels, sum(row[:-1])))
        return out


def _counter(name: str, help_: str, values: dict[Labels, float]) -> Family:
    return Family(name, "counter", help_, [(name, k, v) for k, v in sorted(values.items())])


class NodeMetrics:
    """The metrics of one node, a :class:`~centrifuge_asgi.observer.NodeObserver`; every
    hook is a dict update."""

    def __init__(self, node: SessionHost, namespace: str = "") -> None:
        self.node = node
        prometheus = getattr(node.config, "prometheus", None)
        self.namespace = namespace or getattr(prometheus, "namespace", "") or "centrifugo"
        self.registry = CollectorRegistry(auto_describe=True)  # process and platform only
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.messages_sent: dict[Labels, float] = {}  # to the broker
        self.messages_received: dict[Labels, float] = {}  # from the broker, fanned out
        self.reply_errors: dict[Labels, float] = {}
        self.server_disconnects: dict[Labels, float] = {}
        self.api_errors: dict[Labels, float] = {}
        self.broker_errors: dict[Labels, float] = {}
        self.proxy_errors: dict[Labels, float] = {}
        self.consumers_processed: dict[Labels, float] = {}
        self.consumers_errors: dict[Labels, float] = {}
        self.commands = _Histogram(COMMAND_BUCKETS)
        self.api = _Histogram()
        self.proxy = _Histogram()
        self.events: dict[str, dict[tuple[str, ...], float]] = {
            name: {} for name, spec in EVENTS.items() if spec[0] in ("counter", "gauge")
        }
        self.histograms = {
            name: _Histogram(_BUCKETS_OF.get(name, BUCKETS))
            for name, spec in EVENTS.items()
            if spec[0] in ("histogram", "summary")
        }
        self._labels: dict[Any, Labels] = {}
        self._dir = os.environ.get(MULTIPROCESS_ENV, "")

    # ------------------------------------------------- the generic (EVENTS) families

    def count(self, family: str, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        """Add ``amount`` to counter (or gauge) ``family`` of :data:`EVENTS`."""
        table = self.events[family]
        table[labels] = table.get(labels, 0.0) + amount

    def observe(self, family: str, labels: tuple[str, ...], value: float) -> None:
        """One observation of histogram ``family`` of :data:`EVENTS` (and of its
        deprecated Summary, when it has one)."""
        self.histograms[family].observe(labels, value)

    def fanout_sent(
        self,
        frame_type: str,
        channel: str,
        tally: Mapping[tuple[str, Codec], int],
        data: EncodedOnce,
        unsent: Sequence[tuple[str, Codec]] = (),
    ) -> None:
        """One fan-out queued a push to the subscribers ``tally`` counts by transport
        and codec, less the ``unsent`` ones (left out by a tags filter, late, ...):
        counted per transport, sizes from the encoding each codec got (once per fan-out)."""
        sent, size = (
            self.events["transport_messages_sent"],
            self.events["transport_messages_sent_size"],
        )
        less: dict[tuple[str, Codec], int] = {}
        for key in unsent:
            less[key] = less.get(key, 0) + 1
        for (transport, codec), n in tally.items():
            n -= less.get((transport, codec), 0)
            if n <= 0:
                continue
            labels = (transport, frame_type, "")
            sent[labels] = sent.get(labels, 0.0) + n
            size[labels] = size.get(labels, 0.0) + n * len(data.get(codec))

    def _key(self, *pairs: tuple[str, str]) -> Labels:
        labels = self._labels.get(pairs)
        if labels is None:
            labels = self._labels[pairs] = pairs
        return labels

    # ------------------------------------------------------------- observer hooks

    def command(self, method: str, duration: float) -> None:
        """A client protocol command finished (``Node.metrics_command``)."""
        self.commands.observe(self._key(("method", method), ("channel_namespace", "")), duration)

    def reply_error(self, method: str, code: int) -> None:
        """A client command was answered with error ``code``."""
        key = self._key(("method", method), ("code", str(code)), ("channel_namespace", ""))
        self.reply_errors[key] = self.reply_errors.get(key, 0) + 1

    def server_disconnect(self, code: int) -> None:
        """The server closed a connection with ``code``."""
        key = self._key(("code", str(code)))
        self.server_disconnects[key] = self.server_disconnects.get(key, 0) + 1

    def published(self, kind: str) -> None:
        """The node handed a message of ``kind`` to the broker."""
        key = self._key(("type", kind), ("channel_namespace", ""))
        self.messages_sent[key] = self.messages_sent.get(key, 0) + 1

    def fanout(self, kind: str, count: int) -> None:
        """One broker message of ``kind`` was handed to ``count`` local connections."""
        key = self._key(("type", kind), ("channel_namespace", ""))
        self.messages_received[key] = self.messages_received.get(key, 0) + 1

    def broker_publish_error(self) -> None:
        """The broker failed to accept a publication."""
        key = self._key(("broker_name", ""), ("error", "publish"))
        self.broker_errors[key] = self.broker_errors.get(key, 0) + 1

    def api_call(
        self, method: str, duration: float, error: str = "", protocol: str = "http"
    ) -> None:
        """A server API call finished; ``error`` is empty on success."""
        key = self._key(("protocol", protocol), ("method", method))
        self.api.observe(key, duration)
        if error:
            err = self._key(("protocol", protocol), ("method", method), ("error", error))
            self.api_errors[err] = self.api_errors.get(err, 0) + 1

    def proxy_call(self, protocol: str, kind: str, name: str, duration: float, ok: bool) -> None:
        """A backend proxy call (``kind``: connect, rpc, ...) finished."""
        key = self._key(("protocol", protocol), ("type", kind), ("name", name))
        self.proxy.observe(key, duration)
        if not ok:
            self.proxy_errors[key] = self.proxy_errors.get(key, 0) + 1

    def consumer_processed(self, name: str, count: int) -> None:
        """A consumer removed ``count`` messages from its source."""
        key = self._key(("consumer_name", name))
        self.consumers_processed[key] = self.consumers_processed.get(key, 0) + count

    def consumer_error(self, name: str) -> None:
        """A consumer attempt failed (it is retried with backoff)."""
        key = self._key(("consumer_name", name))
        self.consumers_errors[key] = self.consumers_errors.get(key, 0) + 1

    # ------------------------------------------------------------------ exposition

    def families(self) -> list[Family]:
        """Every family of this node, gauges read from the connection registry now."""
        p, node, reg = self.namespace, self.node, self.node.registry
        inflight: dict[Labels, float] = {}
        for session in reg.sessions():
            key = self._key(
                ("transport", session.transport.name),
                ("accept_protocol", ""),
                ("client_name", ""),
                ("client_version", ""),
            )
            inflight[key] = inflight.get(key, 0) + 1
        info = getattr(node, "info", None)
        num_nodes = len(info()["nodes"]) if callable(info) else 1

        def gauge(name: str, help_: str, value: float, labels: Labels = ()) -> Family:
            return Family(name, "gauge", help_, [(name, labels, float(value))])

        out = [
            gauge(f"{p}_node_num_clients", "Number of clients connected.", reg.num_clients),
            gauge(f"{p}_node_num_users", "Number of unique users connected.", reg.num_users),
            gauge(f"{p}_node_num_subscriptions", "Number of subscriptions.", reg.num_subscriptions),
            gauge(
                f"{p}_node_num_channels",
                "Number of channels with one or more subscribers.",
                reg.num_channels,
            ),
            gauge(f"{p}_node_num_nodes", "Number of nodes in the cluster.", num_nodes),
            gauge(f"{p}_node_build", "Node build info.", 1, (("version", node.version),)),
            Family(
                f"{p}_client_connections_inflight",
                "gauge",
                "Number of active client connections.",
                [(f"{p}_client_connections_inflight", k, v) for k, v in sorted(inflight.items())],
            ),
            _counter(
                f"{p}_node_messages_sent_count",
                "Number of messages sent by node to broker.",
                self.messages_sent,
            ),
            _counter(
                f"{p}_node_messages_received_count",
                "Number of messages received from broker.",
                self.messages_received,
            ),
            _counter(
                f"{p}_client_num_reply_errors",
                "Number of errors in replies sent to clients.",
                self.reply_errors,
            ),
            _counter(
                f"{p}_client_num_server_disconnects",
                "Number of server initiated disconnects.",
                self.server_disconnects,
            ),
            gauge(
                f"{p}_client_subscriptions_inflight",
                "Number of active client subscriptions.",
                reg.num_subscriptions,
                (("client_name", ""), ("channel_namespace", "")),
            ),
            Family(
                f"{p}_client_command_duration_seconds",
                "summary",
                "Client command duration summary.",
                self.commands.summary(f"{p}_client_command_duration_seconds"),
            ),
            Family(
                f"{p}_client_command_duration_seconds_histogram",
                "histogram",
                "Client command duration histogram.",
                self.commands.samples(f"{p}_client_command_duration_seconds_histogram"),
            ),
            Family(
                f"{p}_api_command_duration_seconds",
                "summary",
                "Duration of API per command.",
                self.api.summary(f"{p}_api_command_duration_seconds"),
            ),
            Family(
                f"{p}_api_command_duration_seconds_histogram",
                "histogram",
                "Duration of API per command (histogram).",
                self.api.samples(f"{p}_api_command_duration_seconds_histogram"),
            ),
            _counter(
                f"{p}_api_command_errors_total",
                "Total number of errors returned by server API commands.",
                self.api_errors,
            ),
            Family(
                f"{p}_proxy_duration_seconds",
                "summary",
                "Duration of proxy request.",
                self.proxy.summary(f"{p}_proxy_duration_seconds"),
            ),
            Family(
                f"{p}_proxy_duration_seconds_histogram",
                "histogram",
                "Duration of proxy request (histogram).",
                self.proxy.samples(f"{p}_proxy_duration_seconds_histogram"),
            ),
            _counter(f"{p}_proxy_errors", "Total errors in proxy requests.", self.proxy_errors),
            _counter(
                f"{p}_broker_publish_errors",
                "Publications the broker failed to accept (ours).",
                self.broker_errors,
            ),
            _counter(
                f"{p}_consumers_messages_processed_total",
                "Total number of messages processed by consumers.",
                self.consumers_processed,
            ),
            _counter(
                f"{p}_consumers_errors_total",
                "Total number of errors while processing consumed messages.",
                self.consumers_errors,
            ),
        ]
        out.extend(self._event_families())
        out.extend(self._engine_families())
        for metric in self.registry.collect():
            name = metric.name + ("_total" if metric.type == "counter" else "")
            samples = [(s.name, tuple(sorted(s.labels.items())), s.value) for s in metric.samples]
            out.append(Family(name, metric.type, metric.documentation, samples))
        return out

    def _event_families(self) -> list[Family]:
        """The :data:`EVENTS` families; a gauge or counter without labels shows 0 before
        its first event, a labelled one has no samples until then (as client_golang)."""
        p, out = self.namespace, []
        for family, (kind, names, help_) in EVENTS.items():
            name = f"{p}_{family}"
            if kind in ("counter", "gauge"):
                table = self.events[family]
                if not names and not table:
                    table = {(): 0.0}
                samples = [
                    (name, tuple(zip(names, k, strict=True)), v) for k, v in sorted(table.items())
                ]
                out.append(Family(name, kind, help_, samples))
                continue
            hist = self.histograms[family]
            if kind == "summary":
                out.append(Family(name, "summary", help_, hist.summary(name, names)))
                name = f"{name}_histogram"
            out.append(Family(name, "histogram", help_, hist.samples(name, names)))
        return out

    def _engine_families(self) -> list[Family]:
        """Counters the Redis engines keep themselves, read now: PUB/SUB connection
        errors (failed dials, lost connections) and messages dropped because they could
        not be handled; the Redis map broker's key expiry."""
        p, out = self.namespace, []
        for prefix, engine in (("broker", self.node.broker), ("map_broker", self.node.map_broker)):
            subs = getattr(engine, "subscribers", None)
            if subs is None:
                continue
            errors = float(sum(sub.errors for sub in subs))
            # undecodable client-channel messages (the broker's) and failed handlings
            dropped = float(getattr(engine, "malformed", 0) + sum(s.malformed for s in subs))
            name = f"{p}_{prefix}_redis_pub_sub_errors"
            labels: Labels = (("broker_name", ""), ("error", "connection"))
            out.append(
                Family(
                    name, "counter", "Number of errors in Redis PUB/SUB.", [(name, labels, errors)]
                )
            )
            name = f"{p}_{prefix}_redis_pub_sub_dropped_messages"
            labels = (("broker_name", ""), ("channel_type", "client"))
            help_ = "Number of dropped messages on application level in Redis PUB/SUB."
            out.append(Family(name, "counter", help_, [(name, labels, dropped)]))
        poll: Any = getattr(self.node, "shared_poll", None)
        if poll is not None:
            channels = list(poll.channels.values())
            for suffix, value, help_ in (
                ("num_channels", len(channels), "Number of shared poll channels."),
                ("num_keys", sum(len(ch.keys) for ch in channels), "Number of tracked keys."),
            ):
                name = f"{p}_shared_poll_{suffix}"
                out.append(Family(name, "gauge", help_, [(name, (), float(value))]))
        map_broker: Any = self.node.map_broker
        if hasattr(map_broker, "cleanup_removed"):
            for suffix, value, help_ in (
                ("removed_count", map_broker.cleanup_removed, "Expired map entries removed."),
                ("errors_count", map_broker.cleanup_errors, "Map broker cleanup errors."),
            ):
                name = f"{p}_map_broker_cleanup_{suffix}"
                sample = (name, (("broker_name", ""),), float(value))
                out.append(Family(name, "counter", help_, [sample]))
        return out

    def exposition(self) -> bytes:
        """The Prometheus text format of this node, or of every worker of the host."""
        families = self.families()
        if self._dir:
            self._write(families)
            families = merge([families, *read_others(self._dir)], self.namespace)
        return render(families)

    async def run(self) -> None:
        """With several workers: write this worker's file every second (the node runs it)."""
        if not self._dir:
            return
        try:
            while True:
                self._write(self.families())
                await anyio.sleep(WRITE_INTERVAL)
        finally:
            with contextlib.suppress(OSError):
                _own_file(self._dir).unlink()

    def _write(self, families: list[Family]) -> None:
        path = _own_file(self._dir)
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_bytes(msgspec.json.encode(families))
            os.replace(tmp, path)


def _own_file(directory: str) -> Path:
    return Path(directory) / f"{os.getpid()}.json"


def read_others(directory: str) -> list[list[Family]]:
    """Every other worker's families from its fresh file in ``directory``."""
    own = _own_file(directory).name
    decoder = msgspec.json.Decoder(list[Family])
    out: list[list[Family]] = []
    now = time.time()
    with contextlib.suppress(OSError):
        for path in Path(directory).glob("*.json"):
            if path.name == own:
                continue
            with contextlib.suppress(OSError, msgspec.ValidationError, msgspec.DecodeError):
                if now - path.stat().st_mtime <= STALE_AFTER:
                    out.append(decoder.decode(path.read_bytes()))
    return out


def _merge_mode(name: str, namespace: str) -> str:
    if name in (
        f"{namespace}_node_num_nodes",
        f"{namespace}_node_build",
        "process_max_fds",
        "python_info",
    ):
        return "max"
    if name == "process_start_time_seconds":
        return "min"
    return "sum"


def merge(groups: Sequence[Iterable[Family]], namespace: str) -> list[Family]:
    """Families of several workers as one: values of equal samples added (or the
    maximum/minimum where a sum means nothing)."""
    order: list[str] = []
    heads: dict[str, Family] = {}
    values: dict[str, dict[tuple[str, Labels], float]] = {}
    for families in groups:
        for fam in families:
            if fam.name not in heads:
                order.append(fam.name)
                heads[fam.name] = fam
                values[fam.name] = {}
            mode, table = _merge_mode(fam.name, namespace), values[fam.name]
            for sname, labels, value in fam.samples:
                key = (sname, tuple((k, v) for k, v in labels))  # lists from JSON
                if key not in table:
                    table[key] = value
                elif mode == "sum" and not any(k == "quantile" for k, _ in labels):
                    table[key] += value
                elif mode == "max":
                    table[key] = max(table[key], value)
                else:
                    table[key] = min(table[key], value)
    return [
        Family(n, heads[n].type, heads[n].help, [(s, lb, v) for (s, lb), v in values[n].items()])
        for n in order
    ]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}"
    return repr(value)


def render(families: Iterable[Family]) -> bytes:
    """The text exposition format 0.0.4."""
    lines: list[str] = []
    for fam in families:
        help_ = fam.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {fam.name} {help_}")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        for name, labels, value in fam.samples:
            if labels:
                inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{inner}}} {_number(value)}")
            else:
                lines.append(f"{name} {_number(value)}")
    lines.append("")
    return "\n".join(lines).encode()
