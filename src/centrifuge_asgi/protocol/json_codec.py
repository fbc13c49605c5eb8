"""JSON framing of the client protocol: newline-separated compact objects per frame."""

from __future__ import annotations

import msgspec

from .messages import Command, Reply

_decoder = msgspec.json.Decoder(Command)
_encoder = msgspec.json.Encoder()


class ProtocolError(ValueError):
    """A frame that cannot be decoded into commands (the connection gets 3501)."""


def decode_commands(frame: bytes) -> list[Command]:
    """Split a frame on newlines and decode every non-empty line as a Command."""
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


def encode_reply(reply: Reply) -> bytes:
    """Encode one reply or push as a single compact JSON line (no trailing newline)."""
    return _encoder.encode(reply)


def is_valid_json(data: bytes) -> bool:
    """True when ``data`` is one complete JSON value (payloads must be, for JSON clients)."""
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError:
        return False
    return True


PING = b"{}"
FRAME_SEPARATOR = b"\n"
