"""A token bucket, the rate limiter of ``client.connection_rate_limit``.

Sans-I/O: it reads a clock it is given and never sleeps. Centrifugo builds its connection
limiter as Go's ``rate.NewLimiter(rate.Every(time.Second), N)``: a bucket of ``N`` tokens
that starts full and gains one token per second, each new connection taking one.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``capacity`` tokens at most, ``refill`` tokens per second; starts full."""

    __slots__ = ("_clock", "_stamp", "_tokens", "capacity", "refill")

    def __init__(
        self,
        capacity: int,
        refill: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or refill <= 0:
            raise ValueError(f"capacity must be >= 1 and refill > 0, got {capacity}, {refill}")
        self.capacity = capacity
        self.refill = refill
        self._clock = clock
        self._tokens = float(capacity)
        self._stamp = clock()

    def allow(self) -> bool:
        """Take one token if there is one (True), else leave the bucket as it is."""
        now = self._clock()
        elapsed = now - self._stamp
        self._stamp = now
        if elapsed > 0:
            self._tokens = min(float(self.capacity), self._tokens + elapsed * self.refill)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def connection_rate_limiter(limit: int) -> TokenBucket | None:
    """Centrifugo's limiter for ``client.connection_rate_limit`` (None when 0 or less)."""
    return TokenBucket(limit, 1.0) if limit > 0 else None


__all__ = ["TokenBucket", "connection_rate_limiter"]
