"""What Centrifugo's Grafana dashboard (id 13039) reads, as facts, and a check of them
against a node's ``/metrics``.

The table below lists, panel by panel, the series each query of the dashboard selects
(metric, label matchers) and the labels it groups by. It was read off the dashboard's
current revision ("The dashboard for monitoring Centrifugo real-messaging server", the
copy Centrifugo's team ships in ``centrifugal/grand-chat-tutorial``,
``dashboards/centrifugo.json`` at 345f888). The ``instance`` matcher every query has is
left out: Prometheus adds that label when it scrapes.

Each row has a class:

- ``oss``: the dashboard shows data for Centrifugo OSS; here every such query must find a
  series with each of its grouping labels once the traffic of the test happened;
- ``pro``: a Centrifugo PRO feature (channel namespace resolution, push notifications):
  empty for Centrifugo OSS, and here;
- ``go``: the Go runtime's own metrics; a Python process exposes ``process_*`` and
  ``python_*`` instead;
- ``absent``: a family this library has no counterpart for (see docs/observability.md).

Run as a script on a dashboard JSON to see whether a newer revision reads anything the
table does not know: ``python -m tests.interop.grafana_13039 dashboard.json``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: the dashboard's ``quantile`` variable (its summaries' panels)
QUANTILES = ("0.5", "0.99", "0.999")

#: (panel, selector, grouped by, class)
DASHBOARD: list[tuple[str, str, tuple[str, ...], str]] = [
    ("Uptime", "process_start_time_seconds", (), "oss"),
    ("Instant connection stats", "centrifugo_node_num_clients", (), "oss"),
    ("Instant connection stats", "centrifugo_node_num_users", (), "oss"),
    ("Instant subscription/channel stats", "centrifugo_node_num_subscriptions", (), "oss"),
    ("Instant subscription/channel stats", "centrifugo_node_num_channels", (), "oss"),
    ("Num nodes", "centrifugo_node_num_nodes", (), "oss"),
    (
        "Client command rate",
        "centrifugo_client_command_duration_seconds_count",
        ("method",),
        "oss",
    ),
    ("Client reply error rate", "centrifugo_client_num_reply_errors", ("method", "code"), "oss"),
    (
        "Client command time",
        'centrifugo_client_command_duration_seconds{quantile="$quantile"}',
        ("method",),
        "oss",
    ),
    (
        "API command rate",
        "centrifugo_api_command_duration_seconds_count",
        ("protocol", "method"),
        "oss",
    ),
    (
        "API reply error rate",
        "centrifugo_api_command_errors_total",
        ("protocol", "method", "error"),
        "oss",
    ),
    (
        "API command time",
        'centrifugo_api_command_duration_seconds{quantile="$quantile"}',
        ("protocol", "method"),
        "oss",
    ),
    ("Client connections per node", "centrifugo_node_num_clients", (), "oss"),
    ("Unique users per node", "centrifugo_node_num_users", (), "oss"),
    ("Subscriptions per node", "centrifugo_node_num_subscriptions", (), "oss"),
    ("Unique channels per node", "centrifugo_node_num_channels", (), "oss"),
    ("Node messages sent rate", "centrifugo_node_messages_sent_count", ("type",), "oss"),
    ("Node messages received rate", "centrifugo_node_messages_received_count", ("type",), "oss"),
    ("Transport messages sent rate", "centrifugo_transport_messages_sent", ("transport",), "oss"),
    (
        "Transport messages received rate",
        "centrifugo_transport_messages_received",
        ("transport",),
        "oss",
    ),
    (
        "Transport total messages sent rate by frame type",
        "centrifugo_transport_messages_sent",
        ("frame_type",),
        "oss",
    ),
    (
        "Transport total messages received rate by frame type",
        "centrifugo_transport_messages_received",
        ("frame_type",),
        "oss",
    ),
    (
        "Client connection rate",
        'centrifugo_transport_messages_received{frame_type="connect"}',
        ("frame_type", "transport"),
        "oss",
    ),
    (
        "Disconnect by server count",
        "centrifugo_client_num_server_disconnects",
        ("code",),
        "oss",
    ),
    (
        "Unsubscribe by server count",
        "centrifugo_client_num_server_unsubscribes",
        ("code",),
        "oss",
    ),
    ("Node action count", "centrifugo_node_action_count", ("action",), "oss"),
    (
        "Client connections by transport",
        "centrifugo_client_connections_inflight",
        ("transport",),
        "oss",
    ),
    ("PUB/SUB lag time median", "centrifugo_node_pub_sub_lag_seconds_bucket", ("le",), "oss"),
    (
        "Node PUB/SUB broadcast duration median",
        "centrifugo_node_broadcast_duration_seconds_bucket",
        ("le",),
        "oss",
    ),
    (
        "Client ping/pong latencies",
        "centrifugo_client_ping_pong_duration_seconds_bucket",
        ("le", "transport"),
        "oss",
    ),
    ("Recovery success ratio", 'centrifugo_client_recover{recovered="yes"}', (), "oss"),
    ("Recovery success ratio", "centrifugo_client_recover", (), "oss"),
    (
        "Survey operation time",
        'centrifugo_node_survey_duration_seconds{quantile="$quantile"}',
        ("op",),
        "oss",
    ),
    (
        "Proxy calls rate by name|type",
        "centrifugo_proxy_duration_seconds_count",
        ("type", "name"),
        "oss",
    ),
    (
        "Proxy calls time by name|type",
        'centrifugo_proxy_duration_seconds{quantile="$quantile"}',
        ("type", "name"),
        "oss",
    ),
    ("Proxy call errors by name|type", "centrifugo_proxy_errors", ("type", "name"), "oss"),
    (
        "Proxy inflight requests by name|type",
        "centrifugo_proxy_inflight_requests",
        ("type", "name"),
        "oss",
    ),
    (
        "Consumer message processed rate",
        "centrifugo_consumers_messages_processed_total",
        ("consumer_name",),
        "oss",
    ),
    ("Consumer error rate", "centrifugo_consumers_errors_total", ("consumer_name",), "oss"),
    (
        "HTTP handler rate",
        "centrifugo_node_incoming_http_requests_total",
        ("method", "path", "status"),
        "oss",
    ),
    ("Go goroutines", "go_goroutines", (), "go"),
    ("Go GC duration 0.75 quantile", 'go_gc_duration_seconds{quantile="0.75"}', (), "go"),
    ("CPU usage %", "process_cpu_seconds_total", (), "oss"),
    ("Resident memory usage", "process_resident_memory_bytes", (), "oss"),
    ("Process open file descriptors", "process_open_fds", (), "oss"),
    ("Process open file descriptors", "process_max_fds", (), "oss"),
    ("Process OS threads created", "go_threads", (), "go"),
    (
        "PUB/SUB app-level buffered messages",
        "centrifugo_broker_redis_pub_sub_buffered_messages",
        ("pub_sub_processor", "channel_type"),
        "absent",
    ),
    (
        "Dropped PUB/SUB messages",
        "centrifugo_broker_redis_pub_sub_dropped_messages",
        ("channel_type",),
        "oss",
    ),
    ("PUB/SUB error rate", "centrifugo_broker_redis_pub_sub_errors", ("error",), "oss"),
    (
        "Client connections by client name",
        "centrifugo_client_subscriptions_inflight",
        ("client_name",),
        "oss",
    ),
    (
        "Subscriptions by client name and channel namespace",
        "centrifugo_client_subscriptions_inflight",
        ("client_name", "channel_namespace"),
        "oss",
    ),
    *(
        (
            f"{what} by channel namespace",
            f"centrifugo_{metric}" + ("" if "{" in metric else '{channel_namespace!=""}'),
            (*by, "channel_namespace"),
            "pro",
        )
        for what, metric, by in [
            ("Transport messages sent", "transport_messages_sent", ("frame_type",)),
            ("Transport messages sent size", "transport_messages_sent_size", ("frame_type",)),
            ("Transport messages received", "transport_messages_received", ("frame_type",)),
            (
                "Transport messages received size",
                "transport_messages_received_size",
                ("frame_type",),
            ),
            ("Client command count", "client_command_duration_seconds_count", ("method",)),
            ("Client reply error rate", "client_num_reply_errors", ("method", "code")),
            ("Broadcast duration", "node_broadcast_duration_seconds_bucket", ("le",)),
            ("Recovery success ratio", "client_recover", ()),
            ("Recovery success ratio", 'client_recover{channel_namespace!="",recovered="yes"}', ()),
        ]
    ),
    (
        "Command duration time by channel namespace",
        'centrifugo_client_command_duration_seconds{quantile="$quantile",channel_namespace!=""}',
        ("method", "channel_namespace"),
        "pro",
    ),
    *(
        (f"Push notifications: {family}", f"centrifugo_{family}", by, "pro")
        for family, by in [
            ('push_notification_count{success="true"}', ("provider", "platform", "recipient_type")),
            ('push_notification_count{success="false"}', ("provider", "platform", "err_code")),
            ("push_queue_consuming_lag", ("provider", "queue")),
            ("push_consuming_inflight_jobs", ("provider", "queue")),
            ("push_job_duration_seconds_count", ("provider", "recipient_type")),
            ('push_job_duration_seconds{quantile="$quantile"}', ("provider", "recipient_type")),
            ("push_scheduled_request_count", ("recipient_type",)),
        ]
    ),
]

#: the dashboard's variables: ``version`` reads this family's label; ``instance`` any
#: ``centrifugo_*`` series
VERSION_VARIABLE = ("centrifugo_node_build", "version")

_SELECTOR = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')

Labels = tuple[tuple[str, str], ...]
Samples = Mapping[tuple[str, Labels], float]


@dataclass(frozen=True)
class Selector:
    """A PromQL instant-vector selector: a metric name and label matchers."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]

    @classmethod
    def parse(cls, text: str) -> Selector:
        match = _SELECTOR.match(text.strip())
        if not match:
            raise ValueError(f"not a selector: {text!r}")
        name, inner = match.groups()
        matchers: list[tuple[str, str, str]] = []
        rest = inner or ""
        while rest.strip():
            m = _MATCHER.match(rest)
            if not m:
                raise ValueError(f"bad matchers in {text!r}")
            matchers.append((m.group(1), m.group(2), m.group(3)))
            rest = rest[m.end() :]
        return cls(name, tuple(matchers))

    def expand(self) -> Iterator[Selector]:
        """One selector per value of the dashboard's ``$quantile`` variable."""
        if not any(v == "$quantile" for _, _, v in self.matchers):
            yield self
            return
        for q in QUANTILES:
            yield Selector(
                self.name,
                tuple((k, op, q if v == "$quantile" else v) for k, op, v in self.matchers),
            )

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, op, want in self.matchers:
            have = labels.get(key, "")
            if op == "=" and have != want:
                return False
            if op == "!=" and have == want:
                return False
            if op == "=~" and not re.fullmatch(want, have):
                return False
            if op == "!~" and re.fullmatch(want, have):
                return False
        return True

    def select(self, samples: Samples) -> list[dict[str, str]]:
        """The label sets of the samples this selector picks."""
        out = []
        for (name, labels), _ in samples.items():
            if name == self.name:
                as_dict = dict(labels)
                if self.matches(as_dict):
                    out.append(as_dict)
        return out


