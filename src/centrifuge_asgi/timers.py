"""One shared timer for the whole node, instead of a task or timer per connection.

Pings, pong deadlines, stale-connection and expiry checks of every connection are
entries in one heap, served by a single task owned by the node's task group.
Callbacks are synchronous and must be quick; they schedule async work elsewhere.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import anyio

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Hashable)


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
        # ``self._heap`` is read anew each time round: a callback's ``call_later`` may
        # compact it into a new list, and a stale reference would fire timers twice.
        while self._heap and self._heap[0][0] <= now:
            _, _, timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            try:
                timer.callback()
            except Exception:
                log.exception("timer callback failed")
        return self._heap[0][0] - now if self._heap else math.inf

    async def run(self) -> None:
        """Serve timers forever (cancel the surrounding scope to stop)."""
        while True:
            delay = self.fire_due()
            self._wakeup = anyio.Event()
            with anyio.move_on_after(min(delay, 3600.0)):
                await self._wakeup.wait()


class Wheel(Generic[T]):
    """Deadlines of many objects at a fixed resolution, with no object per entry.

    Items due in the same tick share one dict and one :class:`Scheduler` timer, so a
    connection's ping or stale-connection check costs two dict entries instead of a
    :class:`Timer`, a heap entry and a bound method: fewer long-lived objects for the
    garbage collector to walk while thousands of clients connect. An item fires at
    most ``resolution`` seconds late, never early, by ``fire(item)``.
    """

    def __init__(
        self, scheduler: Scheduler, fire: Callable[[T], object], resolution: float
    ) -> None:
        self.scheduler = scheduler
        self.fire = fire
        self.resolution = resolution
        self._ticks: dict[int, dict[T, None]] = {}
        # item → the dict of its tick in _ticks (shared by the tick's items, where the
        # tick's number would be an int object per item)
        self._tick_of: dict[T, dict[T, None]] = {}

    def add(self, item: T, delay: float) -> None:
        """Fire ``item`` after ``delay`` seconds, replacing its earlier deadline (a delay
        that is not positive or finite means none)."""
        earlier = self._tick_of.pop(item, None)  # discard(item), without the call
        if earlier is not None:
            earlier.pop(item, None)
        if not 0 < delay < math.inf:
            return
        now = self.scheduler.clock()
        tick = math.ceil((now + delay) / self.resolution)
        items = self._ticks.get(tick)
        if items is None:
            items = self._ticks[tick] = {}
            self.scheduler.call_later(
                tick * self.resolution - now, functools.partial(self._due, tick)
            )
        items[item] = None
        self._tick_of[item] = items

    def discard(self, item: T) -> None:
        items = self._tick_of.pop(item, None)
        if items is not None:
            items.pop(item, None)

    def __len__(self) -> int:
        return len(self._tick_of)

    def __contains__(self, item: object) -> bool:
        return item in self._tick_of

    def _due(self, tick: int) -> None:
        items = self._ticks.pop(tick, None)
        if not items:
            return
        # a copy: a callback may discard or move other items of this tick (they leave
        # this dict), and those are skipped
        for item in list(items):
            if self._tick_of.get(item) is not items:
                continue  # discarded or moved by an earlier callback of this tick
            del self._tick_of[item]
            try:
                self.fire(item)
            except Exception:
                log.exception("wheel callback failed")


def wheel_resolution(delay: float) -> float:
    """A resolution for deadlines of about ``delay``: a power of two, at most 1 s and at
    most an eighth of ``delay`` (exact in binary, so ticks land on round clock values)."""
    resolution = 1.0
    while delay > 0 and resolution > delay / 8 and resolution > 2**-10:
        resolution /= 2
    return resolution


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

    def expire(self, key: object) -> None:
        """Expire ``key``'s send now, as a sweep past its deadline would (nothing when
        it is not registered: finished, or expired already)."""
        entry = self._writing.pop(key, None)
        if entry is not None:
            entry[1]()

    def sweep(self) -> None:
        now = self.clock()
        for key, (deadline, on_expire) in list(self._writing.items()):
            if now >= deadline:
                del self._writing[key]
                try:
                    on_expire()
                except Exception:
                    log.exception("write timeout handler failed")
