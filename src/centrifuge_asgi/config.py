"""Typed configuration with the nested key names of Centrifugo v6.

Every struct field is named exactly like its v6 key (``client.ping_interval``,
``channel.namespaces[].history_ttl``, ...). Load a config with :func:`load_config`
(file + ``CENTRIFUGO_*`` env + overrides) or :meth:`Config.from_dict`; both apply the
Centrifugo loading rules (zero means default, unknown keys only warn, fatal validation).

Durations are ``float`` seconds in Python. In *mappings* (files, env, ``from_dict``)
they follow Centrifugo: a Go duration string (``"25s"``, ``"1m30s"``) or a
:class:`datetime.timedelta`; a bare number is **nanoseconds** (spec §2.8.2). Keyword
arguments given directly to a struct are already seconds and are stored unchanged.

All structs are frozen. ``Config(...)`` validates itself on construction (raising
:class:`~centrifuge_asgi.errors.ConfigError`); zero-means-default applies only to
loading from mappings. Warnings of a load are logged on the ``centrifuge_asgi.config``
logger and kept in :attr:`Config.warnings`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import timedelta
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import msgspec

from .errors import ConfigError

__all__ = [
    "BrokerConfig",
    "BrokerRedisConfig",
    "ChannelConfig",
    "ChannelOptions",
    "ChannelProxyConfig",
    "ClientConfig",
    "ClientProxyConfig",
    "Config",
    "ConnectCodeToDisconnect",
    "ConnectCodeToHttpResponse",
    "Duration",
    "EmulationConfig",
    "EnabledProxyConfig",
    "EngineConfig",
    "EngineRedisConfig",
    "GrpcApiConfig",
    "HealthConfig",
    "HttpApiConfig",
    "HttpServerConfig",
    "HttpStatusTransform",
    "HttpStreamConfig",
    "InitConfig",
    "LogConfig",
    "NamedProxy",
    "NamespaceConfig",
    "NatsConfig",
    "NatsRawModeConfig",
    "PersonalChannelConfig",
    "PresenceManagerConfig",
    "PresenceRedisConfig",
    "PrometheusConfig",
    "ProxyConfig",
    "ProxyGrpcConfig",
    "ProxyHttpConfig",
    "RedisConfig",
    "RpcConfig",
    "RpcNamespaceConfig",
    "RpcOptions",
    "RpcPingConfig",
    "ShutdownConfig",
    "SseConfig",
    "SubscriptionTokenConfig",
    "TLSConfig",
    "TokenConfig",
    "UniGrpcConfig",
    "UniHttpStreamConfig",
    "UniSseConfig",
    "UniWebSocketConfig",
    "WebSocketConfig",
    "apply_env",
    "format_duration",
    "load_config",
    "parse_duration",
]

#: A duration field: float seconds (the marker lets the loader parse Go strings).
Duration = Annotated[float, msgspec.Meta(extra={"duration": True})]

MIB = 1024 * 1024

# --------------------------------------------------------------------------- durations

_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC greek mu (Go accepts both)
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_COMPONENT = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_MAX_NS = 2**63 - 1


def _parse_go_duration(text: str) -> int:
    """Parse Go ``time.ParseDuration`` syntax into integer nanoseconds."""
    s = text.strip()
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ConfigError(f"invalid duration {text!r}")
    total, pos = Fraction(0), 0
    while pos < len(s):
        match = _COMPONENT.match(s, pos)
        if match is None:
            raise ConfigError(f"invalid duration {text!r} (use Go syntax: 500ms, 25s, 1m30s, 720h)")
        whole, dot, fraction = match.group(1).partition(".")
        whole = whole.lstrip("0")
        if len(whole) > 20:  # past any int64 of nanoseconds (and int() takes 4300 digits at most)
            raise ConfigError(f"duration {text!r} is out of range")
        # as in Go, digits of a fraction past the precision of nanoseconds change nothing
        total += Fraction((whole or "0") + dot + fraction[:30]) * _UNIT_NS[match.group(2)]
        pos = match.end()
    ns = int(total)
    if ns > _MAX_NS:
        raise ConfigError(f"duration {text!r} is out of range")
    return sign * ns


def parse_duration(value: object) -> float:
    """Return seconds for a Go duration string, a timedelta, or a number of **nanoseconds**.

    Raises :class:`ConfigError` for anything else (booleans, ``"1d"``, ``"-1"``, ...).
    """
    if isinstance(value, str):
        return _parse_go_duration(value) / 1e9
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        if abs(round(seconds * 1e9)) > _MAX_NS:  # what format_duration could not write back
            raise ConfigError(f"duration {value!r} is out of range")
        return seconds
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"invalid duration {value!r} (expected a string like '25s')")
    if not math.isfinite(value) or abs(value) > _MAX_NS:
        raise ConfigError(f"duration {value!r} is out of range")
    return int(value) / 1e9


def _format_fraction(value: int, digits: int) -> str:
    whole, frac = divmod(value, 10**digits)
    text = str(frac).rjust(digits, "0").rstrip("0")
    return f"{whole}.{text}" if text else str(whole)


def format_duration(seconds: float) -> str:
    """Render seconds like Go's ``Duration.String()`` (``"25s"``, ``"1m30s"``, ``"720h0m0s"``)."""
    ns = round(seconds * 1e9)
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_format_fraction(ns, 3)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_format_fraction(ns, 6)}ms"
    whole, frac = divmod(ns, 1_000_000_000)
    secs = _format_fraction((whole % 60) * 10**9 + frac, 9)
    minutes, hours = (whole // 60) % 60, whole // 3600
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


# --------------------------------------------------------------------------- structs


class _Struct(msgspec.Struct, kw_only=True, frozen=True):
    """Base of every config struct: keyword-only, frozen, v6 key names."""


class TLSConfig(_Struct, frozen=True):
    """A TLS object (``http_server.tls``, ``engine.redis.tls``, ...)."""

    enabled: bool = False
    cert_pem: str = ""
    key_pem: str = ""
    server_ca_pem: str = ""
    client_ca_pem: str = ""
    insecure_skip_verify: bool = False
    server_name: str = ""


class HttpServerConfig(_Struct, frozen=True):
    """``http_server.*``; an empty internal address/port falls back to the main ones."""

    address: str = ""
    port: int = 8000
    internal_address: str = ""
    internal_port: str = ""  # a string in v6; a number in a file is accepted
    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)
    tls_external: bool = False
    internal_tls: TLSConfig = msgspec.field(default_factory=TLSConfig)
    h2c_external: bool = False
    # centrifuge-asgi extensions: Centrifugo hard-codes Go's ReadHeaderTimeout (10 s) and
    # ReadTimeout (30 s). Headers and the pending cap are enforced by ``serve`` and
    # ``server.run``; the body timeout by every endpoint that reads a body, embedded too.
    read_header_timeout: Duration = 10.0
    read_timeout: Duration = 30.0
    max_pending_connections: int = 0  # 0: a quarter of the open-file limit, at most 1024
    # centrifuge-asgi extension: ``serve`` processes on the port (Go uses every core)
    workers: int = 1