def unmet(samples: Samples, rows: Iterable[tuple[str, str, tuple[str, ...], str]]) -> list[str]:
    """The ``oss`` rows whose query would show nothing: no series selected, or a series
    without a label the panel groups by. Quantile panels are checked for each value of
    the ``$quantile`` variable."""
    problems: list[str] = []
    for panel, text, by, kind in rows:
        if kind != "oss":
            continue
        for selector in Selector.parse(text).expand():
            found = selector.select(samples)
            if not found:
                problems.append(f"{panel}: no series for {selector}")
                continue
            lacking = [
                label for label in by if label != "le" and not all(label in s for s in found)
            ]
            if "le" in by and not all("le" in s for s in found):
                lacking.append("le")
            if lacking:
                problems.append(f"{panel}: {selector.name} lacks {lacking}")
    return problems


def dashboard_selectors(dashboard: Any) -> list[tuple[str, str]]:
    """(panel title, selector text) for every series selector of every query in a
    dashboard's JSON; ``instance`` matchers and range suffixes dropped."""
    out: list[tuple[str, str]] = []

    def walk(node: Any, title: str) -> None:
        if isinstance(node, dict):
            title = str(node.get("title", title))
            expr = node.get("expr")
            if isinstance(expr, str):
                out.extend((title, s) for s in _selectors_of(expr))
            for child in node.values():
                walk(child, title)
        elif isinstance(node, list):
            for child in node:
                walk(child, title)

    walk(dashboard, "")
    return out


