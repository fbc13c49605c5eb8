"""In-memory map broker: keyed state, per-key TTL and a change stream, for one node.

State entries are kept per channel in a dict; pages are served in key order with the last
key of a page as the cursor. A channel in a mode with a stream keeps its last
``stream_size`` changes (for ``stream_ttl`` after the last one) with consecutive offsets;
the epoch is made when the channel is first seen and stays until its metadata expires or
it is cleared. Expired keys are removed by :meth:`MemoryMapBroker.sweep` (called about
once a second by the node), each removal fanned out like a client's remove.
"""

from __future__ import annotations

import bisect
import heapq
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
    HistoryFilter,
    HistoryResult,
    Publication,
    StreamPosition,
)
from .map_base import (
    KEY_MODE_IF_EXISTS,
    KEY_MODE_IF_NEW,
    SUPPRESS_IDEMPOTENCY,
    SUPPRESS_KEY_EXISTS,
    SUPPRESS_KEY_NOT_FOUND,
    SUPPRESS_POSITION_MISMATCH,
    SUPPRESS_VERSION,
    MapChannelOptions,
    MapPublishOptions,
    MapRemoveOptions,
    MapStateResult,
    MapUpdateResult,
)

__all__ = ["MemoryMapBroker"]

_IDLE_CHANNEL_TTL = 60.0  # an empty channel without a meta TTL is forgotten after this


def _new_epoch() -> str:
    return "".join(secrets.choice(string.ascii_letters) for _ in range(4))


@dataclass(slots=True)
class _Entry:
    pub: Publication
    expires_at: float  # inf: never
    version: int = 0
    version_epoch: str = ""


@dataclass(slots=True)
class _Channel:
    epoch: str
    touched_at: float
    opts: MapChannelOptions = field(default_factory=MapChannelOptions)
    top: int = 0
    state: dict[str, _Entry] = field(default_factory=dict)
    sorted_keys: list[str] | None = None  # cache, rebuilt after a key is added/removed
    stream: deque[Publication] = field(default_factory=deque)
    stream_expires_at: float = float("inf")

    def position(self) -> StreamPosition:
        return StreamPosition(self.top, self.epoch)

    def keys(self) -> list[str]:
        if self.sorted_keys is None:
            self.sorted_keys = sorted(self.state)
        return self.sorted_keys


def _suppressed(ch: _Channel, reason: str) -> MapUpdateResult:
    return MapUpdateResult(ch.position(), suppressed=True, suppress_reason=reason)


