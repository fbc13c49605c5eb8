"""Running under uvicorn with Centrifugo's graceful shutdown (needs the ``server`` extra).

Plain uvicorn closes every open WebSocket with 1012 before the application's lifespan
ends, so clients never see Centrifugo's 3001 "shutdown". :class:`GracefulServer` first
stops accepting connections, then lets each node disconnect its clients with 3001, and
only then runs uvicorn's own shutdown.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import uvicorn

from .node import Node


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
    GracefulServer(uvicorn.Config(app, **uvicorn_options), nodes).run()
