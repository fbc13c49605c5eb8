"""Map subscriptions of one connection (Centrifugo v6.8+, experimental upstream).

A map subscribe is a sequence of subscribe commands on one channel, each answering one
phase (``SubscribeRequest.phase``):

* STATE (2): a page of the channel's key → entry state; ``cursor`` asks for the next
  page. The first page fixes the stream position the catch-up starts from.
* STREAM (1): a page of the change stream after ``offset`` (modes with a stream).
* LIVE (0): the reply that makes the subscription live: the last stream changes since
  the client's position, and from then on every change as a publication push.

The server decides when to go live (a reply with ``phase`` 0): on the last state page
when there is no stream or the stream is within one page of the state's position, and
in the stream phase once the client is within one page of the top. Recovery after a
disconnect starts at STREAM (or LIVE) with ``recover`` and the last position; a position
the stream no longer covers is answered with 112 (the SDK restarts from STATE).

Changes published while the reply is in flight are buffered by the ordinary pending
mechanism of :mod:`.subscriptions` and de-duplicated by offset.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from msgspec import UNSET, Raw
from msgspec.structs import replace

from .codes import DisconnectCode, ErrorCode
from .engines.base import HistoryFilter, Publication, StreamPosition
from .engines.map_base import MapChannelOptions, MapPublishOptions, MapRemoveOptions
from .errors import ClientError, Disconnect
from .handlers import MapPublishEvent, MapPublishReply, MapRemoveEvent, MapRemoveReply
from .payload import is_parsed, publication_data_problem, to_payload
from .protocol.messages import (
    MAP_PHASE_LIVE,
    MAP_PHASE_STATE,
    MAP_PHASE_STREAM,
    SUBSCRIPTION_TYPE_MAP,
    PublicationWire,
    PublishRequest,
    SubscribeRequest,
    SubscribeResult,
)
from .tagfilter import TagsFilter, matches
from .wire import opt_raw, publication_wire

if TYPE_CHECKING:
    from .config import ChannelOptions, MapOptions

log = logging.getLogger("centrifuge_asgi.session")

MAP_TYPES = {1: "map", 2: "map_clients", 3: "map_users"}
DEFAULT_PAGE_SIZE = 100
MIN_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
CATCH_UP_TIMEOUT = 5.0


def channel_options(opts: MapOptions) -> MapChannelOptions:
    """What the map broker needs of a namespace's ``map`` block."""
    return MapChannelOptions(
        mode=opts.mode or "persistent",
        key_ttl=opts.key_ttl,
        stream_size=opts.stream_size,
        stream_ttl=opts.stream_ttl,
        meta_ttl=opts.meta_ttl,
    )


def page_size(requested: int, opts: MapOptions) -> int:
    """The client's page size clamped to the namespace's bounds (Centrifugo's defaults)."""
    lo = opts.min_page_size or MIN_PAGE_SIZE
    hi = opts.max_page_size or MAX_PAGE_SIZE
    size = requested if requested > 0 else (opts.default_page_size or DEFAULT_PAGE_SIZE)
    return max(lo, min(hi, size))


def _wires(pubs: list[Publication], *, json: bool) -> list[PublicationWire]:
    """Entries as sent; to a JSON client that negotiates fossil delta, each payload is a
    JSON string (the exact bytes its later deltas apply to; ``null`` for a removal)."""
    if not json:
        return [publication_wire(p) for p in pubs]
    out = []
    for pub in pubs:
        data = b"null" if pub.removed and not pub.data else pub.data
        try:
            text = Raw(msgspec.json.encode(data.decode("utf-8")))
        except UnicodeDecodeError:
            text = Raw(data)  # not JSON at all: refused for JSON clients as anywhere
        out.append(replace(publication_wire(pub), data=text))
    return out


def _kept(pubs: list[Publication], tf: TagsFilter | None) -> list[Publication]:
    return pubs if tf is None else [p for p in pubs if matches(tf, p.tags)]


class _Channels(Protocol):
    """What this module uses of :class:`~.subscriptions.ChannelCommands` (which imports
    this module, so it is not imported here)."""

    async def _authorize_subscribe(self, req: SubscribeRequest, opts: ChannelOptions) -> Any: ...

    def new_map_subscription(
        self, channel: str, grant: Any, *, positioned: bool, delta: bool = False
    ) -> Any: ...

    def _schedule_sub_expiry(self, sub: Any) -> None: ...

    def _checked_options(self, channel: str) -> ChannelOptions: ...

    async def remove(self, channel: str) -> None: ...


