"""The Starlette application a node exposes (mount it anywhere)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute

from .websocket import WebSocketEndpoint

if TYPE_CHECKING:
    from ..node import Node


def build_app(node: Node) -> Starlette:
    """Routes per Centrifugo v6 defaults; the node's lifespan runs with the app's."""
    cfg = node.config
    routes: list[BaseRoute] = []
    if not cfg.websocket.disabled:
        path = cfg.websocket.handler_prefix or "/connection/websocket"
        routes.append(WebSocketRoute(path, WebSocketEndpoint(node)))

    if cfg.health.enabled:

        async def health(request: Request) -> JSONResponse:
            return JSONResponse({})

        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        routes.append(Route(cfg.health.handler_prefix or "/health", health, methods=methods))
    return Starlette(routes=routes, lifespan=node.lifespan)
