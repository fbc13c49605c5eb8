"""Client-protocol commands for the fuzz tests: valid ones, then mutated, as JSON or Protobuf.

``channels``, ``tokens`` and ``signatures`` (shared poll track batches) are what a command
may name: the session tests pass channels of the namespaces their node configures, tokens
and signatures that verify, so that mutated commands reach the code behind the decoder,
not only its error path. Subscribes carry map phases, cursors and delta types; publishes
map keys; sub_refresh shared poll track and untrack batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from centrifuge_asgi.protocol import client_pb2 as pb
from centrifuge_asgi.protocol.protobuf_codec import uvarint

from .support import bad_values, dump, ints, json_values, mangle, mutated, texts

DEFAULT_CHANNELS = ["news:a", "chat:a", "a", "", "nope:x", "$p", "dm:#u1,u2", "x" * 300]

METHODS = [
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
]
KEYS = sorted(
    {*METHODS, "id", "token", "data", "subs", "name", "version", "headers", "flag", "channel"}
    | {"recover", "epoch", "offset", "positioned", "recoverable", "join_leave", "delta", "tf"}
    | {"type", "limit", "since", "reverse", "method"}
    | {"phase", "cursor", "asc", "key", "removed", "track", "untrack", "signature", "items"}
)
Signatures = Sequence[tuple[str, list[str]]]

u64 = st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2**63, 2**64 - 1])
i64 = st.integers(-(2**63), 2**63 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
ids = st.integers(1, 100) | st.integers(1, 2**32 - 1)  # 0 (only for send) comes by mutation


@st.composite
def track_batches(draw: st.DrawFn, signatures: Signatures) -> dict[str, Any]:
    """A shared poll track batch: a known signature with its keys (or anything), versions."""
    known = st.sampled_from(list(signatures)) if signatures else st.nothing()
    signature, keys = draw(known | known | st.tuples(texts, st.lists(texts, max_size=3)))
    items = [{"key": k, **draw(st.fixed_dictionaries({}, optional={"version": u64}))} for k in keys]
    return {"signature": signature, "items": items}


def requests(
    channels: Sequence[str] = DEFAULT_CHANNELS,
    tokens: Sequence[str] = ("",),
    signatures: Signatures = (),
) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
    """One strategy of valid request objects per method."""
    channel = st.sampled_from(list(channels)) | texts
    token = st.sampled_from(list(tokens)) | texts
    data = json_values
    map_key = st.sampled_from(["k1", "k2", "gone", ""]) | texts
    good_delta, bad_delta = (
        st.sampled_from(["", "fossil"]),
        st.sampled_from(["x", "Fossil", "fossil "]),
    )
    subscribe = st.fixed_dictionaries(
        {"channel": channel},
        optional={
            "token": token,
            "recover": st.booleans(),
            "epoch": texts,
            "offset": u64,
            "data": data,
            "positioned": st.booleans(),
            "recoverable": st.booleans(),
            "join_leave": st.booleans(),
            "delta": st.one_of(good_delta, good_delta, good_delta, bad_delta),  # bad: 3501
            "tf": st.just({}),
            "flag": i64,
            "type": st.sampled_from([0, 1, 2, 3, 4, 5]) | i32,  # stream, map*, shared poll
            "phase": st.sampled_from([0, 1, 2, 3, -1]) | i32,  # live, stream, state
            "cursor": map_key,
            "limit": st.sampled_from([0, 1, 2, 100, 1000, 1001, -1]) | i32,
            "asc": st.booleans(),
        },
    )
    only_channel = st.fixed_dictionaries({"channel": channel})
    return {
        "connect": st.fixed_dictionaries(
            {},
            optional={
                "token": token,
                "data": data,
                "subs": st.dictionaries(channel, subscribe, max_size=3),
                "name": texts,
                "version": texts,
                "headers": st.dictionaries(texts, texts, max_size=3),
                "flag": i64,
            },
        ),
        "subscribe": subscribe,
        "unsubscribe": only_channel,
        "publish": st.fixed_dictionaries(
            {"channel": channel},
            optional={
                "data": data,
                "type": st.sampled_from([0, 1, 2]) | i32,  # 1: map publish
                "key": map_key,
                "removed": st.booleans(),
            },
        ),
        "presence": only_channel,
        "presence_stats": only_channel,
        "history": st.fixed_dictionaries(
            {"channel": channel},
            optional={
                "limit": i32,
                "since": st.fixed_dictionaries({}, optional={"offset": u64, "epoch": texts}),
                "reverse": st.booleans(),
            },
        ),
        "ping": st.just({}),
        "send": st.fixed_dictionaries({}, optional={"data": data}),
        "rpc": st.fixed_dictionaries({}, optional={"data": data, "method": texts}),
        "refresh": st.fixed_dictionaries({}, optional={"token": token}),
        "sub_refresh": st.fixed_dictionaries(
            {"channel": channel},
            optional={
                "token": token,
                "type": st.sampled_from([0, 1, 2, 3]) | i32,  # 1 track, 2 untrack
                "track": st.lists(track_batches(signatures), max_size=3),
                "untrack": st.lists(map_key, max_size=4),
            },
        ),
    }


def commands(
    channels: Sequence[str] = DEFAULT_CHANNELS,
    tokens: Sequence[str] = ("",),
    methods: Sequence[str] = METHODS,
    signatures: Signatures = (),
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid command objects: an id and one request (sometimes none: a pong)."""
    reqs = requests(channels, tokens, signatures)
    one = st.sampled_from(list(methods)).flatmap(
        lambda m: st.fixed_dictionaries({"id": ids, m: reqs[m]})
    )
    return st.one_of(one, one, one, st.just({}))


