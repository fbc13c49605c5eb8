"""The node's Starlette app class and its connection endpoints.

:class:`NodeApp` sends a WebSocket on a connection path straight to its endpoint;
:func:`external_routes` are the connection endpoints of every transport (main port). The
apps themselves are assembled in ``centrifuge_asgi.app`` with the API, health and metrics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send

from . import emulation, http_stream, sse, uni_websocket, unidirectional, websocket

if TYPE_CHECKING:
    from ..node import Node
    from ..observer import NodeObserver


def external_routes(node: Node) -> list[BaseRoute]:
    """Connection endpoints (main port)."""
    return [
        *websocket.routes(node),
        *http_stream.routes(node),
        *sse.routes(node),
        *emulation.routes(node),
        *uni_websocket.routes(node),
        *unidirectional.routes(node),
    ]


class NodeApp(websocket.WebSocketReader, Starlette):
    """The node's Starlette app; a WebSocket on a connection path goes straight to its endpoint.

    Long-lived connections otherwise keep the frames of Starlette's middleware and router
    alive for their whole life (about 3 KB each) and pass every frame through its wrapper.
    A bidirectional WebSocket is read in this app's own coroutine
    (:class:`~.websocket.WebSocketReader`): no frame of the app stays above the reader's.
    Middleware added with ``add_middleware`` turns the shortcut off, so it sees every scope.
    """

    def __init__(
        self, routes: Sequence[BaseRoute], lifespan: Any, observer: NodeObserver | None = None
    ) -> None:
        super().__init__(routes=list(routes), lifespan=lifespan)
        self.observer = observer  # counts HTTP requests (node_incoming_http_requests_total)
        direct = [r for r in routes if isinstance(r, WebSocketRoute) and not r.param_convertors]
        self._websockets = {r.path: r.app for r in direct}
        self._readers = {
            r.path: r.app.node for r in direct if isinstance(r.app, websocket.WebSocketEndpoint)
        }

    def _reader_node(self, scope: Scope) -> Node | None:
        if scope["type"] == "websocket" and not self.user_middleware:
            return self._readers.get(_route_path(scope))
        return None

    def _route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if self.observer is not None and scope["type"] == "http":
            send = _counting_send(self.observer, scope, send)
        if scope["type"] == "websocket" and not self.user_middleware:
            endpoint = self._websockets.get(_route_path(scope))
            if endpoint is not None:
                return endpoint(scope, receive, send)
        return Starlette.__call__(self, scope, receive, send)


def _counting_send(observer: NodeObserver, scope: Scope, send: Send) -> Send:
    """``send`` that counts the request by path, method and status when it answers (a
    path nothing served, 404, is counted with an empty path: bounded label values)."""

    async def counted(message: Message) -> None:
        if message["type"] == "http.response.start":
            status = int(message["status"])
            path = _route_path(scope) if status != 404 else ""
            labels = (path, str(scope.get("method", "")), str(status))
            observer.count("node_incoming_http_requests_total", labels)
        await send(message)

    return counted


def _route_path(scope: Scope) -> str:
    """The path below the mount point (``root_path``), as Starlette's router matches it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path
