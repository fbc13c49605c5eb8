"""Unit tests for centrifuge_asgi.config (v6 keys, loading rules, validation, lookups)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from centrifuge_asgi.config import (
    ChannelOptions,
    ClientConfig,
    Config,
    NamespaceConfig,
    apply_env,
    format_duration,
    load_config,
    parse_duration,
)
from centrifuge_asgi.errors import ConfigError

SRC = "test.json"


def cfg(data: dict[str, Any]) -> Config:
    return Config.from_dict(data, source=SRC)


def ns(**options: Any) -> dict[str, Any]:
    return {"channel": {"namespaces": [{"name": "chat", **options}]}}


# --------------------------------------------------------------------------- basics


def test_defaults() -> None:
    c = Config()
    assert c.http_server.port == 8000
    assert c.client.ping_interval == 25.0
    assert c.client.pong_timeout == 8.0
    assert c.client.stale_close_delay == 10.0
    assert c.client.expired_close_delay == c.client.expired_sub_close_delay == 25.0
    assert c.client.channel_limit == 128
    assert c.client.queue_max_size == 1048576
    assert c.client.presence_update_interval == 27.0
    assert c.client.history_max_publication_limit == 300
    assert c.client.recovery_max_publication_limit == 300
    assert c.client.channel_position_check_delay == 40.0
    assert c.channel.max_length == 255
    assert c.channel.history_meta_ttl == 720 * 3600
    assert (c.channel.private_prefix, c.channel.namespace_boundary) == ("$", ":")
    assert (c.channel.user_boundary, c.channel.user_separator) == ("#", ",")
    assert c.websocket.handler_prefix == "/connection/websocket"
    assert c.websocket.message_size_limit == 65536
    assert c.websocket.write_timeout == 1.0
    assert c.uni_sse.handler_prefix == "/connection/uni_sse"
    assert c.emulation.handler_prefix == "/emulation"
    assert c.http_api.handler_prefix == "/api"
    assert c.http_api.max_body_size == 1024 * 1024
    assert c.engine.type == "memory"
    assert c.engine.redis.prefix == "centrifugo"
    assert c.engine.redis.address == ["redis://127.0.0.1:6379"]
    assert c.engine.redis.presence_ttl == 60.0
    assert c.broker.nats.url == "nats://localhost:4222"
    assert c.channel.proxy.subscribe.timeout == 1.0
    assert c.rpc.without_namespace.proxy_name == "default"
    assert c.rpc.ping.method == "ping"
    assert c.log.level == "info"
    assert c.warnings == ()


def test_from_dict_nested_keys() -> None:
    c = cfg(
        {
            "http_server": {"port": 9000, "internal_port": 9001},
            "log": {"level": "DEBUG", "json": True},
            "client": {
                "token": {"hmac_secret_key": "secret", "user_id_claim": "uid"},
                "subscription_token": {"enabled": True, "hmac_secret_key": "sub"},
                "proxy": {"connect": {"enabled": True, "endpoint": "http://b/c", "timeout": "3s"}},
                "allowed_origins": ["https://*.example.com"],
                "ping_interval": "10s",
                "pong_timeout": "4s",
                "subscribe_to_user_personal_channel": {
                    "enabled": True,
                    "personal_channel_namespace": "chat",
                },
            },
            "channel": {
                "without_namespace": {"presence": True},
                "namespaces": [{"name": "chat", "history_size": 10, "history_ttl": "300s"}],
            },
            "websocket": {"compression": True},
            "broker": {"enabled": True, "type": "nats", "nats": {"url": "nats://n:4222"}},
        }
    )
    assert c.http_server.port == 9000
    assert c.http_server.internal_port == "9001"  # a number decodes into the string key
    assert (c.log.level, c.log.json) == ("debug", True)
    assert c.client.token.hmac_secret_key == "secret"
    assert c.client.subscription_token.enabled
    assert c.client.proxy.connect.timeout == 3.0
    assert c.client.allowed_origins == ["https://*.example.com"]
    assert c.client.ping_interval == 10.0
    assert c.channel.without_namespace.presence
    assert isinstance(c.channel.namespaces[0], NamespaceConfig)
    assert c.channel.namespaces[0].history_ttl == 300.0
    assert c.channel.namespaces[0].history_enabled
    assert not c.channel.without_namespace.history_enabled
    assert c.websocket.compression
    assert c.broker.nats.url == "nats://n:4222"


def test_structs_are_frozen_and_validate_on_construction() -> None:
    c = Config()
    with pytest.raises(AttributeError):
        c.client = ClientConfig()  # type: ignore[misc]
    with pytest.raises(ConfigError, match=r"client\.ping_interval"):
        Config(client=ClientConfig(ping_interval=5.0))
    assert Config(client=ClientConfig(ping_interval=30.0)).client.ping_interval == 30.0


def test_zero_means_default_and_negative_is_kept() -> None:
    c = cfg(
        {
            "client": {"channel_limit": 0, "ping_interval": "0s", "allowed_origins": []},
            "engine": {"redis": {"prefix": "", "address": ""}},
            "websocket": {"message_size_limit": 0},
            "rpc": {"without_namespace": {"proxy_name": ""}},
            "channel": {"proxy": {"publish": {"timeout": "0"}}, "max_length": None},
        }
    )
    assert c.client.channel_limit == 128
    assert c.client.ping_interval == 25.0
    assert c.engine.redis.prefix == "centrifugo"
    assert c.engine.redis.address == ["redis://127.0.0.1:6379"]
    assert c.websocket.message_size_limit == 65536
    assert c.rpc.without_namespace.proxy_name == "default"
    assert c.channel.proxy.publish.timeout == 1.0
    assert c.channel.max_length == 255
    neg = cfg({"client": {"channel_limit": -1}, "websocket": {"message_size_limit": -1}})
    assert (neg.client.channel_limit, neg.websocket.message_size_limit) == (-1, -1)


def test_request_and_shutdown_bounds() -> None:
    c = Config()
    server = c.http_server
    assert (server.read_header_timeout, server.read_timeout) == (10.0, 30.0)
    assert server.max_pending_connections == 0  # a quarter of the open-file limit
    assert c.shutdown.timeout == 30.0  # Centrifugo v6 shutdown.timeout
    loaded = load_config(
        None,
        env={"CENTRIFUGO_SHUTDOWN_TIMEOUT": "5s", "CENTRIFUGO_HTTP_SERVER_READ_TIMEOUT": "2s"},
        overrides={"http_server.read_header_timeout": "1500ms"},
    )
    assert (loaded.shutdown.timeout, loaded.http_server.read_timeout) == (5.0, 2.0)
    assert loaded.http_server.read_header_timeout == 1.5
    assert not [w for w in loaded.warnings if "shutdown" in w or "read_" in w]
    off = cfg({"http_server": {"read_timeout": "-1s", "max_pending_connections": -1}})
    assert (off.http_server.read_timeout, off.http_server.max_pending_connections) == (-1.0, -1)


def test_single_string_is_a_one_item_list() -> None:
    c = cfg({"engine": {"type": "redis", "redis": {"address": "redis://10.0.0.1:6379"}}})
    assert c.engine.redis.address == ["redis://10.0.0.1:6379"]
    c = cfg({"client": {"allowed_origins": "*"}})
    assert c.client.allowed_origins == ["*"]


def test_map_values() -> None:
    c = cfg(
        {
            "channel": {
                "proxy": {
                    "subscribe": {"http": {"static_headers": {"X-Api": "1"}}},
                    "publish": {"http": {"static_headers": [{"key": "X-Api", "value": "2"}]}},
                }
            }
        }
    )
    assert c.channel.proxy.subscribe.http.static_headers == {"x-api": "1"}
    assert c.channel.proxy.publish.http.static_headers == {"X-Api": "2"}


def test_to_dict_round_trip() -> None:
    c = cfg({**ns(history_size=5, history_ttl="90s"), "client": {"ping_interval": "1m"}})
    d = c.to_dict()
    assert d["client"]["ping_interval"] == "1m0s"  # type: ignore[index]
    assert d["client"]["pong_timeout"] == "8s"  # type: ignore[index]
    assert Config.from_dict(json.loads(json.dumps(d))) == c
    small = c.to_dict(omit_defaults=True)
    assert small == {
        "client": {"ping_interval": "1m0s"},
        "channel": {"namespaces": [{"name": "chat", "history_size": 5, "history_ttl": "1m30s"}]},
    }


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("25s", 25.0),
        ("1m30s", 90.0),
        ("720h", 2592000.0),
        ("0", 0.0),
        ("-1.5s", -1.5),
        ("+2s", 2.0),
        (".5s", 0.5),
        ("1h2m3s", 3723.0),
        ("1500us", 0.0015),
        ("1µs", 1e-6),
        ("10ns", 1e-8),
        (1_000_000_000, 1.0),  # a bare number is nanoseconds
        (25, 25e-9),
        (timedelta(minutes=2), 120.0),
    ],
)
def test_parse_duration_valid(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["1d", "", "-1", "5", "s", "1.5.5s", "1 s", True, None, []])
def test_parse_duration_invalid(value: object) -> None:
    with pytest.raises(ConfigError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (25, "25s"), (90, "1m30s"), (2592000, "720h0m0s"), (0.5, "500ms"), (-1.5, "-1.5s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_bare_number_in_file_is_nanoseconds() -> None:
    c = cfg({"client": {"stale_close_delay": 10_000_000_000}})
    assert c.client.stale_close_delay == 10.0
    # 25 ns is not greater than the 8 s pong timeout: fatal, as in Centrifugo
    with pytest.raises(ConfigError, match=r"client\.ping_interval"):
        cfg({"client": {"ping_interval": 25}})


def test_bad_duration_names_key_value_and_source() -> None:
    with pytest.raises(ConfigError) as exc:
        cfg({"client": {"ping_interval": "25 seconds"}})
    msg = str(exc.value)
    assert "client.ping_interval" in msg and "25 seconds" in msg and SRC in msg


# --------------------------------------------------------------------------- warnings


def test_unknown_keys_warn_with_full_path(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="centrifuge_asgi.config"):
        c = cfg(
            {
                "channel": {"namespaces": [{"name": "chat", "presense": True}]},
                "clinet": {},
                "swagger": {"enabled": True},
                "log": {"level": "verbose"},
            }
        )
    text = caplog.text
    assert "channel.namespaces[0].presense" in text and SRC in text
    assert "'clinet'" in text
    assert "'swagger' is not supported" in text
    assert c.log.level == "info"
    assert any("channel.namespaces[0].presense" in w for w in c.warnings)
    assert len(c.warnings) == 4


# --------------------------------------------------------------------------- validation

PROXY = {"name": "backend", "endpoint": "http://backend/hook"}


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"channel": {"without_namespace": {"history_size": 10}}}, "without_namespace.history_ttl"),
        (ns(history_ttl="60s"), "channel.namespaces[0].history_size"),
        (ns(history_size=1, history_ttl="800h"), "channel.namespaces[0].history_ttl"),
        (
            ns(history_size=1, history_ttl="20s", history_meta_ttl="10s"),
            "channel.namespaces[0].history_ttl",
        ),
        (ns(history_size=1, history_ttl="1.5s"), "channel.namespaces[0].history_ttl"),
        (ns(force_recovery=True), "channel.namespaces[0].force_recovery"),
        (ns(channel_regex="(unclosed"), "channel.namespaces[0].channel_regex"),
        (ns(allowed_delta_types=["fossil", "xdelta"]), "allowed_delta_types[1]"),
        (ns(force_recovery_mode="latest"), "channel.namespaces[0].force_recovery_mode"),
        (
            ns(history_size=1, history_ttl="60s", force_recovery=True, auto_cache_recover=True),
            "channel.namespaces[0].auto_cache_recover",
        ),
        (
            ns(
                history_size=1,
                history_ttl="60s",
                force_recovery_mode="cache",
                auto_cache_recover=True,
            ),
            "channel.namespaces[0].auto_cache_recover",
        ),
        (ns(publication_data_format="xml"), "publication_data_format"),
        (
            ns(subscribe_proxy_enabled=True, subscribe_proxy_name="nope"),
            "channel.namespaces[0].subscribe_proxy_name",
        ),
        (ns(publish_proxy_enabled=True), "channel.proxy.publish.endpoint"),
        (
            {
                "proxies": [PROXY],
                **ns(
                    subscribe_stream_proxy_enabled=True,
                    subscribe_stream_proxy_name="backend",
                    publish_proxy_enabled=True,
                    publish_proxy_name="backend",
                ),
            },
            "subscribe_stream_proxy_enabled",
        ),
        (
            {"channel": {"namespaces": [{"name": "chat"}, {"name": "chat"}]}},
            "channel.namespaces[1].name",
        ),
        ({"channel": {"namespaces": [{"name": "a"}]}}, "channel.namespaces[0].name"),
        ({"channel": {"namespaces": [{"name": "bad name"}]}}, "channel.namespaces[0].name"),
        ({"channel": {"namespaces": [{"presence": True}]}}, "channel.namespaces[0].name"),
        ({"broker": {"type": "kafka"}}, "broker.type"),
        ({"engine": {"type": "tarantool"}}, "engine.type"),
        ({"presence_manager": {"type": "nats"}}, "presence_manager.type"),
        ({"proxies": [{**PROXY, "name": "default"}]}, "proxies[0].name"),
        ({"proxies": [{**PROXY, "name": "x y"}]}, "proxies[0].name"),
        ({"proxies": [PROXY, PROXY]}, "proxies[1].name"),
        ({"proxies": [{"name": "backend"}]}, "proxies[0].endpoint"),
        ({"client": {"proxy": {"connect": {"enabled": True}}}}, "client.proxy.connect.endpoint"),
        (
            {"rpc": {"namespaces": [{"name": "rpc1", "proxy_enabled": True, "proxy_name": "x"}]}},
            "rpc.namespaces[0].proxy_name",
        ),
        ({"rpc": {"without_namespace": {"proxy_enabled": True}}}, "rpc.proxy.endpoint"),
        (
            {
                "client": {
                    "subscribe_to_user_personal_channel": {
                        "enabled": True,
                        "personal_channel_namespace": "personal",
                    }
                }
            },
            "personal_channel_namespace",
        ),
        (
            {
                **ns(),
                "client": {
                    "subscribe_to_user_personal_channel": {
                        "enabled": True,
                        "personal_channel_namespace": "chat",
                        "single_connection": True,
                    }
                },
            },
            "subscribe_to_user_personal_channel.single_connection",
        ),
        ({"client": {"token": {"user_id_claim": "user-id"}}}, "client.token.user_id_claim"),
        (
            {"client": {"subscription_token": {"user_id_claim": "a.b"}}},
            "client.subscription_token.user_id_claim",
        ),
        ({"client": {"ping_interval": "8s"}}, "client.ping_interval"),
        ({"client": {"ping_interval": "5s", "pong_timeout": "4s"}}, None),
        ({"http_api": {"error_mode": "loud"}}, "http_api.error_mode"),
        (
            {"proxies": [{**PROXY, "http": {"status_to_code_transforms": [{"status_code": 404}]}}]},
            "proxies[0].http.status_to_code_transforms[0]",
        ),
        # wrong types
        ({"client": {"channel_limit": "many"}}, "client.channel_limit"),
        ({"client": {"insecure": "yes"}}, "client.insecure"),
        ({"client": {"allowed_origins": [{"a": 1}]}}, "client.allowed_origins[0]"),
        ({"channel": {"namespaces": [1]}}, "channel.namespaces[0]"),
        ({"channel": "none"}, "channel"),
        ({"http_server": {"port": 80.5}}, "http_server.port"),
    ],
)
def test_validation_errors_name_key_and_source(data: dict[str, Any], key: str | None) -> None:
    if key is None:  # a valid counterpart
        cfg(data)
        return
    with pytest.raises(ConfigError) as exc:
        cfg(data)
    assert key in str(exc.value)
    assert SRC in str(exc.value)


def test_valid_proxies_and_personal_channel() -> None:
    c = cfg(
        {
            "proxies": [PROXY],
            "channel": {
                "proxy": {"subscribe": {"endpoint": "http://default/sub"}},
                "namespaces": [
                    {
                        "name": "chat",
                        "presence": True,
                        "subscribe_proxy_enabled": True,
                        "publish_proxy_enabled": True,
                        "publish_proxy_name": "backend",
                    }
                ],
            },
            "rpc": {
                "namespaces": [{"name": "rpc", "proxy_enabled": True, "proxy_name": "backend"}]
            },
            "client": {
                "subscribe_to_user_personal_channel": {
                    "enabled": True,
                    "personal_channel_namespace": "chat",
                    "single_connection": True,
                }
            },
        }
    )
    assert c.proxy("subscribe") is c.channel.proxy.subscribe
    assert c.proxy("publish", "backend") is c.proxies[0]
    assert c.proxy("publish", "missing") is None
    assert c.proxy("rpc") is c.rpc.proxy
    assert c.rpc_options("rpc:do") is c.rpc.namespaces[0]
    assert c.rpc_options("echo") is c.rpc.without_namespace
    assert c.rpc_options("other:do") is None


# --------------------------------------------------------------------------- files

FILE_DATA: dict[str, Any] = {
    "http_server": {"port": 8100},
    "client": {
        "token": {"hmac_secret_key": "k"},
        "allowed_origins": ["http://localhost:3000"],
        "ping_interval": "20s",
    },
    "channel": {
        "namespaces": [
            {"name": "chat", "history_size": 100, "history_ttl": "10m", "presence": True}
        ]
    },
    "engine": {"redis": {"address": "redis://r:6379"}},
}

TOML = """
[http_server]
port = 8100

