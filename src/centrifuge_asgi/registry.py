"""Node-local index of live connections: channel → sessions, user → sessions.

Fan-out lives here: a publication is encoded once per channel and handed to every
subscriber's bounded outbox; nothing here awaits a client.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import anyio

from .delta import SUB_DELTA, SUB_POSITIONED, PublicationPush
from .engines.base import ClientInfo, Publication
from .protocol.codec import Codec, EncodedOnce
from .protocol.messages import JoinLeave, Push, Reply
from .tagfilter import NO_TAGS, TagsFilter
from .wire import client_info_wire

if TYPE_CHECKING:
    from .observer import NodeObserver


class SubscriptionState(Protocol):
    """What the fan-out reads of one subscription (``subscriptions.Subscription``)."""

    @property
    def pending(self) -> object: ...  # not None while its subscribe is in flight

    @property
    def flags(self) -> int: ...  # its SUB_POSITIONED and SUB_DELTA bits (delta.py)

    @property
    def tags_filter(self) -> TagsFilter | None: ...

    @property
    def channel(self) -> str: ...


class Named(Protocol):
    @property
    def name(self) -> str: ...


class Subscriber(Protocol):
    """A connection as the index and the fan-out use it: ``session.Session``, which this
    module does not import (sessions reach the registry through their host)."""

    @property
    def client_id(self) -> str: ...

    @property
    def user(self) -> str: ...

    @property
    def codec(self) -> Codec: ...

    @property
    def transport(self) -> Named: ...

    @property
    def sub_slot(self) -> SubscriptionState | dict[str, Any] | None:
        """None, the one subscription, or a dict of them (``SubscriptionState``) by channel."""
        ...

    def send(self, data: bytes) -> None: ...

    def deliver_publication(
        self, channel: str, pub: Publication, epoch: str, data: EncodedOnce
    ) -> bool: ...

    def deliver_join_leave(self, channel: str, data: EncodedOnce) -> bool: ...


S = TypeVar("S", bound=Subscriber)


class _Subscribers(dict[S, None]):
    """One channel's subscribers on this node, and the channel's name as the index
    keeps it: the subscriptions of later subscribers hold that str instead of a copy."""

    __slots__ = ("name",)

    name: str


class EmulationTarget(Protocol):
    """An open HTTP-streaming/SSE stream that takes the client's emulation frames."""

    async def feed(self, frame: bytes) -> bool:
        """Queue one frame of commands; False when the stream has ended."""
        ...


