"""Sharing the event loop fairly: no frame, batch or mass disconnect holds it for long.

One event-loop iteration runs every callback that was ready when it began, and only then
polls the sockets again. 100,000 commands in one frame, a 24,000-command API batch or
5,000 connections closing at once are each a long run of short steps that never suspend,
so every other connection waits for the whole run.

A :class:`Pacer` gives such work a *slice* of each iteration. Work calls
:meth:`Pacer.tick` between its steps: within the slice the call returns at once (one
clock read); past it, the caller waits in line and is let go in a later iteration, after
the sockets have been polled. All paced work on a node shares one pacer, so a thousand
connections that close together share one slice instead of taking one each, and they
wait on a future in line rather than waking up every iteration to look. Work that cannot
be split into steps (decoding a frame of megabytes) runs in a worker thread through
:meth:`Pacer.run_sync`, one such call at a time.

How many waiters are let go per iteration adapts: a waiter that finds the slice already
used up when it resumes goes back to the front of the line, and the next release is
halved; a release that all fit doubles the next one.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_SLICE = 0.01  # seconds of paced work per event-loop iteration
_MAX_RELEASE = 4096


class Pacer:
    """A time budget per event-loop iteration for work that calls :meth:`tick` between
    its steps."""

    __slots__ = ("_deadline", "_release", "_requeued", "_threads", "_waiters", "slice")

    def __init__(self, slice_seconds: float = DEFAULT_SLICE) -> None:
        if slice_seconds <= 0:
            raise ValueError("slice_seconds must be positive")
        self.slice = slice_seconds
        self._deadline: float | None = None  # None: no slice in this iteration yet
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._release = 64  # waiters let go per iteration
        self._requeued = 0  # let go, found no room, back in line (since the last release)
        self._threads: anyio.CapacityLimiter | None = None  # made in the loop, at first use

    @property
    def waiting(self) -> int:
        """How many callers wait for a later iteration."""
        return len(self._waiters)

    async def tick(self) -> None:
        """Return at once while the slice lasts; past it, wait for a later iteration."""
        if not self.room():
            await self._wait(front=False)

    def room(self) -> bool:
        """The check of :meth:`tick` without a coroutine: True when the caller may go on
        at once (the slice lasts), False when it must ``await pacer.wait()``."""
        if self._deadline is None:
            self._start()
            return True
        return not self._waiters and time.perf_counter() < self._deadline

    async def wait(self) -> None:
        """Wait for a later iteration, as :meth:`tick` does once :meth:`room` said no."""
        await self._wait(front=False)

    async def run_sync(self, fn: Callable[[T], R], arg: T) -> R:
        """``fn(arg)`` in a worker thread, one such call at a time.

        For work that holds the GIL for milliseconds (decoding a frame of megabytes):
        beside the loop it only takes the GIL in turns with it, but several at once
        would each take turns too and hold the loop longer than running them inline.
        """
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(fn, arg, limiter=self._threads)

    async def _wait(self, *, front: bool) -> None:
        while True:
            waiter = asyncio.get_running_loop().create_future()
            if front:  # ahead of the line, behind others let go too early (their order)
                self._waiters.insert(self._requeued, waiter)
                self._requeued += 1
            else:
                self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                self._forget(waiter)
                raise
            # let go: go on if the slice has room, else back to the front of the line
            if self._deadline is None:
                self._start()
                return
            if time.perf_counter() < self._deadline:
                return
            front = True

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:  # already let go: pass the turn on
            self._let_go(1)

    def _start(self) -> None:
        self._deadline = time.perf_counter() + self.slice
        # runs at the start of the next iteration: a slice never spans two
        asyncio.get_running_loop().call_soon(self._end)

    def _end(self) -> None:
        self._deadline = None
        if not self._waiters:
            return
        if self._requeued:
            self._release = max(1, self._release // 2)
        else:
            self._release = min(_MAX_RELEASE, self._release * 2)
        self._requeued = 0
        self._let_go(self._release)

    def _let_go(self, count: int) -> None:
        waiters = self._waiters
        while count > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1