class ShutdownConfig(_Struct, frozen=True):
    """``shutdown.*``: how long ``serve`` (and ``server.run``) may take to stop."""

    timeout: Duration = 30.0


class LogConfig(_Struct, frozen=True):
    """``log.*``; ``level`` is lower-cased, an unknown level warns and becomes ``info``."""

    level: str = "info"
    file: str = ""
    json: bool = False  # centrifuge-asgi extension: JSON log lines


class TokenConfig(_Struct, frozen=True):
    """``client.token`` (and, inlined, ``client.subscription_token``) of Centrifugo v6."""

    hmac_secret_key: str = ""
    hmac_previous_secret_key: str = ""
    hmac_previous_secret_key_valid_until: int = 0
    rsa_public_key: str = ""
    ecdsa_public_key: str = ""
    jwks_public_endpoint: str = ""
    audience: str = ""
    audience_regex: str = ""
    issuer: str = ""
    issuer_regex: str = ""
    user_id_claim: str = ""
    insecure_skip_jwks_endpoint_safety_check: bool = False


class SubscriptionTokenConfig(TokenConfig, frozen=True):
    """``client.subscription_token``: when enabled, used for subscription JWTs."""

    enabled: bool = False


class TransformError(_Struct, frozen=True):
    """``to_error`` target of an HTTP status transform."""

    code: int = 0
    message: str = ""
    temporary: bool = False


class TransformDisconnect(_Struct, frozen=True):
    """``to_disconnect`` target of an HTTP status transform."""

    code: int = 0
    reason: str = ""


class HttpStatusTransform(_Struct, frozen=True):
    """One ``http.status_to_code_transforms`` item (exactly one target is set)."""

    status_code: int = 0
    to_error: TransformError = msgspec.field(default_factory=TransformError)
    to_disconnect: TransformDisconnect = msgspec.field(default_factory=TransformDisconnect)


class ProxyHttpConfig(_Struct, frozen=True):
    """``<proxy>.http.*``."""

    static_headers: dict[str, str] = {}
    status_to_code_transforms: list[HttpStatusTransform] = []
    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)


class ProxyGrpcConfig(_Struct, frozen=True):
    """``<proxy>.grpc.*`` (parsed, gRPC proxies are not implemented)."""

    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)
    credentials_key: str = ""
    credentials_value: str = ""
    compression: bool = False
    static_metadata: dict[str, str] = {}


class ProxyConfig(_Struct, frozen=True):
    """The v6 proxy object (§2.8.7)."""

    endpoint: str = ""
    timeout: Duration = 1.0
    http_headers: list[str] = []
    emulated_headers: list[str] = []
    grpc_metadata: list[str] = []
    binary_encoding: bool = False
    include_connection_meta: bool = False
    http: ProxyHttpConfig = msgspec.field(default_factory=ProxyHttpConfig)
    grpc: ProxyGrpcConfig = msgspec.field(default_factory=ProxyGrpcConfig)


class EnabledProxyConfig(ProxyConfig, frozen=True):
    """``client.proxy.connect`` / ``client.proxy.refresh``: a proxy object plus ``enabled``."""

    enabled: bool = False


class NamedProxy(ProxyConfig, frozen=True):
    """One top-level ``proxies[]`` item."""

    name: str = ""


class ClientProxyConfig(_Struct, frozen=True):
    """``client.proxy.*``."""

    connect: EnabledProxyConfig = msgspec.field(default_factory=EnabledProxyConfig)
    refresh: EnabledProxyConfig = msgspec.field(default_factory=EnabledProxyConfig)


class PersonalChannelConfig(_Struct, frozen=True):
    """``client.subscribe_to_user_personal_channel.*``."""

    enabled: bool = False
    personal_channel_namespace: str = ""
    single_connection: bool = False


class DisconnectTarget(_Struct, frozen=True):
    """``to`` of a connect-code-to-disconnect transform."""

    code: int = 0
    reason: str = ""


