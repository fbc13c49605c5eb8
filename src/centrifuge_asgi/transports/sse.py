"""Bidirectional SSE (``/connection/sse``), JSON only.

The connect command comes from the ``cf_connect`` query of a ``GET`` (what EventSource
sends) or from a ``POST`` body. The stream starts with ``\\r\\n`` and carries one
``data: <reply>`` event per message; later commands go through ``/emulation``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Route

from ..protocol.json_codec import JSON
from .emulation import serve_emulated
from .http_common import CONNECT_PARAM, Receive, Scope, Send, accept_request
from .streaming import SSE

if TYPE_CHECKING:
    from ..node import Node


class SseEndpoint:
    """ASGI app for the SSE route, bound to a node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self.node
        limit = node.config.sse.max_request_body_size
        req = await accept_request(
            node, scope, receive, send, limit=limit, preflight=False, get_param=CONNECT_PARAM
        )
        if req is None:
            return
        await serve_emulated(
            node,
            scope,
            receive,
            send,
            name="sse",
            codec=JSON,
            fmt=SSE,
            first_frame=req.body,
            headers=req.headers,
            extra_headers=req.cors,
        )


def routes(node: Node) -> list[BaseRoute]:
    cfg = node.config.sse
    if not cfg.enabled:
        return []
    return [Route(cfg.handler_prefix or "/connection/sse", SseEndpoint(node))]
