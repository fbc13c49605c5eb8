"""The write side of one WebSocket connection, driven by the node's flusher.

When messages land in the session's outbox, the :class:`FrameWriter` is scheduled on the
node's :class:`~centrifuge_asgi.flusher.Flusher`, which calls :meth:`FrameWriter.flush`:
everything queued becomes one frame (newline-separated JSON in a text frame, or
length-delimited Protobuf in a binary frame), and the ASGI ``send`` runs inline. With
uvicorn a send completes at once unless the socket stopped draining; such a send is
finished by a task of its own, under the write timeout, while later messages keep queueing.

Once the session closes, the writer sends what is left and the close frame, then stops
the connection's reader: at once when it waits for a frame, or after a grace period when
a command is still running.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import anyio

from ..codes import DisconnectCode
from ..flusher import Resumed, step
from .http_common import Send

if TYPE_CHECKING:
    from ..node import Node
    from ..session import Session
    from ..timers import Timer

log = logging.getLogger("centrifuge_asgi.transports")

COMMAND_GRACE = 5.0  # seconds an in-flight command may run on after the close frame


class _LastText:
    """``bytes.decode`` remembering its last result: a fan-out hands the same encoded
    publication object to every subscriber, so it is decoded once, not per connection.

    The pair is replaced in one assignment, so event loops in other threads never see a
    frame matched with another frame's text.
    """

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = (b"", "")

    def __call__(self, frame: bytes) -> str:
        last = self.last
        if last[0] is frame:
            return last[1]
        text = frame.decode()
        self.last = (frame, text)
        return text


_as_text = _LastText()


class FrameWriter:
    """Frames out of one session's outbox (see the module docstring)."""

    __slots__ = (
        "_grace",
        "_pending",
        "_reader_cancelled",
        "done",
        "node",
        "peer_gone",
        "reader_done",
        "reader_idle",
        "reader_task",
        "send",
        "session",
    )

    def __init__(self, session: Session, send: Send, node: Node) -> None:
        self.session = session
        self.send = send
        self.node = node
        self.done = False  # the close frame was written, or nothing more can be
        self.peer_gone = False  # the client closed, or a write failed
        self.reader_task: asyncio.Task[Any] | None = asyncio.current_task()
        self.reader_idle = False  # the reader waits for the next frame
        self.reader_done = False
        self._reader_cancelled = False
        self._pending: asyncio.Future[None] | None = None  # a suspended send being finished
        self._grace: Timer | None = None
        session.outbox.listen(self._on_outbox)

    def _on_outbox(self) -> None:
        self.node.flusher.schedule(self)

    # ---------------------------------------------------------------------- writing

    def flush(self) -> None:
        """Send what is queued (then the close frame once the session closed), inline."""
        if self._pending is not None:
            return  # the task finishing a suspended send writes the rest
        while (message := self._next_message()) is not None:
            try:
                resumed = step(self.send(message))
            except Exception as exc:
                self._failed(exc)
                return
            if resumed is not None:
                self._finish_later(resumed)
                return
        if self.done:
            self._stop_reader()

    def _next_message(self) -> dict[str, Any] | None:
        """The next ASGI message to send: a frame of everything queued, or the close."""
        if self.done:
            return None
        session = self.session
        outbox = session.outbox
        batch = outbox.drain()
        if batch:
            codec = session.codec
            frame = codec.join(batch)
            if codec.binary:
                return {"type": "websocket.send", "bytes": frame}
            try:
                return {"type": "websocket.send", "text": _as_text(frame)}
            except UnicodeDecodeError:  # binary payload (e.g. published by a Protobuf client)
                session.disconnect(DisconnectCode.INAPPROPRIATE_PROTOCOL)
        if not outbox.closed:
            return None
        self.done = True
        if self.peer_gone:
            return None
        code, reason = session.close_code, session.close_reason
        return {"type": "websocket.close", "code": code, "reason": reason}

    def _finish_later(self, resumed: Resumed) -> None:
        self._pending = asyncio.get_running_loop().create_future()
        if not self.node.spawn(self._finish, resumed):  # the node is not running
            resumed.coro.close()
            self._resolve_pending()
            self._failed(RuntimeError("node not running"))

    async def _finish(self, resumed: Resumed) -> None:
        """Run a suspended send to its end, then send what queued meanwhile."""
        watchdog = self.node.write_watchdog
        timeout = self.node.config.websocket.write_timeout or 1.0
        try:
            with anyio.CancelScope() as scope:
                watchdog.start(self, timeout, scope.cancel)
                try:
                    await resumed
                    while (message := self._next_message()) is not None:
                        watchdog.start(self, timeout, scope.cancel)
                        await self.send(message)
                except Exception as exc:
                    self._failed(exc)
                finally:
                    watchdog.done(self)
            if scope.cancelled_caught:
                self._failed(TimeoutError("write timed out"))
        finally:
            self._resolve_pending()
        if self.done:
            self._stop_reader()

    def _resolve_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.set_result(None)

    def _failed(self, exc: Exception) -> None:
        """A write failed: nothing more is written to this connection."""
        self.peer_gone = True
        self.done = True
        if isinstance(exc, TimeoutError):
            self.session.disconnect(DisconnectCode.WRITE_ERROR)
        elif isinstance(exc, OSError):
            self.session.transport_closed()
        else:
            log.warning("websocket write failed: %r", exc)
            self.session.disconnect(DisconnectCode.WRITE_ERROR)
        self._stop_reader()

    # ------------------------------------------------------------------ the reader

    @property
    def reader_cancelled(self) -> bool:
        """True when :meth:`_cancel_reader` cancelled the reader task (not someone else)."""
        return self._reader_cancelled

    def _stop_reader(self) -> None:
        if self.reader_done or self._reader_cancelled:
            return
        if self.reader_idle:
            self._cancel_reader()
        elif self._grace is None:  # a command is running: give it time to finish
            self._grace = self.node.scheduler.call_later(COMMAND_GRACE, self._cancel_reader)

    def _cancel_reader(self) -> None:
        if self.reader_done or self._reader_cancelled or self.reader_task is None:
            return
        self._reader_cancelled = True
        self.reader_task.cancel()

    async def finish(self) -> None:
        """Once the reader ended: send what is left and the close frame (bounded)."""
        self.reader_done = True
        if self._grace is not None:
            self._grace.cancel()
        if not self.session.closing:  # the reader failed: the server closes the socket
            self.done = self.peer_gone = True
            return
        self.flush()
        pending = self._pending
        if pending is not None:
            timeout = self.node.config.websocket.write_timeout or 1.0
            await asyncio.wait((pending,), timeout=timeout + 1.0)
