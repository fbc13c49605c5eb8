"""Build the broker and presence manager a config asks for (``engine.*``, ``broker.*``,
``presence_manager.*``).

``engine.type`` (``memory`` or ``redis``) gives both roles; ``broker.enabled`` replaces
the broker with ``broker.type`` (``memory``, ``redis`` or ``nats``) and
``presence_manager.enabled`` replaces the presence manager with
``presence_manager.type`` (``memory`` or ``redis``). Redis and NATS clients are imported
only when configured, so their extras stay optional.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Broker, PresenceManager
from .memory import MemoryBroker, MemoryPresenceManager

if TYPE_CHECKING:
    from ..config import BrokerRedisConfig, Config, EngineRedisConfig

log = logging.getLogger("centrifuge_asgi.engines")


def _redis_broker(cfg: EngineRedisConfig | BrokerRedisConfig, key: str) -> Broker:
    from .redis import RedisBroker

    if cfg.history_use_lists:
        log.warning("%s.history_use_lists is not supported: history uses streams", key)
    return RedisBroker.from_config(cfg)


def build_engine(config: Config) -> tuple[Broker, PresenceManager]:
    """The engine for ``config``; ConfigError for a type this build cannot provide."""
    engine = config.engine
    broker: Broker
    presence: PresenceManager
    if engine.type == "memory":
        broker, presence = MemoryBroker(), MemoryPresenceManager()
    elif engine.type == "redis":
        from .redis import RedisPresenceManager

        if config.broker.enabled and config.presence_manager.enabled:
            broker, presence = MemoryBroker(), MemoryPresenceManager()  # both replaced below
        else:
            broker = _redis_broker(engine.redis, "engine.redis")
            presence = RedisPresenceManager.from_config(engine.redis)
    else:
        raise ConfigError(f"engine.type {engine.type!r} is not supported: use memory or redis")

    if config.broker.enabled:
        kind = config.broker.type
        if kind == "memory":
            broker = MemoryBroker()
        elif kind == "redis":
            broker = _redis_broker(config.broker.redis, "broker.redis")
        elif kind == "nats":
            from .nats import NatsBroker

            broker = NatsBroker.from_config(config.broker.nats)
        else:
            raise ConfigError(f"broker.type {kind!r} is not supported: use memory, redis or nats")

    if config.presence_manager.enabled:
        kind = config.presence_manager.type
        if kind == "memory":
            presence = MemoryPresenceManager()
        elif kind == "redis":
            from .redis import RedisPresenceManager

            presence = RedisPresenceManager.from_config(config.presence_manager.redis)
        else:
            raise ConfigError(
                f"presence_manager.type {kind!r} is not supported: use memory or redis"
            )
    return broker, presence
