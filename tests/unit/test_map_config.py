"""Namespace ``subscription_type``, the ``map`` block and ``map_broker`` (Centrifugo's rules)."""

from __future__ import annotations

from typing import Any

import pytest

from centrifuge_asgi.config import Config
from centrifuge_asgi.errors import ConfigError


def _ns(**opts: Any) -> dict[str, Any]:
    return {"channel": {"namespaces": [{"name": "mm", **opts}]}}


def test_map_namespace_loads_with_defaults() -> None:
    cfg = Config.from_dict(
        {
            "map_broker": {"type": "redis"},
            **_ns(subscription_type="map", map={"mode": "persistent"}),
        }
    )
    ns = cfg.channel.namespaces[0]
    assert ns.is_map and ns.map.mode == "persistent" and ns.map.has_stream
    assert cfg.map_broker.type == "redis" and cfg.map_broker.redis.cleanup_interval == 1.0
    assert not any("subscription_type" in w or "map_broker" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    ("opts", "path", "reason"),
    [
        ({"subscription_type": "bogus"}, "subscription_type", "unknown"),
        ({"subscription_type": "map"}, "map.mode", "required"),
        ({"subscription_type": "map", "map": {"mode": "x"}}, "map.mode", "ephemeral"),
        ({"subscription_type": "map", "map": {"mode": "ephemeral"}}, "map.key_ttl", "required"),
        (
            {"subscription_type": "map", "map": {"mode": "persistent", "key_ttl": "1s"}},
            "map.key_ttl",
            "persistent",
        ),
        (
            {"subscription_type": "map_users", "map": {"mode": "persistent"}},
            "map.mode",
            "map_users",
        ),
        (
            {
                "subscription_type": "map",
                "map": {"mode": "ephemeral", "key_ttl": "5s", "stream_size": 5},
            },
            "map.stream_size",
            "ephemeral",
        ),
        (
            {"subscription_type": "map", "map": {"mode": "persistent", "client_key": "x"}},
            "map.client_key",
            "client_id",
        ),
        (
            {
                "subscription_type": "map",
                "map": {"mode": "persistent", "min_page_size": 10, "max_page_size": 5},
            },
            "map.min_page_size",
            "exceeds",
        ),
        (
            {"map": {"remove_client_on_unsubscribe": True}},
            "map.remove_client_on_unsubscribe",
            "map",
        ),
        (
            {"map_clients_presence_channel_prefix": "nope:"},
            "map_clients_presence_channel_prefix",
            "map_clients",
        ),
    ],
)
def test_bad_map_options_name_the_key(opts: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        Config.from_dict(_ns(**opts), source="cfg.json")
    text = str(err.value)
    assert f"channel.namespaces[0].{path}" in text and reason in text and "cfg.json" in text


def test_presence_prefix_must_name_a_map_clients_namespace() -> None:
    cfg = Config.from_dict(
        {
            "channel": {
                "namespaces": [
                    {"name": "game", "map_clients_presence_channel_prefix": "clients:"},
                    {
                        "name": "clients",
                        "subscription_type": "map_clients",
                        "map": {"mode": "recoverable", "key_ttl": "60s"},
                    },
                ]
            }
        }
    )
    assert cfg.channel.namespaces[0].map_clients_presence_channel_prefix == "clients:"


def test_map_broker_type_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"map_broker\.type"):
        Config.from_dict({"map_broker": {"type": "postgres"}})
