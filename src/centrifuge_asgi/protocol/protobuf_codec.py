"""Protobuf framing of the client protocol: varint length-delimited messages per frame.

Commands are parsed with the generated :mod:`.client_pb2` module and converted into the
same msgspec :class:`~.messages.Command` structs the JSON codec produces (``bytes``
payloads become :class:`msgspec.Raw`), so sessions never see the encoding. Replies go the
other way. Payload bytes pass through untouched in both directions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError
from msgspec import UNSET, Raw

from . import client_pb2 as pb
from .codec import ProtocolError
from .messages import (
    ChannelRequest,
    ClientInfoWire,
    Command,
    ConnectRequest,
    ConnectResult,
    EmptyRequest,
    FilterNode,
    HistoryRequest,
    KeyedItem,
    OptRaw,
    PublicationWire,
    PublishRequest,
    Push,
    RefreshRequest,
    Reply,
    RPCRequest,
    SendRequest,
    StreamPositionWire,
    SubRefreshRequest,
    SubscribeRequest,
    SubscribeResult,
    TrackBatch,
)

# ------------------------------------------------------------------------------ framing

_SMALL = tuple(bytes((n,)) for n in range(128))


def uvarint(value: int) -> bytes:
    """``value`` (>= 0) as an unsigned protobuf varint."""
    if value < 128:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def split_delimited(frame: bytes) -> list[memoryview]:
    """The records of a frame of varint length-delimited messages (ProtocolError if cut)."""
    view = memoryview(frame)
    size = len(view)
    pos = 0
    records: list[memoryview] = []
    while pos < size:
        length = 0
        shift = 0
        while True:
            if pos >= size or shift > 63:
                raise ProtocolError("bad length prefix")
            byte = view[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        end = pos + length
        if end > size:
            raise ProtocolError("truncated message")
        records.append(view[pos:end])
        pos = end
    return records


# ----------------------------------------------------------------- commands (decode)


def _raw(data: bytes) -> OptRaw:
    return Raw(data) if data else UNSET


def _filter_node(m: pb.FilterNode) -> FilterNode:
    return FilterNode(
        op=m.op,
        key=m.key,
        cmp=m.cmp,
        val=m.val,
        vals=list(m.vals),
        nodes=[_filter_node(child) for child in m.nodes],
    )


def _subscribe_request(m: pb.SubscribeRequest) -> SubscribeRequest:
    return SubscribeRequest(
        channel=m.channel,
        token=m.token,
        recover=m.recover,
        epoch=m.epoch,
        offset=m.offset,
        data=_raw(m.data),
        positioned=m.positioned,
        recoverable=m.recoverable,
        join_leave=m.join_leave,
        delta=m.delta,
        tf=_filter_node(m.tf) if m.HasField("tf") else None,
        flag=m.flag,
        type=m.type,
        phase=m.phase,
        cursor=m.cursor,
        limit=m.limit,
        asc=m.asc,
    )


def _connect_request(m: pb.ConnectRequest) -> ConnectRequest:
    return ConnectRequest(
        token=m.token,
        data=_raw(m.data),
        subs={ch: _subscribe_request(sub) for ch, sub in m.subs.items()},
        name=m.name,
        version=m.version,
        headers=dict(m.headers),
    )


def _channel_request(m: Any) -> ChannelRequest:
    return ChannelRequest(channel=m.channel)


def _history_request(m: pb.HistoryRequest) -> HistoryRequest:
    since = None
    if m.HasField("since"):
        since = StreamPositionWire(offset=m.since.offset, epoch=m.since.epoch)
    return HistoryRequest(channel=m.channel, limit=m.limit, since=since, reverse=m.reverse)


def _publish_request(m: pb.PublishRequest) -> PublishRequest:
    return PublishRequest(
        channel=m.channel, data=_raw(m.data), type=m.type, key=m.key, removed=m.removed
    )


def _sub_refresh_request(m: pb.SubRefreshRequest) -> SubRefreshRequest:
    track = [
        TrackBatch(
            signature=batch.signature,
            items=[KeyedItem(key=item.key, version=item.version) for item in batch.items],
        )
        for batch in m.track
    ]
    return SubRefreshRequest(
        channel=m.channel, token=m.token, type=m.type, track=track, untrack=list(m.untrack)
    )


_REQUESTS: dict[str, Callable[[Any], Any]] = {
    "connect": _connect_request,
    "subscribe": _subscribe_request,
    "unsubscribe": _channel_request,
    "publish": _publish_request,
    "presence": _channel_request,
    "presence_stats": _channel_request,
    "history": _history_request,
    "ping": lambda m: EmptyRequest(),
    "send": lambda m: SendRequest(data=_raw(m.data)),
    "rpc": lambda m: RPCRequest(data=_raw(m.data), method=m.method),
    "refresh": lambda m: RefreshRequest(token=m.token),
    "sub_refresh": _sub_refresh_request,
}


def _command(m: pb.Command) -> Command:
    cmd = Command(id=m.id)
    for field, value in m.ListFields():
        convert = _REQUESTS.get(field.name)
        if convert is not None:
            setattr(cmd, field.name, convert(value))
    return cmd


# ------------------------------------------------------------------- replies (encode)


def _fill_info(m: pb.ClientInfo, info: ClientInfoWire) -> None:
    m.user = info.user
    m.client = info.client
    if info.conn_info is not UNSET:
        m.conn_info = bytes(info.conn_info)
    if info.chan_info is not UNSET:
        m.chan_info = bytes(info.chan_info)


def _fill_pub(m: pb.Publication, pub: PublicationWire) -> None:
    if pub.data is not UNSET:
        m.data = bytes(pub.data)
    if pub.info is not None:
        _fill_info(m.info, pub.info)
    if pub.offset:
        m.offset = pub.offset
    if pub.tags:
        m.tags.update(pub.tags)
    if pub.delta:
        m.delta = True
    if pub.time:
        m.time = pub.time
    if pub.channel:
        m.channel = pub.channel
    if pub.key:
        m.key = pub.key
    if pub.removed:
        m.removed = True
    if pub.score:
        m.score = pub.score
    if pub.epoch:
        m.epoch = pub.epoch
    if pub.version:
        m.version = pub.version


def _fill_subscribe(m: pb.SubscribeResult, r: SubscribeResult) -> None:
    m.SetInParent()
    m.expires = r.expires
    m.ttl = r.ttl
    m.recoverable = r.recoverable
    m.epoch = r.epoch
    for pub in r.publications:
        _fill_pub(m.publications.add(), pub)
    m.recovered = r.recovered
    m.offset = r.offset
    m.positioned = r.positioned
    if r.data is not UNSET:
        m.data = bytes(r.data)
    m.was_recovering = r.was_recovering
    m.delta = r.delta
    m.id = r.id
    m.type = r.type
    m.phase = r.phase
    m.cursor = r.cursor
    for pub in r.state:
        _fill_pub(m.state.add(), pub)
    m.publish_debounce = r.publish_debounce


def _fill_connect(m: pb.ConnectResult | pb.Connect, r: ConnectResult) -> None:
    """ConnectResult and the Connect push share field names (not numbers)."""
    m.client = r.client
    m.version = r.version
    m.expires = r.expires
    m.ttl = r.ttl
    if r.data is not UNSET:
        m.data = bytes(r.data)
    for channel, sub in r.subs.items():
        _fill_subscribe(m.subs[channel], sub)
    m.ping = r.ping
    m.pong = r.pong
    m.session = r.session
    m.node = r.node
    m.time = r.time


def _fill_push(m: pb.Push, push: Push) -> None:
    if push.channel:
        m.channel = push.channel
    if push.pub is not None:
        _fill_pub(m.pub, push.pub)
    elif push.join is not None:
        _fill_info(m.join.info, push.join.info)
    elif push.leave is not None:
        _fill_info(m.leave.info, push.leave.info)
    elif push.unsubscribe is not None:
        m.unsubscribe.code = push.unsubscribe.code
        m.unsubscribe.reason = push.unsubscribe.reason
    elif push.message is not None:
        m.message.data = bytes(push.message.data)
    elif push.subscribe is not None:
        s, src = m.subscribe, push.subscribe
        s.SetInParent()
        s.recoverable = src.recoverable
        s.epoch = src.epoch
        s.offset = src.offset
        s.positioned = src.positioned
        if src.data is not UNSET:
            s.data = bytes(src.data)
    elif push.connect is not None:
        _fill_connect(m.connect, push.connect)
    elif push.disconnect is not None:
        m.disconnect.code = push.disconnect.code
        m.disconnect.reason = push.disconnect.reason
    elif push.refresh is not None:
        m.refresh.SetInParent()
        m.refresh.expires = push.refresh.expires
        m.refresh.ttl = push.refresh.ttl


def _fill_reply(m: pb.Reply, r: Reply) -> None:
    if r.id:
        m.id = r.id
    if r.push is not None:
        _fill_push(m.push, r.push)
    elif r.error is not None:
        m.error.code = r.error.code
        m.error.message = r.error.message
        m.error.temporary = r.error.temporary
    elif r.connect is not None:
        m.connect.SetInParent()
        _fill_connect(m.connect, r.connect)
    elif r.subscribe is not None:
        _fill_subscribe(m.subscribe, r.subscribe)
    elif r.unsubscribe is not None:
        m.unsubscribe.SetInParent()
    elif r.publish is not None:
        m.publish.SetInParent()
    elif r.presence is not None:
        m.presence.SetInParent()
        for client, info in r.presence.presence.items():
            _fill_info(m.presence.presence[client], info)
    elif r.presence_stats is not None:
        m.presence_stats.SetInParent()
        m.presence_stats.num_clients = r.presence_stats.num_clients
        m.presence_stats.num_users = r.presence_stats.num_users
    elif r.history is not None:
        h = m.history
        h.SetInParent()
        for pub in r.history.publications:
            _fill_pub(h.publications.add(), pub)
        h.epoch = r.history.epoch
        h.offset = r.history.offset
    elif r.ping is not None:
        m.ping.SetInParent()
    elif r.rpc is not None:
        m.rpc.SetInParent()
        if r.rpc.data is not UNSET:
            m.rpc.data = bytes(r.rpc.data)
    elif r.refresh is not None:
        f = m.refresh
        f.SetInParent()
        f.client = r.refresh.client
        f.version = r.refresh.version
        f.expires = r.refresh.expires
        f.ttl = r.refresh.ttl
    elif r.sub_refresh is not None:
        m.sub_refresh.SetInParent()
        m.sub_refresh.expires = r.sub_refresh.expires
        m.sub_refresh.ttl = r.sub_refresh.ttl
        for pub in r.sub_refresh.items:
            _fill_pub(m.sub_refresh.items.add(), pub)


# -------------------------------------------------------------------------------- codec


class ProtobufCodec:
    """Binary frames of varint length-delimited Command/Reply messages."""

    name = "protobuf"
    binary = True
    ping = b"\x00"  # an empty Reply, length-prefixed

    def decode_commands(self, frame: bytes) -> list[Command]:
        commands: list[Command] = []
        for record in split_delimited(frame):
            try:
                message = pb.Command.FromString(record)
            except DecodeError as exc:
                raise ProtocolError(f"bad protobuf command: {exc}") from exc
            commands.append(_command(message))
        if not commands:
            raise ProtocolError("frame contains no command")
        return commands

    def encode_reply(self, reply: Reply) -> bytes:
        message = pb.Reply()
        _fill_reply(message, reply)
        body: bytes = message.SerializeToString()
        return uvarint(len(body)) + body

    def join(self, messages: list[bytes]) -> bytes:
        return b"".join(messages)


def encode_push(push: Push) -> bytes:
    """One bare Push message, not length-prefixed (unidirectional gRPC sends these)."""
    message = pb.Push()
    _fill_push(message, push)
    body: bytes = message.SerializeToString()
    return body


def decode_emulation_request(body: bytes) -> tuple[str, str, bytes]:
    """``(node, session, data)`` of a Protobuf ``/emulation`` request body (not delimited).

    What :func:`centrifuge_asgi.transports.emulation.parse_request` uses for a body sent
    as ``application/octet-stream``.
    """
    try:
        m = pb.EmulationRequest.FromString(body)
    except DecodeError as exc:
        raise ProtocolError(f"bad emulation request: {exc}") from exc
    return m.node, m.session, m.data


PROTOBUF = ProtobufCodec()
