"""The server API executor: one coroutine per method over the node's in-process API.

Results are plain dicts ready for ``msgspec.json.encode``; payloads are embedded as
``msgspec.Raw`` so they are re-emitted byte for byte. Failures raise :class:`ApiError`
with the server API's own codes and messages (spec §1.3), never a client-protocol code.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import msgspec
from msgspec import Raw

from . import api_schema as s
from .auth import SubscriptionOverride
from .codes import DisconnectCode
from .engines.base import ClientInfo, Publication, StreamPosition
from .errors import ClientError, EngineError
from .pacing import Pacer
from .payload import ParsedJson

if TYPE_CHECKING:
    from .node import Node
    from .observer import Tracing

log = logging.getLogger("centrifuge_asgi.api")

API_MESSAGES: Final = {
    100: "internal server error",
    102: "unknown channel",
    104: "not found",
    107: "bad request",
    108: "not available",
    112: "unrecoverable position",
    113: "conflict",
}
HTTP_STATUS: Final = {100: 500, 102: 404, 104: 404, 107: 400, 108: 400, 112: 416, 113: 409}
"""HTTP status of each code in the ``transport`` error mode (others: 500)."""

INTERNAL, UNKNOWN_CHANNEL, NOT_FOUND, BAD_REQUEST = 100, 102, 104, 107
MAX_CONCURRENCY: Final = 1024  # in-flight commands of a parallel batch or a broadcast
MIN_DISCONNECT_CODE, MAX_DISCONNECT_CODE = 3000, 4999  # what a disconnect may carry
MAX_REASON_BYTES: Final = 123  # a WebSocket close reason (125-byte payload minus the code)

_validator = msgspec.json.Decoder(Raw)
T = TypeVar("T")


class ApiError(Exception):
    """A server API error: ``{"code": …, "message": …}``."""

    def __init__(self, code: int) -> None:
        self.code = code if code in API_MESSAGES else INTERNAL
        self.message = API_MESSAGES[self.code]
        super().__init__(f"{self.code}: {self.message}")

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(BAD_REQUEST) from None


def _valid_json(data: bytes) -> bool:
    try:
        _validator.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


def client_info_json(info: ClientInfo, *, any_bytes: bool = False) -> dict[str, Any]:
    """``ClientInfo``: ``user`` and ``client`` always; info fields only when valid JSON
    (any bytes with ``any_bytes``: gRPC carries them as bytes)."""
    out: dict[str, Any] = {"user": info.user, "client": info.client}
    if info.conn_info and (any_bytes or _valid_json(info.conn_info)):
        out["conn_info"] = Raw(info.conn_info)
    if info.chan_info and (any_bytes or _valid_json(info.chan_info)):
        out["chan_info"] = Raw(info.chan_info)
    return out


def publication_json(pub: Publication, *, any_bytes: bool = False) -> dict[str, Any]:
    """A history publication; binary data (not JSON) cannot be shown in JSON and answers
    100 (unless ``any_bytes``: gRPC carries it as bytes)."""
    if not any_bytes and not _valid_json(pub.data):
        raise ApiError(INTERNAL)
    out: dict[str, Any] = {"data": Raw(pub.data)}
    if pub.offset:
        out["offset"] = pub.offset
    if pub.tags:
        out["tags"] = pub.tags
    if pub.info is not None:
        out["info"] = client_info_json(pub.info, any_bytes=any_bytes)
    return out


Handler = Callable[[Any], Awaitable[dict[str, Any]]]


class Executor:
    """Runs decoded API requests against a node.

    ``any_bytes``: results carry payloads (history data, client info) whatever their
    bytes, for an edge whose wire has a bytes type (gRPC); JSON needs them to be JSON.
    ``protocol`` names the edge in spans (``http``, ``grpc``, ``admin``).
    """

    def __init__(self, node: Node, *, any_bytes: bool = False, protocol: str = "") -> None:
        self.node = node
        self.any_bytes = any_bytes
        self.protocol = protocol or ("grpc" if any_bytes else "http")
        self._handlers: dict[str, Handler] = {
            "publish": self.publish,
            "broadcast": self.broadcast,
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "disconnect": self.disconnect,
            "history": self.history,
            "history_remove": self.history_remove,
            "presence": self.presence,
            "presence_stats": self.presence_stats,
            "info": self.info,
            "rpc": self.rpc,
            "refresh": self.refresh,
            "channels": self.channels,
            "map_publish": self.map_publish,
            "map_remove": self.map_remove,
            "map_read_state": self.map_read_state,
            "map_read_stream": self.map_read_stream,
            "map_stats": self.map_stats,
            "map_clear": self.map_clear,
            "shared_poll_publish": self.shared_poll_publish,
        }

    async def call(self, method: str, req: Any) -> dict[str, Any]:
        """Run one command; every failure becomes an :class:`ApiError`."""
        tracing = self.node.tracing
        if tracing is not None and tracing.api:
            return await self._traced_call(tracing, method, req)
        return await self._call(method, req)

    async def _traced_call(self, tracing: Tracing, method: str, req: Any) -> dict[str, Any]:
        """``call`` in a span ``centrifugo.api.<method>`` (``opentelemetry.api``), with
        ``centrifugo.channel`` or ``centrifugo.num_channels`` as Centrifugo sets them."""
        attributes: dict[str, Any] = {
            "centrifugo.api.protocol": self.protocol,
            "service.instance.id": self.node.node_id,
        }
        channel = getattr(req, "channel", "")
        if channel:
            attributes["centrifugo.channel"] = channel
        channels = getattr(req, "channels", None)
        if isinstance(channels, list):
            attributes["centrifugo.num_channels"] = len(channels)
        with tracing.span(f"centrifugo.api.{method}", attributes, kind="server"):
            return await self._call(method, req)

    async def _call(self, method: str, req: Any) -> dict[str, Any]:
        handler = self._handlers.get(method)
        if handler is None:
            raise ApiError(NOT_FOUND)
        try:
            return await handler(req)
        except ApiError:
            raise
        except ClientError as exc:
            raise ApiError(exc.code) from exc
        except EngineError as exc:
            log.error("api %s failed: %s", method, exc, extra={"method": method, "code": 100})
            raise ApiError(INTERNAL) from exc
        except Exception as exc:
            log.exception("api %s failed", method, extra={"method": method, "code": 100})
            raise ApiError(INTERNAL) from exc

    async def batch(self, batch: s.BatchRequest) -> list[dict[str, Any]]:
        """Every command of a batch: ``{method: result}`` or ``{"error": …}`` each (a
        command with no method key: 104; a null command: 107)."""
        replies: list[dict[str, Any]] = [{} for _ in batch.commands]

        async def one(i: int, command: s.BatchCommand | None) -> None:
            found = command.method() if command is not None else None
            if found is None:
                code = NOT_FOUND if command is not None else BAD_REQUEST
                replies[i] = {"error": ApiError(code).as_dict()}
                return
            name, req = found
            try:
                replies[i] = {name: await self.call(name, req)}
            except ApiError as exc:
                replies[i] = {"error": exc.as_dict()}

        await run_all(one, batch.commands, parallel=batch.parallel, pacer=self.node.pacer)
        return replies

    async def legacy(self, command: s.LegacyCommand) -> dict[str, Any]:
        """One ``{"id", "method", "params"}`` command of the legacy ``/api`` (or of the
        admin page): ``{"id"?, "result"}`` or ``{"id"?, "error"}`` (104: unknown method,
        107: params that do not decode), counted in the metrics under the protocol."""
        reply: dict[str, Any] = {"id": command.id} if command.id else {}
        method = s.legacy_method(command.method)
        started = time.perf_counter()
        error = ""
        try:
            if method is None:
                raise ApiError(NOT_FOUND)
            params = bytes(command.params)
            try:
                req = msgspec.json.decode(
                    b"{}" if params in (b"", b"null") else params, type=s.REQUEST_TYPES[method]
                )
            except (msgspec.DecodeError, RecursionError):
                raise ApiError(BAD_REQUEST) from None
            reply["result"] = await self.call(method, req)
        except ApiError as exc:
            reply["error"] = exc.as_dict()
            error = str(exc.code)
        took = time.perf_counter() - started
        self.node.metrics.api_call(method or "unknown", took, error, self.protocol)
        return reply

    # ------------------------------------------------------------------ publishing

    def _payload(self, data: Raw, b64data: str) -> tuple[bytes, bool]:
        """The payload and whether it came from ``b64data`` (binary, kept verbatim)."""
        if b64data:
            return _b64(b64data), True
        return bytes(data), False

    async def _publish_one(
        self, channel: str, payload: bytes, binary: bool, req: s.PublishRequest
    ) -> dict[str, Any]:
        if not channel:
            raise ApiError(BAD_REQUEST)
        try:
            # node.publish checks the data against the channel's publication_data_format;
            # ``data`` (not ``b64data``) was parsed with the request body already
            res = await self.node.publish(
                channel,
                payload if binary else ParsedJson(payload),
                idempotency_key=req.idempotency_key,
                skip_history=req.skip_history,
                tags=req.tags or None,
                version=req.version,
                version_epoch=req.version_epoch,
                delta=req.delta,
            )
        except ClientError as exc:
            raise ApiError(exc.code) from exc
        out: dict[str, Any] = {}
        if res.offset:
            out["offset"] = res.offset
        if res.epoch:
            out["epoch"] = res.epoch
        return out

    async def publish(self, req: s.PublishRequest) -> dict[str, Any]:
        payload, binary = self._payload(req.data, req.b64data)
        return await self._publish_one(req.channel, payload, binary, req)

    async def broadcast(self, req: s.BroadcastRequest) -> dict[str, Any]:
        if not req.channels:
            raise ApiError(BAD_REQUEST)
        payload, binary = self._payload(req.data, req.b64data)
        if not payload and self.node.config.channel.publication_data_format != "binary":
            raise ApiError(BAD_REQUEST)
        single = s.PublishRequest(
            skip_history=req.skip_history,
            tags=req.tags,
            idempotency_key=req.idempotency_key,
            version=req.version,
            version_epoch=req.version_epoch,
            delta=req.delta,
        )
        responses: list[dict[str, Any]] = [{} for _ in req.channels]

        async def one(i: int, channel: str) -> None:
            try:
                responses[i] = {"result": await self._publish_one(channel, payload, binary, single)}
            except ApiError as exc:
                responses[i] = {"error": exc.as_dict()}
            except Exception:
                log.exception("broadcast into %s failed", channel, extra={"method": "broadcast"})
                responses[i] = {"error": ApiError(INTERNAL).as_dict()}

        await run_all(one, req.channels, pacer=self.node.pacer)
        return {"responses": responses}

    # ------------------------------------------------------- connection management

    async def subscribe(self, req: s.SubscribeRequest) -> dict[str, Any]:
        if not req.channel:
            raise ApiError(BAD_REQUEST)
        info = _b64(req.b64info) if req.b64info else bytes(req.info) or None
        data = _b64(req.b64data) if req.b64data else bytes(req.data) or None
        override = None
        if req.override is not None:
            override = SubscriptionOverride(
                **{
                    name: value.value
                    for name in (
                        "presence",
                        "join_leave",
                        "force_push_join_leave",
                        "force_positioning",
                        "force_recovery",
                    )
                    if (value := getattr(req.override, name)) is not None
                }
            )
        since = None
        if req.recover_since is not None:
            since = StreamPosition(req.recover_since.offset, req.recover_since.epoch)
        await self.node.subscribe(
            req.user,
            req.channel,
            client=req.client,
            session=req.session,
            info=Raw(info) if info else None,
            data=Raw(data) if data else None,
            expire_at=req.expire_at or None,
            override=override,
            recover_since=since,
        )
        return {}

    async def unsubscribe(self, req: s.UnsubscribeRequest) -> dict[str, Any]:
        if req.channel:
            self.node.policy.resolve(req.channel)
        await self.node.unsubscribe(req.user, req.channel, client=req.client, session=req.session)
        return {}

    async def disconnect(self, req: s.DisconnectRequest) -> dict[str, Any]:
        code, reason = int(DisconnectCode.FORCE_DISCONNECT), "force disconnect"
        if req.disconnect is not None:
            code, reason = req.disconnect.code, req.disconnect.reason
            # a close frame carries a 3000-4999 code and at most 123 bytes of reason
            if not MIN_DISCONNECT_CODE <= code <= MAX_DISCONNECT_CODE:
                raise ApiError(BAD_REQUEST)
            if len(reason.encode()) > MAX_REASON_BYTES:
                raise ApiError(BAD_REQUEST)
        await self.node.disconnect(
            req.user,
            client=req.client,
            session=req.session,
            code=code,
            reason=reason,
            whitelist=req.whitelist,
        )
        return {}

    async def refresh(self, req: s.RefreshRequest) -> dict[str, Any]:
        await self.node.refresh(
            req.user,
            client=req.client,
            session=req.session,
            expire_at=req.expire_at or None,
            expired=req.expired,
            info=bytes(req.info) or None,
        )
        return {}

    # ------------------------------------------------------------ channel state

    async def presence(self, req: s.ChannelRequest) -> dict[str, Any]:
        if not req.channel:
            raise ApiError(BAD_REQUEST)
        clients = await self.node.presence(req.channel)
        return {
            "presence": {
                cid: client_info_json(info, any_bytes=self.any_bytes)
                for cid, info in clients.items()
            }
        }

    async def presence_stats(self, req: s.ChannelRequest) -> dict[str, Any]:
        if not req.channel:
            raise ApiError(BAD_REQUEST)
        stats = await self.node.presence_stats(req.channel)
        return {"num_clients": stats.num_clients, "num_users": stats.num_users}

    async def history(self, req: s.HistoryRequest) -> dict[str, Any]:
        if not req.channel or req.limit < -1:
            raise ApiError(BAD_REQUEST)
        since = StreamPosition(req.since.offset, req.since.epoch) if req.since else None
        try:
            page = await self.node.history(
                req.channel, limit=req.limit, since=since, reverse=req.reverse
            )
        except ClientError as exc:
            # reverse from offset 0 is a bad request for the core, 100 for the server API
            raise ApiError(INTERNAL if exc.code == BAD_REQUEST else exc.code) from exc
        return {
            "publications": [
                publication_json(p, any_bytes=self.any_bytes) for p in page.publications
            ],
            "offset": page.offset,
            "epoch": page.epoch,
        }

    async def history_remove(self, req: s.ChannelRequest) -> dict[str, Any]:
        if not req.channel:
            raise ApiError(BAD_REQUEST)
        await self.node.history_remove(req.channel)
        return {}

    async def channels(self, req: s.ChannelsRequest) -> dict[str, Any]:
        found = await self.node.cluster_channels(req.pattern)
        return {"channels": {ch: {"num_clients": n} for ch, n in found.items()}}

    async def info(self, req: s.InfoRequest) -> dict[str, Any]:
        nodes = (await self.node.cluster_info())["nodes"]  # uptime omitted when 0 (omitempty)
        return {"nodes": [{k: v for k, v in n.items() if k != "uptime" or v} for n in nodes]}

    async def rpc(self, req: s.RpcRequest) -> dict[str, Any]:
        """No server-API RPC extensions exist (as in Centrifugo OSS): 107 or 104."""
        started = time.perf_counter()
        try:
            raise ApiError(BAD_REQUEST if not req.method else NOT_FOUND)
        finally:
            labels = ("grpc" if self.any_bytes else "http", req.method)
            took = time.perf_counter() - started
            self.node.metrics.observe("api_rpc_duration_seconds", labels, took)

    # ------------------------------------------------------------ map channels

    def _map_channel(self, channel: str) -> None:
        """An empty channel is 107, an unknown namespace 102, a non-map namespace 107."""
        if not channel:
            raise ApiError(BAD_REQUEST)
        self.node.map_options(channel)

    def map_entry_json(self, pub: Publication) -> dict[str, Any]:
        """A ``MapEntry``: key, data (not for a removal), tags, offset, removed, time."""
        out: dict[str, Any] = {"key": pub.key}
        if pub.data or not pub.removed:
            out["data"] = publication_json(pub, any_bytes=self.any_bytes)["data"]
        if pub.tags:
            out["tags"] = pub.tags
        if pub.offset:
            out["offset"] = pub.offset
        if pub.removed:
            out["removed"] = True
        if pub.time:
            out["time"] = pub.time
        return out

    @staticmethod
    def _update_json(res: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if res.position.offset:
            out["offset"] = res.position.offset
        if res.position.epoch:
            out["epoch"] = res.position.epoch
        if res.suppressed:
            out["suppressed"] = True
            out["suppress_reason"] = res.suppress_reason
        return out

    async def map_publish(self, req: s.MapPublishRequest) -> dict[str, Any]:
        if not req.channel or not req.key or req.key_mode not in ("", "if_new", "if_exists"):
            raise ApiError(BAD_REQUEST)
        self._map_channel(req.channel)
        payload, binary = self._payload(req.data, req.b64data)
        res = await self.node.map_publish(
            req.channel,
            req.key,
            payload if binary else ParsedJson(payload),
            tags=req.tags or None,
            key_mode=req.key_mode,
            idempotency_key=req.idempotency_key,
            version=req.version,
            version_epoch=req.version_epoch,
            delta=req.delta,
        )
        return self._update_json(res)

    async def shared_poll_publish(self, req: s.SharedPollPublishRequest) -> dict[str, Any]:
        payload, binary = self._payload(req.data, req.b64data)
        data = payload if binary else ParsedJson(payload)
        await self.node.shared_poll_publish(
            req.channel, req.key, data, req.version, epoch=req.epoch
        )
        return {}

    async def map_remove(self, req: s.MapRemoveRequest) -> dict[str, Any]:
        if not req.channel or not req.key:
            raise ApiError(BAD_REQUEST)
        self._map_channel(req.channel)
        res = await self.node.map_remove(req.channel, req.key, idempotency_key=req.idempotency_key)
        return self._update_json(res)

    async def map_read_state(self, req: s.MapReadStateRequest) -> dict[str, Any]:
        self._map_channel(req.channel)
        revision = None
        if req.revision_offset or req.revision_epoch:
            revision = StreamPosition(req.revision_offset, req.revision_epoch)
        page = await self.node.map_read_state(
            req.channel, cursor=req.cursor, limit=req.limit, key=req.key, revision=revision
        )
        out: dict[str, Any] = {
            "entries": [self.map_entry_json(p) for p in page.publications],
            "offset": page.position.offset,
            "epoch": page.position.epoch,
        }
        if page.cursor:
            out["cursor"] = page.cursor
        return out

    async def map_read_stream(self, req: s.MapReadStreamRequest) -> dict[str, Any]:
        self._map_channel(req.channel)
        since = None
        if req.since_offset or req.since_epoch:
            since = StreamPosition(req.since_offset, req.since_epoch)
        try:
            hist = await self.node.map_read_stream(
                req.channel, limit=req.limit, since=since, reverse=req.reverse
            )
        except ClientError as exc:  # reverse from offset 0 (107 for the core)
            raise ApiError(INTERNAL if exc.code == BAD_REQUEST else exc.code) from exc
        return {
            "entries": [self.map_entry_json(p) for p in hist.publications],
            "offset": hist.position.offset,
            "epoch": hist.position.epoch,
        }

    async def map_stats(self, req: s.ChannelRequest) -> dict[str, Any]:
        self._map_channel(req.channel)
        return {"num_keys": await self.node.map_stats(req.channel)}

    async def map_clear(self, req: s.ChannelRequest) -> dict[str, Any]:
        self._map_channel(req.channel)
        await self.node.map_clear(req.channel)
        return {}


async def run_all(
    fn: Callable[[int, T], Awaitable[None]],
    items: Sequence[T],
    parallel: bool = True,
    *,
    pacer: Pacer,
) -> None:
    """``fn(i, item)`` for every item: concurrently (at most :data:`MAX_CONCURRENCY` at
    once) or one by one; ``pacer`` keeps a long run from holding the event loop."""
    numbered = enumerate(items)

    async def worker() -> None:
        for i, item in numbered:  # one iterator shared by every worker
            await fn(i, item)
            await pacer.tick()

    if not parallel or len(items) < 2:
        await worker()
        return
    async with anyio.create_task_group() as tg:
        for _ in range(min(MAX_CONCURRENCY, len(items))):
            tg.start_soon(worker)
