"""A token bucket, the rate limiter of ``client.connection_rate_limit`` and of each
bucket of ``client.rate_limit`` (:mod:`.op_limits`).

Sans-I/O: it reads a clock it is given and never sleeps. Centrifugo builds its connection
limiter as Go's ``rate.NewLimiter(rate.Every(time.Second), N)``: a bucket of ``N`` tokens
that starts full and gains one token per second, each new connection taking one.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``capacity`` tokens at most, ``refill`` tokens per second; starts full.

    :meth:`allow` reads the bucket's clock; :meth:`fill` and :meth:`take` are given the
    time instead (``op_limits`` keeps one clock for many buckets). A clock that steps
    back adds nothing, and the bucket then counts from the earlier time, as Go's
    ``rate.Limiter`` does.
    """

    __slots__ = ("_clock", "_full", "_stamp", "_tokens", "capacity", "refill")

    def __init__(
        self,
        capacity: float,
        refill: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        now: float | None = None,
    ) -> None:
        if capacity < 1 or refill <= 0:
            raise ValueError(f"capacity must be >= 1 and refill > 0, got {capacity}, {refill}")
        self.capacity = capacity
        self.refill = refill
        self._clock = clock
        self._full = self._tokens = float(capacity)
        self._stamp = clock() if now is None else now

    def allow(self) -> bool:
        """Take one token if there is one (True), else leave the bucket as it is."""
        return self.take(self._clock())

    def fill(self, now: float) -> bool:
        """Add the tokens regained up to ``now``; whether there is one to take."""
        elapsed = now - self._stamp
        self._stamp = now
        if elapsed > 0:
            tokens = self._tokens + elapsed * self.refill
            self._tokens = self._full if tokens > self._full else tokens
        return self._tokens >= 1.0

    def take(self, now: float) -> bool:
        """:meth:`allow` at the time ``now``."""
        if self.fill(now):
            self._tokens -= 1.0
            return True
        return False


def connection_rate_limiter(limit: int) -> TokenBucket | None:
    """Centrifugo's limiter for ``client.connection_rate_limit`` (None when 0 or less)."""
    return TokenBucket(limit, 1.0) if limit > 0 else None


__all__ = ["TokenBucket", "connection_rate_limiter"]
