"""Redis map broker: map channel state, key TTLs and change stream in Redis (Lua per operation).

Data model and scripts: :mod:`.map_redis_lua`. Changes are published on
``P.map.client.<ch>``; each shard has one PUB/SUB connection (the engine's reconnecting
:class:`~.redis_pubsub.Subscriber`) that subscribes the map channels this node serves.
A cleanup loop removes expired keys every ``cleanup_interval`` (each removal fanned out
like a client's remove), for the channels a ``P.map.expiring`` sorted set lists as due.

As Centrifugo's open-source Redis map broker, it works with standalone Redis (and
client-side sharding over several); a Redis Cluster is refused (its PUB/SUB would need
sharded subscriptions per master).
"""

from __future__ import annotations

import logging
import secrets
import string
import time
from collections.abc import Sequence

import anyio
import msgspec
from anyio.abc import TaskGroup

from ..codes import ErrorCode
from ..config import MapBrokerRedisConfig
from ..errors import ClientError, EngineError
from .base import (
    BrokerEventHandler,
    ClientInfo,
    HistoryFilter,
    HistoryResult,
    Publication,
    StreamPosition,
)
from .map_base import (
    MapChannelOptions,
    MapPublishOptions,
    MapRemoveOptions,
    MapStateResult,
    MapUpdateResult,
)
from .map_redis_lua import EXPIRE, PUBLISH, READ, REMOVE, STATE_PAGE
from .redis import _int, _Shards, _text, build_shards
from .redis_pubsub import Subscriber
from .redis_resp import RespConnection
from .redis_shard import Shard

__all__ = ["RedisMapBroker"]

log = logging.getLogger("centrifuge_asgi.engines.map_redis")


class _Record(msgspec.Struct, array_like=True):
    """One map change as stored and published: key, data, removed, tags, info, time."""

    key: str
    data: bytes
    removed: bool = False
    tags: dict[str, str] | None = None
    info: tuple[str, str, bytes | None, bytes | None] | None = None
    time: int = 0


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Record).decode


def _record(pub: Publication) -> bytes:
    info = pub.info
    packed = None if info is None else (info.user, info.client, info.conn_info, info.chan_info)
    return _encode(_Record(pub.key, pub.data, pub.removed, pub.tags, packed, pub.time))


def _publication(data: bytes, offset: int) -> Publication:
    r = _decode(data)
    info = None if r.info is None else ClientInfo(*r.info)
    return Publication(r.data, offset, info, r.tags, r.time, r.key, r.removed)


