"""The Centrifugo server HTTP API: ``POST /api/<method>`` and the legacy ``POST /api``.

Checks run in Centrifugo's order (server-api spec §1): unknown path → 404, not POST →
405 (empty body), API key → 401 (empty body), body over ``http_api.max_body_size`` → 413,
body not complete within ``http_server.read_timeout`` → 408 (503 when shutdown begins
meanwhile; both close the connection), undecodable body → 400 ``Bad Request`` (plain
text). Everything else is HTTP 200 with ``{"result": …}`` or ``{"error": {"code",
"message"}}`` (or the bare error with its HTTP status in the ``transport`` error mode);
batch answers ``{"replies": […]}``.

:func:`routes` serves the node's app (honours ``http_api.disabled``); :func:`api_app`
builds a Starlette app with only these routes, for a host to mount behind its own auth.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import api_schema as s
from .api_exec import HTTP_STATUS, ApiError, Executor
from .body_reads import BodyTimeout

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("centrifuge_asgi.api")

__all__ = ["ApiError", "BadBody", "api_app", "read_body", "routes", "text_response"]

_JSON = "application/json"
_DEFAULT_MAX_BODY = 1024 * 1024
_METHODS = frozenset({*s.REQUEST_TYPES, "batch"})
_ANY = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_encode = msgspec.json.encode


class BadBody(Exception):
    """The body cannot be decoded or the client went away (400), is too large (413), did
    not arrive in time (408), or shutdown began while it was read (503)."""

    def __init__(self, status: int = 400, label: str = "unmarshal") -> None:
        super().__init__(label)
        self.status = status
        self.label = label


_PLAIN = {
    400: "Bad Request",
    404: "404 page not found",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    503: "Service Unavailable",
}


def text_response(status: int) -> Response:
    """Centrifugo's plain-text answer of an HTTP ``status``."""
    # a body that stopped half-way (408, 503) leaves the connection unusable: close it
    headers = {"connection": "close"} if status in (408, 503) else None
    return Response(_PLAIN.get(status, ""), status, headers, media_type="text/plain")


def _json(body: Any, status: int = 200) -> Response:
    return Response(_encode(body), status_code=status, media_type=_JSON)


class ApiHandler:
    """State shared by the API endpoints of one node: key, limits, executor, metrics."""

    def __init__(self, node: Node, *, insecure: bool | None = None) -> None:
        cfg = node.config.http_api
        self.node = node
        self.executor = Executor(node)
        self.key = cfg.key
        self.insecure = cfg.insecure if insecure is None else insecure
        self.transport_mode = cfg.error_mode == "transport"
        self.max_body = cfg.max_body_size if cfg.max_body_size > 0 else _DEFAULT_MAX_BODY
        self._warned = False

    # ----------------------------------------------------------------- checks

    def authorized(self, request: Request) -> bool:
        """X-API-Key, else ``Authorization: apikey K``; then the ``api_key`` query value."""
        if self.insecure:
            return True
        if not self.key:
            if not self._warned:
                self._warned = True
                log.error("http_api.key is empty: every server API request is rejected")
            return False
        key = self.key.encode()
        header = request.headers.get("x-api-key", "")
        if not header:  # Authorization is looked at only without X-API-Key
            parts = request.headers.get("authorization", "").split()
            header = parts[1] if len(parts) == 2 and parts[0].lower() == "apikey" else ""
        if header and hmac.compare_digest(header.encode(), key):
            return True
        query = request.query_params.get("api_key")
        return query is not None and hmac.compare_digest(query.encode(), key)

    async def body(self, request: Request) -> bytes:
        return await read_body(self.node, request, self.max_body)

    def _gate(self, request: Request) -> Response | None:
        if request.method != "POST":
            return Response(status_code=405)
        if not self.authorized(request):
            return Response(status_code=401)
        return None

    def _incoming(self, request: Request) -> AbstractContextManager[None]:
        """With ``opentelemetry.api``: the caller's trace (``traceparent``) made current."""
        tracing = self.node.tracing
        if tracing is None or not tracing.api:
            return contextlib.nullcontext()
        return tracing.incoming(request.headers)

    def _observe(self, method: str, started: float, error: str = "") -> None:
        self.node.metrics.api_call(method, time.perf_counter() - started, error)

    # -------------------------------------------------------------- endpoints

    async def method_endpoint(self, request: Request) -> Response:
        """``POST <prefix>/<method>`` (double slashes from a trailing ``/`` tolerated)."""
        method = request.path_params["method"].strip("/")
        if method not in _METHODS:
            return text_response(404)
        denied = self._gate(request)
        if denied is not None:
            return denied
        started = time.perf_counter()
        try:
            body = await self.body(request)
            if method == "batch":
                batch = msgspec.json.decode(body, type=s.BatchRequest)
                with self._incoming(request):
                    replies = await self.batch(batch)
                self._observe(method, started)
                return _json({"replies": replies})
            req = msgspec.json.decode(body, type=s.REQUEST_TYPES[method])
        except (msgspec.DecodeError, RecursionError, BadBody) as exc:
            # RecursionError: JSON nested too deeply to decode, as undecodable as any
            bad = exc if isinstance(exc, BadBody) else BadBody()
            self._observe(method, started, bad.label)
            return text_response(bad.status)
        try:
            with self._incoming(request):
                result = await self.executor.call(method, req)
        except ApiError as exc:
            self._observe(method, started, str(exc.code))
            if self.transport_mode or (
                request.headers.get("x-centrifugo-error-mode") == "transport"
            ):
                return _json(exc.as_dict(), HTTP_STATUS.get(exc.code, 500))
            return _json({"error": exc.as_dict()})
        self._observe(method, started)
        return _json({"result": result})

    async def batch(self, batch: s.BatchRequest) -> list[dict[str, Any]]:
        return await self.executor.batch(batch)

    async def legacy_endpoint(self, request: Request) -> Response:
        """``POST <prefix>``: newline-separated ``{"id","method","params"}`` commands."""
        denied = self._gate(request)
        if denied is not None:
            return denied
        if self.node.closing:
            return Response("shutting down", status_code=503, media_type="text/plain")
        try:
            commands = _split_legacy(await self.body(request))
        except BadBody as exc:
            return text_response(exc.status)
        lines = []
        for cmd in commands:
            lines.append(_encode(await self.executor.legacy(cmd)))
            await self.node.pacer.tick()
        return Response(b"\n".join(lines), media_type=_JSON)


