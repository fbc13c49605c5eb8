"""Unidirectional WebSocket (``/connection/uni_websocket``), JSON only.

The ConnectRequest comes from the ``cf_connect`` query or else the first text message
(a bad one closes with 3501). Each push is one text frame (newline-joined batches with
``join_push_messages``); on disconnect the Disconnect push is followed by a close frame
with the same code and reason. Later client messages are read and ignored. Native
WebSocket pings are left to the ASGI server (uvicorn's ``ws_ping_interval``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
from starlette.routing import BaseRoute, WebSocketRoute

from ..codes import DisconnectCode
from ..session import Session
from .http_common import (
    CONNECT_PARAM,
    Receive,
    Scope,
    Send,
    admission_status,
    deny_handshake,
    query_param,
    request_headers,
)
from .unidirectional import UNI_JSON, UniJsonCodec, connect_session, parse_connect, release

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("centrifuge_asgi.uni_websocket")

_NO_DISCONNECT_PUSH = UniJsonCodec(disconnect_push=False)
_MESSAGE_TOO_BIG = 1009


class UniWebSocketEndpoint:
    """ASGI app for the unidirectional WebSocket route, bound to a node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self.node
        if (await receive())["type"] != "websocket.connect":
            return
        headers = request_headers(scope)
        refused = admission_status(node, headers)
        if refused is not None:
            await deny_handshake(scope, send, refused)
            return
        await send({"type": "websocket.accept"})
        query = query_param(scope, CONNECT_PARAM)
        data = query.encode() if query is not None else await self._first_message(receive, send)
        if data is None:
            return
        req = parse_connect(data)
        if req is None:
            await self._close(send, DisconnectCode.BAD_REQUEST, DisconnectCode.BAD_REQUEST.reason)
            return
        cfg = node.config.uni_websocket
        codec = _NO_DISCONNECT_PUSH if cfg.disable_disconnect_push else UNI_JSON
        session, _ = await connect_session(node, "uni_websocket", headers, req, codec)
        try:
            await self._serve(session, receive, send)
        finally:
            await release(session)

    async def _first_message(self, receive: Receive, send: Send) -> bytes | None:
        """The connect request sent as the first message; None (closed) when none came."""
        with anyio.move_on_after(self.node.config.client.stale_close_delay or 10.0):
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return None
            text = msg.get("text")
            return text.encode() if text is not None else msg.get("bytes") or b""
        await self._close(send, DisconnectCode.STALE, DisconnectCode.STALE.reason)
        return None

    async def _close(self, send: Send, code: int, reason: str) -> None:
        with anyio.move_on_after(self.node.config.uni_websocket.write_timeout or 1.0):
            await send({"type": "websocket.close", "code": code, "reason": reason})

    async def _serve(self, session: Session, receive: Receive, send: Send) -> None:
        cfg = self.node.config.uni_websocket
        write_timeout = cfg.write_timeout or 1.0
        peer_gone = False

        async def read() -> None:
            nonlocal peer_gone
            while True:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    peer_gone = True
                    session.transport_closed()
                    return
                size = len(msg.get("text") or msg.get("bytes") or b"")
                if cfg.message_size_limit > 0 and size > cfg.message_size_limit:
                    session.disconnect(_MESSAGE_TOO_BIG, "message too big")
                    return

        async def write(frame: bytes) -> None:
            try:
                text = frame.decode()
            except UnicodeDecodeError:
                # not JSON text (the codec lets no such push through; never a traceback)
                session.disconnect(DisconnectCode.INAPPROPRIATE_PROTOCOL)
                return
            with anyio.fail_after(write_timeout):
                await send({"type": "websocket.send", "text": text})

        async def pump() -> None:
            try:
                while (batch := await session.outbox.take_all()) is not None:
                    messages = [m for m in batch if m]
                    if cfg.join_push_messages and messages:
                        messages = [b"\n".join(messages)]
                    for message in messages:
                        await write(message)
            except TimeoutError:
                session.disconnect(DisconnectCode.WRITE_ERROR)
            except OSError:
                session.transport_closed()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await pump()
            tg.cancel_scope.cancel()
        if not peer_gone and not cfg.disable_closing_handshake:
            await self._close(send, session.close_code, session.close_reason)


def routes(node: Node) -> list[BaseRoute]:
    """``uni_websocket`` when enabled."""
    cfg = node.config.uni_websocket
    if not cfg.enabled:
        return []
    return [
        WebSocketRoute(
            cfg.handler_prefix or "/connection/uni_websocket", UniWebSocketEndpoint(node)
        )
    ]


__all__ = ["UniWebSocketEndpoint", "routes"]
