"""What the session and server API fuzz tests share: a node's config with channels of every
kind, the channels and tokens commands name, a node on its own event loop, and a log
handler that collects ERROR records (a traceback logged is a crash caught too late)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread

from centrifuge_asgi import Node
from centrifuge_asgi.auth import connection_token, subscription_token

from .known import pending_record

SECRET = "fuzz-secret"
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
        ],
    },
}
CHANNELS = [
    "news:a",
    "chat:a",
    "bin:a",
    "obj:a",
    "secret:s",
    "dm:#u1,u2",
    "dm:#u2",
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
    with (
        anyio.from_thread.start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(Node(config)) as node,
    ):
        yield Served(portal, node)