class MemoryMapBroker:
    """A :class:`~.map_base.MapBroker` for a single node; ``clock`` drives every TTL."""

    capabilities = Capabilities(single_process=True, sweep=True)

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._handler: BrokerEventHandler | None = None
        self._channels: dict[str, _Channel] = {}
        self._results: dict[tuple[str, str], tuple[float, MapUpdateResult]] = {}
        # (expire-at, channel, key) of every TTL set; stale items (the key was renewed,
        # removed or cleared since) are skipped when they come up
        self._expiry: list[tuple[float, str, str]] = []

    async def start(self, handler: BrokerEventHandler) -> None:
        self._handler = handler

    async def close(self) -> None:
        self._handler = None

    async def subscribe(self, channel: str) -> None:
        """Nothing to do: every change of this process reaches the handler."""

    async def unsubscribe(self, channel: str) -> None:
        """Nothing to do (see :meth:`subscribe`)."""

    # ---------------------------------------------------------------- writes

    def _channel(self, channel: str, opts: MapChannelOptions | None = None) -> _Channel:
        now = self._clock()
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channels[channel] = _Channel(_new_epoch(), now)
        ch.touched_at = now
        if opts is not None:
            ch.opts = opts
        return ch

    def _cached(self, channel: str, idempotency_key: str) -> MapUpdateResult | None:
        if not idempotency_key:
            return None
        hit = self._results.get((channel, idempotency_key))
        if hit is None or hit[0] <= self._clock():
            return None
        return MapUpdateResult(
            hit[1].position, suppressed=True, suppress_reason=SUPPRESS_IDEMPOTENCY
        )

    def _remember(
        self, channel: str, idempotency_key: str, ttl: float, result: MapUpdateResult
    ) -> MapUpdateResult:
        """Keep ``result`` for a repeat of ``idempotency_key`` (``ttl`` 0: 300 s)."""
        if idempotency_key:
            self._results[(channel, idempotency_key)] = (self._clock() + (ttl or 300.0), result)
        return result

    def _append(self, ch: _Channel, pub: Publication) -> Publication:
        """Give ``pub`` its offset (when the mode keeps a stream) and retain it."""
        opts = ch.opts
        if not opts.has_stream:
            return pub
        ch.top += 1
        pub = Publication(pub.data, ch.top, pub.info, pub.tags, pub.time, pub.key, pub.removed)
        ch.stream.append(pub)
        while len(ch.stream) > opts.effective_stream_size:
            ch.stream.popleft()
        ch.stream_expires_at = self._clock() + opts.effective_stream_ttl
        return pub

    def _emit(
        self, channel: str, ch: _Channel, pub: Publication, prev: Publication | None = None
    ) -> None:
        if self._handler is None:
            return
        if prev is None:
            self._handler.handle_publication(channel, pub, ch.epoch)
        else:
            self._handler.handle_publication(channel, pub, ch.epoch, prev)

    def _mismatch(self, ch: _Channel, expected: StreamPosition | None) -> bool:
        return expected is not None and (expected.epoch != ch.epoch or expected.offset != ch.top)

    async def publish(
        self, channel: str, key: str, opts: MapPublishOptions, chopts: MapChannelOptions
    ) -> MapUpdateResult:
        cached = self._cached(channel, opts.idempotency_key)
        if cached is not None:
            return cached
        ch = self._channel(channel, chopts)
        entry = ch.state.get(key)
        reason = ""
        if self._mismatch(ch, opts.expected_position):
            reason = SUPPRESS_POSITION_MISMATCH
        elif opts.key_mode == KEY_MODE_IF_NEW and entry is not None:
            reason = SUPPRESS_KEY_EXISTS
        elif opts.key_mode == KEY_MODE_IF_EXISTS and entry is None:
            reason = SUPPRESS_KEY_NOT_FOUND
        elif (
            opts.version
            and entry is not None
            and entry.version_epoch == opts.version_epoch
            and opts.version <= entry.version
        ):
            reason = SUPPRESS_VERSION
        if reason:
            if opts.refresh_ttl_on_suppress and entry is not None and chopts.key_ttl > 0:
                entry.expires_at = self._clock() + chopts.key_ttl
                heapq.heappush(self._expiry, (entry.expires_at, channel, key))
            return _suppressed(ch, reason)
        pub = Publication(
            opts.data,
            info=opts.client_info,
            tags=opts.tags,
            time=int(time.time() * 1000),
            key=key,
        )
        pub = self._append(ch, pub)
        expires_at = self._clock() + chopts.key_ttl if chopts.key_ttl > 0 else float("inf")
        if entry is None:
            ch.sorted_keys = None
        ch.state[key] = _Entry(pub, expires_at, opts.version, opts.version_epoch)
        if chopts.key_ttl > 0:
            heapq.heappush(self._expiry, (expires_at, channel, key))
        result = MapUpdateResult(ch.position())
        self._remember(channel, opts.idempotency_key, opts.idempotent_result_ttl, result)
        self._emit(channel, ch, pub, entry.pub if opts.delta and entry is not None else None)
        return result

    async def remove(
        self, channel: str, key: str, opts: MapRemoveOptions, chopts: MapChannelOptions
    ) -> MapUpdateResult:
        cached = self._cached(channel, opts.idempotency_key)
        if cached is not None:
            return cached
        ch = self._channel(channel, chopts)
        if self._mismatch(ch, opts.expected_position):
            return _suppressed(ch, SUPPRESS_POSITION_MISMATCH)
        entry = ch.state.get(key)
        if entry is None:
            return _suppressed(ch, SUPPRESS_KEY_NOT_FOUND)
        tags = opts.tags if opts.tags is not None else entry.pub.tags
        self._remove_entry(channel, ch, key, tags)
        result = MapUpdateResult(ch.position())
        return self._remember(channel, opts.idempotency_key, opts.idempotent_result_ttl, result)

    def _remove_entry(
        self, channel: str, ch: _Channel, key: str, tags: dict[str, str] | None
    ) -> None:
        del ch.state[key]
        ch.sorted_keys = None
        pub = Publication(b"", tags=tags, time=int(time.time() * 1000), key=key, removed=True)
        self._emit(channel, ch, self._append(ch, pub))

    async def clear(self, channel: str) -> None:
        """Drop state, stream and position: the next reader sees a new epoch."""
        self._channels.pop(channel, None)
        for item in [k for k in self._results if k[0] == channel]:
            del self._results[item]

    # ----------------------------------------------------------------- reads

    async def read_state(
        self,
        channel: str,
        *,
        cursor: str = "",
        limit: int = -1,
        key: str = "",
        revision: StreamPosition | None = None,
    ) -> MapStateResult:
        ch = self._channel(channel)
        position = ch.position()
        if revision is not None and revision.epoch != ch.epoch:
            raise ClientError.of(ErrorCode.UNRECOVERABLE_POSITION)
        if key:
            entry = ch.state.get(key)
            return MapStateResult([entry.pub] if entry is not None else [], position)
        if limit == 0:
            return MapStateResult([], position)
        keys = ch.keys()
        start = bisect.bisect_right(keys, cursor) if cursor else 0
        end = len(keys) if limit < 0 else min(len(keys), start + limit)
        page = [ch.state[k].pub for k in keys[start:end]]
        next_cursor = keys[end - 1] if end < len(keys) and end > start else ""
        return MapStateResult(page, position, next_cursor)

    async def read_stream(self, channel: str, flt: HistoryFilter) -> HistoryResult:
        flt.validate()
        ch = self._channel(channel)
        if ch.stream and ch.stream_expires_at <= self._clock():
            ch.stream.clear()
        position = ch.position()
        since = flt.since
        if since is not None and since.epoch and since.epoch != ch.epoch:
            raise ClientError.of(ErrorCode.UNRECOVERABLE_POSITION)
        pubs = ch.stream
        if since is not None and not flt.reverse and since.offset < ch.top:
            first = pubs[0].offset if pubs else ch.top + 1
            if since.offset + 1 < first:  # part of what was missed is gone
                raise ClientError.of(ErrorCode.UNRECOVERABLE_POSITION)
        if flt.limit == 0 or not pubs:
            return HistoryResult([], position)
        first = pubs[0].offset
        if flt.reverse:
            end = len(pubs) if since is None else max(0, min(len(pubs), since.offset - first))
            start = len(pubs) - end
            stop = None if flt.limit < 0 else start + flt.limit
            return HistoryResult(list(islice(reversed(pubs), start, stop)), position)
        # clamped: islice takes no index above sys.maxsize, an offset may be any uint64
        start = 0 if since is None else min(len(pubs), max(0, since.offset + 1 - first))
        stop = None if flt.limit < 0 else start + flt.limit
        return HistoryResult(list(islice(pubs, start, stop)), position)

    async def stats(self, channel: str) -> int:
        ch = self._channels.get(channel)
        return 0 if ch is None else len(ch.state)

    # ---------------------------------------------------------------- expiry

    def sweep(self) -> None:
        """Remove expired keys (fanning out their removals), expired streams and channels."""
        now = self._clock()
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, name, key = heapq.heappop(heap)
            channel = self._channels.get(name)
            entry = channel.state.get(key) if channel is not None else None
            if channel is not None and entry is not None and entry.expires_at <= now:
                self._remove_entry(name, channel, key, entry.pub.tags)
        for name, ch in list(self._channels.items()):
            if ch.stream and ch.stream_expires_at <= now:
                ch.stream.clear()
            meta_ttl = ch.opts.effective_meta_ttl
            idle = meta_ttl if meta_ttl > 0 else (_IDLE_CHANNEL_TTL if not ch.top else 0.0)
            if not ch.state and idle and ch.touched_at + idle <= now:
                del self._channels[name]
        for item in [k for k, (exp, _) in self._results.items() if exp <= now]:
            del self._results[item]
