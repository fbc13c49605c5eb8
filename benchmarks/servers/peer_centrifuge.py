"""centrifuge-asgi as a benchmark peer: anonymous clients may subscribe and publish.

The load generator publishes as a client (``{"id":N,"publish":{...}}``), so every peer
does the same work per publication: read one frame from the publisher, fan out.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from centrifuge_asgi import ConfigError, Node

_OPEN = {
    "allow_subscribe_for_client": True,
    "allow_subscribe_for_anonymous": True,
    "allow_publish_for_client": True,
    "allow_publish_for_anonymous": True,
}


def config(args: argparse.Namespace) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "client": {"allow_anonymous_connect_without_token": True},
        "channel": {"without_namespace": dict(_OPEN)},
    }
    if getattr(args, "client_ping_interval", None):  # connect_instructions.py --no-pings
        cfg["client"]["ping_interval"] = f"{args.client_ping_interval}s"
    if os.environ.get("BENCH_PROMETHEUS"):  # metrics on: what they cost the fan-out
        cfg["prometheus"] = {"enabled": True}
    if args.broker == "redis":
        cfg["engine"] = {
            "type": "redis",
            "redis": {"address": ["redis://127.0.0.1:6379"], "prefix": args.redis_prefix},
        }
    return cfg


def build_app(args: argparse.Namespace) -> Any:
    """The node's Starlette app (``/connection/websocket``), lifespan included, with the
    collector set as ``centrifuge-asgi serve`` sets it (``centrifuge_asgi/collector.py``)."""
    app = Node(config(args)).asgi_app()
    with contextlib.suppress(ImportError):  # a tree from before the setting existed
        from centrifuge_asgi.collector import tune_for_serving

        tune_for_serving()
    return app


def available(args: argparse.Namespace) -> str:
    """Empty when this configuration can be served, else why not."""
    try:
        Node(config(args))
    except ConfigError as exc:
        return str(exc)
    return ""
