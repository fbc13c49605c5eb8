"""Request shapes of the server HTTP API (server-api spec §1.5 and §1.7).

Decoding follows Go's ``encoding/json`` closely enough for ``cent``: unknown fields are
ignored, a wrong JSON type or an out-of-range number fails the whole body (HTTP 400),
and payload fields (``data``, ``info``) stay raw JSON bytes.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta, Raw

from .protocol.messages import check_uint64

U32 = Annotated[int, Meta(ge=0, le=2**32 - 1)]
U64 = Annotated[int, Meta(ge=0)]
"""Bounded above by :func:`check_uint64` (the client protocol's) in ``__post_init__``:
msgspec decodes integers past 2**64 - 1 and takes no ``le`` outside int64; the error fails
the decode (HTTP 400, a consumed message skipped as bad), as in Go."""
I32 = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
I64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]

NO_RAW: Final = Raw(b"")


class _Req(msgspec.Struct, kw_only=True):
    """Base of every request body: a JSON object, unknown keys ignored."""


class PublishRequest(_Req):
    channel: str = ""
    data: Raw = NO_RAW
    b64data: str = ""
    skip_history: bool = False
    tags: dict[str, str] = {}
    idempotency_key: str = ""
    delta: bool = False
    version: U64 = 0
    version_epoch: str = ""

    def __post_init__(self) -> None:
        check_uint64(self.version)


class BroadcastRequest(_Req):
    channels: list[str] = []
    data: Raw = NO_RAW
    b64data: str = ""
    skip_history: bool = False
    tags: dict[str, str] = {}
    idempotency_key: str = ""
    delta: bool = False
    version: U64 = 0
    version_epoch: str = ""

    def __post_init__(self) -> None:
        check_uint64(self.version)


class StreamPositionRequest(_Req):
    offset: U64 = 0
    epoch: str = ""

    def __post_init__(self) -> None:
        check_uint64(self.offset)


class BoolValue(_Req):
    value: bool = False


class SubscribeOverride(_Req):
    presence: BoolValue | None = None
    join_leave: BoolValue | None = None
    force_push_join_leave: BoolValue | None = None
    force_positioning: BoolValue | None = None
    force_recovery: BoolValue | None = None


class SubscribeRequest(_Req):
    user: str = ""
    channel: str = ""
    expire_at: I64 = 0
    info: Raw = NO_RAW
    b64info: str = ""
    client: str = ""
    session: str = ""
    data: Raw = NO_RAW
    b64data: str = ""
    recover_since: StreamPositionRequest | None = None
    override: SubscribeOverride | None = None


class UnsubscribeRequest(_Req):
    user: str = ""
    channel: str = ""
    client: str = ""
    session: str = ""


class DisconnectValue(_Req):
    code: U32 = 0
    reason: str = ""


class DisconnectRequest(_Req):
    user: str = ""
    client: str = ""
    session: str = ""
    whitelist: list[str] = []
    disconnect: DisconnectValue | None = None


class RefreshRequest(_Req):
    user: str = ""
    client: str = ""
    session: str = ""
    expired: bool = False
    expire_at: I64 = 0
    info: Raw = NO_RAW


class ChannelRequest(_Req):
    """``presence``, ``presence_stats`` and ``history_remove``."""

    channel: str = ""


class HistoryRequest(_Req):
    channel: str = ""
    limit: I32 = 0
    since: StreamPositionRequest | None = None
    reverse: bool = False


class ChannelsRequest(_Req):
    pattern: str = ""


class InfoRequest(_Req):
    pass


class RpcRequest(_Req):
    method: str = ""
    params: Raw = NO_RAW


class MapPublishRequest(_Req):
    channel: str = ""
    key: str = ""
    data: Raw = NO_RAW
    b64data: str = ""
    tags: dict[str, str] = {}
    idempotency_key: str = ""
    delta: bool = False
    version: U64 = 0
    version_epoch: str = ""
    score: I64 = 0
    key_mode: str = ""

    def __post_init__(self) -> None:
        check_uint64(self.version)


class SharedPollPublishRequest(_Req):
    channel: str = ""
    key: str = ""
    data: Raw = NO_RAW
    b64data: str = ""
    version: U64 = 0
    epoch: str = ""

    def __post_init__(self) -> None:
        check_uint64(self.version)


class MapRemoveRequest(_Req):
    channel: str = ""
    key: str = ""
    idempotency_key: str = ""


class MapReadStateRequest(_Req):
    channel: str = ""
    cursor: str = ""
    limit: I32 = 0
    key: str = ""
    asc: bool = False
    revision_offset: U64 = 0
    revision_epoch: str = ""

    def __post_init__(self) -> None:
        check_uint64(self.revision_offset)


class MapReadStreamRequest(_Req):
    channel: str = ""
    since_offset: U64 = 0
    since_epoch: str = ""
    limit: I32 = 0
    reverse: bool = False

    def __post_init__(self) -> None:
        check_uint64(self.since_offset)


REQUEST_TYPES: Final[dict[str, type[_Req]]] = {
    "publish": PublishRequest,
    "broadcast": BroadcastRequest,
    "subscribe": SubscribeRequest,
    "unsubscribe": UnsubscribeRequest,
    "disconnect": DisconnectRequest,
    "history": HistoryRequest,
    "history_remove": ChannelRequest,
    "presence": ChannelRequest,
    "presence_stats": ChannelRequest,
    "info": InfoRequest,
    "rpc": RpcRequest,
    "refresh": RefreshRequest,
    "channels": ChannelsRequest,
    "map_publish": MapPublishRequest,
    "map_remove": MapRemoveRequest,
    "map_read_state": MapReadStateRequest,
    "map_read_stream": MapReadStreamRequest,
    "map_stats": ChannelRequest,
    "map_clear": ChannelRequest,
    "shared_poll_publish": SharedPollPublishRequest,
}
"""Every command method, in the order Go checks a batch command's keys."""


class BatchCommand(_Req):
    """One batch element: exactly one method key is expected (none → error 104)."""

    publish: PublishRequest | None = None
    broadcast: BroadcastRequest | None = None
    subscribe: SubscribeRequest | None = None
    unsubscribe: UnsubscribeRequest | None = None
    disconnect: DisconnectRequest | None = None
    history: HistoryRequest | None = None
    history_remove: ChannelRequest | None = None
    presence: ChannelRequest | None = None
    presence_stats: ChannelRequest | None = None
    info: InfoRequest | None = None
    rpc: RpcRequest | None = None
    refresh: RefreshRequest | None = None
    channels: ChannelsRequest | None = None
    map_publish: MapPublishRequest | None = None
    map_remove: MapRemoveRequest | None = None
    map_read_state: MapReadStateRequest | None = None
    map_read_stream: MapReadStreamRequest | None = None
    map_stats: ChannelRequest | None = None
    map_clear: ChannelRequest | None = None
    shared_poll_publish: SharedPollPublishRequest | None = None

    def method(self) -> tuple[str, Any] | None:
        """The first method key set (Go's check order), with its request."""
        for name in REQUEST_TYPES:
            req = getattr(self, name)
            if req is not None:
                return name, req
        return None


class BatchRequest(_Req):
    commands: list[BatchCommand | None] = []
    parallel: bool = False


class LegacyCommand(_Req):
    """One ``{"id", "method", "params"}`` object of the legacy ``POST /api`` body."""

    id: U32 = 0
    method: str | int = ""
    params: Raw = NO_RAW


LEGACY_METHOD_NUMBERS: Final = (
    "publish",
    "broadcast",
    "unsubscribe",
    "disconnect",
    "presence",
    "presence_stats",
    "history",
    "history_remove",
    "channels",
    "info",
    "rpc",
    "subscribe",
    "refresh",
)
"""Legacy ``method`` enum numbers: index → name (spec §1.8)."""


def legacy_method(value: str | int) -> str | None:
    """The method name of a legacy ``method`` value (name in any case, or enum number)."""
    if isinstance(value, int):
        if 0 <= value < len(LEGACY_METHOD_NUMBERS):
            return LEGACY_METHOD_NUMBERS[value]
        return None
    name = value.lower()
    return name if name in LEGACY_METHOD_NUMBERS else None
