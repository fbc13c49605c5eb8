"""The Redis engine: :class:`RedisBroker` and :class:`RedisPresenceManager` (redis-py asyncio).

Data model (``P`` = prefix; in a Redis Cluster ``<ch>`` is wrapped in a hash tag
``{<ch>}`` so that a channel's keys and topic share a slot):

* ``P.stream.<ch>`` (STREAM, entry ID ``<offset>-0``, field ``d``) and
  ``P.stream.meta.<ch>`` (HASH ``e`` epoch, ``s`` top, ``v``/``ve`` version): history;
  the stream expires ``history_ttl`` after the last publish, the meta
  ``history_meta_ttl`` after the last publish or read;
* ``P.result.<ch>.<key>`` (HASH ``e``/``s``): an idempotent publish result;
* ``P.presence.data.<ch>`` (HASH client → info) and ``P.presence.expire.<ch>`` (ZSET
  client → expire-at): presence, refreshed by live connections, expiring after
  ``presence_ttl`` (60 s) without refresh;
* topics ``P.client.<ch>`` (publications, join, leave; ``SPUBLISH`` in a cluster),
  ``P.control`` (every node) and ``P.node.<id>`` (one node).

Publishing appends to the stream and broadcasts in one Lua script, so the offset order
on the topic is the stream order. Every key written has a TTL. Publications are queued
per shard and sent many per round trip, in the order they were queued
(:mod:`.redis_pipeline`); each caller still gets Redis's reply to its own publication.

Each node remembers the highest stream position Redis showed it per channel (publish
results, history reads, publications received) and hands it to the scripts: a stream
whose top fell below it under the same epoch lost publications the node saw (an
asynchronous replica was promoted after a failover) and moves to a new epoch, so its
subscribers are told (``recovered: false``) instead of skipping the reissued offsets.

Each shard has one dedicated PUB/SUB connection (a cluster: one per master holding the
node's channels, plus one for control) that subscribes a channel while the node has local
subscribers, batches changes, redials every 250 ms after a failure, resubscribes every
channel the node serves, and probes a connection that has been silent for
``probe_interval`` seconds. A cluster master that cannot be dialled any more gives its
channels to whichever master serves their slots now (a replica promoted in its place).
A subscribe while the connection is down raises
:class:`~centrifuge_asgi.errors.EngineUnavailable`; every command is bounded by
``io_timeout``.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import string
import time
import uuid
from collections.abc import Sequence

import anyio
from anyio.abc import TaskGroup

from ..codes import ErrorCode
from ..config import PresenceRedisConfig, RedisConfig
from ..errors import ClientError, EngineError, EngineUnavailable
from ..pending import Pending
from .base import (
    BrokerEventHandler,
    Capabilities,
    ClientInfo,
    ControlEventHandler,
    HistoryFilter,
    HistoryResult,
    PresenceStats,
    PublishOptions,
    PublishResult,
    StreamPosition,
)
from .redis_codec import (
    decode_event,
    decode_info,
    decode_publication,
    encode_info,
    encode_publication,
    frame_join,
    frame_leave,
)
from .redis_lua import HISTORY, PRESENCE_ADD, PRESENCE_GET, PRESENCE_REMOVE, PUBLISH
from .redis_pipeline import PublishPipeline
from .redis_pubsub import Subscriber
from .redis_resp import Endpoint, RespConnection
from .redis_shard import Shard, parse_targets, shard_index

__all__ = ["RedisBroker", "RedisPresenceManager", "build_shards"]

log = logging.getLogger("centrifuge_asgi.engines.redis")

DEFAULT_META_TTL = 30 * 24 * 3600.0
SEEN_LIMIT = 16384  # channels whose highest stream position a node remembers
PROBE = b"__probe__"
MAX_OFFSET = 2**64 - 1  # offsets are uint64, as are the first parts of stream IDs
_EPOCH_ALPHABET = string.ascii_letters


def _new_epoch() -> str:
    return "".join(secrets.choice(_EPOCH_ALPHABET) for _ in range(8))


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def build_shards(cfg: RedisConfig) -> list[Shard]:
    """Unopened shards for a Redis config block (``engine.redis``, ``broker.redis``, ...)."""
    return [
        Shard(
            index=i,
            target=target,
            prefix=cfg.prefix,
            io_timeout=cfg.io_timeout,
            connect_timeout=cfg.connect_timeout,
            client_name=cfg.client_name,
            tls=cfg.tls,
        )
        for i, target in enumerate(parse_targets(cfg))
    ]


class _Shards:
    """Opens shards once (lazily) and picks a channel's shard."""

    def __init__(self, shards: Sequence[Shard]) -> None:
        if not shards:
            raise ValueError("at least one redis shard is required")
        self.all = list(shards)
        self._opened = False
        self._lock = anyio.Lock()

    async def open(self) -> None:
        if self._opened:
            return
        async with self._lock:
            if not self._opened:
                for shard in self.all:
                    await shard.open()
                self._opened = True

    async def close(self) -> None:
        self._opened = False
        for shard in self.all:
            await shard.close()

    async def of(self, channel: str) -> Shard:
        await self.open()
        return self.all[shard_index(channel, len(self.all))]


