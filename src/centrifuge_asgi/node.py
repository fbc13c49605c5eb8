"""The Node: configuration, engine, connection registry, handlers and the in-process API.

A node runs inside a lifespan (``async with node:`` or ``FastAPI(lifespan=node.lifespan)``)
that owns its background work: the shared timer, presence refresh, position checks and
memory sweeps, all in one task group.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from operator import methodcaller
from typing import Any, cast

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from ._version import __version__
from .auth import SubscriptionOverride, TokenVerifier
from .body_reads import BodyReads
from .cluster import Cluster, Disconnect, Refresh, Send, Subscribe, Unsubscribe
from .codes import DisconnectCode, ErrorCode
from .config import ChannelOptions, Config
from .engines.base import (
    Broker,
    ClientInfo,
    Controller,
    HistoryFilter,
    PresenceManager,
    PresenceStats,
    Publication,
    PublishOptions,
    PublishResult,
    StreamPosition,
    Sweeper,
)
from .engines.factory import build_engine
from .engines.map_base import MapBroker
from .errors import ClientError, EngineError
from .flusher import Flusher
from .handlers import (
    ConnectingHandler,
    DisconnectHandler,
    Handlers,
    MapPublishHandler,
    MapRemoveHandler,
    MessageHandler,
    PublishHandler,
    RefreshHandler,
    RPCHandler,
    SharedPollRefreshHandler,
    SubRefreshHandler,
    SubscribeHandler,
    SubscribeStreamEvent,
    SubscribeStreamHandler,
)
from .node_maps import MapApi, build_map_broker
from .observer import NodeObserver, NoObserver, Tracing
from .op_limits import OperationLimits
from .outbox import Outbox
from .pacing import Pacer
from .payload import (
    MAX_DEPTH,
    ParsedJson,
    is_parsed,
    optional_payload,
    publication_data_problem,
    to_payload,
)
from .pending import Pending
from .policy import ChannelPolicy, Feature
from .registry import Registry
from .session import RawHeaders, Session
from .shared_poll import SharedPollManager
from .timers import Scheduler, Wheel, WriteWatchdog, wheel_resolution
from .token_bucket import connection_rate_limiter

log = logging.getLogger("centrifuge_asgi.node")


@dataclass(frozen=True, slots=True)
class HistoryPage:
    publications: list[Publication]
    offset: int
    epoch: str


class Node(MapApi):
    """A Centrifugo-compatible node.

    ``config`` is a :class:`~centrifuge_asgi.config.Config` or a Centrifugo v6-style dict.
    The engine defaults to the in-memory broker and presence manager.
    """

    def __init__(
        self,
        config: Config | Mapping[str, Any] | None = None,
        *,
        broker: Broker | None = None,
        presence_manager: PresenceManager | None = None,
        map_broker: MapBroker | None = None,
        name: str = "",
        observer: NodeObserver | None = None,
    ) -> None:
        if config is None:
            config = Config()
        elif not isinstance(config, Config):
            config = Config.from_dict(config)
        self.config: Config = config
        self.policy = ChannelPolicy(config)  # every channel rule, built once
        self.rate_limits = OperationLimits.of(config.client.rate_limit)  # None: off
        self.node_id = str(uuid.uuid4())
        self.name = name or self.node_id[:8]
        self.version = __version__
        self.started_at = time.time()
        self.registry: Registry[Session] = Registry()
        self.pacer = Pacer()  # paces long runs of commands, API batches and teardowns
        # what the node reports (commands, fan-out, API calls): Prometheus when enabled
        self.metrics: NodeObserver = observer or NoObserver()
        self._scheduler = Scheduler()
        client = self.config.client
        # client.connection_rate_limit: new connections beyond it are refused with 503
        self.connection_rate = connection_rate_limiter(client.connection_rate_limit)
        # Per-connection deadlines that every connection has: one entry in a wheel each.
        # methodcaller, so that a Session subclass (create_session) keeps its overrides.
        self.pings: Wheel[Session] = Wheel(
            self._scheduler, methodcaller("on_ping"), wheel_resolution(client.ping_interval)
        )
        self.stale_checks: Wheel[Session] = Wheel(
            self._scheduler,
            methodcaller("on_stale"),
            wheel_resolution(client.stale_close_delay),
        )
        self.write_watchdog = WriteWatchdog()
        # request bodies in progress: http_server.read_timeout, and ended by shutdown
        self.body_reads = BodyReads(config.http_server.read_timeout, lambda: self._closing)
        self.flusher = Flusher(self.spawn)
        self._owned: set[anyio.CancelScope] = set()  # scopes of node-owned tasks
        self._shutdown_deadline: float | None = None
        self._exiting = False
        self.outbox_pressure = False  # set when an outbox passes half of its limit
        self.handlers = Handlers()
        if broker is None or presence_manager is None:
            default_broker, default_presence = build_engine(config)
            broker = broker or default_broker
            presence_manager = presence_manager or default_presence
        self.broker: Broker = broker
        self.presence_manager: PresenceManager = presence_manager
        self.map_broker: MapBroker = map_broker or build_map_broker(config)  # map channels
        cfg = config.client
        self.token_verifier = TokenVerifier(
            cfg.token, insecure_skip_signature=cfg.insecure_skip_token_signature_verify
        )
        separate = cfg.subscription_token.enabled
        self.subscription_token_verifier = TokenVerifier(
            cfg.subscription_token if separate else cfg.token,
            insecure_skip_signature=cfg.insecure_skip_token_signature_verify,
            config_prefix="client.subscription_token" if separate else "client.token",
        )
        if cfg.insecure:
            log.warning("client.insecure is on: every client may subscribe, publish and read")
        if observer is None and config.prometheus.enabled:
            self.metrics = EDGES.need("prometheus_observer")(self)
        # the default observer: a connection skips its per-message counting entirely
        # (an observer subclassing NoObserver, the documented way, still gets every count)
        self.counting = type(self.metrics) is not NoObserver
        if self.counting:  # fan-outs count their pushes
            self.registry.observer = self.metrics
        # OpenTelemetry spans (tracing.py), None when off: each traced place tests it
        self.tracing: Tracing | None = None
        if config.opentelemetry.enabled:
            self.tracing = EDGES.need("tracing")(self)
        EDGES.need("install_proxies")(self)  # the HTTP proxies the config enables
        self._tg: TaskGroup | None = None
        self._grpc: Any = None  # the gRPC servers (grpc_api, uni_grpc) while running
        self._closing = False
        self.cluster = Cluster(self)  # node-to-node messages (cluster.py)
        self.shared_poll = SharedPollManager(self)  # shared poll channels of this node

    # --------------------------------------------------------------- decorators

    def on_connecting(self, fn: ConnectingHandler) -> ConnectingHandler:
        """Authenticate connections that carry no token (returns ConnectReply or None)."""
        self.handlers.connecting = self._traced("connecting", fn)
        return fn

    def on_subscribe(self, fn: SubscribeHandler) -> SubscribeHandler:
        self.handlers.subscribe = self._traced("subscribe", fn)
        return fn

    def on_publish(self, fn: PublishHandler) -> PublishHandler:
        self.handlers.publish = self._traced("publish", fn)
        return fn

    def on_map_publish(self, fn: MapPublishHandler) -> MapPublishHandler:
        """Decide client publishes into map channels (returns MapPublishReply or None;
        None leaves it to ``map.allow_publish_for_*``); a map publish proxy comes first."""
        self.handlers.map_publish = self._traced("map_publish", fn)
        return fn

    def on_map_remove(self, fn: MapRemoveHandler) -> MapRemoveHandler:
        """Decide client removes of map keys (MapRemoveReply or None), as on_map_publish."""
        self.handlers.map_remove = self._traced("map_remove", fn)
        return fn

    def on_refresh(self, fn: RefreshHandler) -> RefreshHandler:
        self.handlers.refresh = self._traced("refresh", fn)
        return fn

    def on_sub_refresh(self, fn: SubRefreshHandler) -> SubRefreshHandler:
        self.handlers.sub_refresh = self._traced("sub_refresh", fn)
        return fn

    def on_subscribe_stream(self, fn: SubscribeStreamHandler) -> SubscribeStreamHandler:
        """Feed the channels of ``subscribe_stream_proxy_enabled`` namespaces that have no
        proxy endpoint: ``fn`` is an async generator (see docs/proxies.md); traced until
        its first item, the subscribe reply."""
        self.handlers.subscribe_stream = self._traced_stream(fn)
        return fn

    def on_message(self, fn: MessageHandler) -> MessageHandler:
        self.handlers.message = self._traced("message", fn)
        return fn

    def on_disconnect(self, fn: DisconnectHandler) -> DisconnectHandler:
        self.handlers.disconnect = self._traced("disconnect", fn)
        return fn

    def on_shared_poll_refresh(self, fn: SharedPollRefreshHandler) -> SharedPollRefreshHandler:
        """Answer the shared poll refreshes of namespaces whose ``shared_poll_refresh``
        proxy has no endpoint: ``fn(SharedPollRefreshEvent) -> SharedPollRefreshReply``."""
        self.handlers.shared_poll_refresh = self._traced("shared_poll_refresh", fn)
        return fn

    def on_rpc(self, method: str | None = None) -> Callable[[RPCHandler], RPCHandler]:
        """Register an RPC handler for ``method`` (``None``: every unregistered method)."""

        def register(fn: RPCHandler) -> RPCHandler:
            if method is None:
                self.handlers.rpc_fallback = self._traced("rpc", fn)
            else:
                self.handlers.rpc[method] = self._traced("rpc", fn)
            return fn

        return register

    def _traced(self, kind: str, fn: Any) -> Any:
        """``fn`` inside a span ``handler.<kind>`` when tracing (``fn`` itself if not)."""
        tracing = self.tracing
        if tracing is None:
            return fn

        @functools.wraps(fn)
        async def traced(event: Any) -> Any:
            attributes = {"centrifugo.handler": _name(fn)}
            with tracing.span(f"centrifugo.handler.{kind}", attributes):
                return await fn(event)

        return traced

    def _traced_stream(self, fn: SubscribeStreamHandler) -> SubscribeStreamHandler:
        """A stream generator inside a span ``handler.subscribe_stream`` until its first
        item (the subscribe reply), not for the stream's whole life."""
        tracing = self.tracing
        if tracing is None:
            return fn

        @functools.wraps(fn)
        async def traced(event: SubscribeStreamEvent) -> AsyncIterator[Any]:
            attributes = {"centrifugo.handler": _name(fn)}
            items = fn(event)
            try:
                with tracing.span("centrifugo.handler.subscribe_stream", attributes):
                    first = await anext(items, _NOTHING)
                if first is _NOTHING:
                    return
                yield first
                async for item in items:
                    yield item
            finally:  # closed with the stream, as the generator itself would be
                close = getattr(items, "aclose", None)
                if close is not None:
                    await close()

        return traced

    # ---------------------------------------------------------------- lifespan

    @property
    def running(self) -> bool:
        return self._tg is not None

    @property
    def closing(self) -> bool:
        """True once shutdown began: new connections and API calls are refused."""
        return self._closing

    async def __aenter__(self) -> Node:
        if self._tg is not None:
            raise RuntimeError("node is already running")
        self._closing = False
        self._shutdown_deadline = None
        self._exiting = False
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            self.controller.register_control_handler(self.cluster, self.node_id)
            await self.broker.start(self)
            await self.map_broker.start(self)
        except BaseException:
            self._tg = None
            try:
                # the broker may have entered a task group of its own before failing;
                # it must be exited here, at its own nesting level (no shield around it)
                with contextlib.suppress(Exception):
                    await self.map_broker.close()  # entered after the broker's
                with contextlib.suppress(Exception):
                    await self.broker.close()
            finally:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
            raise
        self._start(self.scheduler.run)
        self._start(self.flusher.run)
        self._start(
            self._periodic, self.config.client.presence_update_interval, self._refresh_presence
        )
        self._start(self._periodic, 1.0, self._sweep)
        if not self.controller.capabilities.single_process:
            self._start(self.cluster.announce_loop)
        self._start(
            self._periodic, self.config.client.channel_position_check_delay, self._check_positions
        )
        if self.config.grpc_api.enabled or self.config.uni_grpc.enabled:
            try:  # grpc/servers.py; a port that cannot be bound fails the start
                self._grpc = await EDGES.need("start_grpc")(self)
            except BaseException:
                await self.__aexit__(None, None, None)
                raise
        if any(consumer.enabled for consumer in self.config.consumers):
            self._start(EDGES.need("run_consumers"), self)  # consumers/: outbox, streams
        for exporter in (getattr(self.metrics, "run", None), getattr(self.tracing, "run", None)):
            if exporter is not None:  # an observer's background work
                self._start(exporter)
        return self

    async def __aexit__(self, *exc: object) -> None:
        tg = self._tg
        if tg is None:
            return
        try:
            await self.shutdown()
            if self._grpc is not None:  # after shutdown: uni gRPC streams got their push
                grpc_servers, self._grpc = self._grpc, None
                with anyio.CancelScope(shield=True):
                    await grpc_servers.stop()
            # Not inside a shielding scope: a broker may own a task group entered in
            # start(), which must be exited at the same nesting level (brokers shield
            # their own I/O). That exit re-raises a cancellation of the scope hosting
            # the node; the presence manager is closed all the same.
            try:
                try:  # the map broker's task group was entered last: it exits first
                    with contextlib.suppress(Exception):
                        await self.map_broker.close()
                finally:
                    with contextlib.suppress(Exception):
                        await self.broker.close()
            finally:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self.presence_manager.close()
        finally:
            self._exiting = True  # node-owned tasks that start from now on are not shielded
            for scope in list(self._owned):
                scope.cancel()
            tg.cancel_scope.cancel()
            self._tg = None
            await tg.__aexit__(None, None, None)

    async def shutdown(self, grace: float = 5.0) -> None:
        """Disconnect every client with 3001 "shutdown" and wait (bounded) until they are gone.

        Call it before the ASGI server closes sockets itself (uvicorn closes WebSockets
        with 1012 before the lifespan ends); the CLI's ``serve`` does. A second call (the
        node's own exit after the server's) waits only for what is left of the first's
        grace period.
        """
        if self._shutdown_deadline is None:
            self._shutdown_deadline = anyio.current_time() + grace
        self._closing = True
        self.body_reads.stop()
        for session in self.registry.sessions():
            session.disconnect(DisconnectCode.SHUTDOWN)
        remaining = max(0.0, self._shutdown_deadline - anyio.current_time())
        with anyio.move_on_after(remaining, shield=True):
            await self.registry.wait_empty()

    def _start(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start a node-owned background task (see :meth:`_owned_run`)."""
        assert self._tg is not None
        self._tg.start_soon(self._owned_run, fn, args)

    async def _owned_run(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        """Run ``fn`` shielded from a cancellation of the scope hosting the node.

        The node's exit cancels it, once :meth:`shutdown` has disconnected every client:
        the flusher, the timers and the write watchdog must outlive the host's
        cancellation, or the clients' close frames are never written.
        """
        if self._exiting:  # started after the exit began: cancelled at its first await
            await fn(*args)
            return
        with anyio.CancelScope(shield=True) as scope:
            self._owned.add(scope)
            try:
                await fn(*args)
            finally:
                self._owned.discard(scope)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Starlette/FastAPI lifespan: ``FastAPI(lifespan=node.lifespan)``."""
        async with self:
            yield

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run ``fn(*args)`` as a node-owned task (False when the node is not running).

        Failures are logged; a stray ``CancelledError`` (one this task was not asked
        for) is logged too, so it cannot take the node's task group down.
        """
        if self._tg is None:
            return False

        async def guarded() -> None:
            try:
                await fn(*args)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                log.error("background task %s was cancelled from inside", _name(fn))
            except Exception:
                log.exception("background task %s failed", _name(fn))

        self._start(guarded)
        return True

    async def _periodic(self, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        if interval <= 0:
            return
        while True:
            await anyio.sleep(interval)
            try:
                await step()
            except Exception:
                log.exception("periodic %s failed", getattr(step, "__name__", step))

    async def _refresh_presence(self) -> None:
        for session in self.registry.sessions():
            if not session.connected:
                continue
            for sub in session.subscriptions():
                if sub.presence:
                    await self.presence_manager.add_presence(
                        sub.channel, session.client_id, session.client_info(sub.chan_info)
                    )
                elif sub.map_channel:  # map_clients/map_users entries: keep their TTL
                    await self.map_presence_join(
                        sub.channel, session.client_id, session.user, session.client_info()
                    )

    async def _check_positions(self) -> None:
        """Compare positioned subscribers with their stream top (catches lost publications)."""
        for channel in list(self.registry.channels()):
            sessions = self.registry.subscribers(channel)
            if not any((sub := s.sub(channel)) and sub.positioned for s in sessions):
                continue
            opts = self.policy.options(channel)
            if opts is None:
                continue
            try:
                if opts.is_map:
                    hist = await self.map_broker.read_stream(channel, HistoryFilter(limit=0))
                else:
                    hist = await self.broker.history(
                        channel, HistoryFilter(limit=0), self.policy.meta_ttl(opts)
                    )
            except Exception as exc:  # an engine outage skips the check, as Centrifugo does
                log.warning("position check of %s skipped: %s", channel, exc)
                continue
            for session in sessions:
                session.check_position(channel, hist.position)

    async def _sweep(self) -> None:
        self.write_watchdog.sweep()
        if self.broker.capabilities.sweep:
            cast(Sweeper, self.broker).sweep()
        sweep = getattr(self.map_broker, "sweep", None)  # memory map broker: key TTLs
        if sweep is not None:
            sweep()

    def asgi_app(self) -> Any:
        """A Starlette app with the connection endpoints, to mount at any prefix
        (``centrifuge_asgi.app.build_app(node)``)."""
        return EDGES.need("build_app")(self)

    # --------------------------------------------------------------- helpers

    def metrics_command(self, method: str, duration: float, error_code: int = 0) -> None:
        """Record one client command's duration and, when it failed, its error code."""
        self.metrics.command(method, duration)
        if error_code:
            self.metrics.reply_error(method, error_code)

    def metrics_disconnect(self, code: int) -> None:
        """Count a connection the server closed with ``code``."""
        self.metrics.server_disconnect(code)

    @property
    def scheduler(self) -> Scheduler:
        """The node's one timer (its ``clock`` may be replaced before start, e.g. in tests;
        the scheduler itself may not, since the wheels hold it)."""
        return self._scheduler

    def create_session(
        self,
        transport: Any,
        headers: Mapping[str, str] | RawHeaders | None = None,
        outbox: Outbox | None = None,
    ) -> Session:
        """A new connection's session; ``outbox``: the transport's own (the WebSocket
        writer), else the session makes one."""
        # mypy checks here that Node satisfies host.SessionHost, all a session sees of it
        return Session(self, transport, headers, outbox)

    # -------------------------------------------------- BrokerEventHandler

    def handle_publication(
        self, channel: str, pub: Publication, epoch: str, prev: Publication | None = None
    ) -> None:
        started = time.perf_counter()
        if self.tracing is None:
            fanned = self.registry.broadcast_publication(channel, pub, epoch, prev)
        else:  # one span per fan-out, never one per delivery
            with self.tracing.span("centrifugo.fanout", {"centrifugo.channel": channel}) as span:
                fanned = self.registry.broadcast_publication(channel, pub, epoch, prev)
                span.set("centrifugo.num_subscribers", fanned)
        self._fanned_out("publication", fanned, started)
        if pub.time:
            lag = abs(time.time() - pub.time / 1000)  # as Centrifugo: a skew counts too
            self.metrics.observe("node_pub_sub_lag_seconds", ("",), lag)

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        started = time.perf_counter()
        self._fanned_out("join", self.registry.broadcast_join(channel, info), started)

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        started = time.perf_counter()
        self._fanned_out("leave", self.registry.broadcast_leave(channel, info), started)

    def _fanned_out(self, kind: str, count: int, started: float) -> None:
        """Metrics of one broker message fanned out (counted once, not per delivery);
        Centrifugo times the fan-out of publications only."""
        self.metrics.fanout(kind, count)
        if kind == "publication":
            took = time.perf_counter() - started
            self.metrics.observe("node_broadcast_duration_seconds", (kind, ""), took)

    @property
    def controller(self) -> Controller:
        """The engine role that carries node-to-node messages (the broker's)."""
        return self.broker

    # -------------------------------------------------------- in-process API

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        idempotency_key: str = "",
        skip_history: bool = False,
        tags: Mapping[str, str] | None = None,
        client_info: ClientInfo | None = None,
        version: int = 0,
        version_epoch: str = "",
        delta: bool = False,
    ) -> StreamPosition:
        """Publish ``data`` (any JSON-encodable value, or bytes of JSON) into ``channel``.

        ``delta`` (always on in a ``delta_publish`` namespace) lets subscribers that
        negotiated fossil delta compression receive it as a delta (see ``docs/delta.md``).

        Returns where it landed (offset 0 and an empty epoch when the channel keeps no
        history). Data that the channel's ``publication_data_format`` refuses is error 107,
        and nothing is stored: unless the format is ``binary``, that is anything a JSON
        client could not receive (see :func:`~.payload.json_problem`).
        """
        payload, options = self._publish_options(
            channel,
            data,
            idempotency_key=idempotency_key,
            skip_history=skip_history,
            tags=tags,
            client_info=client_info,
            version=version,
            version_epoch=version_epoch,
            delta=delta,
        )
        try:
            if self.tracing is None:
                result = await self.broker.publish(channel, payload, options)
            else:
                attributes = {"centrifugo.channel": channel}
                with self.tracing.span("centrifugo.publish", attributes):
                    result = await self.broker.publish(channel, payload, options)
        except EngineError as exc:
            self.metrics.broker_publish_error()
            log.error("publish to %s failed: %s", channel, exc)
            raise ClientError.of(ErrorCode.INTERNAL) from exc
        self.metrics.published("publication")
        if result.suppressed:  # deduplicated by idempotency key, or an older version
            reason = "idempotency_key" if idempotency_key else "version"
            self.metrics.count("broker_publish_suppressed_count", (reason, ""))
        # The memory broker fans out synchronously. Publishing back to back lets each
        # connection's writer send everything queued as one frame (coalescing); but once
        # some outbox is half full, let the writers drain before the next publication,
        # so a loop of publishes in one task never overflows healthy readers.
        if self.outbox_pressure:
            self.outbox_pressure = False
            await anyio.lowlevel.checkpoint()
        return result.position

    def _publish_options(
        self,
        channel: str,
        data: Any,
        *,
        idempotency_key: str = "",
        skip_history: bool = False,
        tags: Mapping[str, str] | None = None,
        client_info: ClientInfo | None = None,
        version: int = 0,
        version_epoch: str = "",
        delta: bool = False,
    ) -> tuple[bytes, PublishOptions]:
        """The checked payload and the broker's options of a publication (107, 102)."""
        if not channel:
            raise ClientError(ErrorCode.BAD_REQUEST, "channel required")
        opts = self.policy.resolve(channel)
        problem: str | None
        try:
            payload = to_payload(data)
        except RecursionError:  # a Python value nested too deeply for msgspec
            payload, problem = b"", f"data nests deeper than {MAX_DEPTH} levels"
        else:
            data_format = self.policy.data_format(opts)
            problem = publication_data_problem(payload, data_format, parsed=is_parsed(data))
        if problem is not None:
            log.info("publication into %s refused: %s", channel, problem)
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        history_size, history_ttl = self.policy.history_kept(opts)
        options = PublishOptions(
            history_size=history_size,
            history_ttl=history_ttl,
            history_meta_ttl=self.policy.meta_ttl(opts),
            idempotency_key=idempotency_key,
            client_info=client_info,
            tags=dict(tags) if tags else None,
            skip_history=skip_history,
            version=version,
            version_epoch=version_epoch,
            delta=delta or opts.delta_publish,
        )
        return payload, options

    async def publish_pipelined(
        self,
        channel: str,
        data: Any,
        *,
        client_info: ClientInfo | None = None,
        skip_history: bool = False,
    ) -> Pending[PublishResult] | None:
        """Queue a publication where the broker pipelines them; None where it does not.

        Checks as :meth:`publish` does (errors raise here). The result is settled when
        the broker has Redis's reply; :meth:`publish_outcome` turns it into the position
        or the client error :meth:`publish` would raise. A connection uses this to send
        its publications back to back (``Session``), its replies in order.
        """
        pipelined = getattr(self.broker, "publish_pipelined", None)
        if pipelined is None or self.tracing is not None:
            return None
        payload, options = self._publish_options(
            channel, data, client_info=client_info, skip_history=skip_history
        )
        pending: Pending[PublishResult] = await pipelined(channel, payload, options)
        return pending

    def publish_outcome(self, channel: str, pending: Pending[PublishResult]) -> StreamPosition:
        """The position of a settled pipelined publication, or error 100 (as publish)."""
        try:
            result = pending.result()
        except EngineError as exc:
            self.metrics.broker_publish_error()
            log.error("publish to %s failed: %s", channel, exc)
            raise ClientError.of(ErrorCode.INTERNAL) from exc
        self.metrics.published("publication")
        return result.position

    async def shared_poll_publish(
        self, channel: str, key: str, data: Any, version: int, *, epoch: str = ""
    ) -> None:
        """Push version ``version`` of ``key`` to the trackers of a shared poll channel now.

        As Centrifugo: 107 without a channel, a key or a version >= 1, 102 for an unknown
        namespace, 107 when it is not ``shared_poll``, 108 without ``publish_enabled``
        (which needs ``mode: versioned``), 107 for data the namespace's
        ``publication_data_format`` refuses. A version not newer than the one a node holds
        is dropped there silently.
        ``data`` is a JSON value or bytes of JSON. Every node of the cluster delivers it.
        """
        if not channel or not key or version < 1:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        opts = self.policy.resolve(channel)  # 102 for an unknown namespace
        if opts.subscription_type != "shared_poll":
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        if not opts.shared_poll.publish_enabled:  # only valid with mode versioned
            raise ClientError.of(ErrorCode.NOT_AVAILABLE)
        payload = to_payload(data)
        data_format = self.policy.data_format(opts)  # as publish: what JSON clients can get
        if publication_data_problem(payload, data_format, parsed=is_parsed(data)):
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        self.shared_poll.publish(channel, key, payload, version, epoch)
        await self.cluster.shared_poll_publish(channel, key, payload, version, epoch)

    async def broadcast(
        self, channels: list[str], data: Any, **kwargs: Any
    ) -> list[StreamPosition | ClientError]:
        """Publish the same data into several channels; one result or error per channel."""
        payload: Any = data
        with contextlib.suppress(RecursionError):  # else each publish answers 107
            payload = to_payload(data)
            if is_parsed(data):
                payload = ParsedJson(payload)  # JSON by construction: no syntax pass
        results: list[StreamPosition | ClientError] = []
        for channel in channels:
            try:
                results.append(await self.publish(channel, payload, **kwargs))
            except ClientError as exc:
                results.append(exc)
        return results

    async def subscribe(
        self,
        user: str,
        channel: str,
        *,
        client: str = "",
        session: str = "",
        info: Any = None,
        data: Any = None,
        expire_at: int | None = None,
        override: SubscriptionOverride | None = None,
        recover_since: StreamPosition | None = None,
    ) -> None:
        """Subscribe every connection of ``user`` (or one ``client``/``session``) to
        ``channel``, server-side. ``recover_since`` replays what the client missed after
        that position (when the channel is recoverable) right after the subscribe push.
        """
        self.policy.resolve(channel)
        overrides: dict[str, bool] = {}
        if override is not None:
            overrides = {k: v for k, v in dataclasses.asdict(override).items() if v is not None}
        await self.cluster.act(
            Subscribe(
                origin=self.node_id,
                user=user,
                client=client,
                session=session,
                channel=channel,
                info=optional_payload(info),
                data=optional_payload(data),
                expire_at=expire_at or 0,
                override=overrides,
                recover=recover_since is not None,
                recover_offset=recover_since.offset if recover_since else 0,
                recover_epoch=recover_since.epoch if recover_since else "",
            )
        )

    async def unsubscribe(
        self, user: str, channel: str, *, client: str = "", session: str = ""
    ) -> None:
        """Remove ``channel`` from a user's connections (or one ``client``/``session``)."""
        await self.cluster.act(
            Unsubscribe(
                origin=self.node_id, user=user, client=client, session=session, channel=channel
            )
        )

    async def disconnect(
        self,
        user: str,
        *,
        client: str = "",
        session: str = "",
        code: int = DisconnectCode.FORCE_DISCONNECT,
        reason: str = "",
        whitelist: list[str] | None = None,
    ) -> None:
        """Disconnect every connection of ``user`` (or one ``client``/``session``)."""
        self.metrics.count("node_action_count", ("user_disconnect", ""))
        await self.cluster.act(
            Disconnect(
                origin=self.node_id,
                user=user,
                client=client,
                session=session,
                code=code,
                reason=reason,
                whitelist=list(whitelist or []),
            )
        )

    async def send(self, user: str, data: Any, *, client: str = "") -> None:
        """Push an async ``message`` to a user's connections (JS ``message`` event)."""
        await self.cluster.act(
            Send(origin=self.node_id, user=user, client=client, data=to_payload(data))
        )

    async def refresh(
        self,
        user: str,
        *,
        client: str = "",
        session: str = "",
        expire_at: int | None = None,
        expired: bool = False,
        info: Any = None,
    ) -> None:
        """Move the expiry of a user's connections (server-side refresh)."""
        await self.cluster.act(
            Refresh(
                origin=self.node_id,
                user=user,
                client=client,
                session=session,
                expire_at=expire_at or 0,
                expired=expired,
                info=optional_payload(info),
            )
        )

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        self._require(channel, "presence")
        self.metrics.count("node_action_count", ("presence", ""))
        return await self.presence_manager.presence(channel)

    async def presence_stats(self, channel: str) -> PresenceStats:
        self._require(channel, "presence")
        self.metrics.count("node_action_count", ("presence_stats", ""))
        return await self.presence_manager.presence_stats(channel)

    async def history(
        self,
        channel: str,
        *,
        limit: int = 0,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> HistoryPage:
        opts = self._require(channel, "history")
        self.metrics.count("node_action_count", ("history", ""))
        hist = await self.broker.history(
            channel,
            HistoryFilter(limit=limit, since=since, reverse=reverse),
            self.policy.meta_ttl(opts),
        )
        return HistoryPage(hist.publications, hist.position.offset, hist.position.epoch)

    async def history_remove(self, channel: str) -> None:
        self._require(channel, "history")
        self.metrics.count("node_action_count", ("history_remove", ""))
        await self.broker.remove_history(channel)

    def channels(self, pattern: str = "") -> dict[str, int]:
        """Active channels on this node with their subscriber counts (glob filter)."""
        chans = self.registry.channels()
        if not pattern:
            return chans
        return {ch: n for ch, n in chans.items() if fnmatch.fnmatchcase(ch, pattern)}

    async def cluster_channels(self, pattern: str = "", wait: float = 1.0) -> dict[str, int]:
        """Active channels across every node (counts summed), like Centrifugo's survey.

        Asks the peers this node knows about over the control channel and waits (at most
        ``wait`` seconds) for their answers; a silent peer is left out.
        """
        started = time.perf_counter()
        try:
            return await self.cluster.channels(pattern, wait)
        finally:
            self._surveyed("channels", started)

    def _surveyed(self, op: str, started: float) -> None:
        self.metrics.count("node_action_count", ("survey", ""))
        took = time.perf_counter() - started
        self.metrics.observe("node_survey_duration_seconds", (op,), took)

    def info(self) -> dict[str, Any]:
        """Statistics of every node in the cluster without asking anyone: this one plus
        what peers heard from within the last ``cluster.NODE_TTL`` seconds announced
        (nodes announce themselves to each other every ``cluster.NODE_INTERVAL``)."""
        return {"nodes": [self.node_stats(), *self.cluster.peers()]}

    async def cluster_info(self, wait: float = 0.5) -> dict[str, Any]:
        """Statistics of every node in the cluster, each peer asked now with a survey (what
        the server API's ``info`` returns); a peer that does not answer within ``wait``
        seconds, or an older node that cannot, is listed as it last announced itself."""
        started = time.perf_counter()
        try:
            return {"nodes": [self.node_stats(), *await self.cluster.info(wait)]}
        finally:
            self._surveyed("info", started)

    def node_stats(self) -> dict[str, Any]:
        """This node's statistics, as ``info`` lists them and announcements carry them."""
        return {
            "uid": self.node_id,
            "name": self.name,
            "version": self.version,
            "num_clients": self.registry.num_clients,
            "num_users": self.registry.num_users,
            "num_channels": self.registry.num_channels,
            "num_subs": self.registry.num_subscriptions,
            "uptime": int(time.time() - self.started_at),
        }

    def _require(self, channel: str, feature: Feature) -> ChannelOptions:
        if not channel:
            raise ClientError(ErrorCode.BAD_REQUEST, "channel required")
        opts = self.policy.resolve(channel)
        self.policy.require(opts, feature)
        return opts


_NOTHING = object()  # what a stream generator that yields nothing gave first


def _name(fn: object) -> str:
    return str(getattr(fn, "__name__", fn))


@dataclasses.dataclass
class Edges:
    """Slots for what the layers above the node plug into it; ``centrifuge_asgi.edges``
    (imported by the package) fills them, each importing its module only when used."""

    prometheus_observer: Callable[[Node], NodeObserver] | None = None
    install_proxies: Callable[[Node], None] | None = None
    build_app: Callable[[Node], Any] | None = None
    start_grpc: Callable[[Node], Awaitable[Any]] | None = None
    run_consumers: Callable[[Node], Awaitable[None]] | None = None
    tracing: Callable[[Node], Tracing] | None = None

    def need(self, slot: str) -> Any:
        fn = getattr(self, slot)
        if fn is None:  # only if centrifuge_asgi.edges was never imported
            raise RuntimeError(f"centrifuge_asgi.edges has not filled Node's {slot!r} slot")
        return fn


EDGES = Edges()
