"""Backend proxies over HTTP (server-api spec §3), installed as the node's handlers.

:func:`install` (called by ``Node.__init__``) binds a hook for every kind of proxy the
configuration enables. Handlers the application registers later for the same hook are
kept as fallbacks, with this precedence:

* ``connect`` and ``refresh``: an enabled ``client.proxy.<kind>`` decides; a Python
  ``on_connecting`` / ``on_refresh`` handler is never called (a warning is logged).
* ``subscribe``, ``publish``, ``sub_refresh``: the proxy decides in namespaces with
  ``<kind>_proxy_enabled``; the Python handler (if any) serves the other namespaces.
  So do ``map_publish`` and ``map_remove`` (``map.publish_proxy_enabled``,
  ``map.remove_proxy_enabled``; HTTP or gRPC proxies).
* ``rpc``: ``on_rpc("method")`` handlers first, then the proxy of the method's RPC
  namespace when enabled, then the ``on_rpc()`` fallback, then 104 (unknown RPC
  namespace) or 108 (proxy not enabled there).

* ``shared_poll_refresh``: the proxy named by a shared_poll namespace's
  ``shared_poll.proxy_name`` (HTTP or gRPC); where it has no endpoint, the application's
  ``on_shared_poll_refresh`` handler answers.
* ``subscribe_stream``: the gRPC proxy of a ``subscribe_stream_proxy_enabled`` namespace
  opens the stream; where that namespace's proxy has no endpoint, the application's
  ``on_subscribe_stream`` generator does.

Proxies with a ``grpc://`` endpoint call Centrifugo's gRPC proxy service (proxy_grpc.py);
grpcio is imported only then, and its absence is a :class:`~centrifuge_asgi.errors.ConfigError`.
Without any proxy configured nothing is installed (and httpx is not imported).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from .handlers import Handlers

if TYPE_CHECKING:
    import httpx

    from .config import Config, ProxyConfig
    from .node import Node
    from .proxy_http import ProxyCaller

log = logging.getLogger("centrifuge_asgi.proxy")

_CHANNEL_KINDS = ("subscribe", "publish", "sub_refresh")
_ALWAYS_PROXIED = ("connecting", "refresh")  # the proxy replaces the Python handler


class _RoutedHandlers(Handlers):
    """Handlers whose proxied hooks stay bound to the proxy hooks.

    Assigning one of those hooks (what ``Node.on_*`` decorators do) stores the
    application's handler as the fallback instead of replacing the proxy.
    """

    __slots__ = ("_app", "_routes", "caller")
    _app: dict[str, Any]
    _routes: dict[str, Any]
    caller: ProxyCaller

    def __init__(self, base: Handlers, routes: dict[str, Any], caller: ProxyCaller) -> None:
        object.__setattr__(self, "_routes", {})
        object.__setattr__(self, "_app", {})
        object.__setattr__(self, "caller", caller)
        super().__init__(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
        for name, hook in routes.items():
            self._app[name] = getattr(base, name)  # an earlier handler becomes the fallback
            self._routes[name] = hook
            object.__setattr__(self, name, hook)

    def __setattr__(self, name: str, value: Any) -> None:
        routes: dict[str, Any] = object.__getattribute__(self, "_routes")
        if name not in routes:
            object.__setattr__(self, name, value)
            return
        self._app[name] = value
        if value is not None and name in _ALWAYS_PROXIED:
            kind = "connect" if name == "connecting" else name
            log.warning("client.proxy.%s is enabled: the on_%s handler is not used", kind, name)

    def app_handler(self, name: str) -> Any:
        """The application's own handler for a proxied hook (None when it has none)."""
        return self._app.get(name)


