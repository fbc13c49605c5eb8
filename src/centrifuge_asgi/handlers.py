"""What the host application's handlers receive and return.

Every handler is an ``async`` callable taking one event object. Returning a reply
object allows (and can shape) the action; raising :class:`~centrifuge_asgi.errors.ClientError`
or :class:`~centrifuge_asgi.errors.Disconnect` rejects it with that code; any other
exception becomes an internal error (100) for that command and is logged.
Payload fields accept any JSON-encodable Python value, or ``bytes`` of JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .auth import SubscriptionOverride
from .payload import decode_payload


@dataclass(frozen=True, slots=True)
class ClientRef:
    """The connection an event comes from."""

    client: str
    user: str
    transport: str
    info: bytes | None = None

    @property
    def is_anonymous(self) -> bool:
        return self.user == ""


@dataclass(frozen=True, slots=True)
class ConnectEvent:
    """A connect without a token (the embedded equivalent of the connect proxy)."""

    client: str
    transport: str
    token: str
    raw_data: bytes | None
    name: str
    version: str
    headers: Mapping[str, str]  # the HTTP request's headers, lower-cased names
    emulated_headers: Mapping[str, str]  # the ``headers`` map the client sent in connect

    @property
    def data(self) -> Any:
        return decode_payload(self.raw_data)


@dataclass(slots=True)
class ConnectReply:
    """Credentials for a connection: the user id (``""`` = anonymous) and extras."""

    user: str
    info: Any = None
    data: Any = None
    channels: list[str] = field(default_factory=list)
    expire_at: int | None = None  # unix seconds; refreshed through on_refresh
    meta: Any = None


@dataclass(frozen=True, slots=True)
class SubscribeEvent:
    client: ClientRef
    channel: str
    raw_data: bytes | None

    @property
    def data(self) -> Any:
        return decode_payload(self.raw_data)


@dataclass(slots=True)
class SubscribeReply:
    """Allow a subscription; ``override`` changes namespace features for this one."""

    info: Any = None
    data: Any = None
    expire_at: int | None = None
    override: SubscriptionOverride | None = None


@dataclass(frozen=True, slots=True)
class SubscribeStreamEvent:
    """A subscribe to a channel of a ``subscribe_stream_proxy_enabled`` namespace.

    ``publications`` yields the data of the client's own publications to the channel
    when the namespace is bidirectional (``subscribe_stream_proxy_bidirectional``); it
    ends at once otherwise and when the subscription ends.
    """

    client: ClientRef
    channel: str
    raw_data: bytes | None
    bidirectional: bool
    publications: AsyncIterator[bytes]

    @property
    def data(self) -> Any:
        return decode_payload(self.raw_data)


@dataclass(frozen=True, slots=True)
class StreamPublication:
    """One publication of a subscription stream, for this subscriber only.

    ``data`` is any JSON-encodable value, or ``bytes`` sent as they are.
    """

    data: Any
    tags: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class PublishEvent:
    client: ClientRef
    channel: str
    raw_data: bytes

    @property
    def data(self) -> Any:
        return decode_payload(self.raw_data)


@dataclass(slots=True)
class PublishReply:
    """Allow a publication; ``data`` (when not None) replaces what the client sent."""

    data: Any = None
    skip_history: bool = False


@dataclass(frozen=True, slots=True)
class MapPublishEvent:
    """A client's publish into a map channel: ``key`` (after ``map.client_key``) and data."""

    client: ClientRef
    channel: str
    key: str
    raw_data: bytes

    @property
    def data(self) -> Any:
        return decode_payload(self.raw_data)


@dataclass(slots=True)
class MapPublishReply:
    """Allow a map publish; each set field replaces the client's value or the default."""

    key: str = ""  # "" keeps the client's key
    data: Any = None
    tags: dict[str, str] | None = None
    key_mode: str = ""  # if_new | if_exists
    idempotency_key: str = ""
    delta: bool = False
    version: int = 0
    version_epoch: str = ""


@dataclass(frozen=True, slots=True)
class MapRemoveEvent:
    """A client's remove of a key of a map channel."""

    client: ClientRef
    channel: str
    key: str