class RedisBroker:
    """A :class:`~centrifuge_asgi.engines.base.Broker` over one or more Redis shards, and
    the node's :class:`~centrifuge_asgi.engines.base.Controller`."""

    capabilities = Capabilities()

    def __init__(
        self,
        shards: Sequence[Shard],
        *,
        probe_interval: float = 30.0,
        redial_delay: float = 0.25,
    ) -> None:
        self._shards = _Shards(shards)
        self._probe_interval = probe_interval
        self._redial_delay = redial_delay
        self._handler: BrokerEventHandler | None = None
        self._control: ControlEventHandler | None = None
        self._tg: TaskGroup | None = None
        self.node_id = ""
        self.prefix = self._shards.all[0].prefix
        self._control_subs: list[Subscriber] = []  # one per shard
        self._node_subs: dict[tuple[int, str, int], Subscriber] = {}  # cluster masters
        self._node_scopes: dict[Subscriber, anyio.CancelScope] = {}
        self._moving: set[tuple[int, str, int]] = set()
        self._routes: dict[str, Subscriber] = {}
        self._seen: dict[str, tuple[str, int]] = {}  # channel → highest (epoch, offset)
        self._rr = itertools.count()
        self._pipes: dict[int, PublishPipeline] = {}  # shard index → batching writer
        self.malformed = 0

    @classmethod
    def from_config(cls, cfg: RedisConfig) -> RedisBroker:
        return cls(build_shards(cfg))

    # ------------------------------------------------------------- lifecycle

    @property
    def control_channel(self) -> bytes:
        return f"{self.prefix}.control".encode()

    def node_channel(self, node_id: str) -> bytes:
        return f"{self.prefix}.node.{node_id}".encode()

    @property
    def subscribers(self) -> list[Subscriber]:
        """Every PUB/SUB connection of this broker (for tests and diagnostics)."""
        return [*self._control_subs, *self._node_subs.values()]

    def register_control_handler(self, handler: ControlEventHandler, node_id: str) -> None:
        """Before :meth:`start`: control messages go to ``handler``; ``P.node.<node_id>``
        addresses this node."""
        if self._tg is not None:
            raise RuntimeError("register the control handler before starting the broker")
        self._control = handler
        self.node_id = node_id

    async def start(self, handler: BrokerEventHandler) -> None:
        """Open the shards, start every PUB/SUB loop and wait (bounded) until they listen."""
        if self._tg is not None:
            raise RuntimeError("broker already started")
        self.node_id = self.node_id or str(uuid.uuid4())
        await self._shards.open()
        self._handler = handler
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        for shard in self._shards.all:
            sub = self._subscriber(shard, control=True)
            self._control_subs.append(sub)
            tg.start_soon(sub.run)
        for sub in self._control_subs:
            timeout = self._shards.all[0].connect_timeout + self._shards.all[0].io_timeout
            if not await sub.wait_ready(timeout):
                log.warning("redis pub/sub %s is not connected yet; retrying", sub.name)

    async def close(self) -> None:
        """Stop every loop and close the shards; idempotent."""
        self._handler = None
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                # re-raises a cancellation of the scope hosting the node: clean up anyway
                await tg.__aexit__(None, None, None)
        finally:
            self._control_subs.clear()
            self._node_subs.clear()
            self._node_scopes.clear()
            self._moving.clear()
            self._routes.clear()
            self._pipes.clear()
            with anyio.CancelScope(shield=True):
                await self._shards.close()

    def _subscriber(self, shard: Shard, *, control: bool, at: Endpoint | None = None) -> Subscriber:
        """A control connection (fixed control + node topics; in a standalone or Sentinel
        shard it also carries the channels) or a cluster master's SSUBSCRIBE connection."""

        def on_message(channel: bytes, data: bytes) -> None:
            self._on_message(shard, channel, data)

        async def dial() -> RespConnection:
            try:
                return await shard.dial(at)
            except Exception:
                if at is not None:  # a cluster master: did its slots move elsewhere?
                    self._dial_failed(shard, (shard.index, at.host, at.port))
                raise

        async def probe() -> None:
            await shard.command("PUBLISH", self.node_channel(self.node_id), PROBE)

        def on_lost(channel: bytes) -> None:
            if self._tg is not None:
                self._tg.start_soon(self._reroute, shard, channel)

        if control:
            return Subscriber(
                f"{shard.index}" + ("-control" if shard.cluster else ""),
                dial,
                on_message,
                fixed=(self.control_channel, self.node_channel(self.node_id)),
                probe=probe,
                probe_interval=self._probe_interval,
                io_timeout=shard.io_timeout,
                redial_delay=self._redial_delay,
            )
        return Subscriber(
            f"{shard.index}-{at}",
            dial,
            on_message,
            sharded=True,
            slot_of=shard.slot_of,
            probe=None,  # PING: a cluster master answers only for its own slots
            probe_interval=self._probe_interval,
            io_timeout=shard.io_timeout,
            redial_delay=self._redial_delay,
            on_lost=on_lost,
        )

    def _channel_subscriber(self, shard: Shard, redis_channel: bytes) -> Subscriber:
        if not shard.cluster:
            return self._control_subs[shard.index]
        host, port = shard.slot_owner(shard.slot_of(redis_channel))
        key = (shard.index, host, port)
        sub = self._node_subs.get(key)
        if sub is None:
            sub = self._subscriber(shard, control=False, at=shard.endpoint(host, port))
            self._node_subs[key] = sub
            if self._tg is not None:
                self._tg.start_soon(self._run_node_sub, sub)
        return sub

    async def _run_node_sub(self, sub: Subscriber) -> None:
        with anyio.CancelScope() as scope:
            self._node_scopes[sub] = scope
            try:
                await sub.run()
            finally:
                self._node_scopes.pop(sub, None)

    def _dial_failed(self, shard: Shard, key: tuple[int, str, int]) -> None:
        if self._tg is not None and key not in self._moving:
            self._moving.add(key)
            self._tg.start_soon(self._move_off, shard, key)

    async def _move_off(self, shard: Shard, key: tuple[int, str, int]) -> None:
        """A cluster master could not be dialled: learn the slots again and move the
        channels it served to their masters now (after a failover, the promoted replica).

        Its connection redials until then; once it serves no channel it is stopped. The
        publications sent while no connection listened are lost to PUB/SUB, as in any
        outage: positioned subscribers find the gap by the offsets and recover.
        """
        try:
            sub = self._node_subs.get(key)
            if sub is None:
                return
            try:
                await shard.refresh_slots()
            except EngineError as exc:
                log.warning("cluster slot refresh failed: %s", exc)
                return
            for channel, route in list(self._routes.items()):
                if route is sub:
                    self._move(shard, channel, sub)
            if not sub.desired and self._node_subs.get(key) is sub:
                del self._node_subs[key]
                scope = self._node_scopes.pop(sub, None)
                if scope is not None:
                    scope.cancel()
        finally:
            self._moving.discard(key)

    def _move(self, shard: Shard, channel: str, old: Subscriber) -> None:
        """Route ``channel`` to its slot's master now, if that is not ``old``'s."""
        redis_channel = shard.client_channel(channel)
        new = self._channel_subscriber(shard, redis_channel)
        if new is not old:
            old.forget([redis_channel])
            self._routes[channel] = new
            if self._tg is not None:
                self._tg.start_soon(self._resubscribe, channel, new, redis_channel)

    async def _resubscribe(self, channel: str, sub: Subscriber, redis_channel: bytes) -> None:
        try:
            await sub.subscribe(redis_channel)
        except EngineError as exc:  # still desired: its connection subscribes it later
            log.warning("resubscribing %s on its new master failed: %s", channel, exc)

    async def _reroute(self, shard: Shard, redis_channel: bytes) -> None:
        """A cluster slot moved: resubscribe the channel on its new master."""
        channel = self._channel_name(shard, redis_channel)
        try:
            await shard.refresh_slots()
        except EngineError as exc:
            log.warning("cluster slot refresh failed: %s", exc)
        old = self._routes.get(channel)
        if old is None:
            return
        new = self._channel_subscriber(shard, redis_channel)
        if new is not old:
            old.forget([redis_channel])
            self._routes[channel] = new
        try:
            await new.subscribe(redis_channel)
        except EngineError as exc:
            log.warning("resubscribing %s after a slot move failed: %s", channel, exc)

    # ------------------------------------------------------------- incoming

    def _channel_name(self, shard: Shard, redis_channel: bytes) -> str:
        name = redis_channel[len(self.prefix) + len(".client.") :].decode()
        if shard.cluster and name.startswith("{") and name.endswith("}"):
            name = name[1:-1]
        return name

    def _on_message(self, shard: Shard, channel: bytes, data: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        if channel == self.control_channel:
            if self._control is not None:
                self._control.handle_control(data)
            return
        if channel == self.node_channel(self.node_id):
            if data != PROBE and self._control is not None:
                self._control.handle_control(data)
            return
        try:
            event = decode_event(data)
        except Exception as exc:  # ValueError, UnicodeDecodeError, msgspec errors
            self.malformed += 1
            log.warning("malformed pub/sub data on %r ignored: %s", channel, exc)
            return
        name = self._channel_name(shard, channel)
        if event.publication is not None:
            self._saw(name, event.epoch, event.publication.offset)
            if event.prev is None:
                handler.handle_publication(name, event.publication, event.epoch)
            else:
                handler.handle_publication(name, event.publication, event.epoch, event.prev)
        elif event.join is not None:
            handler.handle_join(name, event.join)
        elif event.leave is not None:
            handler.handle_leave(name, event.leave)

    # ------------------------------------------------------------- subscriptions

    async def subscribe(self, channel: str) -> None:
        """Receive ``channel`` on this node; returns once Redis confirmed the subscription."""
        if self._tg is None:
            raise EngineUnavailable("redis broker is not started")
        shard = await self._shards.of(channel)
        redis_channel = shard.client_channel(channel)
        sub = self._routes.get(channel)
        if sub is None:
            sub = self._channel_subscriber(shard, redis_channel)
            self._routes[channel] = sub
        await sub.subscribe(redis_channel)

    async def unsubscribe(self, channel: str) -> None:
        sub = self._routes.pop(channel, None)
        if sub is not None:
            shard = await self._shards.of(channel)
            sub.unsubscribe(shard.client_channel(channel))

    # ------------------------------------------------------------- publishing

    async def publish(self, channel: str, data: bytes, opts: PublishOptions) -> PublishResult:
        """Append to the stream (when history is on) and broadcast, in one script."""
        return await (await self.publish_pipelined(channel, data, opts)).wait()

    async def publish_pipelined(
        self, channel: str, data: bytes, opts: PublishOptions
    ) -> Pending[PublishResult]:
        """Queue a publication and return at once with its :class:`Pending` result.

        Publications queued one after another reach Redis in that order, many per round
        trip (:mod:`.redis_pipeline`); each result is Redis's reply to that publication.
        Waits only while the shard's queue is full. A cluster shard, or a broker that is
        not started, publishes directly and returns a settled result.
        """
        shard = await self._shards.of(channel)
        pipe = self._pipe(shard)
        if pipe is None:
            pending: Pending[PublishResult] = Pending()
            try:
                pending.set_result(await self._publish_now(shard, channel, data, opts))
            except EngineError as exc:
                pending.set_error(exc)
            return pending
        if pipe.full():
            await pipe.space()
        payload = encode_publication(data, opts.client_info, opts.tags, int(time.time() * 1000))
        topic = shard.client_channel(channel)
        if not self._scripted(opts):
            return pipe.command((shard.publish_command, topic, payload), _published)

        def converted(reply: object) -> PublishResult:
            return self._publish_result(channel, reply)

        keys, args = self._publish_script_call(shard, channel, topic, payload, opts)
        return pipe.script(PUBLISH, keys, args, converted)

    def _pipe(self, shard: Shard) -> PublishPipeline | None:
        """The shard's batching writer (started on first use), None where there is none."""
        if shard.cluster or self._tg is None:
            return None
        pipe = self._pipes.get(shard.index)
        if pipe is None or pipe.closed:
            pipe = self._pipes[shard.index] = PublishPipeline(shard)
            self._tg.start_soon(pipe.run)
        return pipe

    @staticmethod
    def _scripted(opts: PublishOptions) -> bool:
        history = opts.history_size > 0 and opts.history_ttl > 0 and not opts.skip_history
        return history or bool(opts.idempotency_key)

    async def _publish_now(
        self, shard: Shard, channel: str, data: bytes, opts: PublishOptions
    ) -> PublishResult:
        """One publication, one round trip (cluster shards, a broker not started)."""
        payload = encode_publication(data, opts.client_info, opts.tags, int(time.time() * 1000))
        topic = shard.client_channel(channel)
        if not self._scripted(opts):
            await shard.command(shard.publish_command, topic, payload)
            return PublishResult()
        keys, args = self._publish_script_call(shard, channel, topic, payload, opts)
        return self._publish_result(channel, await shard.script(PUBLISH, keys, args))

    def _publish_script_call(
        self, shard: Shard, channel: str, topic: bytes, payload: bytes, opts: PublishOptions
    ) -> tuple[tuple[str, ...], tuple[object, ...]]:
        history = opts.history_size > 0 and opts.history_ttl > 0 and not opts.skip_history
        meta_ttl = opts.history_meta_ttl if opts.history_meta_ttl > 0 else DEFAULT_META_TTL
        keys = (
            shard.stream_key(channel),
            shard.meta_key(channel),
            shard.result_key(channel, opts.idempotency_key),
        )
        args = (
            topic,
            payload,
            int(history),
            opts.history_size,
            _ms(opts.history_ttl),
            _ms(meta_ttl),
            _new_epoch(),
            int(bool(opts.idempotency_key)),
            _ms(opts.idempotent_result_ttl),
            opts.version if history else 0,
            opts.version_epoch,
            shard.publish_command,
            *self._seen.get(channel, ("", 0)),
            int(opts.delta),
        )
        return keys, args

    def _publish_result(self, channel: str, reply: object) -> PublishResult:
        if not isinstance(reply, list):
            raise EngineError(f"unexpected script reply {reply!r}")
        top, epoch, cached, suppressed = reply
        position = StreamPosition(_int(top), _text(epoch))
        self._saw(channel, position.epoch, position.offset)
        return PublishResult(position, suppressed=bool(cached) or bool(suppressed))

    def _saw(self, channel: str, epoch: str, offset: int) -> None:
        """Remember the highest stream position Redis showed this node for ``channel``
        (the scripts start a new epoch for a stream that falls below it)."""
        if not epoch or offset <= 0:
            return
        seen = self._seen
        known = seen.pop(channel, None)
        if known is not None and known[0] == epoch and known[1] > offset:
            offset = known[1]
        seen[channel] = (epoch, offset)
        if len(seen) > SEEN_LIMIT:  # forget the channel not heard of for longest
            del seen[next(iter(seen))]

    async def _script(
        self, shard: Shard, text: str, keys: Sequence[str], args: Sequence[object]
    ) -> list[object]:
        result = await shard.script(text, keys, args)
        if not isinstance(result, list):
            raise EngineError(f"unexpected script reply {result!r}")
        return result

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        shard = await self._shards.of(channel)
        await shard.command(shard.publish_command, shard.client_channel(channel), frame_join(info))

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        shard = await self._shards.of(channel)
        topic = shard.client_channel(channel)
        await shard.command(shard.publish_command, topic, frame_leave(info))

    async def publish_control(self, data: bytes, node_id: str = "") -> bool:
        """To every node over ``P.control`` or to one over ``P.node.<id>`` (any shard:
        every node listens on every shard). An addressed message is False when no node
        listens on ``P.node.<id>`` (Redis counts the receivers)."""
        await self._shards.open()
        shard = self._shards.all[next(self._rr) % len(self._shards.all)]
        topic = self.node_channel(node_id) if node_id else self.control_channel
        receivers = await shard.command("PUBLISH", topic, data)
        return bool(receivers) if node_id else True

    # ------------------------------------------------------------- history

    async def history(
        self, channel: str, flt: HistoryFilter, meta_ttl: float = 0.0
    ) -> HistoryResult:
        """Read the stream (creating its meta with a fresh epoch when missing)."""
        flt.validate()
        shard = await self._shards.of(channel)
        args = (
            _new_epoch(),
            _ms(meta_ttl if meta_ttl > 0 else DEFAULT_META_TTL),
            int(flt.limit != 0),
            int(flt.reverse),
            _read_start(flt),
            flt.limit,
            *self._seen.get(channel, ("", 0)),
        )
        keys = (shard.stream_key(channel), shard.meta_key(channel))
        top, epoch, entries = await self._script(shard, HISTORY, keys, args)
        position = StreamPosition(_int(top), _text(epoch))
        self._saw(channel, position.epoch, position.offset)
        if flt.since is not None and flt.since.epoch and flt.since.epoch != position.epoch:
            raise ClientError.of(ErrorCode.UNRECOVERABLE_POSITION)
        pubs = []
        for entry_id, fields in entries if isinstance(entries, list) else ():
            offset = int(bytes(entry_id).split(b"-", 1)[0])
            pubs.append(decode_publication(bytes(fields[1]), offset))
        return HistoryResult(pubs, position)

    async def remove_history(self, channel: str) -> None:
        """Drop the stream; the meta (top offset, epoch) stays."""
        shard = await self._shards.of(channel)
        await shard.command("DEL", shard.stream_key(channel))


def _read_start(flt: HistoryFilter) -> str:
    """The stream ID a history read starts at, as text for the script (an offset may be
    any uint64, more than a Lua number holds exactly); "" when nothing can follow it."""
    if flt.since is None:
        return "+" if flt.reverse else "-"
    if flt.reverse:  # validate() refused since 0
        return str(flt.since.offset - 1)
    after = flt.since.offset + 1
    return str(after) if after <= MAX_OFFSET else ""


def _published(reply: object) -> PublishResult:
    return PublishResult()


def _int(value: object) -> int:
    if isinstance(value, int | bytes | str):
        return int(value)
    raise EngineError(f"unexpected integer reply {value!r}")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


class RedisPresenceManager:
    """A :class:`~centrifuge_asgi.engines.base.PresenceManager` on Redis (hash + expiry zset).

    Entries live ``ttl`` seconds without refresh; live connections refresh them every
    ``client.presence_update_interval``; a crashed node's entries vanish after the TTL.
    """

    def __init__(self, shards: Sequence[Shard], *, ttl: float = 60.0) -> None:
        self._shards = _Shards(shards)
        self.ttl = ttl

    @classmethod
    def from_config(cls, cfg: PresenceRedisConfig) -> RedisPresenceManager:
        return cls(build_shards(cfg), ttl=cfg.presence_ttl)

    async def add_presence(self, channel: str, client_id: str, info: ClientInfo) -> None:
        shard = await self._shards.of(channel)
        args = (_ms(self.ttl), time.time() + self.ttl, client_id, encode_info(info))
        await shard.script(PRESENCE_ADD, shard.presence_keys(channel), args)

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        shard = await self._shards.of(channel)
        await shard.script(PRESENCE_REMOVE, shard.presence_keys(channel), (client_id,))

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        shard = await self._shards.of(channel)
        flat = await shard.script(PRESENCE_GET, shard.presence_keys(channel), (time.time(),))
        if not isinstance(flat, list):
            raise EngineError(f"unexpected presence reply {flat!r}")
        return {_text(flat[i]): decode_info(bytes(flat[i + 1])) for i in range(0, len(flat), 2)}

    async def presence_stats(self, channel: str) -> PresenceStats:
        clients = await self.presence(channel)
        return PresenceStats(len(clients), len({info.user for info in clients.values()}))

    async def close(self) -> None:
        await self._shards.close()
