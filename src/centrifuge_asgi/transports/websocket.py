"""The bidirectional WebSocket transport (``/connection/websocket``), JSON or Protobuf.

The connection's own task reads frames and feeds them to the session in order; its
:class:`~.frame_writer.FrameWriter` turns the session's outbox into frames, written by the
node's flusher (one task for every connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.types import Receive as AppReceive
from starlette.types import Scope as AppScope
from starlette.types import Send as AppSend

from ..protocol.codec import Codec
from ..protocol.json_codec import JSON
from ..protocol.protobuf_codec import PROTOBUF
from ..session import transport_info
from .frame_writer import FrameWriter
from .http_common import Receive, Scope, Send, admission_status, deny_handshake, request_headers

if TYPE_CHECKING:
    from ..node import Node

_MESSAGE_TOO_BIG = 1009
_SUBPROTOCOLS = ("centrifuge-json", "centrifuge-protobuf")


def negotiate(scope: Scope) -> tuple[Codec, str | None]:
    """The codec and the subprotocol to answer with (§1.4).

    The answer is the first offered subprotocol the server knows (none when none is
    offered); the protocol is Protobuf when the query asks for it (``cf_protocol`` or
    ``format`` = ``protobuf``) or ``centrifuge-protobuf`` was chosen, else JSON.
    """
    offered = scope.get("subprotocols") or ()
    chosen = next((p for p in offered if p in _SUBPROTOCOLS), None)
    raw_query = scope.get("query_string", b"")
    query = parse_qs(raw_query.decode("latin-1")) if raw_query else {}
    wants_protobuf = "protobuf" in query.get("cf_protocol", []) + query.get("format", [])
    if wants_protobuf or chosen == "centrifuge-protobuf":
        return PROTOBUF, chosen
    return JSON, chosen


def _count_upgrade(node: Node, scope: Scope, status: int) -> None:
    """node_incoming_http_requests_total of one upgrade request (101 when accepted)."""
    if not node.counting:
        return
    labels = (scope.get("path", ""), "GET", str(status))
    node.metrics.count("node_incoming_http_requests_total", labels)


async def _handshake(node: Node, scope: Scope, receive: Receive, send: Send) -> FrameWriter | None:
    """The upgrade: admission, subprotocol, accept. Returns the connection's writer (its
    session's outbox, ``session`` set), or None when refused or the client went away."""
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return None
    headers = request_headers(scope)
    refused = admission_status(node, headers)
    if refused is not None:  # not started or shutting down, Origin, connection limit
        _count_upgrade(node, scope, refused)
        await deny_handshake(scope, send, refused)
        return None
    codec, subprotocol = negotiate(scope)
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if subprotocol is not None:
        accept["subprotocol"] = subprotocol
    await send(accept)
    _count_upgrade(node, scope, 101)
    writer = FrameWriter(send, node)  # made in the reader's task (it keeps that task)
    # the session keeps the scope's raw header list (the scope keeps it anyway): no
    # mapping object per connection unless someone reads session.headers
    writer.session = node.create_session(
        transport_info("websocket", codec=codec), scope.get("headers", ()), writer
    )
    return writer


class WebSocketReader:
    """An ASGI app whose coroutine becomes the reader of a bidirectional WebSocket.

    An idle connection keeps its reader's suspended frame for its whole life, and every
    coroutine that awaits that frame too (one more about 250 bytes). So the reader runs in
    the coroutine the server awaits: :class:`WebSocketEndpoint` serves every scope it is
    given this way, and the node's app (``transports/app.py``) runs its WebSocket path the
    same way, handing every other scope to :meth:`_route`.
    """

    def _reader_node(self, scope: AppScope) -> Node | None:
        """The node whose WebSocket reader serves ``scope`` here; None: :meth:`_route`."""
        raise NotImplementedError

    def _route(self, scope: AppScope, receive: AppReceive, send: AppSend) -> Awaitable[None]:
        """The app serving a scope that :meth:`_reader_node` gave away (returned, not
        awaited here: no coroutine of this app stays under it)."""
        raise NotImplementedError

    async def __call__(self, scope: AppScope, receive: AppReceive, send: AppSend) -> None:
        node = self._reader_node(scope)
        if node is None:
            await self._route(scope, receive, send)
            return
        writer = await _handshake(node, scope, receive, send)  # type: ignore[arg-type]
        if writer is None:
            return
        # From here on the connection's reader: it reads frames into the session until
        # either side closes, and the node's flusher writes. The handshake's locals stayed
        # in _handshake's frame: an idle connection keeps one small suspended frame (each
        # local and each slot of its stack depth is 8 bytes of it: the session is read as
        # writer.session).
        limit = node.config.websocket.message_size_limit
        paced = False
        try:
            async with writer.session.command_tasks():
                while True:
                    writer.reader_idle = True
                    msg = await receive()
                    writer.reader_idle = False
                    if msg["type"] == "websocket.disconnect":
                        writer.peer_gone = True
                        # thousands of peers gone at once release their sessions a slice
                        # of the loop at a time (pacing.py)
                        paced = True
                        await node.pacer.tick()
                        writer.session.transport_closed()
                        break
                    data = msg.get("text")  # then its bytes (one local for both)
                    data = data.encode() if data is not None else msg.get("bytes") or b""
                    if limit > 0 and len(data) > limit:
                        writer.session.disconnect(_MESSAGE_TOO_BIG, "message too big")
                        break
                    await writer.session.handle_frame(data)
                    # an idle connection waits for its next frame without keeping the
                    # last one (the message dict, its text and bytes) alive meanwhile
                    del msg, data
                    if writer.session.closing:
                        break
        except asyncio.CancelledError:
            # The writer stops the reader once the close frame is out; any other
            # cancellation (the server shutting down) goes on.
            if (
                not writer.reader_cancelled
                or writer.reader_task is None
                or writer.reader_task.uncancel() > 0
            ):
                raise
        finally:
            await _teardown(writer, paced)


class WebSocketEndpoint(WebSocketReader):
    """ASGI app for one WebSocket route, bound to a node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def _reader_node(self, scope: AppScope) -> Node | None:
        return self.node


async def _teardown(writer: FrameWriter, paced: bool) -> None:
    """After the reader: the writer's last frames, then the session's release.

    Apart from the reader's coroutine so that its frame, suspended for the connection's
    life, needs no stack room for these nested blocks. One shield for the whole
    clean-up (a cancel scope costs more than these steps usually take). A plain
    task.cancel() (uvicorn's forced shutdown) passes a shield; whatever happens to the
    writer, the session is still released. It is entered before the first await, as
    when it was written inline.
    """
    with anyio.CancelScope(shield=True):
        try:
            if not paced:
                await writer.node.pacer.tick()
            await writer.finish()
        finally:
            with anyio.move_on_after(5):
                await writer.session.finish()


def routes(node: Node) -> list[BaseRoute]:
    cfg = node.config.websocket
    if cfg.disabled:
        return []
    return [WebSocketRoute(cfg.handler_prefix or "/connection/websocket", WebSocketEndpoint(node))]
