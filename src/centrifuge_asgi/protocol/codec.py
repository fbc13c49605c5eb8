"""The codec interface: how one protocol (JSON, Protobuf) turns frames into commands and
replies into bytes. Sessions and fan-out only talk to this interface."""

from __future__ import annotations

import logging
from typing import Protocol

from .messages import Command, Reply

log = logging.getLogger("centrifuge_asgi.fanout")


class ProtocolError(ValueError):
    """A frame that cannot be decoded into commands (the connection gets 3501)."""


class InappropriateProtocol(ValueError):
    """A message this protocol cannot carry (a non-JSON payload for a JSON client): 3506."""


class Codec(Protocol):
    name: str  # "json" or "protobuf"; also the cache key for encode-once fan-out
    binary: bool  # WebSocket frame type
    ping: bytes  # an encoded empty Reply (server ping)

    def decode_commands(self, frame: bytes) -> list[Command]:
        """Every command in one transport frame; ProtocolError when there is none."""
        ...

    def encode_reply(self, reply: Reply) -> bytes:
        """One reply or push, ready to be joined into a frame by :meth:`join`."""
        ...

    def join(self, messages: list[bytes]) -> bytes:
        """Several encoded messages as one transport frame."""
        ...


class EncodedOnce:
    """A reply encoded lazily, at most once per codec (fan-out to mixed protocols).

    When a protocol cannot carry it (a payload that is not JSON reaching a JSON client, in
    a ``binary`` channel), or encoding fails in any other way, the encoding is empty and
    logged once: every subscriber that speaks that protocol skips this one message
    (``Session.send``), and stays connected.
    """

    __slots__ = ("_cache", "reply")

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self._cache: dict[str, bytes] = {}

    def get(self, codec: Codec) -> bytes:
        data = self._cache.get(codec.name)
        if data is None:
            try:
                data = codec.encode_reply(self.reply)
            except InappropriateProtocol as exc:
                data = b""  # never a valid encoding: Session.send skips it
                log.warning("%s skipped for %s clients: %s", self._what(), codec.name, exc)
            except Exception:
                data = b""
                log.exception("%s skipped for %s clients", self._what(), codec.name)
            self._cache[codec.name] = data
        return data

    def _what(self) -> str:
        push = self.reply.push
        return f"a push into channel {push.channel!r}" if push is not None else "a reply"
