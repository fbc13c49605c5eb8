"""JSON framing of the client protocol: newline-separated compact objects per frame."""

from __future__ import annotations

import msgspec

from .codec import ProtocolError
from .messages import Command, Reply

_decoder = msgspec.json.Decoder(Command)
_encoder = msgspec.json.Encoder()


class JsonCodec:
    """Text frames; one compact JSON object per line (the SDKs split on ``\\n``)."""

    name = "json"
    binary = False
    ping = b"{}"

    def decode_commands(self, frame: bytes) -> list[Command]:
        commands: list[Command] = []
        for line in frame.split(b"\n"):
            line = line.strip()
            if not line:
                continue
            try:
                commands.append(_decoder.decode(line))
            except msgspec.DecodeError as exc:
                raise ProtocolError(str(exc)) from exc
        if not commands:
            raise ProtocolError("frame contains no command")
        return commands

    def encode_reply(self, reply: Reply) -> bytes:
        return _encoder.encode(reply)

    def join(self, messages: list[bytes]) -> bytes:
        return b"\n".join(messages)


JSON = JsonCodec()
