"""Raw HTTP over a TCP socket, for the tests of what incomplete requests cost the server."""

from __future__ import annotations

import anyio
from anyio.abc import SocketStream


async def open_stream(port: int, data: bytes = b"") -> SocketStream:
    """A TCP connection to ``127.0.0.1:port`` that has sent ``data``."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    if data:
        await stream.send(data)
    return stream


async def read_until_closed(stream: SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while True:
        try:
            received += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return received


def half_body(path: str, extra: list[bytes]) -> bytes:
    """A POST whose headers announce 100 bytes of body, of which 10 follow."""
    lines = [
        b"POST " + path.encode() + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Content-Type: application/json",
        b"Content-Length: 100",
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + b'{"channel"'
