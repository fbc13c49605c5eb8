"""Publication data: the check at the edge (payload.py) and what fan-out does with a
message a protocol cannot carry (skip it, never close the subscribers)."""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import msgspec
import pytest
from centrifuge.protocol import client_pb2 as sdk
from msgspec import Raw

from centrifuge_asgi import ClientError, Node
from centrifuge_asgi.engines.base import Publication
from centrifuge_asgi.payload import (
    MAX_DEPTH,
    deeper_than,
    json_problem,
    publication_data_problem,
)
from centrifuge_asgi.protocol.codec import Codec, EncodedOnce
from centrifuge_asgi.protocol.json_codec import JSON, without_undeliverable
from centrifuge_asgi.protocol.messages import (
    Command,
    HistoryResult,
    Push,
    Reply,
    SubscribeResult,
)
from centrifuge_asgi.protocol.protobuf_codec import PROTOBUF, split_delimited, uvarint
from centrifuge_asgi.session import Session, TransportInfo
from centrifuge_asgi.wire import publication_wire
from tests.interop.support import token


def nested(levels: int, inner: bytes = b"") -> bytes:
    return b"[" * levels + inner + b"]" * levels


# ------------------------------------------------------------------------ the check


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


_TRICKY = ["]", "[", "}{", '"[', "\\", '\\"]', "x\\\\", "é[", "\u2028"]


def _value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth <= 0 or roll < 0.25:
        return rng.choice([1, -2.5e3, None, True, *_TRICKY])
    if roll < 0.6:
        return [_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(_TRICKY) + str(i): _value(rng, depth - 1) for i in range(rng.randint(0, 3))}


_WRAPPERS = [
    (b"[", b"]"),
    (b'{"]":', b"}"),
    (b'["]]",', b',"[["]'),
    (b'{"a":"}}","b\\"":', b"}"),
]


def _chain(rng: random.Random, levels: int, inner: bytes) -> bytes:
    """``levels`` of nesting around ``inner``, with strings full of brackets beside it."""
    opening, closing = [], []
    for _ in range(levels):
        head, tail = rng.choice(_WRAPPERS)
        opening.append(head)
        closing.append(tail)
    return b"".join(opening) + inner + b"".join(reversed(closing))


def test_deeper_than_agrees_with_the_parsed_depth() -> None:
    rng = random.Random(1234)
    for _ in range(400):
        value = _value(rng, rng.randint(1, 8))
        indent = rng.choice([None, 1])
        raw = json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=indent).encode()
        depth = _depth(value)
        if rng.random() < 0.5:
            levels = rng.randint(MAX_DEPTH - 20, MAX_DEPTH + 20)
            raw, depth = _chain(rng, levels, raw), depth + levels
            assert msgspec.json.decode(raw, type=Raw)  # still valid JSON
        for limit in {1, 4, MAX_DEPTH, max(1, depth - 1), max(1, depth), depth + 1}:
            assert deeper_than(raw, limit) is (depth > limit), (limit, depth, raw[:80])


def test_strings_that_hide_brackets_do_not_lower_the_depth() -> None:
    """``"]"`` and ``"["`` in strings around each level must not cancel out real levels."""
    levels = MAX_DEPTH + 1
    data = b'["]",' * levels + b"1" + b',"["]' * levels
    assert not deeper_than(data, levels) and deeper_than(data, MAX_DEPTH)
    assert json_problem(data) == f"data nests deeper than {MAX_DEPTH} levels"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "data is empty"),
        (b'"\xff"', "data is not valid UTF-8"),
        (b'"\xed\xa0\x80"', "data is not valid UTF-8"),  # an encoded surrogate
        (b"plain text", "data is not JSON"),
        (b'{"a":1}\n{"b":2}', "data is not JSON"),
        (b"\x00\x01", "data is not JSON"),
        (nested(MAX_DEPTH + 1), f"data nests deeper than {MAX_DEPTH} levels"),
        (nested(970), f"data nests deeper than {MAX_DEPTH} levels"),
        (nested(5000), f"data nests deeper than {MAX_DEPTH} levels"),
        (nested(MAX_DEPTH), None),
        (nested(500, b'"[[[["'), None),
        (b'{"a": "\xc3\xa9", "b": [1, 2]}', None),
        (b" 1 ", None),
        (b"null", None),
    ],
)
def test_json_problem(data: bytes, problem: str | None) -> None:
    assert json_problem(data) == problem


def test_parsed_data_skips_the_syntax_pass_only() -> None:
    assert json_problem(b"not json", parsed=True) is None  # the decoder has seen it
    assert json_problem(b'"\xff"', parsed=True) == "data is not valid UTF-8"
    assert json_problem(nested(600), parsed=True) == f"data nests deeper than {MAX_DEPTH} levels"
    assert json_problem(b"", parsed=True) == "data is empty"