class Registry(Generic[S]):
    """This node's sessions (``S``: ``session.S``) by channel, user and client id."""

    def __init__(self) -> None:
        # emulation session id → its stream on this node (see transports/emulation.py)
        self.emulation_streams: dict[str, EmulationTarget] = {}
        self._channels: dict[str, _Subscribers[S]] = {}
        self._users: dict[str, dict[S, None]] = {}
        self._clients: dict[str, S] = {}
        self._empty: anyio.Event | None = None
        self._finishing: set[S] = set()  # unregistered, still releasing what they held
        # set by the node when it has metrics: told once per fan-out how many pushes
        # went out per transport (``_tally`` keeps the subscribers per transport, codec)
        self.observer: NodeObserver | None = None
        self._tally: dict[str, dict[tuple[str, Codec], int]] = {}

    async def feed_emulation(self, session_id: str, frame: bytes) -> bool:
        """Hand an ``/emulation`` frame to a stream held by this node (one that a client
        posted here, or that another node forwarded); False when there is none."""
        stream = self.emulation_streams.get(session_id)
        return stream is not None and await stream.feed(frame)

    # ------------------------------------------------------------------ connections

    def add_session(self, session: S) -> None:
        self._clients[session.client_id] = session
        self._users.setdefault(session.user, {})[session] = None
        if self.observer is not None:
            self.observer.count("node_action_count", ("add_client", ""))

    def remove_session(self, session: S, *, finishing: bool = False) -> None:
        """Unregister ``session``; ``finishing`` keeps :meth:`wait_empty` waiting until
        :meth:`finished` says its cleanup (unsubscribes, presence, leave) is done."""
        if self._clients.get(session.client_id) is session:
            del self._clients[session.client_id]
            if self.observer is not None:
                self.observer.count("node_action_count", ("remove_client", ""))
        users = self._users.get(session.user)
        if users is not None:
            users.pop(session, None)
            if not users:
                del self._users[session.user]
        if finishing:
            self._finishing.add(session)
        self._check_empty()

    def finished(self, session: S) -> None:
        self._finishing.discard(session)
        self._check_empty()

    def _check_empty(self) -> None:
        if not self._clients and not self._finishing and self._empty is not None:
            self._empty.set()

    async def wait_empty(self) -> None:
        """Wait until no connection is registered or still cleaning up (graceful shutdown)."""
        while self._clients or self._finishing:
            self._empty = anyio.Event()
            await self._empty.wait()

    def session(self, client_id: str) -> S | None:
        return self._clients.get(client_id)

    def user_sessions(self, user: str) -> list[S]:
        return list(self._users.get(user, ()))

    def user_connection_count(self, user: str) -> int:
        return len(self._users.get(user, ()))

    def sessions(self) -> Iterator[S]:
        return iter(list(self._clients.values()))

    @property
    def num_clients(self) -> int:
        return len(self._clients)

    @property
    def num_users(self) -> int:
        return len(self._users)

    # --------------------------------------------------------------------- channels

    def add_subscriber(self, channel: str, session: S) -> str | None:
        """Index a subscriber. None when it is the channel's first on this node; else the
        channel's name as the index holds it, for the subscription to keep instead of its
        own equal str (one name per channel, not per subscriber)."""
        subs = self._channels.get(channel)
        if self.observer is not None and (subs is None or session not in subs):
            self.observer.count("node_action_count", ("add_subscription", ""))
            tally = self._tally.setdefault(channel, {})
            key = (session.transport.name, session.codec)
            tally[key] = tally.get(key, 0) + 1
        if subs is None:
            subs = self._channels[channel] = _Subscribers()
            subs.name = channel
            subs[session] = None
            return None
        subs[session] = None
        return subs.name

    def remove_subscriber(self, channel: str, session: S) -> bool:
        """Drop a subscriber; True when the channel has no subscribers left here."""
        subs = self._channels.get(channel)
        if subs is None:
            return False
        if self.observer is not None and session in subs:
            self.observer.count("node_action_count", ("remove_subscription", ""))
            tally = self._tally.get(channel, {})
            key = (session.transport.name, session.codec)
            if tally.get(key, 0) > 1:
                tally[key] -= 1
            else:
                tally.pop(key, None)
        subs.pop(session, None)
        if subs:
            return False
        del self._channels[channel]
        self._tally.pop(channel, None)
        return True

    def subscribers(self, channel: str) -> list[S]:
        return list(self._channels.get(channel, ()))

    def has_subscribers(self, channel: str) -> bool:
        return channel in self._channels

    def channels(self) -> dict[str, int]:
        """Channel → number of subscribed connections on this node."""
        return {ch: len(subs) for ch, subs in self._channels.items()}

    @property
    def num_channels(self) -> int:
        return len(self._channels)

    @property
    def num_subscriptions(self) -> int:
        return sum(len(subs) for subs in self._channels.values())

    # ---------------------------------------------------------------------- fan-out

    def broadcast_publication(
        self, channel: str, pub: Publication, epoch: str, prev: Publication | None = None
    ) -> int:
        """Hand the publication to every local subscriber; returns how many there were.

        A live subscription that checks no stream position and uses no delta takes the
        encoded bytes directly (the common case), unless its tags filter leaves the
        publication out; the others go through ``deliver_publication``, which buffers
        while a subscribe is in flight, checks offsets, applies the filter, and picks
        the delta form (each form, and the fossil delta against ``prev``, is computed
        once per publication, see :mod:`~.delta`).
        """
        subs = self._channels.get(channel)
        if not subs:
            return 0
        encoded = PublicationPush(channel, pub, prev)
        # the subscriptions that take the encoded bytes as they are: those with none of
        # these bits (a position to check only matters for a publication with an offset)
        special = SUB_POSITIONED | SUB_DELTA if pub.offset else SUB_DELTA
        tags = NO_TAGS if pub.tags is None else pub.tags
        codec: Codec | None = None
        data = b""
        unsent: list[tuple[str, Codec]] = []  # not queued: filtered, late, out of place
        filtered = 0
        for session in list(subs):
            held = session.sub_slot  # inline Session.sub(channel): once per delivery
            sub: SubscriptionState | None = held.get(channel) if isinstance(held, dict) else held
            if (
                sub is None
                or sub.channel != channel
                or sub.pending is not None
                or sub.flags & special
            ):
                if not session.deliver_publication(channel, pub, epoch, encoded):
                    unsent.append((session.transport.name, session.codec))
                continue
            tf = sub.tags_filter
            if tf is not None and not tf(tags):
                unsent.append((session.transport.name, session.codec))
                filtered += 1
                continue
            if session.codec is not codec:
                codec = session.codec
                data = encoded.get(codec)
            session.send(data)
        if self.observer is not None:  # once per fan-out, not per delivery
            tally = self._tally.get(channel, {})
            self.observer.fanout_sent("push_publication", channel, tally, encoded, unsent)
            if filtered:
                self.observer.count("node_tags_filter_dropped_publications", ("",), filtered)
        return len(subs)

    def broadcast_join(self, channel: str, info: ClientInfo) -> int:
        return self._broadcast_join_leave(channel, info, join=True)

    def broadcast_leave(self, channel: str, info: ClientInfo) -> int:
        return self._broadcast_join_leave(channel, info, join=False)

    def _broadcast_join_leave(self, channel: str, info: ClientInfo, *, join: bool) -> int:
        subs = self._channels.get(channel)
        if not subs:
            return 0
        body = JoinLeave(info=client_info_wire(info))
        push = Push(channel=channel, join=body) if join else Push(channel=channel, leave=body)
        encoded = EncodedOnce(Reply(push=push))
        observer = self.observer
        if observer is None:
            for session in list(subs):
                session.deliver_join_leave(channel, encoded)
            return len(subs)
        sent: dict[tuple[str, Codec], int] = {}
        for session in list(subs):
            if session.deliver_join_leave(channel, encoded):
                key = (session.transport.name, session.codec)
                sent[key] = sent.get(key, 0) + 1
        observer.fanout_sent("push_join" if join else "push_leave", channel, sent, encoded)
        return len(subs)
