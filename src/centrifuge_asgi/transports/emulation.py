"""Bidirectional emulation: streams opened by HTTP-streaming or SSE, commands via ``/emulation``.

A stream (see :mod:`.http_stream`, :mod:`.sse`) carries the connect command in its
request and then only receives. Later commands arrive as ``POST /emulation`` with
``{session, node, data}``; they are queued to the stream that holds ``session`` and run
there in order, and their replies appear on the stream. The answer is 204.

Routing across processes: every stream registers in ``node.registry.emulation_streams``
under its session id, and its connect reply names the node (``node.node_id``). A request
naming another node goes to ``node.cluster.forward_emulation(node_id, session_id, data)``,
a request addressed to that node on the cluster's request/reply primitive; the receiving
node hands the frame to its stream with ``node.registry.feed_emulation`` (what
:func:`feed_local` does here) and answers whether it was queued. A node that the engine
knows is not there (the memory engine; no listener in Redis) answers 404; a stream whose
queue stays full, or a node that does not answer in time, 503, as for a local stream.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import anyio
import msgspec
from starlette.routing import BaseRoute, Route

from ..protocol.codec import ProtocolError
from ..protocol.json_codec import DECODE_ERRORS
from ..protocol.protobuf_codec import decode_emulation_request
from ..session import transport_info
from .http_common import (
    OCTET_STREAM,
    Headers,
    Receive,
    Scope,
    Send,
    accept_request,
    content_type,
    respond,
)
from .streaming import StreamFormat, serve_stream

if TYPE_CHECKING:
    from ..node import Node
    from ..protocol.codec import Codec
    from ..session import Session

log = logging.getLogger("centrifuge_asgi.emulation")

INBOX_FRAMES = 16  # emulation frames queued per stream before senders wait
FEED_TIMEOUT = 5.0  # how long an emulation request waits for room in the queue


class EmulationStream:
    """The receiving half of one emulated connection: a bounded queue of frames."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[bytes](INBOX_FRAMES)

    async def feed(self, frame: bytes) -> bool:
        """Queue a frame (TimeoutError when the queue stays full); False once ended."""
        try:
            with anyio.fail_after(FEED_TIMEOUT):
                await self._send.send(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        return True

    async def drive(self, session: Session, first_frame: bytes) -> None:
        """Run the stream's first frame, then every queued frame, in order."""
        async with session.command_tasks():
            await session.handle_frame(first_frame)
            async with self._receive:
                async for frame in self._receive:
                    await session.handle_frame(frame)

    def close(self) -> None:
        self._send.close()
        self._receive.close()


async def serve_emulated(
    node: Node,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    name: str,
    codec: Codec,
    fmt: StreamFormat,
    first_frame: bytes,
    headers: Mapping[str, str],
    extra_headers: Headers,
) -> None:
    """Open an emulated connection whose first commands are ``first_frame``."""
    session = node.create_session(transport_info(name, emulation=True, codec=codec), headers)
    stream = EmulationStream()
    index = node.registry.emulation_streams

    index[session.session_id] = stream
    try:
        await serve_stream(
            session,
            scope,
            receive,
            send,
            fmt,
            extra_headers,
            functools.partial(stream.drive, session, first_frame),
        )
    finally:
        index.pop(session.session_id, None)
        stream.close()


async def feed_local(node: Node, session_id: str, data: bytes) -> bool:
    """Hand a frame to a stream held by this node; False when there is none."""
    return await node.registry.feed_emulation(session_id, data)


async def deliver(node: Node, node_id: str, session_id: str, data: bytes) -> int:
    """Route one emulation frame; returns the HTTP status for the request."""
    if node_id == node.node_id:
        try:
            if not await feed_local(node, session_id, data):
                log.debug("emulation frame for unknown session %s dropped", session_id)
        except TimeoutError:
            return 503
        return 204
    if node_id:
        wait = FEED_TIMEOUT + 1.0  # the other node waits up to FEED_TIMEOUT for room
        try:
            forwarded = await node.cluster.forward_emulation(node_id, session_id, data, wait)
        except TimeoutError:
            return 503
        return 204 if forwarded else 404
    return 404


class _JsonRequest(msgspec.Struct):
    session: str = ""
    node: str = ""
    data: str = ""


_json_request = msgspec.json.Decoder(_JsonRequest)


def parse_request(body: bytes, protobuf: bool) -> tuple[str, str, bytes] | None:
    """``(node, session, data)`` of an emulation request, or None when unparsable.

    JSON: ``{"session", "node", "data"}`` with the commands as a string. Protobuf: an
    ``EmulationRequest`` (see :func:`~..protocol.protobuf_codec.decode_emulation_request`).
    """
    if protobuf:
        try:
            return decode_emulation_request(body)
        except ProtocolError:
            return None
    try:
        req = _json_request.decode(body)
    except DECODE_ERRORS:
        return None
    return req.node, req.session, req.data.encode()


class EmulationEndpoint:
    """``POST /emulation``: 204; 400 unparsable, 403 Origin refused, 404 unknown node, 413
    too large. No admission beyond the Origin: the connections it feeds already exist."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self.node
        limit = node.config.emulation.max_request_body_size
        req = await accept_request(node, scope, receive, send, limit=limit, connection=False)
        if req is None:
            return
        parsed = parse_request(req.body, content_type(req.headers) == OCTET_STREAM)
        if parsed is None:
            await respond(send, 400, req.cors)
            return
        node_id, session_id, data = parsed
        await respond(send, await deliver(node, node_id, session_id, data), req.cors)


def routes(node: Node) -> list[BaseRoute]:
    """``/emulation`` when HTTP-streaming or SSE is enabled (their own routes are theirs)."""
    config = node.config
    if not (config.http_stream.enabled or config.sse.enabled):
        return []
    return [Route(config.emulation.handler_prefix or "/emulation", EmulationEndpoint(node))]


__all__ = [
    "EmulationStream",
    "deliver",
    "feed_local",
    "parse_request",
    "routes",
    "serve_emulated",
]
