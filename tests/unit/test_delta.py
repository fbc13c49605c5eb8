"""Fossil delta compression: the algorithm (against centrifuge-python's own decoder), the
negotiation on subscribe, the delta form of live and recovered publications (JSON and
Protobuf), the chain rules (a delta only on top of the payload the client holds), and
computing each delta once per publication however many subscribers there are."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from centrifuge.fossil import apply_delta as sdk_apply
from google.protobuf.json_format import MessageToDict
from hypothesis import given, settings
from hypothesis import strategies as st

from centrifuge_asgi import Node, fossil
from centrifuge_asgi.engines.base import Publication
from centrifuge_asgi.protocol import client_pb2 as pb
from centrifuge_asgi.protocol.protobuf_codec import PROTOBUF, uvarint
from centrifuge_asgi.session import Session, TransportInfo
from tests.interop.support import make_config, token

# ------------------------------------------------------------------------ the algorithm


def edit(data: bytes, rng: random.Random, n: int) -> bytes:
    """``data`` with ``n`` small random replacements, insertions and deletions."""
    out = bytearray(data)
    for _ in range(n):
        at = rng.randrange(len(out) + 1)
        kind = rng.randrange(3)
        chunk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        if kind == 0:
            out[at : at + len(chunk)] = chunk
        elif kind == 1:
            out[at:at] = chunk
        else:
            del out[at : at + len(chunk)]
    return bytes(out)


similar = st.builds(
    lambda seed, size, n: (lambda rng: (lambda a: (a, edit(a, rng, n)))(rng.randbytes(size)))(
        random.Random(seed)
    ),
    st.integers(0, 2**32),
    st.integers(0, 3000),
    st.integers(0, 20),
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=400))
def test_apply_inverts_create_on_any_bytes(a: bytes, b: bytes) -> None:
    delta = fossil.create(a, b)
    assert fossil.apply(a, delta) == b
    assert bytes(sdk_apply(a, delta)) == b


@settings(max_examples=150, deadline=None)
@given(similar)
def test_similar_payloads_give_small_deltas_the_sdk_decodes(pair: tuple[bytes, bytes]) -> None:
    a, b = pair
    delta = fossil.create(a, b)
    assert fossil.apply(a, delta) == b
    assert bytes(sdk_apply(a, delta)) == b
    if len(a) >= 1000 and a == b:
        assert len(delta) < 20  # one copy and a checksum


def test_format_details() -> None:
    # a short source is never searched: one insert of the whole target
    assert fossil.create(b"abc", b"hello") == b"5\n5:hello" + b"%s;" % _b64(
        fossil.checksum(b"hello")
    )
    assert fossil.checksum(b"") == 0
    assert fossil.checksum(b"\x00\x00\x00\x01\x01") == 1 + (1 << 24)
    src = bytes(range(256)) * 4
    delta = fossil.create(src, src)
    assert delta.startswith(b"G0\n" + b"G0@0,")  # 1024 = "G0": a copy of everything


def _b64(n: int) -> bytes:
    digits = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
    out = b""
    while True:
        out = digits[n & 63 : (n & 63) + 1] + out
        n >>= 6
        if not n:
            return out


def test_the_search_stops_on_unrelated_payloads() -> None:
    """Past ``max_literal`` unmatched bytes there is no delta (a bounded cost); similar
    payloads of the same size still get one."""
    from centrifuge_asgi.delta import MAX_NEW_BYTES, patch_for

    rng = random.Random(3)
    a, b = rng.randbytes(100_000), rng.randbytes(100_000)
    assert fossil.create_within(a, b, MAX_NEW_BYTES) is None
    assert patch_for(a, b) == b""
    similar = edit(a, rng, 10)
    patch = patch_for(a, similar)
    assert 0 < len(patch) < 500 and fossil.apply(a, patch) == similar
    assert fossil.create_within(a, similar, None) == fossil.create(a, similar)
    big = rng.randbytes(256 * 1024 + 1)
    assert patch_for(big, big[:-1]) == b"" and patch_for(big[:-1], big[:-2]) != b""


@pytest.mark.parametrize(
    "delta",
    [
        b"",
        b"5",
        b"5\n",
        b"5\n5:hel",
        b"5\n5:hello",
        b"5\n5:hello0;",  # bad checksum
        b"5\n3@0,",  # copy past the source
        b"5\n6:hello!X;",  # more than announced
        b"5\n5#hello",  # unknown operator
        b"5x",
        b"\n",
    ],
)
def test_bad_deltas_raise_delta_error(delta: bytes) -> None:
    with pytest.raises(fossil.DeltaError):
        fossil.apply(b"ab", delta)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.binary(max_size=200))
def test_garbage_raises_only_delta_error(src: bytes, delta: bytes) -> None:
    """Anything but a DeltaError (an IndexError, a KeyError) fails the test."""
    with contextlib.suppress(fossil.DeltaError):
        fossil.apply(src, delta)


# ------------------------------------------------------------------------ through sessions

DELTA_NAMESPACES = [
    # negotiable, positioned: deltas when the publisher asks
    {
        "name": "dl",
        "allow_subscribe_for_client": True,
        "history_size": 20,
        "history_ttl": "300s",
        "force_recovery": True,
        "allowed_delta_types": ["fossil"],
    },
    # every publication is a delta publication
    {
        "name": "dlp",
        "allow_subscribe_for_client": True,
        "history_size": 20,
        "history_ttl": "300s",
        "force_positioning": True,
        "allowed_delta_types": ["fossil"],
        "delta_publish": True,
        "allow_publish_for_subscriber": True,
    },
    # delta and tags filters together (the SDKs refuse the pair; the server does not)
    {
        "name": "dltf",
        "allow_subscribe_for_client": True,
        "history_size": 20,
        "history_ttl": "300s",
        "force_recovery": True,
        "allowed_delta_types": ["fossil"],
        "allow_tags_filter": True,
    },
    # negotiable but not positioned (no history): always full, as Centrifugo
    {"name": "dlu", "allow_subscribe_for_client": True, "allowed_delta_types": ["fossil"]},
    # history, but no delta allowed
    {
        "name": "nodl",
        "allow_subscribe_for_client": True,
        "history_size": 20,
        "history_ttl": "300s",
        "force_recovery": True,
        "delta_publish": True,
    },
]


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    cfg = make_config()
    cfg["channel"]["namespaces"].extend(DELTA_NAMESPACES)
    async with Node(cfg) as n:
        yield n
        for s in list(n.registry.sessions()):
            await s.finish()


def replies(s: Session) -> list[dict[str, Any]]:
    if s.codec is PROTOBUF:
        out = []
        for frame in s.outbox.drain():
            pos = 0
            while pos < len(frame):
                size, shift = 0, 0
                while True:
                    byte = frame[pos]
                    pos += 1
                    size |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                reply = pb.Reply()
                reply.ParseFromString(frame[pos : pos + size])
                pos += size
                out.append(MessageToDict(reply, preserving_proto_field_name=True))
        return out
    return [json.loads(line) for m in s.outbox.drain() for line in m.split(b"\n")]


def command(s: Session, cmd: dict[str, Any]) -> bytes:
    if s.codec is PROTOBUF:
        from google.protobuf.json_format import ParseDict

        raw = ParseDict(cmd, pb.Command()).SerializeToString()
        return uvarint(len(raw)) + raw
    return json.dumps(cmd).encode()


async def connected(node: Node, *, protobuf: bool = False, user: str = "u1") -> Session:
    info = TransportInfo(codec=PROTOBUF) if protobuf else TransportInfo()
    s = node.create_session(info)
    await s.handle_frame(command(s, {"id": 1, "connect": {"token": token(user)}}))
    assert "connect" in replies(s)[0]
    return s


async def subscribe(s: Session, **req: Any) -> dict[str, Any]:
    await s.handle_frame(command(s, {"id": 2, "subscribe": req}))
    [reply] = replies(s)
    return reply


class Decoder:
    """What an SDK does with the publications of one delta subscription."""

    def __init__(self, protobuf: bool = False) -> None:
        self.prev: bytes | None = None
        self.protobuf = protobuf
        self.deltas = 0

    def feed(self, pub: dict[str, Any]) -> Any:
        import base64

        raw = pub["data"]
        data = base64.b64decode(raw) if self.protobuf else raw.encode()
        if not self.protobuf:
            assert isinstance(raw, str), "a delta subscriber gets data as a JSON string"
        if pub.get("delta"):
            assert self.prev is not None, "a delta without its base"
            data = bytes(sdk_apply(self.prev, data))
            self.deltas += 1
        self.prev = data
        return json.loads(data)


def doc(n: int) -> dict[str, Any]:
    return {"n": n, "text": "the same long text that does not change " * 8, "tail": n * 7}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("channel", "asked", "negotiated"),
    [
        ("dl:a", "fossil", True),
        ("dlu:a", "fossil", True),  # negotiated; publications come full (no positioning)
        ("nodl:a", "fossil", False),  # not allowed: subscribed, without delta
        ("news:a", "fossil", False),
        ("dl:b", "", False),
    ],
)
async def test_negotiation(node: Node, channel: str, asked: str, negotiated: bool) -> None:
    s = await connected(node)
    req: dict[str, Any] = {"channel": channel}
    if asked:
        req["delta"] = asked
    reply = await subscribe(s, **req)
    assert reply["subscribe"].get("delta", False) is negotiated


@pytest.mark.anyio
@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
@pytest.mark.parametrize("delta", ["xdelta", "FOSSIL", "fossil "])
async def test_unknown_delta_type_is_a_bad_request(node: Node, protobuf: bool, delta: str) -> None:
    s = await connected(node, protobuf=protobuf)
    await s.handle_frame(command(s, {"id": 2, "subscribe": {"channel": "dl:a", "delta": delta}}))
    assert (s.close_code, s.close_reason) == (3501, "bad request")
    assert "dl:a" not in s.subs


@pytest.mark.anyio
@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
async def test_live_chain(node: Node, protobuf: bool) -> None:
    s = await connected(node, protobuf=protobuf)
    plain = await connected(node, protobuf=protobuf, user="u2")
    assert (await subscribe(s, channel="dl:live", delta="fossil"))["subscribe"]["delta"]
    await subscribe(plain, channel="dl:live")
    dec = Decoder(protobuf)
    for n in range(1, 6):
        await node.publish("dl:live", doc(n), delta=True)
    await node.publish("dl:live", doc(6))  # not a delta publication: full
    await node.publish("dl:live", doc(7), delta=True)  # a delta against 6
    pubs = [r["push"]["pub"] for r in replies(s)]
    assert [dec.feed(p) for p in pubs] == [doc(n) for n in range(1, 8)]
    assert [bool(p.get("delta")) for p in pubs] == [False, True, True, True, True, False, True]
    assert all(len(p["data"]) < 80 for p in pubs if p.get("delta"))
    # the plain subscriber in the same channel gets ordinary publications
    plain_pubs = [r["push"]["pub"] for r in replies(plain)]
    assert not any(p.get("delta") for p in plain_pubs)
    if not protobuf:
        assert [p["data"] for p in plain_pubs] == [doc(n) for n in range(1, 8)]


@pytest.mark.anyio
async def test_delta_publish_namespace_and_unpositioned(node: Node) -> None:
    s = await connected(node)
    await subscribe(s, channel="dlp:x", delta="fossil")
    await subscribe(s, channel="dlu:x", delta="fossil")
    await subscribe(s, channel="nodl:x", delta="fossil")
    for n in range(1, 4):
        for ch in ("dlp:x", "dlu:x", "nodl:x"):
            await node.publish(ch, doc(n))
    by_channel: dict[str, list[dict[str, Any]]] = {}
    for r in replies(s):
        by_channel.setdefault(r["push"]["channel"], []).append(r["push"]["pub"])
    assert [bool(p.get("delta")) for p in by_channel["dlp:x"]] == [False, True, True]
    # negotiated without positioning: JSON-string data, never a delta (as Centrifugo)
    assert [p["data"] for p in by_channel["dlu:x"]] == [
        json.dumps(doc(n), separators=(",", ":")) for n in range(1, 4)
    ]
    # not negotiated: ordinary publications
    assert [p["data"] for p in by_channel["nodl:x"]] == [doc(n) for n in range(1, 4)]


@pytest.mark.anyio
async def test_mid_stream_joiner_starts_full(node: Node) -> None:
    first = await connected(node)
    await subscribe(first, channel="dl:mid", delta="fossil")
    await node.publish("dl:mid", doc(1), delta=True)
    await node.publish("dl:mid", doc(2), delta=True)
    late = await connected(node, user="u2")
    await subscribe(late, channel="dl:mid", delta="fossil")
    await node.publish("dl:mid", doc(3), delta=True)
    await node.publish("dl:mid", doc(4), delta=True)
    assert [bool(r["push"]["pub"].get("delta")) for r in replies(first)] == [
        False,
        True,
        True,
        True,
    ]
    late_pubs = [r["push"]["pub"] for r in replies(late)]
    assert [bool(p.get("delta")) for p in late_pubs] == [False, True]
    dec = Decoder()
    assert [dec.feed(p) for p in late_pubs] == [doc(3), doc(4)]


@pytest.mark.anyio
@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
async def test_recovery_is_a_chain_from_what_the_client_has(node: Node, protobuf: bool) -> None:
    s = await connected(node, protobuf=protobuf)
    reply = await subscribe(s, channel="dl:rec", delta="fossil")
    epoch = reply["subscribe"]["epoch"]
    dec = Decoder(protobuf)
    await node.publish("dl:rec", doc(1), delta=True)
    assert dec.feed(replies(s)[0]["push"]["pub"]) == doc(1)
    await s.finish()
    for n in range(2, 6):
        await node.publish("dl:rec", doc(n), delta=True)
    again = await connected(node, protobuf=protobuf)
    reply = await subscribe(
        again, channel="dl:rec", delta="fossil", recover=True, offset=1, epoch=epoch
    )
    res = reply["subscribe"]
    assert res["recovered"] and res["delta"]
    pubs = res["publications"]
    # the first recovered one is full (the SDK may hold no base), then deltas
    assert [bool(p.get("delta")) for p in pubs] == [False, True, True, True]
    dec = Decoder(protobuf)
    assert [dec.feed(p) for p in pubs] == [doc(n) for n in range(2, 6)]
    await node.publish("dl:rec", doc(6), delta=True)  # live continues the chain
    [live] = [r["push"]["pub"] for r in replies(again)]
    assert live.get("delta") and dec.feed(live) == doc(6)


@pytest.mark.anyio
async def test_recovered_with_nothing_missed_sends_the_next_one_full(node: Node) -> None:
    s = await connected(node)
    epoch = (await subscribe(s, channel="dl:top", delta="fossil"))["subscribe"]["epoch"]
    await node.publish("dl:top", doc(1), delta=True)
    replies(s)
    await s.finish()
    again = await connected(node)
    res = (
        await subscribe(
            again, channel="dl:top", delta="fossil", recover=True, offset=1, epoch=epoch
        )
    )["subscribe"]
    assert res["recovered"] and not res.get("publications")
    await node.publish("dl:top", doc(2), delta=True)
    [live] = [r["push"]["pub"] for r in replies(again)]
    assert not live.get("delta")  # the client may not hold offset 1 any more


@pytest.mark.anyio
async def test_each_delta_is_computed_once_per_publication(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    from centrifuge_asgi import delta as delta_module

    calls = 0
    real = fossil.create_within

    def counting(a: bytes, b: bytes, max_literal: int | None) -> bytes | None:
        nonlocal calls
        calls += 1
        return real(a, b, max_literal)

    monkeypatch.setattr(delta_module.fossil, "create_within", counting)
    sessions = [await connected(node, user=f"u{i}") for i in range(20)]
    sessions += [await connected(node, protobuf=True, user=f"p{i}") for i in range(20)]
    for s in sessions:
        await subscribe(s, channel="dl:many", delta="fossil")
    for n in range(1, 5):
        await node.publish("dl:many", doc(n), delta=True)
    assert calls == 3  # publications 2, 3 and 4, for 40 subscribers and two protocols
    for s in sessions:
        pubs = [r["push"]["pub"] for r in replies(s)]
        dec = Decoder(protobuf=s.codec is PROTOBUF)
        assert [dec.feed(p) for p in pubs] == [doc(n) for n in range(1, 5)]
        assert dec.deltas == 3


@pytest.mark.anyio
async def test_multibyte_text_never_breaks_the_json_string(node: Node) -> None:
    s = await connected(node)
    await subscribe(s, channel="dl:utf", delta="fossil")
    rng = random.Random(7)
    words = ["ж", "€", "𝄞", "a", "日本", "é", " "]
    dec = Decoder()
    texts = []
    text = "".join(rng.choice(words) for _ in range(300))
    for _ in range(40):
        chars = list(text)
        for _ in range(3):
            chars[rng.randrange(len(chars))] = rng.choice(words)
        text = "".join(chars)
        texts.append(text)
        await node.publish("dl:utf", {"t": text}, delta=True)
    got = [dec.feed(r["push"]["pub"]) for r in replies(s)]
    assert got == [{"t": t} for t in texts]
    assert dec.deltas == len(texts) - 1  # copies end on character boundaries


@pytest.mark.anyio
async def test_server_api_delta_flag(node: Node) -> None:
    from centrifuge_asgi.api_exec import Executor
    from centrifuge_asgi.api_schema import BroadcastRequest, PublishRequest

    s = await connected(node)
    await subscribe(s, channel="dl:api", delta="fossil")
    api = Executor(node)
    for n in range(1, 4):
        await api.publish(PublishRequest(channel="dl:api", data=_raw(doc(n)), delta=n > 1))
    await api.broadcast(BroadcastRequest(channels=["dl:api"], data=_raw(doc(4)), delta=True))
    await api.broadcast(BroadcastRequest(channels=["dl:api"], data=_raw(doc(5))))
    pubs = [r["push"]["pub"] for r in replies(s)]
    assert [bool(p.get("delta")) for p in pubs] == [False, True, True, True, False]
    dec = Decoder()
    assert [dec.feed(p) for p in pubs] == [doc(n) for n in range(1, 6)]


def _raw(value: Any) -> Any:
    import msgspec

    return msgspec.Raw(json.dumps(value).encode())


# ------------------------------------------------------------------- Redis PUB/SUB framing


def test_redis_frame_with_the_previous_publication() -> None:
    from centrifuge_asgi.engines.redis_codec import decode_event, encode_publication

    prev = encode_publication(b'{"n":1}', None, None, 5)
    pub = encode_publication(b'{"n":2}', None, {"k": "v"}, 6)
    event = decode_event(b"__d1:8:ep0ch:%d__" % len(prev) + prev + pub)
    assert event.epoch == "ep0ch"
    assert event.publication is not None and event.prev is not None
    assert (event.publication.offset, event.publication.data) == (8, b'{"n":2}')
    assert event.publication.tags == {"k": "v"}
    assert (event.prev.offset, event.prev.data) == (7, b'{"n":1}')


@pytest.mark.parametrize(
    "frame",
    [b"__d1:8:e:99__x", b"__d1:8:e__x", b"__d1:x:e:1__x", b"__d1:1:e:0__x", b"__d1:8:e:1"],
)
def test_malformed_redis_frames_are_value_errors(frame: bytes) -> None:
    from centrifuge_asgi.engines.redis_codec import decode_event

    with pytest.raises(ValueError):
        decode_event(frame)


# --------------------------------------------------------- brokers: the previous publication


class PrevRecorder:
    """A broker event handler that records each publication with the ``prev`` it got."""

    def __init__(self) -> None:
        self.got: list[tuple[int, bytes, int | None, bytes | None]] = []
        self.node_id = "prev-recorder"

    def handle_publication(
        self, channel: str, pub: Publication, epoch: str, prev: Publication | None = None
    ) -> None:
        self.got.append(
            (pub.offset, pub.data, None if prev is None else prev.offset, prev and prev.data)
        )

    def handle_join(self, channel: str, info: Any) -> None: ...

    def handle_leave(self, channel: str, info: Any) -> None: ...

    def handle_control(self, data: bytes) -> None: ...


@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, PrevRecorder]]:
    from centrifuge_asgi.config import Config
    from centrifuge_asgi.engines.memory import MemoryBroker
    from centrifuge_asgi.engines.redis import RedisBroker
    from tests.unit.test_redis_engine import require_main_redis, unique_prefix

    handler = PrevRecorder()
    if request.param == "memory":
        b: Any = MemoryBroker()
    else:
        require_main_redis()
        cfg = Config.from_dict({"engine": {"type": "redis", "redis": {"prefix": unique_prefix()}}})
        b = RedisBroker.from_config(cfg.engine.redis)
        b.register_control_handler(handler, handler.node_id)
    await b.start(handler)
    try:
        await b.subscribe("ch")
        yield b, handler
    finally:
        await b.close()


async def _published(handler: PrevRecorder, count: int) -> list[Any]:
    import anyio

    with anyio.fail_after(5):
        while len(handler.got) < count:  # noqa: ASYNC110  (a plain recorder)
            await anyio.sleep(0.005)
    return handler.got


@pytest.mark.anyio
async def test_broker_passes_the_previous_publication(broker: tuple[Any, PrevRecorder]) -> None:
    from centrifuge_asgi.engines.base import PublishOptions

    b, handler = broker
    hist = {"history_size": 2, "history_ttl": 60.0}
    await b.publish("ch", b"a", PublishOptions(**hist, delta=True))  # nothing before it
    await b.publish("ch", b"b", PublishOptions(**hist, delta=True))
    await b.publish("ch", b"c", PublishOptions(**hist))  # no delta asked: no prev
    await b.publish("ch", b"x", PublishOptions(**hist, delta=True, skip_history=True))
    await b.publish("ch", b"d", PublishOptions(**hist, delta=True))  # prev: c, the stream's
    await b.publish("ch", b"e", PublishOptions(delta=True))  # no history: no position, no prev
    got = await _published(handler, 6)
    assert got == [
        (1, b"a", None, None),
        (2, b"b", 1, b"a"),
        (3, b"c", None, None),
        (0, b"x", None, None),
        (4, b"d", 3, b"c"),
        (0, b"e", None, None),
    ]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300), st.integers(0, 5))
def test_the_delta_of_a_text_is_utf8(a: str, b: str, n: int) -> None:
    """Copies end on character boundaries, so a JSON client can get any text's delta."""
    source = a.encode()
    target = (a[: len(a) // 2] + b + a[len(a) // 2 :])[n:].encode()
    delta = fossil.create(source, target)
    delta.decode("utf-8")
    assert fossil.apply(source, delta) == target


@pytest.mark.anyio
async def test_client_publications_in_a_delta_publish_namespace(node: Node) -> None:
    s = await connected(node)
    await subscribe(s, channel="dlp:c", delta="fossil")
    for n in range(1, 4):
        await s.handle_frame(
            command(s, {"id": 10 + n, "publish": {"channel": "dlp:c", "data": doc(n)}})
        )
    pushes = [r["push"]["pub"] for r in replies(s) if "push" in r]
    assert [bool(p.get("delta")) for p in pushes] == [False, True, True]
    dec = Decoder()
    assert [dec.feed(p) for p in pushes] == [doc(n) for n in range(1, 4)]


@pytest.mark.anyio
async def test_a_filtered_out_publication_restarts_the_chain(node: Node) -> None:
    s = await connected(node)
    tf = {"key": "kind", "cmp": "eq", "val": "a"}
    reply = await subscribe(s, channel="dltf:x", delta="fossil", tf=tf)
    assert reply["subscribe"]["delta"] is True
    kinds = ["a", "a", "b", "a", "a"]
    for n, kind in enumerate(kinds, 1):
        await node.publish("dltf:x", doc(n), delta=True, tags={"kind": kind})
    pubs = [r["push"]["pub"] for r in replies(s)]
    # 3 is filtered out: 4 follows it, so 4 comes whole, and 5 is a delta against 4
    assert [bool(p.get("delta")) for p in pubs] == [False, True, False, True]
    dec = Decoder()
    assert [dec.feed(p) for p in pubs] == [doc(1), doc(2), doc(4), doc(5)]


# ---------------------------------------------------------- the chain, whatever happens

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("pub"), st.booleans(), st.booleans(), st.sampled_from(["a", "b"])),
        st.tuples(st.just("join"), st.booleans(), st.integers(0, 30), st.booleans()),
        st.tuples(st.just("drop"), st.integers(0, 5)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(OPS, st.booleans())
def test_every_subscriber_decodes_every_publication(ops: list[Any], protobuf: bool) -> None:
    """Random publications (delta or not, into the stream or skipping it, tagged), random
    subscribers joining (fresh, or recovering from any offset, with or without a tags
    filter) and leaving: every publication each one receives decodes, with the SDK's
    decoder, to exactly what was published, in order."""
    import anyio

    async def main() -> None:
        cfg = make_config()
        cfg["channel"]["namespaces"].extend(DELTA_NAMESPACES)
        published: dict[int, dict[str, Any]] = {}
        async with Node(cfg) as node:
            subs: list[tuple[Session, Decoder, list[int]]] = []
            epoch = ""
            top = 0
            for op in ops:
                if op[0] == "pub":
                    _, delta, skip, kind = op
                    n = len(published) + 1
                    published[n] = doc(n)
                    pos = await node.publish(
                        "dltf:p", doc(n), delta=delta, skip_history=skip, tags={"kind": kind}
                    )
                    if pos.offset:
                        top, epoch = pos.offset, pos.epoch
                elif op[0] == "join":
                    _, recover, since, filtered = op
                    s = await connected(node, protobuf=protobuf, user=f"u{len(subs)}")
                    req: dict[str, Any] = {"channel": "dltf:p", "delta": "fossil"}
                    if recover and epoch:
                        req.update(recover=True, offset=min(since, top), epoch=epoch)
                    if filtered:
                        req["tf"] = {"key": "kind", "cmp": "eq", "val": "a"}
                    reply = (await subscribe(s, **req))["subscribe"]
                    dec, seen = Decoder(protobuf), []
                    for pub in reply.get("publications", []):
                        seen.append(_check(dec.feed(pub), published))
                    subs.append((s, dec, seen))
                else:
                    live = [x for x in subs if not x[0].closing]
                    if live:
                        await live[op[1] % len(live)][0].finish()
                for s, dec, seen in subs:
                    for r in replies(s):
                        if "push" in r and "pub" in r["push"]:
                            seen.append(_check(dec.feed(r["push"]["pub"]), published))
            for s, _, seen in subs:
                assert seen == sorted(set(seen)), seen  # in order, none twice
                await s.finish()

    anyio.run(main)


def _check(value: Any, published: dict[int, dict[str, Any]]) -> int:
    assert value == published[value["n"]]
    return int(value["n"])
