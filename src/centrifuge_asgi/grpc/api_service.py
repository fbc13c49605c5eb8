"""The server API over gRPC: ``centrifugal.centrifugo.api.CentrifugoApi``.

Each method turns its protobuf request into the HTTP API's request struct
(:mod:`..api_schema`), runs it through the one :class:`~..api_exec.Executor`, and turns
the result dict back into the protobuf reply. As in Centrifugo v6:

- with ``grpc_api.key`` set, a call must carry the metadata ``authorization: apikey
  <key>``, else it fails with ``UNAUTHENTICATED`` (no key: every call is let in);
- an API error is the reply's ``error`` field, or, in the ``transport`` error mode
  (``grpc_api.error_mode`` or the metadata ``x-centrifugo-error-mode: transport``), the
  call's gRPC status (100 INTERNAL, 102/104 NOT_FOUND, 107/108 INVALID_ARGUMENT, 112
  OUT_OF_RANGE, 113 ALREADY_EXISTS) with the ``Error`` message in the status details;
  ``Batch`` always answers errors per command;
- payloads are bytes: ``data`` is published as it is (and must be JSON unless the
  channel's ``publication_data_format`` is ``binary``), ``b64data`` wins when set.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Final

from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.message import DecodeError, Message
from msgspec import Raw

from .. import api_schema as s
from ..api_exec import ApiError, Executor
from ..protocol.protobuf_codec import uvarint
from . import api_pb2 as pb
from .convert import fill

SERVICE: Final = "centrifugal.centrifugo.api.CentrifugoApi"
STATUS_DETAILS_KEY: Final = "grpc-status-details-bin"
ERROR_MODE_KEY: Final = "x-centrifugo-error-mode"

# gRPC status code numbers (grpc.StatusCode values) of each API error code
GRPC_STATUS: Final = {100: 13, 102: 5, 104: 5, 107: 3, 108: 3, 112: 11, 113: 6}
INTERNAL_STATUS: Final = 13


def _raw(data: bytes) -> Raw:
    return Raw(data) if data else s.NO_RAW


def _b64(data: bytes, b64: str) -> str:
    """``b64data`` as given, else ``data`` in base64: the executor keeps such a payload
    as bytes and checks it against the channel's data format (``data`` is not parsed)."""
    return b64 or (base64.b64encode(data).decode() if data else "")


def _position(m: pb.StreamPosition) -> s.StreamPositionRequest:
    return s.StreamPositionRequest(offset=m.offset, epoch=m.epoch)


def _payload(m: pb.PublishRequest | pb.BroadcastRequest | pb.MapPublishRequest) -> dict[str, Any]:
    """The payload and publish options that publish, broadcast and map publish share."""
    return {
        "b64data": _b64(m.data, m.b64data),
        "tags": dict(m.tags),
        "idempotency_key": m.idempotency_key,
        "delta": m.delta,
        "version": m.version,
        "version_epoch": m.version_epoch,
    }


def _publish(m: pb.PublishRequest) -> s.PublishRequest:
    return s.PublishRequest(channel=m.channel, skip_history=m.skip_history, **_payload(m))


def _broadcast(m: pb.BroadcastRequest) -> s.BroadcastRequest:
    return s.BroadcastRequest(channels=list(m.channels), skip_history=m.skip_history, **_payload(m))


def _override(m: pb.SubscribeOptionOverride) -> s.SubscribeOverride:
    names = ("presence", "join_leave", "force_push_join_leave", "force_positioning")
    values = {
        name: s.BoolValue(value=getattr(m, name).value)
        for name in (*names, "force_recovery")
        if m.HasField(name)
    }
    return s.SubscribeOverride(**values)


def _subscribe(m: pb.SubscribeRequest) -> s.SubscribeRequest:
    return s.SubscribeRequest(
        user=m.user,
        channel=m.channel,
        expire_at=m.expire_at,
        info=_raw(m.info),
        b64info=m.b64info,
        client=m.client,
        session=m.session,
        data=_raw(m.data),
        b64data=m.b64data,
        recover_since=_position(m.recover_since) if m.HasField("recover_since") else None,
        override=_override(m.override) if m.HasField("override") else None,
    )


def _unsubscribe(m: pb.UnsubscribeRequest) -> s.UnsubscribeRequest:
    return s.UnsubscribeRequest(user=m.user, channel=m.channel, client=m.client, session=m.session)


def _disconnect(m: pb.DisconnectRequest) -> s.DisconnectRequest:
    value = None
    if m.HasField("disconnect"):
        value = s.DisconnectValue(code=m.disconnect.code, reason=m.disconnect.reason)
    return s.DisconnectRequest(
        user=m.user,
        client=m.client,
        session=m.session,
        whitelist=list(m.whitelist),
        disconnect=value,
    )


def _channel(m: Any) -> s.ChannelRequest:
    return s.ChannelRequest(channel=m.channel)


