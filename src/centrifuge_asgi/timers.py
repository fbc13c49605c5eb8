"""One shared timer for the whole node, instead of a task or timer per connection.

Pings, pong deadlines, stale-connection and expiry checks of every connection are
entries in one heap, served by a single task owned by the node's task group.
Callbacks are synchronous and must be quick; they schedule async work elsewhere.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable

import anyio

log = logging.getLogger(__name__)


def _noop() -> None:
    return None


class Timer:
    """A scheduled callback; :meth:`cancel` makes it a no-op and drops the callback
    (so a cancelled timer does not keep its connection alive until the deadline)."""

    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], object]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _noop


class Scheduler:
    """A min-heap of timers served by :meth:`run` (run it inside a task group)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._wakeup = anyio.Event()

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` after ``delay`` seconds (an infinite delay never fires)."""
        timer = Timer(self.clock() + delay, callback)
        if math.isinf(delay):
            timer.cancel()
            return timer
        if len(self._heap) > 1024 and len(self._heap) % 1024 == 0:
            self._compact()
        earliest = self._heap[0][0] if self._heap else math.inf
        heapq.heappush(self._heap, (timer.deadline, next(self._seq), timer))
        if timer.deadline < earliest:
            self._wakeup.set()
        return timer

    def __len__(self) -> int:
        return len(self._heap)

    def _compact(self) -> None:
        """Drop cancelled entries when they make up more than half of the heap."""
        live = [entry for entry in self._heap if not entry[2].cancelled]
        if len(live) * 2 < len(self._heap):
            heapq.heapify(live)
            self._heap = live

    def fire_due(self) -> float:
        """Fire every due timer; return seconds until the next one (inf when none)."""
        now = self.clock()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                continue
            try:
                timer.callback()
            except Exception:
                log.exception("timer callback failed")
        return heap[0][0] - now if heap else math.inf

    async def run(self) -> None:
        """Serve timers forever (cancel the surrounding scope to stop)."""
        while True:
            delay = self.fire_due()
            self._wakeup = anyio.Event()
            with anyio.move_on_after(min(delay, 3600.0)):
                await self._wakeup.wait()


class WriteWatchdog:
    """Deadlines of the sends in progress, checked by one periodic sweep of the node.

    A timeout scope per send (``anyio.fail_after``) costs more than the send itself on
    the fan-out path; a writer instead registers before each send and unregisters after,
    and :meth:`sweep` (run every second) expires the ones that hang.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._writing: dict[object, tuple[float, Callable[[], object]]] = {}

    def start(self, key: object, timeout: float, on_expire: Callable[[], object]) -> None:
        self._writing[key] = (self.clock() + timeout, on_expire)

    def done(self, key: object) -> None:
        self._writing.pop(key, None)

    def sweep(self) -> None:
        now = self.clock()
        for key, (deadline, on_expire) in list(self._writing.items()):
            if now >= deadline:
                del self._writing[key]
                try:
                    on_expire()
                except Exception:
                    log.exception("write timeout handler failed")