def _new_epoch() -> str:
    return "".join(secrets.choice(string.ascii_letters) for _ in range(8))


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisMapBroker:
    """A :class:`~.map_base.MapBroker` over one or more standalone Redis shards."""

    def __init__(
        self,
        shards: Sequence[Shard],
        *,
        cleanup_interval: float = 1.0,
        cleanup_batch_size: int = 100,
        idempotent_result_ttl: float = 300.0,
    ) -> None:
        self._shards = _Shards(shards)
        self.prefix = self._shards.all[0].prefix
        self._cleanup_interval = cleanup_interval
        self._cleanup_batch = cleanup_batch_size
        self._result_ttl = idempotent_result_ttl
        self._handler: BrokerEventHandler | None = None
        self._tg: TaskGroup | None = None
        self._subs: list[Subscriber] = []
        self.malformed = 0  # PUB/SUB messages that could not be decoded (dropped)
        self.cleanup_removed = 0  # expired keys removed (map_broker_cleanup_removed_count)
        self.cleanup_errors = 0

    @classmethod
    def from_config(cls, cfg: MapBrokerRedisConfig) -> RedisMapBroker:
        return cls(
            build_shards(cfg),
            cleanup_interval=cfg.cleanup_interval,
            cleanup_batch_size=cfg.cleanup_batch_size,
            idempotent_result_ttl=cfg.idempotent_result_ttl,
        )

    # ------------------------------------------------------------- names

    def _keys(self, shard: Shard, channel: str) -> list[str]:
        t = f"{self.prefix}.map.%s.{shard.tag(channel)}"
        parts = ("state", "off", "rm", "exp", "ver", "stream", "meta", "keys")
        return [t % part for part in parts]

    def _topic(self, shard: Shard, channel: str) -> bytes:
        return f"{self.prefix}.map.client.{shard.tag(channel)}".encode()

    def _result_key(self, shard: Shard, channel: str, key: str) -> str:
        return f"{self.prefix}.map.res.{shard.tag(channel)}.{key}" if key else ""

    @property
    def _expiring(self) -> str:
        return f"{self.prefix}.map.expiring"

    # ----------------------------------------------------------- lifecycle

    async def start(self, handler: BrokerEventHandler) -> None:
        await self._shards.open()
        for shard in self._shards.all:
            if shard.cluster:
                raise EngineError("the Redis map broker needs standalone Redis, not a cluster")
        self._handler = handler
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        for shard in self._shards.all:
            sub = self._subscriber(shard)
            self._subs.append(sub)
            tg.start_soon(sub.run)
        if self._cleanup_interval > 0:
            tg.start_soon(self._cleanup_loop)
        for sub in self._subs:
            await sub.wait_ready(self._shards.all[0].connect_timeout + 1)

    async def close(self) -> None:
        self._handler = None
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            self._subs.clear()
            with anyio.CancelScope(shield=True):
                await self._shards.close()

    @property
    def subscribers(self) -> list[Subscriber]:
        """Every PUB/SUB connection of this broker (metrics, diagnostics)."""
        return list(self._subs)

    def _subscriber(self, shard: Shard) -> Subscriber:
        marker = f"{self.prefix}.map.client.".encode()

        def on_message(topic: bytes, data: bytes) -> None:
            handler = self._handler
            if handler is None or not topic.startswith(marker):
                return
            try:
                offset, epoch, size, rest = data.split(b":", 3)
                cut = int(size)
                pub = _publication(rest[cut:], int(offset))
                prev = _publication(rest[:cut], 0) if cut else None
            except (ValueError, msgspec.DecodeError) as exc:
                self.malformed += 1
                log.warning("malformed map message on %r: %s", topic, exc)
                return
            channel = topic[len(marker) :].decode()
            if prev is None:
                handler.handle_publication(channel, pub, epoch.decode())
            else:
                handler.handle_publication(channel, pub, epoch.decode(), prev)

        async def dial() -> RespConnection:
            return await shard.dial()

        return Subscriber(
            f"map-{shard.index}",
            dial,
            on_message,
            io_timeout=shard.io_timeout,
        )

    async def subscribe(self, channel: str) -> None:
        shard = await self._shards.of(channel)
        await self._subs[shard.index].subscribe(self._topic(shard, channel))

    async def unsubscribe(self, channel: str) -> None:
        shard = await self._shards.of(channel)
        self._subs[shard.index].unsubscribe(self._topic(shard, channel))

    # -------------------------------------------------------------- writes

    async def _run(
        self, shard: Shard, text: str, keys: list[str], args: list[object]
    ) -> list[object]:
        result = await shard.script(text, keys, args)
        if not isinstance(result, list):
            raise EngineError(f"unexpected script reply {result!r}")
        return result

    @staticmethod
    def _update(reply: list[object]) -> MapUpdateResult:
        reason = _text(reply[2])
        position = StreamPosition(_int(reply[0]), _text(reply[1]))
        return MapUpdateResult(position, suppressed=bool(reason), suppress_reason=reason)

    async def publish(
        self, channel: str, key: str, opts: MapPublishOptions, chopts: MapChannelOptions
    ) -> MapUpdateResult:
        shard = await self._shards.of(channel)
        now = int(time.time() * 1000)
        pub = Publication(opts.data, 0, opts.client_info, opts.tags, now, key)
        removal = Publication(b"", tags=opts.tags, key=key, removed=True)
        expected = opts.expected_position
        keys = [
            *self._keys(shard, channel),
            self._result_key(shard, channel, opts.idempotency_key),
        ]
        args: list[object] = [
            key,
            _record(pub),
            _record(removal),
            opts.key_mode,
            _ms(chopts.key_ttl) if chopts.key_ttl > 0 else 0,
            int(chopts.has_stream),
            chopts.effective_stream_size,
            _ms(chopts.effective_stream_ttl) if chopts.has_stream else 0,
            _ms(chopts.effective_meta_ttl) if chopts.effective_meta_ttl > 0 else 0,
            _new_epoch(),
            opts.version,
            opts.version_epoch,
            expected.offset if expected is not None else -1,
            expected.epoch if expected is not None else "",
            _ms(opts.idempotent_result_ttl or self._result_ttl),
            now,
            self._topic(shard, channel),
            "PUBLISH",
            int(opts.delta),
            int(opts.refresh_ttl_on_suppress),
        ]
        result = self._update(await self._run(shard, PUBLISH, keys, args))
        if chopts.key_ttl > 0 and not result.suppressed:
            await shard.command("ZADD", self._expiring, "NX", now + _ms(chopts.key_ttl), channel)
        return result

    async def remove(
        self, channel: str, key: str, opts: MapRemoveOptions, chopts: MapChannelOptions
    ) -> MapUpdateResult:
        shard = await self._shards.of(channel)
        override = b""
        if opts.tags is not None:
            override = _record(Publication(b"", tags=opts.tags, key=key, removed=True))
        expected = opts.expected_position
        keys = [
            *self._keys(shard, channel),
            self._result_key(shard, channel, opts.idempotency_key),
        ]
        args: list[object] = [
            key,
            override,
            _new_epoch(),
            expected.offset if expected is not None else -1,
            expected.epoch if expected is not None else "",
            _ms(opts.idempotent_result_ttl or self._result_ttl),
            self._topic(shard, channel),
            "PUBLISH",
        ]
        return self._update(await self._run(shard, REMOVE, keys, args))

    async def clear(self, channel: str) -> None:
        shard = await self._shards.of(channel)
        await shard.command("DEL", *self._keys(shard, channel))
        await shard.command("ZREM", self._expiring, channel)

    # --------------------------------------------------------------- reads

    async def read_state(
        self,
        channel: str,
        *,
        cursor: str = "",
        limit: int = -1,
        key: str = "",
        revision: StreamPosition | None = None,
    ) -> MapStateResult:
        shard = await self._shards.of(channel)
        names = self._keys(shard, channel)
        keys = [names[6], names[0], names[1], names[7]]
        if limit == 0 and not key:
            keys_args: list[object] = [_new_epoch(), "", 0, "\x00"]  # no key: position only
        else:
            keys_args = [_new_epoch(), cursor, limit, key]
        top, epoch, next_cursor, flat = await self._run(shard, STATE_PAGE, keys, keys_args)
        position = StreamPosition(_int(top), _text(epoch))
        if revision is not None and revision.epoch != position.epoch:
            raise ClientError.of(ErrorCode.UNRECOVERABLE_POSITION)
        items = flat if isinstance(flat, list) else []
        pubs = [
            _publication(bytes(items[i + 1]), _int(items[i + 2])) for i in range(0, len(items), 3)
        ]
        return MapStateResult(pubs, position, _text(next_cursor))

    async def read_stream(self, channel: str, flt: HistoryFilter) -> HistoryResult:
        flt.validate()
        shard = await self._shards.of(channel)
        names = self._keys(shard, channel)
        since = flt.since
        args: list[object] = [
            _new_epoch(),
            int(flt.limit != 0),
            int(flt.reverse),
            # exclusive of since; as text: an offset may be any uint64 (validate() refused
            # a reverse read since 0, the one ID with nothing before it)
            ("+" if flt.reverse else "-") if since is None else f"({since.offset}-0",
            flt.limit,
        ]
        top, epoch, first, entries = await self._run(shard, READ, [names[6], names[5]], args)
        position = StreamPosition(_int(top), _text(epoch))
        if since is not None and since.epoch and since.epoch != position.epoch:
            raise ClientError.of(ErrorCode.UNRECOVERABLE_POSITION)
        if since is not None and not flt.reverse and since.offset < position.offset:
            head = _int(first) or position.offset + 1
            if since.offset + 1 < head:
                raise ClientError.of(ErrorCode.UNRECOVERABLE_POSITION)
        pubs = []
        for entry_id, fields in entries if isinstance(entries, list) else ():
            offset = int(bytes(entry_id).split(b"-", 1)[0])
            pubs.append(_publication(bytes(fields[1]), offset))
        return HistoryResult(pubs, position)

    async def stats(self, channel: str) -> int:
        shard = await self._shards.of(channel)
        return _int(await shard.command("HLEN", self._keys(shard, channel)[0]))

    # ------------------------------------------------------------- expiry

    async def _cleanup_loop(self) -> None:
        while True:
            await anyio.sleep(self._cleanup_interval)
            for shard in self._shards.all:
                try:
                    self.cleanup_removed += await self.expire_due(shard)
                except Exception as exc:  # an outage skips a round; keys expire later
                    self.cleanup_errors += 1
                    log.warning("map key expiry on %s failed: %s", shard, exc)

    async def expire_due(self, shard: Shard) -> int:
        """Remove the expired keys of every due channel of ``shard``; how many went."""
        now = int(time.time() * 1000)
        due = await shard.command("ZRANGEBYSCORE", self._expiring, "-inf", now, "LIMIT", 0, 100)
        removed = 0
        for raw in due or ():
            channel = _text(raw)
            keys = self._keys(shard, channel)
            args: list[object] = [now, self._cleanup_batch, self._topic(shard, channel), "PUBLISH"]
            count, next_due = await self._run(shard, EXPIRE, keys, args)
            removed += _int(count)
            if _int(next_due) < 0:
                await shard.command("ZREM", self._expiring, channel)
            else:
                await shard.command("ZADD", self._expiring, _int(next_due), channel)
        return removed