def _history(m: pb.HistoryRequest) -> s.HistoryRequest:
    return s.HistoryRequest(
        channel=m.channel,
        limit=m.limit,
        since=_position(m.since) if m.HasField("since") else None,
        reverse=m.reverse,
    )


def _refresh(m: pb.RefreshRequest) -> s.RefreshRequest:
    return s.RefreshRequest(
        user=m.user,
        client=m.client,
        session=m.session,
        expired=m.expired,
        expire_at=m.expire_at,
        info=_raw(m.info),
    )


def _shared_poll_publish(m: pb.SharedPollPublishRequest) -> s.SharedPollPublishRequest:
    return s.SharedPollPublishRequest(
        channel=m.channel,
        key=m.key,
        b64data=_b64(m.data, m.b64data),
        version=m.version,
        epoch=m.epoch,
    )


def _map_publish(m: pb.MapPublishRequest) -> s.MapPublishRequest:
    return s.MapPublishRequest(
        channel=m.channel, key=m.key, score=m.score, key_mode=m.key_mode, **_payload(m)
    )


def _map_remove(m: pb.MapRemoveRequest) -> s.MapRemoveRequest:
    return s.MapRemoveRequest(channel=m.channel, key=m.key, idempotency_key=m.idempotency_key)


def _map_read_state(m: pb.MapReadStateRequest) -> s.MapReadStateRequest:
    return s.MapReadStateRequest(
        channel=m.channel,
        cursor=m.cursor,
        limit=m.limit,
        key=m.key,
        asc=m.asc,
        revision_offset=m.revision_offset,
        revision_epoch=m.revision_epoch,
    )


def _map_read_stream(m: pb.MapReadStreamRequest) -> s.MapReadStreamRequest:
    return s.MapReadStreamRequest(
        channel=m.channel,
        since_offset=m.since_offset,
        since_epoch=m.since_epoch,
        limit=m.limit,
        reverse=m.reverse,
    )


# method name → (gRPC method, request type, response type, request conversion)
METHODS: Final[dict[str, tuple[str, type[Message], type[Message], Callable[[Any], Any]]]] = {
    "publish": ("Publish", pb.PublishRequest, pb.PublishResponse, _publish),
    "broadcast": ("Broadcast", pb.BroadcastRequest, pb.BroadcastResponse, _broadcast),
    "subscribe": ("Subscribe", pb.SubscribeRequest, pb.SubscribeResponse, _subscribe),
    "unsubscribe": ("Unsubscribe", pb.UnsubscribeRequest, pb.UnsubscribeResponse, _unsubscribe),
    "disconnect": ("Disconnect", pb.DisconnectRequest, pb.DisconnectResponse, _disconnect),
    "presence": ("Presence", pb.PresenceRequest, pb.PresenceResponse, _channel),
    "presence_stats": (
        "PresenceStats",
        pb.PresenceStatsRequest,
        pb.PresenceStatsResponse,
        _channel,
    ),
    "history": ("History", pb.HistoryRequest, pb.HistoryResponse, _history),
    "history_remove": (
        "HistoryRemove",
        pb.HistoryRemoveRequest,
        pb.HistoryRemoveResponse,
        _channel,
    ),
    "info": ("Info", pb.InfoRequest, pb.InfoResponse, lambda m: s.InfoRequest()),
    "rpc": (
        "RPC",
        pb.RPCRequest,
        pb.RPCResponse,
        lambda m: s.RpcRequest(method=m.method, params=_raw(m.params)),
    ),
    "refresh": ("Refresh", pb.RefreshRequest, pb.RefreshResponse, _refresh),
    "channels": (
        "Channels",
        pb.ChannelsRequest,
        pb.ChannelsResponse,
        lambda m: s.ChannelsRequest(pattern=m.pattern),
    ),
    "map_publish": ("MapPublish", pb.MapPublishRequest, pb.MapPublishResponse, _map_publish),
    "map_remove": ("MapRemove", pb.MapRemoveRequest, pb.MapRemoveResponse, _map_remove),
    "map_read_state": (
        "MapReadState",
        pb.MapReadStateRequest,
        pb.MapReadStateResponse,
        _map_read_state,
    ),
    "map_read_stream": (
        "MapReadStream",
        pb.MapReadStreamRequest,
        pb.MapReadStreamResponse,
        _map_read_stream,
    ),
    "map_stats": ("MapStats", pb.MapStatsRequest, pb.MapStatsResponse, _channel),
    "map_clear": ("MapClear", pb.MapClearRequest, pb.MapClearResponse, _channel),
    "shared_poll_publish": (
        "SharedPollPublish",
        pb.SharedPollPublishRequest,
        pb.SharedPollPublishResponse,
        _shared_poll_publish,
    ),
}


def batch_request(m: pb.BatchRequest) -> s.BatchRequest:
    """A protobuf batch as the executor's batch (a command without a method: 104)."""
    commands: list[s.BatchCommand | None] = []
    for command in m.commands:
        fields: dict[str, Any] = {}
        for name, (_, _, _, convert) in METHODS.items():
            if command.HasField(name):
                fields[name] = convert(getattr(command, name))
        commands.append(s.BatchCommand(**fields))
    return s.BatchRequest(commands=commands, parallel=m.parallel)


