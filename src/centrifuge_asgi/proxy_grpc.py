"""The gRPC side of backend proxies: ``grpc://host:port`` endpoints.

The hooks build the same request bodies and read the same answers as for HTTP; only the
transport differs. A body becomes Centrifugo's request message of the proxy's kind
(``centrifugal.centrifugo.proxy.CentrifugoProxy``) and the reply message becomes the
JSON answer an HTTP proxy would give: a ``bytes`` payload field travels as its ``b64``
sibling (Centrifugo reads ``b64data`` first, then ``data``; both are checked the same
way), ``meta`` as raw JSON. Any failed call (unreachable, deadline, a status other than
OK) is a :class:`~centrifuge_asgi.errors.ProxyFailure`.

grpcio is an optional extra: this module is imported only when a proxy has a gRPC
endpoint (:func:`~centrifuge_asgi.grpc.runtime.load_grpc` turns its absence into a config
error at node start).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import grpc
import grpc.aio
import msgspec

from .errors import ProxyFailure
from .grpc import proxy_pb2, proxy_pb2_grpc
from .grpc.convert import fill, to_plain
from .grpc.servers import read_pem

if TYPE_CHECKING:
    from .config import ProxyConfig
    from .node import Node

log = logging.getLogger("centrifuge_asgi.proxy")

# proxy kind -> (stub method, request message)
_METHODS: dict[str, tuple[str, Any]] = {
    "connect": ("Connect", proxy_pb2.ConnectRequest),
    "refresh": ("Refresh", proxy_pb2.RefreshRequest),
    "subscribe": ("Subscribe", proxy_pb2.SubscribeRequest),
    "publish": ("Publish", proxy_pb2.PublishRequest),
    "rpc": ("RPC", proxy_pb2.RPCRequest),
    "sub_refresh": ("SubRefresh", proxy_pb2.SubRefreshRequest),
    "shared_poll_refresh": ("SharedPollRefresh", proxy_pb2.SharedPollRefreshRequest),
    "map_publish": ("MapPublish", proxy_pb2.MapPublishRequest),
    "map_remove": ("MapRemove", proxy_pb2.MapRemoveRequest),
}
_RAW_JSON_FIELDS = frozenset({"meta"})  # bytes fields that hold JSON, not a payload


def request_message(kind: str, body: Mapping[str, Any]) -> Any:
    """The request message of ``kind`` carrying ``body`` (keys the message lacks are dropped)."""
    cls: Any = _METHODS[kind][1] if kind != "subscribe_stream" else proxy_pb2.SubscribeRequest
    message = cls()
    fill(message, body)
    return message


def answer_json(message: Any) -> bytes:
    """A reply message as the JSON answer of an HTTP proxy."""
    return msgspec.json.encode(to_plain(message, _RAW_JSON_FIELDS))


def metadata(proxy: ProxyConfig, headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The call's metadata: the forwarded headers, then the per-call credentials."""
    md = list(headers.items())
    creds = proxy.grpc
    if creds.credentials_key:
        md.append((creds.credentials_key.lower(), creds.credentials_value))
    return md


def _target(endpoint: str) -> str:
    return endpoint.removeprefix("grpc://").rstrip("/")


def channel_credentials(proxy: ProxyConfig, path: str = "<proxy>") -> Any:
    """TLS credentials from ``grpc.tls``; PEM values as Centrifugo reads them (the text, a
    file path or base64). A bad value is a ConfigError naming ``path``'s key."""
    tls = proxy.grpc.tls

    def pem(value: str, key: str) -> bytes | None:
        return read_pem(value, f"{path}.grpc.tls.{key}") if value else None

    if tls.insecure_skip_verify:
        log.warning("%s.grpc.tls.insecure_skip_verify is not supported by grpcio", path)
    return grpc.ssl_channel_credentials(
        root_certificates=pem(tls.server_ca_pem, "server_ca_pem"),
        private_key=pem(tls.key_pem, "key_pem"),
        certificate_chain=pem(tls.cert_pem, "cert_pem"),
    )