def command_lists(
    channels: Sequence[str] = DEFAULT_CHANNELS,
    tokens: Sequence[str] = ("",),
    methods: Sequence[str] = METHODS,
    lead: Sequence[str] = (),
    signatures: Signatures = (),
) -> tuple[st.SearchStrategy[list[Any]], st.SearchStrategy[list[Any]]]:
    """(valid, mutated) lists of one to four commands; the first of ``lead``'s methods."""
    one = commands(channels, tokens, methods, signatures)
    valid = st.lists(one, min_size=0 if lead else 1, max_size=3 if lead else 4)
    damaged = st.lists(mutated(one, KEYS), min_size=0 if lead else 1, max_size=3 if lead else 4)
    if lead:
        first = commands(channels, tokens, lead, signatures)
        valid = st.tuples(first, valid).map(lambda t: [t[0], *t[1]])
        damaged = st.tuples(mutated(first, KEYS), damaged).map(lambda t: [t[0], *t[1]])
    return valid, damaged


def json_frames(
    channels: Sequence[str] = DEFAULT_CHANNELS,
    tokens: Sequence[str] = ("",),
    methods: Sequence[str] = METHODS,
    lead: Sequence[str] = (),
    signatures: Signatures = (),
) -> st.SearchStrategy[bytes]:
    """Frames of newline-separated commands: valid, mutated, byte-damaged or arbitrary."""
    valid_lists, damaged_lists = command_lists(channels, tokens, methods, lead, signatures)
    valid = valid_lists.map(_json_lines)
    damaged = damaged_lists.map(_json_lines)
    return st.one_of(  # valid ones weigh more: they get past the decoder, into the session
        valid,
        valid,
        valid,
        damaged,
        damaged,
        damaged.flatmap(mangle),
        st.binary(max_size=200),
        st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.lists(bad_values, min_size=1, max_size=3).map(_json_lines),
    )


def _json_lines(values: list[Any]) -> bytes:
    return b"\n".join(dump(v) for v in values)


# ------------------------------------------------------------------------------- protobuf

VARINT, I64, LEN, SGROUP, EGROUP, I32 = range(6)


def tag(number: int, wire_type: int) -> bytes:
    return uvarint(number << 3 | wire_type)


def field(number: int, value: bytes | int, wire_type: int | None = None) -> bytes:
    """One encoded field: an int as a varint, bytes length-delimited."""
    if isinstance(value, int):
        return tag(number, VARINT if wire_type is None else wire_type) + uvarint(value % 2**64)
    return tag(number, LEN if wire_type is None else wire_type) + uvarint(len(value)) + value


def delimited(messages: Sequence[bytes]) -> bytes:
    return b"".join(uvarint(len(m)) + m for m in messages)


def _payload(value: Any) -> bytes:
    return dump(value) if not isinstance(value, bytes) else value


def to_pb(command: dict[str, Any]) -> pb.Command:
    """A valid command object (see :func:`commands`) as a Protobuf ``Command``."""
    m = pb.Command(id=command.get("id", 0))
    for method in METHODS:
        req = command.get(method)
        if req is None:
            continue
        target = getattr(m, method)
        target.SetInParent()
        _fill(target, method, req)
    return m


