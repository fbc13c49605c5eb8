"""The Starlette application a node exposes (mount it anywhere).

Each feature module contributes its routes; this module only puts them together and
decides which belong to the main port and which to the internal one (server API, health,
metrics), as Centrifugo does with ``http_server.internal_port``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

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


class NodeApp(Starlette):
    """The node's Starlette app; a WebSocket on a connection path goes straight to its endpoint.

    Long-lived connections otherwise keep the frames of Starlette's middleware and router
    alive for their whole life (about 3 KB each) and pass every frame through its wrapper.
    Middleware added with ``add_middleware`` turns the shortcut off, so it sees every scope.
    """

    def __init__(self, routes: Sequence[BaseRoute], lifespan: Any) -> None:
        super().__init__(routes=list(routes), lifespan=lifespan)
        self._websockets = {
            r.path: r.app
            for r in routes
            if isinstance(r, WebSocketRoute) and not r.param_convertors
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not self.user_middleware:
            endpoint = self._websockets.get(_route_path(scope))
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path below the mount point (``root_path``), as Starlette's router matches it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


def build_app(node: Node, part: Part = "all") -> NodeApp:
    """Routes per Centrifugo v6 defaults; the node's lifespan runs with the app's."""
    routes: list[BaseRoute] = []
    if part in ("all", "external"):
        routes += external_routes(node)
    if part in ("all", "internal"):
        routes += internal_routes(node)
    return NodeApp(routes, node.lifespan)
