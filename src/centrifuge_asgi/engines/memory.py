"""Single-process engine: a broker with in-memory history streams and a presence map.

Publishing hands events straight to the node's :class:`BrokerEventHandler`; there are
no other nodes to reach. Every method runs without awaiting, so each call is atomic on
the event loop and offsets are assigned in publish order. Nothing survives a restart:
a new process starts new epochs.

Expiry is checked lazily on every access. The node also calls :meth:`MemoryBroker.sweep`
about once a second so that idle channels do not hold memory forever; the broker
starts no tasks of its own.

A stream that only ever was *read* (top offset 0: nothing published in its epoch) and
whose channel this node is not subscribed to expires after :data:`EMPTY_STREAM_TTL`
without reads instead of the meta TTL, so reading many channel names cannot pin
memory for 30 days.
"""

from __future__ import annotations

import secrets
import string
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

from ..codes import ErrorCode
from ..errors import ClientError
from .base import (
    BrokerEventHandler,
    Capabilities,
    ClientInfo,
    ControlEventHandler,
    HistoryFilter,
    HistoryResult,
    PresenceStats,
    Publication,
    PublishOptions,
    PublishResult,
    StreamPosition,
)

__all__ = ["DEFAULT_HISTORY_META_TTL", "EMPTY_STREAM_TTL", "MemoryBroker", "MemoryPresenceManager"]

DEFAULT_HISTORY_META_TTL = 30 * 24 * 3600.0
"""Seconds stream metadata lives without activity when no ``history_meta_ttl`` is set."""

EMPTY_STREAM_TTL = 60.0
"""Seconds an empty stream (top 0) of a channel nobody here subscribes to lives after its
last read (capped by the meta TTL). Longer than the default 40 s position check, which
reads the streams of positioned subscriptions."""

_EPOCH_LENGTH = 4
_EPOCH_ALPHABET = string.ascii_letters


def _new_epoch() -> str:
    return "".join(secrets.choice(_EPOCH_ALPHABET) for _ in range(_EPOCH_LENGTH))


@dataclass(slots=True)
class _Stream:
    """One channel's history: metadata (top, epoch, version) plus retained publications.

    Retained publications always have consecutive offsets ending at ``top``.
    """

    epoch: str
    meta_expires_at: float
    touched_at: float  # clock time of the last publish or read
    top: int = 0
    publications: deque[Publication] = field(default_factory=deque)
    data_expires_at: float = float("inf")
    version: int = 0
    version_epoch: str = ""

    def position(self) -> StreamPosition:
        return StreamPosition(self.top, self.epoch)

    def drop_data(self) -> None:
        self.publications.clear()
        self.data_expires_at = float("inf")

    def read(self, flt: HistoryFilter) -> list[Publication]:
        """The publications selected by ``flt`` (position and epoch already checked)."""
        pubs = self.publications
        if flt.limit == 0 or not pubs:
            return []
        first = pubs[0].offset
        if flt.reverse:
            end = len(pubs)  # exclusive index of the newest publication to return
            if flt.since is not None:
                end = max(0, min(end, flt.since.offset - first))
            start = len(pubs) - end  # the same position counted in the reversed sequence
            stop = None if flt.limit < 0 else start + flt.limit
            return list(islice(reversed(pubs), start, stop))
        # clamped: islice takes no index above sys.maxsize, an offset may be any uint64
        start = 0 if flt.since is None else min(len(pubs), max(0, flt.since.offset + 1 - first))
        stop = None if flt.limit < 0 else start + flt.limit
        return list(islice(pubs, start, stop))


