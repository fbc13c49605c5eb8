"""Channel commands of one connection: subscribe (with recovery), unsubscribe, publish,
presence, history and sub_refresh, plus per-subscriber delivery with position checks.

Ordering rule kept here: a subscription is *pending* from the moment it is indexed
until its subscribe reply is written; publications arriving meanwhile are buffered and
then delivered after the reply, de-duplicated by offset, so a client never sees a push
for a channel before its subscribe reply and never sees a publication twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from msgspec import UNSET

from . import auth
from .bitflag import BitFlag
from .codes import DisconnectCode, ErrorCode, UnsubscribeCode
from .delta import FOSSIL, SUB_DELTA, SUB_POSITIONED, PublicationPush, delta_chain
from .engines.base import HistoryFilter, Publication, PublishResult, StreamPosition
from .errors import ClientError, Disconnect
from .handlers import (
    PublishEvent,
    StreamPublication,
    SubRefreshEvent,
    SubscribeEvent,
    SubscribeReply,
    SubscribeStreamEvent,
)
from .map_subscriptions import MAP_TYPES, MapCommands
from .payload import ParsedJson, optional_payload, to_payload
from .pending import Pending
from .policy import Action, Feature, SubscribeAccess
from .protocol.codec import EncodedOnce
from .protocol.messages import (
    SUBSCRIPTION_TYPE_SHARED_POLL,
    ChannelRequest,
    HistoryRequest,
    HistoryResult,
    PresenceResult,
    PresenceStatsResult,
    PublishRequest,
    Push,
    Reply,
    SubRefreshRequest,
    SubRefreshResult,
    SubscribeRequest,
    SubscribeResult,
    UnsubscribePush,
)
from .tagfilter import TagsFilter, matches
from .timers import Timer
from .wire import client_info_wire, opt_raw, publication_wire

if TYPE_CHECKING:
    from .config import ChannelOptions
    from .engines.base import ClientInfo
    from .handlers import ClientRef
    from .host import SessionHost
    from .outbox import Outbox
    from .protocol.codec import Codec

log = logging.getLogger("centrifuge_asgi.session")

_REJECT_UNRECOVERED = 2  # subscribe flag bit sent by SDKs that use getState
_STREAM_INBOX = 16  # client publications queued for a bidirectional stream


@dataclass(slots=True)
class Grant:
    """What a token, a handler or the server API granted for one subscription."""

    info: bytes | None = None
    data: bytes | None = None
    expire_at: int | None = None
    client_side_refresh: bool = False
    override: auth.SubscriptionOverride | None = None

    @classmethod
    def from_server_subscription(cls, spec: auth.ServerSubscription) -> Grant:
        return cls(info=spec.info, data=spec.data, override=spec.override)

    @classmethod
    def from_token(cls, token: auth.SubscribeToken) -> Grant:
        return cls(
            info=token.info,
            data=token.data,
            expire_at=token.expire_at,
            client_side_refresh=token.expire_at is not None,
            override=token.override,
        )

    @classmethod
    def from_reply(cls, reply: SubscribeReply) -> Grant:
        return cls(
            info=optional_payload(reply.info),
            data=optional_payload(reply.data),
            expire_at=reply.expire_at,
            override=reply.override,
        )


# Subscription.flags: what a subscription does, fixed when it is made. Its properties of
# the same names read them; the subscribe path and the fan-out test the bits inline.
SUB_SERVER_SIDE = 1
SUB_PRESENCE = 2
SUB_EMIT_JOIN_LEAVE = 4  # publishes its join and leave
SUB_PUSH_JOIN_LEAVE = 8  # receives the channel's joins and leaves
SUB_RECOVERABLE = 16
SUB_CLIENT_SIDE_REFRESH = 32
# SUB_POSITIONED (64) and SUB_DELTA (128), read per delivery, are defined in delta.py


@dataclass(slots=True, eq=False)
class Subscription:
    """One channel subscription of one connection."""

    channel: str
    flags: int  # SUB_* bits (one slot instead of eight booleans)
    chan_info: bytes | None
    expire_at: int | None = None
    offset: int = 0
    epoch: str = ""
    pending: list[tuple[Publication, str, EncodedOnce]] | None = field(default_factory=list)
    timer: Timer | None = None
    # one slot, two phases: while the subscribe is in flight, the bytes buffered; once
    # live (reset by activate), the stream top seen by the previous periodic position
    # check (check_position skips pending subscriptions)
    watermark: int = 0
    tags_filter: TagsFilter | None = None  # the subscribe's ``tf``, compiled
    delta_base: int = 0  # offset of the payload the client holds as its delta base
    rare: RareParts | None = None  # made on first use: few subscriptions need one

    positioned = BitFlag(SUB_POSITIONED)
    delta = BitFlag(SUB_DELTA)  # fossil delta negotiated (see delta.py)
    server_side = BitFlag(SUB_SERVER_SIDE)
    presence = BitFlag(SUB_PRESENCE)
    emit_join_leave = BitFlag(SUB_EMIT_JOIN_LEAVE)
    push_join_leave = BitFlag(SUB_PUSH_JOIN_LEAVE)
    recoverable = BitFlag(SUB_RECOVERABLE)
    client_side_refresh = BitFlag(SUB_CLIENT_SIDE_REFRESH)

    @property
    def stream(self) -> ChannelStream | None:
        """The subscription stream that feeds this one, if any."""
        return None if self.rare is None else self.rare.stream

    @property
    def shared_poll(self) -> bool:
        """A shared poll subscription (shared_poll.py)."""
        return self.rare is not None and self.rare.shared_poll

    @property
    def map_channel(self) -> bool:
        """A map subscription (map_subscriptions.py)."""
        return self.rare is not None and self.rare.map_channel

    @property
    def unsubscribe_after(self) -> tuple[int, str] | None:
        """A server unsubscribe (code, reason) that arrived while the subscribe was
        pending, carried out once it is live."""
        return None if self.rare is None else self.rare.unsubscribe_after


@dataclass(slots=True, eq=False)
class RareParts:
    """What only some subscriptions have: a stream handler, the map or shared poll kind,
    a server unsubscribe held back while the subscribe was pending. Apart from
    :class:`Subscription`, so that a plain one holds one empty slot instead of four."""

    stream: ChannelStream | None = None
    shared_poll: bool = False
    map_channel: bool = False
    unsubscribe_after: tuple[int, str] | None = None


@dataclass(slots=True, eq=False)
class ChannelStream:
    """The subscribe-stream handler run for one subscription (a node-owned task).

    ``scope`` ends it (unsubscribe, disconnect); ``inbox`` carries the client's
    publications to a bidirectional stream; ``attached`` is set once the subscription
    exists, so no publication is delivered before it.
    """

    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    inbox: MemoryObjectSendStream[bytes] | None = None
    outbox: MemoryObjectReceiveStream[bytes] | None = None  # what the handler reads
    attached: anyio.Event = field(default_factory=anyio.Event)

    def close(self) -> None:
        self.scope.cancel()
        if self.inbox is not None:
            self.inbox.close()
        if self.outbox is not None:
            self.outbox.close()


_NO_SUBS: Mapping[str, Subscription] = MappingProxyType({})


class ChannelCommands:
    """The channel commands of a connection: ``session.Session`` inherits them (this
    module may not import that one), so they run on the session itself, with no object
    of their own. The subscriptions are here too: ``sub_slot`` holds None, the one
    :class:`Subscription`, or a dict of them by channel (two or more); a connection
    mostly holds one, which then costs no dict. Read it through :meth:`sub` and the
    methods after it; the fan-out and the subscribe path read it inline."""

    __slots__ = ("_maps", "sub_slot")

    if TYPE_CHECKING:  # what these methods use of their Session (set up by its __init__)
        sub_slot: Subscription | dict[str, Subscription] | None
        _maps: MapCommands | None
        node: SessionHost
        client_id: str
        user: str
        codec: Codec
        transport: Any  # its ``name`` labels the metrics
        outbox: Outbox

        @property
        def closing(self) -> bool: ...

        def client_info(self, chan_info: bytes | None = None) -> ClientInfo: ...

        def client_ref(self) -> ClientRef: ...

        def send(self, data: bytes) -> None: ...

        def send_push(self, push: Push) -> None: ...

        def disconnect(self, code: int, reason: str = "") -> None: ...

    @property
    def maps(self) -> MapCommands:
        maps = self._maps
        if maps is None:
            maps = self._maps = MapCommands(self, self)
        return maps

    # ---------------------------------------------------------------- subscriptions

    def sub(self, channel: str) -> Subscription | None:
        """The subscription of ``channel``, if any."""
        held = self.sub_slot
        if isinstance(held, dict):
            return held.get(channel)
        return held if held is not None and held.channel == channel else None

    def sub_count(self) -> int:
        held = self.sub_slot
        if held is None:
            return 0
        return len(held) if isinstance(held, dict) else 1

    def subscriptions(self) -> list[Subscription]:
        """The subscriptions, as a list made now."""
        held = self.sub_slot
        if held is None:
            return []
        return list(held.values()) if isinstance(held, dict) else [held]

    def sub_channels(self) -> list[str]:
        """The subscribed channels, as a list made now."""
        held = self.sub_slot
        if held is None:
            return []
        return list(held) if isinstance(held, dict) else [held.channel]

    def add_sub(self, sub: Subscription) -> None:
        """Hold ``sub``, in place of any subscription of its channel (as a dict's item
        assignment would: the callers checked for one before they awaited)."""
        held = self.sub_slot
        if held is None:
            self.sub_slot = sub
        elif isinstance(held, dict):
            held[sub.channel] = sub
        elif held.channel == sub.channel:
            self.sub_slot = sub
        else:
            self.sub_slot = {held.channel: held, sub.channel: sub}

    def pop_sub(self, channel: str) -> Subscription | None:
        """Forget the subscription of ``channel``; returns it (None if there was none)."""
        held = self.sub_slot
        if isinstance(held, dict):
            sub = held.pop(channel, None)
            if len(held) == 1:  # back to one: no dict
                self.sub_slot = next(iter(held.values()))
            return sub  # (a dict holds two or more, so it is never left empty)
        if held is not None and held.channel == channel:
            self.sub_slot = None
            return held
        return None

    @property
    def subs(self) -> Mapping[str, Subscription]:
        """The subscriptions by channel: a read-only mapping made now (for inspection;
        change them with add_sub and pop_sub)."""
        held = self.sub_slot
        if held is None:
            return _NO_SUBS
        if isinstance(held, dict):
            return MappingProxyType(dict(held))
        return MappingProxyType({held.channel: held})

    # ------------------------------------------------------------------ subscribe

    async def subscribe(self, req: SubscribeRequest) -> SubscribeResult:
        node = self.node
        channel = req.channel
        if not channel or (req.delta and req.delta != FOSSIL):
            raise Disconnect.of(DisconnectCode.BAD_REQUEST)
        policy = node.policy
        policy.check_length(channel)
        held = self.sub_slot  # None (no subscription yet) needs no call
        if held is not None and self.sub(channel) is not None:
            raise ClientError.of(ErrorCode.ALREADY_SUBSCRIBED)
        if (0 if held is None else self.sub_count()) >= policy.channel_limit:
            raise ClientError.of(ErrorCode.LIMIT_EXCEEDED)
        _, rest, found = node.config.resolve_channel(channel)  # one lookup for both checks
        if req.type == SUBSCRIPTION_TYPE_SHARED_POLL or (
            found is not None and found.subscription_type == "shared_poll"
        ):
            return await self._subscribe_shared_poll(req)
        opts = policy.checked_resolved(channel, rest, found)
        if req.type != 0 or opts.subscription_type not in ("", "stream"):
            return await self._typed_subscribe(req, opts)
        if opts.subscribe_stream_proxy_enabled and self._streamed(req, opts):
            return await self._subscribe_stream(req, opts)
        grant = await self._authorize_subscribe(req, opts)
        # as in Centrifugo, after the permission checks: 107 when not allowed or invalid
        tags_filter = None if req.tf is None else policy.tags_filter(opts, req.tf)
        return await self._subscribe(
            channel, opts, grant, req, server_side=False, tags_filter=tags_filter
        )

    async def _typed_subscribe(
        self, req: SubscribeRequest, opts: ChannelOptions
    ) -> SubscribeResult:
        """A subscribe of another type than ``stream``: it must be the namespace's (103)."""
        if MAP_TYPES.get(req.type) == opts.subscription_type:
            return await self.maps.subscribe(req, opts)
        raise ClientError.of(ErrorCode.PERMISSION_DENIED)

    def new_map_subscription(
        self, channel: str, grant: Grant, *, positioned: bool, delta: bool = False
    ) -> Subscription:
        """The subscription a map subscribe makes live (no presence or join/leave)."""
        return Subscription(
            channel=channel,
            flags=(SUB_RECOVERABLE | SUB_POSITIONED if positioned else 0)
            | (SUB_CLIENT_SIDE_REFRESH if grant.client_side_refresh else 0)
            | (SUB_DELTA if delta else 0),
            chan_info=grant.info,
            expire_at=grant.expire_at,
            rare=RareParts(map_channel=True),
        )

    async def _subscribe_shared_poll(self, req: SubscribeRequest) -> SubscribeResult:
        """A shared poll subscribe: authorized as usual; no broker, positions or presence.
        Data flows once the client tracks keys (``sub_refresh`` types 1 and 2)."""
        node = self.node
        channel = req.channel
        # as Centrifuge: another type on a shared poll channel is 107, type 4 elsewhere 108
        if req.type != SUBSCRIPTION_TYPE_SHARED_POLL:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        known = node.config.channel_options(channel)
        if known is None or known.subscription_type != "shared_poll":
            raise ClientError.of(ErrorCode.NOT_AVAILABLE)
        opts = node.policy.checked(channel)
        grant = await self._authorize_subscribe(req, opts)
        now = time.time()
        if grant.expire_at is not None and grant.expire_at <= now:
            raise ClientError.of(ErrorCode.EXPIRED)
        if self.sub(channel) is not None or self.closing:
            raise ClientError.of(ErrorCode.ALREADY_SUBSCRIBED)
        sub = Subscription(
            channel=channel,
            flags=SUB_CLIENT_SIDE_REFRESH if grant.client_side_refresh else 0,
            chan_info=grant.info,
            expire_at=grant.expire_at,
            pending=None,
            rare=RareParts(shared_poll=True),
        )
        self.add_sub(sub)

        def lost() -> None:
            if self.sub(channel) is sub:
                self.unsubscribe_push(channel, UnsubscribeCode.INSUFFICIENT_STATE)

        delta = bool(req.delta) and req.delta in opts.allowed_delta_types  # fossil per key
        epoch = node.shared_poll.subscribe(channel, opts.shared_poll, self, lost, delta=delta)
        result = SubscribeResult(
            type=SUBSCRIPTION_TYPE_SHARED_POLL, epoch=epoch, data=opt_raw(grant.data), delta=delta
        )
        if sub.expire_at is not None:
            if sub.client_side_refresh:
                result.expires = True
                result.ttl = max(1, int(sub.expire_at - now))
            self._schedule_sub_expiry(sub)
        return result

    async def _authorize_subscribe(self, req: SubscribeRequest, opts: ChannelOptions) -> Grant:
        node = self.node
        channel = req.channel
        if req.token:
            return Grant.from_token(await self._verify_sub_token(req.token, channel))
        policy = node.policy
        # A private channel needs a token; on a user-limited channel only its user list
        # decides: another user's channel never reaches the subscribe proxy or handler.
        access = policy.subscribe_access(channel, opts, self.user)
        if access is SubscribeAccess.DENIED:
            raise ClientError.of(ErrorCode.PERMISSION_DENIED)
        if access is SubscribeAccess.GRANTED:
            return Grant()
        handler = node.handlers.subscribe
        if handler is not None:
            raw = bytes(req.data) if req.data is not UNSET else None
            reply = await handler(SubscribeEvent(self.client_ref(), channel, raw))
            if reply is not None:
                return Grant.from_reply(reply)
        if policy.subscribe_allowed(channel, opts, self.user):
            return Grant()
        raise ClientError.of(ErrorCode.PERMISSION_DENIED)

    # ------------------------------------------------------- subscription streams

    def _streamed(self, req: SubscribeRequest, opts: ChannelOptions) -> bool:
        """As Centrifugo: a token, a private or a user-limited channel is decided as usual."""
        access = self.node.policy.subscribe_access(req.channel, opts, self.user)
        return not req.token and access is SubscribeAccess.ASK

    async def _subscribe_stream(
        self, req: SubscribeRequest, opts: ChannelOptions
    ) -> SubscribeResult:
        """Subscribe through the stream handler: its first item decides, the rest is pushed
        to this client alone (no positions, no recovery, as Centrifugo)."""
        node = self.node
        channel = req.channel
        handler = node.handlers.subscribe_stream
        if handler is None:
            log.info("no subscribe stream handler or proxy for channel %s", channel)
            raise ClientError.of(ErrorCode.NOT_AVAILABLE)
        bidi = opts.subscribe_stream_proxy_bidirectional
        stream = ChannelStream()
        if bidi:
            stream.inbox, stream.outbox = anyio.create_memory_object_stream[bytes](_STREAM_INBOX)
        raw = bytes(req.data) if req.data is not UNSET else None
        publications = _drain(stream.outbox)
        event = SubscribeStreamEvent(self.client_ref(), channel, raw, bidi, publications)
        first_out, first_in = anyio.create_memory_object_stream[Any](1)
        if not node.spawn(self._pump, stream, handler(event), channel, first_out):
            stream.close()
            first_out.close()
            first_in.close()
            raise ClientError.of(ErrorCode.INTERNAL)
        attached = False
        try:
            with first_in:
                try:
                    first = await first_in.receive()
                except anyio.EndOfStream:  # the pump ended without an answer (cancelled)
                    raise ClientError.of(ErrorCode.INTERNAL) from None
            if isinstance(first, ClientError | Disconnect):
                raise first
            if isinstance(first, BaseException):
                log.error(
                    "subscribe stream of channel %s failed for client=%s: %r",
                    channel,
                    self.client_id,
                    first,
                    extra={"client": self.client_id, "channel": channel, "code": 100},
                )
                raise ClientError.of(ErrorCode.INTERNAL)
            grant = Grant.from_reply(first)
            grant.client_side_refresh = grant.expire_at is not None
            result = await self._subscribe(
                channel, opts, grant, req, server_side=False, stream=stream
            )
            attached = True
            return result
        finally:
            if not attached:
                stream.close()

    async def _pump(
        self,
        stream: ChannelStream,
        items: AsyncIterator[Any],
        channel: str,
        first: MemoryObjectSendStream[Any],
    ) -> None:
        """Run one stream handler: hand its first item to the subscribe, deliver the rest."""
        with stream.scope, first:
            try:
                async with aclosing(items):  # type: ignore[type-var]
                    reply = await anext(items, None)
                    if not isinstance(reply, SubscribeReply):
                        first.send_nowait(TypeError(f"first stream item {reply!r}"))
                        return
                    first.send_nowait(reply)
                    await stream.attached.wait()
                    async for item in items:
                        sub = self.sub(channel)
                        if sub is None or sub.stream is not stream:
                            return
                        self._deliver_streamed(channel, item)
                        await anyio.lowlevel.checkpoint()
            except Exception as exc:
                if not stream.attached.is_set():
                    first.send_nowait(exc)
                    return
                log.warning(
                    "subscribe stream of %s for client=%s failed: %r", channel, self.client_id, exc
                )
                code = UnsubscribeCode.INSUFFICIENT_STATE
            else:
                code = UnsubscribeCode.SERVER
            sub = self.sub(channel)
            if sub is not None and sub.stream is stream:
                self.unsubscribe_push(channel, code)

    def _deliver_streamed(self, channel: str, item: Any) -> None:
        if isinstance(item, StreamPublication):
            tags = dict(item.tags) if item.tags else None
            pub = Publication(data=to_payload(item.data), tags=tags)
        else:
            pub = Publication(data=to_payload(item))
        encoded = EncodedOnce(Reply(push=Push(channel=channel, pub=publication_wire(pub))))
        self.deliver_publication(channel, pub, "", encoded)

    async def _verify_sub_token(self, token: str, channel: str) -> auth.SubscribeToken:
        try:
            claims = await self.node.subscription_token_verifier.verify_subscribe(token)
        except auth.TokenExpired:
            raise ClientError.of(ErrorCode.TOKEN_EXPIRED) from None
        except auth.JWKSUnavailable as exc:
            # nothing is known about the token yet: a temporary error the SDK retries
            log.info(
                "subscription token of client=%s not checked: %s",
                self.client_id,
                exc,
                extra={
                    "client": self.client_id,
                    "user": self.user,
                    "channel": channel,
                    "code": 100,
                },
            )
            raise ClientError.of(ErrorCode.INTERNAL) from None
        except auth.TokenInvalid as exc:
            log.info(
                "invalid subscription token from client=%s: %s",
                self.client_id,
                exc,
                extra={
                    "client": self.client_id,
                    "user": self.user,
                    "channel": channel,
                    "code": 103,
                },
            )
            raise ClientError.of(ErrorCode.PERMISSION_DENIED) from None
        if (
            claims.channel != channel
            or claims.user != self.user
            or (claims.client and claims.client != self.client_id)
        ):
            raise Disconnect.of(DisconnectCode.INVALID_TOKEN)
        return claims

    async def subscribe_server_side(
        self,
        channel: str,
        grant: Grant,
        recover: SubscribeRequest | None,
        *,
        stream_recovery: bool = False,
    ) -> SubscribeResult:
        """Subscribe without permission checks (token claims, handlers, server API).

        ``stream_recovery`` (the server API's subscribe, as in Centrifugo) recovers as a
        stream even in a ``force_recovery_mode: cache`` namespace.
        """
        opts = self.node.policy.resolve(channel)
        req = recover if recover is not None else SubscribeRequest(channel=channel)
        return await self._subscribe(
            channel, opts, grant, req, server_side=True, stream_recovery=stream_recovery
        )

    async def _subscribe(
        self,
        channel: str,
        opts: ChannelOptions,
        grant: Grant,
        req: SubscribeRequest,
        *,
        server_side: bool,
        tags_filter: TagsFilter | None = None,
        stream: ChannelStream | None = None,
        stream_recovery: bool = False,
    ) -> SubscribeResult:
        node = self.node
        now = time.time()
        if grant.expire_at is not None and grant.expire_at <= now:
            raise ClientError.of(ErrorCode.EXPIRED)
        gets = node.policy.features(
            opts,
            self.user,
            grant.override,
            recoverable=req.recoverable,
            positioned=req.positioned,
            join_leave=req.join_leave,
        )
        positioned = gets.positioned and stream is None
        delta = bool(req.delta) and req.delta in opts.allowed_delta_types
        sub = Subscription(
            channel=channel,
            flags=(SUB_SERVER_SIDE if server_side else 0)
            | (SUB_PRESENCE if gets.presence else 0)
            | (SUB_EMIT_JOIN_LEAVE if gets.emit_join_leave else 0)
            | (SUB_PUSH_JOIN_LEAVE if gets.push_join_leave else 0)
            | (SUB_RECOVERABLE if gets.recoverable and stream is None else 0)
            | (SUB_CLIENT_SIDE_REFRESH if grant.client_side_refresh else 0)
            | (SUB_POSITIONED if positioned else 0)
            | (SUB_DELTA if delta else 0),
            chan_info=grant.info,
            expire_at=grant.expire_at,
            tags_filter=tags_filter,
            rare=None if stream is None else RareParts(stream=stream),
        )
        if self.sub_slot is None:  # the usual first subscription: no call
            self.sub_slot = sub
        else:
            self.add_sub(sub)
        if stream is not None:
            stream.attached.set()
        presence_added = False
        try:
            name = node.registry.add_subscriber(channel, self)
            if name is None:  # the channel's first subscriber on this node
                node.metrics.count("node_action_count", ("broker_subscribe", ""))
            else:  # keep the index's str of the channel name, not a copy per subscriber
                sub.channel = name
            # Every subscriber waits for the broker subscription (idempotent once it is
            # confirmed), so none reads the stream top before delivery is live.
            await node.broker.subscribe(channel)
            self._check_still_wanted(sub)
            result = SubscribeResult(
                data=opt_raw(grant.data),
                delta=delta,
                publish_debounce=int(opts.client_publish_debounce_interval * 1000),
            )
            if positioned:
                cache = gets.cache_recovery and not stream_recovery
                auto = cache and gets.auto_recover
                await self._position(sub, opts, req, result, cache=cache, auto=auto)
                self._check_still_wanted(sub)
            if gets.presence:
                node.metrics.count("node_action_count", ("add_presence", ""))
                await node.presence_manager.add_presence(
                    channel, self.client_id, self.client_info(sub.chan_info)
                )
                presence_added = True
                self._check_still_wanted(sub)
        except BaseException:
            with anyio.CancelScope(shield=True):
                if self.sub(channel) is sub:
                    await self.remove(channel)
                elif presence_added:  # detached meanwhile (connection closed): undo
                    await self._forget_presence(channel)
            raise
        if sub.expire_at is not None:
            if sub.client_side_refresh:
                result.expires = True
                result.ttl = max(1, int(sub.expire_at - now))
            self._schedule_sub_expiry(sub)
        return result

    async def _position(
        self,
        sub: Subscription,
        opts: ChannelOptions,
        req: SubscribeRequest,
        result: SubscribeResult,
        *,
        cache: bool = False,
        auto: bool = False,
    ) -> None:
        """Fill the stream position, recovering missed publications when asked (or
        unasked with ``auto``); ``cache`` recovers only the latest publication."""
        node = self.node
        meta_ttl = node.policy.meta_ttl(opts)
        result.positioned = True
        recoverable = result.recoverable = bool(sub.flags & SUB_RECOVERABLE)
        recovered = False
        pubs: list[Publication] = []
        top = StreamPosition()
        if recoverable and cache and (req.recover or auto):
            result.was_recovering = True
            top, pubs, recovered = await self._recover_latest(sub, req, meta_ttl)
        elif recoverable and req.recover:
            result.was_recovering = True
            since = StreamPosition(req.offset, req.epoch)
            try:
                hist = await node.broker.history(
                    sub.channel,
                    HistoryFilter(limit=node.policy.recovery_limit, since=since),
                    meta_ttl,
                )
            except ClientError as exc:
                if exc.code != ErrorCode.UNRECOVERABLE_POSITION:
                    raise
            else:
                top, pubs = hist.position, hist.publications
                recovered = _is_recovered(req.offset, pubs, top)
        if not recovered and not top.epoch:
            top = (
                await node.broker.history(sub.channel, HistoryFilter(limit=0), meta_ttl)
            ).position
        if result.was_recovering:
            has = "yes" if recovered and pubs else "no"
            labels = ("yes" if recovered else "no", "", has)
            node.metrics.count("client_recover", labels)
            if recovered:
                node.metrics.observe("client_recovered_publications", ("",), len(pubs))
        if req.recover and not recovered and not cache and req.flag & _REJECT_UNRECOVERED:
            raise ClientError.of(ErrorCode.UNRECOVERABLE_POSITION)
        result.epoch = top.epoch
        sub.epoch = top.epoch
        sub.offset = top.offset
        if recovered:
            result.recovered = True
            result.offset = req.offset
            # only the matching ones, as Centrifugo; the position still moves past all
            tf = sub.tags_filter
            sent = [p for p in pubs if tf is None or matches(tf, p.tags)]
            if sub.flags & SUB_DELTA:
                json = self.codec.name == "json"
                result.publications, sub.delta_base = await delta_chain(sent, json=json)
            else:
                result.publications = [publication_wire(p) for p in sent]
        else:
            result.offset = top.offset

    async def _recover_latest(
        self, sub: Subscription, req: SubscribeRequest, meta_ttl: float
    ) -> tuple[StreamPosition, list[Publication], bool]:
        """Cache recovery: the stream top, the latest publication this subscriber may
        see (newest first within the recovery limit when it has a tags filter), and
        whether it counts as recovered (see :func:`_cache_recovered`)."""
        node = self.node
        tf = sub.tags_filter
        limit = 1 if tf is None else node.policy.recovery_limit
        hist = await node.broker.history(
            sub.channel, HistoryFilter(limit=limit, reverse=True), meta_ttl
        )
        top, newest_first = hist.position, hist.publications
        latest = newest_first[0] if newest_first else None
        shown = latest
        if tf is not None:
            shown = next((p for p in newest_first if matches(tf, p.tags)), None)
            if shown is None:
                latest = None  # as Centrifugo: nothing to show counts as an empty cache
        pubs, recovered = _cache_recovered(latest, shown, top, req.offset, req.epoch)
        return top, pubs, recovered

    async def activate(self, channel: str) -> None:
        """After the subscribe reply: flush buffered publications, then announce the join."""
        sub = self.sub_slot  # inline s.sub(channel): after every subscribe
        if isinstance(sub, dict):
            sub = sub.get(channel)
        if sub is None or sub.pending is None or sub.channel != channel:
            return
        buffered, sub.pending = sub.pending, None
        sub.watermark = 0  # from bytes buffered to the stream top of the last check
        for pub, epoch, data in buffered:
            self.deliver_publication(channel, pub, epoch, data)
        if sub.unsubscribe_after is not None:  # the server unsubscribed it meanwhile
            code, reason = sub.unsubscribe_after
            await self.unsubscribe_by_server(channel, code, reason)
            return
        if sub.flags & SUB_EMIT_JOIN_LEAVE and self.sub(channel) is sub:
            try:
                await self.node.broker.publish_join(channel, self.client_info(sub.chan_info))
            except Exception as exc:  # join/leave are at most once; the subscription stands
                log.warning("join of %s not published: %s", channel, exc)

    async def activate_all(self) -> None:
        for channel in self.sub_channels():
            await self.activate(channel)

    # ---------------------------------------------------------------- delivery

    def deliver_publication(
        self, channel: str, pub: Publication, epoch: str, data: EncodedOnce
    ) -> bool:
        """One publication for this client: buffered while the subscribe is pending,
        offset-checked when positioned, else queued. ``Registry.broadcast_publication``
        queues the last case itself, so a new delivery rule must be added there too.
        False when nothing was queued or buffered (transport_messages_sent)."""
        sub = self.sub_slot  # inline s.sub(channel): once per delivery
        if isinstance(sub, dict):
            sub = sub.get(channel)
        if sub is None or sub.channel != channel:
            return False
        if sub.pending is not None:
            sub.watermark += len(data.get(self.codec))  # bytes buffered
            if sub.watermark > self.outbox.max_bytes > 0:
                self.disconnect(DisconnectCode.SLOW)
                return False
            sub.pending.append((pub, epoch, data))
            return True
        flags = sub.flags
        if flags & SUB_POSITIONED and pub.offset:
            if sub.epoch and epoch != sub.epoch:
                self.insufficient_state(sub)
                return False
            if pub.offset <= sub.offset:
                return False  # late duplicate (already recovered or delivered)
            if pub.offset != sub.offset + 1:
                self.insufficient_state(sub)
                return False
            sub.offset = pub.offset
            sub.epoch = epoch
        if sub.tags_filter is not None and not matches(sub.tags_filter, pub.tags):
            # filtered out: its position counts, its data is not sent
            self.node.metrics.count("node_tags_filter_dropped_publications", ("",))
            return False
        if flags & SUB_DELTA:
            if not isinstance(data, PublicationPush):
                data = PublicationPush(channel, pub)
            if sub.map_channel:  # per-key deltas (map_subscriptions.py)
                self.send(data.map_delta_form(self.codec))
                return True
            frame = data.delta_form(self.codec, sub.delta_base if flags & SUB_POSITIONED else 0)
            sub.delta_base = pub.offset if frame else 0
            self.send(frame)
            return True
        self.send(data.get(self.codec))
        return True

    def check_position(self, channel: str, top: StreamPosition) -> None:
        """Periodic check: the client must have reached the top seen one check ago.

        Comparing with the previous check's top (not the current one) leaves a full
        interval for publications still in flight, so only real loss is flagged.
        """
        sub = self.sub(channel)
        if sub is None or not sub.positioned or sub.pending is not None:
            return
        if (sub.epoch and sub.epoch != top.epoch) or sub.offset < sub.watermark:
            self.insufficient_state(sub)
            return
        sub.watermark = top.offset

    def insufficient_state(self, sub: Subscription) -> None:
        """A gap in a positioned stream: resubscribe (client-side) or reconnect (server-side)."""
        if sub.server_side:
            self.disconnect(DisconnectCode.INSUFFICIENT_STATE)
            return
        self.unsubscribe_push(sub.channel, UnsubscribeCode.INSUFFICIENT_STATE)

    def unsubscribe_push(self, channel: str, code: UnsubscribeCode) -> None:
        """Tell the client it lost ``channel``; nothing more is sent for it."""
        sub = self._unsubscribe_now(channel, code, code.reason)
        if sub is not None:
            self.node.spawn(self._release, sub)

    async def unsubscribe_by_server(self, channel: str, code: int, reason: str) -> None:
        """Server API ``unsubscribe``; waits for an in-flight subscribe reply first."""
        sub = self.sub(channel)
        if sub is not None and sub.pending is not None:
            if sub.rare is None:
                sub.rare = RareParts()
            sub.rare.unsubscribe_after = (code, reason)  # carried out by activate()
            return
        sub = self._unsubscribe_now(channel, code, reason)
        if sub is not None:
            await self._release(sub)

    def _unsubscribe_now(self, channel: str, code: int, reason: str) -> Subscription | None:
        sub = self._detach(channel)
        if sub is not None:
            push = Push(channel=channel, unsubscribe=UnsubscribePush(code=code, reason=reason))
            self.send_push(push)
        return sub

    # ----------------------------------------------------------- unsubscribe

    async def unsubscribe(self, channel: str) -> None:
        if not channel:
            raise Disconnect.of(DisconnectCode.BAD_REQUEST)
        if self._maps is not None:
            self._maps.pending.pop(channel, None)
        await self.remove(channel)

    async def remove(self, channel: str) -> None:
        """Forget a subscription: index, broker, presence, then announce the leave."""
        sub = self._detach(channel)
        if sub is not None:
            await self._release(sub)

    def _detach(self, channel: str) -> Subscription | None:
        """Forget ``channel`` locally at once: no more deliveries, out of the index."""
        sub = self.sub_slot
        if sub is not None and not isinstance(sub, dict) and sub.channel == channel:
            self.sub_slot = None  # the usual one subscription: no call
        else:
            sub = self.pop_sub(channel)
        if sub is not None:
            if sub.timer is not None:
                sub.timer.cancel()
            if sub.stream is not None:
                sub.stream.close()
            self.node.registry.remove_subscriber(channel, self)
        return sub

    async def _release(self, sub: Subscription) -> None:
        """The engine side of a detached subscription: broker, presence, leave."""
        node = self.node
        channel = sub.channel
        if sub.shared_poll:
            node.shared_poll.unsubscribe(channel, self)
            return
        try:
            if sub.map_channel:
                await self.maps.leave(channel, node.policy.options(channel))
            # Checked right before the call: a subscriber that arrived meanwhile keeps it.
            elif not node.registry.has_subscribers(channel):
                node.metrics.count("node_action_count", ("broker_unsubscribe", ""))
                await node.broker.unsubscribe(channel)
            if sub.flags & SUB_PRESENCE:
                node.metrics.count("node_action_count", ("remove_presence", ""))
                await node.presence_manager.remove_presence(channel, self.client_id, self.user)
            if sub.flags & SUB_EMIT_JOIN_LEAVE and sub.pending is None:
                await node.broker.publish_leave(channel, self.client_info(sub.chan_info))
        except Exception:
            log.exception(
                "cleanup of channel %s failed for client=%s",
                channel,
                self.client_id,
                extra={"client": self.client_id, "user": self.user, "channel": channel},
            )

    async def remove_all(self, grace: float = 3.0) -> None:
        """Detach every subscription now, then release them concurrently (bounded)."""
        held = self.sub_slot
        if held is None:
            return
        channels = list(held) if isinstance(held, dict) else [held.channel]
        subs = [sub for ch in channels if (sub := self._detach(ch)) is not None]
        if not subs:
            return
        with anyio.move_on_after(grace):
            if len(subs) == 1:  # the common case needs no task
                await self._release(subs[0])
                return
            async with anyio.create_task_group() as tg:
                for sub in subs:
                    tg.start_soon(self._release, sub)

    # --------------------------------------------------------------- expiry

    def _schedule_sub_expiry(self, sub: Subscription) -> None:
        if sub.timer is not None:
            sub.timer.cancel()
            sub.timer = None
        if sub.expire_at is None:
            return
        delay = sub.expire_at - time.time()
        if sub.client_side_refresh:
            delay += self.node.config.client.expired_sub_close_delay
        sub.timer = self.node.scheduler.call_later(max(delay, 0.001), lambda: self._on_expired(sub))

    def _on_expired(self, sub: Subscription) -> None:
        if self.sub(sub.channel) is not sub or self.closing:
            return
        if not sub.client_side_refresh and self.node.handlers.sub_refresh is not None:
            self.node.spawn(self._sub_refresh_with_handler, sub)
            return
        if sub.expire_at is not None and sub.expire_at > time.time():
            self._schedule_sub_expiry(sub)
        elif sub.server_side:
            self.disconnect(DisconnectCode.SUBSCRIPTION_EXPIRED)
        else:
            self.unsubscribe_push(sub.channel, UnsubscribeCode.EXPIRED)

    async def _sub_refresh_with_handler(self, sub: Subscription) -> None:
        handler = self.node.handlers.sub_refresh
        if handler is None:
            return
        try:
            reply = await handler(SubRefreshEvent(self.client_ref(), sub.channel))
        except Disconnect as exc:
            self.disconnect(exc.code, exc.reason)
            return
        except Exception:  # retried later, like the connection refresh
            log.exception(
                "sub_refresh handler failed for client=%s",
                self.client_id,
                extra={"client": self.client_id, "user": self.user, "method": "sub_refresh"},
            )
            if self.sub(sub.channel) is sub:
                sub.timer = self.node.scheduler.call_later(10.0, lambda: self._on_expired(sub))
            return
        if self.sub(sub.channel) is not sub or self.closing:
            return  # unsubscribed (maybe resubscribed) while the handler ran
        if reply.expired or (reply.expire_at is not None and reply.expire_at <= time.time()):
            if sub.server_side:
                self.disconnect(DisconnectCode.SUBSCRIPTION_EXPIRED)
            else:
                self.unsubscribe_push(sub.channel, UnsubscribeCode.EXPIRED)
            return
        sub.expire_at = reply.expire_at
        self._schedule_sub_expiry(sub)

    async def sub_refresh(self, req: SubRefreshRequest) -> SubRefreshResult:
        if not req.channel:
            raise Disconnect.of(DisconnectCode.BAD_REQUEST)
        sub = self.sub(req.channel)
        if sub is None:
            raise ClientError.of(ErrorCode.PERMISSION_DENIED)
        if sub.shared_poll and req.type in (1, 2):  # shared poll track / untrack
            return self.node.shared_poll.sub_refresh(self, req)
        if not req.token:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        if not sub.client_side_refresh:
            raise Disconnect.of(DisconnectCode.BAD_REQUEST)
        try:
            claims = await self._verify_sub_token(req.token, req.channel)
        except ClientError as exc:
            if exc.temporary:  # key set unavailable: the SDK retries the refresh
                raise
            code = (
                DisconnectCode.EXPIRED
                if exc.code == ErrorCode.TOKEN_EXPIRED
                else DisconnectCode.INVALID_TOKEN
            )
            raise Disconnect.of(code) from None
        now = time.time()
        if claims.expire_at is not None and claims.expire_at <= now:
            raise ClientError.of(ErrorCode.EXPIRED)
        sub.expire_at = claims.expire_at
        self._schedule_sub_expiry(sub)
        if sub.expire_at is None:
            return SubRefreshResult()
        return SubRefreshResult(expires=True, ttl=max(1, int(sub.expire_at - now)))

    # ------------------------------------------------------- publish / presence / history

    def _checked_options(self, channel: str, feature: Feature | None = None) -> ChannelOptions:
        """3501 for no channel, then 102, 107 and (for ``feature``) 108."""
        if not channel:
            raise Disconnect.of(DisconnectCode.BAD_REQUEST)
        policy = self.node.policy
        opts = policy.checked(channel)
        if feature is not None:
            policy.require(opts, feature)
        return opts

    def _check_still_wanted(self, sub: Subscription) -> None:
        """After an await: the connection may have closed and dropped the subscription."""
        held = self.sub_slot  # inline s.sub(sub.channel): after each wait of a subscribe
        if held is not sub and (not isinstance(held, dict) or held.get(sub.channel) is not sub):
            raise ClientError.of(ErrorCode.INTERNAL)
        if self.closing:
            raise ClientError.of(ErrorCode.INTERNAL)

    async def _forget_presence(self, channel: str) -> None:
        with anyio.move_on_after(3):
            try:
                self.node.metrics.count("node_action_count", ("remove_presence", ""))
                await self.node.presence_manager.remove_presence(channel, self.client_id, self.user)
            except Exception as exc:
                log.warning("presence of %s in %s not removed: %s", self.client_id, channel, exc)

    def _permitted(self, opts: ChannelOptions, action: Action, channel: str) -> bool:
        """The ``allow_<action>_for_client/subscriber/anonymous`` scheme, then insecure."""
        return self.node.policy.allowed(
            opts, action, self.user, subscribed=self.sub(channel) is not None
        )

    async def publish(
        self, req: PublishRequest, *, pipelined: bool = False
    ) -> Pending[PublishResult] | None:
        """Publish as the client; with ``pipelined``, where the broker pipelines them, the
        publication is only queued and its pending result returned (``Session``)."""
        if req.type == 1:
            await self.maps.publish(req)
            return None
        node = self.node
        channel = req.channel
        opts = self._checked_options(channel)
        if req.data is UNSET:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        data = bytes(req.data)
        if opts.subscribe_stream_proxy_enabled:
            await self._publish_to_stream(channel, data)
            return None
        # node.publish checks the data; the JSON command decoder has parsed it already
        payload: object = ParsedJson(data) if self.codec.name == "json" else data
        skip_history = False
        handler = node.handlers.publish
        reply = None
        if handler is not None:
            reply = await handler(PublishEvent(self.client_ref(), channel, data))
        if reply is not None:
            if reply.data is not None:
                payload = reply.data  # a handler's or a proxy's data, checked all the same
            skip_history = reply.skip_history
        elif not self._permitted(opts, "publish", channel):
            raise ClientError.of(ErrorCode.PERMISSION_DENIED)
        sub = self.sub(channel)
        info = self.client_info(sub.chan_info if sub is not None else None)
        if pipelined:
            pending = await node.publish_pipelined(
                channel, payload, client_info=info, skip_history=skip_history
            )
            if pending is not None:
                return pending
        await node.publish(channel, payload, client_info=info, skip_history=skip_history)
        return None

    async def _publish_to_stream(self, channel: str, data: bytes) -> None:
        """A bidirectional stream takes the client's publication (108 elsewhere)."""
        sub = self.sub(channel)
        inbox = sub.stream.inbox if sub is not None and sub.stream is not None else None
        if inbox is None:
            raise ClientError.of(ErrorCode.NOT_AVAILABLE)
        try:
            await inbox.send(data)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ClientError.of(ErrorCode.NOT_AVAILABLE) from None

    async def presence(self, req: ChannelRequest) -> PresenceResult:
        channel = req.channel
        self._check_presence(channel)
        presence = await self.node.presence_manager.presence(channel)
        return PresenceResult(presence={cid: client_info_wire(i) for cid, i in presence.items()})

    async def presence_stats(self, req: ChannelRequest) -> PresenceStatsResult:
        channel = req.channel
        self._check_presence(channel)
        stats = await self.node.presence_manager.presence_stats(channel)
        return PresenceStatsResult(num_clients=stats.num_clients, num_users=stats.num_users)

    def _check_presence(self, channel: str) -> None:
        opts = self._checked_options(channel, "presence")
        if not self._permitted(opts, "presence", channel):
            raise ClientError.of(ErrorCode.PERMISSION_DENIED)

    async def history(self, req: HistoryRequest) -> HistoryResult:
        node = self.node
        channel = req.channel
        opts = self._checked_options(channel, "history")
        if not self._permitted(opts, "history", channel):
            raise ClientError.of(ErrorCode.PERMISSION_DENIED)
        limit = node.policy.history_limit(req.limit)
        since = None
        if req.since is not None:
            since = StreamPosition(req.since.offset, req.since.epoch)
        hist = await node.broker.history(
            channel,
            HistoryFilter(limit=limit, since=since, reverse=req.reverse),
            node.policy.meta_ttl(opts),
        )
        return HistoryResult(
            publications=[publication_wire(p) for p in hist.publications],
            epoch=hist.position.epoch,
            offset=hist.position.offset,
        )


