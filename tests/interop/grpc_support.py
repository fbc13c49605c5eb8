"""Helpers of the gRPC tests: free ports, a node with gRPC on, an SDK event recorder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from centrifuge import (
    ClientEventHandler,
    DisconnectedContext,
    PublicationContext,
    ServerSubscribedContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

from centrifuge_asgi.node import Node

from .serve_process import free_port
from .support import make_config

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory

API_KEY = "grpc-api-key"
TIMEOUT = 5.0


@dataclass
class GrpcEnv:
    srv: LiveServer
    node: Node
    api_target: str
    uni_target: str

    @property
    def ws_url(self) -> str:
        return self.srv.ws_url("/connection/websocket")


def grpc_config(*, api: dict[str, Any] | None = None, uni: bool = True) -> dict[str, Any]:
    cfg = make_config()
    cfg["grpc_api"] = {
        "enabled": True,
        "address": "127.0.0.1",
        "port": free_port(),
        "key": API_KEY,
        **(api or {}),
    }
    if uni:
        cfg["uni_grpc"] = {"enabled": True, "address": "127.0.0.1", "port": free_port()}
    return cfg


def start(live_server: LiveServerFactory, cfg: dict[str, Any]) -> GrpcEnv:
    node = Node(cfg)
    srv = live_server(node.asgi_app())
    uni = cfg.get("uni_grpc", {})
    return GrpcEnv(
        srv,
        node,
        f"127.0.0.1:{cfg['grpc_api']['port']}",
        f"127.0.0.1:{uni.get('port', 0)}",
    )


@dataclass
class Events(ClientEventHandler, SubscriptionEventHandler):
    """What a centrifuge-python client (and its subscriptions) saw, with waiting."""

    seen: list[tuple[str, Any]] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def _add(self, kind: str, ctx: Any) -> None:
        self.seen.append((kind, ctx))
        self._changed.set()
        self._changed = anyio.Event()

    async def on_publication(self, ctx: PublicationContext) -> None:  # type: ignore[override]
        self._add("publication", ctx)

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:  # type: ignore[override]
        self._add("subscribed", ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:  # type: ignore[override]
        self._add("unsubscribed", ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self._add("disconnected", ctx)

    def of(self, kind: str) -> list[Any]:
        return [ctx for k, ctx in self.seen if k == kind]

    async def wait(self, kind: str, count: int = 1) -> list[Any]:
        with anyio.fail_after(TIMEOUT):
            while len(self.of(kind)) < count:
                await self._changed.wait()
        return self.of(kind)
