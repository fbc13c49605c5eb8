"""The ``redis_stream`` consumer: Redis Streams read through a consumer group.

For each of ``streams`` the group ``consumer_group`` is created at ``$`` (MKSTREAM) when
missing, and ``num_workers`` readers take new entries (``XREADGROUP … >``). An entry's
``method_value`` field names the API method and its ``payload_value`` field holds the
request (without a method field, the payload is ``{"method", "payload"}``). The entry is
acknowledged (``XACK``) once its command ran or was skipped as bad; one to retry (API
error 100), or one whose consumer died, stays pending and is claimed again
(``XAUTOCLAIM``) once idle for ``visibility_timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from .dispatch import RetryLater
from .status import Reporter

if TYPE_CHECKING:
    from ..config import RedisStreamConsumerConfig

log = logging.getLogger("centrifuge_asgi.consumers")

Dispatch = Callable[[str, bytes], Awaitable[bool]]
BLOCK = 5.0  # seconds a read waits for new entries
RECLAIM_INTERVAL = 5.0  # at most; shorter when visibility_timeout is shorter
RECLAIM_COUNT = 100


class RedisStreamConsumer:
    """Consumes ``config.streams`` as ``consumer`` of ``config.consumer_group``."""

    def __init__(
        self,
        name: str,
        config: RedisStreamConsumerConfig,
        dispatch: Dispatch,
        report: Reporter,
        consumer: str,
    ) -> None:
        self.name = name
        self.config = config
        self.dispatch = dispatch
        self.report = report
        self.consumer = consumer  # this node's name in the group (its node id)
        self.method_field = config.method_value.encode()
        self.payload_field = config.payload_value.encode()

    async def run(self) -> None:
        """Consume until cancelled; raises on a Redis error (the runner restarts it)."""
        import redis.asyncio as aioredis
        from redis.exceptions import ResponseError

        cfg = self.config
        address = cfg.address[0]
        url = address if "://" in address else f"redis://{address}"
        client = aioredis.Redis.from_url(
            url,
            db=cfg.db or None,
            username=cfg.user or None,
            password=cfg.password or None,
            client_name=cfg.client_name or None,
            socket_connect_timeout=cfg.connect_timeout,
            socket_timeout=cfg.io_timeout + BLOCK,
            protocol=2 if cfg.force_resp2 else 3,
        )
        try:
            for stream in cfg.streams:
                try:
                    await client.xgroup_create(stream, cfg.consumer_group, "$", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            self.report.ok()
            async with anyio.create_task_group() as tg:
                for stream in cfg.streams:
                    for _ in range(cfg.num_workers):
                        tg.start_soon(self._read_loop, client, stream)
                    tg.start_soon(self._reclaim_loop, client, stream)
        finally:
            with anyio.move_on_after(2, shield=True):
                await client.aclose()

    async def _read_loop(self, client: Any, stream: str) -> None:
        group, block_ms = self.config.consumer_group, int(BLOCK * 1000)
        while True:
            reply = await client.xreadgroup(
                group, self.consumer, {stream: ">"}, count=1, block=block_ms
            )
            for _stream, entries in _stream_entries(reply):
                for entry_id, fields in entries:
                    await self._handle(client, stream, entry_id, fields)

    async def _reclaim_loop(self, client: Any, stream: str) -> None:
        cfg = self.config
        idle_ms = max(1, int(cfg.visibility_timeout * 1000))
        while True:
            await anyio.sleep(min(RECLAIM_INTERVAL, cfg.visibility_timeout))
            start: Any = "0-0"
            while True:
                reply = await client.xautoclaim(
                    stream, cfg.consumer_group, self.consumer, idle_ms, start, RECLAIM_COUNT
                )
                start, entries = reply[0], reply[1]
                for entry_id, fields in entries:
                    if fields is not None:  # None: the entry was deleted meanwhile
                        await self._handle(client, stream, entry_id, fields)
                if start in (b"0-0", "0-0"):
                    break

    async def _handle(self, client: Any, stream: str, entry_id: bytes, fields: Any) -> None:
        payload = fields.get(self.payload_field)
        if payload is None:
            log.error(
                "consumer %s: no %r value in stream entry %s, skip",
                self.name,
                self.config.payload_value,
                entry_id,
            )
            ran = False
        else:
            method = fields.get(self.method_field, b"").decode(errors="replace")
            try:
                ran = await self.dispatch(method, payload)
            except RetryLater as exc:  # stays pending: claimed again after the timeout
                self.report.failed(exc)
                log.error("consumer %s: error processing redis stream message: %s", self.name, exc)
                return
        await client.xack(stream, self.config.consumer_group, entry_id)
        self.report.ok(1, int(not ran))


def _stream_entries(reply: Any) -> list[tuple[Any, list[tuple[bytes, Any]]]]:
    """XREADGROUP's reply as (stream, entries), in RESP2 (a list) or RESP3 (a map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(k, v[0] if v and isinstance(v[0], list) else v) for k, v in reply.items()]
    return [(item[0], item[1]) for item in reply]