class ConnectCodeTransform(_Struct, frozen=True):
    """One ``client.connect_code_to_unidirectional_disconnect.transforms[]`` item."""

    code: int = 0
    to: DisconnectTarget = msgspec.field(default_factory=DisconnectTarget)


class ConnectCodeToDisconnect(_Struct, frozen=True):
    """``client.connect_code_to_unidirectional_disconnect``."""

    enabled: bool = False
    transforms: list[ConnectCodeTransform] = []


class RateLimitBucket(_Struct, frozen=True):
    """One token bucket: ``rate`` operations per ``interval``."""

    interval: Duration = 0.0
    rate: int = 0


class RateLimitBuckets(_Struct, frozen=True):
    """The buckets of one operation (all of them must have a token)."""

    enabled: bool = False
    buckets: list[RateLimitBucket] = []


class NamespaceRateLimit(RateLimitBuckets, frozen=True):
    """``namespace_overrides[]``: buckets that replace the operation's for a namespace."""

    namespace_name: str = ""


class RpcMethodRateLimit(RateLimitBuckets, frozen=True):
    """``rpc.method_overrides[]``: buckets that replace the rpc ones for one method."""

    method: str = ""


class ChannelRateLimit(RateLimitBuckets, frozen=True):
    """A channel operation's buckets, with per-namespace replacements."""

    namespace_overrides: list[NamespaceRateLimit] = []


class RpcRateLimit(RateLimitBuckets, frozen=True):
    """The rpc buckets, with per-method replacements."""

    method_overrides: list[RpcMethodRateLimit] = []


class CommandRateLimit(_Struct, frozen=True):
    """``client.rate_limit.client_command.*``: per-connection operation rate limits
    (Centrifugo PRO semantics; Centrifugo OSS has none)."""

    enabled: bool = False
    total: RateLimitBuckets = msgspec.field(default_factory=RateLimitBuckets)
    default: RateLimitBuckets = msgspec.field(default_factory=RateLimitBuckets)
    subscribe: ChannelRateLimit = msgspec.field(default_factory=ChannelRateLimit)
    unsubscribe: ChannelRateLimit = msgspec.field(default_factory=ChannelRateLimit)
    publish: ChannelRateLimit = msgspec.field(default_factory=ChannelRateLimit)
    history: ChannelRateLimit = msgspec.field(default_factory=ChannelRateLimit)
    presence: ChannelRateLimit = msgspec.field(default_factory=ChannelRateLimit)
    presence_stats: ChannelRateLimit = msgspec.field(default_factory=ChannelRateLimit)
    sub_refresh: ChannelRateLimit = msgspec.field(default_factory=ChannelRateLimit)
    refresh: RateLimitBuckets = msgspec.field(default_factory=RateLimitBuckets)
    rpc: RpcRateLimit = msgspec.field(default_factory=RpcRateLimit)


class UserCommandRateLimit(CommandRateLimit, frozen=True):
    """``client.rate_limit.user_command.*``: the same per user ID, and ``connect``."""

    connect: RateLimitBuckets = msgspec.field(default_factory=RateLimitBuckets)


class ClientRateLimitConfig(_Struct, frozen=True):
    """``client.rate_limit.*`` (the in-memory limits of Centrifugo PRO)."""

    client_command: CommandRateLimit = msgspec.field(default_factory=CommandRateLimit)
    user_command: UserCommandRateLimit = msgspec.field(default_factory=UserCommandRateLimit)


class ClientConfig(_Struct, frozen=True):
    """``client.*``: authentication, limits and timing of real-time connections."""

    token: TokenConfig = msgspec.field(default_factory=TokenConfig)
    subscription_token: SubscriptionTokenConfig = msgspec.field(
        default_factory=SubscriptionTokenConfig
    )
    proxy: ClientProxyConfig = msgspec.field(default_factory=ClientProxyConfig)
    allowed_origins: list[str] = []
    allow_anonymous_connect_without_token: bool = False
    disallow_anonymous_connection_tokens: bool = False
    insecure: bool = False
    insecure_skip_token_signature_verify: bool = False
    user_id_http_header: str = ""
    ping_interval: Duration = 25.0
    pong_timeout: Duration = 8.0
    expired_close_delay: Duration = 25.0
    expired_sub_close_delay: Duration = 25.0
    stale_close_delay: Duration = 10.0
    channel_limit: int = 128
    queue_max_size: int = MIB
    presence_update_interval: Duration = 27.0
    concurrency: int = 0
    channel_position_check_delay: Duration = 40.0
    channel_position_max_time_lag: Duration = 0.0
    connection_limit: int = 0
    connection_rate_limit: int = 0
    user_connection_limit: int = 0
    connect_include_server_time: bool = False
    history_max_publication_limit: int = 300
    recovery_max_publication_limit: int = 300
    subscribe_to_user_personal_channel: PersonalChannelConfig = msgspec.field(
        default_factory=PersonalChannelConfig
    )
    connect_code_to_unidirectional_disconnect: ConnectCodeToDisconnect = msgspec.field(
        default_factory=ConnectCodeToDisconnect
    )
    rate_limit: ClientRateLimitConfig = msgspec.field(default_factory=ClientRateLimitConfig)


