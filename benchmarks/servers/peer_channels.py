"""Django Channels as a benchmark peer: one AsyncWebsocketConsumer, groups per channel.

``--broker memory`` uses ``InMemoryChannelLayer``; ``--broker redis`` uses channels_redis'
``RedisChannelLayer`` on 127.0.0.1:6379 with a unique prefix. Both get a capacity of
10,000 messages per consumer so that a 200-publication burst is not silently dropped
(the default, 100, drops group messages once a consumer falls behind).

Wire protocol (shared with both floors): ``{"op":"sub","ch":C}`` answered with
``{"ok":"sub","ch":C}``; ``{"op":"pub","ch":C,"data":D}`` delivers ``{"ch":C,"data":D}``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import django
from django.conf import settings

CAPACITY = 10_000


def _configure(args: argparse.Namespace) -> None:
    if args.broker == "redis":
        layer = {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": ["redis://127.0.0.1:6379/0"],
                "prefix": f"{args.redis_prefix}-channels",
                "capacity": CAPACITY,
            },
        }
    else:
        layer = {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": CAPACITY},
        }
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark-only",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={"default": layer},
        USE_TZ=True,
    )
    django.setup()


def build_app(args: argparse.Namespace) -> Any:
    _configure(args)
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    class BenchConsumer(AsyncWebsocketConsumer):
        async def connect(self) -> None:
            self.joined: list[str] = []
            await self.accept()

        async def receive(self, text_data: str | None = None, bytes_data: Any = None) -> None:
            msg = json.loads(text_data or bytes_data)
            ch = msg["ch"]
            if msg["op"] == "sub":
                await self.channel_layer.group_add(ch, self.channel_name)
                self.joined.append(ch)
                await self.send(
                    text_data=json.dumps({"ok": "sub", "ch": ch}, separators=(",", ":"))
                )
            elif msg["op"] == "pub":
                text = json.dumps({"ch": ch, "data": msg["data"]}, separators=(",", ":"))
                await self.channel_layer.group_send(ch, {"type": "bench.pub", "text": text})

        async def bench_pub(self, event: dict[str, Any]) -> None:
            await self.send(text_data=event["text"])

        async def disconnect(self, code: int) -> None:
            for ch in getattr(self, "joined", ()):
                await self.channel_layer.group_discard(ch, self.channel_name)

    return ProtocolTypeRouter({"websocket": URLRouter([path("ws", BenchConsumer.as_asgi())])})


def available(args: argparse.Namespace) -> str:
    return ""
