"""Engines: the broker (fan-out between nodes, history streams), the presence manager and
the controller (node-to-node messages)."""

from .base import (
    Broker,
    BrokerEventHandler,
    Capabilities,
    ClientInfo,
    ControlEventHandler,
    Controller,
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
    "Capabilities",
    "ClientInfo",
    "ControlEventHandler",
    "Controller",
    "HistoryFilter",
    "HistoryResult",
    "PresenceManager",
    "PresenceStats",
    "Publication",
    "PublishOptions",
    "PublishResult",
    "StreamPosition",
]
