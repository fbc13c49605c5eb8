"""App assembly: the ASGI apps of a node, from the routes of every edge.

Each edge contributes its routes (connection endpoints from ``transports/``, the server
API from ``api.py``); this module puts them together, adds health and Prometheus'
``/metrics``, and decides which belong to the main port and which to the internal one
(server API, health, metrics), as Centrifugo does with ``http_server.internal_port``.
``Node.asgi_app()`` and ``centrifuge-asgi serve`` both come here; nothing below imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from . import admin, api, consumers
from .transports.app import NodeApp, external_routes

if TYPE_CHECKING:
    from .node import Node

Part = Literal["all", "external", "internal"]


def health_routes(node: Node) -> list[BaseRoute]:
    cfg = node.config.health
    if not cfg.enabled:
        return []

    async def health(request: Request) -> JSONResponse:
        # {} as Centrifugo; with consumers, each one's state (200 even while one retries:
        # clients are still served, and the body says what is wrong)
        running = consumers.statuses(node)
        # 503 once shutdown began: load balancers stop routing here while clients drain
        status = 503 if node.closing else 200
        if not running:
            return JSONResponse({}, status_code=status)
        body = {"consumers": {n: s.as_dict() for n, s in running.items()}}
        return JSONResponse(body, status_code=status)

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return [Route(cfg.handler_prefix or "/health", health, methods=methods)]


def metrics_routes(node: Node) -> list[BaseRoute]:
    """``GET <prometheus.handler_prefix>`` when ``prometheus.enabled`` (and the node's
    observer is the Prometheus one, which it is unless ``Node(observer=…)`` was given)."""
    cfg = node.config.prometheus
    if not cfg.enabled:
        return []
    from .metrics import CONTENT_TYPE, NodeMetrics

    metrics = node.metrics
    if not isinstance(metrics, NodeMetrics):
        return []

    async def scrape(request: Request) -> Response:
        # Runs on the event loop: the registry is read without racing the node.
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    return [Route(cfg.handler_prefix.rstrip("/") or "/metrics", scrape, methods=["GET"])]


def internal_routes(node: Node) -> list[BaseRoute]:
    """Server API, health, metrics and the admin page (internal port when one is
    configured; the admin page's catch-all mount last)."""
    return [
        *api.routes(node),
        *health_routes(node),
        *metrics_routes(node),
        *admin.routes(node, external=False),
    ]


def build_app(node: Node, part: Part = "all") -> NodeApp:
    """Routes per Centrifugo v6 defaults; the node's lifespan runs with the app's."""
    routes: list[BaseRoute] = []
    if part in ("all", "external"):
        routes += external_routes(node)
    if part in ("all", "internal"):
        routes += internal_routes(node)
    if part in ("all", "external"):
        routes += admin.routes(node, external=True)  # admin.external
    counting = node.registry.observer  # set when the node has metrics
    return NodeApp(routes, node.lifespan, counting)


def split_apps(node: Node) -> tuple[Starlette, Starlette]:
    """Connection endpoints on the main port; API, health and metrics on the internal one
    (the API moves to the main port with ``http_api.external``)."""
    if not node.config.http_api.external:
        return build_app(node, "external"), build_app(node, "internal")
    main = Starlette(
        routes=[*external_routes(node), *api.routes(node), *admin.routes(node, external=True)]
    )
    internal = Starlette(
        routes=[*health_routes(node), *metrics_routes(node), *admin.routes(node, external=False)]
    )
    return main, internal
