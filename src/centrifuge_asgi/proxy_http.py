"""The HTTP side of backend proxies (server-api spec §3.2).

Every call is ``POST <endpoint>`` with a JSON body, bounded as a whole by the proxy
``timeout``. The answer is ``{"result"}``, ``{"error"}`` or ``{"disconnect"}`` (checked in
the order disconnect, error, result); a non-200 status is turned into an error or a
disconnect by ``http.status_to_code_transforms``. Anything else (unreachable, timeout,
another status, a body that is not such an object, codes out of range) is a
:class:`ProxyFailure`, which the hooks turn into the documented internal error.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import httpx
import msgspec

from .config import ProxyConfig
from .errors import ClientError, Disconnect, ProxyFailure

if TYPE_CHECKING:
    from .node import Node
    from .proxy_grpc import GrpcProxyCaller

log = logging.getLogger("centrifuge_asgi.proxy")

T = TypeVar("T")

# Headers a forward list must not copy: the request body and framing are ours.
_NOT_FORWARDED = frozenset(
    {"content-type", "content-length", "transfer-encoding", "connection", "host"}
)
_NOT_GRPC_METADATA = frozenset({"te", "user-agent", "keep-alive", "upgrade"})
_MAX_REASON_BYTES = 32


class ErrorBody(msgspec.Struct):
    """``{"error": {...}}`` of a proxy answer."""

    code: int
    message: str = ""
    temporary: bool = False


class DisconnectBody(msgspec.Struct):
    """``{"disconnect": {...}}`` of a proxy answer."""

    code: int
    reason: str = ""


class Envelope(msgspec.Struct, Generic[T]):
    """A decoded proxy answer."""

    result: T | None = None
    error: ErrorBody | None = None
    disconnect: DisconnectBody | None = None

    def settle(self) -> T | None:
        """Raise the backend's disconnect, else its error; return the result otherwise."""
        if self.disconnect is not None:
            raise Disconnect(self.disconnect.code, self.disconnect.reason)
        if self.error is not None:
            err = self.error
            raise ClientError(err.code, err.message, err.temporary)
        return self.result


def decoder(result_type: type[T]) -> msgspec.json.Decoder[Envelope[T]]:
    """A lenient decoder of ``Envelope[result_type]`` (``"123"`` is accepted for 123)."""
    return msgspec.json.Decoder(Envelope[result_type], strict=False)  # type: ignore[valid-type]


def _check_body(env: Envelope[Any]) -> None:
    """Backend codes must be in the documented ranges (spec §3.2)."""
    if env.disconnect is not None:
        code, reason = env.disconnect.code, env.disconnect.reason
        if not 4000 <= code <= 4999:
            raise ProxyFailure(f"disconnect code {code} outside [4000, 4999]")
        if not reason.isascii() or len(reason) > _MAX_REASON_BYTES:
            raise ProxyFailure(f"disconnect reason {reason!r}: at most 32 ASCII characters")
    elif env.error is not None and not 400 <= env.error.code <= 1999:
        raise ProxyFailure(f"error code {env.error.code} outside [400, 1999]")


def b64decode(value: str, what: str) -> bytes:
    """Decode a ``b64*`` field; a malformed one is a :class:`ProxyFailure`."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProxyFailure(f"{what} is not valid base64") from None


def is_grpc(proxy: ProxyConfig) -> bool:
    """Whether the proxy's endpoint is ``grpc://host:port``."""
    return proxy.endpoint.startswith("grpc://")