# ----------------------------------------------------------------------------- replies


def status_details(code: int, message: str, error: pb.Error) -> bytes:
    """A ``google.rpc.Status`` carrying ``error`` as its one detail (encoded by hand:
    three fields, so that googleapis-common-protos is not needed)."""
    detail = AnyMessage()
    detail.Pack(error)
    packed: bytes = detail.SerializeToString()
    text = message.encode()
    return (
        b"\x08"
        + uvarint(code)
        + b"\x12"
        + uvarint(len(text))
        + text
        + b"\x1a"
        + uvarint(len(packed))
        + packed
    )


# ----------------------------------------------------------------------------- service


Handler = Callable[[Any, Any], Awaitable[Any]]


class ApiService:
    """The ``CentrifugoApi`` handlers of one node (``grpc_api`` config)."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.node = executor.node
        cfg = self.node.config.grpc_api
        self.key = f"apikey {cfg.key}".encode() if cfg.key else b""
        self.transport_mode = cfg.error_mode == "transport"

    def _incoming(self, metadata: dict[str, str]) -> AbstractContextManager[None]:
        """With ``opentelemetry.api``: the caller's trace (``traceparent``) made current."""
        tracing = self.node.tracing
        if tracing is None or not tracing.api:
            return contextlib.nullcontext()
        return tracing.incoming(metadata)

    def _metadata(self, context: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if isinstance(value, str):
                out.setdefault(key, value)  # the first value, as Centrifugo reads it
        return out

    async def _authorize(self, metadata: Mapping[str, str], context: Any) -> None:
        if not self.key:
            return
        given = metadata.get("authorization", "").encode()
        if not hmac.compare_digest(given, self.key):
            grpc = _grpc()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")

    def unary(self, method: str) -> Handler:
        """The handler of one method: authorize, decode, execute, answer."""
        _, request_type, response_type, convert = METHODS[method]

        async def handle(data: bytes, context: Any) -> Any:
            metadata = self._metadata(context)
            await self._authorize(metadata, context)
            request = await _decode(request_type, data, context)
            started = time.perf_counter()
            response = response_type()
            try:
                with self._incoming(metadata):
                    result = await self.executor.call(method, convert(request))
            except ApiError as exc:
                self.node.metrics.api_call(
                    method, time.perf_counter() - started, str(exc.code), protocol="grpc"
                )
                error = pb.Error(code=exc.code, message=exc.message)
                if self.transport_mode or metadata.get(ERROR_MODE_KEY) == "transport":
                    status = GRPC_STATUS.get(exc.code, INTERNAL_STATUS)
                    details = status_details(status, exc.message, error)
                    await context.abort(
                        _status_code(status),
                        exc.message,
                        trailing_metadata=((STATUS_DETAILS_KEY, details),),
                    )
                response.error.CopyFrom(error)
                return response
            self.node.metrics.api_call(method, time.perf_counter() - started, protocol="grpc")
            result_field = response.result
            result_field.SetInParent()
            fill(result_field, result)
            return response

        return handle

    async def batch(self, data: bytes, context: Any) -> pb.BatchResponse:
        await self._authorize(self._metadata(context), context)
        request = await _decode(pb.BatchRequest, data, context)
        started = time.perf_counter()
        with self._incoming(self._metadata(context)):
            replies = await self.executor.batch(batch_request(request))
        self.node.metrics.api_call("batch", time.perf_counter() - started, protocol="grpc")
        response = pb.BatchResponse()
        fill(response, {"replies": replies})
        return response

    def generic_handler(self) -> Any:
        """The grpcio generic handler serving every method of the service."""
        grpc = _grpc()
        handlers = {
            "Batch": grpc.unary_unary_rpc_method_handler(
                self.batch,
                request_deserializer=None,  # decoded after the key check (_decode)
                response_serializer=pb.BatchResponse.SerializeToString,
            )
        }
        for method, (name, _, response_type, _) in METHODS.items():
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                self.unary(method),
                request_deserializer=None,
                response_serializer=response_type.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)


async def _decode(message_type: type[Message], data: bytes, context: Any) -> Any:
    """The request message; undecodable bytes end the call with INTERNAL, as in Go."""
    try:
        return message_type.FromString(data)
    except DecodeError:
        await context.abort(_grpc().StatusCode.INTERNAL, "grpc: error unmarshalling request")


def _grpc() -> Any:
    from .runtime import load_grpc

    return load_grpc("grpc_api.enabled")


def _status_code(number: int) -> Any:
    """The ``grpc.StatusCode`` member of a status number."""
    grpc = _grpc()
    for status in grpc.StatusCode:
        if status.value[0] == number:
            return status
    return grpc.StatusCode.INTERNAL
