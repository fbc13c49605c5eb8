"""The Protobuf codec: framing, command decoding, reply encoding, mixed-protocol fan-out.

Wire compatibility is checked against centrifuge-python's own generated ``client_pb2`` (an
independent copy of the upstream schema): commands built with it must decode, and replies
we encode must parse into exactly the expected upstream messages.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from centrifuge.protocol import client_pb2 as sdk
from msgspec import UNSET, Raw

from centrifuge_asgi import Node
from centrifuge_asgi.protocol import client_pb2 as pb
from centrifuge_asgi.protocol.codec import Codec, ProtocolError
from centrifuge_asgi.protocol.json_codec import JSON
from centrifuge_asgi.protocol.messages import (
    ChannelRequest,
    ClientInfoWire,
    Command,
    ConnectRequest,
    ConnectResult,
    DisconnectPush,
    EmptyResult,
    ErrorWire,
    FilterNode,
    HistoryRequest,
    HistoryResult,
    JoinLeave,
    MessagePush,
    PresenceResult,
    PresenceStatsResult,
    PublicationWire,
    PublishRequest,
    Push,
    RefreshRequest,
    RefreshResult,
    Reply,
    RPCRequest,
    RPCResult,
    SendRequest,
    StreamPositionWire,
    SubRefreshRequest,
    SubRefreshResult,
    SubscribePush,
    SubscribeRequest,
    SubscribeResult,
    UnsubscribePush,
)
from centrifuge_asgi.protocol.protobuf_codec import PROTOBUF, split_delimited, uvarint
from centrifuge_asgi.session import Session, TransportInfo
from centrifuge_asgi.transports.emulation import parse_request
from centrifuge_asgi.transports.websocket import negotiate
from tests.interop.support import token


def delimited(*messages: Any) -> bytes:
    """Length-delimited concatenation of protobuf messages (either schema)."""
    out = b""
    for m in messages:
        body = m.SerializeToString()
        out += uvarint(len(body)) + body
    return out


def sdk_replies(data: bytes) -> list[Any]:
    return [sdk.Reply.FromString(bytes(r)) for r in split_delimited(data)]


# ------------------------------------------------------------------------------ framing


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16_383, 16_384, 70_000])
def test_uvarint_round_trips_through_split(size: int) -> None:
    body = b"x" * size
    [record] = split_delimited(uvarint(size) + body)
    assert bytes(record) == body


def test_uvarint_matches_protobuf() -> None:
    assert uvarint(0) == b"\x00"
    for value in (1, 127, 128, 300, 2**32, 2**63):
        assert b"\x08" + uvarint(value) == sdk.StreamPosition(offset=value).SerializeToString()


def test_ping_is_an_empty_reply_and_pong_an_empty_command() -> None:
    assert PROTOBUF.ping == b"\x00" == delimited(pb.Reply())
    assert PROTOBUF.binary is True and PROTOBUF.name == "protobuf"
    assert PROTOBUF.decode_commands(b"\x00") == [Command()]
    assert PROTOBUF.join([b"\x00", b"\x01\x08"]) == b"\x00\x01\x08"


@pytest.mark.parametrize(
    "frame",
    [
        b"",  # no command at all
        b"\x05\x08\x01",  # length beyond the frame
        b"\x80",  # length prefix cut
        b"\xff" * 11,  # length prefix too long
        b"\x01\x07",  # wire type 7 does not exist
        b"\x02\x0a\x05",  # length-delimited field cut inside the message
        b"\x05\x22\x03\x0a\x01\xff",  # connect.token is not UTF-8
        b'{"id":1,"connect":{}}',  # a JSON command on a protobuf connection
    ],
)
def test_malformed_frames_raise_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        PROTOBUF.decode_commands(frame)


def test_emulation_request() -> None:
    """What ``POST /emulation`` parses a Protobuf body with (``application/octet-stream``)."""
    body = sdk.EmulationRequest(node="n1", session="s1", data=b"\x00").SerializeToString()
    assert parse_request(body, protobuf=True) == ("n1", "s1", b"\x00")
    assert parse_request(b"", protobuf=True) == ("", "", b"")
    for bad in (b"\x0a\x05", b"\x12\x01\xff", b"\x07"):  # cut, session not UTF-8, bad tag
        assert parse_request(bad, protobuf=True) is None
    # the same body is no JSON emulation request
    assert parse_request(body, protobuf=False) is None


# ----------------------------------------------------------------------------- commands


def test_commands_built_with_the_sdk_schema_decode_into_wire_structs() -> None:
    binary = bytes(range(256))
    commands = [
        sdk.Command(
            id=1,
            connect=sdk.ConnectRequest(
                token="jwt",
                data=b'{"a":1}',
                subs={"news:x": sdk.SubscribeRequest(recover=True, offset=7, epoch="e")},
                name="js",
                version="1.0",
                headers={"x-a": "b"},
            ),
        ),
        sdk.Command(
            id=2,
            subscribe=sdk.SubscribeRequest(
                channel="news:x",
                token="sub-jwt",
                recover=True,
                epoch="e",
                offset=2**40,
                data=binary,
                positioned=True,
                recoverable=True,
                join_leave=True,
                delta="fossil",
            ),
        ),
        sdk.Command(id=3, unsubscribe=sdk.UnsubscribeRequest(channel="a")),
        sdk.Command(id=4, publish=sdk.PublishRequest(channel="a", data=binary)),
        sdk.Command(id=5, presence=sdk.PresenceRequest(channel="a")),
        sdk.Command(id=6, presence_stats=sdk.PresenceStatsRequest(channel="a")),
        sdk.Command(
            id=7,
            history=sdk.HistoryRequest(
                channel="a", limit=10, since=sdk.StreamPosition(offset=3, epoch="e"), reverse=True
            ),
        ),
        sdk.Command(send=sdk.SendRequest(data=b"\x00\n")),
        sdk.Command(id=8, rpc=sdk.RPCRequest(method="sum", data=b"{}")),
        sdk.Command(id=9, refresh=sdk.RefreshRequest(token="t2")),
        sdk.Command(id=10, sub_refresh=sdk.SubRefreshRequest(channel="a", token="t3")),
        sdk.Command(),  # pong
    ]
    assert PROTOBUF.decode_commands(delimited(*commands)) == [
        Command(
            id=1,
            connect=ConnectRequest(
                token="jwt",
                data=Raw(b'{"a":1}'),
                subs={"news:x": SubscribeRequest(recover=True, offset=7, epoch="e")},
                name="js",
                version="1.0",
                headers={"x-a": "b"},
            ),
        ),
        Command(
            id=2,
            subscribe=SubscribeRequest(
                channel="news:x",
                token="sub-jwt",
                recover=True,
                epoch="e",
                offset=2**40,
                data=Raw(binary),
                positioned=True,
                recoverable=True,
                join_leave=True,
                delta="fossil",
            ),
        ),
        Command(id=3, unsubscribe=ChannelRequest(channel="a")),
        Command(id=4, publish=PublishRequest(channel="a", data=Raw(binary))),
        Command(id=5, presence=ChannelRequest(channel="a")),
        Command(id=6, presence_stats=ChannelRequest(channel="a")),
        Command(
            id=7,
            history=HistoryRequest(
                channel="a", limit=10, since=StreamPositionWire(offset=3, epoch="e"), reverse=True
            ),
        ),
        Command(send=SendRequest(data=Raw(b"\x00\n"))),
        Command(id=8, rpc=RPCRequest(method="sum", data=Raw(b"{}"))),
        Command(id=9, refresh=RefreshRequest(token="t2")),
        Command(id=10, sub_refresh=SubRefreshRequest(channel="a", token="t3")),
        Command(),
    ]


def test_subscribe_extras_flag_type_and_tag_filter() -> None:
    tf = pb.FilterNode(
        op="or",
        nodes=[
            pb.FilterNode(key="k", cmp="in", vals=["a", "b"]),
            pb.FilterNode(op="not", nodes=[pb.FilterNode(key="n", cmp="gt", val="1.5")]),
        ],
    )
    raw = pb.Command(id=1, subscribe=pb.SubscribeRequest(channel="a", flag=3, type=1, tf=tf))
    [cmd] = PROTOBUF.decode_commands(delimited(raw))
    assert cmd.subscribe is not None
    assert (cmd.subscribe.flag, cmd.subscribe.type) == (3, 1)
    assert cmd.subscribe.tf == FilterNode(
        op="or",
        nodes=[
            FilterNode(key="k", cmp="in", vals=["a", "b"]),
            FilterNode(op="not", nodes=[FilterNode(key="n", cmp="gt", val="1.5")]),
        ],
    )
    # present but empty is a filter (an invalid one: 107), absent is none
    empty = pb.Command(id=1, subscribe=pb.SubscribeRequest(channel="a", tf=pb.FilterNode()))
    [cmd] = PROTOBUF.decode_commands(delimited(empty))
    assert cmd.subscribe is not None and cmd.subscribe.tf == FilterNode()
    [plain] = PROTOBUF.decode_commands(delimited(pb.Command(id=1, subscribe={"channel": "a"})))
    assert plain.subscribe is not None and plain.subscribe.tf is None


def _varint_field(number: int, raw_varint: bytes) -> bytes:
    """A varint field (wire type 0) whose value bytes are given as they go on the wire."""
    return uvarint(number << 3) + raw_varint


def _message_field(number: int, body: bytes) -> bytes:
    return uvarint(number << 3 | 2) + uvarint(len(body)) + body


def _record(body: bytes) -> bytes:
    return uvarint(len(body)) + body


NEG_ONE_INT64 = b"\xff" * 9 + b"\x01"  # -1 as an int64/int32 varint: ten bytes
HIGH_BITS = b"\x85" + b"\x80" * 8 + b"\x7f"  # ten bytes, bits past 64 set in the last one


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        (_varint_field(1, uvarint(2**32 - 1)), "id", 2**32 - 1),
        (_varint_field(1, uvarint(2**32 + 7)), "id", 7),
        (_varint_field(1, uvarint(2**63)), "id", 0),
        (_varint_field(1, NEG_ONE_INT64), "id", 2**32 - 1),
        (_varint_field(1, HIGH_BITS), "id", 5),
        (_message_field(5, _varint_field(7, HIGH_BITS)), "subscribe.offset", 2**63 + 5),
        (_message_field(5, _varint_field(7, NEG_ONE_INT64)), "subscribe.offset", 2**64 - 1),
        (_message_field(5, _varint_field(15, uvarint(2**32 + 1))), "subscribe.type", 1),
        (_message_field(5, _varint_field(14, HIGH_BITS)), "subscribe.flag", -(2**63) + 5),
        (_message_field(10, _varint_field(7, uvarint(2**32 - 5))), "history.limit", -5),
        (_message_field(10, _varint_field(7, NEG_ONE_INT64)), "history.limit", -1),
        (_message_field(10, _varint_field(7, uvarint(2**40 + 3))), "history.limit", 3),
        (
            _message_field(10, _message_field(8, _varint_field(1, HIGH_BITS))),
            "history.since.offset",
            2**63 + 5,
        ),
    ],
)
def test_varints_keep_the_low_bits_of_their_type_as_in_go(
    body: bytes, field: str, expected: int
) -> None:
    """centrifugal/protocol's UnmarshalVT shifts every varint into the field's Go type, so
    bits that do not fit are dropped (no error); the upb decoder here does the same. An
    id that truncates to 0 is then refused by the session like any id 0 (3501)."""
    [cmd] = PROTOBUF.decode_commands(_record(body))
    value: Any = cmd
    for name in field.split("."):
        value = getattr(value, name)
    assert value == expected


@pytest.mark.parametrize(
    "body",
    [
        _varint_field(1, b"\xff" * 10 + b"\x01"),  # eleven bytes: Go's ErrIntOverflow
        _message_field(5, _varint_field(7, b"\x80" * 10 + b"\x01")),
        _message_field(10, _varint_field(7, b"\xff" * 10 + b"\x00")),
    ],
)
def test_varints_longer_than_ten_bytes_are_malformed(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        PROTOBUF.decode_commands(_record(body))


def test_empty_payload_is_no_payload() -> None:
    [cmd] = PROTOBUF.decode_commands(delimited(sdk.Command(id=1, rpc=sdk.RPCRequest(method="m"))))
    assert cmd.rpc is not None and cmd.rpc.data is UNSET


# ------------------------------------------------------------------------------ replies

INFO = ClientInfoWire(user="u", client="c", conn_info=Raw(b'{"n":1}'), chan_info=Raw(b"\x01"))
SDK_INFO = sdk.ClientInfo(user="u", client="c", conn_info=b'{"n":1}', chan_info=b"\x01")
PUB = PublicationWire(data=Raw(b"\xff\x00"), info=INFO, offset=2**40, tags={"k": "v"}, time=5)
SDK_PUB = sdk.Publication(data=b"\xff\x00", info=SDK_INFO, offset=2**40, tags={"k": "v"}, time=5)

REPLIES: list[tuple[str, Reply, Any]] = [
    ("ping", Reply(), sdk.Reply()),
    (
        "error",
        Reply(id=1, error=ErrorWire(code=100, message="internal server error", temporary=True)),
        sdk.Reply(id=1, error=sdk.Error(code=100, message="internal server error", temporary=True)),
    ),
    (
        "connect",
        Reply(
            id=1,
            connect=ConnectResult(
                client="c",
                version="1.2",
                expires=True,
                ttl=60,
                data=Raw(b"{}"),
                subs={"#u": SubscribeResult(recoverable=True, epoch="e", offset=3)},
                ping=25,
                pong=True,
                session="s",
                node="n",
                time=1700000000000,
            ),
        ),
        sdk.Reply(
            id=1,
            connect=sdk.ConnectResult(
                client="c",
                version="1.2",
                expires=True,
                ttl=60,
                data=b"{}",
                subs={"#u": sdk.SubscribeResult(recoverable=True, epoch="e", offset=3)},
                ping=25,
                pong=True,
                session="s",
                node="n",
                time=1700000000000,
            ),
        ),
    ),
    (
        "subscribe",
        Reply(
            id=2,
            subscribe=SubscribeResult(
                expires=True,
                ttl=9,
                recoverable=True,
                epoch="e",
                publications=[PUB, PublicationWire(data=Raw(b"2"))],
                recovered=True,
                offset=7,
                positioned=True,
                data=Raw(b"[1]"),
                was_recovering=True,
            ),
        ),
        sdk.Reply(
            id=2,
            subscribe=sdk.SubscribeResult(
                expires=True,
                ttl=9,
                recoverable=True,
                epoch="e",
                publications=[SDK_PUB, sdk.Publication(data=b"2")],
                recovered=True,
                offset=7,
                positioned=True,
                data=b"[1]",
                was_recovering=True,
            ),
        ),
    ),
    ("empty subscribe", Reply(id=2, subscribe=SubscribeResult()), None),
    ("unsubscribe", Reply(id=3, unsubscribe=EmptyResult()), None),
    ("publish", Reply(id=4, publish=EmptyResult()), None),
    (
        "presence",
        Reply(id=5, presence=PresenceResult(presence={"c": INFO})),
        sdk.Reply(id=5, presence=sdk.PresenceResult(presence={"c": SDK_INFO})),
    ),
    ("empty presence", Reply(id=5, presence=PresenceResult(presence={})), None),
    (
        "presence_stats",
        Reply(id=6, presence_stats=PresenceStatsResult(num_clients=2, num_users=1)),
        sdk.Reply(id=6, presence_stats=sdk.PresenceStatsResult(num_clients=2, num_users=1)),
    ),
    ("zero presence_stats", Reply(id=6, presence_stats=PresenceStatsResult(0, 0)), None),
    (
        "history",
        Reply(id=7, history=HistoryResult(publications=[PUB], epoch="e", offset=9)),
        sdk.Reply(id=7, history=sdk.HistoryResult(publications=[SDK_PUB], epoch="e", offset=9)),
    ),
    (
        "empty history",
        Reply(id=7, history=HistoryResult(publications=[], epoch="", offset=0)),
        None,
    ),
    ("rpc", Reply(id=8, rpc=RPCResult(data=Raw(b"\x00"))), sdk.Reply(id=8, rpc={"data": b"\x00"})),
    ("empty rpc", Reply(id=8, rpc=RPCResult()), None),
    (
        "refresh",
        Reply(id=9, refresh=RefreshResult(client="c", version="v", expires=True, ttl=3)),
        sdk.Reply(id=9, refresh=sdk.RefreshResult(client="c", version="v", expires=True, ttl=3)),
    ),
    (
        "sub_refresh",
        Reply(id=10, sub_refresh=SubRefreshResult(expires=True, ttl=3)),
        sdk.Reply(id=10, sub_refresh=sdk.SubRefreshResult(expires=True, ttl=3)),
    ),
    (
        "pub push",
        Reply(push=Push(channel="ch", pub=PUB)),
        sdk.Reply(push=sdk.Push(channel="ch", pub=SDK_PUB)),
    ),
    (
        "join push",
        Reply(push=Push(channel="ch", join=JoinLeave(info=INFO))),
        sdk.Reply(push=sdk.Push(channel="ch", join=sdk.Join(info=SDK_INFO))),
    ),
    (
        "leave push",
        Reply(push=Push(channel="ch", leave=JoinLeave(info=ClientInfoWire(user="", client="c")))),
        sdk.Reply(push=sdk.Push(channel="ch", leave=sdk.Leave(info=sdk.ClientInfo(client="c")))),
    ),
    (
        "unsubscribe push",
        Reply(push=Push(channel="ch", unsubscribe=UnsubscribePush(code=2000, reason="server"))),
        sdk.Reply(
            push=sdk.Push(channel="ch", unsubscribe=sdk.Unsubscribe(code=2000, reason="server"))
        ),
    ),
    (
        "message push",
        Reply(push=Push(message=MessagePush(data=Raw(b"\x01\x02")))),
        sdk.Reply(push=sdk.Push(message=sdk.Message(data=b"\x01\x02"))),
    ),
    (
        "subscribe push",
        Reply(
            push=Push(
                channel="ch",
                subscribe=SubscribePush(recoverable=True, epoch="e", offset=4, positioned=True),
            )
        ),
        sdk.Reply(
            push=sdk.Push(
                channel="ch",
                subscribe=sdk.Subscribe(recoverable=True, epoch="e", offset=4, positioned=True),
            )
        ),
    ),
    ("empty subscribe push", Reply(push=Push(channel="ch", subscribe=SubscribePush())), None),
    (
        "connect push",
        Reply(push=Push(connect=ConnectResult(client="c", data=Raw(b"1"), ping=25, session="s"))),
        sdk.Reply(push=sdk.Push(connect=sdk.Connect(client="c", data=b"1", ping=25, session="s"))),
    ),
    (
        "disconnect push",
        Reply(push=Push(disconnect=DisconnectPush(code=3001, reason="shutdown"))),
        sdk.Reply(push=sdk.Push(disconnect=sdk.Disconnect(code=3001, reason="shutdown"))),
    ),
]


def _expected_empty(reply: Reply) -> Any:
    """The upstream message for a reply whose result has only zero values."""
    expected = sdk.Reply(id=reply.id)
    if reply.push is not None:
        expected.push.channel = reply.push.channel
        expected.push.subscribe.SetInParent()
        return expected
    name = next(f for f in ("subscribe", "unsubscribe", "publish", "presence", "presence_stats",
                            "history", "rpc") if getattr(reply, f) is not None)  # fmt: skip
    getattr(expected, name).SetInParent()
    return expected


@pytest.mark.parametrize(
    ("reply", "expected"), [r[1:] for r in REPLIES], ids=[r[0] for r in REPLIES]
)
def test_replies_parse_into_the_upstream_messages(reply: Reply, expected: Any) -> None:
    if expected is None:
        expected = _expected_empty(reply)
    encoded = PROTOBUF.encode_reply(reply)
    [parsed] = sdk_replies(encoded)
    # equality includes presence: a result with only zero fields is still there (the SDKs
    # look for it), e.g. ``publish {}`` is encoded as tag + zero length
    assert parsed == expected
    assert [f.name for f, _ in parsed.ListFields()] == [f.name for f, _ in expected.ListFields()]


def test_several_replies_in_one_frame() -> None:
    frame = PROTOBUF.join([PROTOBUF.encode_reply(r) for _, r, _ in REPLIES] + [PROTOBUF.ping])
    assert len(sdk_replies(frame)) == len(REPLIES) + 1


# ---------------------------------------------------------------------- handshake rules


@pytest.mark.parametrize(
    ("subprotocols", "query", "protocol", "answer"),
    [
        ([], b"", "json", None),
        (["centrifuge-json"], b"", "json", "centrifuge-json"),
        (["centrifuge-protobuf"], b"", "protobuf", "centrifuge-protobuf"),
        (["other", "centrifuge-protobuf"], b"", "protobuf", "centrifuge-protobuf"),
        (["other"], b"", "json", None),
        ([], b"cf_protocol=protobuf", "protobuf", None),
        ([], b"format=protobuf", "protobuf", None),
        (["centrifuge-json"], b"cf_protocol=protobuf", "protobuf", "centrifuge-json"),
        ([], b"cf_protocol=json", "json", None),
    ],
)
def test_protocol_negotiation(
    subprotocols: list[str], query: bytes, protocol: str, answer: str | None
) -> None:
    codec, chosen = negotiate({"subprotocols": subprotocols, "query_string": query})
    assert (codec.name, chosen) == (protocol, answer)


# ------------------------------------------------------------------ sessions and fan-out


class CountingCodec:
    """Wraps a codec and records every reply it encodes (same name: same fan-out cache)."""

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.name = inner.name
        self.binary = inner.binary
        self.ping = inner.ping
        self.encoded: list[Reply] = []

    def decode_commands(self, frame: bytes) -> list[Command]:
        return self.inner.decode_commands(frame)

    def encode_reply(self, reply: Reply) -> bytes:
        self.encoded.append(reply)
        return self.inner.encode_reply(reply)

    def join(self, messages: list[bytes]) -> bytes:
        return self.inner.join(messages)

    def publications(self) -> int:
        return sum(1 for r in self.encoded if r.push is not None and r.push.pub is not None)


def out_json(s: Session) -> list[dict[str, Any]]:
    return [json.loads(m) for m in s.outbox.drain()]


def out_pb(s: Session) -> list[Any]:
    return [r for m in s.outbox.drain() for r in sdk_replies(m)]


async def pb_subscriber(node: Node, codec: Codec, user: str, channel: str) -> Session:
    s = node.create_session(TransportInfo(codec=codec))
    await s.handle_frame(
        delimited(
            sdk.Command(id=1, connect=sdk.ConnectRequest(token=token(user), name="js")),
            sdk.Command(id=2, subscribe=sdk.SubscribeRequest(channel=channel)),
        )
    )
    connect, subscribe = [r for r in out_pb(s) if r.id]  # chat: also a join push
    assert connect.connect.client == s.client_id and connect.connect.pong
    assert subscribe.id == 2 and subscribe.HasField("subscribe")
    return s


async def json_subscriber(node: Node, codec: Codec, user: str, channel: str) -> Session:
    s = node.create_session(TransportInfo(codec=codec))
    await s.handle_frame(
        b'{"id":1,"connect":{"token":"%s"}}\n{"id":2,"subscribe":{"channel":"%s"}}'
        % (token(user).encode(), channel.encode())
    )
    assert [r["id"] for r in out_json(s) if "id" in r] == [1, 2]
    return s


@pytest.mark.anyio
async def test_mixed_fan_out_encodes_once_per_protocol(node: Node) -> None:
    json_codec, pb_codec = CountingCodec(JSON), CountingCodec(PROTOBUF)
    j1 = await json_subscriber(node, json_codec, "a", "chat:mixed")
    j2 = await json_subscriber(node, json_codec, "b", "chat:mixed")
    p1 = await pb_subscriber(node, pb_codec, "c", "chat:mixed")
    p2 = await pb_subscriber(node, pb_codec, "d", "chat:mixed")

    for s in (j1, j2, p1, p2):
        s.outbox.drain()  # join pushes
    await node.publish("chat:mixed", {"text": "hi"})

    assert (json_codec.publications(), pb_codec.publications()) == (1, 1)
    for s in (j1, j2):
        [reply] = out_json(s)
        assert reply["push"]["channel"] == "chat:mixed"
        assert reply["push"]["pub"]["data"] == {"text": "hi"}
    for s in (p1, p2):
        [reply] = out_pb(s)
        assert reply.push.channel == "chat:mixed"
        assert reply.push.pub.data == b'{"text":"hi"}'


@pytest.mark.anyio
async def test_binary_publication_between_protobuf_clients(node: Node) -> None:
    data = bytes(b for b in range(256) if b != 0x0A)
    publisher = await pb_subscriber(node, PROTOBUF, "a", "bin:bin")
    reader = await pb_subscriber(node, PROTOBUF, "b", "bin:bin")
    await publisher.handle_frame(
        delimited(sdk.Command(id=3, publish=sdk.PublishRequest(channel="bin:bin", data=data)))
    )
    replies = out_pb(publisher)
    assert [r.id for r in replies] == [0, 3] or [r.id for r in replies] == [3, 0]
    [push] = out_pb(reader)
    assert push.push.pub.data == data and push.push.pub.offset == 1
    assert push.push.pub.info == sdk.ClientInfo(user="a", client=publisher.client_id)
    await reader.handle_frame(
        delimited(sdk.Command(id=3, history=sdk.HistoryRequest(channel="bin:bin", limit=5)))
    )
    [history] = out_pb(reader)
    assert [p.data for p in history.history.publications] == [data]


@pytest.mark.anyio
async def test_binary_publication_with_newline_bytes_arrives_intact(node: Node) -> None:
    publisher = await pb_subscriber(node, PROTOBUF, "a", "bin:nl")
    reader = await pb_subscriber(node, PROTOBUF, "b", "bin:nl")
    await publisher.handle_frame(
        delimited(sdk.Command(id=3, publish=sdk.PublishRequest(channel="bin:nl", data=b"a\nb")))
    )
    [push] = out_pb(reader)
    assert push.push.pub.data == b"a\nb"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("id_varint", "closed"), [(uvarint(2**32), True), (uvarint(2**32 + 9), False)]
)
async def test_an_id_past_uint32_is_its_low_32_bits(
    node: Node, id_varint: bytes, closed: bool
) -> None:
    """2^32 becomes id 0, which only a pong or a send may have: 3501, as in Go."""
    s = node.create_session(TransportInfo(codec=PROTOBUF))
    await s.handle_frame(delimited(sdk.Command(id=1, connect=sdk.ConnectRequest(token=token("u")))))
    assert [r.id for r in out_pb(s)] == [1]
    await s.handle_frame(_record(_varint_field(1, id_varint) + _message_field(13, b"")))  # rpc
    if closed:
        assert (s.close_code, s.close_reason) == (3501, "bad request")
    else:
        assert [r.id for r in out_pb(s)] == [9] and s.close_code == 0


@pytest.mark.anyio
async def test_malformed_frame_disconnects_with_3501(node: Node) -> None:
    s = node.create_session(TransportInfo(codec=PROTOBUF))
    await s.handle_frame(b"\x05\x08")
    assert (s.close_code, s.close_reason) == (3501, "bad request")
