"""Engine role interfaces and the protocol-neutral values they exchange.

An engine is three small roles (centrifuge's ``broker.go`` / ``presence.go`` /
``controller``):

* :class:`Broker` moves publications, join and leave events between nodes and keeps
  the per-channel history stream (offsets, epoch, retention, idempotency);
* :class:`PresenceManager` stores who is subscribed to a channel;
* :class:`Controller` carries node-to-node messages (``cluster.py`` builds and reads
  them; the controller moves opaque bytes to every node or to one).

Backends push events into the node through :class:`BrokerEventHandler` and
:class:`ControlEventHandler`; they never reach into the connection registry. Payloads
are opaque ``bytes`` (raw JSON text for JSON clients); engines never decode them. What an
engine can do is asked through its :class:`Capabilities`, never from its class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..codes import ErrorCode
from ..errors import ClientError


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who a connection is: user id, client id and optional connection/channel info."""

    user: str
    client: str
    conn_info: bytes | None = None
    chan_info: bytes | None = None


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A position in a channel's history stream: top offset and epoch."""

    offset: int = 0
    epoch: str = ""


@dataclass(frozen=True, slots=True)
class Publication:
    """One publication; ``offset`` is 0 when the channel keeps no history."""

    data: bytes
    offset: int = 0
    info: ClientInfo | None = None
    tags: dict[str, str] | None = None
    time: int = 0  # unix milliseconds, 0 when unknown
    key: str = ""  # map channels: the key this publication sets or removes
    removed: bool = False  # map channels: the key was removed (no data)


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """How to publish: history retention and idempotency (all zero = no history)."""

    history_size: int = 0
    history_ttl: float = 0.0  # seconds; history is kept only when size > 0 and ttl > 0
    history_meta_ttl: float = 0.0  # seconds; 0 = the engine default (30 days)
    idempotency_key: str = ""
    idempotent_result_ttl: float = 300.0
    client_info: ClientInfo | None = None
    tags: dict[str, str] | None = None
    skip_history: bool = False  # publish without appending to the stream
    version: int = 0
    version_epoch: str = ""
    delta: bool = False  # pass the stream's previous publication along (fossil delta base)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Where a publication landed; ``suppressed`` when a version or key deduplicated it."""

    position: StreamPosition = field(default_factory=StreamPosition)
    suppressed: bool = False


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """A history query.

    ``limit`` 0 returns only the stream position, -1 returns everything, N > 0 caps
    the count. ``since`` (when set) returns publications after that offset (before it
    when ``reverse``); a non-empty ``since.epoch`` that differs from the current epoch
    raises ``ClientError(112)``. ``reverse`` with ``since.offset == 0`` raises
    ``ClientError(107)``.
    """

    limit: int = 0
    since: StreamPosition | None = None
    reverse: bool = False

    def validate(self) -> None:
        """Reject what no engine can answer; every ``Broker.history`` calls it first.

        ``limit`` below -1 is a programming error (``ValueError``); ``reverse`` with
        ``since.offset == 0`` is a bad request from the client (``ClientError(107)``).
        """
        if self.limit < -1:
            raise ValueError(f"history limit must be -1, 0 or positive, got {self.limit}")
        if self.reverse and self.since is not None and self.since.offset == 0:
            raise ClientError.of(ErrorCode.BAD_REQUEST)


@dataclass(frozen=True, slots=True)
class HistoryResult:
    publications: list[Publication]
    position: StreamPosition


@dataclass(frozen=True, slots=True)
class PresenceStats:
    num_clients: int
    num_users: int


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do; the node asks this instead of checking the engine's class.

    ``single_process``: events and control messages never leave this process, so there
    are no peers to announce this node to or to survey. ``sweep``: the engine keeps
    expiring state in memory and wants its ``sweep()`` (:class:`Sweeper`) called about
    once a second.
    """

    single_process: bool = False
    sweep: bool = False


class Sweeper(Protocol):
    """An engine whose :class:`Capabilities` ask for ``sweep``."""

    def sweep(self) -> None: ...


class BrokerEventHandler(Protocol):
    """What a broker calls when an event arrives for a channel this node serves.

    Calls are synchronous and must not block: the node fans out into bounded
    per-connection outboxes and never awaits a client.
    """

    def handle_publication(
        self, channel: str, pub: Publication, epoch: str, prev: Publication | None = None
    ) -> None:
        """``prev``: for a ``delta`` publish into a stream, the publication just before
        ``pub`` (offset - 1) when the broker still had it, the base of a fossil delta."""

    def handle_join(self, channel: str, info: ClientInfo) -> None: ...

    def handle_leave(self, channel: str, info: ClientInfo) -> None: ...


class ControlEventHandler(Protocol):
    """What a controller calls with each node-to-node message (synchronous, must not block)."""

    def handle_control(self, data: bytes) -> None: ...


class Controller(Protocol):
    """Node-to-node messages: opaque bytes to every node, or to one node by its id.

    Every node listens for messages to all and for messages to its own ``node_id``,
    which the node passes in :meth:`register_control_handler` before the engine starts.
    A controller delivers a message to all to its own node too (the node skips its own).
    """

    @property
    def capabilities(self) -> Capabilities: ...

    def register_control_handler(self, handler: ControlEventHandler, node_id: str) -> None:
        """Deliver control messages to ``handler`` once started; ``node_id`` addresses
        this node. Called before ``start``; without it the engine picks a random id."""

    async def publish_control(self, data: bytes, node_id: str = "") -> bool:
        """Send ``data`` to every node, or to ``node_id`` only. False when the engine
        knows that no node received an addressed message (True when it cannot tell)."""
        ...


class Broker(Controller, Protocol):
    """Fan-out between nodes plus per-channel history streams.

    Every broker is also the node's :class:`Controller` (the node's ``controller``):
    node-to-node messages travel over the same connections.
    """

    async def start(self, handler: BrokerEventHandler) -> None:
        """Begin delivering events to ``handler`` (open connections, start loops)."""

    async def close(self) -> None:
        """Stop delivering and release resources; idempotent."""

    async def subscribe(self, channel: str) -> None:
        """Start receiving events of ``channel`` on this node."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving events of ``channel`` on this node."""

    async def publish(self, channel: str, data: bytes, opts: PublishOptions) -> PublishResult:
        """Publish (and append to history when enabled) atomically; returns the position."""

    async def publish_join(self, channel: str, info: ClientInfo) -> None: ...

    async def publish_leave(self, channel: str, info: ClientInfo) -> None: ...

    async def history(
        self, channel: str, flt: HistoryFilter, meta_ttl: float = 0.0
    ) -> HistoryResult:
        """Read the stream; creates stream metadata (fresh epoch, top 0) when missing."""

    async def remove_history(self, channel: str) -> None:
        """Drop the publications of ``channel``; keeps the offset and epoch."""


class PresenceManager(Protocol):
    """Who is subscribed to a channel, across all nodes."""

    async def add_presence(self, channel: str, client_id: str, info: ClientInfo) -> None:
        """Add or refresh one connection's entry."""

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None: ...

    async def presence(self, channel: str) -> dict[str, ClientInfo]: ...

    async def presence_stats(self, channel: str) -> PresenceStats: ...

    async def close(self) -> None: ...