class MapOptions(_Struct, frozen=True):
    """``map.*`` of a namespace: map subscriptions (Centrifugo v6.8+, experimental)."""

    mode: str = ""  # ephemeral | recoverable | persistent (required for map types)
    key_ttl: Duration = 0.0
    stream_size: int = 0  # 0: 100 for recoverable/persistent
    stream_ttl: Duration = 0.0  # 0: 1m for recoverable/persistent
    meta_ttl: Duration = 0.0
    remove_client_on_unsubscribe: bool = False
    client_key: str = ""  # "", client_id or user_id
    allow_publish_for_client: bool = False
    allow_publish_for_subscriber: bool = False
    allow_publish_for_anonymous: bool = False
    allow_remove_for_client: bool = False
    allow_remove_for_subscriber: bool = False
    allow_remove_for_anonymous: bool = False
    publish_proxy_enabled: bool = False
    publish_proxy_name: str = "default"
    remove_proxy_enabled: bool = False
    remove_proxy_name: str = "default"
    default_page_size: int = 0  # 0: 100
    min_page_size: int = 0  # 0: 100
    max_page_size: int = 0  # 0: 1000
    live_transition_max_publication_limit: int = 0  # 0: max page size
    subscribe_catch_up_timeout: Duration = 0.0  # 0: 5s

    @property
    def has_stream(self) -> bool:
        return self.mode in ("recoverable", "persistent")


MAP_SUBSCRIPTION_TYPES = ("map", "map_clients", "map_users")


class SharedPollOptions(_Struct, frozen=True):
    """``shared_poll.*`` of a namespace: shared poll (Centrifugo v6.8+, experimental)."""

    proxy_name: str = "default"  # "" or default: channel.proxy.shared_poll_refresh
    refresh_interval: Duration = 10.0
    refresh_batch_size: int = 1000
    max_keys_per_connection: int = 5000
    mode: str = ""  # "" (versionless), versionless or versioned
    channel_shutdown_delay: Duration = 1.0
    track_expired_extra_delay: Duration = 25.0
    publish_enabled: bool = False

    @property
    def versioned(self) -> bool:
        return self.mode == "versioned"


class ChannelOptions(_Struct, frozen=True, dict=True):
    """Options of one channel namespace (or of ``channel.without_namespace``), spec §2.3."""

    presence: bool = False
    join_leave: bool = False
    force_push_join_leave: bool = False
    history_size: int = 0
    history_ttl: Duration = 0.0
    history_meta_ttl: Duration = 0.0  # 0 inherits channel.history_meta_ttl
    force_positioning: bool = False
    allow_positioning: bool = False
    force_recovery: bool = False
    allow_recovery: bool = False
    force_recovery_mode: str = ""  # "", "stream" or "cache"
    auto_cache_recover: bool = False
    allowed_delta_types: list[str] = []
    delta_publish: bool = False
    allow_subscribe_for_client: bool = False
    allow_subscribe_for_anonymous: bool = False
    allow_publish_for_subscriber: bool = False
    allow_publish_for_client: bool = False
    allow_publish_for_anonymous: bool = False
    allow_presence_for_subscriber: bool = False
    allow_presence_for_client: bool = False
    allow_presence_for_anonymous: bool = False
    allow_history_for_subscriber: bool = False
    allow_history_for_client: bool = False
    allow_history_for_anonymous: bool = False
    allow_user_limited_channels: bool = False
    channel_regex: str = ""
    publication_data_format: str = ""  # "", "json", "json_object" or "binary"
    allow_tags_filter: bool = False
    subscribe_proxy_enabled: bool = False
    subscribe_proxy_name: str = "default"
    publish_proxy_enabled: bool = False
    publish_proxy_name: str = "default"
    sub_refresh_proxy_enabled: bool = False
    sub_refresh_proxy_name: str = "default"
    subscribe_stream_proxy_enabled: bool = False
    subscribe_stream_proxy_name: str = "default"
    subscribe_stream_proxy_bidirectional: bool = False
    subscription_type: str = ""  # "" or stream, map, map_clients, map_users, shared_poll
    map: MapOptions = msgspec.field(default_factory=MapOptions)
    map_clients_presence_channel_prefix: str = ""
    map_users_presence_channel_prefix: str = ""
    client_publish_debounce_interval: Duration = 0.0  # SDKs debounce client publishes
    shared_poll: SharedPollOptions = msgspec.field(default_factory=SharedPollOptions)

    @property
    def is_map(self) -> bool:
        """A map, map_clients or map_users namespace."""
        return self.subscription_type in MAP_SUBSCRIPTION_TYPES

    @property
    def history_enabled(self) -> bool:
        """History is kept only when both ``history_size`` and ``history_ttl`` are > 0."""
        return self.history_size > 0 and self.history_ttl > 0

    @functools.cached_property
    def compiled_channel_regex(self) -> re.Pattern[str] | None:
        """``channel_regex`` compiled; match the part after ``ns:`` with ``.search()``."""
        return re.compile(self.channel_regex) if self.channel_regex else None


class NamespaceConfig(ChannelOptions, frozen=True):
    """One ``channel.namespaces[]`` item: channel options plus a ``name``."""

    name: str = ""


class ChannelProxyConfig(_Struct, frozen=True):
    """``channel.proxy.*``: the proxies selected by the name ``default``."""

    subscribe: ProxyConfig = msgspec.field(default_factory=ProxyConfig)
    publish: ProxyConfig = msgspec.field(default_factory=ProxyConfig)
    sub_refresh: ProxyConfig = msgspec.field(default_factory=ProxyConfig)
    subscribe_stream: ProxyConfig = msgspec.field(default_factory=ProxyConfig)
    shared_poll_refresh: ProxyConfig = msgspec.field(default_factory=ProxyConfig)
    map_publish: ProxyConfig = msgspec.field(default_factory=ProxyConfig)
    map_remove: ProxyConfig = msgspec.field(default_factory=ProxyConfig)


