"""The six proxy hooks as node handlers: request bodies and answers (server-api spec §3.3).

Each hook is an ordinary handler (``ConnectEvent`` → ``ConnectReply`` and so on), so the
session runs a proxy exactly as it runs a Python handler. Channel and RPC hooks look up
the namespace first: where the proxy is not enabled they hand the event to the
application's own handler (``fallback``), or answer what the node would without one.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, aclosing
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from msgspec import Raw

from .auth import SubscriptionOverride
from .codes import DisconnectCode, ErrorCode
from .errors import ClientError, Disconnect
from .handlers import (
    ClientRef,
    ConnectEvent,
    ConnectReply,
    MapPublishEvent,
    MapPublishReply,
    MapRemoveEvent,
    MapRemoveReply,
    PublishEvent,
    PublishReply,
    RefreshEvent,
    RefreshReply,
    RPCEvent,
    SharedPollRefreshEvent,
    SharedPollRefreshReply,
    SharedPollResult,
    StreamPublication,
    SubRefreshEvent,
    SubRefreshReply,
    SubscribeEvent,
    SubscribeReply,
    SubscribeStreamEvent,
)
from .payload import to_payload
from .proxy_http import ProxyCaller, ProxyFailure, b64decode, build_headers, decoder, is_grpc

if TYPE_CHECKING:
    from .config import ProxyConfig
    from .host import SessionHost
    from .session import Session

log = logging.getLogger("centrifuge_asgi.proxy")

RETRY_AFTER = 60  # seconds a (sub)refresh waits after the backend failed (Centrifugo's value)


# ----------------------------------------------------------------- answer shapes


class _Flag(msgspec.Struct):
    value: bool = False


class _Override(msgspec.Struct):
    presence: _Flag | None = None
    join_leave: _Flag | None = None
    force_push_join_leave: _Flag | None = None
    force_positioning: _Flag | None = None
    force_recovery: _Flag | None = None

    def convert(self) -> SubscriptionOverride:
        def get(flag: _Flag | None) -> bool | None:
            return None if flag is None else flag.value

        return SubscriptionOverride(
            presence=get(self.presence),
            join_leave=get(self.join_leave),
            force_push_join_leave=get(self.force_push_join_leave),
            force_positioning=get(self.force_positioning),
            force_recovery=get(self.force_recovery),
        )


class _ConnectResult(msgspec.Struct):
    user: str = ""
    expire_at: int = 0
    info: Raw = Raw()
    b64info: str = ""
    data: Raw = Raw()
    b64data: str = ""
    channels: list[str] = []
    subs: dict[str, Raw] = {}
    meta: Raw = Raw()


class _RefreshResult(msgspec.Struct):
    expired: bool = False
    expire_at: int = 0
    info: Raw = Raw()
    b64info: str = ""
    meta: Raw = Raw()


class _SubscribeResult(msgspec.Struct):
    info: Raw = Raw()
    b64info: str = ""
    data: Raw = Raw()
    b64data: str = ""
    override: _Override | None = None
    expire_at: int = 0


class _PublishResult(msgspec.Struct):
    data: Raw = Raw()
    b64data: str = ""
    skip_history: bool = False


class _SubRefreshResult(msgspec.Struct):
    expired: bool = False
    expire_at: int = 0
    info: Raw = Raw()
    b64info: str = ""


class _RPCResult(msgspec.Struct):
    data: Raw = Raw()
    b64data: str = ""


R = TypeVar("R")

_CONNECT = decoder(_ConnectResult)
_REFRESH = decoder(_RefreshResult)
_SUBSCRIBE = decoder(_SubscribeResult)


class _MapPublishResult(msgspec.Struct):
    key: str = ""
    data: Raw = Raw()
    b64data: str = ""
    tags: dict[str, str] = {}
    key_mode: str = ""
    idempotency_key: str = ""
    delta: bool = False
    version: int = 0
    version_epoch: str = ""


class _MapRemoveResult(msgspec.Struct):
    key: str = ""
    tags: dict[str, str] = {}
    idempotency_key: str = ""


_PUBLISH = decoder(_PublishResult)
_MAP_PUBLISH = decoder(_MapPublishResult)
_MAP_REMOVE = decoder(_MapRemoveResult)
_SUB_REFRESH = decoder(_SubRefreshResult)
_RPC = decoder(_RPCResult)


class _SharedPollItem(msgspec.Struct):
    key: str
    data: Raw = Raw(b"")
    b64data: str = ""  # what a gRPC answer's bytes ``data`` becomes (proxy_grpc.py)
    version: int = 0
    removed: bool = False


class _SharedPollResult(msgspec.Struct):
    items: list[_SharedPollItem] = []
    epoch: str = ""


_SHARED_POLL = decoder(_SharedPollResult)


def _payload(raw: Raw, b64: str, what: str, *, json_only: bool) -> bytes | None:
    """A result payload: ``b64*`` when non-empty, else the raw JSON (``None`` if absent)."""
    if b64:
        data = b64decode(b64, f"b64{what}")
        if json_only:
            try:
                msgspec.json.decode(data)
            except (msgspec.DecodeError, RecursionError):
                raise ProxyFailure(f"b64{what} is not JSON (a JSON client needs JSON)") from None
        return data
    data = bytes(raw)
    return None if data in (b"", b"null") else data


def _subscribe_reply(result: _SubscribeResult, json_only: bool) -> SubscribeReply:
    return SubscribeReply(
        info=_payload(result.info, result.b64info, "info", json_only=json_only),
        data=_payload(result.data, result.b64data, "data", json_only=json_only),
        expire_at=result.expire_at or None,
        override=result.override.convert() if result.override is not None else None,
    )


def _meta(raw: Raw) -> Any:
    data = bytes(raw)
    return None if data in (b"", b"null") else msgspec.json.decode(data)


# -------------------------------------------------------------------------- hooks


class ProxyHooks:
    """Handlers that call the configured HTTP proxies (see the module docstring)."""

    def __init__(
        self, node: SessionHost, caller: ProxyCaller, fallback: Callable[[str], Any]
    ) -> None:
        self.node = node
        self.caller = caller
        self.fallback = fallback

    # -- request helpers

    def _session(self, client: ClientRef) -> Session | None:
        found: Session | None = self.node.registry.session(client.client)
        return found

    def _body(
        self, proxy: ProxyConfig, client: ClientRef, session: Session | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "client": client.client,
            "transport": client.transport,
            "protocol": session.codec.name if session is not None else "json",
            "encoding": "binary" if proxy.binary_encoding else "json",
        }
        if client.user:
            body["user"] = client.user
        if proxy.include_connection_meta and session is not None and session.meta is not None:
            body["meta"] = Raw(to_payload(session.meta))
        return body

    @staticmethod
    def _put_data(
        body: dict[str, Any], proxy: ProxyConfig, data: bytes | None, session: Session | None
    ) -> None:
        """``data`` as raw JSON, or as ``b64data`` in binary mode.

        Payloads of binary-protocol clients (and of connects, whose protocol is not known
        here) may not be JSON: without ``binary_encoding`` that is a ProxyFailure.
        """
        if not data:
            return
        if proxy.binary_encoding:
            body["b64data"] = base64.b64encode(data).decode()
            return
        if session is None or session.codec.binary:
            try:
                msgspec.json.decode(data)
            except (msgspec.DecodeError, RecursionError):
                raise ProxyFailure("payload is not JSON: enable binary_encoding") from None
        body["data"] = Raw(data)

    @staticmethod
    def _json_only(session: Session | None) -> bool:
        return session is None or not session.codec.binary

    def _failed(self, kind: str, proxy: ProxyConfig, client: str, exc: ProxyFailure) -> None:
        log.error(
            "%s proxy %s failed for client=%s: %s",
            kind,
            proxy.endpoint,
            client,
            exc,
            extra={"client": client, "method": kind, "code": 100},
        )

    def _channel_proxy(self, kind: str, channel: str) -> ProxyConfig | None:
        """The proxy of ``kind`` for the channel's namespace, or None when not enabled."""
        opts = self.node.config.channel_options(channel)
        if opts is None or not getattr(opts, f"{kind}_proxy_enabled"):
            return None
        proxy = self.node.config.proxy(kind, getattr(opts, f"{kind}_proxy_name"))
        if proxy is None:  # validated at load time; kept for configs built by hand
            raise ClientError.of(ErrorCode.INTERNAL)
        return proxy

    def _request(
        self, proxy: ProxyConfig, client: ClientRef, **fields: Any
    ) -> tuple[Session | None, dict[str, Any], dict[str, str]]:
        """The client's session (None once gone), the request body and the headers."""
        session = self._session(client)
        body = self._body(proxy, client, session)
        body.update(fields)
        return session, body, build_headers(proxy, session.headers if session else {})

    async def _decide(
        self,
        kind: str,
        proxy: ProxyConfig,
        client: ClientRef,
        raw_data: bytes | None,
        decode: Any,
        answer: Callable[[Any, bool], R],
        **fields: Any,
    ) -> R | None:
        """Call a proxy whose error or disconnect answer is the client's.

        Returns ``answer(result, json_only)``, or None when the proxy answered with an
        empty result; a failed call (or an unusable answer) is error 100 for the client.
        """
        session, body, headers = self._request(proxy, client, **fields)
        try:
            self._put_data(body, proxy, raw_data, session)
            env = await self.caller.call(proxy, body, headers, decode, kind=kind)
            result = env.settle()
            return None if result is None else answer(result, self._json_only(session))
        except ProxyFailure as exc:
            self._failed(kind, proxy, client.client, exc)
            raise ClientError.of(ErrorCode.INTERNAL) from None

    # -- connect / refresh

    async def connect(self, event: ConnectEvent) -> ConnectReply:
        """Credentials of a token-less connection from ``client.proxy.connect``."""
        proxy = self.node.config.client.proxy.connect
        ref = ClientRef(event.client, "", event.transport)
        body = self._body(proxy, ref, None)
        body["name"] = event.name
        body["version"] = event.version
        headers = build_headers(proxy, event.headers, event.emulated_headers)
        try:
            self._put_data(body, proxy, event.raw_data, None)
            env = await self.caller.call(proxy, body, headers, _CONNECT, kind="connect")
            result = env.settle()
            if result is None:
                raise Disconnect.of(DisconnectCode.BAD_REQUEST)
            channels = list(dict.fromkeys([*result.channels, *result.subs]))
            return ConnectReply(
                user=result.user,
                info=_payload(result.info, result.b64info, "info", json_only=False),
                data=_payload(result.data, result.b64data, "data", json_only=False),
                channels=channels,
                expire_at=result.expire_at or None,
                meta=_meta(result.meta),
            )
        except ProxyFailure as exc:
            self._failed("connect", proxy, event.client, exc)
            if event.transport.startswith("uni_"):
                raise Disconnect.of(DisconnectCode.SERVER_ERROR) from None
            raise ClientError.of(ErrorCode.INTERNAL) from None

    async def refresh(self, event: RefreshEvent) -> RefreshReply:
        """Extend an expiring connection through ``client.proxy.refresh``."""
        proxy = self.node.config.client.proxy.refresh
        session, body, headers = self._request(proxy, event.client)
        try:
            env = await self.caller.call(
                proxy, body, headers, _REFRESH, kind="refresh", check_codes=False
            )
            result = env.result  # error and disconnect are ignored for refresh
            if result is None or result.expired:
                return RefreshReply(expired=True)
            info = _payload(result.info, result.b64info, "info", json_only=self._json_only(session))
            meta = _meta(result.meta)
        except ProxyFailure as exc:
            self._failed("refresh", proxy, event.client.client, exc)
            return RefreshReply(expire_at=int(time.time()) + RETRY_AFTER)
        if meta is not None and session is not None:
            session.meta = meta
        return RefreshReply(expire_at=result.expire_at or None, info=info)

    # -- channels

    async def subscribe(self, event: SubscribeEvent) -> SubscribeReply | None:
        """The subscribe proxy of the channel's namespace decides (else the fallback)."""
        proxy = self._channel_proxy("subscribe", event.channel)
        if proxy is None:
            handler = self.fallback("subscribe")
            return await handler(event) if handler is not None else None

        reply = await self._decide(
            "subscribe",
            proxy,
            event.client,
            event.raw_data,
            _SUBSCRIBE,
            _subscribe_reply,
            channel=event.channel,
        )
        return reply or SubscribeReply()

    async def subscribe_stream(self, event: SubscribeStreamEvent) -> AsyncIterator[Any]:
        """A subscription stream from the namespace's gRPC proxy (else the app's handler).

        Yields the subscribe reply first, then the stream's publications; a failure
        before the reply is error 100 for the client, one after it ends the subscription.
        """
        proxy = self._channel_proxy("subscribe_stream", event.channel)
        tracing = self.node.tracing
        if proxy is None or not proxy.endpoint:
            handler = self.fallback("subscribe_stream")
            if handler is None:
                raise ClientError.of(ErrorCode.NOT_AVAILABLE)
            async with aclosing(handler(event)) as own:  # traced by node.on_subscribe_stream
                async for item in own:
                    yield item
            return
        session, body, headers = self._request(proxy, event.client, channel=event.channel)
        publications = event.publications if event.bidirectional else None
        try:
            if not is_grpc(proxy):
                raise ProxyFailure("a subscribe stream proxy needs a grpc:// endpoint")
            self._put_data(body, proxy, event.raw_data, session)
            with ExitStack() as span:
                # traced: a span until the backend's subscribe answer (not the stream's
                # whole life), whose context travels in the call's metadata (traceparent)
                if tracing is not None:
                    attributes = {"centrifugo.proxy.endpoint": proxy.endpoint}
                    span.enter_context(
                        tracing.span("centrifugo.proxy.subscribe_stream", attributes, "client")
                    )
                    headers = dict(headers)
                    tracing.inject(headers)
                stream = self.caller.grpc().stream(proxy, body, headers, publications)
                async with aclosing(stream):
                    answer, _ = await anext(stream)
                    if answer is None:  # not produced by stream(); kept for the type
                        raise ProxyFailure("no subscribe answer")
                    result = self.caller.decode(answer, _SUBSCRIBE).settle()
                    json_only = self._json_only(session)
                    span.close()  # the span ends with the answer
                    yield (
                        SubscribeReply() if result is None else _subscribe_reply(result, json_only)
                    )
                    async for _, pub in stream:
                        yield StreamPublication(pub.data, dict(pub.tags) or None)
        except ProxyFailure as exc:
            self._failed("subscribe_stream", proxy, event.client.client, exc)
            raise ClientError.of(ErrorCode.INTERNAL) from None

    async def publish(self, event: PublishEvent) -> PublishReply | None:
        """The publish proxy of the channel's namespace decides alone (else the fallback)."""
        proxy = self._channel_proxy("publish", event.channel)
        if proxy is None:
            handler = self.fallback("publish")
            return await handler(event) if handler is not None else None

        def answer(result: _PublishResult, json_only: bool) -> PublishReply:
            # node.publish checks the data against the channel's publication_data_format
            data = _payload(result.data, result.b64data, "data", json_only=False)
            return PublishReply(data=data, skip_history=result.skip_history)

        reply = await self._decide(
            "publish",
            proxy,
            event.client,
            event.raw_data,
            _PUBLISH,
            answer,
            channel=event.channel,
        )
        return reply or PublishReply()

    def _map_proxy(self, kind: str, channel: str) -> ProxyConfig | None:
        """The ``map.<publish|remove>_proxy`` of the channel's namespace when enabled."""
        opts = self.node.config.channel_options(channel)
        action = kind.removeprefix("map_")
        if opts is None or not getattr(opts.map, f"{action}_proxy_enabled"):
            return None
        proxy = self.node.config.proxy(kind, getattr(opts.map, f"{action}_proxy_name"))
        if proxy is None:
            raise ClientError.of(ErrorCode.NOT_AVAILABLE)
        return proxy

    async def map_publish(self, event: MapPublishEvent) -> MapPublishReply | None:
        """The map publish proxy decides alone (an answer, even empty, approves)."""
        proxy = self._map_proxy("map_publish", event.channel)
        if proxy is None:
            handler = self.fallback("map_publish")
            return await handler(event) if handler is not None else None

        def answer(result: _MapPublishResult, json_only: bool) -> MapPublishReply:
            return MapPublishReply(
                key=result.key,
                data=_payload(result.data, result.b64data, "data", json_only=False),
                tags=result.tags or None,
                key_mode=result.key_mode,
                idempotency_key=result.idempotency_key,
                delta=result.delta,
                version=result.version,
                version_epoch=result.version_epoch,
            )

        reply = await self._decide(
            "map_publish",
            proxy,
            event.client,
            event.raw_data,
            _MAP_PUBLISH,
            answer,
            channel=event.channel,
            key=event.key,
        )
        return reply or MapPublishReply()

    async def map_remove(self, event: MapRemoveEvent) -> MapRemoveReply | None:
        """The map remove proxy decides alone (an answer, even empty, approves)."""
        proxy = self._map_proxy("map_remove", event.channel)
        if proxy is None:
            handler = self.fallback("map_remove")
            return await handler(event) if handler is not None else None

        def answer(result: _MapRemoveResult, json_only: bool) -> MapRemoveReply:
            return MapRemoveReply(
                key=result.key, tags=result.tags or None, idempotency_key=result.idempotency_key
            )

        reply = await self._decide(
            "map_remove",
            proxy,
            event.client,
            None,
            _MAP_REMOVE,
            answer,
            channel=event.channel,
            key=event.key,
        )
        return reply or MapRemoveReply()

    async def sub_refresh(self, event: SubRefreshEvent) -> SubRefreshReply:
        """Extend an expiring subscription through its namespace's sub_refresh proxy."""
        proxy = self._channel_proxy("sub_refresh", event.channel)
        if proxy is None:
            handler = self.fallback("sub_refresh")
            if handler is not None:
                reply: SubRefreshReply = await handler(event)
                return reply
            return SubRefreshReply(expired=True)  # what the node does without a handler
        session, body, headers = self._request(proxy, event.client, channel=event.channel)
        try:
            env = await self.caller.call(
                proxy, body, headers, _SUB_REFRESH, kind="sub_refresh", check_codes=False
            )
            result = env.result  # error and disconnect are ignored for sub_refresh
            if result is None or result.expired:
                return SubRefreshReply(expired=True)
            info = _payload(result.info, result.b64info, "info", json_only=self._json_only(session))
        except ProxyFailure as exc:
            self._failed("sub_refresh", proxy, event.client.client, exc)
            return SubRefreshReply(expire_at=int(time.time()) + RETRY_AFTER)
        sub = session.sub(event.channel) if session is not None else None
        if sub is not None and info is not None:
            sub.chan_info = info
        return SubRefreshReply(expire_at=result.expire_at or None)

    async def shared_poll_refresh(self, event: SharedPollRefreshEvent) -> SharedPollRefreshReply:
        """The current data of tracked keys from the namespace's shared_poll_refresh proxy
        (else the application's handler). A failure or an error answer raises: the poll
        cycle of these keys is skipped (Centrifugo retries at the next interval)."""
        opts = self.node.config.channel_options(event.channel)
        name = opts.shared_poll.proxy_name if opts is not None else "default"
        proxy = self.node.config.proxy("shared_poll_refresh", name or "default")
        if proxy is None or not proxy.endpoint:
            handler = self.fallback("shared_poll_refresh")
            if handler is None:
                raise ClientError.of(ErrorCode.NOT_AVAILABLE)
            reply: SharedPollRefreshReply = await handler(event)
            return reply
        items = [
            {"key": i.key, "version": i.version} if i.version else {"key": i.key}
            for i in event.items
        ]
        body = {"channel": event.channel, "items": items}
        headers = build_headers(proxy, {})
        env = await self.caller.call(proxy, body, headers, _SHARED_POLL, kind="shared_poll_refresh")
        result = env.settle()
        if result is None:
            return SharedPollRefreshReply()
        out = []
        for item in result.items:
            data = b64decode(item.b64data, "b64data") if item.b64data else bytes(item.data)
            out.append(
                SharedPollResult(
                    key=item.key,
                    data=None if data in (b"", b"null") else Raw(data),
                    version=item.version,
                    removed=item.removed,
                )
            )
        return SharedPollRefreshReply(items=out, epoch=result.epoch)

    # -- rpc

    async def rpc(self, event: RPCEvent) -> Any:
        """Resolve the RPC namespace (spec §2.8.9) and call its proxy with the whole method."""
        config = self.node.config
        options = config.rpc_options(event.method)
        if options is None or not options.proxy_enabled:
            handler = self.fallback("rpc_fallback")
            if handler is not None:
                return await handler(event)
            code = ErrorCode.METHOD_NOT_FOUND if options is None else ErrorCode.NOT_AVAILABLE
            raise ClientError.of(code)
        proxy = config.proxy("rpc", options.proxy_name)
        if proxy is None:  # validated at load time; kept for configs built by hand
            raise ClientError.of(ErrorCode.INTERNAL)

        def answer(result: _RPCResult, json_only: bool) -> bytes | None:
            return _payload(result.data, result.b64data, "data", json_only=json_only)

        return await self._decide(
            "rpc", proxy, event.client, event.raw_data, _RPC, answer, method=event.method
        )


__all__ = ["RETRY_AFTER", "ProxyHooks"]
