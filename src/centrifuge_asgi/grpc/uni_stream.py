"""Unidirectional gRPC: ``centrifugal.centrifugo.unistream.CentrifugoUniStream/Consume``.

The client sends one ``ConnectRequest`` and reads a stream of ``Push`` messages: a
Connect push first (or a Disconnect push when the connect fails), then publications,
join/leave, (un)subscribe, messages, refreshes, and a Disconnect push when the server
closes the connection (shutdown included), after which the stream ends with status OK.
As in Centrifugo, the server sends no application pings here (HTTP/2 keepalive pings
every 25 s instead); the client going away (cancelling the call) closes the session.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import anyio
from google.protobuf.message import DecodeError
from msgspec import UNSET, Raw

from ..codes import DisconnectCode
from ..protocol.codec import ProtocolError
from ..protocol.messages import Command, ConnectRequest, Reply, SubscribeRequest
from ..protocol.protobuf_codec import encode_push
from ..session import Session, transport_info
from . import unistream_pb2 as pb

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("centrifuge_asgi.uni_grpc")

SERVICE: Final = "centrifugal.centrifugo.unistream.CentrifugoUniStream"
TRANSPORT: Final = "uni_grpc"
WRITE_TIMEOUT: Final = 10.0  # one push onto the stream (flow control may hold it)
FINISH_TIMEOUT: Final = 5.0  # releasing the session after the stream ended


class UniProtobufCodec:
    """Bare Protobuf ``Push`` messages, one per stream message; pings are not sent."""

    name = "protobuf-uni"  # the encode-once cache key: not the delimited Reply of "protobuf"
    binary = True
    ping = b""  # writers skip empty messages

    def decode_commands(self, frame: bytes) -> list[Command]:
        raise ProtocolError("unidirectional clients send no commands")

    def encode_reply(self, reply: Reply) -> bytes:
        if reply.push is None:
            return b""
        return encode_push(reply.push)

    def join(self, messages: list[bytes]) -> bytes:
        raise NotImplementedError("each push is its own stream message")


UNI_PROTOBUF = UniProtobufCodec()


def connect_request(m: pb.ConnectRequest) -> ConnectRequest:
    """The client protocol's ConnectRequest of a unistream one (``subs`` positions)."""
    return ConnectRequest(
        token=m.token,
        data=Raw(m.data) if m.data else UNSET,
        subs={
            channel: SubscribeRequest(recover=sub.recover, epoch=sub.epoch, offset=sub.offset)
            for channel, sub in m.subs.items()
        },
        name=m.name,
        version=m.version,
        headers=dict(m.headers),
    )


class UniStreamService:
    """The ``Consume`` handler of one node (``uni_grpc`` config)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def consume(self, data: bytes, context: Any) -> None:
        node = self.node
        try:
            request = pb.ConnectRequest.FromString(data)
        except DecodeError:  # as grpc-go answers a request it cannot unmarshal
            await context.abort(_grpc().StatusCode.INTERNAL, "grpc: error unmarshalling request")
        if node.closing:
            await context.abort(_grpc().StatusCode.UNAVAILABLE, "shutting down")
        headers = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        session = node.create_session(
            transport_info(TRANSPORT, unidirectional=True, codec=UNI_PROTOBUF), headers
        )
        try:
            await session.connect_unidirectional(connect_request(request))
            await self._pump(session, context)
        finally:  # also when the client cancelled the call: the session is released
            with anyio.CancelScope(shield=True), anyio.move_on_after(FINISH_TIMEOUT):
                await session.finish()

    async def _pump(self, session: Session, context: Any) -> None:
        """Write every queued push until the session closes (its Disconnect push last)."""
        try:
            while (batch := await session.outbox.take_all()) is not None:
                for message in batch:
                    if message:
                        with anyio.fail_after(WRITE_TIMEOUT):
                            await context.write(message)
        except TimeoutError:
            session.disconnect(DisconnectCode.WRITE_ERROR)
        except (OSError, RuntimeError) as exc:  # the stream is gone (RuntimeError: grpc)
            log.debug("uni_grpc stream closed: %s", exc)
            session.transport_closed()

    def generic_handler(self) -> Any:
        grpc = _grpc()
        handler = grpc.unary_stream_rpc_method_handler(
            self.consume,
            request_deserializer=None,  # decoded in consume()
            response_serializer=None,  # pushes are written as encoded bytes
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Consume": handler})


def _grpc() -> Any:
    from .runtime import load_grpc

    return load_grpc("uni_grpc.enabled")
