"""The time a peer may take to send a request body (``http_server.read_timeout``).

Every endpoint that reads a body (the server API, ``/emulation``, and the connect
request of HTTP-streaming, SSE and the unidirectional streams) reads it through
:meth:`BodyReads.read`. A body that is not complete within the timeout ends the read
with :class:`BodyTimeout` (the endpoint answers 408), and so does every read in progress
when the node's shutdown begins (503): a half-sent body never keeps shutdown waiting.
The clock starts when the endpoint starts reading, that is once the request headers are
complete; ``serve`` bounds the headers themselves (``http_server.read_header_timeout``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")

__all__ = ["BodyReads", "BodyTimeout"]


class BodyTimeout(Exception):
    """The body did not arrive in time (408), or shutdown began while it was read (503)."""

    def __init__(self, shutdown: bool) -> None:
        super().__init__("shutting down" if shutdown else "request body timeout")
        self.status = 503 if shutdown else 408


class BodyReads:
    """The request bodies being read for one node.

    ``timeout`` (seconds) bounds each read; 0 or less leaves reads unbounded in time, but
    shutdown still ends them. ``closing`` tells whether the node's shutdown has begun.
    """

    __slots__ = ("_closing", "_scopes", "timeout")

    def __init__(self, timeout: float, closing: Callable[[], bool]) -> None:
        self.timeout = timeout
        self._closing = closing
        self._scopes: set[anyio.CancelScope] = set()

    async def read(self, read: Callable[[], Awaitable[T]]) -> T:
        """``await read()``, or :class:`BodyTimeout` when it takes too long or shutdown begins."""
        if self._closing():
            raise BodyTimeout(shutdown=True)
        scope = anyio.CancelScope()
        if self.timeout > 0:
            scope.deadline = anyio.current_time() + self.timeout
        self._scopes.add(scope)
        try:
            with scope:
                return await read()
        finally:
            self._scopes.discard(scope)
        raise BodyTimeout(shutdown=self._closing())  # only reached when the scope was cancelled

    def stop(self) -> None:
        """Shutdown began: end every read in progress (later reads fail at once)."""
        for scope in list(self._scopes):
            scope.cancel()

    def __len__(self) -> int:
        return len(self._scopes)
