"""The node's in-process map API: ``node.map_publish(...)`` and the rest (map subscriptions).

Mixed into :class:`~centrifuge_asgi.node.Node`; the server API (``map_publish``,
``map_remove``, ``map_read_state``, ``map_read_stream``, ``map_stats``, ``map_clear``)
calls these. The channel must be in a namespace whose ``subscription_type`` is a map type
(else ``ClientError(102)`` for an unknown namespace, ``ClientError(107)`` otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from .codes import ErrorCode
from .engines.base import ClientInfo, HistoryFilter, HistoryResult, StreamPosition
from .engines.map_base import (
    MapBroker,
    MapChannelOptions,
    MapPublishOptions,
    MapRemoveOptions,
    MapStateResult,
    MapUpdateResult,
)
from .errors import ClientError
from .map_subscriptions import channel_options
from .payload import is_parsed, publication_data_problem, to_payload
from .wire import client_info_wire

if TYPE_CHECKING:
    from .config import ChannelOptions, Config
    from .observer import NodeObserver
    from .policy import ChannelPolicy

log = logging.getLogger("centrifuge_asgi.node")


def build_map_broker(config: Config) -> MapBroker:
    """The map broker ``map_broker.type`` names (``memory`` or ``redis``)."""
    if config.map_broker.type == "redis":
        from .engines.map_redis import RedisMapBroker

        return RedisMapBroker.from_config(config.map_broker.redis)
    from .engines.map_memory import MemoryMapBroker

    return MemoryMapBroker()


class MapApi:
    """Map operations of a node (needs ``policy`` and ``map_broker``)."""

    policy: ChannelPolicy
    map_broker: MapBroker
    metrics: NodeObserver

    def map_options(self, channel: str) -> tuple[ChannelOptions, MapChannelOptions]:
        """The namespace options of a map channel (107 when it is not one)."""
        opts = self.policy.checked(channel)
        if not opts.is_map:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        return opts, channel_options(opts.map)

    async def map_publish(
        self,
        channel: str,
        key: str,
        data: Any,
        *,
        tags: Mapping[str, str] | None = None,
        client_info: ClientInfo | None = None,
        key_mode: str = "",
        idempotency_key: str = "",
        version: int = 0,
        version_epoch: str = "",
        expected_position: StreamPosition | None = None,
        delta: bool = False,
    ) -> MapUpdateResult:
        """Set ``key`` of a map channel to ``data`` (JSON-encodable, or bytes as for
        :meth:`publish`); ``key_mode`` ``if_new``/``if_exists``; suppressed results say why.
        ``delta`` (always on in a ``delta_publish`` namespace) lets fossil delta
        subscribers get a delta against the key's previous value."""
        if not key:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        if key_mode not in ("", "if_new", "if_exists"):
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        opts, chopts = self.map_options(channel)
        try:
            payload = to_payload(data)
        except RecursionError:  # nested too deeply for msgspec
            raise ClientError.of(ErrorCode.BAD_REQUEST) from None
        if publication_data_problem(payload, self.policy.data_format(opts), parsed=is_parsed(data)):
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        publish = MapPublishOptions(
            data=payload,
            tags=dict(tags) if tags else None,
            client_info=client_info,
            key_mode=key_mode,
            idempotency_key=idempotency_key,
            version=version,
            version_epoch=version_epoch,
            expected_position=expected_position,
            delta=delta or opts.delta_publish,
        )
        result = await self.map_broker.publish(channel, key, publish, chopts)
        return self._count_suppressed("map_broker_publish_suppressed_count", result)

    async def map_remove(
        self,
        channel: str,
        key: str,
        *,
        idempotency_key: str = "",
        expected_position: StreamPosition | None = None,
    ) -> MapUpdateResult:
        """Remove ``key`` (suppressed with reason ``key_not_found`` when it is not there)."""
        if not key:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        _, chopts = self.map_options(channel)
        remove = MapRemoveOptions(
            idempotency_key=idempotency_key, expected_position=expected_position
        )
        result = await self.map_broker.remove(channel, key, remove, chopts)
        return self._count_suppressed("map_broker_remove_suppressed_count", result)

    def _count_suppressed(self, metric: str, result: MapUpdateResult) -> MapUpdateResult:
        """Count a suppressed update in ``metric`` under its reason."""
        if result.suppressed:
            self.metrics.count(metric, (result.suppress_reason, ""))
        return result

    async def map_read_state(
        self,
        channel: str,
        *,
        cursor: str = "",
        limit: int = -1,
        key: str = "",
        revision: StreamPosition | None = None,
    ) -> MapStateResult:
        """A page of at most ``limit`` entries after ``cursor`` (-1: all of them, 0: only
        the stream position), or the one ``key``; a ``revision`` of another epoch is 112."""
        self.map_options(channel)
        return await self.map_broker.read_state(
            channel, cursor=cursor, limit=max(limit, -1), key=key, revision=revision
        )

    async def map_read_stream(
        self,
        channel: str,
        *,
        limit: int = 0,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        """The change stream (``limit`` 0: only the position, -1: all it holds)."""
        self.map_options(channel)
        flt = HistoryFilter(limit=max(limit, -1), since=since, reverse=reverse)
        return await self.map_broker.read_stream(channel, flt)

    async def map_stats(self, channel: str) -> int:
        """The number of keys in the state of ``channel``."""
        self.map_options(channel)
        return await self.map_broker.stats(channel)

    async def map_clear(self, channel: str) -> None:
        """Drop state, stream and position of ``channel`` (subscribers see a new epoch)."""
        self.map_options(channel)
        await self.map_broker.clear(channel)

    # ---------------------------------------------------------- for sessions

    async def map_presence_join(
        self, channel: str, client_id: str, user: str, info: ClientInfo
    ) -> None:
        """The ``map_clients`` (key: client id, data: client info) and ``map_users`` (key:
        user id) entries of a subscriber of ``channel``, when its namespace has those
        prefixes; added once, then only their TTL is renewed (best effort)."""
        opts = self.policy.options(channel)
        if opts is None:
            return
        clients = opts.map_clients_presence_channel_prefix
        if clients:
            data = msgspec.json.encode(client_info_wire(info))
            await self.map_presence_update(clients + channel, client_id, data, info)
        users = opts.map_users_presence_channel_prefix
        if users and user:
            await self.map_presence_update(users + channel, user, b"{}", info)

    async def map_presence_update(
        self, channel: str, key: str, data: bytes, info: ClientInfo
    ) -> None:
        """Add a presence entry, or renew its TTL when it is there (best effort)."""
        opts = self.policy.options(channel)
        if opts is None or not opts.is_map:
            return
        publish = MapPublishOptions(
            data=data, client_info=info, key_mode="if_new", refresh_ttl_on_suppress=True
        )
        try:
            await self.map_broker.publish(channel, key, publish, channel_options(opts.map))
        except Exception as exc:
            log.warning("map presence in %s not updated: %s", channel, exc)

    async def map_remove_quietly(self, channel: str, key: str) -> None:
        """Remove a key when a client leaves (bounded, errors logged)."""
        opts = self.policy.options(channel)
        if opts is None or not opts.is_map:
            return
        with anyio.move_on_after(3):
            try:
                await self.map_broker.remove(
                    channel, key, MapRemoveOptions(), channel_options(opts.map)
                )
            except Exception as exc:
                log.warning("key %s of %s not removed: %s", key, channel, exc)
