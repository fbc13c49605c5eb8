"""Wire types of the Centrifugo client protocol v2 (JSON field names = proto names).

Commands are decoded from clients; replies and pushes are encoded to them. Payload
fields (``data``, ``info``) travel as :class:`msgspec.Raw` so user JSON is embedded
verbatim, never decoded and re-encoded. Zero-valued fields are omitted (``omit_defaults``)
except the ones the SDKs index directly, which are declared without a default.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, Raw, UnsetType

OptRaw = Raw | UnsetType

# Integer fields of commands keep the range of their proto type: as with Go's decoder
# (segmentio/encoding/json), a JSON number out of range is a malformed command (3501).
# Protobuf varints cannot be out of range: the decoder keeps their low bits, as Go does.
UINT64_MAX = 2**64 - 1
Uint32 = Annotated[int, Meta(ge=0, le=2**32 - 1)]
Int32 = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Uint64 = Annotated[int, Meta(ge=0)]  # msgspec bounds stop at int64: see check_uint64
Offset = Uint64  # stream offset

# Subscription types (SubscribeRequest.type), map subscribe phases, publish types.
SUBSCRIPTION_TYPE_STREAM = 0
SUBSCRIPTION_TYPE_MAP = 1
SUBSCRIPTION_TYPE_MAP_CLIENTS = 2
SUBSCRIPTION_TYPE_MAP_USERS = 3
SUBSCRIPTION_TYPE_SHARED_POLL = 4
MAP_PHASE_LIVE = 0
MAP_PHASE_STREAM = 1
MAP_PHASE_STATE = 2
PUBLISH_TYPE_MAP = 1
Limit = Int32  # history limit: any negative value means everything (-1 by convention)


def check_uint64(value: int) -> None:
    """Called from ``__post_init__``: msgspec turns the error into a ValidationError."""
    if value > UINT64_MAX:
        raise ValueError(f"Expected `int` <= {UINT64_MAX}")


class _In(msgspec.Struct, kw_only=True):
    """Base of decoded client requests: unknown fields are ignored."""


class _Out(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of encoded server messages: zero values are left out."""


# ----------------------------------------------------------------- commands (client → server)


class FilterNode(_In):
    """A tags filter tree (``SubscribeRequest.tf``); checked by ``tagfilter.py``."""

    op: str = ""
    key: str = ""
    cmp: str = ""
    val: str = ""
    vals: list[str] = []
    nodes: list[FilterNode] = []


class SubscribeRequest(_In):
    channel: str = ""
    token: str = ""
    recover: bool = False
    epoch: str = ""
    offset: Offset = 0
    data: OptRaw = UNSET
    positioned: bool = False
    recoverable: bool = False
    join_leave: bool = False
    delta: str = ""
    tf: FilterNode | None = None  # tags filter; JSON null is no filter, as in Go
    flag: Int64 = 0
    type: Int32 = 0  # SUBSCRIPTION_TYPE_*: 0 stream, 1 map, 2 map_clients, 3 map_users, 4 poll
    phase: Int32 = 0  # map subscribe phase: MAP_PHASE_LIVE / _STREAM / _STATE
    cursor: str = ""  # map state page cursor
    limit: Int32 = 0  # map page size (0: the server default)
    asc: bool = False

    def __post_init__(self) -> None:
        check_uint64(self.offset)


class ConnectRequest(_In):
    token: str = ""
    data: OptRaw = UNSET
    subs: dict[str, SubscribeRequest] = {}
    name: str = ""
    version: str = ""
    headers: dict[str, str] = {}
    flag: Int64 = 0  # feature bits (none supported): only range-checked, as Go decodes it


class ChannelRequest(_In):
    """Unsubscribe, presence and presence_stats carry only a channel."""

    channel: str = ""


class PublishRequest(_In):
    channel: str = ""
    data: OptRaw = UNSET
    type: Int32 = 0  # 0 regular, 1 map (PUBLISH_TYPE_MAP)
    key: str = ""  # map publish: the key
    removed: bool = False  # map publish: remove the key


class StreamPositionWire(msgspec.Struct, kw_only=True, omit_defaults=True):
    offset: Offset = 0
    epoch: str = ""

    def __post_init__(self) -> None:
        check_uint64(self.offset)


class HistoryRequest(_In):
    channel: str = ""
    limit: Limit = 0
    since: StreamPositionWire | None = None
    reverse: bool = False


class SendRequest(_In):
    data: OptRaw = UNSET


class RPCRequest(_In):
    data: OptRaw = UNSET
    method: str = ""


class RefreshRequest(_In):
    token: str = ""


class KeyedItem(_In):
    """Shared poll: a tracked key and the version the client holds."""

    key: str = ""
    version: Uint64 = 0

    def __post_init__(self) -> None:
        check_uint64(self.version)


