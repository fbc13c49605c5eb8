"""Fossil delta compression driven by the official SDKs, checked on the wire, across nodes.

* centrifuge-js 5.7.4 (``delta: 'fossil'``) over WebSocket and HTTP-streaming, JSON and
  Protobuf, and SSE (JSON): 1,000 random publications of a JSON document (about 0.9 KB,
  some multi-byte text) that changes by a few fields, a recovery after a forced
  reconnect, then live again; every decoded payload must equal the published one
  (``tests/js/scenarios/sdk_delta.mjs``);
* centrifuge-python 0.7.0 (``delta=DeltaType.FOSSIL``), JSON and Protobuf, the same;
* a raw WebSocket client sees ``delta: true`` pushes whose data is a short JSON string;
* two nodes on one Redis: the previous publication travels with the publication, so a
  subscriber on the other node gets deltas, also after recovering there.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import string
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from centrifuge import ConnectingContext, DeltaType
from websockets.sync.client import connect as ws_connect

from centrifuge_asgi.handlers import RPCEvent
from centrifuge_asgi.node import Node
from tests.unit.test_redis_engine import require_main_redis, unique_prefix

from .support import WS_PATH, make_config, token
from .test_python_sdk import (
    ClientFactory,
    Env,
    ReconnectHook,
    sdk_client,
    server,
    subscribe,
)

if TYPE_CHECKING:
    from conftest import LiveServerFactory, RunJs

__all__ = ["sdk_client", "server"]  # fixtures used here

pytestmark = [pytest.mark.interop]

DELTA_NAMESPACE = {
    "name": "delta",
    "allow_subscribe_for_client": True,
    "allow_history_for_subscriber": True,
    "history_size": 100,
    "history_ttl": "300s",
    "force_recovery": True,
    "allowed_delta_types": ["fossil"],
}
COUNT = 1000


def delta_config(**engine: Any) -> dict[str, Any]:
    cfg = make_config()
    cfg["channel"]["namespaces"].append(copy.deepcopy(DELTA_NAMESPACE))
    cfg["http_stream"] = {"enabled": True}
    cfg["sse"] = {"enabled": True}
    cfg.update(engine)
    return cfg


class DocStream:
    """Versions of a JSON document (about 0.9 KB); each one changes one to four fields."""

    def __init__(self, seed: int) -> None:
        self.rng = rng = random.Random(seed)
        self.doc: dict[str, Any] = {
            "id": f"order-{seed}",
            "fields": {f"f{i:02d}": rng.randrange(10**6) for i in range(40)},
            "labels": [self.word() for _ in range(12)],
            "note": " ".join(self.word() for _ in range(20)),
        }

    def word(self) -> str:
        # some multi-byte characters: a copy may end inside one, and the JSON form must cope
        letters = string.ascii_lowercase + "éжü日本"
        return "".join(self.rng.choices(letters, k=self.rng.randrange(3, 9)))

    def next(self) -> dict[str, Any]:
        rng = self.rng
        for _ in range(rng.randrange(1, 5)):
            kind = rng.randrange(3)
            if kind == 0:
                self.doc["fields"][f"f{rng.randrange(40):02d}"] = rng.randrange(10**6)
            elif kind == 1:
                self.doc["labels"][rng.randrange(12)] = self.word()
            else:
                self.doc["note"] = self.doc["note"][: rng.randrange(100)] + " " + self.word()
        return copy.deepcopy(self.doc)


class Publisher:
    """Publishes document versions with ``delta`` and remembers them per channel."""

    def __init__(self, node: Node, *, pace: bool = False) -> None:
        self.node = node
        self.pace = pace
        self.streams: dict[str, DocStream] = {}
        self.published: dict[str, list[dict[str, Any]]] = {}

    async def publish(self, channel: str, count: int) -> None:
        stream = self.streams.setdefault(channel, DocStream(len(self.streams) + 1))
        for _ in range(count):
            doc = stream.next()
            self.published.setdefault(channel, []).append(doc)
            await self.node.publish(channel, doc, delta=True)
            if self.pace and len(self.published[channel]) % 5 == 0:
                await anyio.sleep(0.005)

    def add_rpcs(self) -> None:
        node = self.node

        @node.on_rpc("publish_docs")
        async def rpc_publish_docs(event: RPCEvent) -> Any:
            await self.publish(event.data["channel"], event.data["count"])
            return {}

        @node.on_rpc("drop_and_publish_docs")
        async def rpc_drop_and_publish_docs(event: RPCEvent) -> Any:
            await node.disconnect(event.client.user, code=3011, reason="force reconnect")
            await self.publish(event.data["channel"], event.data["count"])
            return {}


# ------------------------------------------------------------------------ centrifuge-js


@pytest.mark.parametrize(
    ("transport", "protocol"),
    [
        ("websocket", "json"),
        ("websocket", "protobuf"),
        ("http_stream", "json"),
        ("http_stream", "protobuf"),
        ("sse", "json"),  # the SDK's SSE transport is JSON only
    ],
)
def test_js_delta_live_and_recovered(
    live_server: LiveServerFactory, run_js: RunJs, transport: str, protocol: str
) -> None:
    node = Node(delta_config())
    # centrifuge-js cannot decode a Protobuf record split across HTTP chunks (see
    # transports/http_stream.py), which a burst of coalesced publications may cause, with
    # or without delta: there the publisher leaves the stream time to drain.
    publisher = Publisher(node, pace=transport == "http_stream" and protocol == "protobuf")
    publisher.add_rpcs()
    srv = live_server(node.asgi_app())
    channel = f"delta:js-{transport}-{protocol}"
    result = run_js(
        "sdk_delta.mjs",
        transport,
        srv.http_url,
        token("u1"),
        channel,
        protocol,
        str(COUNT),
        timeout=60,
    )
    assert result["transport"] == transport
    assert result["subscribed"] == [
        {"wasRecovering": False, "recovered": False},
        {"wasRecovering": True, "recovered": True},
    ]
    got = [json.loads(d) for d in result["data"]]
    assert len(got) == COUNT + 8
    assert got == publisher.published[channel]


# ------------------------------------------------------------------- centrifuge-python


@pytest.mark.anyio
@pytest.mark.parametrize("use_protobuf", [False, True], ids=["json", "protobuf"])
async def test_python_delta_live_and_recovered(
    server: Callable[..., Env], sdk_client: ClientFactory, use_protobuf: bool
) -> None:
    env = server(Node(delta_config()))
    publisher = Publisher(env.node)
    channel = f"delta:py-{int(use_protobuf)}"

    async def publish_while_away(ctx: ConnectingContext) -> None:
        if ctx.code == 3011:
            await env.srv.acall(publisher.publish(channel, 5))

    client, _ = await sdk_client(
        env,
        token=token("alice"),
        events=ReconnectHook(publish_while_away),
        min_reconnect_delay=0.05,
        use_protobuf=use_protobuf,
    )
    sub, events = await subscribe(client, channel, delta=DeltaType.FOSSIL)
    assert sub._delta_negotiated is True  # the SDK keeps no public flag for it
    await env.srv.acall(publisher.publish(channel, COUNT))
    await events.rec.wait("publication", COUNT, within=30)
    await env.srv.acall(env.node.disconnect("alice", code=3011, reason="force reconnect"))
    subscribed = await events.rec.wait("subscribed", 2)
    assert (subscribed[1].was_recovering, subscribed[1].recovered) == (True, True)
    await events.rec.wait("publication", COUNT + 5)
    await env.srv.acall(publisher.publish(channel, 3))
    await events.rec.wait("publication", COUNT + 8)

    def value(data: Any) -> Any:
        return json.loads(data) if isinstance(data, bytes | str) else data

    got = [value(ctx.pub.data) for ctx in events.rec.of("publication")]
    assert got == publisher.published[channel]
    kinds = [ctx.pub.delta for ctx in events.rec.of("publication")]
    assert kinds[0] is False and all(kinds[1:COUNT])  # full first, then deltas
    assert kinds[COUNT] is False and all(kinds[COUNT + 1 :])  # recovery restarts the chain


# ------------------------------------------------------------------------------ the wire


def test_raw_client_sees_short_deltas_on_the_wire(live_server: LiveServerFactory) -> None:
    node = Node(delta_config())
    publisher = Publisher(node)
    srv = live_server(node.asgi_app())
    url = srv.ws_url(WS_PATH)
    with (
        _open(url, "u1", "delta:wire", delta=True) as with_delta,
        _open(url, "u2", "delta:wire", delta=False) as without,
    ):
        srv.call(publisher.publish("delta:wire", 50))
        delta_lines = with_delta.read_n(50)
        plain_lines = without.read_n(50)
    pubs = [json.loads(ln)["push"]["pub"] for ln in delta_lines]
    assert isinstance(pubs[0]["data"], str) and not pubs[0].get("delta")
    assert json.loads(pubs[0]["data"]) == publisher.published["delta:wire"][0]
    assert all(p["delta"] is True and isinstance(p["data"], str) for p in pubs[1:])
    plain = [json.loads(ln)["push"]["pub"] for ln in plain_lines]
    assert not any("delta" in p for p in plain)
    assert [p["data"] for p in plain] == publisher.published["delta:wire"]
    sent = sum(len(ln) for ln in delta_lines[1:])
    full = sum(len(ln) for ln in plain_lines[1:])
    assert sent * 4 < full, (sent, full)  # deltas of a few changed fields in ~1 KB


class _Raw:
    """A raw JSON WebSocket client subscribed to one channel."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    def read_n(self, count: int) -> list[str]:
        lines: list[str] = []
        while len(lines) < count:
            frame = self.ws.recv(timeout=10)
            lines += [ln for ln in frame.split("\n") if ln and ln != "{}"]
        return lines


