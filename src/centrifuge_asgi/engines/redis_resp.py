"""A minimal RESP2 connection for PUB/SUB, on anyio streams.

redis-py's ``PubSub`` re-subscribes on its own after a reconnect and hides liveness, so
the subscriber side of the Redis engine speaks the protocol itself: it needs only
``AUTH``, ``CLIENT SETNAME``, ``(S)SUBSCRIBE``, ``(S)UNSUBSCRIBE`` and ``PING``, and
replies that are arrays of bulk strings and integers.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Union

import anyio
import anyio.abc

__all__ = ["Endpoint", "RespConnection", "RespError", "RespValue"]


class RespError(Exception):
    """An error reply (``-ERR ...``) from Redis."""


RespValue = Union[bytes, int, None, "RespError", list["RespValue"]]

_CRLF = b"\r\n"
_MAX_BULK = 512 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect: TCP ``host:port`` or a unix socket, optional TLS and auth."""

    host: str = "127.0.0.1"
    port: int = 6379
    unix_path: str = ""
    username: str = ""
    password: str = ""
    client_name: str = ""
    tls: ssl.SSLContext | None = None

    def __str__(self) -> str:
        return f"unix://{self.unix_path}" if self.unix_path else f"{self.host}:{self.port}"


def encode_command(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class RespConnection:
    """One connection: :meth:`send` writes commands, :meth:`read` returns the next reply."""

    def __init__(self, stream: anyio.abc.ByteStream, endpoint: Endpoint) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self.endpoint = endpoint

    @classmethod
    async def open(cls, endpoint: Endpoint, timeout: float) -> RespConnection:  # noqa: ASYNC109
        """Connect, authenticate and name the connection, all within ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            stream: anyio.abc.ByteStream
            if endpoint.unix_path:
                stream = await anyio.connect_unix(endpoint.unix_path)
            elif endpoint.tls is not None:
                stream = await anyio.connect_tcp(
                    endpoint.host, endpoint.port, tls=True, ssl_context=endpoint.tls
                )
            else:
                stream = await anyio.connect_tcp(endpoint.host, endpoint.port)
            conn = cls(stream, endpoint)
            try:
                await conn._handshake()
            except BaseException:
                await conn.aclose()
                raise
            return conn

    async def _handshake(self) -> None:
        commands: list[tuple[bytes | str | int, ...]] = []
        if self.endpoint.password:
            if self.endpoint.username:
                commands.append(("AUTH", self.endpoint.username, self.endpoint.password))
            else:
                commands.append(("AUTH", self.endpoint.password))
        if self.endpoint.client_name:
            commands.append(("CLIENT", "SETNAME", self.endpoint.client_name))
        for command in commands:
            await self.send(*command)
        for _ in commands:
            reply = await self.read()
            if isinstance(reply, RespError):
                raise reply

    async def send(self, *args: bytes | str | int) -> None:
        await self._stream.send(encode_command(*args))

    async def send_many(self, commands: list[tuple[bytes | str | int, ...]]) -> None:
        """Write several commands in one syscall (a pipeline)."""
        if commands:
            await self._stream.send(b"".join(encode_command(*c) for c in commands))

    async def read(self) -> RespValue:
        """The next complete reply; raises ``anyio.EndOfStream`` when Redis closes."""
        line = await self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            if size > _MAX_BULK:
                raise ValueError(f"bulk string of {size} bytes")
            data = await self._exactly(size + 2)
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [await self.read() for _ in range(count)]
        raise ValueError(f"unexpected RESP type byte {kind!r}")

    async def _fill(self) -> None:
        self._buffer += await self._stream.receive(65536)

    async def _line(self) -> bytes:
        while True:
            idx = self._buffer.find(_CRLF)
            if idx >= 0:
                line = bytes(self._buffer[:idx])
                del self._buffer[: idx + 2]
                return line
            await self._fill()

    async def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            await self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(1):
            await self._stream.aclose()

    async def __aenter__(self) -> RespConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
