"""The ``nats_jetstream`` consumer: a durable pull consumer of a JetStream stream.

The stream must exist (Centrifugo does not create streams either). The durable consumer
``durable_consumer_name`` is created (explicit acks, ``deliver_policy`` new or all,
``subjects`` as filters, ``max_ack_pending``) unless ``use_existing_consumer`` binds to
one that must already exist. A message's ``method_header`` header names the API method
and its data is the request (without the header, the data is ``{"method", "payload"}``).
It is acknowledged once its command ran or was skipped as bad; a command to retry (API
error 100) is negatively acknowledged with a growing delay, so JetStream redelivers it;
one whose consumer died is redelivered after the ack wait (30 s). A lost connection is
reported (``retrying``) while nats-py reconnects, every ``RECONNECT_WAIT`` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .backoff import next_delay
from .dispatch import RetryLater
from .status import Reporter

if TYPE_CHECKING:
    from ..config import NatsJetStreamConsumerConfig

log = logging.getLogger("centrifuge_asgi.consumers")

Dispatch = Callable[[str, bytes], Awaitable[bool]]
ACK_WAIT = 30.0
FETCH_WAIT = 5.0
CONNECT_TIMEOUT = 5.0
RECONNECT_WAIT = 0.5


class NatsJetStreamConsumer:
    """Consumes ``config.stream_name`` through ``config.durable_consumer_name``."""

    def __init__(
        self, name: str, config: NatsJetStreamConsumerConfig, dispatch: Dispatch, report: Reporter
    ) -> None:
        self.name = name
        self.config = config
        self.dispatch = dispatch
        self.report = report

    async def run(self) -> None:
        """Consume until cancelled; raises when NATS or the stream is unavailable."""
        import nats
        from nats.errors import TimeoutError as NatsTimeout

        cfg = self.config

        async def disconnected() -> None:  # nats-py reconnects by itself meanwhile
            self.report.failed(ConnectionError("NATS connection lost"))

        async def reconnected() -> None:
            self.report.ok()

        options: dict[str, Any] = {
            "servers": [cfg.url],
            "connect_timeout": CONNECT_TIMEOUT,
            "max_reconnect_attempts": -1,
            "allow_reconnect": True,
            "reconnect_time_wait": RECONNECT_WAIT,
            "disconnected_cb": disconnected,
            "reconnected_cb": reconnected,
        }
        if cfg.credentials_file:
            options["user_credentials"] = cfg.credentials_file
        elif cfg.username:
            options["user"], options["password"] = cfg.username, cfg.password
        elif cfg.token:
            options["token"] = cfg.token
        nc = await nats.connect(**options)
        try:
            js = nc.jetstream()
            await self._ensure_consumer(js)
            sub = await js.pull_subscribe_bind(
                durable=cfg.durable_consumer_name, stream=cfg.stream_name
            )
            self.report.ok()
            batch = max(1, min(cfg.max_ack_pending, 100))
            while True:
                try:
                    messages = await sub.fetch(batch, timeout=FETCH_WAIT)
                except NatsTimeout:
                    continue
                for msg in messages:
                    await self._handle(msg)
        finally:
            await nc.close()

    async def _ensure_consumer(self, js: Any) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        cfg = self.config
        if cfg.use_existing_consumer:  # fails when it does not exist
            await js.consumer_info(cfg.stream_name, cfg.durable_consumer_name)
            return
        subjects = list(cfg.subjects)
        await js.add_consumer(
            cfg.stream_name,
            ConsumerConfig(
                name=cfg.durable_consumer_name,
                durable_name=cfg.durable_consumer_name,
                deliver_policy=DeliverPolicy.ALL
                if cfg.deliver_policy == "all"
                else DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT,
                max_ack_pending=cfg.max_ack_pending,
                filter_subject=subjects[0] if len(subjects) == 1 else None,
                filter_subjects=subjects if len(subjects) > 1 else None,
            ),
        )

    async def _handle(self, msg: Any) -> None:
        headers = msg.headers or {}
        method = headers.get(self.config.method_header, "")
        try:
            ran = await self.dispatch(method, msg.data)
        except RetryLater as exc:
            retries = self.report.failed(exc)
            log.error("consumer %s: processing message failed: %s", self.name, exc)
            delivered = getattr(msg.metadata, "num_delivered", retries) or retries
            await msg.nak(delay=next_delay(min(delivered, 10)))
            return
        await msg.ack()
        self.report.ok(1, int(not ran))
