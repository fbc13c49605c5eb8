"""One task that writes every connection with queued messages, instead of a writer per connection.

A publication to N subscribers appends to N outboxes. Waking N writer tasks for it costs
N task switches; the node's :class:`Flusher` is woken once and writes the N connections
in a loop, as a hand-written fan-out would.

A write runs inline (:func:`step`) and usually completes without suspending. One that
does suspend (its socket is not draining) is finished by the task that started it, since
whatever the ASGI server's ``send`` entered before suspending (a timeout, a cancel scope)
belongs to that task. That task therefore stops being the flusher: it hands the rest of
its round to a new flusher task and stays with the stalled write, so one slow client
never holds up the others. A round that takes longer than :data:`ROUND_SLICE` yields to
the event loop every so often (checked every 64 connections), so a mass delivery never
keeps the loop from reading sockets for long.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol

log = logging.getLogger(__name__)

ROUND_SLICE = 0.01  # seconds one round may write before the loop polls its sockets again


class Flushable(Protocol):
    def flush(self) -> Resumed | None:
        """Write what is queued inline; a write that suspended is returned, unfinished."""

    async def complete(self, stalled: Resumed) -> None:
        """Finish a write that :meth:`flush` returned (in the same task); must not raise
        except when this task is cancelled."""


class Flusher:
    """Connections scheduled for a write, served by :meth:`run` (see the module docstring).

    ``spawn`` starts a task in the node's task group (False when it cannot).
    """

    __slots__ = ("_last_text", "_open", "_ready", "_spawn", "_wakeup")

    def __init__(self, spawn: Callable[[Callable[[], Awaitable[None]]], bool]) -> None:
        self._spawn = spawn
        self._ready: list[Flushable] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._open = True
        self._last_text = (b"", "")

    def schedule(self, target: Flushable) -> None:
        """Write ``target`` on the flusher's next round (dropped once the node stopped)."""
        if not self._open:
            return
        self._ready.append(target)
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    def decode(self, frame: bytes) -> str:
        """``frame.decode()``, once per round for a frame shared by many connections.

        A fan-out hands the same encoded publication object to every subscriber; the
        last result is kept until the end of the round.
        """
        last = self._last_text
        if last[0] is frame:
            return last[1]
        text = frame.decode()
        self._last_text = (frame, text)
        return text

    async def run(self) -> None:
        """Serve scheduled writes until cancelled, or until a write of this task stalls."""
        stalled = await self._serve()
        if stalled is not None:
            target, resumed = stalled
            try:
                await target.complete(resumed)
            except Exception:
                log.exception("stalled write failed")

    async def _serve(self) -> tuple[Flushable, Resumed] | None:
        """The flusher's loop; returns the first write that stalls, with its target."""
        loop = asyncio.get_running_loop()
        self._open = True
        try:
            while True:
                if not self._ready:
                    self._last_text = (b"", "")
                    wakeup = self._wakeup = loop.create_future()
                    try:
                        await wakeup
                    finally:
                        self._wakeup = None
                ready, self._ready = self._ready, []
                round_ends = time.perf_counter() + ROUND_SLICE
                for i, target in enumerate(ready):
                    if i & 63 == 63 and time.perf_counter() > round_ends:
                        # a long round lets the loop poll its sockets, then goes on
                        self._ready[:0] = ready[i:]
                        await asyncio.sleep(0)
                        break
                    try:
                        stalled = target.flush()
                    except Exception:
                        log.exception("flush failed")
                        continue
                    if stalled is not None:
                        # this task stays with the write; the next flusher serves the rest
                        self._ready[:0] = ready[i + 1 :]
                        if not self._spawn(self.run):  # the node is stopping
                            self._open = False
                        return target, stalled
        except asyncio.CancelledError:
            self._open = False  # the node is stopping: nothing will be written any more
            self._ready.clear()
            raise


class Resumed:
    """Await an awaitable that :func:`step` started and that suspended on ``yielded``.

    It must be awaited by the task that ran :func:`step`. Every resumption runs in
    ``context``, the context the first step ran in (None: the awaiting task's own), and
    passes the awaited future (and any cancellation) through.
    """

    __slots__ = ("context", "coro", "yielded")

    def __init__(
        self,
        coro: Generator[Any, Any, Any],
        yielded: object,
        context: contextvars.Context | None,
    ) -> None:
        self.coro = coro
        self.yielded = yielded
        self.context = context

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.yielded
        run = _call if self.context is None else self.context.run
        while True:
            try:
                received = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation: deliver it to the coroutine
                try:
                    value = run(coro.throw, exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = run(coro.send, received)
                except StopIteration as stop:
                    return stop.value


def _call(fn: Callable[[Any], Any], arg: Any) -> Any:
    return fn(arg)


def step(awaitable: Awaitable[Any], context: contextvars.Context | None) -> Resumed | None:
    """Run ``awaitable`` in ``context`` (None: the calling task's own) until it completes
    (None) or suspends.

    A suspended one comes back as a :class:`Resumed`, which the calling task must await.
    Exceptions raised before the first suspension propagate to the caller.
    """
    coro = awaitable.__await__()
    try:
        yielded = coro.send(None) if context is None else context.run(coro.send, None)
    except StopIteration:
        return None
    return Resumed(coro, yielded, context)
