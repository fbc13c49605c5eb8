"""Operation rate limits (``client.rate_limit``, Centrifugo PRO semantics), sans-I/O."""

from __future__ import annotations

from typing import Any

import pytest

from centrifuge_asgi import Config
from centrifuge_asgi.config import load_config
from centrifuge_asgi.errors import ConfigError
from centrifuge_asgi.op_limits import MAX_USERS, Buckets, OperationLimits

SECOND = [{"interval": "1s", "rate": 2}]


def limits(**rate_limit: Any) -> OperationLimits:
    cfg = Config.from_dict({"client": {"rate_limit": rate_limit}})
    result = OperationLimits.of(cfg.client.rate_limit)
    assert result is not None
    return result


def run(
    lim: OperationLimits,
    held: dict[str, Buckets],
    n: int,
    command: str = "publish",
    *,
    now: float = 0.0,
    user: str = "",
    namespace: str | None = "",
    rpc_method: str = "",
) -> list[bool]:
    return [lim.allow(held, user, command, namespace, rpc_method, now) for _ in range(n)]


def test_off_unless_enabled() -> None:
    assert OperationLimits.of(Config().client.rate_limit) is None
    cfg = Config.from_dict(
        {"client": {"rate_limit": {"client_command": {"publish": {"enabled": True}}}}}
    )
    assert OperationLimits.of(cfg.client.rate_limit) is None


def test_bucket_starts_full_and_refills_at_rate_per_interval() -> None:
    lim = limits(client_command={"enabled": True, "publish": {"enabled": True, "buckets": SECOND}})
    held: dict[str, Buckets] = {}
    assert run(lim, held, 3) == [True, True, False]
    assert run(lim, held, 1, now=0.49) == [False]  # 0.98 of a token
    assert run(lim, held, 2, now=0.5) == [True, False]
    assert run(lim, held, 3, now=100.0) == [True, True, False]  # never above the rate
    assert run(lim, held, 5, "history") == [True] * 5  # no bucket for history, no default


def test_every_bucket_must_have_a_token_and_none_is_taken_otherwise() -> None:
    buckets = [{"interval": "1s", "rate": 1}, {"interval": "10s", "rate": 3}]
    lim = limits(client_command={"enabled": True, "rpc": {"enabled": True, "buckets": buckets}})
    held: dict[str, Buckets] = {}
    # the 10 s bucket regains 0.3 a second: 3 -> 2 (t=0) -> 1.3 (t=1) -> 0.6 (t=2) -> 0.9
    got = [lim.allow(held, "", "rpc", None, "m", t) for t in (0, 0.5, 1, 2, 3, 3.2, 3.4)]
    # at t=3 the 1 s bucket kept its token: at 3.4 it still has one (else it would hold 0.4)
    assert got == [True, False, True, True, False, False, True]


def test_default_total_and_overrides() -> None:
    one = [{"interval": "1s", "rate": 1}]
    lim = limits(
        client_command={
            "enabled": True,
            "default": {"enabled": True, "buckets": SECOND},
            "total": {"enabled": True, "buckets": [{"interval": "1s", "rate": 4}]},
            "publish": {
                "enabled": True,
                "buckets": one,
                "namespace_overrides": [
                    {"namespace_name": "chat", "enabled": True, "buckets": SECOND}
                ],
            },
            "rpc": {
                "enabled": True,
                "buckets": SECOND,
                "method_overrides": [{"method": "slow", "enabled": True, "buckets": one}],
            },
        }
    )
    held: dict[str, Buckets] = {}
    assert run(lim, held, 2, "publish", namespace="") == [True, False]  # own bucket: 1/s
    assert run(lim, held, 3, "publish", namespace="chat") == [True, True, False]  # replaced
    assert run(lim, held, 1, "history") == [True]  # default (shared by every command)
    # total (4/s) is spent: 1 publish + 2 chat + 1 history; refused ones took nothing
    assert run(lim, held, 1, "presence") == [False]
    later: dict[str, Buckets] = {}
    assert run(lim, later, 2, "rpc", namespace=None, rpc_method="slow") == [True, False]
    assert run(lim, later, 3, "rpc", namespace=None, rpc_method="x") == [True, True, False]
    assert run(lim, later, 1, "presence") == [True]  # total 4: 1 + 2 + 1
    assert run(lim, later, 1, "history") == [False]


