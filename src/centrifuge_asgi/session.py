"""One client connection: decoded commands in, replies and pushes out.

A :class:`Session` knows nothing about sockets. Its transport feeds it frames
(:meth:`Session.handle_frame`), drains its :class:`~centrifuge_asgi.outbox.Outbox`
into the wire, and calls :meth:`Session.finish` once the connection is gone. Channel
commands (subscribe, publish, presence, history) live in :mod:`.subscriptions`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup
from msgspec import UNSET, Raw

from . import auth
from .codes import DisconnectCode, ErrorCode, UnsubscribeCode, disconnect_reason
from .engines.base import ClientInfo, PublishResult, StreamPosition
from .errors import ClientError, Disconnect, EngineError
from .handlers import (
    ClientRef,
    ConnectEvent,
    DisconnectEvent,
    MessageEvent,
    RefreshEvent,
    RPCEvent,
)
from .op_limits import COMMANDS as _RATE_LIMITED
from .op_limits import Buckets
from .outbox import Outbox
from .payload import optional_payload
from .pending import Pending
from .protocol.codec import Codec, EncodedOnce, InappropriateProtocol, ProtocolError
from .protocol.json_codec import JSON
from .protocol.messages import (
    Command,
    ConnectRequest,
    ConnectResult,
    DisconnectPush,
    EmptyResult,
    ErrorWire,
    MessagePush,
    Push,
    RefreshPush,
    RefreshRequest,
    RefreshResult,
    Reply,
    RPCRequest,
    RPCResult,
    SendRequest,
    SubscribePush,
    SubscribeRequest,
    SubscribeResult,
)
from .subscriptions import SUB_PUSH_JOIN_LEAVE, ChannelCommands, Grant
from .timers import Timer
from .wire import opt_raw

if TYPE_CHECKING:
    from .host import SessionHost
    from .observer import Tracing

log = logging.getLogger("centrifuge_asgi.session")

DECODE_INLINE_MAX = 64 * 1024  # bytes; a larger frame is decoded in a worker thread


def new_id() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` writes it, without
    making the UUID object (half the time per connection)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class State(Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"  # connect answered with an error: later commands are dropped
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class TransportInfo:
    """What a transport tells its sessions about itself.

    The same for every connection of one transport and codec, so transports share one
    instance (:func:`transport_info`); the request's headers are the session's own.
    """

    name: str = "websocket"
    emulation: bool = False
    unidirectional: bool = False
    codec: Codec = JSON


_SHARED_INFO: dict[tuple[str, bool, bool, object], TransportInfo] = {}


def transport_info(
    name: str, emulation: bool = False, unidirectional: bool = False, codec: Codec = JSON
) -> TransportInfo:
    """The shared :class:`TransportInfo` of one transport and codec."""
    key = (name, emulation, unidirectional, codec)
    info = _SHARED_INFO.get(key)
    if info is None:
        info = _SHARED_INFO[key] = TransportInfo(name, emulation, unidirectional, codec)
    return info


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
RawHeaders = Iterable[tuple[bytes, bytes]]  # an ASGI scope's ``headers``


class RequestHeaders(Mapping[str, str]):
    """The request's headers, read from the ASGI scope when asked for.

    Names are lower-cased and the last value wins. A connection keeps its scope anyway,
    so reading from it on demand saves a copy of every header per connection.
    """

    __slots__ = ("_all", "_raw")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._all: dict[str, str] | None = None

    def get(self, key: str, default: Any = None) -> Any:
        if self._all is not None:
            return self._all.get(key.lower(), default)
        name = key.lower().encode("latin-1")
        found: bytes | None = None
        for k, v in self._raw:
            if k.lower() == name:
                found = v
        return default if found is None else found.decode("latin-1")

    def __getitem__(self, key: str) -> str:
        value: str | None = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def _decoded(self) -> dict[str, str]:
        if self._all is None:
            self._all = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self._raw}
        return self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return f"RequestHeaders({self._decoded()!r})"


@dataclass(slots=True)
class Credentials:
    user: str
    info: bytes | None = None
    data: bytes | None = None
    expire_at: int | None = None
    client_side_refresh: bool = False
    subs: list[auth.ServerSubscription] = field(default_factory=list)
    meta: Any = None


# Spec §8: connect reply errors of unidirectional clients become these disconnects.
_UNI_CONNECT_DISCONNECT: dict[int, DisconnectCode] = {
    ErrorCode.TOKEN_EXPIRED: DisconnectCode.EXPIRED,
    ErrorCode.EXPIRED: DisconnectCode.EXPIRED,
    ErrorCode.TOO_MANY_REQUESTS: DisconnectCode.TOO_MANY_REQUESTS,
    ErrorCode.PERMISSION_DENIED: DisconnectCode.PERMISSION_DENIED,
}

_METHODS = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
    "ping",
)

# With ``client.concurrency`` > 1 these commands run in tasks of their own, as Centrifugo
# runs them; connect, unsubscribe, send and pongs keep the order of the frames.
_CONCURRENT = frozenset(_METHODS) - {"connect", "unsubscribe", "send", "ping"}
# Commands answered with their result in the reply field of their name, by whom (the
# session's method; the channel ones are those of ChannelCommands).
_RUNS: dict[str, str] = {
    "connect": "_connect",
    "subscribe": "subscribe",
    "presence": "presence",
    "presence_stats": "presence_stats",
    "history": "history",
    "rpc": "_rpc",
    "refresh": "_refresh",
    "sub_refresh": "sub_refresh",
}
_CLIENT_REFRESH = 1  # Session._refresher
_HANDLER_REFRESH = 2
SUBSCRIBING_WAIT = 5.0  # how long an unsubscribe waits for a subscribe of its channel


class _NoTasks:
    """The shared no-op ``async with`` of one-at-a-time commands. Its methods are static,
    so ``async with`` finds them without binding: a connection's reader then holds no
    bound ``__aexit__`` (as it would with ``nullcontext()``) for its whole life."""

    __slots__ = ()

    @staticmethod
    async def __aenter__() -> None:
        return None

    @staticmethod
    async def __aexit__(*exc_info: object) -> None:
        return None


_NO_TASKS: AbstractAsyncContextManager[None] = _NoTasks()
# Publications of one connection in flight to a pipelining broker (Redis) at once: their
# replies go out in command order, and any other command waits until they are answered.
PIPELINED_PUBLISHES = 16


class _Occasional:
    """The state of features few connections use: concurrent commands, pipelined
    publications, operation rate limits, connection meta, the session id of an emulated
    or unidirectional stream. Made on first use, so that a connection using none of them
    holds one empty slot instead of seven."""

    __slots__ = ("deferred", "meta", "rate_held", "session_id", "slots", "subscribing", "tasks")

    def __init__(self) -> None:
        self.meta: Any = None  # Session.meta
        self.session_id = ""  # Session.session_id
        self.tasks: TaskGroup | None = None  # set inside command_tasks() when concurrent
        self.slots: anyio.Semaphore | None = None
        self.subscribing: dict[str, anyio.Event] | None = None
        self.deferred: deque[tuple[int, str, Pending[PublishResult]]] | None = None
        self.rate_held: dict[str, Buckets] | None = None  # client.rate_limit's buckets


class Session(ChannelCommands):
    """The state machine of one connection (see the module docstring); its channel
    commands are those of :class:`~.subscriptions.ChannelCommands`, which it inherits."""

    __slots__ = (
        "_awaiting_pong",
        "_headers",
        "_occasional",
        "_refresher",
        "_timers",
        "client_id",
        "close_code",
        "close_reason",
        "codec",
        "expire_at",
        "info",
        "node",
        "outbox",
        "state",
        "transport",
        "user",
    )

    def __init__(
        self,
        node: SessionHost,
        transport: TransportInfo,
        headers: Mapping[str, str] | RawHeaders | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.node = node
        self.transport = transport
        # the request's, as given: a transport may hand its ASGI scope's list, which the
        # scope keeps anyway; the mapping is made when someone reads ``headers``
        self._headers = headers
        self.codec = transport.codec
        self.client_id = new_id()
        self.user = ""
        self.info: bytes | None = None
        self.state = State.CONNECTING
        self.outbox = Outbox(node.config.client.queue_max_size) if outbox is None else outbox
        self.sub_slot = None  # the subscriptions (see ChannelCommands)
        self._maps = None  # made on a connection's first map command
        self.expire_at: int | None = None
        self.close_code = 0
        self.close_reason = ""
        # who refreshes the connection before expire_at: nobody (0), the client
        # (_CLIENT_REFRESH) or a refresh handler (_HANDLER_REFRESH); one slot, not two
        self._refresher = 0
        # Made when first needed, and dropped once empty: most connections hold no timer
        # of their own, and a connection runs commands concurrently only when configured.
        self._timers: dict[str, Timer] | None = None
        self._awaiting_pong = 0.0  # perf_counter() of the ping awaiting its pong
        self._occasional: _Occasional | None = None
        if transport.emulation or transport.unidirectional:  # a stream found by its id
            self._more().session_id = new_id()
        node.stale_checks.add(self, node.config.client.stale_close_delay)

    # ------------------------------------------------------------------- properties

    @property
    def session_id(self) -> str:
        """The id of an emulated or unidirectional stream ("" for other transports)."""
        occasional = self._occasional
        return "" if occasional is None else occasional.session_id

    @property
    def meta(self) -> Any:
        """The connection's meta (from its token, connect handler or proxy), or None."""
        occasional = self._occasional
        return None if occasional is None else occasional.meta

    @meta.setter
    def meta(self, meta: Any) -> None:
        if meta is not None or self._occasional is not None:
            self._more().meta = meta

    @property
    def client_side_refresh(self) -> bool:
        """The client refreshes its connection (its token allowed it)."""
        return self._refresher == _CLIENT_REFRESH

    @property
    def closing(self) -> bool:
        return self.close_code != 0

    @property
    def connected(self) -> bool:
        return self.state is State.CONNECTED and not self.closing

    @property
    def headers(self) -> Mapping[str, str]:
        """The request's headers (names lower-cased; made on each read from a raw list)."""
        headers = self._headers
        if headers is None:
            return _NO_HEADERS
        if isinstance(headers, Mapping):
            return headers
        return RequestHeaders(headers)

    def client_info(self, chan_info: bytes | None = None) -> ClientInfo:
        return ClientInfo(self.user, self.client_id, self.info, chan_info)

    def client_ref(self) -> ClientRef:
        return ClientRef(self.client_id, self.user, self.transport.name, self.info)

    # ----------------------------------------------------------------------- output

    def send(self, data: bytes) -> None:
        """Queue one encoded message; an overflowing queue disconnects as slow.

        Empty ``data`` is skipped: a message of a fan-out that this connection's protocol
        cannot carry (see :class:`~.protocol.codec.EncodedOnce`).
        """
        if self.closing or not data:
            return
        outbox = self.outbox
        if not outbox.put(data):
            self.disconnect(DisconnectCode.SLOW)
        elif outbox.size > outbox.max_bytes >> 1:
            self.node.outbox_pressure = True

    def send_reply(self, reply: Reply) -> int:
        """Queue a message for this connection only: 3506 when its protocol cannot carry
        it. Returns its size (0 when not sent)."""
        try:
            data = self.codec.encode_reply(reply)
        except InappropriateProtocol:
            self.disconnect(DisconnectCode.INAPPROPRIATE_PROTOCOL)
            return 0
        if self.closing:
            return 0
        self.send(data)
        return len(data)

    def _count_sent(self, frame_type: str, size: int) -> None:
        """transport_messages_sent(_size) of one message to this connection alone."""
        if not self.node.counting:
            return
        labels = (self.transport.name, frame_type, "")
        metrics = self.node.metrics
        metrics.count("transport_messages_sent", labels)
        metrics.count("transport_messages_sent_size", labels, size)

    def send_push(self, push: Push) -> None:
        size = self.send_reply(Reply(push=push))
        if size and self.node.counting:
            kind = next((k for k in _PUSH_KINDS if getattr(push, k) is not None), "")
            self._count_sent(_PUSH_FRAME.get(kind, f"push_{kind}"), size)

    def disconnect(self, code: int, reason: str = "") -> None:
        """Close the connection with ``code``; queued messages flush unless 3000/3008."""
        if self.closing:
            return
        code, reason = _valid_close(code, reason)
        streamed = self.transport.emulation or self.transport.unidirectional
        if streamed and code != DisconnectCode.CONNECTION_CLOSED:
            self.outbox.put(
                self.codec.encode_reply(
                    Reply(push=Push(disconnect=DisconnectPush(code=code, reason=reason)))
                )
            )
        self.close_code = int(code)
        self.close_reason = reason
        discard = code in (DisconnectCode.CONNECTION_CLOSED, DisconnectCode.SLOW)
        self.outbox.close(discard=discard)
        self._cancel_timers()
        if code != DisconnectCode.CONNECTION_CLOSED:
            self.node.metrics_disconnect(int(code))
            if self.transport.name in _CLOSE_FRAMES:  # a close frame carries the code
                self.node.metrics.count(
                    "transport_outgoing_close_count", (self.transport.name, str(int(code)))
                )
            log.info(
                "disconnect client=%s user=%s code=%s reason=%s",
                self.client_id,
                self.user,
                code,
                reason,
                extra={"client": self.client_id, "user": self.user, "code": code, "reason": reason},
            )

    def transport_closed(self) -> None:
        """The peer went away: nothing more can be written."""
        self.disconnect(DisconnectCode.CONNECTION_CLOSED)

    # ---------------------------------------------------------------------- timers

    def _schedule(self, name: str, delay: float, callback: Callable[[], object]) -> None:
        self._cancel_timer(name)
        if delay > 0:
            timers = self._timers
            if timers is None:
                timers = self._timers = {}
            timers[name] = self.node.scheduler.call_later(delay, callback)

    def _cancel_timer(self, name: str) -> None:
        timers = self._timers
        if timers is None:
            return
        timer = timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        if not timers:
            self._timers = None

    def _cancel_timers(self) -> None:
        self.node.pings.discard(self)
        self.node.stale_checks.discard(self)
        timers, self._timers = self._timers, None
        if timers is not None:
            for timer in timers.values():
                timer.cancel()
        for sub in self.subscriptions():
            if sub.timer is not None:
                sub.timer.cancel()

    def on_stale(self) -> None:
        """``client.stale_close_delay`` passed (``node.stale_checks``): close if not connected."""
        if self.state is State.CONNECTING:
            self.disconnect(DisconnectCode.STALE)

    def on_ping(self) -> None:
        """``client.ping_interval`` passed (``node.pings``): ping, and expect a pong."""
        if not self.connected:
            return
        self.send(self.codec.ping)
        self._count_sent("server_ping", len(self.codec.ping))
        cfg = self.node.config.client
        if cfg.pong_timeout > 0 and not self.transport.unidirectional:
            self._awaiting_pong = time.perf_counter()  # truthy: when the ping left
            self._schedule("pong", cfg.pong_timeout, self._on_pong_timeout)
        self.node.pings.add(self, cfg.ping_interval)

    def _on_pong_timeout(self) -> None:
        if self._awaiting_pong:
            self.disconnect(DisconnectCode.NO_PONG)

    def _handle_pong(self) -> None:
        # A pong nobody asked for is ignored (lenient; the SDKs never send one).
        if self._awaiting_pong:
            rtt = time.perf_counter() - self._awaiting_pong
            labels = (self.transport.name,)
            self.node.metrics.observe("client_ping_pong_duration_seconds", labels, rtt)
            self._awaiting_pong = 0.0
            self._cancel_timer("pong")

    # -------------------------------------------------------------------- commands

    def _accepting_commands(self) -> bool:
        return not self.closing and self.state is not State.FAILED

    async def handle_frame(self, frame: bytes) -> None:
        """Decode one transport frame and run its commands in order."""
        if self.state is State.FAILED and self.transport.emulation:
            # emulation: anything after a failed connect is a protocol violation (§1.5)
            self.disconnect(DisconnectCode.BAD_REQUEST)
            return
        if not self._accepting_commands():
            return
        try:
            if len(frame) > DECODE_INLINE_MAX:
                # only with a raised message size limit: decoding takes milliseconds, so it
                # runs in a thread and the loop keeps serving others meanwhile (pacing.py)
                commands = await self.node.pacer.run_sync(self.codec.decode_commands, frame)
            else:
                commands = self.codec.decode_commands(frame)
        except ProtocolError as exc:
            log.info(
                "bad frame from client=%s: %s",
                self.client_id,
                exc,
                extra={"client": self.client_id, "user": self.user, "code": 3501},
            )
            self.disconnect(DisconnectCode.BAD_REQUEST)
            return
        if self.node.registry.observer is not None:  # metrics on
            self._count_received(commands, len(frame))
        pacer = self.node.pacer
        occasional = self._occasional
        for command in commands:
            if not self._accepting_commands():
                return
            tasks = None if occasional is None else occasional.tasks
            if tasks is not None and self.state is State.CONNECTED:
                await self._start_command(tasks, command)
            else:
                await self.handle_command(command)
            if not pacer.room():  # a frame of many commands shares the loop (pacing.py)
                await pacer.wait()

    def _count_received(self, commands: list[Command], size: int) -> None:
        """transport_messages_received(_size) of one frame: each command by its method
        (``client_pong`` for an empty one), the frame's bytes shared among them."""
        metrics, name = self.node.metrics, self.transport.name
        share = size / len(commands) if commands else 0
        for cmd in commands:
            method = next((m for m in _METHODS if getattr(cmd, m) is not None), "client_pong")
            labels = (name, method, "")
            metrics.count("transport_messages_received", labels)
            metrics.count("transport_messages_received_size", labels, share)

    # ------------------------------------------------------------ concurrency

    def command_tasks(self) -> AbstractAsyncContextManager[None]:
        """Where commands run concurrently (``client.concurrency`` > 1) while a transport
        feeds the session; leaving it cancels the commands still running.

        At most ``client.concurrency`` commands run at once; the next one waits for a free
        slot, and so does the transport's reader (back-pressure, as in Centrifugo). With
        the default of one at a time it is a shared no-op: a connection then keeps no
        suspended generator, context manager and weak reference (fewer objects for the
        garbage collector to walk).
        """
        if self.node.config.client.concurrency <= 1:
            return _NO_TASKS
        return self._concurrent_commands(self.node.config.client.concurrency)

    @asynccontextmanager
    async def _concurrent_commands(self, limit: int) -> AsyncIterator[None]:
        occasional = self._more()
        async with anyio.create_task_group() as tg:
            occasional.tasks, occasional.slots = tg, anyio.Semaphore(limit)
            try:
                yield
            finally:
                occasional.tasks = None
                tg.cancel_scope.cancel()

    def _more(self) -> _Occasional:
        """The connection's :class:`_Occasional` state, made on first use."""
        occasional = self._occasional
        if occasional is None:
            occasional = self._occasional = _Occasional()
        return occasional

    async def _start_command(self, tasks: TaskGroup, cmd: Command) -> None:
        """Run ``cmd`` in a task of its own when it may overtake others, else inline."""
        method = next((m for m in _METHODS if getattr(cmd, m) is not None), None)
        if method not in _CONCURRENT or cmd.id == 0:
            await self.handle_command(cmd)
            return
        channel = cmd.subscribe.channel if cmd.subscribe is not None else ""
        if channel:
            refused = self._subscribe_refused(channel)
            if refused is not None:
                self.send_reply(Reply(id=cmd.id, error=refused))
                return
        occasional = self._more()
        slots = occasional.slots
        assert slots is not None
        try:
            slots.acquire_nowait()  # a free slot: no trip through the event loop
        except anyio.WouldBlock:
            await slots.acquire()  # back-pressure: the reader waits for a running command
        if not self._accepting_commands():
            slots.release()
            return
        if channel:
            if occasional.subscribing is None:
                occasional.subscribing = {}
            occasional.subscribing[channel] = anyio.Event()
        tasks.start_soon(self._run_command, cmd, channel, slots)

    def _subscribe_refused(self, channel: str) -> ErrorWire | None:
        """105 while a subscribe of ``channel`` runs; 106 when the running ones fill the
        channel limit (the subscribe itself checks the subscriptions it finds)."""
        code = None
        subscribing = self._subscribing()
        if not subscribing:
            return None
        if channel in subscribing:
            code = ErrorCode.ALREADY_SUBSCRIBED
        elif self._reserved() >= self.node.policy.channel_limit:
            code = ErrorCode.LIMIT_EXCEEDED
        if code is None:
            return None
        err = ClientError.of(code)
        return ErrorWire(code=err.code, message=err.message, temporary=err.temporary)

    def _reserved(self) -> int:
        """Channels held: the subscriptions, and those whose subscribe is running."""
        return len({*self.sub_channels(), *(self._subscribing() or ())})

    def _subscribing(self) -> dict[str, anyio.Event] | None:
        """The channels whose subscribe runs concurrently (None or empty: none)."""
        occasional = self._occasional
        return None if occasional is None else occasional.subscribing

    async def _run_command(self, cmd: Command, channel: str, slots: anyio.Semaphore) -> None:
        try:
            await self.handle_command(cmd)
        except Exception:  # handle_command answers errors itself; this is a bug
            log.exception("command failed for client=%s", self.client_id)
            self.disconnect(DisconnectCode.SERVER_ERROR)
        finally:
            slots.release()
            subscribing = self._subscribing()
            if channel and subscribing is not None:
                subscribing.pop(channel).set()

    # ------------------------------------------------------------ pipelined publishes

    async def _defer_publish_reply(
        self, cmd_id: int, channel: str, pending: Pending[PublishResult]
    ) -> None:
        """Answer a queued publication once the broker has its result, in command order.

        Up to ``PIPELINED_PUBLISHES`` are in flight; the next one waits for the oldest.
        The reply (success or error 100) is what the publication's own result says.
        """
        occasional = self._more()
        deferred = occasional.deferred
        if deferred is None:
            deferred = occasional.deferred = deque()
        deferred.append((cmd_id, channel, pending))
        pending.add_done_callback(self._answer_publishes)
        while len(deferred) >= PIPELINED_PUBLISHES:
            await deferred[0][2].settled()

    def _answer_publishes(self, _: Pending[PublishResult]) -> None:
        deferred = self._deferred()
        while deferred and deferred[0][2].done():
            cmd_id, channel, pending = deferred.popleft()
            if self.closing:
                continue
            try:
                self.node.publish_outcome(channel, pending)
            except ClientError as exc:
                error = ErrorWire(code=exc.code, message=exc.message, temporary=exc.temporary)
                self.send_reply(Reply(id=cmd_id, error=error))
            else:
                self.send_reply(Reply(id=cmd_id, publish=EmptyResult()))

    async def _publishes_answered(self) -> None:
        """Wait until every queued publication of this connection is answered."""
        deferred = self._deferred()
        while deferred:
            await deferred[-1][2].settled()

    def _deferred(self) -> deque[tuple[int, str, Pending[PublishResult]]] | None:
        """The publications queued to a pipelining broker, oldest first (None: none yet)."""
        occasional = self._occasional
        return None if occasional is None else occasional.deferred

    async def _subscribe_finished(self, channel: str) -> None:
        """An unsubscribe waits for a running subscribe of its channel (3004 after 5 s)."""
        subscribing = self._subscribing()
        running = subscribing.get(channel) if subscribing else None
        if running is None:
            return
        with anyio.move_on_after(SUBSCRIBING_WAIT):
            await running.wait()
            return
        log.info("client=%s: subscribe of %s did not finish", self.client_id, channel)
        raise Disconnect.of(DisconnectCode.SERVER_ERROR)

    async def handle_command(self, cmd: Command) -> None:
        for method in _METHODS:
            if getattr(cmd, method) is not None:
                break
        else:  # no method: a pong
            if cmd.id == 0 and self.state is State.CONNECTED:
                self._handle_pong()
            else:
                self.disconnect(DisconnectCode.BAD_REQUEST)
            return
        if (method == "connect") == (self.state is State.CONNECTED) or (
            cmd.id == 0 and method != "send"
        ):
            # connect twice, anything before connect, or a command without an id
            self.disconnect(DisconnectCode.BAD_REQUEST)
            return
        occasional = self._occasional
        if occasional is not None and occasional.deferred and method != "publish":
            await self._publishes_answered()
        counting = self.node.counting  # False: the default observer, which records nothing
        started = time.perf_counter() if counting else 0.0
        error_code = 0
        try:
            tracing = self.node.tracing
            if tracing is None:
                if self.node.rate_limits is not None and method in _RATE_LIMITED:
                    self._check_rate(method, getattr(cmd, method))
                reply = await self._dispatch(method, cmd)
            else:
                reply = await self._traced_dispatch(tracing, method, cmd)
        except ClientError as exc:
            error_code = exc.code
            if method == "connect":
                self.state = State.FAILED
                self._schedule("drop", 5.0, self.transport_closed)
            reply = Reply(
                id=cmd.id,
                error=ErrorWire(code=exc.code, message=exc.message, temporary=exc.temporary),
            )
        except Disconnect as exc:
            self.disconnect(exc.code, exc.reason)
            return
        except Exception:
            log.exception(
                "command %s failed for client=%s",
                method,
                self.client_id,
                extra={"client": self.client_id, "user": self.user, "method": method, "code": 100},
            )
            if method == "connect":
                self.state = State.FAILED
                self._schedule("drop", 5.0, self.transport_closed)
            err = ClientError.of(ErrorCode.INTERNAL)
            error_code = err.code
            reply = Reply(
                id=cmd.id, error=ErrorWire(code=err.code, message=err.message, temporary=True)
            )
        finally:
            if counting:
                self.node.metrics_command(method, time.perf_counter() - started, error_code)
        if reply is None:
            return
        size = self.send_reply(reply)
        if size and counting:
            self._count_sent(method, size)
        if reply.connect is not None:
            self._after_connect()
            if self.sub_slot is not None:  # server-side subscriptions
                await self.activate_all()
        elif reply.subscribe is not None and cmd.subscribe is not None:
            await self.activate(cmd.subscribe.channel)

    async def _traced_dispatch(self, tracing: Tracing, method: str, cmd: Command) -> Reply | None:
        """``_dispatch`` (and the rate limit check) in a span ``centrifugo.client.<method>``
        (``opentelemetry.enabled``): the client, user, transport, channel or RPC method,
        and the error code it failed with."""
        req = getattr(cmd, method)
        attributes = {
            "centrifugo.client": self.client_id,
            "centrifugo.transport": self.transport.name,
        }
        channel = getattr(req, "channel", "")
        if channel:
            attributes["centrifugo.channel"] = channel
        if method == "rpc":
            attributes["centrifugo.rpc_method"] = req.method
        with tracing.span(f"centrifugo.client.{method}", attributes, kind="server") as span:
            try:
                if self.node.rate_limits is not None and method in _RATE_LIMITED:
                    self._check_rate(method, req)
                return await self._dispatch(method, cmd)
            finally:  # a failed command has its user too (a connect's once it is known)
                if self.user:
                    span.set("centrifugo.user", self.user)

    def _check_rate(self, method: str, req: Any, user: str | None = None) -> None:
        """Error 111 when an operation rate limit (``client.rate_limit``) refuses it."""
        limits, occasional = self.node.rate_limits, self._more()
        assert limits is not None
        held = occasional.rate_held
        if held is None:
            held = occasional.rate_held = {}
        channel = getattr(req, "channel", None)
        namespace = None if channel is None else self.node.config.namespace_name(channel)
        rpc_method = req.method if method == "rpc" else ""
        user = self.user if user is None else user
        if not limits.allow(held, user, method, namespace, rpc_method, time.monotonic()):
            raise ClientError.of(ErrorCode.TOO_MANY_REQUESTS)

    async def _dispatch(self, method: str, cmd: Command) -> Reply | None:
        """Run one command; returns its reply (None for ``send``)."""
        req: Any = getattr(cmd, method)
        if method == "send":
            await self._send(req)
            return None
        if method == "unsubscribe":
            if self._subscribing():
                await self._subscribe_finished(req.channel)
            await self.unsubscribe(req.channel)
            return Reply(id=cmd.id, unsubscribe=EmptyResult())
        if method == "publish":
            occasional = self._occasional
            pipelined = occasional is None or occasional.tasks is None
            pending = await self.publish(req, pipelined=pipelined)
            if pending is None:
                return Reply(id=cmd.id, publish=EmptyResult())
            await self._defer_publish_reply(cmd.id, req.channel, pending)
            return None
        # the handler's name, looked up on the session (no table of bound methods built
        # per command)
        target = _RUNS.get(method)
        if target is None:
            # "ping" is a protocol-v1 leftover that current servers do not accept.
            raise Disconnect.of(DisconnectCode.BAD_REQUEST)
        fn: Callable[[Any], Awaitable[Any]] = getattr(self, target)
        reply = Reply(id=cmd.id)
        setattr(reply, method, await fn(req))
        return reply

    # ---------------------------------------------------------------------- connect

    async def connect_unidirectional(self, req: ConnectRequest) -> int | None:
        """Connect a unidirectional client (spec §8): a Connect push, or a disconnect.

        Returns None on success, else the code that failed the connect (the reply error
        code, or the disconnect code), for transports that map it to an HTTP status.
        """
        if self.state is not State.CONNECTING or self.closing:
            return int(DisconnectCode.BAD_REQUEST)
        started = time.perf_counter()
        try:
            tracing = self.node.tracing
            if tracing is None:
                result = await self._connect(req)
            else:
                attributes = {
                    "centrifugo.client": self.client_id,
                    "centrifugo.transport": self.transport.name,
                }
                with tracing.span("centrifugo.client.connect", attributes, kind="server") as span:
                    result = await self._connect(req)
                    span.set("centrifugo.user", self.user)
        except ClientError as exc:
            self.disconnect(*self._unidirectional_disconnect(exc.code))
            return exc.code
        except Disconnect as exc:
            self.disconnect(exc.code, exc.reason)
            return exc.code
        except Exception:
            log.exception(
                "unidirectional connect failed for client=%s",
                self.client_id,
                extra={"client": self.client_id, "method": "connect", "code": 3004},
            )
            self.disconnect(DisconnectCode.SERVER_ERROR)
            return int(ErrorCode.INTERNAL)
        finally:
            self.node.metrics_command("connect", time.perf_counter() - started)
        self.send_push(Push(connect=result))
        self._after_connect()
        await self.activate_all()
        return None

    def _unidirectional_disconnect(self, error_code: int) -> tuple[int, str]:
        """A connect reply error as a disconnect: configured transforms, then §8's table."""
        transforms = self.node.config.client.connect_code_to_unidirectional_disconnect
        if transforms.enabled:
            for t in transforms.transforms:
                if t.code == error_code:
                    return t.to.code, t.to.reason
        code = _UNI_CONNECT_DISCONNECT.get(error_code, DisconnectCode.SERVER_ERROR)
        return int(code), code.reason

    async def _authenticate(self, req: ConnectRequest) -> Credentials:
        node = self.node
        cfg = node.config.client
        header_user = self._header_user()
        if header_user is not None:
            return Credentials(user=header_user)
        if req.token:
            try:
                token = await node.token_verifier.verify_connect(req.token)
            except auth.TokenExpired:
                raise ClientError.of(ErrorCode.TOKEN_EXPIRED) from None
            except auth.JWKSUnavailable as exc:
                # nothing is known about the token yet: a temporary error the SDK retries
                log.info(
                    "connection token of client=%s not checked: %s",
                    self.client_id,
                    exc,
                    extra={"client": self.client_id, "method": "connect", "code": 100},
                )
                raise ClientError.of(ErrorCode.INTERNAL) from None
            except auth.TokenInvalid as exc:
                log.info(
                    "invalid connection token from client=%s: %s",
                    self.client_id,
                    exc,
                    extra={"client": self.client_id, "method": "connect", "code": 3500},
                )
                raise Disconnect.of(DisconnectCode.INVALID_TOKEN) from None
            if token.user == "" and cfg.disallow_anonymous_connection_tokens:
                raise Disconnect.of(DisconnectCode.PERMISSION_DENIED)
            expire_at = None if cfg.insecure else token.expire_at
            return Credentials(
                user=token.user,
                info=token.info,
                expire_at=expire_at,
                client_side_refresh=expire_at is not None,
                subs=list(token.subs),
                meta=token.meta,
            )
        handler = node.handlers.connecting
        if handler is not None:
            event = ConnectEvent(
                client=self.client_id,
                transport=self.transport.name,
                token=req.token,
                raw_data=bytes(req.data) if req.data is not UNSET else None,
                name=req.name,
                version=req.version,
                headers=dict(self.headers),
                emulated_headers={k.lower(): v for k, v in req.headers.items()},
            )
            reply = await handler(event)
            if reply is not None:
                return Credentials(
                    user=reply.user,
                    info=optional_payload(reply.info),
                    data=optional_payload(reply.data),
                    expire_at=reply.expire_at,
                    subs=[auth.ServerSubscription(ch, None, None, None) for ch in reply.channels],
                    meta=reply.meta,
                )
        if cfg.allow_anonymous_connect_without_token or cfg.insecure:
            return Credentials(user="")
        raise Disconnect(DisconnectCode.BAD_REQUEST, "bad request")

    def _header_user(self) -> str | None:
        header = self.node.config.client.user_id_http_header
        if not header:
            return None
        return self.headers.get(header.lower()) or None

    async def _connect(self, req: ConnectRequest) -> ConnectResult:
        node = self.node
        cfg = node.config.client
        if node.closing:
            raise Disconnect.of(DisconnectCode.SHUTDOWN)
        creds = await self._authenticate(req)
        if node.rate_limits is not None and creds.user:
            self._check_rate("connect", req, creds.user)
        now = time.time()
        if creds.expire_at is not None and creds.expire_at <= now:
            raise ClientError.of(ErrorCode.EXPIRED)
        channel = node.policy.single_connection_channel(creds.user)
        if channel is not None:  # only then a coroutine: the default skips it
            await self._single_connection(creds.user, channel)
        limit = cfg.user_connection_limit
        if limit > 0 and creds.user and node.registry.user_connection_count(creds.user) >= limit:
            raise Disconnect.of(DisconnectCode.CONNECTION_LIMIT)
        self.user = creds.user
        self.info = creds.info
        if creds.meta is not None:  # (the meta setter, without its call)
            self._more().meta = creds.meta
        self.expire_at = creds.expire_at
        self._refresher = (
            _CLIENT_REFRESH
            if creds.client_side_refresh
            else _HANDLER_REFRESH
            if creds.expire_at is not None
            else 0
        )
        node.registry.add_session(self)
        try:
            wanted = self._server_side_channels(creds, req)
            subs = await self._server_side_subscribe(wanted, req) if wanted else {}
        except BaseException:
            await self.remove_all()
            node.registry.remove_session(self)
            raise
        self.state = State.CONNECTED
        node.stale_checks.discard(self)
        occasional = self._occasional  # (self.session_id, without the property's call)
        result = ConnectResult(
            client=self.client_id,
            version=node.version,
            data=opt_raw(creds.data),
            subs=subs,
            session="" if occasional is None else occasional.session_id,
            node=node.node_id if self.transport.emulation else "",
        )
        if cfg.ping_interval > 0 and self.codec.ping:  # uni_grpc sends no pings
            result.ping = max(1, int(cfg.ping_interval))
            result.pong = cfg.pong_timeout > 0 and not self.transport.unidirectional
        if self._refresher == _CLIENT_REFRESH and self.expire_at is not None:
            result.expires = True
            result.ttl = max(1, int(self.expire_at - now))
        if cfg.connect_include_server_time:
            result.time = int(now * 1000)
        return result

    async def _single_connection(self, user: str, channel: str) -> None:
        """``single_connection``, as Centrifugo: when the user's personal ``channel`` has
        presence, every other connection of the user, on every node, is disconnected
        with 3504 before this one connects (3004 when the engine fails)."""
        node = self.node
        try:
            stats = await node.presence_manager.presence_stats(channel)
            if stats.num_clients >= 1:
                await node.disconnect(
                    user,
                    code=DisconnectCode.CONNECTION_LIMIT,
                    reason=DisconnectCode.CONNECTION_LIMIT.reason,
                    whitelist=[self.client_id],
                )
        except EngineError as exc:
            log.error("single connection of user=%s not enforced: %s", user, exc)
            raise Disconnect.of(DisconnectCode.SERVER_ERROR) from None

    def _server_side_channels(
        self, creds: Credentials, req: ConnectRequest
    ) -> dict[str, auth.ServerSubscription]:
        """The connection's server-side subscriptions: the token's or the connect handler's,
        the personal channel, a unidirectional client's allowed ``subs``; 3010 past the
        channel limit."""
        node = self.node
        wanted: dict[str, auth.ServerSubscription] = {s.channel: s for s in creds.subs}
        personal = node.policy.personal_channel(creds.user)
        if personal is not None:
            wanted.setdefault(personal, auth.ServerSubscription(personal, None, None, None))
        if self.transport.unidirectional:
            for channel in req.subs:
                if channel not in wanted and self._may_subscribe_from_request(channel):
                    wanted[channel] = auth.ServerSubscription(channel, None, None, None)
        if len(wanted) > node.config.client.channel_limit:
            raise Disconnect.of(DisconnectCode.CHANNEL_LIMIT)
        return wanted

    async def _server_side_subscribe(
        self, wanted: dict[str, auth.ServerSubscription], req: ConnectRequest
    ) -> dict[str, SubscribeResult]:
        results: dict[str, SubscribeResult] = {}
        for channel, spec in wanted.items():
            grant = Grant.from_server_subscription(spec)
            results[channel] = await self.subscribe_server_side(
                channel, grant, req.subs.get(channel)
            )
        return results

    def _may_subscribe_from_request(self, channel: str) -> bool:
        """Unidirectional ``subs`` keys: allowed when the namespace lets this client subscribe
        without a token or a proxy (not private, no subscribe proxy, valid name; then a
        user-limited channel that lists the user, insecure mode or the allow flags)."""
        policy = self.node.policy
        if not channel:
            return False
        try:
            policy.check_length(channel)
            opts = policy.checked(channel)
        except ClientError:
            return False
        if opts.subscribe_proxy_enabled:
            return False
        return policy.subscribe_allowed_without_handler(channel, opts, self.user)

    def _after_connect(self) -> None:
        if self.node.counting:
            labels = (self.transport.name, "", "", "")  # client name/version: see inflight
            self.node.metrics.count("client_connections_accepted", labels)
        self.node.pings.add(self, self.node.config.client.ping_interval)
        self._schedule_expiry()

    # ---------------------------------------------------------------------- expiry

    def _schedule_expiry(self) -> None:
        if self.expire_at is None:
            self._cancel_timer("expire")
            return
        delay = self.expire_at - time.time()
        if self._refresher == _HANDLER_REFRESH:
            self._schedule("expire", max(delay, 0.001), self._on_expire_refresh)
        else:
            delay += self.node.config.client.expired_close_delay
            self._schedule("expire", max(delay, 0.001), self._on_expire_check)

    def _on_expire_check(self) -> None:
        if self.expire_at is not None and self.expire_at <= time.time():
            self.disconnect(DisconnectCode.EXPIRED)

    def _on_expire_refresh(self) -> None:
        self.node.spawn(self._refresh_with_handler)

    async def _refresh_with_handler(self) -> None:
        handler = self.node.handlers.refresh
        if handler is None or self.closing:
            self.disconnect(DisconnectCode.EXPIRED)
            return
        try:
            reply = await handler(RefreshEvent(self.client_ref()))
        except Disconnect as exc:
            self.disconnect(exc.code, exc.reason)
            return
        except Exception:
            log.exception(
                "refresh handler failed for client=%s",
                self.client_id,
                extra={"client": self.client_id, "user": self.user, "method": "refresh"},
            )
            self._schedule("expire", 10.0, self._on_expire_refresh)
            return
        if self.closing:
            return
        if reply.expired or (reply.expire_at is not None and reply.expire_at <= time.time()):
            self.disconnect(DisconnectCode.EXPIRED)
            return
        if reply.info is not None:
            self.info = optional_payload(reply.info)
        self._extend(reply.expire_at)

    async def _refresh(self, req: RefreshRequest) -> RefreshResult:
        if self._refresher != _CLIENT_REFRESH or not req.token:
            raise Disconnect.of(DisconnectCode.BAD_REQUEST)
        try:
            token = await self.node.token_verifier.verify_connect(req.token)
        except auth.TokenExpired:
            raise Disconnect.of(DisconnectCode.EXPIRED) from None
        except auth.JWKSUnavailable as exc:
            # the SDK retries a refresh that failed with a temporary error
            log.info(
                "refresh token of client=%s not checked: %s",
                self.client_id,
                exc,
                extra={"client": self.client_id, "user": self.user, "method": "refresh"},
            )
            raise ClientError.of(ErrorCode.INTERNAL) from None
        except auth.TokenInvalid:
            raise Disconnect.of(DisconnectCode.INVALID_TOKEN) from None
        if token.user != self.user:
            raise Disconnect.of(DisconnectCode.INVALID_TOKEN)
        now = time.time()
        if token.expire_at is not None and token.expire_at <= now:
            raise Disconnect.of(DisconnectCode.EXPIRED)
        self.expire_at = token.expire_at
        if token.info is not None:
            self.info = token.info
        self._schedule_expiry()
        if self.expire_at is None:
            return RefreshResult(client=self.client_id, version=self.node.version)
        return RefreshResult(
            client=self.client_id,
            version=self.node.version,
            expires=True,
            ttl=max(1, int(self.expire_at - now)),
        )

    def apply_refresh(self, expire_at: int | None, info: bytes | None, expired: bool) -> None:
        """Server API ``refresh``: move the connection's expiry (or expire it now)."""
        if not self.connected:
            return
        if expired:
            self.disconnect(DisconnectCode.EXPIRED)
            return
        if info is not None:
            self.info = info
        self._extend(expire_at)

    def _extend(self, expire_at: int | None) -> None:
        """A server-side refresh moved the expiry: reschedule and tell the client."""
        self.expire_at = expire_at
        self._schedule_expiry()
        push = RefreshPush()
        if expire_at is not None:
            push = RefreshPush(expires=True, ttl=max(1, int(expire_at - time.time())))
        self.send_push(Push(refresh=push))

    # ------------------------------------------------------------------ rpc / send

    async def _rpc(self, req: RPCRequest) -> RPCResult:
        node = self.node
        ping = node.config.rpc.ping
        if ping.enabled and req.method == (ping.method or "ping"):
            return RPCResult()
        handler = node.handlers.rpc.get(req.method) or node.handlers.rpc_fallback
        if handler is None:  # 104 once some RPC exists (a handler or the ping), else 108
            if node.handlers.rpc or ping.enabled:
                raise ClientError.of(ErrorCode.METHOD_NOT_FOUND)
            raise ClientError.of(ErrorCode.NOT_AVAILABLE)
        raw = bytes(req.data) if req.data is not UNSET else None
        result = await handler(RPCEvent(self.client_ref(), req.method, raw))
        return RPCResult(data=opt_raw(optional_payload(result)))

    async def _send(self, req: SendRequest) -> None:
        handler = self.node.handlers.message
        if handler is None:
            raise Disconnect.of(DisconnectCode.NOT_AVAILABLE)
        raw = bytes(req.data) if req.data is not UNSET else None
        await handler(MessageEvent(self.client_ref(), raw))

    # ------------------------------------------------------------- server actions

    def push_message(self, data: bytes) -> None:
        """An async ``message`` push (server API ``send``); only after the connect reply."""
        if self.connected:
            self.send_push(Push(message=MessagePush(data=Raw(data))))

    async def server_subscribe(
        self, channel: str, grant: Grant, since: StreamPosition | None = None
    ) -> None:
        """Server API ``subscribe``: add a server-side subscription and push it.

        With ``since``, publications after that position are recovered (all or nothing)
        and pushed right after the Subscribe push.
        """
        if not self.connected or self.sub(channel) is not None:
            return
        if self.sub_count() >= self.node.config.client.channel_limit:
            self.disconnect(DisconnectCode.CHANNEL_LIMIT)
            return
        recover = None
        if since is not None:
            recover = SubscribeRequest(
                channel=channel, recover=True, offset=since.offset, epoch=since.epoch
            )
        result = await self.subscribe_server_side(channel, grant, recover, stream_recovery=True)
        self.send_push(
            Push(
                channel=channel,
                subscribe=SubscribePush(
                    recoverable=result.recoverable,
                    epoch=result.epoch,
                    offset=result.offset,
                    positioned=result.positioned,
                    data=result.data,
                ),
            )
        )
        for pub in result.publications:
            self.send_push(Push(channel=channel, pub=pub))
        await self.activate(channel)

    async def server_unsubscribe(
        self, channel: str, code: int = UnsubscribeCode.SERVER, reason: str = ""
    ) -> None:
        """Server API ``unsubscribe``: push Unsubscribe, then forget the channel."""
        if self.sub(channel) is None or not self.connected:
            return
        if not reason:
            known = code in UnsubscribeCode.__members__.values()
            reason = UnsubscribeCode(code).reason if known else "unsubscribe"
        self.node.metrics.count("client_num_server_unsubscribes", (str(code), ""))
        await self.unsubscribe_by_server(channel, code, reason)

    # ------------------------------------------------------------------- fan-out

    def deliver_join_leave(self, channel: str, data: EncodedOnce) -> bool:
        """Queue a join/leave push when this subscription wants it; True when queued."""
        sub = self.sub_slot  # inline self.sub(channel): once per subscriber and join/leave
        if isinstance(sub, dict):
            sub = sub.get(channel)
        if (
            sub is not None
            and sub.flags & SUB_PUSH_JOIN_LEAVE
            and sub.pending is None
            and sub.channel == channel
        ):
            self.send(data.get(self.codec))
            return True
        return False

    # ------------------------------------------------------------------- teardown

    async def finish(self) -> None:
        """Release everything the connection held (call once, after the transport ends)."""
        if self.state is State.CLOSED:
            return
        was_connected = self.state is State.CONNECTED
        if not self.closing:
            self.disconnect(DisconnectCode.CONNECTION_CLOSED)
        self.state = State.CLOSED
        self._cancel_timers()
        registry = self.node.registry
        registry.remove_session(self, finishing=True)
        try:
            await self.remove_all()
            handler = self.node.handlers.disconnect
            if was_connected and handler is not None:
                try:
                    await handler(
                        DisconnectEvent(self.client_ref(), self.close_code, self.close_reason)
                    )
                except Exception:
                    log.exception(
                        "disconnect handler failed for client=%s",
                        self.client_id,
                        extra={
                            "client": self.client_id,
                            "user": self.user,
                            "code": self.close_code,
                        },
                    )
        finally:
            registry.finished(self)


_MAX_REASON_BYTES = 123  # a WebSocket close frame's limit


#: the fields of a Push, and the frame types Centrifugo counts them as
_PUSH_KINDS = (
    "pub",
    "join",
    "leave",
    "unsubscribe",
    "message",
    "subscribe",
    "connect",
    "disconnect",
    "refresh",
)
_PUSH_FRAME = {"pub": "push_publication"}

#: the transports whose close frame carries the disconnect code (Centrifugo counts them in
#: transport_outgoing_close_count)
_CLOSE_FRAMES = frozenset({"websocket", "uni_websocket"})


def _valid_close(code: int, reason: str) -> tuple[int, str]:
    """A code the SDKs understand and a short reason: unknown codes become 3004."""
    if code != 1009 and not 3000 <= code <= 4999:
        code = int(DisconnectCode.SERVER_ERROR)
        reason = ""
    if not reason:
        reason = disconnect_reason(code)
    encoded = reason.encode()
    if len(encoded) > _MAX_REASON_BYTES:
        reason = encoded[:_MAX_REASON_BYTES].decode(errors="ignore")
    return code, reason


__all__ = ["Credentials", "RequestHeaders", "Session", "State", "TransportInfo"]
