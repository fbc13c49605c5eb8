"""The ``postgresql`` consumer: Centrifugo's transactional outbox table.

The table (:func:`..outbox_table.create_table_sql`) holds one server API command per row:
``id BIGSERIAL, method TEXT, payload JSONB, partition INTEGER, created_at TIMESTAMPTZ``.
Each partition ``0 … num_partitions-1`` is drained by one loop, in ``id`` order, under a
transaction-scoped advisory lock named after the consumer and the partition (so several
nodes may consume one table and the order within a partition holds):

1. ``BEGIN``; lock; select up to ``partition_select_limit`` rows of the partition;
2. run their commands in order; stop at the first one to retry (API error 100);
3. delete the rows whose command ran (or was skipped as bad); ``COMMIT``.

A node killed between 2 and 3 rolls back, so the rows run again: delivery is at least
once, and the idempotency key of a publish (``outbox_table.publish`` sets one) makes the
repeat a no-op. A loop sleeps ``partition_poll_interval`` when it found fewer rows than
the limit, or until ``NOTIFY <partition_notification_channel>, '<partition>'`` wakes it
(LISTEN on ``partition_notification_dsn`` when set, for PgBouncer setups).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .backoff import next_delay
from .dispatch import RetryLater
from .status import Reporter

if TYPE_CHECKING:
    from ..config import PostgresConsumerConfig

log = logging.getLogger("centrifuge_asgi.consumers")

Dispatch = Callable[[str, bytes], Awaitable[bool]]
CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 60.0  # an advisory lock held by another node may be waited for this long
LISTEN_RETRY = 1.0


class PostgresConsumer:
    """Drains an outbox table through ``dispatch`` (see the module docstring)."""

    def __init__(
        self, name: str, config: PostgresConsumerConfig, dispatch: Dispatch, report: Reporter
    ) -> None:
        self.name = name
        self.config = config
        self.dispatch = dispatch
        self.report = report
        self.table = config.outbox_table_name  # checked by the config: [schema.]identifier
        self.lock_prefix = f"centrifugo_partition_lock_{name}"
        self._select = (
            f"SELECT id, method, payload::text FROM {self.table}"
            " WHERE partition=$1 ORDER BY id ASC LIMIT $2"
        )
        self._delete = f"DELETE FROM {self.table} WHERE id = ANY($1::bigint[])"

    async def run(self) -> None:
        """Consume until cancelled; raises when the database cannot be reached at start."""
        import asyncpg  # type: ignore[import-untyped]

        cfg = self.config
        # one connection per partition, and the LISTEN one unless it has its own DSN
        listens_here = bool(cfg.partition_notification_channel) and not (
            cfg.partition_notification_dsn
        )
        pool = await asyncpg.create_pool(
            cfg.dsn,
            min_size=1,
            max_size=cfg.num_partitions + listens_here,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
        )
        try:
            wakeups = [
                anyio.create_memory_object_stream[None](1) for _ in range(cfg.num_partitions)
            ]
            self.report.ok()
            async with anyio.create_task_group() as tg:
                if cfg.partition_notification_channel:
                    tg.start_soon(self._listen_loop, pool, [send for send, _ in wakeups])
                for partition, (_, receive) in enumerate(wakeups):
                    tg.start_soon(self._partition_loop, pool, partition, receive)
        finally:
            with anyio.move_on_after(5, shield=True) as scope:
                await pool.close()
            if scope.cancelled_caught:
                pool.terminate()

    async def _partition_loop(
        self, pool: Any, partition: int, wakeup: MemoryObjectReceiveStream[None]
    ) -> None:
        limit, poll = self.config.partition_select_limit, self.config.partition_poll_interval
        retries = 0
        while True:
            try:
                count = await self.process_once(pool, partition)
            except Exception as exc:  # an outage or a command to retry: back off, try again
                retries = self.report.failed(exc)
                log.error(
                    "consumer %s: error processing postgresql outbox partition %d: %s",
                    self.name,
                    partition,
                    exc,
                )
                await anyio.sleep(next_delay(retries))
                continue
            if count < limit:
                with anyio.move_on_after(poll):
                    await wakeup.receive()

    async def process_once(self, pool: Any, partition: int) -> int:
        """One transaction over a partition; returns how many rows it removed.

        Raises :class:`RetryLater` (after committing the removal of the rows before it)
        when a command must be retried, or the driver's error on an outage.
        """
        retry: RetryLater | None = None
        done: list[int] = []
        skipped = 0
        async with pool.acquire() as conn, conn.transaction():
            lock = self.lock_prefix + str(partition)
            if self.config.use_try_lock:
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", lock):
                    return 0  # another node drains this partition now
            else:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock)
            rows = await conn.fetch(self._select, partition, self.config.partition_select_limit)
            for row_id, method, payload in rows:
                try:
                    ran = await self.dispatch(method, payload.encode())
                except RetryLater as exc:
                    retry = exc
                    break
                done.append(row_id)
                skipped += not ran
            if done:
                await conn.execute(self._delete, done)
        self.report.ok(len(done), skipped)
        if retry is not None:
            raise retry
        return len(done)

    async def _listen_loop(self, pool: Any, wakeups: list[MemoryObjectSendStream[None]]) -> None:
        while True:
            try:
                await self._listen(pool, wakeups)
            except Exception as exc:
                log.error("consumer %s: error listening outbox notifications: %s", self.name, exc)
            await anyio.sleep(LISTEN_RETRY)

    async def _listen(self, pool: Any, wakeups: list[MemoryObjectSendStream[None]]) -> None:
        import asyncpg

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            try:
                partition = int(payload)
            except ValueError:
                log.error("consumer %s: bad outbox notification %r", self.name, payload)
                return
            if not 0 <= partition < len(wakeups):
                log.error("consumer %s: outbox partition %d is out of range", self.name, partition)
                return
            with contextlib.suppress(anyio.WouldBlock):  # a wakeup is already pending
                wakeups[partition].send_nowait(None)

        lost = anyio.Event()
        dsn = self.config.partition_notification_dsn
        if dsn:
            conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
        else:
            conn = await pool.acquire()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            channel = self.config.partition_notification_channel
            await conn.add_listener(channel, on_notify)
            for send in wakeups:  # rows may have come while nobody listened
                with contextlib.suppress(anyio.WouldBlock):
                    send.send_nowait(None)
            while not lost.is_set():  # asyncpg reports a lost connection only on use
                with anyio.move_on_after(max(1.0, math.ceil(self.config.partition_poll_interval))):
                    await lost.wait()
                if not lost.is_set():
                    await conn.execute("SELECT 1")
            raise ConnectionError("LISTEN connection lost")
        finally:
            with anyio.move_on_after(2, shield=True):
                if not conn.is_closed():
                    await conn.remove_listener(
                        self.config.partition_notification_channel, on_notify
                    )
                if dsn:
                    await conn.close()
                else:
                    await pool.release(conn)