_FUNCTIONS = {"sum", "rate", "avg", "min", "max", "by", "time", "histogram_quantile"}
_IN_EXPR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")


def _selectors_of(expr: str) -> Iterator[str]:
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\bby\s*\([^)]*\)", "", expr)  # grouping clauses
    for match in _IN_EXPR.finditer(expr):
        name, inner = match.group(1), match.group(2) or ""
        if name in _FUNCTIONS or "_" not in name:
            continue
        kept = [
            f'{k}{op}"{v}"' for k, op, v in Selector.parse(f"x{inner}").matchers if k != "instance"
        ]
        yield name + (f"{{{','.join(kept)}}}" if kept else "")


def drift(dashboard: Any) -> tuple[list[str], list[str]]:
    """Selectors a dashboard JSON reads that :data:`DASHBOARD` does not list, and those
    the table lists that the dashboard does not read."""
    known = {Selector.parse(text) for _, text, _, _ in DASHBOARD}
    seen = {Selector.parse(text) for _, text in dashboard_selectors(dashboard)}

    def show(selectors: set[Selector]) -> list[str]:
        return sorted(f"{s.name}{list(s.matchers) or ''}" for s in selectors)

    return show(seen - known), show(known - seen)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.interop.grafana_13039 <dashboard.json>", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        unknown, unused = drift(json.load(f))
    for line in unknown:
        print("read by the dashboard, not in the table:", line)
    for line in unused:
        print("in the table, not read by the dashboard:", line)
    print("ok: the table and the dashboard agree" if not unknown + unused else "drift")
    return 1 if unknown + unused else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
