"""Reading, merging, coercing, validating and dumping configuration (see :mod:`.config`).

The loader walks the raw nested mapping alongside the struct schema so that it can
name the full key path of anything it warns or fails about. Warnings go to the
``centrifuge_asgi.config`` logger and into :attr:`Config.warnings`.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .config import (
    ChannelOptions,
    ClientRateLimitConfig,
    CommandRateLimit,
    Config,
    ConsumerConfig,
    HttpServerConfig,
    Loader,
    LogConfig,
    ProxyConfig,
    RpcRateLimit,
    _source_var,
    format_duration,
    parse_duration,
    use_loader,
)
from .errors import ConfigError

logger = logging.getLogger("centrifuge_asgi.config")

_NAME_RE = re.compile(r"^[-a-zA-Z0-9_.]{2,}$")
_CLAIM_RE = re.compile(r"^[a-zA-Z_]+$")
_VAR_RE = re.compile(r"\$\{(CENTRIFUGO_VAR_[A-Za-z0-9_]+)\}")
_LOG_LEVELS = frozenset({"none", "trace", "debug", "info", "warn", "error", "fatal"})
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_CONSUMER_NAME_RE = re.compile(r"^[a-zA-Z0-9_]{2,}$")
_CONSUMER_TYPES = ("postgresql", "redis_stream", "nats_jetstream")
_CONSUMER_TYPES_ELSEWHERE = ("kafka", "google_pub_sub", "aws_sqs", "azure_service_bus")
_CONSUMER_REQUIRED = {
    "postgresql": ("dsn", "outbox_table_name"),
    "redis_stream": ("address", "streams", "consumer_group"),
    "nats_jetstream": ("url", "stream_name", "durable_consumer_name"),
}
# an outbox table is spliced into SQL: plain identifiers only, optionally schema-qualified
_TABLE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_CHANNEL_PROXY_KINDS = ("subscribe", "publish", "sub_refresh", "subscribe_stream")
_PROXY_OBJECTS = (*_CHANNEL_PROXY_KINDS, "shared_poll_refresh")  # channel.proxy.*

# Keys Centrifugo knows but centrifuge-asgi does not implement: ignored with a warning
# that says so, instead of the "unknown key" warning.
_UNSUPPORTED_TOP = frozenset(
    {
        "swagger", "debug", "webtransport",
        "controller", "graphite", "usage_stats",
        "node", "pid_file", "enable_unreleased_features", "dev",
    }
)  # fmt: skip
_UNSUPPORTED_CHANNEL_OPTIONS = frozenset(
    {
        "subscribe_cel", "publish_cel", "history_cel", "presence_cel", "state_proxy_enabled",
        "state_events", "shared_position_sync", "batch_max_size", "batch_max_delay",
        "batch_flush_latest", "allow_channel_compaction", "keep_latest_publication",
        "broker_name", "presence_manager_name",
    }
)  # fmt: skip


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class _Field:
    """What the loader needs to know about one struct field."""

    name: str
    kind: str  # bool | int | str | duration | list_str | list_struct | map | struct
    inner: type[msgspec.Struct] | None
    default: Callable[[], object]


def _is_struct(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _classify(tp: Any) -> tuple[str, type[msgspec.Struct] | None]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        if any(isinstance(m, msgspec.Meta) and (m.extra or {}).get("duration") for m in args):
            return "duration", None
        return _classify(args[0])
    if origin is list:
        return ("list_struct", args[0]) if _is_struct(args[0]) else ("list_str", None)
    if origin is dict:
        return "map", None
    if _is_struct(tp):
        return "struct", tp
    simple = {bool: "bool", int: "int", str: "str"}
    if tp in simple:
        return simple[tp], None
    raise TypeError(f"unsupported config field type {tp!r}")  # pragma: no cover


def _default_of(info: msgspec.structs.FieldInfo) -> Callable[[], object]:
    if info.default_factory is not msgspec.NODEFAULT:
        return typing.cast(Callable[[], object], info.default_factory)
    value = info.default
    return lambda: value


@functools.cache
def schema(cls: type[msgspec.Struct]) -> dict[str, _Field]:
    """The fields of a config struct by key name."""
    result = {}
    for info in msgspec.structs.fields(cls):
        kind, inner = _classify(info.type)
        result[info.name] = _Field(info.name, kind, inner, _default_of(info))
    return result


def _unsupported_keys(cls: type[msgspec.Struct]) -> frozenset[str]:
    if cls is Config:
        return _UNSUPPORTED_TOP
    if issubclass(cls, ChannelOptions):
        return _UNSUPPORTED_CHANNEL_OPTIONS
    if cls is HttpServerConfig:
        return frozenset({"tls_autocert", "http3"})
    if cls is ConsumerConfig:
        return frozenset(_CONSUMER_TYPES_ELSEWHERE)
    return next((k for c, k in _UNSUPPORTED_RATE_LIMIT.items() if issubclass(cls, c)), frozenset())


# Centrifugo PRO rate limit keys beyond the in-memory command limits
_UNSUPPORTED_RATE_LIMIT: dict[type[msgspec.Struct], frozenset[str]] = {
    ClientRateLimitConfig: frozenset({"redis_user_command", "client_error"}),
    CommandRateLimit: frozenset({"map_publish", "map_remove", "track", "untrack"}),
    RpcRateLimit: frozenset({"method_override"}),  # the map form before v6.8
}


# --------------------------------------------------------------------------- context


@dataclass(slots=True)
class _Context:
    """Where values come from (for messages) and the warnings collected so far."""

    source: str
    env: Mapping[str, str]
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        text = f"{message} (source: {self.source})"
        logger.warning("config: %s", text)
        self.warnings.append(text)

    def fail(self, path: str, value: object, reason: str) -> typing.NoReturn:
        raise ConfigError(
            f"invalid config value for '{path}': {value!r}: {reason} (source: {self.source})"
        )


# --------------------------------------------------------------------------- coercion


def _to_bool(value: object, path: str, ctx: _Context) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _TRUE | _FALSE:
        return value in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    ctx.fail(path, value, "expected a boolean")


def _to_int(value: object, path: str, ctx: _Context) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    ctx.fail(path, value, "expected an integer")


def _to_str(value: object, path: str, ctx: _Context) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    ctx.fail(path, value, "expected a string")


def _to_duration(value: object, path: str, ctx: _Context) -> float:
    try:
        return parse_duration(value)
    except ConfigError as exc:
        ctx.fail(path, value, str(exc))


def _substitute(text: str, path: str, ctx: _Context) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in ctx.env:
            ctx.warn(f"'{path}' refers to unset environment variable {name}")
            return match.group(0)
        return ctx.env[name]

    return _VAR_RE.sub(repl, text)


def _to_map(value: object, path: str, ctx: _Context) -> dict[str, str]:
    """An object (keys lower-cased, like viper) or a list of ``{key, value}`` items."""
    pairs: list[tuple[str, object]] = []
    if isinstance(value, Mapping):
        pairs = [(str(k).lower(), v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if not isinstance(item, Mapping) or "key" not in item:
                ctx.fail(f"{path}[{i}]", item, "expected an object with 'key' and 'value'")
            pairs.append((_to_str(item["key"], f"{path}[{i}].key", ctx), item.get("value", "")))
    else:
        ctx.fail(path, value, "expected an object")
    return {k: _substitute(_to_str(v, f"{path}.{k}", ctx), path, ctx) for k, v in pairs}


_SCALARS: dict[str, Callable[[object, str, _Context], object]] = {
    "bool": _to_bool,
    "int": _to_int,
    "str": _to_str,
    "duration": _to_duration,
    "map": _to_map,
}


def _as_list(value: object) -> list[object]:
    """A single value where a list is expected is a one-item list (spec §2.8.1 rule 5).

    An empty string is an empty list (so it takes the default), not ``[""]``.
    """
    if isinstance(value, list | tuple):
        return list(value)
    return [] if value == "" else [value]


def _coerce(f: _Field, value: object, path: str, ctx: _Context) -> object:
    if value is None:
        return None
    if f.kind == "struct":
        assert f.inner is not None
        return build_struct(f.inner, value, path, ctx)
    if f.kind == "list_struct":
        inner = f.inner
        assert inner is not None
        return [build_struct(inner, v, f"{path}[{i}]", ctx) for i, v in enumerate(_as_list(value))]
    if f.kind == "list_str":
        return [_to_str(v, f"{path}[{i}]", ctx) for i, v in enumerate(_as_list(value))]
    return _SCALARS[f.kind](value, path, ctx)


def _is_zero(value: object) -> bool:
    return value is None or (not isinstance(value, msgspec.Struct) and not value)


def _normalize_log_level(kwargs: dict[str, object], path: str, ctx: _Context) -> None:
    level = str(kwargs.get("level", "info")).lower()
    if level not in _LOG_LEVELS:
        ctx.warn(f"unknown log level {level!r} for '{path}.level'; using 'info'")
        level = "info"
    kwargs["level"] = level


def build_struct(cls: type[msgspec.Struct], data: object, path: str, ctx: _Context) -> Any:
    """Build ``cls`` from a raw mapping: coerce values, drop zero values, warn on unknown keys."""
    if not isinstance(data, Mapping):
        ctx.fail(path or "<root>", data, "expected an object")
    fields = schema(cls)
    kwargs: dict[str, object] = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        f = fields.get(key) if isinstance(key, str) else None
        if f is None:
            if key in _unsupported_keys(cls):
                ctx.warn(f"config key '{key_path}' is not supported by centrifuge-asgi; ignored")
            else:
                ctx.warn(f"unknown config key '{key_path}'")
            continue
        coerced = _coerce(f, value, key_path, ctx)
        if not _is_zero(coerced):  # zero means default (spec §2.8.1 rule 2)
            kwargs[f.name] = coerced
    if cls is LogConfig:
        _normalize_log_level(kwargs, path, ctx)
    return cls(**kwargs)


def config_from_mapping(
    data: Mapping[str, object],
    *,
    source: str,
    env: Mapping[str, str] | None = None,
    warnings: list[str] | None = None,
) -> Config:
    """Build and validate a :class:`Config` from a raw nested v6 mapping."""
    ctx = _Context(source, os.environ if env is None else env)
    if warnings:
        ctx.warnings.extend(warnings)
    token = _source_var.set(source)
    try:
        config: Config = build_struct(Config, data, "", ctx)
    finally:
        _source_var.reset(token)
    config.__dict__["_warnings"] = tuple(ctx.warnings)
    return config


# --------------------------------------------------------------------------- env


@functools.cache
def _env_table(cls: type[msgspec.Struct]) -> dict[str, tuple[tuple[str, ...], _Field]]:
    """Env-name suffix (``CLIENT_PING_INTERVAL``) → (key path, field) for ``cls``."""
    table: dict[str, tuple[tuple[str, ...], _Field]] = {}
    for f in schema(cls).values():
        if f.kind == "struct":
            assert f.inner is not None
            for suffix, (path, sub) in _env_table(f.inner).items():
                table[f"{f.name.upper()}_{suffix}"] = ((f.name, *path), sub)
        else:
            table[f.name.upper()] = ((f.name,), f)
    return table


@functools.cache
def _named_lists() -> list[tuple[str, tuple[str, ...], type[msgspec.Struct]]]:
    """(env prefix, key path, item struct) of every list of named items."""
    return [
        (f"CENTRIFUGO_{suffix}_", path, f.inner)
        for suffix, (path, f) in _env_table(Config).items()
        if f.kind == "list_struct" and f.inner is not None and "name" in schema(f.inner)
    ]


def _env_value(f: _Field, raw: str, name: str) -> object:
    """Turn an env string into the raw value the file would hold."""
    try:
        if f.kind == "bool":
            if raw not in _TRUE | _FALSE:
                raise ValueError("expected true/false/1/0")
            return raw in _TRUE
        if f.kind == "int":
            return int(raw)
        if f.kind == "duration":
            parse_duration(raw)
            return raw
        if f.kind == "list_str":
            return raw.split()
        if f.kind == "list_struct" and _names_only(f, raw):
            names = raw.split()
            if not names or not all(_ENV_ITEM_NAME.fullmatch(n) for n in names):
                raise ValueError("expected a JSON array or space-separated names")
            return [{"name": name} for name in names]
        if f.kind in ("list_struct", "map"):
            value = json.loads(raw)
            expected = list if f.kind == "list_struct" else dict
            if not isinstance(value, expected):
                raise ValueError(f"expected a JSON {'array' if expected is list else 'object'}")
            return value
    except (ValueError, RecursionError, ConfigError) as exc:  # RecursionError: JSON too deep
        raise ConfigError(
            f"invalid value for environment variable {name}: {raw!r}: {exc}"
        ) from None
    return raw


_ENV_ITEM_NAME = re.compile(r"[-a-zA-Z0-9_.]+")


def _names_only(f: _Field, raw: str) -> bool:
    """A named list given as space-separated names (``"chat news"``), not a JSON array.

    Centrifugo v6 reads a value that starts with ``[`` and ends with ``]`` as JSON, and
    anything else as item names whose options come from per-item variables
    (``CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_PRESENCE``).
    """
    text = raw.strip()
    named = f.inner is not None and "name" in schema(f.inner)
    return named and not (text.startswith("[") and text.endswith("]"))


def _add_named_items(data: dict[str, object], path: tuple[str, ...], names: object) -> None:
    """Append the items that ``names`` lists and the file does not have yet (as Centrifugo
    appends them to the file's list); items already there keep their options."""
    current = _get_path(data, path)
    items = list(current) if isinstance(current, list) else []
    have = {i.get("name") for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)}
    new = names if isinstance(names, list) else []
    items += [item for item in new if isinstance(item, dict) and item["name"] not in have]
    _set_path(data, path, items)


