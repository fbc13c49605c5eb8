"""Wire format shared by the networked brokers (Redis, NATS): MessagePack plus framing.

Stored and broadcast publications are MessagePack arrays (the payload stays opaque
bytes); PUB/SUB messages use Centrifugo's framing so one topic carries every event kind:

* ``__p1:<offset>:<epoch>__`` + publication: a publication with a stream position;
* ``__d1:<offset>:<epoch>:<n>__`` + the previous stream entry (``n`` bytes, offset - 1)
  + publication: the same, from a ``delta`` publish (the base of a fossil delta);
* a bare publication (it starts with a MessagePack array byte, never ``_``);
* ``__j__`` + client info: join; ``__l__`` + client info: leave.

This is not byte-compatible with Go Centrifugo nodes, which use protobuf here.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from .base import ClientInfo, Publication

__all__ = [
    "Event",
    "decode_event",
    "decode_info",
    "decode_publication",
    "encode_info",
    "encode_publication",
    "frame_join",
    "frame_leave",
]

_JOIN = b"__j__"
_LEAVE = b"__l__"
_POSITIONED = b"__p1:"
_WITH_PREV = b"__d1:"


class _Info(msgspec.Struct, array_like=True):
    user: str
    client: str
    conn_info: bytes | None = None
    chan_info: bytes | None = None


class _Pub(msgspec.Struct, array_like=True):
    data: bytes
    info: _Info | None = None
    tags: dict[str, str] | None = None
    time: int = 0


_encoder = msgspec.msgpack.Encoder()
_pub_decoder = msgspec.msgpack.Decoder(_Pub)
_info_decoder = msgspec.msgpack.Decoder(_Info)


def _info_wire(info: ClientInfo | None) -> _Info | None:
    if info is None:
        return None
    return _Info(info.user, info.client, info.conn_info, info.chan_info)


def _info_value(wire: _Info | None) -> ClientInfo | None:
    if wire is None:
        return None
    return ClientInfo(wire.user, wire.client, wire.conn_info, wire.chan_info)


def encode_publication(
    data: bytes, info: ClientInfo | None, tags: dict[str, str] | None, time: int
) -> bytes:
    """A publication without its offset (the stream entry ID or the frame carries it)."""
    return _encoder.encode(_Pub(data, _info_wire(info), tags or None, time))


def decode_publication(raw: bytes, offset: int = 0) -> Publication:
    wire = _pub_decoder.decode(raw)
    return Publication(wire.data, offset, _info_value(wire.info), wire.tags, wire.time)


def encode_info(info: ClientInfo) -> bytes:
    return _encoder.encode(_info_wire(info))


def decode_info(raw: bytes) -> ClientInfo:
    info = _info_value(_info_decoder.decode(raw))
    assert info is not None
    return info


def frame_join(info: ClientInfo) -> bytes:
    return _JOIN + encode_info(info)


def frame_leave(info: ClientInfo) -> bytes:
    return _LEAVE + encode_info(info)


def frame_publication(pub: bytes, offset: int = 0, epoch: str = "") -> bytes:
    """The PUB/SUB form of an encoded publication (what the Lua script builds itself)."""
    if offset <= 0:
        return pub
    return b"%s%d:%s__%s" % (_POSITIONED, offset, epoch.encode(), pub)


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded PUB/SUB message: a publication (with epoch), a join or a leave."""

    publication: Publication | None = None
    epoch: str = ""
    prev: Publication | None = None
    join: ClientInfo | None = None
    leave: ClientInfo | None = None


def decode_event(data: bytes) -> Event:
    """Parse one framed message; raises ValueError (or a msgspec error) when malformed."""
    if data.startswith(_POSITIONED):
        end = data.find(b"__", len(_POSITIONED))
        if end < 0:
            raise ValueError("unterminated publication header")
        offset, sep, epoch = data[len(_POSITIONED) : end].partition(b":")
        if not sep or not offset.isdigit():
            raise ValueError("bad publication header")
        pub = decode_publication(data[end + 2 :], int(offset))
        return Event(publication=pub, epoch=epoch.decode())
    if data.startswith(_WITH_PREV):
        end = data.find(b"__", len(_WITH_PREV))
        if end < 0:
            raise ValueError("unterminated publication header")
        fields = data[len(_WITH_PREV) : end].split(b":")
        if len(fields) != 3 or not fields[0].isdigit() or not fields[2].isdigit():
            raise ValueError("bad publication header")
        top, size = int(fields[0]), int(fields[2])
        body = data[end + 2 :]
        if size > len(body) or top < 2:
            raise ValueError("bad publication header")
        prev = decode_publication(body[:size], top - 1)
        pub = decode_publication(body[size:], top)
        return Event(publication=pub, epoch=fields[1].decode(), prev=prev)
    if data.startswith(_JOIN):
        return Event(join=decode_info(data[len(_JOIN) :]))
    if data.startswith(_LEAVE):
        return Event(leave=decode_info(data[len(_LEAVE) :]))
    return Event(publication=decode_publication(data))
