"""Engines: the broker (fan-out between nodes, history streams) and the presence manager."""

from .base import (
    Broker,
    BrokerEventHandler,
    ClientInfo,
    HistoryFilter,
    HistoryResult,
    PresenceManager,
    PresenceStats,
    Publication,
    PublishOptions,
    PublishResult,
    StreamPosition,
)

__all__ = [
    "Broker",
    "BrokerEventHandler",
    "ClientInfo",
    "HistoryFilter",
    "HistoryResult",
    "PresenceManager",
    "PresenceStats",
    "Publication",
    "PublishOptions",
    "PublishResult",
    "StreamPosition",
]