def _set_path(data: dict[str, object], path: tuple[str, ...], value: object) -> None:
    node = data
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def _get_path(data: Mapping[str, object], path: tuple[str, ...]) -> object:
    node: object = data
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _env_item_name(name: object) -> str:
    return str(name).replace(".", "_").replace("-", "_").upper()


def _apply_item_env(data: dict[str, object], name: str, raw: str) -> bool:
    """``CENTRIFUGO_CHANNEL_NAMESPACES_<NAME>_<OPTION>`` style single-item overrides."""
    for prefix, path, inner in _named_lists():
        if not name.startswith(prefix):
            continue
        items = _get_path(data, path)
        rest = name[len(prefix) :]
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, dict):
                continue
            item_prefix = _env_item_name(item.get("name", "")) + "_"
            if not rest.startswith(item_prefix):
                continue
            entry = _env_table(inner).get(rest[len(item_prefix) :])
            if entry is not None:
                _set_path(item, entry[0], _env_value(entry[1], raw, name))
                return True
    return False


def _copy_tree(value: object) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy_tree(v) for v in value]
    return value


def _merge_env(data: Mapping[str, object], env: Mapping[str, str], ctx: _Context) -> Any:
    result = _copy_tree(data)
    table = _env_table(Config)
    item_vars = []
    for name, raw in sorted(env.items()):
        if not name.startswith("CENTRIFUGO_") or name.startswith("CENTRIFUGO_VAR_") or not raw:
            continue
        entry = table.get(name[len("CENTRIFUGO_") :])
        if entry is None:
            item_vars.append((name, raw))
        elif entry[1].kind == "list_struct" and _names_only(entry[1], raw):
            _add_named_items(result, entry[0], _env_value(entry[1], raw, name))
        else:
            _set_path(result, entry[0], _env_value(entry[1], raw, name))
    for name, raw in item_vars:  # after whole-list JSON vars, so items exist
        if not _apply_item_env(result, name, raw) and not ("_PORT" in name or "_SERVICE_" in name):
            ctx.warn(f"unknown environment variable {name}")
    return result


