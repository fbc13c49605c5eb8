"""JSON framing of the client protocol: newline-separated compact objects per frame."""

from __future__ import annotations

import logging

import msgspec
from msgspec import UNSET
from msgspec.structs import replace

from .codec import InappropriateProtocol, ProtocolError
from .messages import Command, ConnectResult, PublicationWire, Reply, SubscribeResult

log = logging.getLogger("centrifuge_asgi.fanout")

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
    # find() rather than ``in``: ``bytes in bytes`` first tries the needle as an integer
    # and raises and clears a TypeError each time (about 1,900 instructions a check)
    if data.find(b"\n") >= 0 or data.find(b"\r") >= 0:
        return data.translate(None, b"\r\n")
    return data


def _deliverable(pubs: list[PublicationWire]) -> list[PublicationWire] | None:
    """The publications a JSON client can receive; None when that is all of them."""
    kept: list[PublicationWire] = []
    for pub in pubs:
        try:
            one_line(_encoder.encode(pub))
        except InappropriateProtocol:
            continue
        kept.append(pub)
    if len(kept) == len(pubs):
        return None
    log.warning("%d publications left out of a reply to a JSON client", len(pubs) - len(kept))
    return kept


def _subscribe(result: SubscribeResult) -> SubscribeResult:
    pubs = _deliverable(result.publications)
    state = _deliverable(result.state) if result.state else None  # map state entries
    if pubs is None and state is None:
        return result
    return replace(
        result,
        publications=result.publications if pubs is None else pubs,
        state=result.state if state is None else state,
    )


def _connect(result: ConnectResult) -> ConnectResult:
    subs = {channel: _subscribe(sub) for channel, sub in result.subs.items()}
    if all(subs[channel] is sub for channel, sub in result.subs.items()):
        return result
    return replace(result, subs=subs)


def without_undeliverable(reply: Reply) -> Reply | None:
    """``reply`` without the publications a JSON client cannot receive; None if it has none.

    Only a ``binary`` channel holds such publications (anything else is checked when it is
    published). The live fan-out skips them for JSON clients, and so do the publications
    of subscribe (recovery), connect and history results.
    """
    if reply.subscribe is not None:
        sub = _subscribe(reply.subscribe)
        return None if sub is reply.subscribe else replace(reply, subscribe=sub)
    if reply.history is not None:
        pubs = _deliverable(reply.history.publications)
        if pubs is None:
            return None
        return replace(reply, history=replace(reply.history, publications=pubs))
    if reply.connect is not None:
        connect = _connect(reply.connect)
        return None if connect is reply.connect else replace(reply, connect=connect)
    if reply.push is not None and reply.push.connect is not None:  # unidirectional connect
        connect = _connect(reply.push.connect)
        if connect is reply.push.connect:
            return None
        return replace(reply, push=replace(reply.push, connect=connect))
    return None


def _without_payloads(reply: Reply) -> bool:
    """True for a connect or subscribe reply that holds no embedded (``Raw``) payload.

    Everything else in it is text and numbers that msgspec wrote itself: valid UTF-8
    JSON on one line (it escapes control characters), so :func:`one_line` would only
    confirm it. The common replies of a connect skip that check.
    """
    connect = reply.connect
    if connect is not None:
        return connect.data is UNSET and not connect.subs
    sub = reply.subscribe
    return sub is not None and sub.data is UNSET and not sub.publications and not sub.state


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
        """Raises InappropriateProtocol when a payload is not JSON (e.g. Protobuf bytes).

        Publications in results are left out instead (:func:`without_undeliverable`).
        """
        data = _encoder.encode(reply)
        if _without_payloads(reply):
            return data
        try:
            return one_line(data)
        except InappropriateProtocol:
            slim = without_undeliverable(reply)
            if slim is None:
                raise
            return one_line(_encoder.encode(slim))

    def join(self, messages: list[bytes]) -> bytes:
        return b"\n".join(messages)


JSON = JsonCodec()
