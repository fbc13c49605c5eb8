"""Serving a session as a streaming HTTP response (HTTP-streaming, SSE, uni variants).

:func:`serve_stream` turns a session's outbox into a chunked response body (one write per
batch) until the session closes or the client goes away; :class:`StreamFormat` says how
each transport frames its messages. Request handling lives in :mod:`.http_common`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ..codes import DisconnectCode
from .http_common import Headers, Receive, Scope, Send

if TYPE_CHECKING:
    from ..session import Session

WRITE_TIMEOUT = 10.0  # per write; Centrifugo resets a 10 s write deadline around each
FINISH_TIMEOUT = 5.0  # bound for releasing a session after its stream ended

NO_CACHE: Headers = [
    (b"cache-control", b"private, no-cache, no-store, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expire", b"0"),
    (b"x-accel-buffering", b"no"),
]


# ------------------------------------------------------------------------- framing


def json_lines(batch: list[bytes]) -> bytes:
    """HTTP-streaming JSON: every message on its own ``\\n``-terminated line."""
    return b"".join(m + b"\n" for m in batch)


def sse_events(batch: list[bytes]) -> bytes:
    """Server-sent events: one ``data:`` event per message."""
    return b"".join(b"data: " + m + b"\n\n" for m in batch)


@dataclass(frozen=True, slots=True)
class StreamFormat:
    """How one transport writes a stream: its Content-Type, first bytes and framing."""

    content_type: bytes
    frame: Callable[[list[bytes]], bytes]
    preamble: bytes = b""


SSE = StreamFormat(b"text/event-stream; charset=utf-8", sse_events, preamble=b"\r\n")


def stream_headers(scope: Scope, fmt: StreamFormat, extra: Headers) -> Headers:
    headers: Headers = [(b"content-type", fmt.content_type), *NO_CACHE, *extra]
    if scope.get("http_version") == "1.1":
        headers.append((b"connection", b"keep-alive"))
    return headers


async def serve_stream(
    session: Session,
    scope: Scope,
    receive: Receive,
    send: Send,
    fmt: StreamFormat,
    extra_headers: Headers,
    drive: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Stream ``session``'s outbox as a 200 response until the session closes.

    ``drive`` (optional) feeds the session with commands while the stream is open. The
    client vanishing closes the session (3000); the session is always finished.
    """
    peer_gone = False

    async def watch_disconnect() -> None:
        nonlocal peer_gone
        while (await receive())["type"] != "http.disconnect":
            pass
        peer_gone = True
        session.transport_closed()

    async def write(data: bytes, more: bool = True) -> bool:
        """One body chunk; False (and the session closed) when it cannot be written."""
        try:
            with anyio.fail_after(WRITE_TIMEOUT):
                await send({"type": "http.response.body", "body": data, "more_body": more})
        except TimeoutError:
            session.disconnect(DisconnectCode.WRITE_ERROR)
            return False
        except OSError:
            session.transport_closed()
            return False
        return True

    async def pump() -> bool:
        """Write every outbox batch until the session closes; False on a failed write."""
        while (batch := await session.outbox.take_all()) is not None:
            data = fmt.frame([m for m in batch if m])
            if data and not await write(data):
                return False
        return True

    try:
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": stream_headers(scope, fmt, extra_headers),
        }
        with anyio.fail_after(WRITE_TIMEOUT):
            await send(start)
        if fmt.preamble and not await write(fmt.preamble):
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_disconnect)
            if drive is not None:
                tg.start_soon(drive)
            completed = await pump()
            tg.cancel_scope.cancel()
        if completed and not peer_gone:
            await write(b"", more=False)
    except (TimeoutError, OSError):
        session.transport_closed()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(FINISH_TIMEOUT):
            await session.finish()