def _utf8(value: Any) -> Any:
    """Protobuf strings are UTF-8: lone surrogates become ``?``."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    if isinstance(value, dict):
        return {_utf8(k): _utf8(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_utf8(v) for v in value]
    return value


def _fill(target: Any, method: str, req: dict[str, Any]) -> None:
    for key, value in req.items():
        value = value if key == "data" else _utf8(value)
        if key == "data":
            target.data = _payload(value)
        elif key == "subs":
            for channel, sub in value.items():
                entry = target.subs[channel]
                entry.SetInParent()
                _fill(entry, "subscribe", sub)
        elif key == "headers":
            target.headers.update(value)
        elif key == "tf":
            target.tf.SetInParent()
        elif key == "track":
            for batch in value:
                entry = target.track.add(signature=batch["signature"])
                for item in batch["items"]:
                    entry.items.add(**item)
        elif key == "untrack":
            target.untrack.extend(value)
        elif key == "since":
            target.since.SetInParent()
            for k, v in value.items():
                setattr(target.since, k, v)
        else:
            setattr(target, key, value)


@st.composite
def _raw_field(draw: st.DrawFn) -> bytes:
    """A field no encoder writes: wrong wire type, overlong varint, bad UTF-8, deep groups."""
    number = draw(st.integers(1, 20) | st.sampled_from([0, 2**29 - 1, 2**29, 2**61]))
    kind = draw(
        st.sampled_from(["varint", "overlong", "len", "bad_utf8", "groups", "fixed", "cut"])
    )
    if kind == "varint":
        return field(number, draw(ints))
    if kind == "overlong":
        return tag(number, VARINT) + b"\xff" * draw(st.integers(9, 12)) + b"\x01"
    if kind == "len":
        return field(number, draw(st.binary(max_size=30)))
    if kind == "bad_utf8":
        text = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"a\x80b"]))
        inner = field(draw(st.integers(1, 6)), text)
        return field(number, inner)
    if kind == "groups":
        depth = draw(st.sampled_from([1, 50, 99, 100, 101, 1_000, 10_000]))
        end = tag(number, EGROUP) * depth if draw(st.booleans()) else b""
        return tag(number, SGROUP) * depth + end
    if kind == "fixed":
        wire = draw(st.sampled_from([I64, I32]))
        return tag(number, wire) + draw(st.binary(min_size=0, max_size=8))
    return tag(number, LEN) + uvarint(draw(st.integers(1, 2**64 - 1)))


@st.composite
def _nested_bad(draw: st.DrawFn) -> bytes:
    """A method field whose request holds a bad field (so it reaches the nested parser)."""
    method = draw(st.integers(4, 15))
    inner = b"".join(draw(st.lists(_raw_field(), min_size=1, max_size=3)))
    return field(method, inner)


def protobuf_frames(
    channels: Sequence[str] = DEFAULT_CHANNELS,
    tokens: Sequence[str] = ("",),
    methods: Sequence[str] = METHODS,
    lead: Sequence[str] = (),
    signatures: Signatures = (),
) -> st.SearchStrategy[bytes]:
    """Delimited frames of Protobuf commands: valid, with bad fields, damaged, arbitrary."""
    valid_lists, _ = command_lists(channels, tokens, methods, lead, signatures)
    messages = valid_lists.map(lambda cs: [to_pb(c).SerializeToString() for c in cs])
    extra = st.lists(st.lists(_raw_field() | _nested_bad(), max_size=2), min_size=4, max_size=4)
    bad = st.tuples(messages, extra).map(
        lambda t: [m + b"".join(fields) for m, fields in zip(t[0], t[1], strict=False)]
    )
    valid = messages.map(delimited)
    return st.one_of(
        valid,
        valid,
        valid,
        bad.map(delimited),
        bad.map(delimited),
        bad.map(delimited).flatmap(mangle),
        st.binary(max_size=200),
        st.lists(st.binary(max_size=40), min_size=1, max_size=4).map(delimited),
        # length prefixes that overflow or overrun
        st.sampled_from(
            [b"\xff" * 10 + b"\x01", b"\xff" * 11, b"\x80", b"\x05ab", uvarint(2**63) + b"x"]
        ),
    )