def merge_env(data: Mapping[str, object], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Public helper behind :func:`centrifuge_asgi.config.apply_env`."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = _merge_env(data, env, _Context("environment", env))
    return merged


# --------------------------------------------------------------------------- files


def read_config_file(path: Path) -> dict[str, object]:
    """Parse a JSON, TOML or YAML file (by extension) into a mapping."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                yaml = importlib.import_module("yaml")  # optional dependency, untyped
            except ImportError:
                raise ConfigError(f"{path}: YAML config needs PyYAML installed") from None
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: unsupported config format (use .json, .toml or .yaml)")
    except ConfigError:
        raise
    except Exception as exc:  # json/toml/yaml parse errors, OSError, UnicodeDecodeError
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be an object")
    return data


def _expand_overrides(overrides: Mapping[str, object]) -> dict[str, Any]:
    """``{"a.b": 1, "a": {"c": 2}}`` → ``{"a": {"b": 1, "c": 2}}``; None values are unset."""
    result: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        nested = _copy_tree(value)
        for part in reversed(key.split(".")):
            nested = {part: nested}
        _deep_merge(result, nested)
    return result


def _deep_merge(base: dict[str, Any], extra: Mapping[str, object]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def load(
    path: str | Path | None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Implementation of :func:`centrifuge_asgi.config.load_config`."""
    env = os.environ if env is None else env
    sources: list[str] = []
    ctx = _Context("config file", env)
    data: dict[str, object] = {}
    if path is not None:
        file = Path(path)
        if file.is_file():
            data = read_config_file(file)
            sources.append(str(file))
        else:
            ctx.source = str(file)
            ctx.warn("config file not found; using defaults, environment and overrides")
    ctx.source = "environment"
    merged = _merge_env(data, env, ctx)
    if merged != data:
        sources.append("environment")
    expanded = _expand_overrides(overrides or {})
    if expanded:
        _deep_merge(merged, expanded)
        sources.append("overrides")
    source = " + ".join(sources) or "<defaults>"
    return config_from_mapping(merged, source=source, env=env, warnings=ctx.warnings)


# --------------------------------------------------------------------------- dumping


def _dump_value(f: _Field, value: Any, omit_defaults: bool) -> object:
    if f.kind == "duration":
        return format_duration(value)
    if f.kind == "struct":
        return dump_struct(value, omit_defaults=omit_defaults)
    if f.kind == "list_struct":
        return [dump_struct(v, omit_defaults=omit_defaults) for v in value]
    if f.kind == "map" and any(key != key.lower() for key in value):
        # an object's keys load lower-cased: only the list form keeps them as they are
        return [{"key": key, "value": item} for key, item in value.items()]
    if isinstance(value, list | dict):
        return value.copy()
    return value


def dump_struct(obj: msgspec.Struct, *, omit_defaults: bool = False) -> dict[str, object]:
    """A struct as a v6 nested dict (durations as Go strings)."""
    out: dict[str, object] = {}
    fields = schema(type(obj))
    for f in sorted(fields.values(), key=lambda f: f.name != "name"):  # name first
        value = getattr(obj, f.name)
        if omit_defaults and value == f.default():
            continue
        out[f.name] = _dump_value(f, value, omit_defaults)
    return out


# --------------------------------------------------------------------------- validation


@dataclass(slots=True)
class _Validator:
    """Fatal checks of spec §2.3 and §2.8.1 rule 7; raises on the first failure."""

    config: Config
    ctx: _Context
    proxy_names: set[str] = field(default_factory=set)

    def run(self) -> None:
        self.check_proxies()
        self.check_channel()
        self.check_rpc()
        self.check_client()
        self.check_engines()
        self.check_http()
        self.check_consumers()

    def fail(self, path: str, value: object, reason: str) -> typing.NoReturn:
        self.ctx.fail(path, value, reason)

    def check_name(self, path: str, name: str, seen: set[str]) -> None:
        if not _NAME_RE.match(name):
            self.fail(path, name, "must match ^[-a-zA-Z0-9_.]{2,}$")
        if name in seen:
            self.fail(path, name, "duplicate name")
        seen.add(name)

    def check_proxy_object(self, path: str, proxy: ProxyConfig) -> None:
        for i, t in enumerate(proxy.http.status_to_code_transforms):
            tpath = f"{path}.http.status_to_code_transforms[{i}]"
            if t.status_code == 0:
                self.fail(f"{tpath}.status_code", t.status_code, "status_code is required")
            if (t.to_error.code != 0) == (t.to_disconnect.code != 0):
                self.fail(tpath, t.status_code, "set exactly one of to_error, to_disconnect")

    def check_proxies(self) -> None:
        for i, proxy in enumerate(self.config.proxies):
            path = f"proxies[{i}]"
            if proxy.name == "default":
                self.fail(f"{path}.name", proxy.name, "the name 'default' is reserved")
            self.check_name(f"{path}.name", proxy.name, self.proxy_names)
            if not proxy.endpoint:
                self.fail(f"{path}.endpoint", proxy.endpoint, "endpoint is required")
            self.check_proxy_object(path, proxy)
        client, channel = self.config.client.proxy, self.config.channel.proxy
        for kind in ("connect", "refresh"):
            enabled_proxy = getattr(client, kind)
            self.check_proxy_object(f"client.proxy.{kind}", enabled_proxy)
            if enabled_proxy.enabled and not enabled_proxy.endpoint:
                self.fail(f"client.proxy.{kind}.endpoint", "", "required when enabled")
        for kind in _PROXY_OBJECTS:
            self.check_proxy_object(f"channel.proxy.{kind}", getattr(channel, kind))
        self.check_proxy_object("rpc.proxy", self.config.rpc.proxy)

    def check_proxy_ref(self, path: str, kind: str, name: str) -> None:
        """An enabled ``<kind>_proxy_name`` must name ``default`` (with an endpoint) or a proxy."""
        if name == "default":
            default = self.config.proxy(kind)
            owner = "rpc.proxy" if kind == "rpc" else f"channel.proxy.{kind}"
            # a stream namespace without a proxy endpoint is fed by node.on_subscribe_stream
            if (default is None or not default.endpoint) and kind != "subscribe_stream":
                self.fail(f"{owner}.endpoint", "", f"required: {path} uses the default proxy")
        elif name not in self.proxy_names:
            self.fail(path, name, "no proxy with this name in 'proxies'")

    def check_channel(self) -> None:
        channel = self.config.channel
        self.check_whole_seconds("channel.history_meta_ttl", channel.history_meta_ttl)
        self.check_data_format("channel", channel.publication_data_format)
        self.check_options("channel.without_namespace", channel.without_namespace)
        seen: set[str] = set()
        for i, ns in enumerate(channel.namespaces):
            path = f"channel.namespaces[{i}]"
            self.check_name(f"{path}.name", ns.name, seen)
            self.check_options(path, ns)

    def check_data_format(self, path: str, value: str) -> None:
        if value not in ("", "json", "json_object", "binary"):
            self.fail(
                f"{path}.publication_data_format", value, "must be json, json_object or binary"
            )

    def check_whole_seconds(self, path: str, value: float) -> None:
        if value != int(value):
            self.fail(path, format_duration(value), "must be a whole number of seconds")

    def check_options(self, path: str, opts: ChannelOptions) -> None:
        if opts.history_size != 0 and opts.history_ttl == 0:
            self.fail(f"{path}.history_ttl", "0s", "history_size is set, history_ttl is required")
        if opts.history_ttl != 0 and opts.history_size == 0:
            self.fail(f"{path}.history_size", 0, "history_ttl is set, history_size is required")
        self.check_whole_seconds(f"{path}.history_ttl", opts.history_ttl)
        self.check_whole_seconds(f"{path}.history_meta_ttl", opts.history_meta_ttl)
        meta = self.config.effective_history_meta_ttl(opts)
        if opts.history_ttl > meta:
            self.fail(
                f"{path}.history_ttl",
                format_duration(opts.history_ttl),
                f"greater than history_meta_ttl ({format_duration(meta)})",
            )
        if opts.force_recovery and not opts.history_enabled:
            self.fail(f"{path}.force_recovery", True, "requires history_size and history_ttl")
        if opts.force_recovery_mode not in ("", "stream", "cache"):
            self.fail(f"{path}.force_recovery_mode", opts.force_recovery_mode, "stream or cache")
        if opts.auto_cache_recover and not (
            opts.force_recovery and opts.force_recovery_mode == "cache"
        ):
            self.fail(
                f"{path}.auto_cache_recover",
                True,
                "requires force_recovery and force_recovery_mode set to cache",
            )
        for i, delta in enumerate(opts.allowed_delta_types):
            if delta != "fossil":
                self.fail(f"{path}.allowed_delta_types[{i}]", delta, "only 'fossil' is known")
        self.check_data_format(path, opts.publication_data_format)
        if opts.channel_regex:
            try:
                re.compile(opts.channel_regex)
            except (re.error, OverflowError, RecursionError) as exc:  # a{4294967296}, (((…)))
                self.fail(f"{path}.channel_regex", opts.channel_regex, f"bad regex: {exc}")
        self.check_channel_proxies(path, opts)
        self.check_map(path, opts)
        self.check_shared_poll(path, opts)

    def check_shared_poll(self, path: str, opts: ChannelOptions) -> None:
        """Centrifugo's shared poll rules (``shared_poll.*`` of a shared_poll namespace)."""
        if opts.subscription_type != "shared_poll":
            return
        sp, at = opts.shared_poll, f"{path}.shared_poll"
        if not self.config.shared_poll.hmac_secret_key:
            self.fail("shared_poll.hmac_secret_key", "", f"required: {path} is shared_poll")
        name = sp.proxy_name or "default"
        if name != "default" and name not in self.proxy_names:
            self.fail(f"{at}.proxy_name", name, "no proxy with this name in proxies")
        if sp.mode not in ("", "versionless", "versioned"):
            self.fail(f"{at}.mode", sp.mode, "versionless or versioned")
        if sp.publish_enabled and not sp.versioned:
            self.fail(f"{at}.publish_enabled", True, "requires mode versioned")
        for key in ("refresh_interval", "refresh_batch_size", "max_keys_per_connection"):
            if getattr(sp, key) <= 0:
                self.fail(f"{at}.{key}", getattr(sp, key), "must be positive")
        for key in ("channel_shutdown_delay", "track_expired_extra_delay"):
            if getattr(sp, key) < 0:
                self.fail(f"{at}.{key}", getattr(sp, key), "must not be negative")

    def check_map(self, path: str, opts: ChannelOptions) -> None:
        """Centrifugo's map subscription rules (``subscription_type`` and ``map.*``)."""
        kinds = ("", "stream", "map", "map_clients", "map_users", "shared_poll")
        if opts.subscription_type not in kinds:
            self.fail(f"{path}.subscription_type", opts.subscription_type, "unknown")
        m, at = opts.map, f"{path}.map"
        if m.mode not in ("", "ephemeral", "recoverable", "persistent"):
            self.fail(f"{at}.mode", m.mode, "ephemeral, recoverable or persistent")
        if opts.is_map and not m.mode:
            self.fail(f"{at}.mode", "", "required when subscription_type is a map type")
        if m.mode in ("ephemeral", "recoverable") and m.key_ttl <= 0:
            self.fail(f"{at}.key_ttl", format_duration(m.key_ttl), f"required for mode {m.mode}")
        if m.mode == "persistent" and m.key_ttl:
            self.fail(f"{at}.key_ttl", format_duration(m.key_ttl), "not allowed for persistent")
        if m.mode == "persistent" and opts.subscription_type in ("map_clients", "map_users"):
            self.fail(f"{at}.mode", m.mode, f"not allowed with {opts.subscription_type}")
        if m.mode == "ephemeral":
            for name in ("stream_size", "stream_ttl", "meta_ttl"):
                if getattr(m, name):
                    self.fail(f"{at}.{name}", getattr(m, name), "must be 0 for mode ephemeral")
        for name in ("stream_size", "stream_ttl", "meta_ttl"):
            if getattr(m, name) < 0:
                self.fail(f"{at}.{name}", getattr(m, name), "must not be negative")
        if m.meta_ttl and m.meta_ttl < (m.stream_ttl or 60.0):
            self.fail(f"{at}.meta_ttl", format_duration(m.meta_ttl), "must be >= stream_ttl")
        if m.remove_client_on_unsubscribe and not opts.is_map:
            self.fail(f"{at}.remove_client_on_unsubscribe", True, "requires a map type")
        if m.client_key not in ("", "client_id", "user_id"):
            self.fail(f"{at}.client_key", m.client_key, "'', client_id or user_id")
        if m.client_key and (m.publish_proxy_enabled or m.remove_proxy_enabled):
            self.fail(f"{at}.client_key", m.client_key, "cannot be combined with map proxies")
        if m.publish_proxy_enabled:
            self.check_proxy_ref(f"{at}.publish_proxy_name", "map_publish", m.publish_proxy_name)
        if m.remove_proxy_enabled:
            self.check_proxy_ref(f"{at}.remove_proxy_name", "map_remove", m.remove_proxy_name)
        for name in ("min_page_size", "max_page_size", "default_page_size"):
            if getattr(m, name) < 0:
                self.fail(f"{at}.{name}", getattr(m, name), "must not be negative")
        lo, hi, dflt = m.min_page_size, m.max_page_size, m.default_page_size
        if lo and hi and lo > hi:
            self.fail(f"{at}.min_page_size", lo, f"exceeds max_page_size ({hi})")
        if dflt and hi and dflt > hi:
            self.fail(f"{at}.default_page_size", dflt, f"exceeds max_page_size ({hi})")
        if dflt and lo and dflt < lo:
            self.fail(f"{at}.default_page_size", dflt, f"below min_page_size ({lo})")
        for key, kind in (
            ("map_clients_presence_channel_prefix", "map_clients"),
            ("map_users_presence_channel_prefix", "map_users"),
        ):
            prefix = getattr(opts, key)
            if prefix and self.prefix_type(prefix) != kind:
                self.fail(f"{path}.{key}", prefix, f"must lead to a {kind} namespace")

    def prefix_type(self, prefix: str) -> str:
        """The subscription type of the namespace channels starting with ``prefix`` are in."""
        boundary = self.config.channel.namespace_boundary
        name = prefix.split(boundary, 1)[0] if boundary in prefix else ""
        for ns in self.config.channel.namespaces:
            if ns.name == name:
                return ns.subscription_type or "stream"
        if not name:
            return self.config.channel.without_namespace.subscription_type or "stream"
        return ""

    def check_channel_proxies(self, path: str, opts: ChannelOptions) -> None:
        if opts.subscribe_stream_proxy_enabled and (
            opts.subscribe_proxy_enabled
            or opts.publish_proxy_enabled
            or opts.sub_refresh_proxy_enabled
        ):
            self.fail(
                f"{path}.subscribe_stream_proxy_enabled",
                True,
                "cannot be combined with subscribe, publish or sub_refresh proxies",
            )
        for kind in _CHANNEL_PROXY_KINDS:
            if getattr(opts, f"{kind}_proxy_enabled"):
                name = getattr(opts, f"{kind}_proxy_name")
                self.check_proxy_ref(f"{path}.{kind}_proxy_name", kind, name)
        if opts.subscribe_stream_proxy_enabled:  # streams exist over gRPC only
            name = opts.subscribe_stream_proxy_name
            stream = self.config.proxy("subscribe_stream", name)
            if stream is not None and stream.endpoint and not stream.endpoint.startswith("grpc://"):
                owner = (
                    f"proxies[{name}]"
                    if name not in ("", "default")
                    else "channel.proxy.subscribe_stream"
                )
                self.fail(f"{owner}.endpoint", stream.endpoint, "a subscribe stream needs grpc://")

    def check_rpc(self) -> None:
        rpc = self.config.rpc
        if rpc.without_namespace.proxy_enabled:
            name = rpc.without_namespace.proxy_name
            self.check_proxy_ref("rpc.without_namespace.proxy_name", "rpc", name)
        seen: set[str] = set()
        for i, ns in enumerate(rpc.namespaces):
            path = f"rpc.namespaces[{i}]"
            self.check_name(f"{path}.name", ns.name, seen)
            if ns.proxy_enabled:
                self.check_proxy_ref(f"{path}.proxy_name", "rpc", ns.proxy_name)

    def check_client(self) -> None:
        client = self.config.client
        if client.ping_interval <= client.pong_timeout:
            self.fail(
                "client.ping_interval",
                format_duration(client.ping_interval),
                f"must be greater than pong_timeout {format_duration(client.pong_timeout)}",
            )
        if client.concurrency < 0:
            self.fail("client.concurrency", client.concurrency, "must not be negative")
        for kind in ("client_command", "user_command"):
            self.check_rate_limit(f"client.rate_limit.{kind}", getattr(client.rate_limit, kind))
        for key in ("token", "subscription_token"):
            claim = getattr(client, key).user_id_claim
            if claim and not _CLAIM_RE.match(claim):
                self.fail(f"client.{key}.user_id_claim", claim, "must match ^[a-zA-Z_]+$")
        personal = client.subscribe_to_user_personal_channel
        if personal.enabled:
            path = "client.subscribe_to_user_personal_channel"
            name = personal.personal_channel_namespace
            channel = self.config.channel
            opts: ChannelOptions | None = channel.without_namespace
            if name:
                opts = next((ns for ns in channel.namespaces if ns.name == name), None)
            if opts is None:
                self.fail(f"{path}.personal_channel_namespace", name, "no such channel namespace")
            if personal.single_connection and not opts.presence:
                self.fail(
                    f"{path}.single_connection", True, f"namespace {name!r} must enable presence"
                )

    def check_rate_limit(self, path: str, limit: object) -> None:
        """Every bucket of ``client.rate_limit``: a positive rate and interval; overrides name
        their method or namespace."""
        entries: list[tuple[str, object]] = [(path, limit)]
        while entries:
            at, entry = entries.pop()
            for f in msgspec.structs.fields(type(entry)):  # type: ignore[arg-type]
                value = getattr(entry, f.name)
                if f.name == "buckets":
                    for i, bucket in enumerate(value):
                        if bucket.rate < 1:
                            self.fail(f"{at}.buckets[{i}].rate", bucket.rate, "must be >= 1")
                        if bucket.interval <= 0:
                            interval = format_duration(bucket.interval)
                            self.fail(f"{at}.buckets[{i}].interval", interval, "must be > 0")
                elif f.name in ("method", "namespace_name") and not value:
                    self.fail(f"{at}.{f.name}", value, "required")
                elif isinstance(value, msgspec.Struct):
                    entries.append((f"{at}.{f.name}", value))
                elif isinstance(value, list):
                    entries += [(f"{at}.{f.name}[{i}]", v) for i, v in enumerate(value)]

    def check_engines(self) -> None:
        config = self.config
        if config.engine.type not in ("memory", "redis"):
            self.fail("engine.type", config.engine.type, "must be memory or redis")
        if config.broker.type not in ("memory", "redis", "nats", "postgres", "redisnats"):
            self.fail(
                "broker.type",
                config.broker.type,
                "must be memory, redis, nats, postgres, redisnats",
            )
        if config.presence_manager.type not in ("memory", "redis"):
            self.fail("presence_manager.type", config.presence_manager.type, "memory or redis")
        if config.map_broker.type not in ("memory", "redis"):
            self.fail("map_broker.type", config.map_broker.type, "memory or redis")

    def check_http(self) -> None:
        config = self.config
        if config.http_api.error_mode not in ("", "transport"):
            self.fail("http_api.error_mode", config.http_api.error_mode, "must be '' or transport")
        if config.grpc_api.error_mode not in ("", "transport"):
            self.fail("grpc_api.error_mode", config.grpc_api.error_mode, "must be '' or transport")
        for key, port in (
            ("grpc_api.port", config.grpc_api.port),
            ("uni_grpc.port", config.uni_grpc.port),
        ):
            if not 0 < port < 65536:
                self.fail(key, port, "must be a TCP port (1-65535)")
        for section in type(config).__struct_fields__:
            prefix = getattr(getattr(config, section), "handler_prefix", None)
            if isinstance(prefix, str) and prefix and not prefix.startswith("/"):
                self.fail(f"{section}.handler_prefix", prefix, "must start with '/' (or be empty)")
        server = config.http_server
        if server.h2c_external and (
            server.internal_port in ("", str(server.port)) or server.tls.enabled
        ):
            self.fail("http_server.h2c_external", True, "needs a separate internal_port, no TLS")

    def check_consumers(self) -> None:
        """``consumers[]``: Centrifugo's name rule, a known type, required keys when enabled."""
        seen: set[str] = set()
        for i, consumer in enumerate(self.config.consumers):
            path = f"consumers[{i}]"
            if not _CONSUMER_NAME_RE.match(consumer.name):
                self.fail(f"{path}.name", consumer.name, "must match ^[a-zA-Z0-9_]{2,}$")
            if consumer.name in seen:
                self.fail(f"{path}.name", consumer.name, "duplicate name")
            seen.add(consumer.name)
            kind = consumer.type
            if kind in _CONSUMER_TYPES_ELSEWHERE:
                if consumer.enabled:
                    self.fail(f"{path}.type", kind, "not supported by centrifuge-asgi")
                continue
            if kind not in _CONSUMER_TYPES:
                self.fail(f"{path}.type", kind, "must be " + ", ".join(_CONSUMER_TYPES))
            if consumer.enabled:
                self.check_consumer_options(f"{path}.{kind}", getattr(consumer, kind))

    def check_consumer_options(self, path: str, opts: object) -> None:
        required = _CONSUMER_REQUIRED[path.rpartition(".")[2]]
        for key in required:
            if not getattr(opts, key):
                self.fail(f"{path}.{key}", getattr(opts, key), "required when enabled")
        for key in ("num_partitions", "partition_select_limit", "num_workers", "max_ack_pending"):
            if getattr(opts, key, 1) < 1:
                self.fail(f"{path}.{key}", getattr(opts, key), "must be at least 1")
        mode = getattr(opts, "publication_data_mode", None)
        if mode is not None and mode.enabled:
            self.fail(f"{path}.publication_data_mode.enabled", True, "not supported")
        policy = getattr(opts, "deliver_policy", "new")
        if policy not in ("new", "all"):
            self.fail(f"{path}.deliver_policy", policy, "must be new or all")
        if getattr(opts, "cluster_address", None) or getattr(opts, "sentinel_address", None):
            self.fail(f"{path}.address", "", "Redis Cluster and Sentinel are not supported here")
        tls = getattr(opts, "tls", None)
        if tls is not None and tls.enabled:
            self.fail(f"{path}.tls.enabled", True, "not supported (use sslmode= or rediss://)")
        table = getattr(opts, "outbox_table_name", "")
        if table and not _TABLE_NAME_RE.match(table):
            self.fail(f"{path}.outbox_table_name", table, "must be [schema.]table (letters, _)")


def validate_config(config: Config, source: str) -> None:
    """Raise :class:`ConfigError` naming key, value and source when ``config`` is invalid."""
    _Validator(config, _Context(source, {})).run()


use_loader(Loader(validate_config, config_from_mapping, dump_struct, load, merge_env))
