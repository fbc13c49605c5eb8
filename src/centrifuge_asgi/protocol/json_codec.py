"""JSON framing of the client protocol: newline-separated compact objects per frame."""

from __future__ import annotations

import msgspec

from .codec import InappropriateProtocol, ProtocolError
from .messages import Command, Reply

_decoder = msgspec.json.Decoder(Command)
_encoder = msgspec.json.Encoder()
_validator = msgspec.json.Decoder(msgspec.Raw)  # parses (validates) without building objects

DECODE_ERRORS = (msgspec.DecodeError, RecursionError)
"""What decoding untrusted JSON can raise: malformed input, or nesting too deep to parse."""


def one_line(data: bytes) -> bytes:
    """An encoded message checked to be valid UTF-8 JSON and put on a single line.

    Raises InappropriateProtocol when it is not (a binary payload published by a Protobuf
    client, or one nested too deeply to check). In valid JSON a raw CR or LF can only be
    whitespace (inside an embedded payload), so both are dropped: newlines separate
    messages in a frame or a stream, and either one would end an SSE line.
    """
    try:
        _validator.decode(data)
        if not data.isascii():
            data.decode()
    except (*DECODE_ERRORS, UnicodeDecodeError) as exc:
        raise InappropriateProtocol(str(exc)) from None
    if b"\n" in data or b"\r" in data:
        return data.translate(None, b"\r\n")
    return data


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
            except DECODE_ERRORS as exc:
                raise ProtocolError(str(exc)) from exc
        if not commands:
            raise ProtocolError("frame contains no command")
        return commands

    def encode_reply(self, reply: Reply) -> bytes:
        """Raises InappropriateProtocol when a payload is not JSON (e.g. Protobuf bytes)."""
        return one_line(_encoder.encode(reply))

    def join(self, messages: list[bytes]) -> bytes:
        return b"\n".join(messages)


JSON = JsonCodec()
