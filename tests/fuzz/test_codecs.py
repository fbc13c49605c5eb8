"""The command decoders take any frame: they return commands or raise ProtocolError.

Nothing else may escape them (a session turns ProtocolError into a 3501 disconnect; any
other exception would end the connection's reader with a traceback), and no frame makes
them take long.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from centrifuge_asgi.protocol.codec import Codec, ProtocolError
from centrifuge_asgi.protocol.json_codec import JSON
from centrifuge_asgi.protocol.messages import UINT64_MAX, Command
from centrifuge_asgi.protocol.protobuf_codec import PROTOBUF

from .commands import EGROUP, SGROUP, delimited, field, json_frames, protobuf_frames, tag
from .support import Timer, examples


def decode(codec: Codec, frame: bytes) -> list[Command] | None:
    """The property: commands, or ProtocolError (None); the limit is generous on purpose."""
    with Timer(limit=5.0):
        try:
            commands = codec.decode_commands(frame)
        except ProtocolError:
            return None
    assert commands and all(isinstance(c, Command) for c in commands)
    for c in commands:  # what the session relies on: the integer ranges of the proto types
        assert 0 <= c.id < 2**32
        if c.subscribe is not None:
            assert 0 <= c.subscribe.offset <= UINT64_MAX
        if c.history is not None and c.history.since is not None:
            assert 0 <= c.history.since.offset <= UINT64_MAX
    return commands


@examples(1.0)
@given(st.binary(max_size=300))
@example(b"")
@example(b"\n\n")
@example(b"{}\n\xff")
@example(b"[" * 100_000)
@example(b'{"id":1,"subscribe":{"channel":"\\ud800"}}')
def test_json_decoder_any_bytes(frame: bytes) -> None:
    decode(JSON, frame)


@examples(1.0)
@given(json_frames())
@example(b'{"id":4294967296,"ping":{}}')
@example(b'{"id":1,"subscribe":{"channel":"a","offset":18446744073709551616}}')
@example(b'{"id":1,"history":{"channel":"a","limit":2147483648}}')
@example(b'{"id":1,"connect":{"data":' + b"[" * 50_000 + b"]" * 50_000 + b"}}")
def test_json_decoder_mutated_commands(frame: bytes) -> None:
    decode(JSON, frame)


@examples(1.0)
@given(st.binary(max_size=300))
@example(b"")
@example(b"\xff" * 11)
@example(b"\x00")
def test_protobuf_decoder_any_bytes(frame: bytes) -> None:
    decode(PROTOBUF, frame)


@examples(1.0)
@given(protobuf_frames())
@example(delimited([tag(20, SGROUP) * 10_000 + tag(20, EGROUP) * 10_000]))
@example(delimited([field(5, field(1, b"\xff"))]))  # subscribe.channel not UTF-8
@example(delimited([field(4, field(3, field(1, b"\xed\xa0\x80")))]))  # a subs map key
@example(delimited([field(1, b"x")]))  # id with the wrong wire type
@example(delimited([field(5, 1)]))  # a message field as a varint
def test_protobuf_decoder_mutated_commands(frame: bytes) -> None:
    decode(PROTOBUF, frame)