class ChannelConfig(_Struct, frozen=True):
    """``channel.*``."""

    without_namespace: ChannelOptions = msgspec.field(default_factory=ChannelOptions)
    namespaces: list[NamespaceConfig] = []
    history_meta_ttl: Duration = 720 * 3600.0
    max_length: int = 255
    private_prefix: str = "$"
    namespace_boundary: str = ":"
    user_boundary: str = "#"
    user_separator: str = ","
    publication_data_format: str = ""
    proxy: ChannelProxyConfig = msgspec.field(default_factory=ChannelProxyConfig)


class RpcOptions(_Struct, frozen=True):
    """``rpc.without_namespace`` (and the body of ``rpc.namespaces[]``)."""

    proxy_enabled: bool = False
    proxy_name: str = "default"


class RpcNamespaceConfig(RpcOptions, frozen=True):
    """One ``rpc.namespaces[]`` item."""

    name: str = ""


class RpcPingConfig(_Struct, frozen=True):
    """``rpc.ping.*``: a built-in RPC answering an empty result."""

    enabled: bool = False
    method: str = "ping"


class RpcConfig(_Struct, frozen=True):
    """``rpc.*``."""

    proxy: ProxyConfig = msgspec.field(default_factory=ProxyConfig)
    without_namespace: RpcOptions = msgspec.field(default_factory=RpcOptions)
    namespaces: list[RpcNamespaceConfig] = []
    namespace_boundary: str = ":"
    ping: RpcPingConfig = msgspec.field(default_factory=RpcPingConfig)


class HttpApiConfig(_Struct, frozen=True):
    """``http_api.*``: the server HTTP API (on by default)."""

    disabled: bool = False
    handler_prefix: str = "/api"
    key: str = ""
    insecure: bool = False
    external: bool = False
    error_mode: str = ""  # "" or "transport"
    max_body_size: int = MIB  # centrifuge-asgi extension: request body cap in bytes


class GrpcApiConfig(_Struct, frozen=True):
    """``grpc_api.*``: the server API over gRPC on its own port (needs the grpc extra)."""

    enabled: bool = False
    error_mode: str = ""  # "" (errors in the reply) or "transport" (gRPC status codes)
    address: str = ""
    port: int = 10000
    key: str = ""  # checked from the ``authorization: apikey <key>`` metadata when set
    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)
    reflection: bool = False
    max_receive_message_size: int = 0  # 0: gRPC's default (4 MiB)


class UniGrpcConfig(_Struct, frozen=True):
    """``uni_grpc.*``: the unidirectional gRPC transport (needs the grpc extra)."""

    enabled: bool = False
    address: str = ""
    port: int = 11000
    max_receive_message_size: int = 0
    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)


class _WebSocketOptions(_Struct, frozen=True):
    message_size_limit: int = 65536
    decompressed_message_size_limit: int = 0  # 0 means 10 x message_size_limit
    compression: bool = False
    compression_level: int = 1
    compression_min_size: int = 0
    read_buffer_size: int = 0
    write_buffer_size: int = 0
    use_write_buffer_pool: bool = False
    write_timeout: Duration = 1.0


class WebSocketConfig(_WebSocketOptions, frozen=True):
    """``websocket.*`` (on by default; the switch is ``disabled``)."""

    disabled: bool = False
    handler_prefix: str = "/connection/websocket"


class UniWebSocketConfig(_WebSocketOptions, frozen=True):
    """``uni_websocket.*``."""

    enabled: bool = False
    handler_prefix: str = "/connection/uni_websocket"
    disable_closing_handshake: bool = False
    disable_disconnect_push: bool = False
    join_push_messages: bool = False


class HttpStreamConfig(_Struct, frozen=True):
    """``http_stream.*`` (bidirectional emulation)."""

    enabled: bool = False
    handler_prefix: str = "/connection/http_stream"
    max_request_body_size: int = 65536


class SseConfig(_Struct, frozen=True):
    """``sse.*`` (bidirectional emulation)."""

    enabled: bool = False
    handler_prefix: str = "/connection/sse"
    max_request_body_size: int = 65536


class HttpResponseTarget(_Struct, frozen=True):
    """``to`` of a connect-code-to-HTTP-response transform."""

    status_code: int = 0
    body: str = ""


class HttpResponseTransform(_Struct, frozen=True):
    """One ``connect_code_to_http_response.transforms[]`` item."""

    code: int = 0
    to: HttpResponseTarget = msgspec.field(default_factory=HttpResponseTarget)


class ConnectCodeToHttpResponse(_Struct, frozen=True):
    """``uni_sse`` / ``uni_http_stream`` ``connect_code_to_http_response``."""

    enabled: bool = False
    transforms: list[HttpResponseTransform] = []


class UniSseConfig(_Struct, frozen=True):
    """``uni_sse.*``."""

    enabled: bool = False
    handler_prefix: str = "/connection/uni_sse"
    max_request_body_size: int = 65536
    connect_code_to_http_response: ConnectCodeToHttpResponse = msgspec.field(
        default_factory=ConnectCodeToHttpResponse
    )


class UniHttpStreamConfig(_Struct, frozen=True):
    """``uni_http_stream.*``."""

    enabled: bool = False
    handler_prefix: str = "/connection/uni_http_stream"
    max_request_body_size: int = 65536
    connect_code_to_http_response: ConnectCodeToHttpResponse = msgspec.field(
        default_factory=ConnectCodeToHttpResponse
    )


