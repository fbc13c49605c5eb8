"""A NATS broker (nats-py, the ``nats`` extra): fan-out between nodes over NATS subjects.

Configured with ``broker.enabled: true`` and ``broker.type: "nats"`` (``broker.nats.*``);
presence comes from the engine's presence manager (``engine.type`` or
``presence_manager.*``). Subjects: ``P.client.<ch>`` for publications, join and leave,
``P.control`` for every node and ``P.node.<id>`` for one node.

Guarantees that change compared with the Redis engine (as in Centrifugo):

* no history: ``history`` and ``remove_history`` raise ``ClientError(108)`` ("not
  available"), publishes return an empty stream position, so there is no recovery,
  positioning, idempotency key or version check; delivery is at most once;
* presence is only as shared as the presence manager: with the memory one every node
  sees only its own clients, so pair NATS with ``presence_manager.type: redis`` when
  presence must span nodes;
* a subscribe returns after a round trip to the NATS server (PING/PONG), so no message
  published after it is missed; while NATS is unreachable subscribes and publishes fail
  with :class:`~centrifuge_asgi.errors.EngineUnavailable`.

Channels containing ``*`` or ``>`` are rejected unless ``allow_wildcards`` is on; a
wildcard subscription delivers every matching subject to the wildcard channel.
``raw_mode`` exchanges bare payloads with other NATS publishers on
``<raw_mode.prefix><channel>`` (with ``channel_replacements`` applied).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from ..codes import ErrorCode
from ..config import NatsConfig
from ..errors import ClientError, EngineError, EngineUnavailable
from .base import (
    BrokerEventHandler,
    Capabilities,
    ClientInfo,
    ControlEventHandler,
    HistoryFilter,
    HistoryResult,
    Publication,
    PublishOptions,
    PublishResult,
)
from .redis_codec import decode_event, encode_publication, frame_join, frame_leave

try:
    import nats
    import nats.errors
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the NATS broker needs nats-py: pip install 'centrifuge-asgi[nats]'") from exc

__all__ = ["NatsBroker"]

log = logging.getLogger("centrifuge_asgi.engines.nats")

PENDING_MSGS = 4096  # per subscription; beyond it NATS drops (at most once), as Centrifugo
PENDING_BYTES = 16 * 1024 * 1024


@dataclass(slots=True)
class _ChannelLock:
    """A per-channel lock plus the number of tasks holding or waiting for it."""

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0


def _tls_context(cfg: NatsConfig) -> ssl.SSLContext | None:
    if not cfg.tls.enabled:
        return None
    context = ssl.create_default_context(cadata=cfg.tls.server_ca_pem or None)
    if cfg.tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class NatsBroker:
    """A :class:`~centrifuge_asgi.engines.base.Broker` over NATS core PUB/SUB (no history),
    and the node's :class:`~centrifuge_asgi.engines.base.Controller`."""

    capabilities = Capabilities()

    def __init__(self, cfg: NatsConfig | None = None) -> None:
        self.cfg = cfg or NatsConfig()
        self.prefix = self.cfg.prefix
        self.node_id = ""
        self._nc: NatsClient | None = None
        self._handler: BrokerEventHandler | None = None
        self._control: ControlEventHandler | None = None
        self._subs: dict[str, Subscription] = {}
        self._locks: dict[str, _ChannelLock] = {}
        self.malformed = 0

    @classmethod
    def from_config(cls, cfg: NatsConfig) -> NatsBroker:
        return cls(cfg)

    # ------------------------------------------------------------- names

    def _subject(self, channel: str) -> str:
        raw = self.cfg.raw_mode
        if raw.enabled:
            for old, new in raw.channel_replacements.items():
                channel = channel.replace(old, new)
            return raw.prefix + channel
        return f"{self.prefix}.client.{channel}"

    @property
    def control_subject(self) -> str:
        return f"{self.prefix}.control"

    def node_subject(self, node_id: str) -> str:
        return f"{self.prefix}.node.{node_id}"

    # ------------------------------------------------------------- lifecycle

    def register_control_handler(self, handler: ControlEventHandler, node_id: str) -> None:
        """Before :meth:`start`: control messages go to ``handler``; ``P.node.<node_id>``
        addresses this node."""
        self._control = handler
        self.node_id = node_id

    async def start(self, handler: BrokerEventHandler) -> None:
        """Connect (within ``dial_timeout``) and listen on control and this node's subject."""
        self.node_id = self.node_id or str(uuid.uuid4())
        self._handler = handler
        try:
            with anyio.fail_after(self.cfg.dial_timeout + self.cfg.write_timeout):
                self._nc = await nats.connect(
                    servers=[u.strip() for u in self.cfg.url.split(",")],
                    connect_timeout=max(1, int(self.cfg.dial_timeout)),
                    reconnect_time_wait=0.25,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    tls=_tls_context(self.cfg),
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    name=f"centrifuge-asgi {self.node_id}",
                )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise EngineUnavailable(f"nats {self.cfg.url}: {exc!r}") from exc
        nc = self._nc
        await nc.subscribe(self.control_subject, cb=self._on_control)
        await nc.subscribe(self.node_subject(self.node_id), cb=self._on_control)
        await self._flush()

    async def close(self) -> None:
        """Close the connection; idempotent."""
        self._handler = None
        nc, self._nc = self._nc, None
        self._subs.clear()
        if nc is not None and not nc.is_closed:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await nc.close()

    async def _on_error(self, exc: Exception) -> None:
        log.warning("nats error: %r", exc)

    async def _on_disconnected(self) -> None:
        log.warning("nats disconnected; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("nats reconnected (subscriptions restored by the client)")

    def _client(self) -> NatsClient:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise EngineUnavailable(f"nats {self.cfg.url} is not connected")
        return nc

    async def _flush(self) -> None:
        """Return once the server has processed every command sent so far.

        nats-py's ``flush`` writes its PING straight to the socket, ahead of commands its
        flusher task has not written yet (the SUB of a subscribe just made), so its PONG
        alone does not prove the server saw them: a message published right after could
        miss the subscription. The queued commands are written first.
        """
        nc = self._client()
        timeout = max(1, int(self.cfg.write_timeout))
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            write_queued = getattr(nc, "_flush_pending", None)  # nats-py's own queue flush
            if write_queued is not None:
                # nats-py swallows CancelledError, so neither a deadline nor a cancel scope
                # can be told from a completed flush by how the call ends: check the clock
                # and this task's cancellation count instead.
                loop = asyncio.get_running_loop()
                started = loop.time()
                await asyncio.wait_for(write_queued(force_flush=True), timeout)
                if task is not None and task.cancelling() > cancels:
                    # one meant for this task was swallowed: an anyio scope re-delivers
                    # its own at a checkpoint; anything left is a native cancellation
                    await anyio.lowlevel.checkpoint()
                    raise asyncio.CancelledError
                if loop.time() - started >= timeout:
                    raise EngineUnavailable("nats: queued commands not written in time")
            await nc.flush(timeout=timeout)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise EngineUnavailable(f"nats flush failed: {exc!r}") from exc

    # ------------------------------------------------------------- incoming

    async def _on_control(self, msg: Msg) -> None:
        if self._handler is not None and self._control is not None:
            self._control.handle_control(msg.data)

    def _deliver(self, channel: str, data: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        if self.cfg.raw_mode.enabled:
            handler.handle_publication(channel, Publication(data, time=int(time.time() * 1000)), "")
            return
        try:
            event = decode_event(data)
        except Exception as exc:
            self.malformed += 1
            log.warning("malformed nats data on %s ignored: %s", channel, exc)
            return
        if event.publication is not None:
            handler.handle_publication(channel, event.publication, "")
        elif event.join is not None:
            handler.handle_join(channel, event.join)
        elif event.leave is not None:
            handler.handle_leave(channel, event.leave)

    # ------------------------------------------------------------- subscriptions

    def _check_channel(self, channel: str) -> None:
        if not self.cfg.allow_wildcards and ("*" in channel or ">" in channel):
            raise ClientError(ErrorCode.BAD_REQUEST, "wildcard channels are not allowed")

    @contextlib.asynccontextmanager
    async def _channel_lock(self, channel: str) -> AsyncIterator[None]:
        """Serialise subscribe/unsubscribe of one channel.

        The lock is reference-counted and leaves ``_locks`` only when no task holds or
        waits for it; dropping it earlier would let a newcomer create a second lock for
        the same channel and subscribe alongside a waiter of the first (a leaked NATS
        subscription and duplicate deliveries).
        """
        entry = self._locks.get(channel)
        if entry is None:
            entry = self._locks[channel] = _ChannelLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[channel]

    async def subscribe(self, channel: str) -> None:
        """Subscribe the channel's subject; returns after the server has registered it."""
        self._check_channel(channel)
        async with self._channel_lock(channel):
            if channel not in self._subs:

                async def on_message(msg: Msg) -> None:
                    self._deliver(channel, msg.data)

                try:
                    self._subs[channel] = await self._client().subscribe(
                        self._subject(channel),
                        cb=on_message,
                        pending_msgs_limit=PENDING_MSGS,
                        pending_bytes_limit=PENDING_BYTES,
                    )
                except nats.errors.Error as exc:
                    raise EngineError(f"nats subscribe {channel}: {exc!r}") from exc
            await self._flush()

    async def unsubscribe(self, channel: str) -> None:
        async with self._channel_lock(channel):
            sub = self._subs.pop(channel, None)
            if sub is not None and self._nc is not None and not self._nc.is_closed:
                try:
                    await sub.unsubscribe()
                except nats.errors.Error as exc:
                    log.warning("nats unsubscribe %s: %r", channel, exc)

    # ------------------------------------------------------------- publishing

    async def _publish(self, subject: str, data: bytes) -> None:
        try:
            await self._client().publish(subject, data)
        except nats.errors.Error as exc:
            raise EngineUnavailable(f"nats publish to {subject}: {exc!r}") from exc

    async def publish(self, channel: str, data: bytes, opts: PublishOptions) -> PublishResult:
        """Broadcast without history: the position is always empty."""
        self._check_channel(channel)
        if self.cfg.raw_mode.enabled:
            await self._publish(self._subject(channel), data)
        else:
            now = int(time.time() * 1000)
            payload = encode_publication(data, opts.client_info, opts.tags, now)
            await self._publish(self._subject(channel), payload)
        return PublishResult()

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        if not self.cfg.raw_mode.enabled:
            await self._publish(self._subject(channel), frame_join(info))

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        if not self.cfg.raw_mode.enabled:
            await self._publish(self._subject(channel), frame_leave(info))

    async def publish_control(self, data: bytes, node_id: str = "") -> bool:
        """To every node over ``P.control`` or to one over ``P.node.<id>``; always True
        once published (NATS cannot tell whether anybody listens)."""
        subject = self.node_subject(node_id) if node_id else self.control_subject
        await self._publish(subject, data)
        return True

    # ------------------------------------------------------------- history

    async def history(
        self, channel: str, flt: HistoryFilter, meta_ttl: float = 0.0
    ) -> HistoryResult:
        """NATS keeps no history: always ``ClientError(108)``."""
        raise ClientError.of(ErrorCode.NOT_AVAILABLE)

    async def remove_history(self, channel: str) -> None:
        raise ClientError.of(ErrorCode.NOT_AVAILABLE)

    def stats(self) -> dict[str, Any]:
        return {"subscriptions": len(self._subs), "malformed": self.malformed}
