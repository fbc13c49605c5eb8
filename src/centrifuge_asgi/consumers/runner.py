"""Runs the enabled ``consumers[]`` of a node, side by side, for as long as the node runs.

Each consumer runs in the node's lifespan (its task group; cancelled at the node's exit).
A consumer that fails as a whole (its database or broker unreachable at start, a lost
connection it cannot recover by itself) is restarted after a bounded, jittered backoff;
its :class:`~.status.ConsumerStatus` says ``retrying`` with the error meanwhile, and the
node's observer counts each failure (``centrifugo_consumers_errors_total``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from .backoff import next_delay
from .dispatch import CommandDispatcher
from .status import ConsumerStatus, Reporter

if TYPE_CHECKING:
    from ..config import ConsumerConfig
    from ..node import Node

log = logging.getLogger("centrifuge_asgi.consumers")

Dispatch = Callable[[str, bytes], Awaitable[bool]]
_statuses: weakref.WeakKeyDictionary[Any, dict[str, ConsumerStatus]] = weakref.WeakKeyDictionary()


class Consumer(Protocol):
    async def run(self) -> None: ...


def statuses(node: Node) -> dict[str, ConsumerStatus]:
    """The status of each enabled consumer of ``node`` (empty before its lifespan)."""
    return _statuses.get(node, {})


def build(
    config: ConsumerConfig, dispatch: Dispatch, report: Reporter, node_id: str = ""
) -> Consumer:
    """The consumer of ``config.type`` (its client library is imported here, lazily)."""
    if config.type == "postgresql":
        from .postgresql import PostgresConsumer

        return PostgresConsumer(config.name, config.postgresql, dispatch, report)
    if config.type == "redis_stream":
        from .redis_stream import RedisStreamConsumer

        consumer = node_id or config.name
        return RedisStreamConsumer(config.name, config.redis_stream, dispatch, report, consumer)
    if config.type == "nats_jetstream":
        from .nats_jetstream import NatsJetStreamConsumer

        return NatsJetStreamConsumer(config.name, config.nats_jetstream, dispatch, report)
    raise ValueError(f"unknown consumer type {config.type!r}")  # the config rejects it first


async def run_consumers(
    node: Node,
    dispatch: Dispatch | None = None,
    configs: Sequence[ConsumerConfig] | None = None,
) -> None:
    """Run every enabled consumer of ``node.config`` (or of ``configs``) until cancelled.

    ``dispatch`` defaults to the node's server API executor (:class:`CommandDispatcher`);
    the node's lifespan calls this with the defaults.
    """
    configs = node.config.consumers if configs is None else configs
    enabled = [c for c in configs if c.enabled]
    for config in configs:
        if not config.enabled:
            log.info("consumer %s (%s) is not enabled, skip", config.name, config.type)
    if not enabled:
        return
    run = dispatch or CommandDispatcher(node).dispatch
    table = {c.name: ConsumerStatus(c.name, c.type) for c in enabled}
    _statuses[node] = table
    try:
        async with anyio.create_task_group() as tg:
            for config in enabled:
                report = Reporter(table[config.name], node.metrics)
                tg.start_soon(supervise, config, run, report, node.node_id)
    finally:
        for status in table.values():
            status.state = "stopped"


async def supervise(
    config: ConsumerConfig, dispatch: Dispatch, report: Reporter, node_id: str = ""
) -> None:
    """Run one consumer; restart it with backoff whenever it fails."""
    log.info("running consumer %s (%s)", config.name, config.type)
    while True:
        try:
            await build(config, dispatch, report, node_id).run()
        except Exception as exc:
            exc = _root(exc)
            retries = report.failed(exc)
            delay = next_delay(retries)
            log.error(
                "consumer %s (%s) failed, restarting in %.2f s: %s",
                config.name,
                config.type,
                delay,
                exc,
            )
            await anyio.sleep(delay)
        else:
            return


def _root(exc: Exception) -> Exception:
    """The one error inside task-group wrappers (what the status and the log should say)."""
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
