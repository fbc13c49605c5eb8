"""Request plumbing shared by the connection endpoints, WebSocket and HTTP alike.

Raw ASGI helpers: request headers, query and body (with a size cap), Centrifugo's CORS
headers, the admission checks of a new connection (node state, ``Origin``, connection
limit), :func:`accept_request` (the common preamble of every HTTP endpoint) and
:func:`deny_handshake` (refusing a WebSocket upgrade with an HTTP status).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ..body_reads import BodyTimeout
from ..session import RequestHeaders
from .origin import origin_allowed

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("centrifuge_asgi.transports")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

PREFLIGHT: Headers = [
    (b"access-control-max-age", b"300"),
    (b"access-control-allow-methods", b"POST, OPTIONS"),
]
OCTET_STREAM = "application/octet-stream"
CONNECT_PARAM = "cf_connect"  # the query parameter carrying a connect request


# ------------------------------------------------------------------------- request


def request_headers(scope: Scope) -> RequestHeaders:
    """The request's headers (see :class:`RequestHeaders`)."""
    return RequestHeaders(scope.get("headers", ()))


def query_param(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


def content_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


class BodyTooLarge(Exception):
    """The request body exceeds the endpoint's ``max_request_body_size``."""


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; :class:`BodyTooLarge` past ``limit`` bytes (0: no cap)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if limit > 0 and size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


# ------------------------------------------------------------------------ response


def cors_headers(headers: Mapping[str, str], allowed: Sequence[str]) -> Headers:
    """Centrifugo's CORS middleware: allow an allowed Origin with credentials."""
    origin = headers.get("origin")
    if not origin or not origin_allowed(origin, headers.get("host"), allowed):
        return []
    out: Headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
    ]
    requested = headers.get("access-control-request-headers")
    if requested and requested != "null":
        out.append((b"access-control-allow-headers", requested.encode("latin-1")))
    return out


async def respond(
    send: Send, status: int, headers: Sequence[tuple[bytes, bytes]] = (), body: bytes = b""
) -> None:
    """A complete, non-streaming response."""
    out = list(headers)
    if body:
        out.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def deny_handshake(scope: Scope, send: Send, status: int) -> None:
    """Refuse a WebSocket upgrade: an HTTP status where the server supports it, else a close."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b""})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": ""})


# ----------------------------------------------------------------------- admission


def admission_status(
    node: Node, headers: Mapping[str, str], *, connection: bool = True
) -> int | None:
    """Why a request is refused (an HTTP status), or None to accept it.

    Every request needs an allowed ``Origin`` (403). A new connection (``connection``)
    also needs a started node that is not shutting down, a token of
    ``client.connection_rate_limit`` (taken before the Origin check, as in Centrifugo)
    and room under ``client.connection_limit`` (503).
    """
    cfg = node.config.client
    if connection and not node.running:
        log.error("connection refused: node not started (use lifespan=node.lifespan)")
        return 503
    if connection and node.closing:
        log.info("connection refused: node is shutting down")
        return 503
    rate = node.connection_rate
    if connection and rate is not None and not rate.allow():
        return 503
    origin = headers.get("origin")
    # the Host header only matters for a browser's request (one with an Origin)
    if origin and not origin_allowed(origin, headers.get("host"), cfg.allowed_origins):
        log.info("request refused: origin %r not allowed", origin)
        return 403
    if connection and 0 < cfg.connection_limit <= node.registry.num_clients:
        node.metrics.count("node_client_connection_limit")
        return 503
    return None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request that passed :func:`accept_request`."""

    method: str  # "POST", or "GET" where the endpoint takes its payload from the query
    headers: Mapping[str, str]
    cors: Headers  # CORS headers for every answer to this request
    body: bytes  # the POST body, or the query parameter of a GET


async def accept_request(
    node: Node,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    limit: int,
    preflight: bool = True,
    get_param: str | None = None,
    connection: bool = True,
) -> HttpRequest | None:
    """The preamble every HTTP endpoint runs before its own work.

    In order: ``OPTIONS`` → 204 with the preflight headers (when ``preflight``); a method
    other than ``POST`` (or ``GET`` when ``get_param`` names the query parameter carrying
    the payload) → 405; :func:`admission_status` → 403 or 503; a missing ``get_param`` →
    400; a body over ``limit`` → 413; a body not complete within ``http_server.read_timeout``
    → 408, or one still arriving when shutdown begins → 503 (both close the connection).
    Such requests are answered here and give None, as does a client that went away before
    sending its whole body.
    """
    headers = request_headers(scope)
    cors = cors_headers(headers, node.config.client.allowed_origins)
    method = scope.get("method", "GET")
    if preflight and method == "OPTIONS":
        await respond(send, 204, [*cors, *PREFLIGHT])
        return None
    if method != "POST" and not (get_param is not None and method == "GET"):
        await respond(send, 405, cors)
        return None
    refused = admission_status(node, headers, connection=connection)
    if refused is not None:
        await respond(send, refused, cors)
        return None
    if get_param is not None and method == "GET":
        value = query_param(scope, get_param)
        if value is None:
            await respond(send, 400, cors)
            return None
        return HttpRequest(method, headers, cors, value.encode())
    try:
        body = await node.body_reads.read(lambda: read_body(receive, limit))
    except BodyTooLarge:
        await respond(send, 413, cors)
        return None
    except BodyTimeout as exc:
        await respond(send, exc.status, [*cors, (b"connection", b"close")])
        return None
    except ClientGone:
        return None
    return HttpRequest(method, headers, cors, body)
