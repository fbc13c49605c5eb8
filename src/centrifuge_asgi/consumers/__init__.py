"""Asynchronous consumers: server API commands from a PostgreSQL outbox table, Redis
Streams or NATS JetStream, run by the node's API executor (Centrifugo v6 ``consumers``).

The node starts :func:`run_consumers` in its lifespan when ``consumers[]`` has an enabled
item. :mod:`.outbox_table` writes outbox rows inside the application's own transaction.
"""

from __future__ import annotations

from .dispatch import CommandDispatcher, RetryLater
from .runner import run_consumers, statuses
from .status import ConsumerStatus

__all__ = ["CommandDispatcher", "ConsumerStatus", "RetryLater", "run_consumers", "statuses"]
