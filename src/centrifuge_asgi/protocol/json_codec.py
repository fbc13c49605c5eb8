"""JSON framing of the client protocol: newline-separated compact objects per frame."""

from __future__ import annotations

import msgspec

from .codec import InappropriateProtocol, ProtocolError
from .messages import Command, Reply

_decoder = msgspec.json.Decoder(Command)
_encoder = msgspec.json.Encoder()
_validator = msgspec.json.Decoder(msgspec.Raw)  # parses (validates) without building objects


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
        """Raises InappropriateProtocol when a payload is not JSON (e.g. Protobuf bytes)."""
        data = _encoder.encode(reply)
        try:
            _validator.decode(data)
            if not data.isascii():
                data.decode()
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise InappropriateProtocol(str(exc)) from None
        # The message is valid JSON, so a raw newline can only be whitespace inside an
        # embedded payload; drop it, as newlines separate messages in a frame.
        return data.replace(b"\n", b"") if b"\n" in data else data

    def join(self, messages: list[bytes]) -> bytes:
        return b"\n".join(messages)


JSON = JsonCodec()