def test_user_limits_are_shared_by_a_users_connections_and_skip_anonymous() -> None:
    lim = limits(
        user_command={
            "enabled": True,
            "connect": {"enabled": True, "buckets": [{"interval": "1m", "rate": 1}]},
            "publish": {"enabled": True, "buckets": SECOND},
        }
    )
    a: dict[str, Buckets] = {}
    b: dict[str, Buckets] = {}
    assert run(lim, a, 1, user="u1") + run(lim, b, 2, user="u1") == [True, True, False]
    assert run(lim, b, 2, user="u2") == [True, True]
    assert run(lim, a, 5, user="") == [True] * 5
    assert run(lim, a, 2, "connect", user="u3", namespace=None) == [True, False]
    assert a == b == {}  # per-user buckets live in the limiter, not in the connection


def test_per_user_memory_is_bounded() -> None:
    lim = limits(user_command={"enabled": True, "publish": {"enabled": True, "buckets": SECOND}})
    held: dict[str, Buckets] = {}
    for i in range(MAX_USERS + 10):
        lim.allow(held, f"u{i}", "publish", "", "", 0.0)
    assert lim.users_held == MAX_USERS


def test_client_command_does_not_limit_connect() -> None:
    lim = limits(client_command={"enabled": True, "default": {"enabled": True, "buckets": SECOND}})
    assert run(lim, {}, 5, "connect", user="u1", namespace=None) == [True] * 5


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        (
            {"publish": {"enabled": True, "buckets": [{"interval": "1s"}]}},
            "publish.buckets[0].rate",
        ),
        ({"total": {"enabled": True, "buckets": [{"rate": 1}]}}, "total.buckets[0].interval"),
        ({"rpc": {"method_overrides": [{"enabled": True}]}}, "rpc.method_overrides[0].method"),
        (
            {"history": {"namespace_overrides": [{"buckets": SECOND}]}},
            "history.namespace_overrides[0].namespace_name",
        ),
    ],
)
def test_config_errors_name_the_key_and_source(entry: dict[str, Any], key: str) -> None:
    data = {"client": {"rate_limit": {"client_command": {"enabled": True, **entry}}}}
    with pytest.raises(ConfigError) as exc:
        Config.from_dict(data, source="x.json")
    message = str(exc.value)
    assert f"'client.rate_limit.client_command.{key}'" in message
    assert "(source: x.json)" in message


def test_other_pro_rate_limit_keys_warn_as_not_supported() -> None:
    cfg = Config.from_dict(
        {
            "client": {
                "rate_limit": {
                    "redis_user_command": {"enabled": True},
                    "client_command": {
                        "enabled": True,
                        "map_publish": {"enabled": True},
                        "rpc": {"method_override": {"m": {"enabled": True}}},
                    },
                }
            }
        },
        source="x.json",
    )
    assert cfg.warnings == (
        "config key 'client.rate_limit.redis_user_command' is not supported by "
        "centrifuge-asgi; ignored (source: x.json)",
        "config key 'client.rate_limit.client_command.map_publish' is not supported by "
        "centrifuge-asgi; ignored (source: x.json)",
        "config key 'client.rate_limit.client_command.rpc.method_override' is not supported "
        "by centrifuge-asgi; ignored (source: x.json)",
    )


def test_environment_variables() -> None:
    env = {
        "CENTRIFUGO_CLIENT_CONCURRENCY": "8",
        "CENTRIFUGO_CLIENT_RATE_LIMIT_USER_COMMAND_ENABLED": "true",
        "CENTRIFUGO_CLIENT_RATE_LIMIT_USER_COMMAND_CONNECT_ENABLED": "true",
        "CENTRIFUGO_CLIENT_RATE_LIMIT_USER_COMMAND_CONNECT_BUCKETS": '[{"interval":"1m","rate":1}]',
    }
    cfg = load_config(None, env=env)
    assert cfg.client.concurrency == 8
    lim = OperationLimits.of(cfg.client.rate_limit)
    assert lim is not None
    assert run(lim, {}, 2, "connect", user="u1", namespace=None) == [True, False]