class EmulationConfig(_Struct, frozen=True):
    """``emulation.*``; the endpoint is on exactly when ``sse`` or ``http_stream`` is."""

    handler_prefix: str = "/emulation"
    max_request_body_size: int = 65536


class InitConfig(_Struct, frozen=True):
    """``init.*``: GET endpoint answering ``{}``."""

    enabled: bool = False
    handler_prefix: str = "/connection/init"


class HealthConfig(_Struct, frozen=True):
    """``health.*``."""

    enabled: bool = False
    handler_prefix: str = "/health"


class PrometheusConfig(_Struct, frozen=True):
    """``prometheus.*``."""

    enabled: bool = False
    handler_prefix: str = "/metrics"
    instrument_http_handlers: bool = False
    recovered_publications_histogram: bool = False
    native_histograms: bool = False
    # ours: the metric name prefix (Centrifugo's is always "centrifugo")
    namespace: str = "centrifugo"


class AdminConfig(_Struct, frozen=True):
    """``admin.*``: the admin web page and its API (``admin/``)."""

    enabled: bool = False
    handler_prefix: str = ""
    password: str = ""
    secret: str = ""
    insecure: bool = False
    web_path: str = ""  # a directory served instead of the built-in page
    web_proxy_address: str = ""  # accepted, not implemented (Centrifugo's web UI dev mode)
    external: bool = False  # on the main port instead of the internal one


class OpenTelemetryConfig(_Struct, frozen=True):
    """``opentelemetry.*`` (tracing; needs the ``otel`` extra)."""

    enabled: bool = False
    api: bool = False
    consuming: bool = False


class ReplicaClientConfig(_Struct, frozen=True):
    """``<redis>.replica_client``."""

    enabled: bool = False


class RedisConfig(_Struct, frozen=True):
    """The Redis block shared by ``engine``, ``broker`` and ``presence_manager``."""

    address: list[str] = msgspec.field(default_factory=lambda: ["redis://127.0.0.1:6379"])
    prefix: str = "centrifugo"
    connect_timeout: Duration = 1.0
    io_timeout: Duration = 4.0
    db: int = 0
    user: str = ""
    password: str = ""
    client_name: str = ""
    force_resp2: bool = False
    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)
    cluster_address: list[str] = []
    sentinel_address: list[str] = []
    sentinel_master_name: str = ""
    sentinel_user: str = ""
    sentinel_password: str = ""
    sentinel_client_name: str = ""
    sentinel_tls: TLSConfig = msgspec.field(default_factory=TLSConfig)
    replica_client: ReplicaClientConfig = msgspec.field(default_factory=ReplicaClientConfig)


class BrokerRedisConfig(RedisConfig, frozen=True):
    """``broker.redis``."""

    history_use_lists: bool = False


class PresenceRedisConfig(RedisConfig, frozen=True):
    """``presence_manager.redis``."""

    presence_ttl: Duration = 60.0
    presence_hash_field_ttl: bool = False
    presence_user_mapping: bool = False


class EngineRedisConfig(PresenceRedisConfig, frozen=True):
    """``engine.redis``: broker and presence fields together."""

    history_use_lists: bool = False


class MapBrokerRedisConfig(RedisConfig, frozen=True):
    """``map_broker.redis``."""

    cleanup_interval: Duration = 1.0
    cleanup_batch_size: int = 100
    idempotent_result_ttl: Duration = 300.0


class MapBrokerConfig(_Struct, frozen=True):
    """``map_broker.*``: ``type`` is ``memory`` or ``redis``."""

    type: str = "memory"
    redis: MapBrokerRedisConfig = msgspec.field(default_factory=MapBrokerRedisConfig)


class EngineConfig(_Struct, frozen=True):
    """``engine.*``: ``type`` is ``memory`` or ``redis``."""

    type: str = "memory"
    redis: EngineRedisConfig = msgspec.field(default_factory=EngineRedisConfig)


class NatsRawModeConfig(_Struct, frozen=True):
    """``broker.nats.raw_mode``."""

    enabled: bool = False
    channel_replacements: dict[str, str] = {}
    prefix: str = ""


class NatsConfig(_Struct, frozen=True):
    """``broker.nats``."""

    url: str = "nats://localhost:4222"
    prefix: str = "centrifugo"
    dial_timeout: Duration = 1.0
    write_timeout: Duration = 1.0
    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)
    allow_wildcards: bool = False
    raw_mode: NatsRawModeConfig = msgspec.field(default_factory=NatsRawModeConfig)


class BrokerConfig(_Struct, frozen=True):
    """``broker.*``: when enabled, replaces the engine's broker."""

    enabled: bool = False
    type: str = "memory"
    redis: BrokerRedisConfig = msgspec.field(default_factory=BrokerRedisConfig)
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)


class PresenceManagerConfig(_Struct, frozen=True):
    """``presence_manager.*``: when enabled, replaces the engine's presence manager."""

    enabled: bool = False
    type: str = "memory"
    redis: PresenceRedisConfig = msgspec.field(default_factory=PresenceRedisConfig)


class PublicationDataModeConfig(_Struct, frozen=True):
    """``consumers[].<type>.publication_data_mode`` (not supported: must stay off)."""

    enabled: bool = False


class PostgresConsumerConfig(_Struct, frozen=True):
    """``consumers[].postgresql``: an outbox table consumer."""

    dsn: str = ""
    outbox_table_name: str = ""
    num_partitions: int = 1
    partition_select_limit: int = 100
    partition_poll_interval: Duration = 0.3
    partition_notification_channel: str = ""
    partition_notification_dsn: str = ""
    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)
    use_try_lock: bool = False


