"""The write side of one WebSocket connection, driven by the node's flusher.

The :class:`FrameWriter` is the session's outbox itself (an
:class:`~centrifuge_asgi.outbox.Outbox`: one object per connection, not two). When
messages land in it, it is scheduled on the node's
:class:`~centrifuge_asgi.flusher.Flusher`, which calls :meth:`FrameWriter.flush`:
everything queued becomes one frame (newline-separated JSON in a text frame, or
length-delimited Protobuf in a binary frame), and the ASGI ``send`` runs inline, in a copy
of the connection's context (in the writing task's own when the connection's context holds
no variable). With uvicorn a send completes at once unless the socket
stopped draining; such a send is finished by the task that started it
(:meth:`FrameWriter.complete`, under the write timeout) while later messages queue.

Once the session closes, the writer sends what is left and the close frame, then stops
the connection's reader: at once when it waits for a frame, or after a grace period when
a command is still running.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import TYPE_CHECKING, Any

from ..bitflag import BitFlag
from ..codes import DisconnectCode
from ..flusher import Resumed, step
from ..outbox import Outbox
from .http_common import Send

if TYPE_CHECKING:
    from ..node import Node
    from ..session import Session
    from ..timers import Timer

log = logging.getLogger("centrifuge_asgi.transports")

COMMAND_GRACE = 5.0  # seconds an in-flight command may run on after the close frame
# FrameWriter._flags
_PEER_GONE = 1  # the client closed, or a write failed
_READER_DONE = 2  # the reader ended (finish() runs)
_READER_CANCELLED = 4  # the writer cancelled the reader (_cancel_reader)
_DONE = 8  # the close frame was written, or nothing more can be
_READER_ENDED = _READER_DONE | _READER_CANCELLED


class FrameWriter(Outbox):
    """One session's outbox, and the frames out of it (see the module docstring).

    Made before its session, which takes it as its outbox (``Node.create_session``);
    ``session`` is set right after.
    """

    __slots__ = (
        "_context",
        "_flags",
        "_grace",
        "_pending",
        "node",
        "reader_idle",
        "reader_task",
        "send",
        "session",
    )

    session: Session

    def __init__(self, send: Send, node: Node) -> None:
        # the Outbox's state, set here rather than through its __init__ (one call less
        # per connection)
        self.max_bytes = node.config.client.queue_max_size
        self.size = 0
        self._items = None
        self._closed = False
        self._listener = self  # the writer itself: no bound method per connection
        self.send = send
        self.node = node
        self.reader_task: asyncio.Task[Any] | None = asyncio.current_task()
        self.reader_idle = False  # the reader waits for the next frame
        self._flags = 0  # _DONE, _PEER_GONE, _READER_DONE, _READER_CANCELLED: one slot
        self._pending: asyncio.Future[None] | None = None  # a stalled send being finished
        self._grace: Timer | None = None
        # Sends see the connection's context. Where it holds no variable (as under
        # uvicorn) they run in the writing task's own instead: no copy kept per connection.
        context = contextvars.copy_context()
        self._context = context if len(context) else None

    def __call__(self) -> None:
        """The outbox's listener: messages landed in it, or it closed."""
        self.node.flusher.schedule(self)

    # ---------------------------------------------------------------------- writing

    def flush(self) -> Resumed | None:
        """Send what is queued (then the close frame once the session closed), inline.

        A send that suspends is returned unfinished: the calling task must await
        :meth:`complete` with it. Nothing else is written to this connection meanwhile.
        """
        if self._pending is not None:
            return None  # the task finishing a stalled send writes the rest
        stalled = self._send_queued()
        if stalled is not None:
            self._pending = asyncio.get_running_loop().create_future()
        return stalled

    def _send_queued(self) -> Resumed | None:
        """Send frames inline until one stalls (returned, unfinished) or none is left."""
        while (message := self._next_message()) is not None:
            try:
                stalled = step(self.send(message), self._context)
            except asyncio.CancelledError:
                # raised by the send itself before it suspended: nobody cancelled this
                # task (a cancellation only lands where the task suspends)
                self._failed(RuntimeError("send raised CancelledError"))
                return None
            except Exception as exc:
                self._failed(exc)
                return None
            if stalled is not None:
                return stalled
        if self._flags & _DONE:
            self._stop_reader()
        return None

    def _next_message(self) -> dict[str, Any] | None:
        """The next ASGI message to send: a frame of everything queued, or the close."""
        if self._flags & _DONE:
            return None
        session = self.session
        batch = self.drain()
        if batch:
            codec = session.codec
            frame = codec.join(batch)
            if codec.binary:
                return {"type": "websocket.send", "bytes": frame}
            try:
                return {"type": "websocket.send", "text": self.node.flusher.decode(frame)}
            except UnicodeDecodeError:  # binary payload (e.g. published by a Protobuf client)
                session.disconnect(DisconnectCode.INAPPROPRIATE_PROTOCOL)
        if not self._closed:
            return None
        self._flags |= _DONE
        if self._flags & _PEER_GONE:
            return None
        code, reason = session.close_code, session.close_reason
        return {"type": "websocket.close", "code": code, "reason": reason}

    async def complete(self, stalled: Resumed) -> None:
        """Finish a stalled send, then send what queued meanwhile (in the calling task).

        Each send is bounded by ``websocket.write_timeout``; on expiry the connection is
        closed with 3009 and nothing more is written to it. The timeout cancels this task
        natively rather than through a cancel scope: a scope entered here would not nest
        with the ones the server's ``send`` may have entered before it stalled.
        """
        watchdog = self.node.write_watchdog
        timeout = self.node.config.websocket.write_timeout or 1.0
        task = asyncio.current_task()
        assert task is not None
        expirations = 0  # cancellations this method asked for (each one settled below)

        def expire() -> None:
            nonlocal expirations
            expirations += 1
            task.cancel()
            # armed again: a send that swallows the cancellation is cancelled again at its
            # next deadline, or by finish() (``write_watchdog.expire``) once the reader ended
            watchdog.start(self, timeout, expire)

        try:
            try:
                next_stalled: Resumed | None = stalled
                while next_stalled is not None:
                    watchdog.start(self, timeout, expire)
                    await next_stalled
                    next_stalled = self._send_queued()
            finally:
                watchdog.done(self)
                for _ in range(expirations):
                    task.uncancel()
            if expirations:  # the send swallowed the cancellation, but it did time out
                self._failed(TimeoutError("write timed out"))
        except asyncio.CancelledError:
            if task.cancelling():
                raise  # someone else cancels this task (the node is stopping)
            # ours (the write timeout), or raised by the send on its own
            self._failed(
                TimeoutError("write timed out")
                if expirations
                else RuntimeError("send raised CancelledError")
            )
        except Exception as exc:
            self._failed(exc)
        finally:
            self._resolve_pending()
        if self._flags & _DONE:
            self._stop_reader()

    def _resolve_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.set_result(None)

    def _failed(self, exc: Exception) -> None:
        """A write failed: nothing more is written to this connection."""
        self._flags |= _PEER_GONE | _DONE
        if isinstance(exc, TimeoutError):
            self.session.disconnect(DisconnectCode.WRITE_ERROR)
        elif isinstance(exc, OSError):
            self.session.transport_closed()
        else:
            log.warning("websocket write failed: %r", exc)
            self.session.disconnect(DisconnectCode.WRITE_ERROR)
        self._stop_reader()

    # ------------------------------------------------------------------ the reader

    # True when _cancel_reader cancelled the reader task (not someone else)
    reader_cancelled = BitFlag(_READER_CANCELLED, "_flags")
    done = BitFlag(_DONE, "_flags")  # the close frame was written, or nothing more can be
    # the client closed, or a write failed: nothing more can be written
    peer_gone = BitFlag(_PEER_GONE, "_flags", read_only=False)

    def _stop_reader(self) -> None:
        if self._flags & _READER_ENDED:
            return
        if self.reader_idle:
            self._cancel_reader()
        elif self._grace is None:  # a command is running: give it time to finish
            self._grace = self.node.scheduler.call_later(COMMAND_GRACE, self._cancel_reader)

    def _cancel_reader(self) -> None:
        if self._flags & _READER_ENDED or self.reader_task is None:
            return
        self._flags |= _READER_CANCELLED
        self.reader_task.cancel()

    async def finish(self) -> None:
        """Once the reader ended: send what is left and the close frame (bounded)."""
        self._flags |= _READER_DONE
        if self._grace is not None:
            self._grace.cancel()
        if not self.session.closing:  # the reader failed: the server closes the socket
            self._flags |= _DONE | _PEER_GONE
        elif (stalled := self.flush()) is not None:
            await self.complete(stalled)
            return
        pending = self._pending
        if pending is None:
            return
        # another task is finishing a stalled send: wait for it, then stop it if needed
        timeout = self.node.config.websocket.write_timeout or 1.0
        finished, _ = await asyncio.wait((pending,), timeout=timeout + 1.0)
        if not finished:  # complete() waits in that send: expire it (its watchdog entry)
            self.node.write_watchdog.expire(self)
            await asyncio.wait((pending,), timeout=1.0)