@contextlib.contextmanager
def _open(url: str, user: str, channel: str, *, delta: bool) -> Iterator[_Raw]:
    with ws_connect(url, open_timeout=5) as ws:
        sub: dict[str, Any] = {"channel": channel}
        if delta:
            sub["delta"] = "fossil"
        ws.send(json.dumps({"id": 1, "connect": {"token": token(user)}}))
        assert "connect" in json.loads(ws.recv(timeout=5))
        ws.send(json.dumps({"id": 2, "subscribe": sub}))
        reply = json.loads(ws.recv(timeout=5))
        assert reply["subscribe"].get("delta", False) is delta
        yield _Raw(ws)


# --------------------------------------------------------------------------- two nodes


@pytest.mark.anyio
async def test_redis_two_nodes_delta_across_nodes(
    live_server: LiveServerFactory, sdk_client: ClientFactory
) -> None:
    """Publish on node A, subscribe on node B (Redis engine): B gets deltas, decodes them,
    and recovers a delta chain from B after a reconnect."""
    require_main_redis()
    config = delta_config(
        engine={"type": "redis", "redis": {"address": "127.0.0.1:6379", "prefix": unique_prefix()}}
    )
    node_a, node_b = Node(config), Node(config)
    srv_a, srv_b = live_server(node_a.asgi_app()), live_server(node_b.asgi_app())
    env_b = Env(srv_b, node_b)
    publisher = Publisher(node_a)
    channel = "delta:redis"

    async def publish_while_away(ctx: ConnectingContext) -> None:
        if ctx.code == 3011:
            await srv_a.acall(publisher.publish(channel, 5))

    for use_protobuf in (False, True):
        user = f"bob{int(use_protobuf)}"
        client, _ = await sdk_client(
            env_b,
            token=token(user),
            events=ReconnectHook(publish_while_away) if not use_protobuf else None,
            min_reconnect_delay=0.05,
            use_protobuf=use_protobuf,
        )
        if use_protobuf:
            proto_sub, proto_events = await subscribe(client, channel, delta=DeltaType.FOSSIL)
        else:
            sub, events = await subscribe(client, channel, delta=DeltaType.FOSSIL)
    with _open(srv_b.ws_url(WS_PATH), "raw", channel, delta=True) as raw:
        await srv_a.acall(publisher.publish(channel, 200))
        await events.rec.wait("publication", 200, within=20)
        await proto_events.rec.wait("publication", 200, within=20)
        lines = await anyio.to_thread.run_sync(raw.read_n, 200)
    pubs = [json.loads(ln)["push"]["pub"] for ln in lines]
    assert [bool(p.get("delta")) for p in pubs] == [False] + [True] * 199

    await srv_b.acall(node_b.disconnect("bob0", code=3011, reason="force reconnect"))
    subscribed = await events.rec.wait("subscribed", 2)
    assert (subscribed[1].was_recovering, subscribed[1].recovered) == (True, True)
    await events.rec.wait("publication", 205)
    await srv_a.acall(publisher.publish(channel, 3))
    await events.rec.wait("publication", 208)
    await proto_events.rec.wait("publication", 208)

    def value(data: Any) -> Any:
        return json.loads(data) if isinstance(data, bytes | str) else data

    published = publisher.published[channel]
    assert [value(c.pub.data) for c in events.rec.of("publication")] == published
    assert [value(c.pub.data) for c in proto_events.rec.of("publication")] == published
    assert all(c.pub.delta for c in proto_events.rec.of("publication")[1:])
    assert sub.state.value == proto_sub.state.value == "subscribed"


