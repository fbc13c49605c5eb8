"""Build the broker and presence manager a config asks for (``engine.*``, ``broker.*``,
``presence_manager.*``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Broker, PresenceManager
from .memory import MemoryBroker, MemoryPresenceManager

if TYPE_CHECKING:
    from ..config import Config


def build_engine(config: Config) -> tuple[Broker, PresenceManager]:
    """The engine for ``config``; ConfigError for a type this build cannot provide."""
    if config.engine.type == "memory":
        return MemoryBroker(), MemoryPresenceManager()
    raise ConfigError(f"engine.type {config.engine.type!r} is not available yet: only 'memory' is")
