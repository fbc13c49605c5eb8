"""The ASGI floor: the thinnest WebSocket app that answers sub and fans out pub.

It does exactly one ``websocket.send`` per subscriber per publication, building the
message dict once per publication. Same wire protocol as the Channels peer.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

Send = Any


def build_app(args: argparse.Namespace) -> Any:
    rooms: dict[str, set[Send]] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "websocket":
            return
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        joined: list[str] = []
        try:
            while True:
                msg = await receive()
                if msg["type"] != "websocket.receive":
                    break
                req = json.loads(msg.get("text") or msg.get("bytes"))
                ch = req["ch"]
                if req["op"] == "sub":
                    rooms.setdefault(ch, set()).add(send)
                    joined.append(ch)
                    await send(
                        {
                            "type": "websocket.send",
                            "text": json.dumps({"ok": "sub", "ch": ch}, separators=(",", ":")),
                        }
                    )
                elif req["op"] == "pub":
                    text = json.dumps({"ch": ch, "data": req["data"]}, separators=(",", ":"))
                    out = {"type": "websocket.send", "text": text}
                    for peer in list(rooms.get(ch, ())):
                        try:
                            await peer(out)
                        except Exception:
                            rooms[ch].discard(peer)
        finally:
            for ch in joined:
                room = rooms.get(ch)
                if room is not None:
                    room.discard(send)
                    if not room:
                        del rooms[ch]

    return app


def available(args: argparse.Namespace) -> str:
    return ""