class RedisStreamConsumerConfig(RedisConfig, frozen=True):
    """``consumers[].redis_stream``: the Redis block plus the stream options."""

    streams: list[str] = []
    consumer_group: str = ""
    visibility_timeout: Duration = 30.0
    num_workers: int = 1
    payload_value: str = "payload"
    method_value: str = "method"
    publication_data_mode: PublicationDataModeConfig = msgspec.field(
        default_factory=PublicationDataModeConfig
    )


class NatsJetStreamConsumerConfig(_Struct, frozen=True):
    """``consumers[].nats_jetstream``: a durable JetStream consumer."""

    url: str = "nats://127.0.0.1:4222"
    credentials_file: str = ""
    username: str = ""
    password: str = ""
    token: str = ""
    stream_name: str = ""
    use_existing_consumer: bool = False
    subjects: list[str] = []
    durable_consumer_name: str = ""
    deliver_policy: str = "new"
    max_ack_pending: int = 100
    method_header: str = "centrifugo-method"
    publication_data_mode: PublicationDataModeConfig = msgspec.field(
        default_factory=PublicationDataModeConfig
    )
    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)


class ConsumerConfig(_Struct, frozen=True):
    """One ``consumers[]`` item: a named asynchronous consumer of server API commands."""

    name: str = ""
    enabled: bool = False
    type: str = ""
    postgresql: PostgresConsumerConfig = msgspec.field(default_factory=PostgresConsumerConfig)
    redis_stream: RedisStreamConsumerConfig = msgspec.field(
        default_factory=RedisStreamConsumerConfig
    )
    nats_jetstream: NatsJetStreamConsumerConfig = msgspec.field(
        default_factory=NatsJetStreamConsumerConfig
    )


# --------------------------------------------------------------------------- Config

# The source named by validation errors of the Config being built (set by the loader).
_source_var: ContextVar[str] = ContextVar("centrifuge_asgi_config_source", default="<python>")


class Loader(NamedTuple):
    """The functions of ``config_loader.py`` that :class:`Config` and :func:`load_config`
    call. That module imports this one, so it hands them over when imported
    (:func:`use_loader`), and the package imports it first."""

    validate: Callable[[Config, str], None]
    from_mapping: Callable[..., Config]
    dump: Callable[..., dict[str, object]]
    load: Callable[..., Config]
    merge_env: Callable[..., dict[str, Any]]


_loaders: list[Loader] = []


def use_loader(loader: Loader) -> None:
    _loaders[:] = [loader]


def _loader() -> Loader:
    if not _loaders:  # only if centrifuge_asgi.config_loader was never imported
        raise RuntimeError("centrifuge_asgi.config_loader has not been imported")
    return _loaders[0]


class _Index(NamedTuple):
    private_prefix: str
    boundary: str
    user_boundary: str
    user_separator: str
    without_namespace: ChannelOptions
    namespaces: dict[str, NamespaceConfig]
    rpc_boundary: str
    rpc_without_namespace: RpcOptions
    rpc_namespaces: dict[str, RpcNamespaceConfig]
    default_proxies: dict[str, ProxyConfig]
    proxies: dict[str, NamedProxy]


class SharedPollConfig(_Struct, frozen=True):
    """Top-level ``shared_poll.*``: the HMAC keys of track signatures, backend concurrency."""

    hmac_secret_key: str = ""
    hmac_previous_secret_key: str = ""
    hmac_previous_secret_key_valid_until: int = 0  # unix seconds; 0: no limit
    concurrency_limit: int = 64  # refresh calls in flight over all channels (0: no limit)