@pytest.mark.parametrize(
    ("data", "data_format", "problem"),
    [
        (b"\xff\x00", "binary", None),
        (b"", "binary", None),
        (nested(5000), "binary", None),
        (b"\xff\x00", "", "data is not valid UTF-8"),
        (b"\xff\x00", "json", "data is not valid UTF-8"),
        (b"[1]", "json_object", "data is not a JSON object"),
        (b' \n {"a": 1}', "json_object", None),
        (b"[1]", "", None),
    ],
)
def test_publication_data_problem(data: bytes, data_format: str, problem: str | None) -> None:
    assert publication_data_problem(data, data_format) == problem


# --------------------------------------------------------------------- node.publish


def _deep_value(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.anyio
@pytest.mark.parametrize(
    "data",
    [b"\xff", b"text", b"", Raw(b"\xff"), _deep_value(MAX_DEPTH + 1), _deep_value(3000)],
    ids=["bytes", "text", "empty", "raw", "value-513", "value-3000"],
)
async def test_node_publish_refuses_with_107_and_stores_nothing(node: Node, data: Any) -> None:
    with pytest.raises(ClientError) as refused:
        await node.publish("news:x", data)
    assert (refused.value.code, refused.value.message) == (107, "bad request")
    assert (await node.history("news:x", limit=-1)).publications == []


@pytest.mark.anyio
async def test_node_publish_and_broadcast_take_deep_valid_data(node: Node) -> None:
    deep = _deep_value(MAX_DEPTH)
    assert (await node.publish("news:x", deep)).offset == 1
    assert (await node.publish("news:x", nested(MAX_DEPTH))).offset == 2
    results = await node.broadcast(["news:x", "news:y"], deep)
    assert [r.offset for r in results] == [3, 1]  # type: ignore[union-attr]
    assert (await node.publish("bin:x", b"\xff\x00")).offset == 1  # binary: anything
    refused = await node.broadcast(["news:x", "bin:y"], b"\xff")
    assert isinstance(refused[0], ClientError) and refused[0].code == 107
    assert not isinstance(refused[1], ClientError) and refused[1].offset == 1


# ------------------------------------------------------------------------- fan-out


def _pb(*commands: Any) -> bytes:
    out = b""
    for command in commands:
        body = command.SerializeToString()
        out += uvarint(len(body)) + body
    return out


async def _json_session(node: Node, user: str, channel: str, **sub: Any) -> Session:
    s = node.create_session(TransportInfo(codec=JSON))
    commands = [
        {"id": 1, "connect": {"token": token(user)}},
        {"id": 2, "subscribe": {"channel": channel, **sub}},
    ]
    await s.handle_frame("\n".join(json.dumps(c) for c in commands).encode())
    replies = [json.loads(m) for m in s.outbox.drain()]
    assert [r.get("id") for r in replies if "id" in r] == [1, 2], replies
    return s


async def _pb_session(node: Node, user: str, channel: str) -> Session:
    s = node.create_session(TransportInfo(codec=PROTOBUF))
    await s.handle_frame(
        _pb(
            sdk.Command(id=1, connect=sdk.ConnectRequest(token=token(user))),
            sdk.Command(id=2, subscribe=sdk.SubscribeRequest(channel=channel)),
        )
    )
    s.outbox.drain()
    return s


def _json_out(s: Session) -> list[dict[str, Any]]:
    return [json.loads(m) for m in s.outbox.drain()]


def _pb_out(s: Session) -> list[Any]:
    return [sdk.Reply.FromString(bytes(r)) for m in s.outbox.drain() for r in split_delimited(m)]


@pytest.mark.anyio
async def test_json_subscribers_skip_binary_data_and_stay_connected(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """In a ``binary`` channel: Protobuf subscribers get the bytes, JSON subscribers (plain
    and positioned) skip them, stay connected and take the next publication in order."""
    plain = await _json_session(node, "a", "bin:x")
    positioned = await _json_session(node, "b", "bin:x", positioned=True)
    pb = await _pb_session(node, "c", "bin:x")
    with caplog.at_level(logging.WARNING, "centrifuge_asgi.fanout"):
        await node.publish("bin:x", b"\xff\x00")
        await node.publish("bin:x", {"n": 2})
    for s in (plain, positioned):
        [push] = _json_out(s)
        assert (push["push"]["pub"]["data"], push["push"]["pub"]["offset"]) == ({"n": 2}, 2)
        assert s.close_code == 0
    assert [r.push.pub.data for r in _pb_out(pb)] == [b"\xff\x00", b'{"n":2}']
    warnings = [r for r in caplog.records if r.name == "centrifuge_asgi.fanout"]
    assert len(warnings) == 1  # once per publication, not per subscriber
    assert "'bin:x' skipped for json clients" in warnings[0].getMessage()


@pytest.mark.anyio
async def test_recovery_and_history_leave_out_what_a_json_client_cannot_receive(
    node: Node,
) -> None:
    await node.publish("bin:r", {"n": 1})
    await node.publish("bin:r", b"\xff")
    await node.publish("bin:r", {"n": 3})
    epoch = (await node.history("bin:r", limit=0)).epoch
    s = await _json_session(node, "a", "bin:other")
    sub = {"channel": "bin:r", "recover": True, "offset": 0, "epoch": epoch}
    await s.handle_frame(json.dumps({"id": 3, "subscribe": sub}).encode())
    await s.handle_frame(b'{"id":4,"history":{"channel":"bin:r","limit":-1}}')
    subscribed, history = _json_out(s)
    assert subscribed["subscribe"]["recovered"] is True
    assert [p["offset"] for p in subscribed["subscribe"]["publications"]] == [1, 3]
    assert [p["offset"] for p in history["history"]["publications"]] == [1, 3]
    assert s.close_code == 0


def test_without_undeliverable_touches_only_publication_lists() -> None:
    good = publication_wire(Publication(offset=1, data=b'{"a":1}'))
    bad = publication_wire(Publication(offset=2, data=b"\xff"))
    reply = Reply(id=1, history=HistoryResult(publications=[good, bad], epoch="e", offset=2))
    slim = without_undeliverable(reply)
    assert slim is not None and slim.history is not None
    assert slim.history.publications == [good] and slim.history.offset == 2
    assert (
        without_undeliverable(Reply(id=1, subscribe=SubscribeResult(publications=[good]))) is None
    )
    assert without_undeliverable(Reply(push=Push(channel="c", pub=bad))) is None


class FailingCodec:
    """JSON, except that publication pushes fail to encode (an unforeseen bug)."""

    name = "json"
    binary = False
    ping = b"{}"

    def decode_commands(self, frame: bytes) -> list[Command]:
        return JSON.decode_commands(frame)

    def encode_reply(self, reply: Reply) -> bytes:
        if reply.push is not None and reply.push.pub is not None:
            raise RuntimeError("encoder bug")
        return JSON.encode_reply(reply)

    def join(self, messages: list[bytes]) -> bytes:
        return JSON.join(messages)


@pytest.mark.anyio
async def test_an_encoder_failure_skips_the_publication_only(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    codec: Codec = FailingCodec()
    subscribers = []
    for user in ("a", "b"):
        s = node.create_session(TransportInfo(codec=codec))
        await s.handle_frame(
            b'{"id":1,"connect":{"token":"%s"}}\n{"id":2,"subscribe":{"channel":"news:f"}}'
            % token(user).encode()
        )
        s.outbox.drain()
        subscribers.append(s)
    await node.publish("news:f", {"n": 1})
    for s in subscribers:
        assert s.outbox.drain() == [] and s.close_code == 0
    assert [r.levelno for r in caplog.records if r.name == "centrifuge_asgi.fanout"] == [
        logging.ERROR
    ]


def test_encoded_once_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    ok = publication_wire(Publication(data=b'{"ok":1}'))
    encoded = EncodedOnce(Reply(push=Push(channel="c", pub=ok)))
    assert encoded.get(FailingCodec()) == b""  # an encoder bug: skipped, logged
    assert encoded.get(PROTOBUF)  # other protocols still get it
    assert "push into channel 'c' skipped for json clients" in caplog.text
    not_json = publication_wire(Publication(data=b"x"))
    assert EncodedOnce(Reply(push=Push(channel="c", pub=not_json))).get(JSON) == b""


@pytest.mark.anyio
async def test_a_reply_to_one_client_that_cannot_be_encoded_closes_it_with_3506(
    node: Node,
) -> None:
    """Not a fan-out: the client asked for it (an RPC answering bytes to a JSON client)."""

    @node.on_rpc("bytes")
    async def rpc(event: Any) -> bytes:
        return b"\xff"

    s = node.create_session(TransportInfo(codec=JSON))
    await s.handle_frame(b'{"id":1,"connect":{"token":"%s"}}' % token("a").encode())
    s.outbox.drain()
    await s.handle_frame(b'{"id":2,"rpc":{"method":"bytes"}}')
    assert (s.close_code, s.close_reason) == (3506, "inappropriate protocol")


def test_msgspec_raw_is_not_parsed_by_the_check() -> None:
    """``is_parsed``: bytes and Raw are checked in full, Python values were encoded."""
    from centrifuge_asgi.payload import ParsedJson, is_parsed, to_payload

    assert not is_parsed(b"x") and not is_parsed(Raw(b"x")) and not is_parsed(bytearray())
    assert is_parsed({"a": 1}) and is_parsed(ParsedJson(b"1"))
    assert to_payload(ParsedJson(b"[1]")) == b"[1]"
    assert msgspec.json.decode(to_payload({"a": [1]})) == {"a": [1]}