class MemoryBroker:
    """A :class:`~centrifuge_asgi.engines.base.Broker` for a single node.

    ``clock`` returns monotonic seconds and drives every TTL; tests pass a fake one.
    Publication times come from the wall clock. ``empty_stream_ttl``: see
    :data:`EMPTY_STREAM_TTL`.
    """

    capabilities = Capabilities(single_process=True, sweep=True)

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        empty_stream_ttl: float = EMPTY_STREAM_TTL,
    ) -> None:
        self._clock = clock
        self._empty_stream_ttl = empty_stream_ttl
        self._handler: BrokerEventHandler | None = None
        self._control: ControlEventHandler | None = None
        self._node_id = ""
        self._streams: dict[str, _Stream] = {}
        self._results: dict[tuple[str, str], tuple[float, PublishResult]] = {}
        self._subscribed: set[str] = set()

    @property
    def subscribed_channels(self) -> frozenset[str]:
        """Channels this node asked to receive (informational for the memory broker)."""
        return frozenset(self._subscribed)

    def register_control_handler(self, handler: ControlEventHandler, node_id: str) -> None:
        """Deliver control messages to ``handler`` once started (``node_id``: this node)."""
        self._control = handler
        self._node_id = node_id

    async def start(self, handler: BrokerEventHandler) -> None:
        """Deliver events to ``handler`` from now on."""
        self._handler = handler

    async def close(self) -> None:
        """Stop delivering and drop all state; idempotent."""
        self._handler = None
        self._streams.clear()
        self._results.clear()
        self._subscribed.clear()

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def publish(self, channel: str, data: bytes, opts: PublishOptions) -> PublishResult:
        """Append to history (when enabled), deliver locally and return the position.

        A repeated ``idempotency_key`` or an outdated ``version`` returns a suppressed
        result without storing or delivering anything.
        """
        now = self._clock()
        result_key = (channel, opts.idempotency_key)
        if opts.idempotency_key:
            cached = self._results.get(result_key)
            if cached is not None and cached[0] > now:
                return PublishResult(cached[1].position, suppressed=True)

        pub = Publication(
            data=data,
            info=opts.client_info,
            tags=opts.tags,
            time=int(time.time() * 1000),
        )
        epoch = ""
        prev: Publication | None = None
        history = opts.history_size > 0 and opts.history_ttl > 0 and not opts.skip_history
        if history:
            stream = self._touch_stream(channel, opts.history_meta_ttl)
            if opts.version > 0:
                same_epoch = not opts.version_epoch or opts.version_epoch == stream.version_epoch
                if same_epoch and opts.version <= stream.version:
                    return PublishResult(stream.position(), suppressed=True)
                stream.version = opts.version
                stream.version_epoch = opts.version_epoch
            if opts.delta and stream.publications:
                last = stream.publications[-1]
                prev = last if last.offset == stream.top else None
            stream.top += 1
            pub = Publication(pub.data, stream.top, pub.info, pub.tags, pub.time)
            stream.publications.append(pub)
            while len(stream.publications) > opts.history_size:
                stream.publications.popleft()
            stream.data_expires_at = now + opts.history_ttl
            epoch = stream.epoch

        result = PublishResult(StreamPosition(pub.offset, epoch))
        if opts.idempotency_key:
            self._results[result_key] = (now + opts.idempotent_result_ttl, result)
        if self._handler is not None:
            if prev is None:
                self._handler.handle_publication(channel, pub, epoch)
            else:
                self._handler.handle_publication(channel, pub, epoch, prev)
        return result

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        if self._handler is not None:
            self._handler.handle_join(channel, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        if self._handler is not None:
            self._handler.handle_leave(channel, info)

    async def publish_control(self, data: bytes, node_id: str = "") -> bool:
        """Deliver a control message to this node, the only one there is (False for a
        message addressed to another node: there is none)."""
        if node_id and self._node_id and node_id != self._node_id:
            return False
        if self._handler is not None and self._control is not None:
            self._control.handle_control(data)
        return True

    async def history(
        self, channel: str, flt: HistoryFilter, meta_ttl: float = 0.0
    ) -> HistoryResult:
        """Read the stream as described by :class:`HistoryFilter`; refreshes the meta TTL."""
        flt.validate()
        stream = self._touch_stream(channel, meta_ttl)
        if flt.since is not None and flt.since.epoch and flt.since.epoch != stream.epoch:
            raise ClientError.of(ErrorCode.UNRECOVERABLE_POSITION)
        return HistoryResult(stream.read(flt), stream.position())

    async def remove_history(self, channel: str) -> None:
        """Drop the publications of ``channel``; its offset and epoch continue."""
        stream = self._live_stream(channel, self._clock())
        if stream is not None:
            stream.drop_data()

    def sweep(self) -> None:
        """Drop expired stream data, expired stream metadata and expired idempotency results.

        Synchronous and cheap enough to run once a second from the node's timer.
        """
        now = self._clock()
        for channel in list(self._streams):
            self._live_stream(channel, now)
        expired = [key for key, (expires_at, _) in self._results.items() if expires_at <= now]
        for key in expired:
            del self._results[key]

    def _live_stream(self, channel: str, now: float) -> _Stream | None:
        """The stream of ``channel`` after applying expiry, or None when it has none."""
        stream = self._streams.get(channel)
        if stream is None:
            return None
        if stream.meta_expires_at <= now or self._empty_and_idle(channel, stream, now):
            del self._streams[channel]
            return None
        if stream.data_expires_at <= now:
            stream.drop_data()
        return stream

    def _empty_and_idle(self, channel: str, stream: _Stream, now: float) -> bool:
        """An empty stream (nothing published in its epoch) that nothing keeps alive.

        Its epoch only matters to a reader that comes back soon or to a subscriber of
        this node, so it is not kept for the whole meta TTL (see the module docstring).
        """
        return (
            stream.top == 0
            and channel not in self._subscribed
            and stream.touched_at + self._empty_stream_ttl <= now
        )

    def _touch_stream(self, channel: str, meta_ttl: float) -> _Stream:
        """The live stream of ``channel`` (created when missing) with its meta TTL refreshed."""
        now = self._clock()
        expires_at = now + (meta_ttl if meta_ttl > 0 else DEFAULT_HISTORY_META_TTL)
        stream = self._live_stream(channel, now)
        if stream is None:
            stream = _Stream(epoch=_new_epoch(), meta_expires_at=expires_at, touched_at=now)
            self._streams[channel] = stream
        stream.meta_expires_at = expires_at
        stream.touched_at = now
        return stream


class MemoryPresenceManager:
    """A :class:`~centrifuge_asgi.engines.base.PresenceManager` kept in a dict.

    Entries need no TTL here: they die with the process, and connections remove their
    own entries on unsubscribe and disconnect.
    """

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, ClientInfo]] = {}

    async def add_presence(self, channel: str, client_id: str, info: ClientInfo) -> None:
        self._channels.setdefault(channel, {})[client_id] = info

    async def remove_presence(self, channel: str, client_id: str, user: str) -> None:
        clients = self._channels.get(channel)
        if clients is None:
            return
        clients.pop(client_id, None)
        if not clients:
            del self._channels[channel]

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        return dict(self._channels.get(channel, {}))

    async def presence_stats(self, channel: str) -> PresenceStats:
        clients = self._channels.get(channel, {})
        return PresenceStats(
            num_clients=len(clients),
            num_users=len({info.user for info in clients.values()}),
        )

    async def close(self) -> None:
        self._channels.clear()