class TrackBatch(_In):
    """Shared poll: keys signed together (the signature covers all of ``items``)."""

    signature: str = ""
    items: list[KeyedItem] = []


class SubRefreshRequest(_In):
    channel: str = ""
    token: str = ""
    type: Int32 = 0  # 0 token refresh, 1 shared-poll track, 2 shared-poll untrack
    track: list[TrackBatch] = []
    untrack: list[str] = []


class EmptyRequest(_In):
    pass


class Command(_In):
    id: Uint32 = 0
    connect: ConnectRequest | None = None
    subscribe: SubscribeRequest | None = None
    unsubscribe: ChannelRequest | None = None
    publish: PublishRequest | None = None
    presence: ChannelRequest | None = None
    presence_stats: ChannelRequest | None = None
    history: HistoryRequest | None = None
    ping: EmptyRequest | None = None
    send: SendRequest | None = None
    rpc: RPCRequest | None = None
    refresh: RefreshRequest | None = None
    sub_refresh: SubRefreshRequest | None = None


# --------------------------------------------------------------------- shared (server → client)


class ClientInfoWire(_Out):
    user: str
    client: str
    conn_info: OptRaw = UNSET
    chan_info: OptRaw = UNSET


class PublicationWire(_Out):
    data: OptRaw  # UNSET only for a map removal, which carries no payload (omitted, as Go)
    info: ClientInfoWire | None = None
    offset: int = 0
    tags: dict[str, str] = {}
    delta: bool = False
    time: int = 0
    channel: str = ""
    key: str = ""  # map and shared-poll publications
    removed: bool = False
    score: int = 0
    epoch: str = ""
    version: int = 0  # shared poll


class ErrorWire(_Out):
    code: int
    message: str
    temporary: bool = False


# ------------------------------------------------------------------------------------ results


class SubscribeResult(_Out):
    expires: bool = False
    ttl: int = 0
    recoverable: bool = False
    epoch: str = ""
    publications: list[PublicationWire] = []
    recovered: bool = False
    offset: int = 0
    positioned: bool = False
    data: OptRaw = UNSET
    was_recovering: bool = False
    delta: bool = False
    id: int = 0
    type: int = 0  # echo of SubscribeRequest.type
    phase: int = 0  # map: the phase of this reply (0 live: subscribed)
    cursor: str = ""  # map state: next page, empty on the last one
    state: list[PublicationWire] = []  # map state entries
    publish_debounce: int = 0  # milliseconds


class ConnectResult(_Out):
    client: str
    version: str = ""
    expires: bool = False
    ttl: int = 0
    data: OptRaw = UNSET
    subs: dict[str, SubscribeResult] = {}
    ping: int = 0
    pong: bool = False
    session: str = ""
    node: str = ""
    time: int = 0


class EmptyResult(_Out):
    pass


class PresenceResult(_Out):
    presence: dict[str, ClientInfoWire]


class PresenceStatsResult(_Out):
    num_clients: int
    num_users: int


class HistoryResult(_Out):
    publications: list[PublicationWire]
    epoch: str
    offset: int


class RPCResult(_Out):
    data: OptRaw = UNSET


class RefreshResult(_Out):
    client: str = ""
    version: str = ""
    expires: bool = False
    ttl: int = 0


class SubRefreshResult(_Out):
    expires: bool = False
    ttl: int = 0
    items: list[PublicationWire] = []  # shared poll: current data of tracked keys


# -------------------------------------------------------------------------------------- pushes


class JoinLeave(_Out):
    info: ClientInfoWire


class UnsubscribePush(_Out):
    code: int
    reason: str


class MessagePush(_Out):
    data: Raw


class SubscribePush(_Out):
    recoverable: bool = False
    epoch: str = ""
    offset: int = 0
    positioned: bool = False
    data: OptRaw = UNSET


class DisconnectPush(_Out):
    code: int
    reason: str


class RefreshPush(_Out):
    expires: bool = False
    ttl: int = 0


class Push(_Out):
    channel: str = ""
    pub: PublicationWire | None = None
    join: JoinLeave | None = None
    leave: JoinLeave | None = None
    unsubscribe: UnsubscribePush | None = None
    message: MessagePush | None = None
    subscribe: SubscribePush | None = None
    connect: ConnectResult | None = None
    disconnect: DisconnectPush | None = None
    refresh: RefreshPush | None = None


class Reply(_Out):
    id: int = 0
    error: ErrorWire | None = None
    push: Push | None = None
    connect: ConnectResult | None = None
    subscribe: SubscribeResult | None = None
    unsubscribe: EmptyResult | None = None
    publish: EmptyResult | None = None
    presence: PresenceResult | None = None
    presence_stats: PresenceStatsResult | None = None
    history: HistoryResult | None = None
    ping: EmptyResult | None = None
    rpc: RPCResult | None = None
    refresh: RefreshResult | None = None
    sub_refresh: SubRefreshResult | None = None
