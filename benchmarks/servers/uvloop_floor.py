"""The CPython floor: a minimal uvloop WebSocket server, no ASGI, no framework.

It performs the RFC 6455 handshake, reads the client's masked frames, and answers the
same wire protocol as the ASGI floor. A publication is encoded into one frame once and
that very ``bytes`` object is written to every subscriber's transport.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
import struct
from typing import Any

import uvloop

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(text: bytes, opcode: int = 0x1) -> bytes:
    """One unmasked server frame."""
    n = len(text)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + text


def unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(
        n, "little"
    )


class Floor(asyncio.Protocol):
    rooms: dict[str, set[asyncio.Transport]] = {}

    def __init__(self) -> None:
        self.buf = b""
        self.open = False
        self.joined: list[str] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        for ch in self.joined:
            room = self.rooms.get(ch)
            if room is not None:
                room.discard(self.transport)
                if not room:
                    del self.rooms[ch]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            key = b""
            for line in buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.open = True
            buf = buf[end + 4 :]
        pos = 0
        size = len(buf)
        while size - pos >= 6:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if size - pos < 8:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif n == 127:
                if size - pos < 14:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if size - pos < head + 4 + n:
                break
            key = buf[pos + head : pos + head + 4]
            payload = unmask(buf[pos + head + 4 : pos + head + 4 + n], key)
            pos += head + 4 + n
            self.on_frame(b0 & 0x0F, payload)
        self.buf = buf[pos:]

    def on_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x8:
            self.transport.write(frame(payload[:2], 0x8))
            self.transport.close()
            return
        if opcode == 0x9:
            self.transport.write(frame(payload, 0xA))
            return
        if opcode not in (0x1, 0x2):
            return
        req = json.loads(payload)
        ch = req["ch"]
        if req["op"] == "sub":
            self.rooms.setdefault(ch, set()).add(self.transport)
            self.joined.append(ch)
            self.transport.write(
                frame(json.dumps({"ok": "sub", "ch": ch}, separators=(",", ":")).encode())
            )
        elif req["op"] == "pub":
            text = json.dumps({"ch": ch, "data": req["data"]}, separators=(",", ":"))
            out = frame(text.encode())
            for transport in list(self.rooms.get(ch, ())):
                transport.write(out)


async def _serve(port: int, backlog: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Floor, "127.0.0.1", port, backlog=backlog)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def serve(port: int, backlog: int = 4096) -> None:
    uvloop.run(_serve(port, backlog))