@dataclass(slots=True)
class MapRemoveReply:
    """Allow a map remove; ``key`` (when set) replaces the client's."""

    key: str = ""
    tags: dict[str, str] | None = None
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class RPCEvent:
    client: ClientRef
    method: str
    raw_data: bytes | None

    @property
    def data(self) -> Any:
        return decode_payload(self.raw_data)


@dataclass(frozen=True, slots=True)
class RefreshEvent:
    """A connection whose credentials expire asks to be extended (server-side refresh)."""

    client: ClientRef


@dataclass(slots=True)
class RefreshReply:
    expire_at: int | None = None
    expired: bool = False
    info: Any = None


@dataclass(frozen=True, slots=True)
class SubRefreshEvent:
    client: ClientRef
    channel: str


@dataclass(slots=True)
class SubRefreshReply:
    expire_at: int | None = None
    expired: bool = False


@dataclass(frozen=True, slots=True)
class SharedPollItem:
    """A tracked key and (versioned mode) the version this node holds (0: none)."""

    key: str
    version: int = 0


@dataclass(frozen=True, slots=True)
class SharedPollRefreshEvent:
    """The node asks for the current data of tracked keys of a shared poll channel."""

    channel: str
    items: list[SharedPollItem]
    versioned: bool  # the namespace's shared_poll.mode is versioned


@dataclass(slots=True)
class SharedPollResult:
    """Current state of one key: ``data`` (JSON value or bytes of JSON), or ``removed``.

    Versioned mode: ``version`` (>= 1) is required; ``data`` None means unchanged.
    Versionless: ``version`` is ignored, changes are found by comparing the data.
    Keys left out of a reply are unchanged.
    """

    key: str
    data: Any = None
    version: int = 0
    removed: bool = False


@dataclass(slots=True)
class SharedPollRefreshReply:
    items: list[SharedPollResult] = field(default_factory=list)
    epoch: str = ""  # versioned: the publisher's epoch (a change resets the channel)


@dataclass(frozen=True, slots=True)
class MessageEvent:
    client: ClientRef
    raw_data: bytes | None

    @property
    def data(self) -> Any:
        return decode_payload(self.raw_data)


@dataclass(frozen=True, slots=True)
class DisconnectEvent:
    client: ClientRef
    code: int
    reason: str


ConnectingHandler = Callable[[ConnectEvent], Awaitable[ConnectReply | None]]
SubscribeHandler = Callable[[SubscribeEvent], Awaitable[SubscribeReply | None]]
PublishHandler = Callable[[PublishEvent], Awaitable[PublishReply | None]]
MapPublishHandler = Callable[[MapPublishEvent], Awaitable[MapPublishReply | None]]
MapRemoveHandler = Callable[[MapRemoveEvent], Awaitable[MapRemoveReply | None]]
RPCHandler = Callable[[RPCEvent], Awaitable[Any]]
RefreshHandler = Callable[[RefreshEvent], Awaitable[RefreshReply]]
SubRefreshHandler = Callable[[SubRefreshEvent], Awaitable[SubRefreshReply]]
MessageHandler = Callable[[MessageEvent], Awaitable[None]]
DisconnectHandler = Callable[[DisconnectEvent], Awaitable[None]]
SharedPollRefreshHandler = Callable[[SharedPollRefreshEvent], Awaitable[SharedPollRefreshReply]]
# An async generator: first a SubscribeReply (or raise to reject), then publications
# (StreamPublication, or the data alone); returning ends the subscription (code 2000).
SubscribeStreamHandler = Callable[[SubscribeStreamEvent], AsyncIterator[Any]]


@dataclass(slots=True)
class Handlers:
    """The host application's handlers, registered through ``Node`` decorators."""

    connecting: ConnectingHandler | None = None
    subscribe: SubscribeHandler | None = None
    publish: PublishHandler | None = None
    map_publish: MapPublishHandler | None = None
    map_remove: MapRemoveHandler | None = None
    rpc: dict[str, RPCHandler] = field(default_factory=dict)
    rpc_fallback: RPCHandler | None = None
    refresh: RefreshHandler | None = None
    sub_refresh: SubRefreshHandler | None = None
    message: MessageHandler | None = None
    disconnect: DisconnectHandler | None = None
    subscribe_stream: SubscribeStreamHandler | None = None
    shared_poll_refresh: SharedPollRefreshHandler | None = None