async def read_body(node: Node, request: Request, max_body: int) -> bytes:
    """The request body: at most ``max_body`` bytes, complete within
    ``http_server.read_timeout``, and ended when shutdown begins; else :class:`BadBody`."""
    length = request.headers.get("content-length", "")
    # ASCII digits only (int() refuses "²", and more than 4300 digits)
    if length.isascii() and length.isdigit() and (len(length) > 18 or int(length) > max_body):
        raise BadBody(413, "read_body")

    async def read() -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body:
                    raise BadBody(413, "read_body")
                chunks.append(chunk)
        except ClientDisconnect:
            raise BadBody(400, "read_body") from None
        return b"".join(chunks)

    try:
        return await node.body_reads.read(read)
    except BodyTimeout as exc:
        raise BadBody(exc.status, "read_body") from None


def _split_legacy(body: bytes) -> list[s.LegacyCommand]:
    """Decode a stream of JSON objects separated by whitespace (empty or malformed: 400)."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise BadBody() from None
    decoder = json.JSONDecoder()
    commands: list[s.LegacyCommand] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n":
            pos += 1
        if pos == end:
            break
        try:
            _, stop = decoder.raw_decode(text, pos)
            commands.append(msgspec.json.decode(text[pos:stop], type=s.LegacyCommand))
        except (ValueError, RecursionError, msgspec.DecodeError):
            raise BadBody() from None
        pos = stop
    if not commands:
        raise BadBody()
    return commands


def _routes(node: Node, prefix: str | None, insecure: bool | None) -> list[BaseRoute]:
    handler = ApiHandler(node, insecure=insecure)
    base = (node.config.http_api.handler_prefix if prefix is None else prefix).rstrip("/")
    return [
        Route(base or "/", handler.legacy_endpoint, methods=_ANY),
        Route(base + "/{method:path}", handler.method_endpoint, methods=_ANY),
    ]


def routes(node: Node) -> list[BaseRoute]:
    """The API routes of the node's app; none when ``http_api.disabled``."""
    if node.config.http_api.disabled:
        return []
    return _routes(node, None, None)


def api_app(node: Node, *, insecure: bool | None = None, prefix: str | None = None) -> Starlette:
    """A Starlette app with only the server API routes and no lifespan.

    Mount it where you like (``app.mount("/centrifugo", api_app(node))`` serves
    ``/centrifugo/api/publish``) and run the node's lifespan yourself. ``insecure=True``
    skips the API-key check, for a host that authenticates requests itself; ``prefix``
    replaces ``http_api.handler_prefix``. ``http_api.disabled`` does not apply here.
    """
    return Starlette(routes=_routes(node, prefix, insecure))