[client]
allowed_origins = ["http://localhost:3000"]
ping_interval = "20s"

[client.token]
hmac_secret_key = "k"

[[channel.namespaces]]
name = "chat"
history_size = 100
history_ttl = "10m"
presence = true

[engine.redis]
address = "redis://r:6379"
"""

YAML = """
http_server:
  port: 8100
client:
  token:
    hmac_secret_key: k
  allowed_origins:
    - http://localhost:3000
  ping_interval: 20s
channel:
  namespaces:
    - name: chat
      history_size: 100
      history_ttl: 10m
      presence: true
engine:
  redis:
    address: redis://r:6379
"""


def test_json_toml_yaml_load_the_same(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps(FILE_DATA))
    (tmp_path / "c.toml").write_text(TOML)
    (tmp_path / "c.yaml").write_text(YAML)
    configs = [load_config(tmp_path / name, env={}) for name in ("c.json", "c.toml", "c.yaml")]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0] == cfg(FILE_DATA)
    assert configs[0].channel.namespaces[0].history_ttl == 600.0
    assert configs[0].engine.redis.address == ["redis://r:6379"]


def test_missing_file_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="centrifuge_asgi.config"):
        c = load_config(tmp_path / "nope.json", env={})
    assert c == Config()
    assert "not found" in caplog.text
    assert len(c.warnings) == 1
    assert load_config(None, env={}) == Config()


def test_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        load_config(bad, env={})
    ini = tmp_path / "c.ini"
    ini.write_text("[x]")
    with pytest.raises(ConfigError, match="unsupported"):
        load_config(ini, env={})
    arr = tmp_path / "arr.json"
    arr.write_text("[]")
    with pytest.raises(ConfigError, match="top level"):
        load_config(arr, env={})
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("client:\n  channel_limit: lots\n")
    with pytest.raises(ConfigError, match=r"client\.channel_limit.*invalid\.yaml"):
        load_config(invalid, env={})


# --------------------------------------------------------------------------- env


def test_env_overrides(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"channel": {"namespaces": [{"name": "file.ns"}]}}))
    env = {
        "CENTRIFUGO_CLIENT_PING_INTERVAL": "30s",
        "CENTRIFUGO_CLIENT_INSECURE": "true",
        "CENTRIFUGO_CLIENT_ALLOWED_ORIGINS": "http://a http://b",
        "CENTRIFUGO_CLIENT_CHANNEL_LIMIT": "64",
        "CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY": "s3cr3t",
        "CENTRIFUGO_CLIENT_PROXY_CONNECT_ENDPOINT": "http://b/connect",
        "CENTRIFUGO_CLIENT_PROXY_CONNECT_HTTP_STATIC_HEADERS": '{"X-Token": "${CENTRIFUGO_VAR_T}"}',
        "CENTRIFUGO_VAR_T": "tok",
        "CENTRIFUGO_ENGINE_REDIS_ADDRESS": "redis://a:6379 redis://b:6379",
        "CENTRIFUGO_HTTP_SERVER_PORT": "",  # empty counts as unset
        "CENTRIFUGO_PORT_8000_TCP_ADDR": "10.0.0.1",  # kubernetes, ignored
        "CENTRIFUGO_CHANNEL_NAMESPACES_FILE_NS_PRESENCE": "1",
        "CENTRIFUGO_NO_SUCH_KEY": "x",
        "OTHER": "ignored",
    }
    with caplog.at_level(logging.WARNING, logger="centrifuge_asgi.config"):
        c = load_config(file, env=env)
    assert c.client.ping_interval == 30.0
    assert c.client.insecure is True
    assert c.client.allowed_origins == ["http://a", "http://b"]
    assert c.client.channel_limit == 64
    assert c.client.token.hmac_secret_key == "s3cr3t"
    assert c.client.proxy.connect.endpoint == "http://b/connect"
    assert c.client.proxy.connect.http.static_headers == {"x-token": "tok"}
    assert c.engine.redis.address == ["redis://a:6379", "redis://b:6379"]
    assert c.http_server.port == 8000
    assert c.channel.namespaces[0].presence is True
    assert "CENTRIFUGO_NO_SUCH_KEY" in caplog.text
    assert "CENTRIFUGO_PORT_8000" not in caplog.text
    assert [w for w in c.warnings if "environment variable" in w] == [
        "unknown environment variable CENTRIFUGO_NO_SUCH_KEY (source: environment)"
    ]


def test_env_namespaces_json_then_single_item_override() -> None:
    env = {
        "CENTRIFUGO_CHANNEL_NAMESPACES": json.dumps(
            [{"name": "chat-room", "presence": True}, {"name": "b2"}]
        ),
        "CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_ROOM_HISTORY_SIZE": "10",
        "CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_ROOM_HISTORY_TTL": "60s",
        "CENTRIFUGO_PROXIES": json.dumps([PROXY]),
        "CENTRIFUGO_PROXIES_BACKEND_TIMEOUT": "2s",
        "CENTRIFUGO_PROXIES_BACKEND_HTTP_STATIC_HEADERS": '{"A": "b"}',
    }
    c = load_config(None, env=env)
    chat = c.channel_options("chat-room:x")
    assert chat is not None and chat.presence and chat.history_size == 10
    assert chat.history_ttl == 60.0
    assert c.channel_options("b2:x") is not None
    assert c.proxies[0].timeout == 2.0
    assert c.proxies[0].http.static_headers == {"a": "b"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CENTRIFUGO_CLIENT_INSECURE", "yes"),
        ("CENTRIFUGO_CLIENT_CHANNEL_LIMIT", "ten"),
        ("CENTRIFUGO_CLIENT_PING_INTERVAL", "30"),
        ("CENTRIFUGO_CHANNEL_NAMESPACES", "{not json"),
        ("CENTRIFUGO_CHANNEL_NAMESPACES", '{"name": "x"}'),
    ],
)
def test_bad_env_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config(None, env={name: value})


def test_apply_env_returns_merged_copy() -> None:
    data: dict[str, object] = {"client": {"insecure": False}}
    merged = apply_env(data, {"CENTRIFUGO_CLIENT_INSECURE": "1", "CENTRIFUGO_LOG_LEVEL": "debug"})
    assert merged == {"client": {"insecure": True}, "log": {"level": "debug"}}
    assert data == {"client": {"insecure": False}}


def test_precedence_overrides_env_file(tmp_path: Path) -> None:
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"http_server": {"port": 8001}, "log": {"level": "error"}}))
    env = {"CENTRIFUGO_HTTP_SERVER_PORT": "8002", "CENTRIFUGO_LOG_LEVEL": "warn"}
    assert load_config(file, env={}).http_server.port == 8001
    assert load_config(file, env=env).http_server.port == 8002
    c = load_config(
        file,
        env=env,
        overrides={
            "http_server.port": 8003,
            "log.level": None,
            "client": {"insecure": True},
            "client.channel_limit": 7,
        },
    )
    assert c.http_server.port == 8003
    assert c.client.channel_limit == 7
    assert c.log.level == "warn"  # a None flag is unset
    assert c.client.insecure


def test_error_source_names_all_inputs(tmp_path: Path) -> None:
    file = tmp_path / "c.json"
    file.write_text("{}")
    with pytest.raises(ConfigError) as exc:
        load_config(file, env={"CENTRIFUGO_BROKER_TYPE": "kafka"})
    assert "broker.type" in str(exc.value)
    assert f"{file} + environment" in str(exc.value)


# --------------------------------------------------------------------------- lookups


@pytest.fixture(scope="module")
def lookup() -> Config:
    return Config.from_dict(
        {
            "channel": {
                "without_namespace": {"presence": True},
                "namespaces": [
                    {"name": "ns", "join_leave": True, "channel_regex": "^[a-z]+$"},
                    {"name": "dialog", "allow_user_limited_channels": True},
                ],
            }
        }
    )


def test_channel_resolution(lookup: Config) -> None:
    ns_opts = lookup.channel.namespaces[0]
    top = lookup.channel.without_namespace
    assert lookup.resolve_channel("$ns:chan") == ("ns", "chan", ns_opts)
    assert lookup.resolve_channel("ns:chan") == ("ns", "chan", ns_opts)
    assert lookup.resolve_channel("ns:a:b") == ("ns", "a:b", ns_opts)
    assert lookup.resolve_channel("chan") == ("", "chan", top)
    assert lookup.resolve_channel("$chan") == ("", "chan", top)
    assert lookup.resolve_channel(":chan") == ("", "chan", top)
    assert lookup.channel_options("unknown:x") is None
    assert lookup.channel_options("$$ns:x") is None  # only one prefix is stripped
    assert lookup.channel_options("ns:x") is ns_opts
    assert lookup.namespace_name("$ns:x") == "ns"
    assert lookup.namespace_name("x") == ""
    assert lookup.is_private("$ns:x") and not lookup.is_private("ns:$x")
    assert isinstance(ns_opts, ChannelOptions)
    regex = ns_opts.compiled_channel_regex
    assert regex is not None and regex.search("chan") and not regex.search("Chan1")
    assert top.compiled_channel_regex is None


def test_user_limited_users(lookup: Config) -> None:
    assert lookup.user_limited_users("dialog#42,43") == ["42", "43"]
    assert lookup.user_limited_users("personal:#17") == ["17"]
    assert lookup.user_limited_users("a#b#c,d") == ["c", "d"]
    assert lookup.user_limited_users("chat") is None


def test_custom_boundaries() -> None:
    c = cfg(
        {
            "channel": {
                "private_prefix": "~",
                "namespace_boundary": "/",
                "user_boundary": "@",
                "user_separator": ";",
                "namespaces": [{"name": "room"}],
            }
        }
    )
    assert c.resolve_channel("~room/a:b")[:2] == ("room", "a:b")
    assert c.channel_options("room:a") is c.channel.without_namespace
    assert c.user_limited_users("room/x@1;2") == ["1", "2"]
    assert c.is_private("~room/a")


def test_effective_history_meta_ttl() -> None:
    c = cfg(ns(history_size=1, history_ttl="60s", history_meta_ttl="120s"))
    assert c.effective_history_meta_ttl(c.channel.namespaces[0]) == 120.0
    assert c.effective_history_meta_ttl(c.channel.without_namespace) == 720 * 3600.0


def test_replace_revalidates() -> None:
    c = Config()
    with pytest.raises(ConfigError):
        msgspec.structs.replace(c, client=ClientConfig(pong_timeout=30.0))


def test_env_named_lists_as_space_separated_names() -> None:
    # Centrifugo v6: a value that is not a JSON array names the items; their options come
    # from per-item variables (the form the official SDKs' CI uses).
    env = {
        "CENTRIFUGO_CHANNEL_NAMESPACES": "smallhistory  chat-room",
        "CENTRIFUGO_CHANNEL_NAMESPACES_SMALLHISTORY_HISTORY_SIZE": "2",
        "CENTRIFUGO_CHANNEL_NAMESPACES_SMALLHISTORY_HISTORY_TTL": "300s",
        "CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_ROOM_PRESENCE": "true",
        "CENTRIFUGO_RPC_NAMESPACES": "math",
        "CENTRIFUGO_PROXIES": "backend",
        "CENTRIFUGO_PROXIES_BACKEND_ENDPOINT": "http://127.0.0.1:9/p",
    }
    c = load_config(None, env=env)
    assert [ns.name for ns in c.channel.namespaces] == ["smallhistory", "chat-room"]
    small = c.channel_options("smallhistory:x")
    assert small is not None and (small.history_size, small.history_ttl) == (2, 300.0)
    chat = c.channel_options("chat-room:x")
    assert chat is not None and chat.presence and chat.history_size == 0
    assert [ns.name for ns in c.rpc.namespaces] == ["math"]
    assert [(p.name, p.endpoint) for p in c.proxies] == [("backend", "http://127.0.0.1:9/p")]
    assert c.warnings == ()


def test_env_names_add_to_the_files_list(tmp_path: Path) -> None:
    file = tmp_path / "c.json"
    file.write_text('{"channel": {"namespaces": [{"name": "chat", "presence": true}]}}')
    env = {"CENTRIFUGO_CHANNEL_NAMESPACES": "chat news"}
    c = load_config(file, env=env)
    assert [ns.name for ns in c.channel.namespaces] == ["chat", "news"]
    chat = c.channel_options("chat:x")
    assert chat is not None and chat.presence  # the file's options stay


@pytest.mark.parametrize("value", ["{not json", "a,b", "[not json]"])
def test_bad_env_names_name_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="CENTRIFUGO_CHANNEL_NAMESPACES"):
        load_config(None, env={"CENTRIFUGO_CHANNEL_NAMESPACES": value})


PREFIXED = [
    "http_api",
    "websocket",
    "uni_websocket",
    "http_stream",
    "sse",
    "uni_sse",
    "uni_http_stream",
    "emulation",
    "init",
    "health",
    "prometheus",
    "admin",
]


def test_every_handler_prefix_is_checked() -> None:
    config = Config()
    with_prefix = {
        name
        for name in type(config).__struct_fields__
        if hasattr(getattr(config, name), "handler_prefix")
    }
    assert with_prefix == set(PREFIXED)


@pytest.mark.parametrize("section", PREFIXED)
def test_handler_prefix_must_be_a_path(section: str, tmp_path: Path) -> None:
    """A handler prefix without its leading slash is a config error naming the key and
    the file (Starlette would otherwise fail the app's build with a bare assertion);
    empty is the default route."""
    assert "handler_prefix" in type(getattr(Config(), section)).__struct_fields__
    path = tmp_path / "c.json"
    path.write_text(json.dumps({section: {"handler_prefix": "x/y"}}))
    with pytest.raises(ConfigError, match=rf"'{section}\.handler_prefix'.*'/'.*c\.json"):
        load_config(path, env={})
    path.write_text(json.dumps({section: {"handler_prefix": "/x/y"}}))
    assert getattr(load_config(path, env={}), section).handler_prefix == "/x/y"
    empty = getattr(cfg({section: {"handler_prefix": ""}}), section).handler_prefix
    assert empty in ("", getattr(Config(), section).handler_prefix)  # the default route