class GrpcProxyCaller:
    """One ``grpc.aio`` channel per endpoint and TLS setting, closed with the node."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._channels: dict[tuple[Any, ...], Any] = {}

    def _stub(self, proxy: ProxyConfig) -> Any:
        g = proxy.grpc
        key = (proxy.endpoint, g.tls, g.compression)
        channel = self._channels.get(key)
        if channel is None:
            target = _target(proxy.endpoint)
            options: list[tuple[str, Any]] = []
            if g.tls.enabled and g.tls.server_name:
                options.append(("grpc.ssl_target_name_override", g.tls.server_name))
            compression = grpc.Compression.Gzip if g.compression else None
            if g.tls.enabled:
                channel = grpc.aio.secure_channel(
                    target, channel_credentials(proxy), options, compression=compression
                )
            else:
                channel = grpc.aio.insecure_channel(target, options, compression=compression)
            self._channels[key] = channel
            self._node.spawn(self._close_at_shutdown, key, channel)
        stub: Any = proxy_pb2_grpc.CentrifugoProxyStub
        return stub(channel)

    async def _close_at_shutdown(self, key: tuple[Any, ...], channel: Any) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            if self._channels.get(key) is channel:
                del self._channels[key]
            with anyio.CancelScope(shield=True):
                await channel.close(grace=None)

    async def aclose(self) -> None:
        """Close every channel now (the next call opens new ones)."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace=None)

    async def call(
        self, proxy: ProxyConfig, kind: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> bytes:
        """Call the unary method of ``kind``; returns the answer as JSON."""
        method, _ = _METHODS[kind]
        timeout = proxy.timeout if proxy.timeout > 0 else 1.0
        request = request_message(kind, body)
        try:
            with anyio.fail_after(timeout + 1):  # the deadline answers first
                reply = await getattr(self._stub(proxy), method)(
                    request, timeout=timeout, metadata=metadata(proxy, headers)
                )
        except TimeoutError:
            raise ProxyFailure(f"no answer within {timeout:g}s") from None
        except grpc.aio.AioRpcError as exc:
            raise ProxyFailure(_status(exc, timeout)) from None
        return answer_json(reply)

    async def stream(
        self,
        proxy: ProxyConfig,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        publications: AsyncIterator[bytes] | None,
    ) -> AsyncGenerator[tuple[bytes | None, Any], None]:
        """Open a subscription stream: yields ``(subscribe answer JSON, None)`` first, then
        ``(None, Publication)`` messages. ``publications`` (bidirectional) is sent on.

        The first message must come within the proxy timeout; the call is cancelled when
        the iteration stops.
        """
        stub = self._stub(proxy)
        request = request_message("subscribe_stream", body)
        md = metadata(proxy, headers)
        if publications is None:
            call = stub.SubscribeUnidirectional(request, metadata=md)
        else:
            call = stub.SubscribeBidirectional(_requests(request, publications), metadata=md)
        timeout = proxy.timeout if proxy.timeout > 0 else 1.0
        try:
            try:
                with anyio.fail_after(timeout):
                    first = await call.read()
            except TimeoutError:
                raise ProxyFailure(f"no first stream message within {timeout:g}s") from None
            if first is grpc.aio.EOF or not first.HasField("subscribe_response"):
                raise ProxyFailure("the first stream message has no subscribe_response")
            yield answer_json(first.subscribe_response), None
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                if message.HasField("publication"):
                    yield None, message.publication
        except grpc.aio.AioRpcError as exc:
            raise ProxyFailure(_status(exc, timeout)) from None
        finally:
            call.cancel()


async def _requests(first: Any, publications: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    yield proxy_pb2.StreamSubscribeRequest(subscribe_request=first)
    async for data in publications:
        yield proxy_pb2.StreamSubscribeRequest(publication=proxy_pb2.Publication(data=data))


def _status(exc: Any, timeout: float) -> str:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within {timeout:g}s"
    return f"gRPC {code.name}: {exc.details()}"


__all__ = ["GrpcProxyCaller", "answer_json", "channel_credentials", "metadata", "request_message"]