class Config(_Struct, frozen=True, dict=True):
    """The whole configuration (top-level v6 keys)."""

    http_server: HttpServerConfig = msgspec.field(default_factory=HttpServerConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    client: ClientConfig = msgspec.field(default_factory=ClientConfig)
    channel: ChannelConfig = msgspec.field(default_factory=ChannelConfig)
    rpc: RpcConfig = msgspec.field(default_factory=RpcConfig)
    proxies: list[NamedProxy] = []
    http_api: HttpApiConfig = msgspec.field(default_factory=HttpApiConfig)
    grpc_api: GrpcApiConfig = msgspec.field(default_factory=GrpcApiConfig)
    uni_grpc: UniGrpcConfig = msgspec.field(default_factory=UniGrpcConfig)
    websocket: WebSocketConfig = msgspec.field(default_factory=WebSocketConfig)
    http_stream: HttpStreamConfig = msgspec.field(default_factory=HttpStreamConfig)
    sse: SseConfig = msgspec.field(default_factory=SseConfig)
    emulation: EmulationConfig = msgspec.field(default_factory=EmulationConfig)
    uni_websocket: UniWebSocketConfig = msgspec.field(default_factory=UniWebSocketConfig)
    uni_sse: UniSseConfig = msgspec.field(default_factory=UniSseConfig)
    uni_http_stream: UniHttpStreamConfig = msgspec.field(default_factory=UniHttpStreamConfig)
    init: InitConfig = msgspec.field(default_factory=InitConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    prometheus: PrometheusConfig = msgspec.field(default_factory=PrometheusConfig)
    opentelemetry: OpenTelemetryConfig = msgspec.field(default_factory=OpenTelemetryConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    broker: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    presence_manager: PresenceManagerConfig = msgspec.field(default_factory=PresenceManagerConfig)
    map_broker: MapBrokerConfig = msgspec.field(default_factory=MapBrokerConfig)
    shared_poll: SharedPollConfig = msgspec.field(default_factory=SharedPollConfig)
    shutdown: ShutdownConfig = msgspec.field(default_factory=ShutdownConfig)
    consumers: list[ConsumerConfig] = []

    def __post_init__(self) -> None:
        _loader().validate(self, _source_var.get())

    # -- loading / dumping

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, source: str = "<dict>") -> Config:
        """Build from a nested v6 mapping (zero means default; unknown keys warn)."""
        return _loader().from_mapping(data, source=source)

    def to_dict(self, *, omit_defaults: bool = False) -> dict[str, object]:
        """The v6 nested shape; durations as Go strings (``"25s"``)."""
        return _loader().dump(self, omit_defaults=omit_defaults)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Warnings (unknown keys, env vars, ...) produced while loading this config."""
        warnings: tuple[str, ...] = self.__dict__.get("_warnings", ())
        return warnings

    # -- fast lookups used per command

    @functools.cached_property
    def _index(self) -> _Index:
        ch, rpc = self.channel, self.rpc
        return _Index(
            private_prefix=ch.private_prefix,
            boundary=ch.namespace_boundary,
            user_boundary=ch.user_boundary,
            user_separator=ch.user_separator,
            without_namespace=ch.without_namespace,
            namespaces={ns.name: ns for ns in ch.namespaces},
            rpc_boundary=rpc.namespace_boundary,
            rpc_without_namespace=rpc.without_namespace,
            rpc_namespaces={ns.name: ns for ns in rpc.namespaces},
            default_proxies={
                "subscribe": ch.proxy.subscribe,
                "publish": ch.proxy.publish,
                "sub_refresh": ch.proxy.sub_refresh,
                "subscribe_stream": ch.proxy.subscribe_stream,
                "shared_poll_refresh": ch.proxy.shared_poll_refresh,
                "map_publish": ch.proxy.map_publish,
                "map_remove": ch.proxy.map_remove,
                "rpc": rpc.proxy,
            },
            proxies={p.name: p for p in self.proxies},
        )

    def resolve_channel(self, channel: str) -> tuple[str, str, ChannelOptions | None]:
        """Return ``(namespace, rest, options)``; options is None for an unknown namespace.

        One leading private prefix is stripped; the namespace is the text before the first
        boundary and ``rest`` the text after it (``rest`` is what ``channel_regex`` checks).
        An empty namespace (``":x"``) means no namespace, as in Centrifugo.
        """
        idx = self._index
        prefix = idx.private_prefix
        if prefix and channel.startswith(prefix):
            channel = channel[len(prefix) :]
        if idx.boundary:
            namespace, sep, rest = channel.partition(idx.boundary)
            if sep and namespace:
                return namespace, rest, idx.namespaces.get(namespace)
            if sep:
                return "", rest, idx.without_namespace
        return "", channel, idx.without_namespace

    def channel_options(self, channel: str) -> ChannelOptions | None:
        """Options for ``channel``, or None when its namespace is unknown (error 102)."""
        return self.resolve_channel(channel)[2]

    def namespace_name(self, channel: str) -> str:
        """The namespace of ``channel`` (``""`` when it has none)."""
        return self.resolve_channel(channel)[0]

    def is_private(self, channel: str) -> bool:
        """True when ``channel`` starts with ``channel.private_prefix``."""
        prefix = self._index.private_prefix
        return bool(prefix) and channel.startswith(prefix)

    def user_limited_users(self, channel: str) -> list[str] | None:
        """Users after the last user boundary (``dialog#42,43`` → ``["42", "43"]``), or None."""
        idx = self._index
        boundary = idx.user_boundary
        if not boundary or boundary not in channel:
            return None
        return channel.rpartition(boundary)[2].split(idx.user_separator)

    def effective_history_meta_ttl(self, options: ChannelOptions) -> float:
        """The namespace's ``history_meta_ttl``, or ``channel.history_meta_ttl`` when 0."""
        return options.history_meta_ttl or self.channel.history_meta_ttl

    def rpc_options(self, method: str) -> RpcOptions | None:
        """RPC namespace options for ``method`` (§2.8.9), or None when unknown (104)."""
        idx = self._index
        if idx.rpc_boundary:
            namespace, sep, _ = method.partition(idx.rpc_boundary)
            if sep:
                return idx.rpc_namespaces.get(namespace)
        return idx.rpc_without_namespace

    def proxy(self, kind: str, name: str = "default") -> ProxyConfig | None:
        """The proxy for ``kind`` (subscribe, publish, sub_refresh, subscribe_stream, rpc).

        The name ``default`` selects ``channel.proxy.<kind>`` (``rpc.proxy`` for rpc); any
        other name selects the ``proxies[]`` item, or None when it does not exist.
        """
        idx = self._index
        if name in ("default", ""):
            return idx.default_proxies.get(kind)
        return idx.proxies.get(name)


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | Path | None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Load a config: ``overrides`` (flags) > ``CENTRIFUGO_*`` env > file > defaults.

    The file format follows the extension (.json, .toml, .yaml/.yml); a missing file only
    warns. ``env`` defaults to ``os.environ``. ``overrides`` take dotted keys
    (``{"http_server.port": 9000}``) or nested mappings; None values are skipped.
    """
    return _loader().load(path, env=env, overrides=overrides)


def apply_env(
    data: Mapping[str, object], env: Mapping[str, str] | None = None
) -> dict[str, object]:
    """Return a copy of the raw nested ``data`` with ``CENTRIFUGO_*`` env vars merged in."""
    return _loader().merge_env(data, env)