@dataclass(slots=True)
class MapSubscribing:
    """A map subscribe between its first phase and going live."""

    grant: Any  # subscriptions.Grant
    started: float
    tags_filter: TagsFilter | None
    epoch: str = ""
    offset: int = 0  # the stream position of the first state page
    stream_start: int | None = None  # the stream top when the stream phase began


class MapCommands:
    """The map half of :class:`~.subscriptions.ChannelCommands`: phased subscribe and
    client map publish/remove."""

    __slots__ = ("channels", "pending", "s")

    def __init__(self, session: Any, channels: _Channels) -> None:  # the Session, twice
        self.s = session
        self.channels = channels
        self.pending: dict[str, MapSubscribing] = {}

    # ------------------------------------------------------------------ subscribe

    async def subscribe(self, req: SubscribeRequest, opts: ChannelOptions) -> SubscribeResult:
        channel = req.channel
        state = self.pending.get(channel)
        if state is not None and time.monotonic() - state.started > self._catch_up_timeout(opts):
            self.pending.pop(channel, None)
            raise Disconnect.of(DisconnectCode.SLOW)
        if req.phase not in (MAP_PHASE_STATE, MAP_PHASE_STREAM, MAP_PHASE_LIVE):
            self.pending.pop(channel, None)
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        try:
            if req.phase == MAP_PHASE_STATE:
                return await self._state(req, opts, state)
            if req.phase == MAP_PHASE_STREAM:
                return await self._stream(req, opts, state)
            if state is None:
                state = await self._begin(req, opts)
            elif req.epoch and state.epoch and req.epoch != state.epoch:
                raise ClientError.of(ErrorCode.UNRECOVERABLE_POSITION)
            since = StreamPosition(req.offset, req.epoch)
            return await self._live(req, opts, state, since, recovery=True)
        except BaseException:
            self.pending.pop(channel, None)  # as Centrifugo: an error ends the attempt
            raise

    def _json_delta(self, req: SubscribeRequest, opts: ChannelOptions) -> bool:
        """Delta will be negotiated for a JSON client: its pages carry data as strings."""
        return (
            bool(req.delta)
            and req.delta in opts.allowed_delta_types
            and (self.s.codec.name == "json")
        )

    @staticmethod
    def _catch_up_timeout(opts: ChannelOptions) -> float:
        return opts.map.subscribe_catch_up_timeout or CATCH_UP_TIMEOUT

    def _sweep(self) -> None:
        """Forget map subscribes abandoned for longer than their catch-up timeout."""
        now = time.monotonic()
        policy = self.s.node.policy
        for channel, state in list(self.pending.items()):
            if now - state.started > self._catch_up_timeout(policy.resolve(channel)):
                del self.pending[channel]

    async def _begin(self, req: SubscribeRequest, opts: ChannelOptions) -> MapSubscribing:
        """The first command of a map subscribe: authorize it and remember the grant."""
        policy = self.s.node.policy
        grant = await self.channels._authorize_subscribe(req, opts)
        tags_filter = None if req.tf is None else policy.tags_filter(opts, req.tf)
        if req.channel in self.pending or self.s.sub(req.channel) is not None:
            raise ClientError.of(ErrorCode.ALREADY_SUBSCRIBED)
        self._sweep()
        if self.s.sub_count() + len(self.pending) >= policy.channel_limit:
            raise ClientError.of(ErrorCode.LIMIT_EXCEEDED)  # unfinished ones count too
        state = MapSubscribing(grant, time.monotonic(), tags_filter, epoch=req.epoch)
        self.pending[req.channel] = state
        return state

    async def _state(
        self, req: SubscribeRequest, opts: ChannelOptions, state: MapSubscribing | None
    ) -> SubscribeResult:
        node = self.s.node
        channel = req.channel
        if req.cursor:
            if state is None:
                raise ClientError.of(ErrorCode.PERMISSION_DENIED)
        else:
            if state is not None:  # a fresh start replaces an abandoned one
                self.pending.pop(channel, None)
            state = await self._begin(req, opts)
        limit = page_size(req.limit, opts.map)
        revision = StreamPosition(req.offset, req.epoch) if req.offset or req.epoch else None
        page = await node.map_broker.read_state(
            channel, cursor=req.cursor, limit=limit, revision=revision
        )
        if not req.cursor:
            state.epoch, state.offset = page.position.epoch, page.position.offset
        pubs = page.publications
        if revision is not None:  # changed after the first page: the stream brings them
            pubs = [p for p in pubs if p.offset <= revision.offset]
        pubs = _kept(pubs, state.tags_filter)
        position = StreamPosition(state.offset, state.epoch)
        if not page.cursor:
            if not opts.map.has_stream:
                return await self._live(req, opts, state, position, state_pubs=pubs)
            top = (await node.map_broker.read_stream(channel, HistoryFilter(limit=0))).position
            if position.offset + limit >= top.offset:
                return await self._live(req, opts, state, position, state_pubs=pubs)
        return SubscribeResult(
            type=SUBSCRIPTION_TYPE_MAP,
            phase=MAP_PHASE_STATE,
            cursor=page.cursor,
            epoch=page.position.epoch,
            offset=state.offset,
            state=_wires(pubs, json=self._json_delta(req, opts)),
        )

    async def _stream(
        self, req: SubscribeRequest, opts: ChannelOptions, state: MapSubscribing | None
    ) -> SubscribeResult:
        node = self.s.node
        channel = req.channel
        if not opts.map.has_stream:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        if state is None:
            if not req.recover:
                raise ClientError.of(ErrorCode.PERMISSION_DENIED)
            state = await self._begin(req, opts)
        if req.epoch and state.epoch and req.epoch != state.epoch:
            raise ClientError.of(ErrorCode.UNRECOVERABLE_POSITION)
        if state.stream_start is None:
            top = await node.map_broker.read_stream(channel, HistoryFilter(limit=0))
            state.stream_start = top.position.offset
        limit = page_size(req.limit, opts.map)
        since = StreamPosition(req.offset, req.epoch)
        if req.offset + limit >= state.stream_start:
            return await self._live(req, opts, state, since, recovery=True)
        hist = await node.map_broker.read_stream(channel, HistoryFilter(limit=limit, since=since))
        pubs = hist.publications
        offset = pubs[-1].offset if pubs else req.offset
        return SubscribeResult(
            type=SUBSCRIPTION_TYPE_MAP,
            phase=MAP_PHASE_STREAM,
            epoch=hist.position.epoch,
            offset=offset,
            publications=_wires(_kept(pubs, state.tags_filter), json=self._json_delta(req, opts)),
        )

    async def _live(
        self,
        req: SubscribeRequest,
        opts: ChannelOptions,
        state: MapSubscribing,
        since: StreamPosition,
        *,
        state_pubs: list[Publication] | None = None,
        recovery: bool = False,
    ) -> SubscribeResult:
        """Make the subscription live: index it (buffering changes until the reply is
        written), then read what the stream has since ``since``."""
        s = self.s
        node = s.node
        channel = req.channel
        positioned = opts.map.has_stream
        delta = bool(req.delta) and req.delta in opts.allowed_delta_types
        json = delta and s.codec.name == "json"
        sub = self.channels.new_map_subscription(
            channel, state.grant, positioned=positioned, delta=delta
        )
        sub.tags_filter = state.tags_filter
        self.pending.pop(channel, None)
        s.add_sub(sub)
        node.registry.add_subscriber(channel, s)
        result = SubscribeResult(
            type=SUBSCRIPTION_TYPE_MAP,
            phase=MAP_PHASE_LIVE,
            data=opt_raw(state.grant.data),
            state=_wires(state_pubs or [], json=json),
            delta=delta,
            publish_debounce=int(opts.client_publish_debounce_interval * 1000),
        )
        try:
            await node.map_broker.subscribe(channel)  # before reading: no change is missed
            if positioned:
                limit = opts.map.live_transition_max_publication_limit or (
                    opts.map.max_page_size or MAX_PAGE_SIZE
                )
                hist = await node.map_broker.read_stream(
                    channel, HistoryFilter(limit=limit + 1, since=since)
                )
                top = hist.position
                if (recovery or since.epoch) and since.epoch != top.epoch:
                    raise ClientError.of(ErrorCode.UNRECOVERABLE_POSITION)
                if len(hist.publications) > limit:
                    raise ClientError.of(ErrorCode.UNRECOVERABLE_POSITION)
                pubs = hist.publications
                last = pubs[-1].offset if pubs else since.offset
                sub.epoch = top.epoch
                sub.offset = max(top.offset, last)
                result.recoverable = True
                result.epoch = top.epoch
                result.offset = sub.offset
                result.publications = _wires(_kept(pubs, sub.tags_filter), json=json)
            else:
                position = (await node.map_broker.read_stream(channel, HistoryFilter())).position
                result.epoch = position.epoch
            if recovery:
                result.was_recovering = req.recover
                result.recovered = req.recover
            if s.sub(channel) is not sub or s.closing:
                raise ClientError.of(ErrorCode.INTERNAL)
            await self._join_presence(channel, opts)
        except BaseException:
            await self.channels.remove(channel)
            raise
        now = time.time()
        if sub.expire_at is not None:
            if sub.client_side_refresh:
                result.expires = True
                result.ttl = max(1, int(sub.expire_at - now))
            self.channels._schedule_sub_expiry(sub)
        return result

    # ----------------------------------------------------- map presence channels

    async def _join_presence(self, channel: str, opts: ChannelOptions) -> None:
        """``map_clients``/``map_users`` presence of this client in ``prefix + channel``
        (the node renews it every ``client.presence_update_interval``)."""
        s = self.s
        if opts.map_clients_presence_channel_prefix or opts.map_users_presence_channel_prefix:
            info = s.client_info()
            await s.node.map_presence_join(channel, s.client_id, s.user, info)

    async def leave(self, channel: str, opts: ChannelOptions | None) -> None:
        """After an unsubscribe or a disconnect: the client's own key and its
        ``map_clients`` presence entry go (``map_users`` entries expire by TTL)."""
        s = self.s
        node = s.node
        if not node.registry.has_subscribers(channel):
            try:
                await node.map_broker.unsubscribe(channel)
            except Exception as exc:
                log.warning("map channel %s not unsubscribed: %s", channel, exc)
        if opts is None:
            return
        if opts.map.remove_client_on_unsubscribe:
            await node.map_remove_quietly(channel, s.client_id)
        if opts.map_clients_presence_channel_prefix:
            await node.map_remove_quietly(
                opts.map_clients_presence_channel_prefix + channel, s.client_id
            )

    # ------------------------------------------------------- publish / remove

    async def publish(self, req: PublishRequest) -> None:
        """A client's map publish (``type`` 1) or remove (``removed``): a map proxy or the
        application's handler decides (an answer approves, and may change the key, the
        data, the tags, ...), else ``map.allow_<publish|remove>_for_*``."""
        s = self.s
        node = s.node
        channel = req.channel
        if not channel:
            raise Disconnect.of(DisconnectCode.BAD_REQUEST)
        opts = self.channels._checked_options(channel)
        if not opts.is_map:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        key = req.key
        if opts.map.client_key == "client_id":
            key = s.client_id
        elif opts.map.client_key == "user_id":
            if not s.user:
                raise ClientError.of(ErrorCode.PERMISSION_DENIED)
            key = s.user
        if req.removed:
            await self._remove(channel, key, opts)
            return
        if req.data is UNSET:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        data = bytes(req.data)
        handler = node.handlers.map_publish
        reply = None
        if handler is not None:
            reply = await handler(MapPublishEvent(s.client_ref(), channel, key, data))
        if reply is None:
            self._check_permission(channel, opts, removed=False)
            reply = MapPublishReply()
        parsed = s.codec.name == "json"
        if reply.data is not None:
            data, parsed = to_payload(reply.data), is_parsed(reply.data)
        key = reply.key or key
        if not key:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        if publication_data_problem(data, node.policy.data_format(opts), parsed=parsed):
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        sub = s.sub(channel)
        publish = MapPublishOptions(
            data=data,
            client_info=s.client_info(sub.chan_info if sub is not None else None),
            tags=reply.tags,
            key_mode=reply.key_mode,
            idempotency_key=reply.idempotency_key,
            delta=reply.delta or opts.delta_publish,
            version=reply.version,
            version_epoch=reply.version_epoch,
        )
        await node.map_broker.publish(channel, key, publish, channel_options(opts.map))

    async def _remove(self, channel: str, key: str, opts: ChannelOptions) -> None:
        s = self.s
        handler = s.node.handlers.map_remove
        reply = None
        if handler is not None:
            reply = await handler(MapRemoveEvent(s.client_ref(), channel, key))
        if reply is None:
            self._check_permission(channel, opts, removed=True)
            reply = MapRemoveReply()
        key = reply.key or key
        if not key:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        remove = MapRemoveOptions(tags=reply.tags, idempotency_key=reply.idempotency_key)
        await s.node.map_broker.remove(channel, key, remove, channel_options(opts.map))

    def _check_permission(self, channel: str, opts: ChannelOptions, *, removed: bool) -> None:
        """``map.allow_<publish|remove>_for_client/subscriber/anonymous``, then insecure (103)."""
        s = self.s
        m = opts.map
        subscribed = s.sub(channel) is not None
        if removed:
            allowed = m.allow_remove_for_client or (m.allow_remove_for_subscriber and subscribed)
            anonymous_ok = m.allow_remove_for_anonymous
        else:
            allowed = m.allow_publish_for_client or (m.allow_publish_for_subscriber and subscribed)
            anonymous_ok = m.allow_publish_for_anonymous
        if not ((allowed and (s.user or anonymous_ok)) or s.node.config.client.insecure):
            raise ClientError.of(ErrorCode.PERMISSION_DENIED)
