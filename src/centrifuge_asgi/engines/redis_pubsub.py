"""One Redis PUB/SUB connection that keeps a set of channels subscribed, whatever happens.

:class:`Subscriber` owns a dedicated connection and a *desired* set of channels. Callers
change the set; a writer task turns the changes into batched ``SUBSCRIBE`` /
``UNSUBSCRIBE`` commands (512 channels each), so a subscribe followed by an unsubscribe
before the writer runs costs nothing and churn never leaks a Redis subscription.

Around that, :meth:`Subscriber.run` loops forever: dial, subscribe the fixed channels and
every desired channel, read messages; when the connection fails it waits ``redial_delay``
(250 ms) and starts again. A liveness probe restarts a connection that looks open but
delivers nothing: when nothing has arrived for ``probe_interval`` seconds, a probe is sent
(a PUBLISH through the command connection to a channel this connection serves, or a PING
on this connection), and if nothing at all arrives for one more interval the connection is
torn down and redialled.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import anyio
import anyio.abc

from ..errors import EngineUnavailable
from .redis_resp import RespConnection, RespError

__all__ = ["Subscriber"]

log = logging.getLogger("centrifuge_asgi.engines.redis")

BATCH_SIZE = 512

MessageCallback = Callable[[bytes, bytes], None]
"""``(redis_channel, data)``; called inline by the reader, must not block."""


class _Stale(Exception):
    """The probe got no answer: the connection is open but dead."""


def _reason(exc: BaseException) -> str:
    """The innermost cause of a connection failure, for the log."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, _Stale):
        return "an unanswered liveness probe"
    return repr(exc)


@dataclass(slots=True)
class _Pending:
    """A command whose confirmations are still expected, in send order."""

    kind: str  # "sub", "unsub" or "ping"
    channels: set[bytes] = field(default_factory=set)


@dataclass(slots=True)
class _ConnState:
    """What one connection has been asked and has confirmed (reset on every dial)."""

    conn: RespConnection
    sent: dict[bytes, bool] = field(default_factory=dict)  # state after the last command
    active: set[bytes] = field(default_factory=set)  # confirmed subscribed
    inflight: dict[bytes, int] = field(default_factory=dict)
    pending: deque[_Pending] = field(default_factory=deque)


