"""Publication tags filters: Centrifugo's documented semantics as a table, the trees it
refuses, and a subscribe through a session (refusals, live delivery, recovery).

The table follows centrifugal.dev's "Channel publication filtering" page (its example
tags and filters) and centrifuge's ``internal/filter`` (missing tags, numbers).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from centrifuge_asgi import Node
from centrifuge_asgi.protocol.messages import FilterNode
from centrifuge_asgi.session import Session, TransportInfo
from centrifuge_asgi.tagfilter import MAX_DEPTH, InvalidFilter, compile_filter, matches
from tests.interop.support import make_config, token

DOC_TAGS = {
    "ticker": "AAPL",
    "source": "NASDAQ",
    "price": "150.25",
    "category": "tech",
    "volume": "1000",
}


def node_of(tree: dict[str, Any]) -> FilterNode:
    return msgspec.convert(tree, FilterNode)


def leaf(cmp: str, key: str = "k", val: str = "", vals: list[str] | None = None) -> dict[str, Any]:
    tree: dict[str, Any] = {"key": key, "cmp": cmp}
    if val:
        tree["val"] = val
    if vals is not None:
        tree["vals"] = vals
    return tree


# (filter, tags, delivered): tags None is a publication without tags
TABLE: list[tuple[dict[str, Any], dict[str, str] | None, bool]] = [
    # every example of the documentation matches its example tags
    ({"key": "ticker", "cmp": "eq", "val": "AAPL"}, DOC_TAGS, True),
    ({"key": "source", "cmp": "neq", "val": "TEST"}, DOC_TAGS, True),
    ({"key": "category", "cmp": "in", "vals": ["tech", "finance"]}, DOC_TAGS, True),
    ({"key": "ticker", "cmp": "nin", "vals": ["MSFT", "GOOGL"]}, DOC_TAGS, True),
    ({"key": "price", "cmp": "ex"}, DOC_TAGS, True),
    ({"key": "internal_id", "cmp": "nex"}, DOC_TAGS, True),
    ({"key": "ticker", "cmp": "sw", "val": "AA"}, DOC_TAGS, True),
    ({"key": "source", "cmp": "ew", "val": "DAQ"}, DOC_TAGS, True),
    ({"key": "category", "cmp": "ct", "val": "ec"}, DOC_TAGS, True),
    ({"key": "price", "cmp": "gt", "val": "100"}, DOC_TAGS, True),
    ({"key": "volume", "cmp": "gte", "val": "1000"}, DOC_TAGS, True),
    ({"key": "price", "cmp": "lt", "val": "200"}, DOC_TAGS, True),
    ({"key": "volume", "cmp": "lte", "val": "1000"}, DOC_TAGS, True),
    (
        {
            "op": "and",
            "nodes": [
                {"key": "ticker", "cmp": "eq", "val": "AAPL"},
                {"key": "category", "cmp": "eq", "val": "tech"},
            ],
        },
        DOC_TAGS,
        True,
    ),
    (
        {
            "op": "or",
            "nodes": [
                {"key": "ticker", "cmp": "eq", "val": "MSFT"},
                {"key": "category", "cmp": "eq", "val": "tech"},
            ],
        },
        DOC_TAGS,
        True,
    ),
    ({"op": "not", "nodes": [{"key": "source", "cmp": "eq", "val": "NYSE"}]}, DOC_TAGS, True),
    # and their opposites
    ({"key": "ticker", "cmp": "eq", "val": "MSFT"}, DOC_TAGS, False),
    ({"key": "ticker", "cmp": "eq", "val": "aapl"}, DOC_TAGS, False),  # case-sensitive
    ({"key": "source", "cmp": "neq", "val": "NASDAQ"}, DOC_TAGS, False),
    ({"key": "category", "cmp": "in", "vals": ["finance"]}, DOC_TAGS, False),
    ({"key": "ticker", "cmp": "nin", "vals": ["AAPL"]}, DOC_TAGS, False),
    ({"key": "ticker", "cmp": "nex"}, DOC_TAGS, False),
    ({"key": "other", "cmp": "ex"}, DOC_TAGS, False),
    ({"key": "ticker", "cmp": "sw", "val": "PL"}, DOC_TAGS, False),
    ({"key": "ticker", "cmp": "ew", "val": "AA"}, DOC_TAGS, False),
    ({"key": "ticker", "cmp": "ct", "val": "X"}, DOC_TAGS, False),
    ({"key": "price", "cmp": "gt", "val": "150.25"}, DOC_TAGS, False),
    ({"key": "volume", "cmp": "lt", "val": "1000"}, DOC_TAGS, False),
    ({"op": "and", "nodes": [leaf("ex", "ticker"), leaf("ex", "nope")]}, DOC_TAGS, False),
    ({"op": "or", "nodes": [leaf("ex", "nope"), leaf("ex", "nada")]}, DOC_TAGS, False),
    ({"op": "not", "nodes": [leaf("ex", "ticker")]}, DOC_TAGS, False),
    # a missing tag: neq/nex/nin match, the others do not; in/nin read it as ""
    (leaf("eq", val="x"), {}, False),
    (leaf("neq", val="x"), {}, True),
    (leaf("in", vals=["x"]), {}, False),
    (leaf("in", vals=["x", ""]), {}, True),
    (leaf("nin", vals=["x"]), {}, True),
    (leaf("nin", vals=[""]), {}, False),
    (leaf("ex"), {}, False),
    (leaf("nex"), {}, True),
    (leaf("sw", val="x"), {}, False),
    (leaf("ew", val="x"), {}, False),
    (leaf("ct", val="x"), {}, False),
    (leaf("gt", val="1"), {}, False),
    (leaf("lte", val="1"), {}, False),
    # a publication without tags is one whose every tag is missing
    (leaf("eq", val="x"), None, False),
    (leaf("neq", val="x"), None, True),
    (leaf("nin", vals=["x"]), None, True),
    (leaf("nex"), None, True),
    (leaf("ex"), None, False),
    ({"op": "not", "nodes": [leaf("ex")]}, None, True),
    # an empty value is a value: ex matches it, sw/ct with any val do not
    (leaf("ex"), {"k": ""}, True),
    (leaf("in", vals=[""]), {"k": ""}, True),
    (leaf("ct", val="a"), {"k": ""}, False),
    # ex/nex may name the empty key
    ({"cmp": "ex"}, {"": "v"}, True),
    ({"cmp": "nex"}, {"k": "v"}, True),
    # numbers are exact decimals, not strings and not floats
    (leaf("gt", val="9"), {"k": "10"}, True),  # "10" < "9" as strings
    (leaf("lt", val="0.3"), {"k": "0.29999999999999999999"}, False),  # 20 decimals: no
    (leaf("lt", val="0.3"), {"k": "0.2999999999999999999"}, True),  # 19 decimals
    (leaf("eq", val="1.0"), {"k": "1"}, False),  # eq compares strings
    (leaf("gte", val="1.0"), {"k": "1"}, True),
    (leaf("lte", val="1"), {"k": "1.000"}, True),
    (leaf("gt", val="-5"), {"k": "-4.5"}, True),
    (leaf("lt", val="+3"), {"k": "-0"}, True),
    (leaf("gt", val="1"), {"k": "+2"}, True),
    (leaf("gt", val="1"), {"k": "0012"}, True),
    (
        leaf("gt", val="123456789012345678901234567890"),
        {"k": "123456789012345678901234567891"},
        True,
    ),
    # what udecimal does not parse makes the comparison false, on either side
    (leaf("gt", val="1"), {"k": "2e3"}, False),
    (leaf("gt", val="1"), {"k": "1.5."}, False),
    (leaf("gt", val="1"), {"k": ".5"}, False),
    (leaf("gt", val="0"), {"k": "5."}, False),
    (leaf("gt", val="1"), {"k": " 5"}, False),
    (leaf("gt", val="1"), {"k": "1_000"}, False),
    (leaf("gt", val="1"), {"k": "NaN"}, False),
    (leaf("gt", val="1"), {"k": "Infinity"}, False),
    (leaf("gt", val="1"), {"k": "٣"}, False),  # an Arabic-Indic digit
    (leaf("gt", val="1"), {"k": "-"}, False),
    (leaf("gt", val="1"), {"k": "9" * 201}, False),  # longer than 200 characters
    (leaf("lt", val="abc"), {"k": "1"}, False),
    (leaf("gte", val="1e2"), {"k": "500"}, False),
    ({"op": "not", "nodes": [leaf("lt", val="abc")]}, {"k": "1"}, True),
    # a leaf ignores nodes; and/or/not ignore key, cmp and val
    ({"key": "k", "cmp": "ex", "nodes": [leaf("nex")]}, {"k": "v"}, True),
    ({"op": "and", "key": "x", "cmp": "bogus", "nodes": [leaf("ex")]}, {"k": "v"}, True),
]


@pytest.mark.parametrize(("tree", "tags", "delivered"), TABLE)
def test_filter_semantics(
    tree: dict[str, Any], tags: dict[str, str] | None, delivered: bool
) -> None:
    assert matches(compile_filter(node_of(tree)), tags) is delivered


def test_deep_but_allowed_tree() -> None:
    tree: dict[str, Any] = leaf("eq", val="v")
    for _ in range(MAX_DEPTH - 1):
        tree = {"op": "not", "nodes": [tree]}
    # MAX_DEPTH - 1 negations: odd, so "k == v" is inverted
    assert matches(compile_filter(node_of(tree)), {"k": "v"}) is False


INVALID: list[dict[str, Any]] = [
    {},  # a leaf without cmp
    {"key": "k"},
    {"key": "k", "cmp": "bogus", "val": "v"},
    {"key": "k", "cmp": "EQ", "val": "v"},  # case matters
    leaf("eq"),  # no val
    leaf("gt"),
    {"key": "k", "cmp": "eq", "val": "v", "vals": ["v"]},
    leaf("in"),  # no vals
    leaf("nin", vals=[]),
    {"key": "k", "cmp": "in", "val": "v", "vals": ["v"]},
    {"key": "k", "cmp": "ex", "val": "v"},
    leaf("nex", vals=["v"]),
    {"cmp": "eq", "val": "v"},  # no key
    {"cmp": "in", "vals": ["v"]},
    {"op": "and"},
    {"op": "or", "nodes": []},
    {"op": "not", "nodes": []},
    {"op": "not", "nodes": [leaf("ex"), leaf("ex")]},
    {"op": "xor", "nodes": [leaf("ex")]},
    {"op": "AND", "nodes": [leaf("ex")]},
    {"op": "and", "nodes": [leaf("ex"), {"key": "k", "cmp": "eq"}]},  # an invalid child
    {"op": "not", "nodes": [{"op": "or", "nodes": [{}]}]},
]


@pytest.mark.parametrize("tree", INVALID)
def test_invalid_trees(tree: dict[str, Any]) -> None:
    with pytest.raises(InvalidFilter):
        compile_filter(node_of(tree))


def test_too_deep_tree_is_invalid() -> None:
    tree: dict[str, Any] = leaf("ex")
    for _ in range(MAX_DEPTH):
        tree = {"op": "not", "nodes": [tree]}
    with pytest.raises(InvalidFilter):
        compile_filter(node_of(tree))


# ------------------------------------------------------------------------ through a session


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    cfg = make_config()
    cfg["channel"]["namespaces"].append(
        {"name": "live", "allow_subscribe_for_client": True, "allow_tags_filter": True}
    )
    async with Node(cfg) as n:
        yield n
        for s in list(n.registry.sessions()):
            await s.finish()


def replies(session: Session) -> list[dict[str, Any]]:
    return [json.loads(m) for m in session.outbox.drain()]


async def connected(node: Node, user: str = "u1") -> Session:
    s = node.create_session(TransportInfo())
    await s.handle_frame(json.dumps({"id": 1, "connect": {"token": token(user)}}).encode())
    assert "connect" in replies(s)[0]
    return s


async def subscribe(s: Session, **req: Any) -> dict[str, Any]:
    await s.handle_frame(json.dumps({"id": 2, "subscribe": req}).encode())
    [reply] = replies(s)
    return reply


TRADE = {"key": "kind", "cmp": "eq", "val": "trade"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("channel", "tf", "code"),
    [
        ("chat:x", TRADE, 107),  # the namespace does not allow_tags_filter
        ("x", TRADE, 107),  # nor does the default namespace
        ("tags:x", {"key": "kind", "cmp": "eq"}, 107),  # invalid
        ("tags:x", {"op": "not"}, 107),
        ("nope:x", TRADE, 102),  # an unknown namespace comes first
        ("secret:x", TRADE, 103),  # and so do permissions, as in Centrifugo
    ],
)
async def test_subscribe_refusals(node: Node, channel: str, tf: dict[str, Any], code: int) -> None:
    s = await connected(node)
    reply = await subscribe(s, channel=channel, tf=tf)
    assert reply["error"]["code"] == code
    assert channel not in s.subs
    assert not s.closing  # an error reply, not a disconnect


@pytest.mark.anyio
async def test_malformed_filter_is_a_malformed_command(node: Node) -> None:
    s = await connected(node)
    await s.handle_frame(b'{"id":2,"subscribe":{"channel":"tags:x","tf":{"op":1}}}')
    assert s.closing  # 3501, as Go's decoder fails on a number where a string belongs


@pytest.mark.anyio
async def test_null_filter_is_no_filter(node: Node) -> None:
    s = await connected(node)
    reply = await subscribe(s, channel="live:x", tf=None)
    assert "subscribe" in reply and s.subs["live:x"].tags_filter is None


@pytest.mark.anyio
async def test_filter_with_delta_is_subscribed_without_delta(node: Node) -> None:
    """Centrifugo's server does not refuse ``tf`` with ``delta`` (the SDKs do): delta is
    negotiated on its own, and here it never is, so the filter applies to full publications."""
    s = await connected(node)
    reply = await subscribe(s, channel="tags:d", tf=TRADE, delta="fossil")
    assert "delta" not in reply["subscribe"]
    await node.publish("tags:d", {"n": 1}, tags={"kind": "quote"})
    await node.publish("tags:d", {"n": 2}, tags={"kind": "trade"})
    assert [r["push"]["pub"]["data"] for r in replies(s)] == [{"n": 2}]


@pytest.mark.anyio
@pytest.mark.parametrize("channel", ["live:f", "tags:f"], ids=["unpositioned", "positioned"])
async def test_live_delivery_is_filtered_per_subscriber(node: Node, channel: str) -> None:
    filtered, plain = await connected(node, "u1"), await connected(node, "u2")
    assert "subscribe" in await subscribe(filtered, channel=channel, tf=TRADE)
    assert "subscribe" in await subscribe(plain, channel=channel)
    await node.publish(channel, {"n": 1}, tags={"kind": "trade"})
    await node.publish(channel, {"n": 2}, tags={"kind": "quote"})
    await node.publish(channel, {"n": 3})
    await node.publish(channel, {"n": 4}, tags={"kind": "trade", "x": "y"})
    got = [r["push"]["pub"] for r in replies(filtered)]
    assert [p["data"]["n"] for p in got] == [1, 4]
    assert [r["push"]["pub"]["data"]["n"] for r in replies(plain)] == [1, 2, 3, 4]
    if channel.startswith("tags:"):
        # the skipped publications still move the position: no gap, no 2500
        assert [p["offset"] for p in got] == [1, 4]
        assert filtered.subs[channel].offset == 4


@pytest.mark.anyio
async def test_recovery_returns_only_matching_publications(node: Node) -> None:
    for n, kind in enumerate(["trade", "quote", "trade", "quote", None, "trade"], start=1):
        await node.publish("tags:r", {"n": n}, tags=None if kind is None else {"kind": kind})
    epoch = (await node.history("tags:r")).epoch
    s = await connected(node)
    reply = await subscribe(s, channel="tags:r", tf=TRADE, recover=True, offset=1, epoch=epoch)
    result = reply["subscribe"]
    assert result["recovered"] is True
    assert result["offset"] == 1  # the client's offset, as Centrifugo: it catches up
    assert [(p["offset"], p["data"]["n"]) for p in result["publications"]] == [(3, 3), (6, 6)]
    assert s.subs["tags:r"].offset == 6
    # nothing matched since: recovered, without publications
    s2 = await connected(node, "u2")
    tf = {"key": "kind", "cmp": "eq", "val": "none"}
    reply = await subscribe(s2, channel="tags:r", tf=tf, recover=True, offset=2, epoch=epoch)
    assert reply["subscribe"]["recovered"] is True
    assert "publications" not in reply["subscribe"]
    await node.publish("tags:r", {"n": 7}, tags={"kind": "none"})
    assert [r["push"]["pub"]["offset"] for r in replies(s2)] == [7]


@pytest.mark.anyio
async def test_publications_buffered_during_subscribe_are_filtered(node: Node) -> None:
    s = await connected(node)
    channel = "live:p"  # unpositioned: buffered, then delivered after the reply
    original = node.broker.subscribe

    async def subscribe_and_publish(ch: str) -> None:
        await original(ch)
        await node.publish(channel, {"n": 1}, tags={"kind": "quote"})
        await node.publish(channel, {"n": 2}, tags={"kind": "trade"})

    node.broker.subscribe = subscribe_and_publish  # type: ignore[method-assign]
    await s.handle_frame(
        json.dumps({"id": 2, "subscribe": {"channel": channel, "tf": TRADE}}).encode()
    )
    out = replies(s)
    assert "subscribe" in out[0]
    assert [r["push"]["pub"]["data"]["n"] for r in out[1:]] == [2]
