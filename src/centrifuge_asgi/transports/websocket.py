"""The bidirectional WebSocket transport (``/connection/websocket``), JSON protocol.

One task reads frames and feeds them to the session in order; one writer drains the
session's outbox, joining everything queued into a single newline-separated frame.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio
from starlette.routing import BaseRoute, WebSocketRoute

from ..codes import DisconnectCode
from ..session import Session, TransportInfo
from .origin import origin_allowed

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("centrifuge_asgi.websocket")

Scope = dict[str, Any]
Receive = Any
Send = Any

_MESSAGE_TOO_BIG = 1009


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _deny(scope: Scope, send: Send, status: int) -> None:
    """Refuse the handshake: an HTTP status where the server supports it, else a close."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b""})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": ""})


class WebSocketEndpoint:
    """ASGI app for one WebSocket route, bound to a node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self.node
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        headers = _headers(scope)
        cfg = node.config.client
        if not node.running:
            log.error("connection refused: node not started (use lifespan=node.lifespan)")
            await _deny(scope, send, 503)
            return
        if not origin_allowed(headers.get("origin"), headers.get("host"), cfg.allowed_origins):
            log.info("connection refused: origin %r not allowed", headers.get("origin"))
            await _deny(scope, send, 403)
            return
        if cfg.connection_limit > 0 and node.registry.num_clients >= cfg.connection_limit:
            await _deny(scope, send, 503)
            return
        offered = list(scope.get("subprotocols") or [])
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        wants_protobuf = "protobuf" in query.get("cf_protocol", []) + query.get("format", [])
        if "centrifuge-protobuf" in offered or wants_protobuf:
            # The Protobuf protocol is not served by this transport yet.
            await _deny(scope, send, 400)
            return
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if "centrifuge-json" in offered:
            accept["subprotocol"] = "centrifuge-json"
        await send(accept)
        session = node.create_session(TransportInfo(name="websocket", headers=headers))
        await self._serve(session, receive, send)

    async def _serve(self, session: Session, receive: Receive, send: Send) -> None:
        limit = self.node.config.websocket.message_size_limit
        write_timeout = self.node.config.websocket.write_timeout or 1.0
        peer_gone = False

        async def writer(scope: anyio.CancelScope) -> None:
            outbox = session.outbox
            codec = session.codec
            try:
                while (batch := await outbox.take_all()) is not None:
                    frame = codec.join(batch)
                    message: dict[str, Any] = {"type": "websocket.send"}
                    if codec.binary:
                        message["bytes"] = frame
                    else:
                        message["text"] = frame.decode()
                    with anyio.fail_after(write_timeout):
                        await send(message)
                if not peer_gone:
                    with anyio.move_on_after(write_timeout):
                        await send(
                            {
                                "type": "websocket.close",
                                "code": session.close_code,
                                "reason": session.close_reason,
                            }
                        )
            except TimeoutError:
                session.disconnect(DisconnectCode.WRITE_ERROR)
            except OSError:
                session.transport_closed()
            scope.cancel()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer, tg.cancel_scope)
                while True:
                    msg = await receive()
                    if msg["type"] == "websocket.disconnect":
                        peer_gone = True
                        session.transport_closed()
                        break
                    text = msg.get("text")
                    data: bytes = text.encode() if text is not None else msg.get("bytes") or b""
                    if limit > 0 and len(data) > limit:
                        session.disconnect(_MESSAGE_TOO_BIG, "message too big")
                        break
                    await session.handle_frame(data)
                    if session.closing:
                        break
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await session.finish()


def routes(node: Node) -> list[BaseRoute]:
    cfg = node.config.websocket
    if cfg.disabled:
        return []
    return [WebSocketRoute(cfg.handler_prefix or "/connection/websocket", WebSocketEndpoint(node))]