# ------------------------------------------------------------ the SDKs' decoders, directly


def test_js_decoder_applies_our_deltas(tmp_path: Any, run_js: RunJs) -> None:
    """centrifuge-js's own codecs (JSON: the delta as a string; Protobuf: bytes) rebuild
    every target from our deltas: JSON documents with multi-byte text, and binary pairs
    (similar, unrelated, short, empty)."""
    import base64

    from centrifuge_asgi import fossil

    rng = random.Random(5)
    cases: list[tuple[bytes, bytes, bool]] = []
    stream = DocStream(9)
    prev = json.dumps(stream.next(), ensure_ascii=False).encode()
    for _ in range(150):
        cur = json.dumps(stream.next(), ensure_ascii=False).encode()
        cases.append((prev, cur, True))
        prev = cur
    for _ in range(150):
        a = rng.randbytes(rng.randrange(0, 3000))
        b = bytearray(a)
        for _ in range(rng.randrange(0, 10)):
            at = rng.randrange(len(b) + 1)
            b[at : at + rng.randrange(0, 9)] = rng.randbytes(rng.randrange(0, 9))
        cases.append((a, bytes(b), False))
        cases.append((a, rng.randbytes(rng.randrange(0, 40)), False))
    path = tmp_path / "cases.json"
    path.write_text(
        json.dumps(
            [
                {
                    "source": base64.b64encode(a).decode(),
                    "delta": base64.b64encode(fossil.create(a, b)).decode(),
                    "json": is_json,
                }
                for a, b, is_json in cases
            ]
        )
    )
    result = run_js("fossil_decode.mjs", str(path), timeout=60)
    decoded = result["decoded"]
    assert len(decoded) == len(cases)
    for (_, target, _), got in zip(cases, decoded, strict=True):
        assert got == base64.b64encode(target).decode()
