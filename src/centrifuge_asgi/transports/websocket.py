"""The bidirectional WebSocket transport (``/connection/websocket``), JSON or Protobuf.

One task reads frames and feeds them to the session in order; one writer drains the
session's outbox, joining everything queued into a single frame (newline-separated JSON
in a text frame, or length-delimited Protobuf in a binary frame).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio
from starlette.routing import BaseRoute, WebSocketRoute

from ..codes import DisconnectCode
from ..protocol.codec import Codec
from ..protocol.json_codec import JSON
from ..protocol.protobuf_codec import PROTOBUF
from ..session import Session, TransportInfo
from .http_common import Receive, Scope, Send, admission_status, deny_handshake, request_headers

if TYPE_CHECKING:
    from ..node import Node

_MESSAGE_TOO_BIG = 1009
_COMMAND_GRACE = 5.0  # seconds an in-flight command may run on after the connection closed
_SUBPROTOCOLS = ("centrifuge-json", "centrifuge-protobuf")


def negotiate(scope: Scope) -> tuple[Codec, str | None]:
    """The codec and the subprotocol to answer with (§1.4).

    The answer is the first offered subprotocol the server knows (none when none is
    offered); the protocol is Protobuf when the query asks for it (``cf_protocol`` or
    ``format`` = ``protobuf``) or ``centrifuge-protobuf`` was chosen, else JSON.
    """
    offered = scope.get("subprotocols") or ()
    chosen = next((p for p in offered if p in _SUBPROTOCOLS), None)
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    wants_protobuf = "protobuf" in query.get("cf_protocol", []) + query.get("format", [])
    if wants_protobuf or chosen == "centrifuge-protobuf":
        return PROTOBUF, chosen
    return JSON, chosen


class WebSocketEndpoint:
    """ASGI app for one WebSocket route, bound to a node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self.node
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        headers = request_headers(scope)
        refused = admission_status(node, headers)
        if refused is not None:  # not started or shutting down, Origin, connection limit
            await deny_handshake(scope, send, refused)
            return
        codec, subprotocol = negotiate(scope)
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if subprotocol is not None:
            accept["subprotocol"] = subprotocol
        await send(accept)
        session = node.create_session(TransportInfo(name="websocket", headers=headers, codec=codec))
        await self._serve(session, receive, send)

    async def _serve(self, session: Session, receive: Receive, send: Send) -> None:
        limit = self.node.config.websocket.message_size_limit
        write_timeout = self.node.config.websocket.write_timeout or 1.0
        peer_gone = False
        reader_idle = anyio.Event()  # set while the reader waits for a frame or has ended

        watchdog = self.node.write_watchdog

        async def writer(scope: anyio.CancelScope) -> None:
            outbox = session.outbox
            codec = session.codec

            def write_timed_out() -> None:
                session.disconnect(DisconnectCode.WRITE_ERROR)
                scope.cancel()  # the stuck send, and the reader with it

            try:
                while (batch := await outbox.take_all()) is not None:
                    frame = codec.join(batch)
                    message: dict[str, Any] = {"type": "websocket.send"}
                    if codec.binary:
                        message["bytes"] = frame
                    else:
                        try:
                            message["text"] = frame.decode()
                        except UnicodeDecodeError:
                            # binary payload (e.g. published by a Protobuf client)
                            session.disconnect(DisconnectCode.INAPPROPRIATE_PROTOCOL)
                            continue
                    watchdog.start(session, write_timeout, write_timed_out)
                    try:
                        await send(message)
                    finally:
                        watchdog.done(session)
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
            # A command still running (say, an RPC handler that disconnected its own
            # user and goes on publishing) may finish; its replies are dropped.
            with anyio.move_on_after(_COMMAND_GRACE):
                await reader_idle.wait()
            scope.cancel()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer, tg.cancel_scope)
                try:
                    while True:
                        reader_idle.set()
                        msg = await receive()
                        reader_idle = anyio.Event()
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
                    reader_idle.set()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await session.finish()


def routes(node: Node) -> list[BaseRoute]:
    cfg = node.config.websocket
    if cfg.disabled:
        return []
    return [WebSocketRoute(cfg.handler_prefix or "/connection/websocket", WebSocketEndpoint(node))]
