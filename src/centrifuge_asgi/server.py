"""Running under uvicorn with Centrifugo's graceful shutdown (needs the ``server`` extra).

Plain uvicorn closes every open WebSocket with 1012 before the application's lifespan
ends, so clients never see Centrifugo's 3001 "shutdown". :class:`GracefulServer` first
stops accepting connections, then lets each node disconnect its clients with 3001, and
only then runs uvicorn's own shutdown, all within ``shutdown.timeout``.

:data:`WS_PROTOCOL` is the WebSocket implementation ``serve`` and :func:`run` use unless told
otherwise: uvicorn's default (websockets sans-I/O) with one leniency that Centrifugo has,
an empty ``Sec-WebSocket-Protocol`` header read as no subprotocol.

:func:`http_protocol` is the HTTP/1.1 implementation they use: uvicorn's own (httptools,
else h11) with the two bounds Go's ``http.Server`` gives Centrifugo and uvicorn lacks, on
connections that have not sent complete request headers yet: their time
(``http_server.read_header_timeout``) and their number
(``http_server.max_pending_connections``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import uvicorn

from .node import Node

log = logging.getLogger("centrifuge_asgi.server")

_SUBPROTOCOL_HEADER = "Sec-WebSocket-Protocol"


def _lenient_protocol() -> type[Any] | None:
    """uvicorn's sans-I/O WebSocket protocol, minus its 400 for an empty subprotocol header.

    centrifuge-python up to 0.6 (and its repository's default branch) opens JSON
    connections with ``subprotocols=[]``, which sends ``Sec-WebSocket-Protocol:`` with no
    value. websockets refuses that handshake with
    400 "invalid Sec-WebSocket-Protocol header"; Centrifugo, wsproto and uvicorn's legacy
    implementation read it as "no subprotocol". Empty values are dropped before the
    handshake is checked; everything else is uvicorn's own code.
    """
    try:  # uvicorn >= 0.35; the older default (legacy websockets) accepts the empty header
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:  # pragma: no cover
        return None

    class LenientWebSocketProtocol(WebSocketsSansIOProtocol):
        def handle_connect(self, event: Any) -> None:
            headers = event.headers
            values = headers.get_all(_SUBPROTOCOL_HEADER)
            if values and not all(v.strip() for v in values):
                del headers[_SUBPROTOCOL_HEADER]
                for value in values:
                    if value.strip():
                        headers[_SUBPROTOCOL_HEADER] = value
            super().handle_connect(event)

    return LenientWebSocketProtocol


WS_PROTOCOL: type[Any] | str = _lenient_protocol() or "auto"


class GracefulServer(uvicorn.Server):
    """``uvicorn.Server`` that shuts the given nodes down before closing sockets."""

    def __init__(self, config: uvicorn.Config, nodes: Sequence[Node]) -> None:
        super().__init__(config)
        self.nodes = list(nodes)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for node in self.nodes:
            if node.running:
                await node.shutdown()
        await super().shutdown(sockets)


def run(app: Any, *, node: Node | Sequence[Node], **uvicorn_options: Any) -> None:
    """``uvicorn.run`` with graceful Centrifugo shutdown of ``node`` (or several nodes)."""
    nodes = [node] if isinstance(node, Node) else list(node)
    uvicorn_options.setdefault("ws", WS_PROTOCOL)
    GracefulServer(uvicorn.Config(app, **uvicorn_options), nodes).run()
