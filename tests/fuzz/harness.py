"""What the session and server API fuzz tests share: a node's config with channels of every
kind (stream, fossil delta, map, shared poll), the channels, tokens and shared poll
signatures commands name, a node on its own event loop (with a shared poll refresh
handler), and a log handler that collects ERROR records (a traceback logged is a crash
caught too late)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread

from centrifuge_asgi import Node, SharedPollRefreshEvent, SharedPollRefreshReply, SharedPollResult
from centrifuge_asgi.auth import connection_token, subscription_token
from centrifuge_asgi.shared_poll import make_signature

from .known import pending_record

SECRET = "fuzz-secret"
POLL_SECRET = "fuzz-poll-secret"
_OPEN = {
    "allow_subscribe_for_client": True,
    "allow_publish_for_subscriber": True,
    "allow_presence_for_subscriber": True,
    "allow_history_for_subscriber": True,
}
_HISTORY = {"history_size": 5, "history_ttl": "60s", "force_recovery": True}
CONFIG: dict[str, Any] = {
    "client": {"token": {"hmac_secret_key": SECRET}, "allowed_origins": ["*"]},
    "channel": {
        "without_namespace": dict(_OPEN),
        "namespaces": [
            {"name": "chat", **_OPEN, "presence": True, "join_leave": True},
            {"name": "news", **_OPEN, **_HISTORY, "presence": True},
            {"name": "bin", **_OPEN, **_HISTORY, "publication_data_format": "binary"},
            {"name": "obj", **_OPEN, **_HISTORY, "publication_data_format": "json_object"},
            {"name": "secret", "presence": True},
            {"name": "dm", **_OPEN, "allow_user_limited_channels": True},
            {"name": "delta", **_OPEN, **_HISTORY, "allowed_delta_types": ["fossil"]},
            {
                "name": "map",
                "subscription_type": "map",
                "allow_subscribe_for_client": True,
                "allowed_delta_types": ["fossil"],
                "map": {
                    "mode": "recoverable",
                    "key_ttl": "60s",
                    "stream_size": 20,
                    "allow_publish_for_subscriber": True,
                    "allow_remove_for_subscriber": True,
                },
            },
            {
                "name": "cursor",
                "subscription_type": "map",
                "allow_subscribe_for_client": True,
                "publication_data_format": "json_object",
                "map": {
                    "mode": "ephemeral",
                    "key_ttl": "30s",
                    "client_key": "client_id",
                    "allow_publish_for_subscriber": True,
                },
            },
            {
                "name": "poll",
                "subscription_type": "shared_poll",
                "allow_subscribe_for_client": True,
                "allowed_delta_types": ["fossil"],
                "shared_poll": {
                    "mode": "versioned",
                    "publish_enabled": True,
                    "max_keys_per_connection": 5,
                    "refresh_interval": "1s",
                },
            },
            {
                "name": "pollx",
                "subscription_type": "shared_poll",
                "allow_subscribe_for_client": True,
                "shared_poll": {"refresh_interval": "1s"},
            },
        ],
    },
    "shared_poll": {"hmac_secret_key": POLL_SECRET},
}
CHANNELS = [
    "news:a",
    "chat:a",
    "bin:a",
    "obj:a",
    "secret:s",
    "dm:#u1,u2",
    "dm:#u2",
    "delta:a",
    "map:a",
    "cursor:a",
    "poll:a",
    "pollx:a",
    "a",
    "",
    "nope:x",
    "$p",
    "x" * 300,
]
TOKEN = connection_token("u1", SECRET, ttl=86_400)
TOKENS = [
    TOKEN,
    connection_token("", SECRET, ttl=86_400),
    connection_token("u1", SECRET, ttl=-10),
    connection_token("u1", SECRET, ttl=86_400, channel="news:a"),
    connection_token("u1", SECRET, ttl=86_400, channels=["news:a", "nope:x", ""]),
    connection_token("u1", SECRET, ttl=86_400, subs={"chat:a": {"data": {"x": 1}}}),
    connection_token("u1", SECRET, ttl=86_400, b64info="\u0080"),  # was a crash (auth.py)
    connection_token("u1", "other-secret", ttl=86_400),
    subscription_token("u1", "secret:s", SECRET, ttl=86_400),
    subscription_token("u1", "secret:s", SECRET, ttl=-10),
    subscription_token("u2", "secret:s", SECRET, ttl=86_400),
    "a.b.c",
]
POLL_KEYS = [["k1"], ["k1", "k2"], ["k2", "gone"], ["k1", "k2", "k3", "k4", "k5", "k6"]]
SIGNATURES = [  # shared poll track batches: (signature, keys) a u1 client may send
    *(
        (make_signature(POLL_SECRET, "u1", ch, keys, ttl=86_400), keys)
        for ch in ("poll:a", "pollx:a")
        for keys in POLL_KEYS
    ),
    (make_signature(POLL_SECRET, "u1", "poll:a", ["k1"], now=1, ttl=10), ["k1"]),  # expired
    (make_signature(POLL_SECRET, "u2", "poll:a", ["k1"]), ["k1"]),  # another user's
    (make_signature("other-secret", "u1", "poll:a", ["k1"]), ["k1"]),
    ("1:0:zz", ["k1"]),
]


async def refresh(event: SharedPollRefreshEvent) -> SharedPollRefreshReply:
    """The shared poll backend: key ``gone`` is removed, the others change every call."""
    items = [
        SharedPollResult(i.key, removed=True)
        if i.key == "gone"
        else SharedPollResult(i.key, {"v": i.version}, min(i.version + 1, 2**64 - 1))
        for i in event.items
    ]
    return SharedPollRefreshReply(items)


class ErrorRecords(logging.Handler):
    """Every record at ERROR or above, from any logger and thread, while installed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> ErrorRecords:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)

    def check(self) -> None:
        messages = [self.format(r) for r in self.records if pending_record(r) is None]
        assert not messages, messages


@dataclass
class Served:
    portal: anyio.from_thread.BlockingPortal
    node: Node


@contextmanager
def serve(config: dict[str, Any]) -> Iterator[Served]:
    """A running node on an event loop of its own (a blocking portal): the examples are
    sync, and one node serves all the examples of a test module."""
    node = Node(config)
    node.on_shared_poll_refresh(refresh)
    with (
        anyio.from_thread.start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(node),
    ):
        yield Served(portal, node)
