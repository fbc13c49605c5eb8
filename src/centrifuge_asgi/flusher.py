"""One task that writes every connection with queued messages, instead of a writer per connection.

A publication to N subscribers appends to N outboxes. Waking N writer tasks for it costs
N task switches; the node's :class:`Flusher` is woken once and writes the N connections
in a loop, as a hand-written fan-out would. A connection whose write cannot complete at
once (its socket is not draining) finishes that write in a task of its own, so it never
holds up the others (see :mod:`.transports.frame_writer`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Generator
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Flushable(Protocol):
    def flush(self) -> None:
        """Write what is queued; must not raise and must not block."""


class Flusher:
    """Connections scheduled for a write, served by :meth:`run` (one task per node)."""

    __slots__ = ("_ready", "_wakeup")

    def __init__(self) -> None:
        self._ready: list[Flushable] = []
        self._wakeup: asyncio.Future[None] | None = None

    def schedule(self, target: Flushable) -> None:
        """Write ``target`` on the flusher's next round."""
        self._ready.append(target)
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    def flush_ready(self) -> int:
        """Write everything scheduled so far; returns how many targets were written."""
        ready, self._ready = self._ready, []
        for target in ready:
            try:
                target.flush()
            except Exception:
                log.exception("flush failed")
        return len(ready)

    async def run(self) -> None:
        """Serve scheduled writes forever (cancel the surrounding scope to stop)."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._ready:
                wakeup = self._wakeup = loop.create_future()
                try:
                    await wakeup
                finally:
                    self._wakeup = None
            self.flush_ready()


class Resumed:
    """Await an awaitable that was started elsewhere and suspended on ``yielded``.

    :func:`step` runs an awaitable up to its first suspension in the calling task; when
    it does suspend, another task awaits ``Resumed(coro, yielded)`` to run it to the end,
    passing the awaited future (and any cancellation) through.
    """

    __slots__ = ("coro", "yielded")

    def __init__(self, coro: Generator[Any, Any, Any], yielded: object) -> None:
        self.coro = coro
        self.yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.yielded
        while True:
            try:
                received = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation: deliver it to the coroutine
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(received)
                except StopIteration as stop:
                    return stop.value


def step(awaitable: Awaitable[Any]) -> Resumed | None:
    """Run ``awaitable`` until it completes (None) or suspends (a :class:`Resumed` to await).

    Exceptions raised before the first suspension propagate to the caller.
    """
    coro = awaitable.__await__()
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return Resumed(coro, yielded)
