"""What the layers above the node plug into it.

The node imports nothing above it (the import-linter contract in pyproject.toml), yet its
config may switch on things that live above it: the Prometheus observer
(``prometheus.enabled``), OpenTelemetry tracing (``opentelemetry.enabled``), the HTTP
proxies, the app that :meth:`Node.asgi_app` returns, and the gRPC servers (``grpc_api``,
``uni_grpc``).
:data:`centrifuge_asgi.node.EDGES` has a slot for each; this module, imported by the
package itself, fills them. Each slot imports its module only when a node needs it,
so ``import centrifuge_asgi`` and a plain ``Node()`` load neither Starlette nor httpx nor
prometheus_client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .node import EDGES

if TYPE_CHECKING:
    from .node import Node
    from .observer import NodeObserver, Tracing


def prometheus_observer(node: Node) -> NodeObserver:
    from .metrics import NodeMetrics

    return NodeMetrics(node)


def install_proxies(node: Node) -> None:
    from .proxy import install

    install(node)


def build_app(node: Node) -> Any:
    from .app import build_app

    return build_app(node)


async def run_consumers(node: Node) -> None:
    from .consumers import run_consumers

    await run_consumers(node)


async def start_grpc(node: Node) -> Any:
    from .grpc.servers import start_servers

    return await start_servers(node)


def tracing(node: Node) -> Tracing:
    try:
        from .tracing import OtelTracing
    except ImportError as exc:
        raise ConfigError(
            "opentelemetry.enabled: the OpenTelemetry packages are not installed "
            f"(pip install 'centrifuge-asgi[otel]'): {exc}"
        ) from None
    return OtelTracing(node)


EDGES.prometheus_observer = prometheus_observer
EDGES.tracing = tracing
EDGES.install_proxies = install_proxies
EDGES.build_app = build_app
EDGES.start_grpc = start_grpc
EDGES.run_consumers = run_consumers
