"""The admin web page and its API (``admin.*``, as Centrifugo's admin UI).

Endpoints under ``admin.handler_prefix`` (default: none), on the internal port unless
``admin.external``:

- ``GET <prefix>/admin/init``: ``{"insecure", "edition", "authenticated"}`` for the page;
- ``POST <prefix>/admin/auth``: the ``password`` (form field or JSON) for a token that
  expires after :data:`TOKEN_TTL` seconds (400 for a wrong password, or when
  ``admin.password``/``admin.secret`` is not set);
- ``POST <prefix>/admin/api``: one server API command ``{"method", "params"}`` with
  ``Authorization: token <token>`` (401 without a valid one; ``admin.insecure`` needs
  none), run by the same :class:`~centrifuge_asgi.api_exec.Executor` as ``/api``;
  answers ``{"result": ...}`` or ``{"error": {"code", "message"}}``;
- ``GET <prefix>/``: the page, static files shipped in the package (``admin/web``), or
  the directory ``admin.web_path``.

A token is ``<expiry>.<HMAC-SHA256 of it under admin.secret>``: stateless, so every
node of a cluster with the same secret accepts it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .. import api_schema as s
from ..api_exec import ApiError, Executor

if TYPE_CHECKING:
    from ..config import AdminConfig
    from ..node import Node

log = logging.getLogger("centrifuge_asgi.admin")

#: seconds a login token stays valid
TOKEN_TTL = 3600
MAX_BODY = 1024 * 1024
WEB_DIR = Path(__file__).parent / "web"
#: what the page may load: itself only (no CDN, no inline script)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def issue_token(secret: str, now: float | None = None) -> str:
    """A token valid for :data:`TOKEN_TTL` seconds."""
    expires = int((time.time() if now is None else now) + TOKEN_TTL)
    return f"{expires}.{_sign(secret, expires)}"


def check_token(secret: str, token: str, now: float | None = None) -> bool:
    """Whether ``token`` was issued with ``secret`` and has not expired."""
    expires, _, signature = token.partition(".")
    if not secret or not expires.isdigit() or not signature:
        return False
    if int(expires) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(signature, _sign(secret, int(expires)))


def _sign(secret: str, expires: int) -> str:
    message = f"centrifuge-asgi-admin:{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class AdminHandler:
    """The admin endpoints of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config: AdminConfig = node.config.admin
        self.executor = Executor(node)

    def authenticated(self, request: Request) -> bool:
        if self.config.insecure:
            return True
        parts = request.headers.get("authorization", "").split()
        if len(parts) != 2 or parts[0].lower() != "token":
            return False
        return check_token(self.config.secret, parts[1])

    async def init(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "insecure": self.config.insecure,
                "edition": "oss",
                "authenticated": self.authenticated(request),
            }
        )

    async def auth(self, request: Request) -> Response:
        body = await _body(request)
        if body is None:
            return Response("Request Entity Too Large", status_code=413)
        password = _password(body, request.headers.get("content-type", ""))
        cfg = self.config
        if not cfg.password or not cfg.secret:
            log.error("admin.password and admin.secret must be set to log in to the admin page")
            return Response("Bad Request", status_code=400)
        if not hmac.compare_digest(password.encode(), cfg.password.encode()):
            return Response("Bad Request", status_code=400)
        return JSONResponse({"token": issue_token(cfg.secret)})

    async def api(self, request: Request) -> Response:
        if not self.authenticated(request):
            return Response(status_code=401)
        body = await _body(request)
        if body is None:
            return Response("Request Entity Too Large", status_code=413)
        try:
            command = msgspec.json.decode(body, type=s.LegacyCommand)
        except (msgspec.DecodeError, RecursionError):
            return Response("Bad Request", status_code=400)
        method = s.legacy_method(command.method)
        started = time.perf_counter()
        try:
            if method is None:
                raise ApiError(104)
            params = bytes(command.params)
            try:
                req = msgspec.json.decode(
                    b"{}" if params in (b"", b"null") else params, type=s.REQUEST_TYPES[method]
                )
            except (msgspec.DecodeError, RecursionError):
                raise ApiError(107) from None
            result = await self.executor.call(method, req)
        except ApiError as exc:
            self.node.metrics.api_call(method or "unknown", _since(started), str(exc.code), "admin")
            return _json({"error": exc.as_dict()})
        self.node.metrics.api_call(method, _since(started), "", "admin")
        return _json({"result": result})


def _since(started: float) -> float:
    return time.perf_counter() - started


def _json(body: Any) -> Response:
    return Response(msgspec.json.encode(body), media_type="application/json")


async def _body(request: Request) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _password(body: bytes, content_type: str) -> str:
    """``password`` of a form (as Centrifugo reads it) or of a JSON object."""
    if content_type.startswith("application/json"):
        try:
            value = json.loads(body)
        except ValueError:
            return ""
        password = value.get("password") if isinstance(value, dict) else None
        return password if isinstance(password, str) else ""
    fields = parse_qs(body.decode(errors="replace"))
    return fields.get("password", [""])[0]


class _Page:
    """The static files, with headers that keep the page to itself."""

    def __init__(self, directory: Path) -> None:
        self.files = StaticFiles(directory=directory, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", CSP.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"cache-control", b"no-cache"))
                message = {**message, "headers": headers}
            await send(message)

        await self.files(scope, receive, send_with_headers)


def routes(node: Node, external: bool) -> list[BaseRoute]:
    """The admin routes when ``admin.enabled`` and ``admin.external`` is ``external``; the
    page's mount comes last, so it must be the last of the app's routes."""
    cfg = node.config.admin
    if not cfg.enabled or cfg.external != external:
        return []
    if cfg.web_proxy_address:
        log.warning("admin.web_proxy_address is not supported; serving the built-in page")
    handler = AdminHandler(node)
    prefix = cfg.handler_prefix.rstrip("/")
    directory = Path(cfg.web_path) if cfg.web_path else WEB_DIR
    return [
        Route(f"{prefix}/admin/init", handler.init, methods=["GET"]),
        Route(f"{prefix}/admin/auth", handler.auth, methods=["POST"]),
        Route(f"{prefix}/admin/api", handler.api, methods=["POST"]),
        Mount(prefix, app=_Page(directory)),
    ]


__all__ = ["TOKEN_TTL", "AdminHandler", "check_token", "issue_token", "routes"]
