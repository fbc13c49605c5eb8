"""python-socketio (ASGI app) as a benchmark peer.

Events: ``sub`` (ack'd, joins the room named by the channel) and ``pub`` (emits the
data to the room as event ``pub``). With ``--broker redis`` the rooms span processes
through ``AsyncRedisManager`` (Redis PUB/SUB, a unique channel per run).
"""

from __future__ import annotations

import argparse
from typing import Any

import socketio


def build_app(args: argparse.Namespace) -> Any:
    manager = None
    if args.broker == "redis":
        manager = socketio.AsyncRedisManager(
            "redis://127.0.0.1:6379/0", channel=f"{args.redis_prefix}-socketio"
        )
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins="*",
        transports=["websocket"],
        logger=False,
        engineio_logger=False,
    )

    @sio.on("sub")
    async def sub(sid: str, channel: str) -> str:
        await sio.enter_room(sid, channel)
        return "ok"

    @sio.on("pub")
    async def pub(sid: str, msg: dict[str, Any]) -> None:
        await sio.emit("pub", msg["data"], room=msg["ch"])

    return socketio.ASGIApp(sio)


def available(args: argparse.Namespace) -> str:
    return ""