def proxied_hooks(config: Config) -> list[str]:
    """Names of the :class:`~centrifuge_asgi.handlers.Handlers` hooks a proxy serves."""
    hooks: list[str] = []
    client = config.client.proxy
    if client.connect.enabled:
        hooks.append("connecting")
    if client.refresh.enabled:
        hooks.append("refresh")
    channel = config.channel
    scopes = [channel.without_namespace, *channel.namespaces]
    for kind in _CHANNEL_KINDS:
        if any(getattr(opts, f"{kind}_proxy_enabled") for opts in scopes):
            hooks.append(kind)
    rpc = config.rpc
    if rpc.without_namespace.proxy_enabled or any(ns.proxy_enabled for ns in rpc.namespaces):
        hooks.append("rpc_fallback")
    for opts in scopes:
        if opts.subscription_type == "shared_poll":
            proxy = config.proxy("shared_poll_refresh", opts.shared_poll.proxy_name)
            if proxy is not None and proxy.endpoint:
                hooks.append("shared_poll_refresh")
                break
    if any(opts.map.publish_proxy_enabled for opts in scopes):
        hooks.append("map_publish")
    if any(opts.map.remove_proxy_enabled for opts in scopes):
        hooks.append("map_remove")
    for opts in scopes:
        if opts.subscribe_stream_proxy_enabled:
            proxy = config.proxy("subscribe_stream", opts.subscribe_stream_proxy_name)
            if proxy is not None and proxy.endpoint:
                hooks.append("subscribe_stream")
                break
    return hooks


def install(node: Node) -> None:
    """Bind the hooks of every proxy ``node.config`` enables (nothing when there is none)."""
    hooks = proxied_hooks(node.config)
    if not hooks:
        return
    from .proxy_hooks import ProxyHooks  # imported here: nodes without proxies skip httpx
    from .proxy_http import ProxyCaller

    _check_proxies(node.config)
    caller = ProxyCaller(node)
    table: _RoutedHandlers | None = None

    def fallback(name: str) -> Any:
        return table.app_handler(name) if table is not None else None

    impl = ProxyHooks(node, caller, fallback)
    methods = {
        "connecting": impl.connect,
        "refresh": impl.refresh,
        "subscribe": impl.subscribe,
        "publish": impl.publish,
        "sub_refresh": impl.sub_refresh,
        "rpc_fallback": impl.rpc,
        "subscribe_stream": impl.subscribe_stream,
        "shared_poll_refresh": impl.shared_poll_refresh,
        "map_publish": impl.map_publish,
        "map_remove": impl.map_remove,
    }
    table = _RoutedHandlers(node.handlers, {name: methods[name] for name in hooks}, caller)
    node.handlers = table


def use_transport(node: Node, transport: httpx.AsyncBaseTransport) -> None:
    """Send ``node``'s proxy requests through ``transport`` (tests: ``httpx.ASGITransport``).

    Call it before the first proxy request; it does nothing when no proxy is enabled.
    """
    caller = _caller(node)
    if caller is not None:
        caller.transport = transport


async def aclose(node: Node) -> None:
    """Close ``node``'s proxy HTTP client now (the node's lifespan end does it too)."""
    caller = _caller(node)
    if caller is not None:
        await caller.aclose()


def _caller(node: Node) -> ProxyCaller | None:
    table = node.handlers
    return table.caller if isinstance(table, _RoutedHandlers) else None


def _check_proxies(config: Config) -> None:
    """grpcio must be installed for a gRPC endpoint, and its TLS values must load (both
    ConfigError naming the key); HTTP TLS options are not applied."""
    proxies: list[tuple[str, ProxyConfig]] = [
        ("client.proxy.connect", config.client.proxy.connect),
        ("client.proxy.refresh", config.client.proxy.refresh),
        *(
            (f"channel.proxy.{k}", getattr(config.channel.proxy, k))
            for k in (*_CHANNEL_KINDS, "subscribe_stream", "shared_poll_refresh")
        ),
        ("rpc.proxy", config.rpc.proxy),
        *((f"proxies[{p.name}]", p) for p in config.proxies),
    ]
    for path, proxy in proxies:
        if proxy.endpoint.startswith("grpc://"):
            from .grpc.runtime import load_grpc

            load_grpc(f"{path}.endpoint")
            if proxy.grpc.tls.enabled:
                from .proxy_grpc import channel_credentials

                channel_credentials(proxy, path)
        if proxy.http.tls.enabled:
            log.warning("%s.http.tls is not supported: system CA certificates are used", path)


__all__ = ["aclose", "install", "proxied_hooks", "use_transport"]
