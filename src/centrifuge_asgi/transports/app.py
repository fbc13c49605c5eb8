"""The Starlette application a node exposes (mount it anywhere).

Each feature module contributes its routes; this module only puts them together and
decides which belong to the main port and which to the internal one (server API, health,
metrics), as Centrifugo does with ``http_server.internal_port``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from . import emulation, unidirectional, websocket

if TYPE_CHECKING:
    from ..node import Node

Part = Literal["all", "external", "internal"]


def health_routes(node: Node) -> list[BaseRoute]:
    cfg = node.config.health
    if not cfg.enabled:
        return []

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({})

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return [Route(cfg.handler_prefix or "/health", health, methods=methods)]


def external_routes(node: Node) -> list[BaseRoute]:
    """Connection endpoints (main port)."""
    return [
        *websocket.routes(node),
        *emulation.routes(node),
        *unidirectional.routes(node),
    ]


def internal_routes(node: Node) -> list[BaseRoute]:
    """Server API, health and metrics (internal port when one is configured)."""
    from .. import api, metrics

    return [*api.routes(node), *health_routes(node), *metrics.routes(node)]


def build_app(node: Node, part: Part = "all") -> Starlette:
    """Routes per Centrifugo v6 defaults; the node's lifespan runs with the app's."""
    routes: list[BaseRoute] = []
    if part in ("all", "external"):
        routes += external_routes(node)
    if part in ("all", "internal"):
        routes += internal_routes(node)
    return Starlette(routes=routes, lifespan=node.lifespan)
