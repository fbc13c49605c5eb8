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
from .streaming import (
    SSE,
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    admission_status,
    cors_headers,
    query_param,
    read_body,
    request_headers,
    respond,
)

if TYPE_CHECKING:
    from ..node import Node


async def connect_payload(
    scope: Scope, receive: Receive, send: Send, limit: int, cors: list[tuple[bytes, bytes]]
) -> bytes | None:
    """The connect request of an SSE-style endpoint (``cf_connect`` query or POST body).

    Answers the request itself (405, 400, 413) and returns None when there is none.
    """
    method = scope.get("method", "GET")
    if method == "GET":
        value = query_param(scope, "cf_connect")
        if value is None:
            await respond(send, 400, cors)
            return None
        return value.encode()
    if method != "POST":
        await respond(send, 405, cors)
        return None
    try:
        return await read_body(receive, limit)
    except BodyTooLarge:
        await respond(send, 413, cors)
    except ClientGone:
        pass
    return None


class SseEndpoint:
    """ASGI app for the SSE route, bound to a node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self.node
        headers = request_headers(scope)
        cors = cors_headers(headers, node.config.client.allowed_origins)
        refused = admission_status(node, headers)
        if refused is not None:
            await respond(send, refused, cors)
            return
        limit = node.config.sse.max_request_body_size
        first = await connect_payload(scope, receive, send, limit, cors)
        if first is None:
            return
        await serve_emulated(
            node,
            scope,
            receive,
            send,
            name="sse",
            codec=JSON,
            fmt=SSE,
            first_frame=first,
            headers=headers,
            extra_headers=cors,
        )


def routes(node: Node) -> list[BaseRoute]:
    cfg = node.config.sse
    if not cfg.enabled:
        return []
    return [Route(cfg.handler_prefix or "/connection/sse", SseEndpoint(node))]
