"""A result that arrives later: what a pipelined publication hands back at once.

:class:`Pending` is set exactly once (a value or an exception) by whoever does the
work; callers either ``await pending.wait()`` or register a synchronous callback that
runs when it is set. It holds no task and no loop reference until someone waits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio

__all__ = ["Pending"]

T = TypeVar("T")
log = logging.getLogger("centrifuge_asgi.pending")


class Pending(Generic[T]):
    """One value or one error, set once; ``wait()`` returns or raises it."""

    __slots__ = ("_callbacks", "_done", "_error", "_event", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: T | None = None
        self._error: BaseException | None = None
        self._event: anyio.Event | None = None
        self._callbacks: list[Callable[[Pending[T]], None]] | None = None

    @classmethod
    def of(cls, value: T) -> Pending[T]:
        """An already settled result."""
        pending: Pending[T] = cls()
        pending.set_result(value)
        return pending

    def done(self) -> bool:
        return self._done

    def set_result(self, value: T) -> None:
        self._value = value
        self._settle()

    def set_error(self, error: BaseException) -> None:
        self._error = error
        self._settle()

    def _settle(self) -> None:
        if self._done:
            raise RuntimeError("Pending settled twice")
        self._done = True
        if self._event is not None:
            self._event.set()
        callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:  # one caller's bug must not stop whoever settles it
                log.exception("callback of a pending result failed")

    def add_done_callback(self, callback: Callable[[Pending[T]], None]) -> None:
        """Call ``callback(self)`` once settled (at once when it already is)."""
        if self._done:
            callback(self)
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def result(self) -> T:
        """The value, or raise the error; only once settled."""
        if not self._done:
            raise RuntimeError("Pending not settled yet")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    async def settled(self) -> None:
        """Wait until settled, without raising its error."""
        if not self._done:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()

    async def wait(self) -> T:
        if not self._done:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()
        return self.result()
