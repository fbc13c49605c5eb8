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
from .emulation import serve_emulated
from .streaming import (
    OCTET_STREAM,
    PREFLIGHT,
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    StreamFormat,
    admission_status,
    content_type,
    cors_headers,
    json_lines,
    protobuf_codec,
    read_body,
    request_headers,
    respond,
)

if TYPE_CHECKING:
    from ..node import Node
    from ..protocol.codec import Codec

JSON_STREAM = StreamFormat(b"application/json", json_lines)


class HttpStreamEndpoint:
    """ASGI app for the HTTP-streaming route, bound to a node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self.node
        headers = request_headers(scope)
        cors = cors_headers(headers, node.config.client.allowed_origins)
        method = scope.get("method", "GET")
        if method == "OPTIONS":
            await respond(send, 204, [*cors, *PREFLIGHT])
            return
        if method != "POST":
            await respond(send, 405, cors)
            return
        refused = admission_status(node, headers)
        if refused is not None:
            await respond(send, refused, cors)
            return
        codec: Codec = JSON
        fmt = JSON_STREAM
        if content_type(headers) == OCTET_STREAM:
            protobuf = protobuf_codec()
            if protobuf is None:
                await respond(send, 415, cors)
                return
            codec, fmt = protobuf, StreamFormat(OCTET_STREAM.encode(), protobuf.join)
        try:
            body = await read_body(receive, node.config.http_stream.max_request_body_size)
        except BodyTooLarge:
            await respond(send, 413, cors)
            return
        except ClientGone:
            return
        await serve_emulated(
            node,
            scope,
            receive,
            send,
            name="http_stream",
            codec=codec,
            fmt=fmt,
            first_frame=body,
            headers=headers,
            extra_headers=cors,
        )


def routes(node: Node) -> list[BaseRoute]:
    cfg = node.config.http_stream
    if not cfg.enabled:
        return []
    return [Route(cfg.handler_prefix or "/connection/http_stream", HttpStreamEndpoint(node))]