def build_headers(
    proxy: ProxyConfig,
    transport_headers: Mapping[str, str],
    emulated_headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Static headers, then allowed emulated headers, then allowed transport headers.

    Allow lists match case-insensitively; later sources replace earlier ones. For a gRPC
    proxy these are the call's metadata: ``grpc.static_metadata`` first, and the
    transport headers are allowed by ``http_headers`` and ``grpc_metadata`` (a gRPC
    client's metadata are its headers); reserved gRPC names and non-ASCII values are left
    out, and there is no content-type.
    """
    grpc = is_grpc(proxy)
    static = proxy.grpc.static_metadata if grpc else proxy.http.static_headers
    out: dict[str, str] = {k.lower(): v for k, v in static.items()}
    transport_allow = [*proxy.http_headers, *proxy.grpc_metadata] if grpc else proxy.http_headers
    for allow, source in (
        (proxy.emulated_headers, emulated_headers or {}),
        (transport_allow, transport_headers),
    ):
        if not allow:
            continue
        wanted = {h.lower() for h in allow} - _NOT_FORWARDED
        for name, value in source.items():
            key = name.lower()
            if key in wanted and (not grpc or _metadata_ok(key, value)):
                out[key] = value
    if not grpc:
        out["content-type"] = "application/json"
    return out


def _metadata_ok(key: str, value: str) -> bool:
    reserved = key.startswith(("grpc-", ":")) or key in _NOT_GRPC_METADATA
    return not reserved and not key.endswith("-bin") and value.isascii() and value.isprintable()


class ProxyCaller:
    """Sends proxy requests through one lazily created ``httpx.AsyncClient`` per node.

    The client is closed when the node's lifespan ends (a guard task in the node's task
    group owns it). ``transport`` replaces the network (e.g. ``httpx.ASGITransport``).
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._client: httpx.AsyncClient | None = None
        self._grpc: GrpcProxyCaller | None = None
        self.transport: httpx.AsyncBaseTransport | None = None

    def grpc(self) -> GrpcProxyCaller:
        """The gRPC side (created at first use: grpcio is imported only then)."""
        if self._grpc is None:
            from .proxy_grpc import GrpcProxyCaller

            self._grpc = GrpcProxyCaller(self._node)
        return self._grpc

    def _http(self) -> httpx.AsyncClient:
        client = self._client
        if client is None:
            client = self._client = httpx.AsyncClient(
                transport=self.transport,
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
                trust_env=False,
                follow_redirects=False,
            )
            self._node.spawn(self._close_at_shutdown, client)
        return client

    async def _close_at_shutdown(self, client: httpx.AsyncClient) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            if self._client is client:
                self._client = None
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client and gRPC channels now (the next call opens new ones)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        if self._grpc is not None:
            await self._grpc.aclose()

    async def call(
        self,
        proxy: ProxyConfig,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        decode: msgspec.json.Decoder[Envelope[T]],
        *,
        kind: str,
        check_codes: bool = True,
    ) -> Envelope[T]:
        """Send ``body`` to the ``kind`` proxy and decode its answer (or raise ProxyFailure).

        ``check_codes=False`` skips the range checks of ``error``/``disconnect`` (for the
        refresh hooks, which ignore both). Each call is counted (``centrifugo_proxy_*``)
        and, with tracing, is a span ``centrifugo.proxy.<kind>`` whose context travels in
        the request's ``traceparent`` header (gRPC: metadata).
        """
        node, started = self._node, time.perf_counter()
        protocol = "grpc" if is_grpc(proxy) else "http"
        ok = False
        inflight = (protocol, kind, getattr(proxy, "name", "") or "default")
        node.metrics.count("proxy_inflight_requests", inflight)
        try:
            tracing = node.tracing
            if tracing is None:
                env = await self._call(proxy, body, headers, decode, kind, check_codes)
            else:
                attributes = {"centrifugo.proxy.endpoint": proxy.endpoint}
                with tracing.span(f"centrifugo.proxy.{kind}", attributes, kind="client"):
                    headers = dict(headers)
                    tracing.inject(headers)
                    env = await self._call(proxy, body, headers, decode, kind, check_codes)
            ok = True
            return env
        finally:
            node.metrics.count("proxy_inflight_requests", inflight, -1)
            name = inflight[2]
            node.metrics.proxy_call(protocol, kind, name, time.perf_counter() - started, ok)

    async def _call(
        self,
        proxy: ProxyConfig,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        decode: msgspec.json.Decoder[Envelope[T]],
        kind: str,
        check_codes: bool,
    ) -> Envelope[T]:
        if is_grpc(proxy):
            content = await self.grpc().call(proxy, kind, body, headers)
            return self.decode(content, decode, check_codes=check_codes)
        endpoint = proxy.endpoint
        if not endpoint.startswith(("http://", "https://")):
            raise ProxyFailure(f"unsupported endpoint {endpoint!r} (only http(s) and grpc)")
        timeout = proxy.timeout if proxy.timeout > 0 else 1.0
        content = msgspec.json.encode(body)
        try:
            with anyio.fail_after(timeout):
                response = await self._http().post(
                    endpoint, content=content, headers=dict(headers), timeout=timeout
                )
        except (TimeoutError, httpx.TimeoutException):
            raise ProxyFailure(f"no answer within {timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise ProxyFailure(f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status != 200:
            transformed = _transform(proxy, status)
            if transformed is None:
                raise ProxyFailure(f"unexpected HTTP status {status}")
            return transformed
        return self.decode(response.content, decode, check_codes=check_codes)

    @staticmethod
    def decode(
        content: bytes, decode: msgspec.json.Decoder[Envelope[T]], *, check_codes: bool = True
    ) -> Envelope[T]:
        """A proxy's JSON answer as an Envelope (or raise ProxyFailure)."""
        try:
            env = decode.decode(content)
        except msgspec.MsgspecError as exc:
            raise ProxyFailure(f"bad answer: {exc}") from None
        if check_codes:
            _check_body(env)
        return env


def _transform(proxy: ProxyConfig, status: int) -> Envelope[Any] | None:
    """The error or disconnect configured for a non-200 ``status``, if any."""
    for item in proxy.http.status_to_code_transforms:
        if item.status_code != status:
            continue
        if item.to_error.code:
            err = item.to_error
            return Envelope(error=ErrorBody(err.code, err.message, err.temporary))
        dis = item.to_disconnect
        return Envelope(disconnect=DisconnectBody(dis.code, dis.reason))
    return None


__all__ = [
    "DisconnectBody",
    "Envelope",
    "ErrorBody",
    "ProxyCaller",
    "ProxyFailure",
    "b64decode",
    "build_headers",
    "decoder",
    "is_grpc",
]
