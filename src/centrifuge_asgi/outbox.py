"""A per-connection outgoing queue bounded in bytes, drained by one writer.

Fan-out appends encoded messages without awaiting; the connection's writer takes
everything queued at once and sends it as one frame (coalescing). Overflow is
reported to the caller, which disconnects the client as "slow".
"""

from __future__ import annotations

from collections import deque

import anyio


class Outbox:
    __slots__ = ("_closed", "_items", "_size", "_waiter", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: deque[bytes] = deque()
        self._size = 0
        self._closed = False
        self._waiter: anyio.Event | None = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, message: bytes) -> bool:
        """Queue one message; False when it would exceed ``max_bytes`` (or closed)."""
        if self._closed:
            return False
        size = self._size + len(message)
        if self.max_bytes > 0 and size > self.max_bytes:
            return False
        self._items.append(message)
        self._size = size
        if self._waiter is not None:
            self._waiter.set()
        return True

    def close(self, *, discard: bool = False) -> None:
        """Stop accepting messages; ``discard`` drops what is still queued."""
        self._closed = True
        if discard:
            self._items.clear()
            self._size = 0
        if self._waiter is not None:
            self._waiter.set()

    def drain(self) -> list[bytes]:
        """Return and remove everything queued, without waiting."""
        batch = list(self._items)
        self._items.clear()
        self._size = 0
        return batch

    async def take_all(self) -> list[bytes] | None:
        """Wait for messages and return all queued; None once closed and drained."""
        while not self._items:
            if self._closed:
                return None
            self._waiter = anyio.Event()
            await self._waiter.wait()
            self._waiter = None
        return self.drain()
