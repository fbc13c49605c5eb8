"""Bidirectional HTTP-streaming (``/connection/http_stream``), JSON or Protobuf.

``POST`` with the connect command as the body (JSON lines, or varint-delimited Protobuf
when ``Content-Type: application/octet-stream``); the 200 response streams replies,
pushes and pings, each batch in one write: JSON as ``\\n``-terminated lines, Protobuf as
delimited records (centrifuge-js cannot wait for a record split across chunks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Route

from ..protocol.json_codec import JSON
from ..protocol.protobuf_codec import PROTOBUF
from .emulation import serve_emulated
from .http_common import OCTET_STREAM, Receive, Scope, Send, accept_request, content_type
from .streaming import StreamFormat, json_lines

if TYPE_CHECKING:
    from ..node import Node

JSON_STREAM = StreamFormat(b"application/json", json_lines)
PROTOBUF_STREAM = StreamFormat(OCTET_STREAM.encode(), PROTOBUF.join)


class HttpStreamEndpoint:
    """ASGI app for the HTTP-streaming route, bound to a node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self.node
        limit = node.config.http_stream.max_request_body_size
        req = await accept_request(node, scope, receive, send, limit=limit)
        if req is None:
            return
        protobuf = content_type(req.headers) == OCTET_STREAM
        await serve_emulated(
            node,
            scope,
            receive,
            send,
            name="http_stream",
            codec=PROTOBUF if protobuf else JSON,
            fmt=PROTOBUF_STREAM if protobuf else JSON_STREAM,
            first_frame=req.body,
            headers=req.headers,
            extra_headers=req.cors,
        )


def routes(node: Node) -> list[BaseRoute]:
    cfg = node.config.http_stream
    if not cfg.enabled:
        return []
    return [Route(cfg.handler_prefix or "/connection/http_stream", HttpStreamEndpoint(node))]