async def _drain(inbox: MemoryObjectReceiveStream[bytes] | None) -> AsyncIterator[bytes]:
    """The client's publications to a bidirectional stream, until it ends."""
    if inbox is None:
        return
    try:
        async for data in inbox:
            yield data
    except anyio.ClosedResourceError:  # the subscription ended
        return


def _is_recovered(since: int, pubs: list[Publication], top: StreamPosition) -> bool:
    """All-or-nothing: every publication after ``since`` up to the top is present."""
    if not pubs:
        return top.offset == since
    return pubs[0].offset == since + 1 and pubs[-1].offset == top.offset


def _cache_recovered(
    latest: Publication | None,
    shown: Publication | None,
    top: StreamPosition,
    since_offset: int,
    since_epoch: str,
) -> tuple[list[Publication], bool]:
    """Centrifugo's cache recovery outcome: ``(publications to send, recovered)``.

    ``latest`` is the channel's newest publication in history, ``shown`` the newest one
    this subscriber may see. A client already at the top (same offset > 0 and epoch)
    is recovered with nothing to send. Otherwise it is recovered with ``shown`` when
    the history still holds the top publication, whatever its epoch; with an empty
    history it is not recovered.
    """
    at_top = since_offset > 0 and since_offset == top.offset and since_epoch == top.epoch
    if latest is None or shown is None:
        return [], at_top
    recovered = latest.offset == top.offset
    if recovered and not at_top:
        return [shown], True
    return [], recovered


__all__ = ["ChannelCommands", "Grant", "Subscription"]
