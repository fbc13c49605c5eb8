"""A session takes any frame: it answers, or disconnects with a protocol code.

Each example opens a session on a running node (no socket: frames in, encoded messages
out, as in tests/unit/test_session.py), connected or not, and feeds it frames of valid,
mutated and arbitrary commands that name the node's real channels and valid tokens, so
they get past the decoder. Properties: ``handle_frame`` never raises; every error code
in a reply is a client-protocol error code and the connection, when it ends, ends with a
disconnect code of codes.py; nothing is logged at ERROR (a command that failed with a
traceback answers 100 and logs one).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from centrifuge_asgi import Node
from centrifuge_asgi.codes import DisconnectCode, ErrorCode
from centrifuge_asgi.protocol import client_pb2 as pb
from centrifuge_asgi.protocol.codec import Codec
from centrifuge_asgi.protocol.json_codec import JSON
from centrifuge_asgi.protocol.protobuf_codec import PROTOBUF, split_delimited
from centrifuge_asgi.session import Session, TransportInfo

from .commands import METHODS, delimited, json_frames, protobuf_frames, to_pb
from .harness import CHANNELS, CONFIG, SIGNATURES, TOKEN, TOKENS, ErrorRecords, Served, serve
from .support import dump, examples

ERROR_CODES = {int(c) for c in ErrorCode}
DISCONNECT_CODES = {int(c) for c in DisconnectCode}


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serve(CONFIG) as served:
        yield served


def parse(codec: Codec, message: bytes) -> list[dict[str, Any]]:
    """An encoded message as reply objects (Protobuf ones as their JSON mapping)."""
    if codec is JSON:
        return [json.loads(line) for line in message.split(b"\n")]
    from google.protobuf.json_format import MessageToDict

    return [
        MessageToDict(pb.Reply.FromString(bytes(r)), preserving_proto_field_name=True)
        for r in split_delimited(message)
    ]


def check_output(codec: Codec, session: Session) -> None:
    for message in session.outbox.drain():
        for reply in parse(codec, message):
            error = reply.get("error")
            if error is not None:
                assert error.get("code", 0) in ERROR_CODES, reply
            disconnect = (reply.get("push") or {}).get("disconnect")
            if disconnect is not None:
                assert disconnect.get("code", 0) in DISCONNECT_CODES, reply


def connect_frame(codec: Codec) -> bytes:
    command = {"id": 1, "connect": {"token": TOKEN}}
    if codec is JSON:
        return dump(command)
    return delimited([to_pb(command).SerializeToString()])


async def feed(node: Node, codec: Codec, connect: bool, frames: list[bytes]) -> str:
    """Run the frames; what happened (for ``--hypothesis-show-statistics``)."""
    session = node.create_session(TransportInfo(codec=codec))
    try:
        if connect:
            await session.handle_frame(connect_frame(codec))
            assert session.connected
            check_output(codec, session)
        for frame in frames:
            with anyio.fail_after(10):
                await session.handle_frame(frame)
            check_output(codec, session)
            if session.closing:
                break
        if session.closing:
            assert session.close_code in DISCONNECT_CODES
            return f"disconnected {session.close_code}"
        return f"open, {len(session.subs)} subscriptions"
    finally:
        await session.finish()


def run(served: Served, codec: Codec, connect: bool, frames: list[bytes]) -> None:
    with ErrorRecords() as errors:
        outcome = served.portal.call(feed, served.node, codec, connect, frames)
    errors.check()
    event(outcome)


AFTER_CONNECT = [m for m in METHODS if m != "connect"]
json_connect = json_frames(CHANNELS, TOKENS, lead=["connect"], signatures=SIGNATURES)
json_any = json_frames(CHANNELS, TOKENS, methods=AFTER_CONNECT, signatures=SIGNATURES)
pb_connect = protobuf_frames(CHANNELS, TOKENS, lead=["connect"], signatures=SIGNATURES)
pb_any = protobuf_frames(CHANNELS, TOKENS, methods=AFTER_CONNECT, signatures=SIGNATURES)


@examples(0.5)
@given(first=json_connect, rest=st.lists(json_any, max_size=2))
@example(first=b'{"id":1,"connect":{"token":"' + TOKEN.encode() + b'"}}', rest=[])
def test_json_session_before_connect(served: Served, first: bytes, rest: list[bytes]) -> None:
    run(served, JSON, False, [first, *rest])


@examples(0.5)
@given(frames=st.lists(json_any, min_size=1, max_size=3))
@example(frames=[b'{"id":2,"publish":{"channel":"bin:a","data":{"a":1}}}'])
@example(frames=[b'{"id":2,"subscribe":{"channel":"obj:a","offset":18446744073709551615}}'])
@example(frames=[b'{"id":2,"history":{"channel":"news:a","limit":-2147483648}}'])
def test_json_session_connected(served: Served, frames: list[bytes]) -> None:
    run(served, JSON, True, frames)


@examples(0.5)
@given(first=pb_connect, rest=st.lists(pb_any, max_size=2))
def test_protobuf_session_before_connect(served: Served, first: bytes, rest: list[bytes]) -> None:
    run(served, PROTOBUF, False, [first, *rest])


@examples(0.5)
@given(frames=st.lists(pb_any, min_size=1, max_size=3))
def test_protobuf_session_connected(served: Served, frames: list[bytes]) -> None:
    run(served, PROTOBUF, True, frames)


_SIG, _KEYS = SIGNATURES[1]  # k1, k2 on poll:a
_TRACK = {"signature": _SIG, "items": [{"key": k} for k in _KEYS]}
SETUPS = {  # commands that put the session in a state the fuzzed frames then act on
    "delta": [{"id": 2, "subscribe": {"channel": "delta:a", "delta": "fossil", "recover": True}}],
    "map state": [{"id": 2, "subscribe": {"channel": "map:a", "type": 1, "phase": 2, "limit": 1}}],
    "map delta": [
        {"id": 2, "subscribe": {"channel": "map:a", "type": 1, "phase": 2, "delta": "fossil"}},
        {"id": 3, "publish": {"channel": "map:a", "type": 1, "key": "k1", "data": {"a": 1}}},
    ],
    "map unsubscribed": [  # entries in the map; the fuzzed subscribes start over
        {"id": 2, "subscribe": {"channel": "map:a", "type": 1, "phase": 2}},
        *(
            {"id": n, "publish": {"channel": "map:a", "type": 1, "key": f"k{n}", "data": {}}}
            for n in (3, 4)
        ),
        {"id": 5, "unsubscribe": {"channel": "map:a"}},
    ],
    "map stream": [{"id": 2, "subscribe": {"channel": "map:a", "type": 1, "phase": 1}}],
    "cursor": [{"id": 2, "subscribe": {"channel": "cursor:a", "type": 1, "phase": 2}}],
    "poll": [
        {"id": 2, "subscribe": {"channel": "poll:a", "type": 4, "delta": "fossil"}},
        {"id": 3, "sub_refresh": {"channel": "poll:a", "type": 1, "track": [_TRACK]}},
    ],
    "pollx": [{"id": 2, "subscribe": {"channel": "pollx:a", "type": 4}}],
}
setups = st.sampled_from(sorted(SETUPS))


@examples(0.5)
@given(setup=setups, frames=st.lists(json_any, min_size=1, max_size=3))
def test_json_session_after_setup(served: Served, setup: str, frames: list[bytes]) -> None:
    """Fuzzed frames to a session subscribed to a delta, map or shared poll channel."""
    event(setup)
    run(served, JSON, True, [dump(c) for c in SETUPS[setup]] + frames)


@examples(0.25)
@given(setup=setups, frames=st.lists(pb_any, min_size=1, max_size=3))
def test_protobuf_session_after_setup(served: Served, setup: str, frames: list[bytes]) -> None:
    event(setup)
    setup_frames = [delimited([to_pb(c).SerializeToString()]) for c in SETUPS[setup]]
    run(served, PROTOBUF, True, setup_frames + frames)


@pytest.mark.parametrize("delta", ["x", "Fossil", "fossil "])
def test_unknown_delta_type_disconnects_with_3501(served: Served, delta: str) -> None:
    frame = dump({"id": 2, "subscribe": {"channel": "delta:a", "delta": delta}})
    outcome = served.portal.call(feed, served.node, JSON, True, [frame])
    assert outcome == "disconnected 3501"


def test_fossil_delta_subscribe_is_granted(served: Served) -> None:
    frame = dump({"id": 2, "subscribe": {"channel": "delta:a", "delta": "fossil"}})
    outcome = served.portal.call(feed, served.node, JSON, True, [frame])
    assert outcome == "open, 1 subscriptions"
