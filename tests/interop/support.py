"""Shared server setup for interop tests: one standard config, tokens, a node factory."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from centrifuge_asgi.auth import connection_token, subscription_token
from centrifuge_asgi.handlers import RPCEvent
from centrifuge_asgi.node import Node

SECRET = "interop-secret"
WS_PATH = "/connection/websocket"

_OPEN = {
    "allow_subscribe_for_client": True,
    "allow_publish_for_subscriber": True,
    "allow_presence_for_subscriber": True,
    "allow_history_for_subscriber": True,
}

BASE_CONFIG: dict[str, Any] = {
    "client": {
        "token": {"hmac_secret_key": SECRET},
        "allowed_origins": ["*"],
    },
    "channel": {
        "without_namespace": dict(_OPEN),
        "namespaces": [
            # plain pub/sub with presence and join/leave
            {
                "name": "chat",
                **_OPEN,
                "presence": True,
                "join_leave": True,
                "force_push_join_leave": True,
            },
            # history + recovery
            {
                "name": "news",
                **_OPEN,
                "history_size": 10,
                "history_ttl": "300s",
                "force_recovery": True,
                "presence": True,
            },
            # like news, for binary payloads (Protobuf clients): nothing checks the data
            {
                "name": "bin",
                **_OPEN,
                "history_size": 10,
                "history_ttl": "300s",
                "force_recovery": True,
                "presence": True,
                "publication_data_format": "binary",
            },
            # tiny history to test trimmed recovery
            {
                "name": "tiny",
                **_OPEN,
                "history_size": 2,
                "history_ttl": "300s",
                "force_recovery": True,
            },
            # history + recovery, and subscribers may pass a tags filter
            {
                "name": "tags",
                **_OPEN,
                "history_size": 20,
                "history_ttl": "300s",
                "force_recovery": True,
                "allow_tags_filter": True,
            },
            # nothing allowed: needs a subscription token or a handler
            {"name": "secret", "presence": True},
            # user-limited channels
            {"name": "dm", "allow_user_limited_channels": True},
        ],
    },
}


def make_config(**client_overrides: Any) -> dict[str, Any]:
    """A deep copy of BASE_CONFIG with ``client.*`` keys overridden."""
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["client"].update(client_overrides)
    return cfg


def make_node(config: dict[str, Any] | None = None) -> Node:
    return Node(config if config is not None else make_config())


def token(user: str, ttl: float | None = 3600, **claims: Any) -> str:
    return connection_token(user, SECRET, ttl=ttl, **claims)


def sub_token(user: str, channel: str, ttl: float | None = 3600, **claims: Any) -> str:
    return subscription_token(user, channel, SECRET, ttl=ttl, **claims)


EVENTUALLY_SECONDS = 5.0


async def eventually(read: Callable[[], Awaitable[Any]], expected: Any) -> None:
    """Poll server-side state (it lives on the server's loop) until it equals ``expected``."""
    last: Any = None
    timeout = EVENTUALLY_SECONDS
    with anyio.move_on_after(timeout):
        while True:
            last = await read()
            if last == expected:
                return
            await anyio.sleep(0.02)
    raise AssertionError(f"still {last!r} after {timeout} s, expected {expected!r}")


def recovery_events(missed: int, recovered: bool) -> list[dict[str, Any]]:
    """What ``sdk_recovery.mjs`` / ``protobuf_recovery.mjs`` report after a forced reconnect.

    One publication before the reconnect, ``missed`` while away, one after. Recovered:
    the position is the client's (1) and the missed ones follow; else the stream top.
    """
    last = missed + 2
    after = [{"pub": n, "n": n} for n in range(2, last)] if recovered else []
    return [
        {"subscribed": {"wasRecovering": False, "recovered": False}, "offset": 0},
        {"pub": 1, "n": 1},
        {
            "subscribed": {"wasRecovering": True, "recovered": recovered},
            "offset": 1 if recovered else last - 1,
        },
        *after,
        {"pub": last, "n": last},
    ]


def add_tagged_publish_rpcs(node: Node) -> None:
    """RPCs of ``sdk_tags_filter.mjs``: ``publish_tagged {channel, items: [{data, tags}]}``
    and ``drop_and_publish_tagged``, which first disconnects the caller's user with 3011."""

    @node.on_rpc("publish_tagged")
    async def rpc_publish_tagged(event: RPCEvent) -> Any:
        for item in event.data["items"]:
            await node.publish(event.data["channel"], item["data"], tags=item.get("tags"))
        return {}

    @node.on_rpc("drop_and_publish_tagged")
    async def rpc_drop_and_publish_tagged(event: RPCEvent) -> Any:
        await node.disconnect(event.client.user, code=3011, reason="force reconnect")
        return await rpc_publish_tagged(event)


# What sdk_tags_filter.mjs reports: the filter (ticker in AAPL/MSFT and price > 100) lets
# 1 and 5 through live, recovery returns only 8 of 6..9 (at the client's offset, 5), then 10.
TAGS_FILTER_EVENTS: list[dict[str, Any]] = [
    {"subscribed": {"wasRecovering": False, "recovered": False}, "offset": 0},
    {"n": 1, "offset": 1, "tags": {"ticker": "AAPL", "price": "150.25"}},
    {"n": 5, "offset": 5, "tags": {"ticker": "MSFT", "price": "100.01"}},
    {"subscribed": {"wasRecovering": True, "recovered": True}, "offset": 5},
    {"n": 8, "offset": 8, "tags": {"ticker": "AAPL", "price": "1000"}},
    {"n": 10, "offset": 10, "tags": {"ticker": "AAPL", "price": "101"}},
]
TAGS_FILTER_RESULT: dict[str, Any] = {
    "events": TAGS_FILTER_EVENTS,
    "seenAll": [1, 2, 3, 4, 5],
    "refusedNs": {"code": 107, "reason": "bad request"},
    "refusedTree": {"code": 107, "reason": "bad request"},
}
