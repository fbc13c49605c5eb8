"""A per-connection outgoing queue bounded in bytes.

Fan-out appends encoded messages without awaiting. The transport takes everything queued
at once and sends it as one frame (coalescing), either by awaiting :meth:`Outbox.take_all`
in a task of its own (the HTTP streaming transports) or through a listener that
schedules a write (the WebSocket transport's writer, an Outbox itself that listens to
itself, through the node's flusher). Overflow is
reported to the caller, which disconnects the client as "slow".
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable


class Outbox:
    """Queued messages of one connection; ``size`` is their total length in bytes."""

    __slots__ = ("_closed", "_items", "_listener", "max_bytes", "size")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        # None while empty: an idle connection keeps no empty list (56 bytes)
        self._items: list[bytes] | None = None
        self._closed = False
        self._listener: Callable[[], object] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def listen(self, listener: Callable[[], object] | None) -> None:
        """Call ``listener`` when a message lands in an empty outbox, and on close.

        It runs synchronously inside :meth:`put` or :meth:`close`, so it must only
        schedule work. An outbox has one consumer: a listener or :meth:`take_all`.
        """
        self._listener = listener

    def put(self, message: bytes) -> bool:
        """Queue one message; False when it would exceed ``max_bytes`` (or closed)."""
        if self._closed:
            return False
        size = self.size + len(message)
        if self.max_bytes > 0 and size > self.max_bytes:
            return False
        items = self._items
        self.size = size
        if items is not None:
            items.append(message)
        else:
            self._items = [message]
            if self._listener is not None:
                self._listener()
        return True

    def close(self, *, discard: bool = False) -> None:
        """Stop accepting messages; ``discard`` drops what is still queued."""
        self._closed = True
        if discard:
            self._items = None
            self.size = 0
        if self._listener is not None:
            self._listener()

    def drain(self) -> list[bytes]:
        """Return and remove everything queued, without waiting."""
        batch = self._items
        if batch is None:
            return []
        self._items = None
        self.size = 0
        return batch

    async def take_all(self) -> list[bytes] | None:
        """Wait for messages and return all queued; None once closed and drained."""
        while self._items is None:
            if self._closed:
                return None
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._listener = functools.partial(_wake, waiter)
            try:
                await waiter
            finally:
                self._listener = None
        return self.drain()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