class Subscriber:
    """Keeps ``fixed`` plus the desired channels subscribed on one reconnecting connection.

    ``dial`` opens a fresh connection (it may look the address up each time, e.g. from
    Sentinel); ``sharded`` uses ``SSUBSCRIBE`` (Redis Cluster, one slot per command);
    ``probe`` publishes something this connection will receive, or None to PING instead.
    ``on_connect`` is called after each successful (re)subscription of the fixed channels.
    """

    def __init__(
        self,
        name: str,
        dial: Callable[[], Awaitable[RespConnection]],
        on_message: MessageCallback,
        *,
        fixed: Iterable[bytes] = (),
        sharded: bool = False,
        slot_of: Callable[[bytes], int] | None = None,
        probe: Callable[[], Awaitable[None]] | None = None,
        probe_interval: float = 30.0,
        io_timeout: float = 4.0,
        redial_delay: float = 0.25,
        on_lost: Callable[[bytes], None] | None = None,
    ) -> None:
        self.name = name
        self._dial = dial
        self._on_message = on_message
        self._fixed = frozenset(fixed)
        self._sub_cmd, self._unsub_cmd = (
            ("SSUBSCRIBE", "SUNSUBSCRIBE") if sharded else ("SUBSCRIBE", "UNSUBSCRIBE")
        )
        self._slot_of = slot_of
        self._probe = probe
        self._probe_interval = probe_interval
        self._io_timeout = io_timeout
        self._redial_delay = redial_delay
        self._on_lost = on_lost
        self._desired: set[bytes] = set()
        self._dirty: set[bytes] = set()
        self._wake = anyio.Event()
        self._waiters: dict[bytes, anyio.Event] = {}
        self._state: _ConnState | None = None
        self._last_rx = 0.0
        self._ready = anyio.Event()
        self.connects = 0
        self.malformed = 0
        self.errors = 0  # failed dials and lost connections (broker_redis_pub_sub_errors)

    # ----------------------------------------------------------------- public API

    @property
    def connected(self) -> bool:
        return self._state is not None

    @property
    def desired(self) -> frozenset[bytes]:
        return frozenset(self._desired)

    @property
    def active(self) -> frozenset[bytes]:
        """Channels Redis has confirmed on the current connection (empty when down)."""
        return frozenset(self._state.active) if self._state is not None else frozenset()

    async def wait_ready(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until a connection has its fixed channels subscribed; False on timeout."""
        with anyio.move_on_after(timeout):
            await self._ready.wait()
        return self._ready.is_set()

    async def subscribe(self, channel: bytes) -> None:
        """Add ``channel`` and wait (up to io_timeout) until Redis confirms it.

        Raises EngineUnavailable when the connection is down or does not confirm in time;
        the channel stays desired so a later reconnect subscribes it, unless the caller
        unsubscribes (as the node does when a subscribe fails).
        """
        self._desired.add(channel)
        if self.connects == 0:  # a new connection (a cluster master's) is still dialling
            await self.wait_ready(self._io_timeout)
        state = self._state
        if state is None:
            raise EngineUnavailable(f"redis pub/sub connection {self.name} is unavailable")
        if channel in state.active and not state.inflight.get(channel):
            return
        self._mark(channel)
        with anyio.move_on_after(self._io_timeout):
            while channel in self._desired:
                state = self._state
                if state is None:
                    break
                if channel in state.active and not state.inflight.get(channel):
                    return
                await self._waiters.setdefault(channel, anyio.Event()).wait()
        if channel not in self._desired:
            return  # unsubscribed meanwhile: nothing to wait for
        raise EngineUnavailable(f"redis did not confirm the subscription to {channel!r}")

    def unsubscribe(self, channel: bytes) -> None:
        """Drop ``channel``; the UNSUBSCRIBE goes out with the next batch."""
        if channel in self._desired:
            self._desired.discard(channel)
            self._mark(channel)

    def forget(self, channels: Iterable[bytes]) -> None:
        """Drop channels without telling Redis (they moved to another connection)."""
        for channel in channels:
            self._desired.discard(channel)
            self._mark(channel)

    # ----------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Dial, serve, redial after ``redial_delay``; runs until cancelled."""
        while True:
            try:
                conn = await self._dial()
            except Exception as exc:
                self.errors += 1
                log.warning("redis pub/sub %s: dial failed: %s", self.name, exc)
                await anyio.sleep(self._redial_delay)
                continue
            self.connects += 1
            try:
                await self._serve(conn)
            except Exception as exc:  # any failure of this connection means: redial
                self.errors += 1
                log.warning("redis pub/sub %s: reconnecting after %s", self.name, _reason(exc))
            finally:
                self._drop()
                await conn.aclose()
            await anyio.sleep(self._redial_delay)

    async def _serve(self, conn: RespConnection) -> None:
        state = _ConnState(conn)
        self._last_rx = time.monotonic()
        async with anyio.create_task_group() as tg:
            self._state = state
            self._dirty = set(self._desired)
            await self._send_subscribe(state, sorted(self._fixed))
            if not self._fixed:
                self._ready.set()
            self._wake.set()
            tg.start_soon(self._writer, state)
            if self._probe_interval > 0:
                tg.start_soon(self._prober, state)
            await self._reader(state)

    def _drop(self) -> None:
        self._state = None
        self._ready = anyio.Event()
        self._wake.set()  # let nothing wait on a dead connection
        for event in self._waiters.values():
            event.set()
        self._waiters.clear()

    def _mark(self, channel: bytes) -> None:
        self._dirty.add(channel)
        self._wake.set()

    def _notify(self, channel: bytes) -> None:
        event = self._waiters.pop(channel, None)
        if event is not None:
            event.set()

    # ----------------------------------------------------------------- writer

    async def _writer(self, state: _ConnState) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            if self._state is not state:
                return
            batch, self._dirty = self._dirty, set()
            subs = sorted(c for c in batch if c in self._desired and not state.sent.get(c))
            unsubs = sorted(
                c
                for c in batch
                if c not in self._desired and c not in self._fixed and state.sent.get(c)
            )
            await self._send_unsubscribe(state, unsubs)
            await self._send_subscribe(state, subs)

    def _groups(self, channels: list[bytes]) -> list[list[bytes]]:
        """Batches of at most 512; with SSUBSCRIBE one slot per command."""
        if self._slot_of is None:
            return [channels[i : i + BATCH_SIZE] for i in range(0, len(channels), BATCH_SIZE)]
        by_slot: dict[int, list[bytes]] = {}
        for channel in channels:
            by_slot.setdefault(self._slot_of(channel), []).append(channel)
        return [g[i : i + BATCH_SIZE] for g in by_slot.values() for i in range(0, len(g), 512)]

    async def _send_subscribe(self, state: _ConnState, channels: list[bytes]) -> None:
        await self._send(state, "sub", self._sub_cmd, channels)

    async def _send_unsubscribe(self, state: _ConnState, channels: list[bytes]) -> None:
        for channel in channels:
            state.active.discard(channel)
        await self._send(state, "unsub", self._unsub_cmd, channels)

    async def _send(self, state: _ConnState, kind: str, cmd: str, channels: list[bytes]) -> None:
        if not channels:
            return
        commands: list[tuple[bytes | str | int, ...]] = []
        for group in self._groups(channels):
            state.pending.append(_Pending(kind, set(group)))
            for channel in group:
                state.sent[channel] = kind == "sub"
                state.inflight[channel] = state.inflight.get(channel, 0) + 1
            commands.append((cmd, *group))
        with anyio.fail_after(self._io_timeout):
            await state.conn.send_many(commands)

    # ----------------------------------------------------------------- reader

    async def _reader(self, state: _ConnState) -> None:
        while True:
            reply = await state.conn.read()
            self._last_rx = time.monotonic()
            if isinstance(reply, RespError):
                self._failed_command(state, reply)
                continue
            if not isinstance(reply, list) or not reply or not isinstance(reply[0], bytes):
                self.malformed += 1
                continue
            kind = reply[0].lower()
            if kind in (b"message", b"smessage") and len(reply) == 3:
                channel, data = reply[1], reply[2]
                if isinstance(channel, bytes) and isinstance(data, bytes):
                    self._deliver(channel, data)
            elif kind in (b"subscribe", b"ssubscribe") and isinstance(reply[1], bytes):
                self._confirmed(state, "sub", reply[1])
            elif kind in (b"unsubscribe", b"sunsubscribe") and isinstance(reply[1], bytes):
                self._confirmed(state, "unsub", reply[1])
            elif kind == b"pong":
                self._confirmed(state, "ping", b"")

    def _deliver(self, channel: bytes, data: bytes) -> None:
        try:
            self._on_message(channel, data)
        except Exception:
            self.malformed += 1
            log.exception("redis pub/sub %s: handling a message of %r failed", self.name, channel)

    def _confirmed(self, state: _ConnState, kind: str, channel: bytes) -> None:
        for item in state.pending:
            if item.kind == kind and (kind == "ping" or channel in item.channels):
                break
        else:
            if kind == "unsub":  # Redis dropped it (a cluster slot moved away)
                self._lost(state, channel)
            return
        item.channels.discard(channel)
        if not item.channels:
            state.pending.remove(item)
        if kind != "ping":
            self._settle(state, channel)

    def _settle(self, state: _ConnState, channel: bytes) -> None:
        left = state.inflight.get(channel, 1) - 1
        if left > 0:
            state.inflight[channel] = left
            return
        state.inflight.pop(channel, None)
        if state.sent.get(channel):
            state.active.add(channel)
        else:
            state.active.discard(channel)
            state.sent.pop(channel, None)
        if channel in self._fixed and self._fixed <= state.active:
            self._ready.set()
        self._notify(channel)

    def _failed_command(self, state: _ConnState, error: RespError) -> None:
        """An error reply answers the oldest pending command as a whole."""
        if not state.pending:
            log.warning("redis pub/sub %s: unexpected error reply: %s", self.name, error)
            return
        item = state.pending.popleft()
        log.warning("redis pub/sub %s: %s failed: %s", self.name, item.kind, error)
        for channel in item.channels:
            if item.kind == "sub":
                state.sent[channel] = False
            self._settle(state, channel)
            if item.kind == "sub" and channel in self._desired and "MOVED" in str(error):
                self._lost(state, channel)

    def _lost(self, state: _ConnState, channel: bytes) -> None:
        state.active.discard(channel)
        state.sent.pop(channel, None)
        if channel not in self._desired:
            return
        if self._on_lost is not None:
            self._on_lost(channel)
        else:
            self._mark(channel)

    # ----------------------------------------------------------------- liveness

    async def _prober(self, state: _ConnState) -> None:
        interval = self._probe_interval
        while True:
            await anyio.sleep(interval)
            if time.monotonic() - self._last_rx < interval:
                continue
            sent_at = time.monotonic()
            try:
                if self._probe is not None:
                    with anyio.fail_after(self._io_timeout):
                        await self._probe()
                else:
                    state.pending.append(_Pending("ping"))
                    with anyio.fail_after(self._io_timeout):
                        await state.conn.send("PING")
            except Exception as exc:
                raise _Stale from exc
            await anyio.sleep(interval)
            if self._last_rx < sent_at:
                raise _Stale
