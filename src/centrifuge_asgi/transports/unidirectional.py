"""Unidirectional transports: ``uni_sse``, ``uni_http_stream`` (here) and ``uni_websocket``.

The client sends one bare ``ConnectRequest`` (JSON) when it connects and then only
listens. The server sends bare Push objects: a Connect push first, then publications,
join/leave, (un)subscribe, messages and finally a Disconnect push; ``{}`` is a ping.
Subscriptions are server-side only (token, personal channel, handler, or the request's
``subs`` keys where the namespace permits); ``subs`` also carries recovery positions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import anyio
import msgspec
from starlette.routing import BaseRoute, Route

from ..protocol.codec import InappropriateProtocol, ProtocolError
from ..protocol.json_codec import DECODE_ERRORS, one_line, without_undeliverable
from ..protocol.messages import Command, ConnectRequest, Reply
from ..session import Session, transport_info
from .http_common import CONNECT_PARAM, Receive, Scope, Send, accept_request, respond
from .streaming import FINISH_TIMEOUT, SSE, StreamFormat, json_lines, serve_stream

if TYPE_CHECKING:
    from ..config import ConnectCodeToHttpResponse
    from ..node import Node

log = logging.getLogger("centrifuge_asgi.unidirectional")

_push_encoder = msgspec.json.Encoder()
_connect_decoder = msgspec.json.Decoder(ConnectRequest)


class UniJsonCodec:
    """JSON for unidirectional clients: bare pushes, ``{}`` pings, no commands.

    Pushes are checked and put on one line as the bidirectional JSON codec does
    (:func:`~..protocol.json_codec.one_line`): a payload that is not JSON (binary data
    from ``b64data`` or a Protobuf client) raises InappropriateProtocol, and the client
    is disconnected with 3506. With ``disconnect_push=False`` the Disconnect push
    encodes to nothing (writers skip empty messages), for
    ``uni_websocket.disable_disconnect_push``.
    """

    binary = False
    ping = b"{}"

    def __init__(self, *, disconnect_push: bool = True) -> None:
        self.disconnect_push = disconnect_push
        self.name = "json-uni" if disconnect_push else "json-uni-nodisconnect"

    def decode_commands(self, frame: bytes) -> list[Command]:
        raise ProtocolError("unidirectional clients send no commands")

    def encode_reply(self, reply: Reply) -> bytes:
        push = reply.push
        if push is None:
            return b"{}"  # a ping; command replies do not exist here
        if push.disconnect is not None and not self.disconnect_push:
            return b""
        try:
            return one_line(_push_encoder.encode(push))
        except InappropriateProtocol:
            slim = without_undeliverable(reply)  # a connect push with recovered publications
            if slim is None or slim.push is None:
                raise
            return one_line(_push_encoder.encode(slim.push))

    def join(self, messages: list[bytes]) -> bytes:
        return b"\n".join(messages)


UNI_JSON = UniJsonCodec()
UNI_JSON_STREAM = StreamFormat(b"application/json", json_lines)


def parse_connect(data: bytes) -> ConnectRequest | None:
    """A bare JSON ConnectRequest (empty means ``{}``); None when malformed."""
    if not data.strip():
        return ConnectRequest()
    try:
        return _connect_decoder.decode(data)
    except DECODE_ERRORS:
        return None


async def connect_session(
    node: Node,
    name: str,
    headers: Mapping[str, str],
    req: ConnectRequest,
    codec: UniJsonCodec = UNI_JSON,
) -> tuple[Session, int | None]:
    """Create and connect a unidirectional session; the failing code or None."""
    session = node.create_session(transport_info(name, unidirectional=True, codec=codec), headers)
    try:
        return session, await session.connect_unidirectional(req)
    except BaseException:
        await release(session)
        raise


async def release(session: Session) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(FINISH_TIMEOUT):
        await session.finish()


def http_response_for(cfg: ConnectCodeToHttpResponse, code: int) -> tuple[int, bytes] | None:
    """``connect_code_to_http_response``: the status and body configured for ``code``."""
    if cfg.enabled:
        for t in cfg.transforms:
            if t.code == code and t.to.status_code:
                return t.to.status_code, t.to.body.encode()
    return None


class UniStreamEndpoint:
    """A unidirectional HTTP stream: ``uni_http_stream`` (POST; one JSON push per
    ``\\n``-terminated line) or ``uni_sse`` (GET with ``cf_connect``, or POST; one push
    per SSE event). Connects from the request (400 when malformed), then streams pushes.
    """

    def __init__(self, node: Node, name: str) -> None:
        self.node = node
        self.name = name
        self.sse = name == "uni_sse"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self.node
        cfg = node.config.uni_sse if self.sse else node.config.uni_http_stream
        req = await accept_request(
            node,
            scope,
            receive,
            send,
            limit=cfg.max_request_body_size,
            preflight=not self.sse,  # EventSource never preflights; POST streams do
            get_param=CONNECT_PARAM if self.sse else None,
        )
        if req is None:
            return
        connect = parse_connect(req.body)
        if connect is None:
            await respond(send, 400, req.cors)
            return
        session, failed = await connect_session(node, self.name, req.headers, connect)
        to_http = cfg.connect_code_to_http_response
        mapped = None if failed is None else http_response_for(to_http, failed)
        if mapped is not None:
            await release(session)
            headers = [*req.cors, (b"content-type", b"text/plain")]
            await respond(send, mapped[0], headers, mapped[1])
            return
        fmt = SSE if self.sse else UNI_JSON_STREAM
        await serve_stream(session, scope, receive, send, fmt, req.cors)


def routes(node: Node) -> list[BaseRoute]:
    """The enabled unidirectional streams (``uni_websocket.routes`` has the WebSocket)."""
    config = node.config
    out: list[BaseRoute] = []
    if config.uni_sse.enabled:
        prefix = config.uni_sse.handler_prefix or "/connection/uni_sse"
        out.append(Route(prefix, UniStreamEndpoint(node, "uni_sse")))
    if config.uni_http_stream.enabled:
        prefix = config.uni_http_stream.handler_prefix or "/connection/uni_http_stream"
        out.append(Route(prefix, UniStreamEndpoint(node, "uni_http_stream")))
    return out
