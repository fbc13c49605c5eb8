"""Publications to one Redis shard, sent in batches: one round trip per batch.

While a batch is on the wire, later publications queue; the next batch carries all of
them (up to ``MAX_BATCH``) in one redis-py pipeline (no MULTI: each command stands on
its own). One writer per shard sends the batches one after another, on one connection
at a time, so Redis runs the publications in the order they were queued: the order of
a channel's publications is the order of the ``publish`` calls that queued them.

What a result means does not change: a publication's :class:`~..pending.Pending` is
settled with its own reply from Redis (its stream position, or Redis's error for that
command). When the batch as a whole fails (connection lost, ``io_timeout``), every
publication in it fails with :class:`~..errors.EngineUnavailable`: as for a single
command that timed out, Redis may or may not have run it. A script Redis no longer
knows (``NOSCRIPT``, after a restart or ``SCRIPT FLUSH``) is loaded again and the
publications that got ``NOSCRIPT`` are sent again, in their order.

The queue is bounded (``MAX_QUEUED``); :meth:`PublishPipeline.space` waits for room.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from ..errors import EngineError, EngineUnavailable
from ..pending import Pending
from .redis_shard import Shard

try:
    import redis.exceptions as redis_errors
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the Redis engine needs redis-py: pip install 'centrifuge-asgi[redis]'"
    ) from exc

__all__ = ["MAX_BATCH", "MAX_QUEUED", "PublishPipeline"]

log = logging.getLogger("centrifuge_asgi.engines.redis")

MAX_BATCH = 256  # publications per round trip
MAX_QUEUED = 2048  # publications waiting for a round trip, per shard

Convert = Callable[[object], Any]


class _Call:
    __slots__ = ("args", "convert", "pending", "script")

    def __init__(
        self, script: str, args: tuple[object, ...], convert: Convert, pending: Pending[Any]
    ) -> None:
        self.script = script  # the Lua text, or "" for a plain command
        self.args = args  # the command (plain), or keys count + keys + args (script)
        self.convert = convert
        self.pending = pending


class PublishPipeline:
    """The batching writer of one shard (started by the broker in its task group)."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self._queue: deque[_Call] = deque()
        self._wake = anyio.Event()
        self._room: anyio.Event | None = None
        self._shas: dict[str, str] = {}
        self.closed = False
        self.batches = 0  # round trips made (for tests and diagnostics)

    def full(self) -> bool:
        return len(self._queue) >= MAX_QUEUED

    async def space(self) -> None:
        """Wait until a publication can be queued (back-pressure)."""
        while self.full() and not self.closed:
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()

    def command(self, args: tuple[object, ...], convert: Convert) -> Pending[Any]:
        """Queue a plain command (no await: the order of calls is the order in Redis)."""
        return self._put("", args, convert)

    def script(
        self, text: str, keys: Sequence[str], args: Sequence[object], convert: Convert
    ) -> Pending[Any]:
        """Queue a Lua script call (EVALSHA)."""
        return self._put(text, (len(keys), *keys, *args), convert)

    def _put(self, script: str, args: tuple[object, ...], convert: Convert) -> Pending[Any]:
        pending: Pending[Any] = Pending()
        if self.closed:
            pending.set_error(EngineUnavailable(f"redis {self.shard} is closed"))
            return pending
        self._queue.append(_Call(script, args, convert, pending))
        self._wake.set()
        return pending

    async def run(self) -> None:
        """Send batches until cancelled; what is still queued then fails."""
        queue = self._queue
        try:
            while True:
                if not queue:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                batch = [queue.popleft() for _ in range(min(MAX_BATCH, len(queue)))]
                room = self._room
                if room is not None and not self.full():
                    self._room = None
                    room.set()
                await self._send(batch)
        finally:
            self.closed = True
            error = EngineUnavailable(f"redis {self.shard} is closed")
            while queue:
                queue.popleft().pending.set_error(error)
            if self._room is not None:
                self._room.set()

    async def _send(self, batch: list[_Call]) -> None:
        self.batches += 1
        try:
            replies = await self.shard.call(self._execute, batch)
        except EngineError as exc:
            for call in batch:
                call.pending.set_error(exc)
            return
        except Exception as exc:  # unexpected: fail this batch, keep the writer
            log.exception("redis %s: a publish batch failed", self.shard)
            for call in batch:
                call.pending.set_error(EngineError(f"redis {self.shard}: {exc!r}"))
            return
        except BaseException:  # cancelled mid-flight: nobody will know what Redis ran
            error = EngineUnavailable(f"redis {self.shard}: publishing was cancelled")
            for call in batch:
                call.pending.set_error(error)
            raise
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                call.pending.set_error(EngineError(f"redis {self.shard}: {reply}"))
                continue
            try:
                value = call.convert(reply)
            except EngineError as exc:
                call.pending.set_error(exc)
            except Exception as exc:  # a reply of an unexpected shape
                call.pending.set_error(EngineError(f"redis {self.shard}: bad reply: {exc!r}"))
            else:
                call.pending.set_result(value)

    def _sha(self, text: str) -> str:
        sha = self._shas.get(text)
        if sha is None:
            sha = self._shas[text] = hashlib.sha1(text.encode()).hexdigest()
        return sha

    async def _execute(self, batch: list[_Call]) -> list[object]:
        """One pipeline round trip (two when scripts must be loaded again)."""
        client = self.shard.client
        if client is None:
            raise EngineUnavailable(f"redis {self.shard} is closed")
        replies = await self._round_trip(client, batch)
        missing = [i for i, r in enumerate(replies) if isinstance(r, redis_errors.NoScriptError)]
        if missing:  # Redis restarted or flushed its scripts: load them, send those again
            for text in {batch[i].script for i in missing}:
                await client.execute_command("SCRIPT", "LOAD", text)
            again = await self._round_trip(client, [batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _round_trip(self, client: Any, calls: list[_Call]) -> list[object]:
        pipe = client.pipeline(transaction=False)
        for call in calls:
            if call.script:
                pipe.execute_command("EVALSHA", self._sha(call.script), *call.args)
            else:
                pipe.execute_command(*call.args)
        replies: list[object] = await pipe.execute(raise_on_error=False)
        return replies
