"""Plumbing shared by the HTTP streaming transports (HTTP-streaming, SSE, uni variants).

Raw ASGI helpers: request headers and body with a size cap, admission checks, Centrifugo's
CORS headers, and :func:`serve_stream`, which turns a session's outbox into a chunked
response body (one write per batch) until the session closes or the client goes away.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio

from ..codes import DisconnectCode
from .origin import origin_allowed

if TYPE_CHECKING:
    from ..node import Node
    from ..protocol.codec import Codec
    from ..session import Session

log = logging.getLogger("centrifuge_asgi.streaming")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

WRITE_TIMEOUT = 10.0  # per write; Centrifugo resets a 10 s write deadline around each
FINISH_TIMEOUT = 5.0  # bound for releasing a session after its stream ended

NO_CACHE: Headers = [
    (b"cache-control", b"private, no-cache, no-store, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expire", b"0"),
    (b"x-accel-buffering", b"no"),
]
PREFLIGHT: Headers = [
    (b"access-control-max-age", b"300"),
    (b"access-control-allow-methods", b"POST, OPTIONS"),
]
OCTET_STREAM = "application/octet-stream"


# ------------------------------------------------------------------------- request


def request_headers(scope: Scope) -> dict[str, str]:
    """Lower-cased header names; the last value wins."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def query_param(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


def content_type(headers: dict[str, str]) -> str:
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


def cors_headers(headers: dict[str, str], allowed: Sequence[str]) -> Headers:
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


def admission_status(node: Node, headers: dict[str, str]) -> int | None:
    """Why a new connection is refused (an HTTP status), or None to accept it."""
    cfg = node.config.client
    if not node.running:
        log.error("connection refused: node not started (use lifespan=node.lifespan)")
        return 503
    if not origin_allowed(headers.get("origin"), headers.get("host"), cfg.allowed_origins):
        log.info("connection refused: origin %r not allowed", headers.get("origin"))
        return 403
    if cfg.connection_limit > 0 and node.registry.num_clients >= cfg.connection_limit:
        return 503
    return None


@functools.cache
def protobuf_codec() -> Codec | None:
    """The Protobuf codec when this build has one (``protocol/protobuf_codec.py``)."""
    try:
        module = importlib.import_module("centrifuge_asgi.protocol.protobuf_codec")
    except ImportError:
        return None
    codec: Codec | None = getattr(module, "PROTOBUF", None)
    return codec


# ------------------------------------------------------------------------- framing


def json_lines(batch: list[bytes]) -> bytes:
    """HTTP-streaming JSON: every message on its own ``\\n``-terminated line."""
    return b"".join(m + b"\n" for m in batch)


def sse_events(batch: list[bytes]) -> bytes:
    """Server-sent events: one ``data:`` event per message."""
    return b"".join(b"data: " + m + b"\n\n" for m in batch)


@dataclass(frozen=True, slots=True)
class StreamFormat:
    """How one transport writes a stream: its Content-Type, first bytes and framing."""

    content_type: bytes
    frame: Callable[[list[bytes]], bytes]
    preamble: bytes = b""


SSE = StreamFormat(b"text/event-stream; charset=utf-8", sse_events, preamble=b"\r\n")


def stream_headers(scope: Scope, fmt: StreamFormat, extra: Headers) -> Headers:
    headers: Headers = [(b"content-type", fmt.content_type), *NO_CACHE, *extra]
    if scope.get("http_version") == "1.1":
        headers.append((b"connection", b"keep-alive"))
    return headers


async def serve_stream(
    session: Session,
    scope: Scope,
    receive: Receive,
    send: Send,
    fmt: StreamFormat,
    extra_headers: Headers,
    drive: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Stream ``session``'s outbox as a 200 response until the session closes.

    ``drive`` (optional) feeds the session with commands while the stream is open. The
    client vanishing closes the session (3000); the session is always finished.
    """
    peer_gone = False

    async def watch_disconnect() -> None:
        nonlocal peer_gone
        while (await receive())["type"] != "http.disconnect":
            pass
        peer_gone = True
        session.transport_closed()

    async def write(data: bytes, more: bool = True) -> bool:
        """One body chunk; False (and the session closed) when it cannot be written."""
        try:
            with anyio.fail_after(WRITE_TIMEOUT):
                await send({"type": "http.response.body", "body": data, "more_body": more})
        except TimeoutError:
            session.disconnect(DisconnectCode.WRITE_ERROR)
            return False
        except OSError:
            session.transport_closed()
            return False
        return True

    async def pump() -> bool:
        """Write every outbox batch until the session closes; False on a failed write."""
        while (batch := await session.outbox.take_all()) is not None:
            data = fmt.frame([m for m in batch if m])
            if data and not await write(data):
                return False
        return True

    try:
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": stream_headers(scope, fmt, extra_headers),
        }
        with anyio.fail_after(WRITE_TIMEOUT):
            await send(start)
        if fmt.preamble and not await write(fmt.preamble):
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_disconnect)
            if drive is not None:
                tg.start_soon(drive)
            completed = await pump()
            tg.cancel_scope.cancel()
        if completed and not peer_gone:
            await write(b"", more=False)
    except (TimeoutError, OSError):
        session.transport_closed()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(FINISH_TIMEOUT):
            await session.finish()
