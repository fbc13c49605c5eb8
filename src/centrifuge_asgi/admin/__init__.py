"""The admin web page and its API (``admin.*``, as Centrifugo's admin UI).

Endpoints under ``admin.handler_prefix`` (default: none), on the internal port unless
``admin.external``:

- ``GET <prefix>/admin/init``: ``{"insecure", "edition", "authenticated"}`` for the page;
- ``POST <prefix>/admin/auth``: the ``password`` (form field or JSON) for a token that
  expires after :data:`TOKEN_TTL` seconds; 400 ``Bad Request`` for a wrong password, a
  body that is not a form or a JSON object with a string ``password``, a body over
  :data:`MAX_BODY`, or when ``admin.password``/``admin.secret`` is not set (as Centrifugo,
  which reads an empty password from such a body);
- ``POST <prefix>/admin/api``: one server API command ``{"method", "params"}`` with
  ``Authorization: token <token>`` (401 without a valid one; ``admin.insecure`` needs
  none), run as one command of the legacy ``/api``
  (:meth:`~centrifuge_asgi.api_exec.Executor.legacy`, counted under protocol ``admin``):
  ``{"result": ...}`` or ``{"error": {"code", "message"}}``; 400 for a body that does not
  decode, 413 over :data:`MAX_BODY`;
- a body not complete within ``http_server.read_timeout`` is 408, one cut by shutdown 503
  (read as ``/api`` reads bodies);
- ``GET <prefix>/``: the page, static files shipped in the package (``admin/web``), or
  the directory ``admin.web_path``.

A token is ``<expiry>.<HMAC-SHA256 of it under admin.secret>``: stateless, so every
node of a cluster with the same secret accepts it.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
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
from ..api import BadBody, read_body, text_response
from ..api_exec import Executor
from ..auth import hmac_sha256_hex

if TYPE_CHECKING:
    from ..config import AdminConfig
    from ..node import Node

log = logging.getLogger("centrifuge_asgi.admin")

#: seconds a login token stays valid
TOKEN_TTL = 3600
#: bytes of a request body, at most
MAX_BODY = 1024 * 1024
#: digits of a token's expiry, at most (a Unix time has 10 until the year 2286)
_EXPIRY_DIGITS = 16
WEB_DIR = Path(__file__).parent / "web"
ANY = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
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
    # ASCII only: str.isdigit() takes "²", which int() refuses; compare_digest refuses
    # non-ASCII strings (and a hex digest is ASCII)
    if not secret or not signature or not (expires + signature).isascii():
        return False
    if not expires.isdigit() or len(expires) > _EXPIRY_DIGITS:
        return False
    if int(expires) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(signature, _sign(secret, int(expires)))


def _sign(secret: str, expires: int) -> str:
    return hmac_sha256_hex(secret, f"centrifuge-asgi-admin:{expires}")


class AdminHandler:
    """The admin endpoints of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config: AdminConfig = node.config.admin
        self.executor = Executor(node, protocol="admin")

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
        try:
            body = await read_body(self.node, request, MAX_BODY)
        except BadBody as exc:
            if exc.status != 413:
                return text_response(exc.status)
            body = b""  # too large: no password, as Centrifugo reads it
        password = _password(body, request.headers.get("content-type", ""))
        cfg = self.config
        if not cfg.password or not cfg.secret:
            log.error("admin.password and admin.secret must be set to log in to the admin page")
            return text_response(400)
        if not hmac.compare_digest(password.encode(), cfg.password.encode()):
            return text_response(400)
        return JSONResponse({"token": issue_token(cfg.secret)})

    async def api(self, request: Request) -> Response:
        if not self.authenticated(request):
            return Response(status_code=401)
        try:
            body = await read_body(self.node, request, MAX_BODY)
            command = msgspec.json.decode(body, type=s.LegacyCommand)
        except BadBody as exc:
            return text_response(exc.status)
        except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deeply
            return text_response(400)
        reply = await self.executor.legacy(command)
        return Response(msgspec.json.encode(reply), media_type="application/json")


class _Login(msgspec.Struct):
    """A JSON login body: anything but a string ``password`` is no password."""

    password: str = ""


def _password(body: bytes, content_type: str) -> str:
    """``password`` of a form (as Centrifugo reads it) or of a JSON object."""
    if content_type.lower().startswith("application/json"):
        try:  # not json.loads: RecursionError, and "\ud800" that str.encode() refuses
            return msgspec.json.decode(body, type=_Login).password
        except (msgspec.DecodeError, RecursionError):
            return ""
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
    # every method reaches the endpoints (405 for the wrong one, as Centrifugo answers),
    # rather than falling through to the page's mount and its 404
    return [
        Route(f"{prefix}/admin/init", _only(("GET", "HEAD"), handler.init), methods=ANY),
        Route(f"{prefix}/admin/auth", _only(("POST",), handler.auth), methods=ANY),
        Route(f"{prefix}/admin/api", _only(("POST",), handler.api), methods=ANY),
        Mount(prefix, app=_Page(directory)),
    ]


def _only(
    methods: tuple[str, ...], endpoint: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    """``endpoint`` for ``methods``; 405 with ``Allow`` for any other method."""
    allow = ", ".join(methods)

    async def only(request: Request) -> Response:
        if request.method not in methods:
            return Response("Method Not Allowed", 405, headers={"Allow": allow})
        return await endpoint(request)

    return only


__all__ = ["TOKEN_TTL", "AdminHandler", "check_token", "issue_token", "routes"]
