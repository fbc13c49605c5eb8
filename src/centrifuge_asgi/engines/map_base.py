"""The map broker role: keyed channel state plus a change stream (map subscriptions).

A map channel (Centrifugo v6.8+, experimental upstream) holds key → publication entries
with an optional per-key TTL, and, in the ``recoverable`` and ``persistent`` modes, a
change stream with offsets and an epoch, so that a subscriber reads the state page by
page, catches up from the stream, then goes live. Every change (publish, remove, TTL
expiry) is fanned out through the node's :class:`~.base.BrokerEventHandler` as a
:class:`~.base.Publication` carrying ``key`` (and ``removed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .base import (
    BrokerEventHandler,
    ClientInfo,
    HistoryFilter,
    HistoryResult,
    Publication,
    StreamPosition,
)

DEFAULT_STREAM_SIZE = 100
DEFAULT_STREAM_TTL = 60.0

KEY_MODE_REPLACE = ""
KEY_MODE_IF_NEW = "if_new"
KEY_MODE_IF_EXISTS = "if_exists"

SUPPRESS_IDEMPOTENCY = "idempotency"
SUPPRESS_VERSION = "version"
SUPPRESS_KEY_EXISTS = "key_exists"
SUPPRESS_KEY_NOT_FOUND = "key_not_found"
SUPPRESS_POSITION_MISMATCH = "position_mismatch"


@dataclass(frozen=True, slots=True)
class MapChannelOptions:
    """How one map channel keeps its data (the namespace's ``map`` block, resolved)."""

    mode: str = "persistent"  # ephemeral | recoverable | persistent
    key_ttl: float = 0.0  # seconds; 0: entries never expire
    stream_size: int = 0  # 0: DEFAULT_STREAM_SIZE when the mode keeps a stream
    stream_ttl: float = 0.0  # 0: DEFAULT_STREAM_TTL
    meta_ttl: float = 0.0  # 0: derived (see effective_meta_ttl)

    @property
    def has_stream(self) -> bool:
        return self.mode in ("recoverable", "persistent")

    @property
    def effective_stream_size(self) -> int:
        return (self.stream_size or DEFAULT_STREAM_SIZE) if self.has_stream else 0

    @property
    def effective_stream_ttl(self) -> float:
        return (self.stream_ttl or DEFAULT_STREAM_TTL) if self.has_stream else 0.0

    @property
    def effective_meta_ttl(self) -> float:
        """0 means the channel metadata (epoch, top offset) never expires."""
        if self.meta_ttl or not self.has_stream or not self.key_ttl:
            return self.meta_ttl
        return max(self.effective_stream_ttl * 10, self.key_ttl)


@dataclass(frozen=True, slots=True)
class MapPublishOptions:
    """A map publish; ``key_mode`` if_new/if_exists, ``expected_position`` is a CAS check."""

    data: bytes = b""
    tags: dict[str, str] | None = None
    client_info: ClientInfo | None = None
    key_mode: str = KEY_MODE_REPLACE
    idempotency_key: str = ""
    idempotent_result_ttl: float = 300.0
    version: int = 0
    version_epoch: str = ""
    expected_position: StreamPosition | None = None
    delta: bool = False  # fan the key's previous value out with it (fossil delta base)
    refresh_ttl_on_suppress: bool = False  # a suppressed publish still renews the key's TTL


@dataclass(frozen=True, slots=True)
class MapRemoveOptions:
    idempotency_key: str = ""
    idempotent_result_ttl: float = 300.0
    expected_position: StreamPosition | None = None
    tags: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class MapUpdateResult:
    """Where a change landed, or why it was suppressed (``suppress_reason``)."""

    position: StreamPosition = field(default_factory=StreamPosition)
    suppressed: bool = False
    suppress_reason: str = ""


@dataclass(frozen=True, slots=True)
class MapStateResult:
    """One page of state: entries in key order, the stream position, the next cursor."""

    publications: list[Publication]
    position: StreamPosition
    cursor: str = ""


class MapBroker(Protocol):
    """Keyed state and change stream of map channels; fans changes out to the node."""

    async def start(self, handler: BrokerEventHandler) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, channel: str) -> None:
        """Start receiving the changes of ``channel`` on this node."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving the changes of ``channel`` on this node."""

    async def publish(
        self, channel: str, key: str, opts: MapPublishOptions, chopts: MapChannelOptions
    ) -> MapUpdateResult: ...

    async def remove(
        self, channel: str, key: str, opts: MapRemoveOptions, chopts: MapChannelOptions
    ) -> MapUpdateResult: ...

    async def read_state(
        self,
        channel: str,
        *,
        cursor: str = "",
        limit: int = -1,
        key: str = "",
        revision: StreamPosition | None = None,
    ) -> MapStateResult:
        """A page of at most ``limit`` entries (-1: all) after ``cursor``; a ``revision``
        whose epoch differs from the channel's raises ``ClientError(112)``."""
        ...

    async def read_stream(self, channel: str, flt: HistoryFilter) -> HistoryResult:
        """The change stream, as ``Broker.history`` reads a channel's history; a ``since``
        older than what the stream still holds raises ``ClientError(112)``."""
        ...

    async def stats(self, channel: str) -> int:
        """The number of keys in the state."""
        ...

    async def clear(self, channel: str) -> None: ...
