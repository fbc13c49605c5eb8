"""Shared poll: signatures, config rules, the manager's polling and delivery, the server API.

The manager is driven with fake connections (a list of pushes each) and a Python refresh
handler counting its calls, inside a running node (its task group owns the polling).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import msgspec
import pytest

from centrifuge_asgi import Node
from centrifuge_asgi.api import api_app
from centrifuge_asgi.config import Config
from centrifuge_asgi.errors import ClientError, ConfigError
from centrifuge_asgi.handlers import (
    SharedPollRefreshEvent,
    SharedPollRefreshReply,
    SharedPollResult,
)
from centrifuge_asgi.protocol.json_codec import JSON
from centrifuge_asgi.protocol.messages import KeyedItem, SubRefreshRequest, TrackBatch
from centrifuge_asgi.shared_poll import check_batch, make_signature, verify_signature
from tests import conditions

if TYPE_CHECKING:
    from tests.conftest import LiveServerFactory

SECRET = "poll-secret"


# ------------------------------------------------------------------------- signatures


def test_signature_is_centrifugos_format() -> None:
    """iat:exp:hex(HMAC-SHA256(secret, iat NUL exp NUL user NUL channel NUL sha256hex))."""
    keys = ["post_1", "post_2"]
    kh = hashlib.sha256(b"post_1\x00post_2").hexdigest()
    payload = f"1700000000\x001700000060\x00alice\x00votes:feed\x00{kh}".encode()
    mac = hmac.new(SECRET.encode(), payload, hashlib.sha256).hexdigest()
    expected = f"1700000000:1700000060:{mac}"
    assert make_signature(SECRET, "alice", "votes:feed", keys, 60, now=1700000000) == expected
    assert verify_signature(SECRET, "alice", "votes:feed", keys, expected)


@pytest.mark.parametrize(
    ("user", "channel", "keys"),
    [
        ("bob", "votes:feed", ["post_1", "post_2"]),  # another user
        ("alice", "votes:other", ["post_1", "post_2"]),  # another channel
        ("alice", "votes:feed", ["post_2", "post_1"]),  # keys in another order
        ("alice", "votes:feed", ["post_1"]),  # a subset
        ("alice:votes", "feed", ["post_1", "post_2"]),  # fields shifted across ':'
    ],
)
def test_signature_binds_user_channel_and_keys(user: str, channel: str, keys: list[str]) -> None:
    sig = make_signature(SECRET, "alice", "votes:feed", ["post_1", "post_2"], 60)
    assert not verify_signature(SECRET, user, channel, keys, sig)


@pytest.mark.parametrize("sig", ["", "x", "1:2", "1:2:zz", "a:b:c:d"])
def test_malformed_signatures_do_not_verify(sig: str) -> None:
    assert not verify_signature(SECRET, "", "votes:feed", ["k"], sig)


def _batch(sig: str, *keys: str) -> TrackBatch:
    return TrackBatch(signature=sig, items=[KeyedItem(key=k) for k in keys])


def test_check_batch_codes() -> None:
    cfg = Config.from_dict({"shared_poll": {"hmac_secret_key": SECRET}}).shared_poll
    now = int(time.time())
    ok = make_signature(SECRET, "u", "c", ["k"], 60)
    assert check_batch(cfg, "u", "c", _batch(ok, "k")) == now + 60 or now + 61
    forever = make_signature(SECRET, "u", "c", ["k"])
    assert check_batch(cfg, "u", "c", _batch(forever, "k")) == 0
    within_grace = make_signature(SECRET, "u", "c", ["k"], 60, now=now - 62)
    check_batch(cfg, "u", "c", _batch(within_grace, "k"))
    expired = make_signature(SECRET, "u", "c", ["k"], 60, now=now - 70)
    with pytest.raises(ClientError) as err:
        check_batch(cfg, "u", "c", _batch(expired, "k"))
    assert err.value.code == 109
    with pytest.raises(ClientError) as err:
        check_batch(cfg, "u", "c", _batch(make_signature("other", "u", "c", ["k"], 60), "k"))
    assert err.value.code == 103


def test_previous_key_until_valid_until() -> None:
    now = int(time.time())
    cfg = Config.from_dict(
        {
            "shared_poll": {
                "hmac_secret_key": "new",
                "hmac_previous_secret_key": "old",
                "hmac_previous_secret_key_valid_until": now - 100,
            }
        }
    ).shared_poll
    before = make_signature("old", "u", "c", ["k"], 600, now=now - 200)
    check_batch(cfg, "u", "c", _batch(before, "k"))
    after = make_signature("old", "u", "c", ["k"], 600, now=now - 50)
    with pytest.raises(ClientError) as err:
        check_batch(cfg, "u", "c", _batch(after, "k"))
    assert err.value.code == 103


# ------------------------------------------------------------------------------ config


def _ns(top: dict[str, Any] | None = None, **shared_poll: Any) -> dict[str, Any]:
    ns = {"name": "votes", "subscription_type": "shared_poll", "shared_poll": shared_poll}
    return {
        "shared_poll": {"hmac_secret_key": SECRET} if top is None else top,
        "channel": {"namespaces": [ns]},
    }


def test_config_defaults() -> None:
    cfg = Config.from_dict(_ns())
    sp = cfg.channel.namespaces[0].shared_poll
    assert (sp.refresh_interval, sp.refresh_batch_size, sp.max_keys_per_connection) == (
        10.0,
        1000,
        5000,
    )
    assert (sp.mode, sp.channel_shutdown_delay, sp.track_expired_extra_delay) == ("", 1.0, 25.0)
    assert sp.proxy_name == "default" and not sp.publish_enabled
    assert cfg.shared_poll.concurrency_limit == 64


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        (_ns(top={}), r"shared_poll\.hmac_secret_key"),
        (_ns(mode="sometimes"), r"namespaces\[0\]\.shared_poll\.mode"),
        (_ns(publish_enabled=True), r"shared_poll\.publish_enabled"),
        (_ns(proxy_name="nope"), r"shared_poll\.proxy_name"),
        (_ns(refresh_interval="-1s"), r"shared_poll\.refresh_interval"),
        (_ns(max_keys_per_connection=-1), r"shared_poll\.max_keys_per_connection"),
    ],
)
def test_config_errors_name_the_key(cfg: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key) as err:
        Config.from_dict(cfg, source="cfg.json")
    assert "cfg.json" in str(err.value)


def test_config_versioned_publish_and_named_proxy() -> None:
    cfg = _ns(mode="versioned", publish_enabled=True, proxy_name="poll")
    cfg["proxies"] = [{"name": "poll", "endpoint": "http://127.0.0.1:1/refresh"}]
    loaded = Config.from_dict(cfg)
    assert loaded.proxy("shared_poll_refresh", "poll") is not None


# ----------------------------------------------------------------------------- manager


class FakeConn:
    """A JSON connection that keeps the pushes it was sent."""

    codec = JSON

    def __init__(self, user: str = "") -> None:
        self.user = user
        self.pushes: list[dict[str, Any]] = []
        self.lost = 0

    def send(self, data: bytes) -> None:
        self.pushes.append(msgspec.json.decode(data)["push"])

    def updates(self) -> list[tuple[str, Any, int, bool]]:
        out = []
        for push in self.pushes:
            pub = push["pub"]
            removed = pub.get("removed", False)
            data = None if removed else msgspec.json.encode(pub["data"])
            out.append((pub["key"], data, pub.get("version", 0), removed))
        return out


class Backend:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.versions: dict[str, int] = {}
        self.removed: set[str] = set()
        self.epoch = ""
        self.calls: list[list[tuple[str, int]]] = []
        self.fail = False

    async def __call__(self, event: SharedPollRefreshEvent) -> SharedPollRefreshReply:
        self.calls.append([(i.key, i.version) for i in event.items])
        if self.fail:
            raise RuntimeError("backend down")
        items = []
        for i in event.items:
            if i.key in self.removed:
                items.append(SharedPollResult(i.key, removed=True))
            elif i.key in self.data:
                version = self.versions.get(i.key, 0)
                items.append(SharedPollResult(i.key, self.data[i.key], version))
        return SharedPollRefreshReply(items, self.epoch)


def poll_config(**opts: Any) -> dict[str, Any]:
    sp = {"refresh_interval": "100ms", "max_keys_per_connection": 3, **opts}
    return {
        "shared_poll": {"hmac_secret_key": SECRET},
        "channel": {
            "namespaces": [{"name": "vv", "subscription_type": "shared_poll", "shared_poll": sp}]
        },
    }


@pytest.fixture
async def running() -> AsyncIterator[Any]:
    nodes: list[Node] = []

    async def start(cfg: dict[str, Any], backend: Backend) -> Node:
        node = Node(cfg)
        node.on_shared_poll_refresh(backend)
        await node.__aenter__()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.__aexit__(None, None, None)


def track(node: Node, conn: FakeConn, keys: list[str], version: int = 0, untrack: Any = ()) -> Any:
    sig = make_signature(SECRET, conn.user, "vv:1", keys, 60)
    req = SubRefreshRequest(
        channel="vv:1",
        type=1,
        track=[TrackBatch(signature=sig, items=[KeyedItem(key=k, version=version) for k in keys])],
        untrack=list(untrack),
    )
    return node.shared_poll.sub_refresh(conn, req)


def subscribe(node: Node, conn: FakeConn) -> str:
    opts = node.config.channel.namespaces[0].shared_poll

    def lost() -> None:
        conn.lost += 1
        node.shared_poll.unsubscribe("vv:1", conn)

    return node.shared_poll.subscribe("vv:1", opts, conn, lost)


async def until(pred: Any, what: str) -> None:
    """Wait (at most 3 s) for ``pred()``; ``what`` names it in a failure."""
    await conditions.until(pred, 3.0, every=0.01, what=what)


@pytest.mark.anyio
async def test_one_call_per_key_for_every_tracker(running: Any) -> None:
    backend = Backend()
    backend.data = {"a": b'{"n":1}', "b": b'{"n":2}'}
    node = await running(poll_config(), backend)
    conns = [FakeConn(f"u{i}") for i in range(5)]
    for c in conns:
        subscribe(node, c)
        result = track(node, c, ["a", "b"])
        assert result.expires and 55 <= result.ttl <= 60
    await until(lambda: all(len(c.pushes) == 2 for c in conns), "cold data")
    backend.calls.clear()
    await anyio.sleep(0.55)
    assert 2 <= len(backend.calls) <= 7  # ~5 cycles; polling per tracker would be ~25
    for call in backend.calls:
        assert sorted(call) == [("a", 0), ("b", 0)]  # every key once, versionless: no version
    assert all(len(c.pushes) == 2 for c in conns)  # unchanged data: nothing pushed
    backend.data["a"] = b'{"n":3}'
    await until(lambda: all(len(c.pushes) == 3 for c in conns), "change")
    key, data, version, removed = conns[0].updates()[-1]
    assert (key, data, removed) == ("a", b'{"n":3}', False)
    assert version > conns[0].updates()[0][2]


@pytest.mark.anyio
async def test_limit_untrack_removal_and_cleanup(running: Any) -> None:
    backend = Backend()
    backend.data = {k: b"1" for k in "abcd"}
    node = await running(poll_config(channel_shutdown_delay="100ms"), backend)
    c = FakeConn("u")
    subscribe(node, c)
    with pytest.raises(ClientError) as err:
        track(node, c, ["a", "b", "c", "d"])
    assert err.value.code == 106
    track(node, c, ["a", "b", "c", "d"], untrack=["d"])  # inline untrack frees a slot
    await until(lambda: len(c.pushes) == 3, "three keys")
    ch = node.shared_poll.channels["vv:1"]
    assert sorted(ch.keys) == ["a", "b", "c"]
    node.shared_poll.sub_refresh(c, SubRefreshRequest(channel="vv:1", type=2, untrack=["a"]))
    assert sorted(ch.keys) == ["b", "c"]
    backend.removed.add("b")
    await until(lambda: c.updates()[-1][3], "removal")
    assert c.updates()[-1][:2] == ("b", None)
    assert sorted(ch.keys) == ["c"]
    node.shared_poll.unsubscribe("vv:1", c)
    await until(lambda: "vv:1" not in node.shared_poll.channels, "channel shut down")
    with pytest.raises(ClientError) as err:
        track(node, c, ["a"])
    assert err.value.code == 103  # not subscribed


@pytest.mark.anyio
async def test_bad_track_requests(running: Any) -> None:
    node = await running(poll_config(), Backend())
    c = FakeConn("u")
    subscribe(node, c)
    for req in (
        SubRefreshRequest(channel="vv:1", type=1),
        SubRefreshRequest(channel="vv:1", type=1, track=[TrackBatch(signature="1:0:00")]),
        SubRefreshRequest(channel="vv:1", type=2),
    ):
        with pytest.raises(ClientError) as err:
            node.shared_poll.sub_refresh(c, req)
        assert err.value.code == 107
    forged = SubRefreshRequest(
        channel="vv:1", type=1, track=[TrackBatch(signature="1:0:00", items=[KeyedItem(key="k")])]
    )
    with pytest.raises(ClientError) as err:
        node.shared_poll.sub_refresh(c, forged)
    assert err.value.code == 103
    assert node.shared_poll.channels["vv:1"].keys == {}


@pytest.mark.anyio
async def test_versioned_publish_epoch_and_backend_failure(running: Any) -> None:
    backend = Backend()
    backend.data, backend.versions, backend.epoch = {"p": b"10"}, {"p": 5}, "e1"
    node = await running(poll_config(mode="versioned", publish_enabled=True), backend)
    c = FakeConn("u")
    assert subscribe(node, c) == ""
    track(node, c, ["p"])
    await until(lambda: len(c.pushes) == 1, "polled")
    assert c.updates() == [("p", b"10", 5, False)]
    await until(lambda: ("p", 5) in backend.calls[-1], "the node's version sent")
    await node.shared_poll_publish("vv:1", "p", b"11", 7)
    await node.shared_poll_publish("vv:1", "p", b"9", 6)  # stale: dropped
    assert c.updates()[1:] == [("p", b"11", 7, False)]
    backend.fail = True
    n = len(backend.calls)
    await until(lambda: len(backend.calls) > n + 1, "failed cycles are retried")
    backend.fail = False
    backend.epoch = "e2"  # the publisher restarted
    await until(lambda: c.lost == 1, "unsubscribed with insufficient state")
    assert node.shared_poll.channels["vv:1"].keys == {}


@pytest.mark.anyio
async def test_track_with_current_version_gets_nothing_until_a_change(running: Any) -> None:
    backend = Backend()
    backend.data = {"a": b"1"}
    node = await running(poll_config(), backend)
    first, second = FakeConn("u1"), FakeConn("u2")
    subscribe(node, first)
    track(node, first, ["a"])
    await until(lambda: len(first.pushes) == 1, "first")
    version = first.updates()[0][2]
    subscribe(node, second)
    track(node, second, ["a"], version=version)  # a reconnect with the current version
    await anyio.sleep(0.35)
    assert second.pushes == []
    backend.data["a"] = b"2"
    await until(lambda: len(second.pushes) == 1, "change")


# -------------------------------------------------------------------------- server API


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"channel": "", "key": "k", "data": 1, "version": 1}, 107),
        ({"channel": "pp:1", "key": "", "data": 1, "version": 1}, 107),
        ({"channel": "pp:1", "key": "k", "data": 1, "version": 0}, 107),
        ({"channel": "nope:1", "key": "k", "data": 1, "version": 1}, 102),
        ({"channel": "plain", "key": "k", "data": 1, "version": 1}, 107),
        ({"channel": "vv:1", "key": "k", "data": 1, "version": 1}, 108),
        ({"channel": "pp:1", "key": "k", "data": 1, "version": 1}, None),
    ],
)
async def test_server_api_shared_poll_publish(body: dict[str, Any], code: int | None) -> None:
    cfg = poll_config()
    cfg["http_api"] = {"key": "k"}
    cfg["channel"]["namespaces"].append(
        {
            "name": "pp",
            "subscription_type": "shared_poll",
            "shared_poll": {"mode": "versioned", "publish_enabled": True},
        }
    )
    node = Node(cfg)
    async with node:
        transport = httpx.ASGITransport(app=api_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            resp = await client.post(
                "/api/shared_poll_publish", json=body, headers={"X-API-Key": "k"}
            )
    assert resp.status_code == 200
    answer = resp.json()
    if code is None:
        assert answer == {"result": {}}
    else:
        assert answer["error"]["code"] == code


# ------------------------------------------------------------------ over a connection


def test_commands_over_a_connection_get_centrifuges_codes() -> None:
    """Subscribe types, sub_refresh routing, duplicates and cleanup (raw JSON client)."""
    import json

    from starlette.testclient import TestClient

    cfg = poll_config()
    cfg["client"] = {"allow_anonymous_connect_without_token": True}
    cfg["channel"]["namespaces"][0]["allow_subscribe_for_client"] = True
    cfg["channel"]["namespaces"][0]["allow_subscribe_for_anonymous"] = True
    cfg["channel"]["namespaces"].append(
        {"name": "plain", "allow_subscribe_for_client": True, "allow_subscribe_for_anonymous": True}
    )
    node = Node(cfg)
    node.on_shared_poll_refresh(Backend())
    pending: list[dict[str, Any]] = []
    ids = iter(range(1, 100))

    def call(ws: Any, **cmd: Any) -> dict[str, Any]:
        cmd_id = next(ids)
        ws.send_text(json.dumps({"id": cmd_id, **cmd}))
        while True:
            if not pending:
                pending.extend(json.loads(x) for x in ws.receive_text().split("\n"))
            reply = pending.pop(0)
            if reply.get("id") == cmd_id:
                return reply

    def code(reply: dict[str, Any]) -> int:
        return int(reply["error"]["code"]) if "error" in reply else 0

    sig = make_signature(SECRET, "", "vv:1", ["k"], 60)
    track = {"channel": "vv:1", "type": 1, "track": [{"signature": sig, "items": [{"key": "k"}]}]}
    with TestClient(node.asgi_app()) as http, http.websocket_connect("/connection/websocket") as ws:
        assert "connect" in call(ws, connect={})
        assert code(call(ws, subscribe={"channel": "plain:1", "type": 4})) == 108
        assert code(call(ws, subscribe={"channel": "nope:1", "type": 4})) == 108
        assert code(call(ws, subscribe={"channel": "vv:1"})) == 107
        assert code(call(ws, sub_refresh=track)) == 103  # not subscribed
        assert call(ws, subscribe={"channel": "plain:1"})["subscribe"] == {}
        plain_track = {**track, "channel": "plain:1"}
        assert code(call(ws, sub_refresh=plain_track)) == 107  # a token refresh without token
        reply = call(ws, subscribe={"channel": "vv:1", "type": 4})
        assert reply["subscribe"]["type"] == 4 and reply["subscribe"]["epoch"]
        assert code(call(ws, subscribe={"channel": "vv:1", "type": 4})) == 105
        assert "sub_refresh" in call(ws, sub_refresh=track)
        assert list(node.shared_poll.channels["vv:1"].keys) == ["k"]
        assert "unsubscribe" in call(ws, unsubscribe={"channel": "vv:1"})
        assert code(call(ws, sub_refresh=track)) == 103
        assert node.shared_poll.channels["vv:1"].keys == {}
        reply = call(ws, subscribe={"channel": "vv:1", "type": 4})
        assert "sub_refresh" in call(ws, sub_refresh=track)
    # the connection closed: its keys are gone
    assert (
        node.shared_poll.channels.get("vv:1") is None or not node.shared_poll.channels["vv:1"].keys
    )


@pytest.mark.anyio
async def test_track_frame_over_the_message_size_limit_closes_1009(
    live_server: LiveServerFactory,
) -> None:
    """A sub_refresh track frame one byte over ``websocket.message_size_limit`` closes the
    connection with 1009 and leaves no key tracked; the node serves the next connection,
    where a track frame of exactly the limit is read."""
    import json

    import websockets

    limit = 4096
    cfg = poll_config()
    cfg["client"] = {"allow_anonymous_connect_without_token": True}
    cfg["websocket"] = {"message_size_limit": limit}
    cfg["channel"]["namespaces"][0]["allow_subscribe_for_client"] = True
    cfg["channel"]["namespaces"][0]["allow_subscribe_for_anonymous"] = True
    node = Node(cfg)
    node.on_shared_poll_refresh(Backend())
    srv = live_server(node.asgi_app())

    def frame(size: int) -> str:
        """A track command for key "k" padded (a long untrack key) to ``size`` bytes."""
        sig = make_signature(SECRET, "", "vv:1", ["k"], 60)
        refresh = {
            "channel": "vv:1",
            "type": 1,
            "track": [{"signature": sig, "items": [{"key": "k"}]}],
        }
        cmd = {"id": 3, "sub_refresh": {**refresh, "untrack": [""]}}
        pad = size - len(json.dumps(cmd))
        text = json.dumps({"id": 3, "sub_refresh": {**refresh, "untrack": ["x" * pad]}})
        assert len(text.encode()) == size
        return text

    async def reply(ws: Any) -> dict[str, Any]:
        return dict(json.loads(str(await ws.recv()).split("\n")[0]))

    async def tracked() -> list[str]:
        channel = node.shared_poll.channels.get("vv:1")
        return [] if channel is None else list(channel.keys)

    subscribe = json.dumps({"id": 2, "subscribe": {"channel": "vv:1", "type": 4}})
    with anyio.fail_after(5):
        async with websockets.connect(srv.ws_url("/connection/websocket")) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {}}))
            assert "connect" in await reply(ws)
            await ws.send(subscribe)
            assert (await reply(ws))["subscribe"]["type"] == 4
            await ws.send(frame(limit + 1))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await reply(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert await srv.acall(tracked()) == []
        async with websockets.connect(srv.ws_url("/connection/websocket")) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {}}))
            assert "connect" in await reply(ws)
            await ws.send(subscribe)
            assert (await reply(ws))["subscribe"]["type"] == 4
            await ws.send(frame(limit))
            answer = await reply(ws)
            assert answer["id"] == 3 and "sub_refresh" in answer, answer
            assert await srv.acall(tracked()) == ["k"]


@pytest.mark.anyio
async def test_batches_concurrency_limit_and_signature_expiry(running: Any) -> None:
    """refresh_batch_size splits a cycle; concurrency_limit bounds calls over channels;
    keys whose signature expired track_expired_extra_delay ago are dropped silently."""
    in_flight = {"now": 0, "max": 0}
    calls: list[tuple[str, list[str]]] = []

    class Slow(Backend):
        async def __call__(self, event: SharedPollRefreshEvent) -> SharedPollRefreshReply:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
            calls.append((event.channel, [i.key for i in event.items]))
            await anyio.sleep(0.02)
            in_flight["now"] -= 1
            return SharedPollRefreshReply([SharedPollResult(i.key, 1) for i in event.items])

    cfg = poll_config(
        refresh_batch_size=2, max_keys_per_connection=10, track_expired_extra_delay="1s"
    )
    cfg["shared_poll"]["concurrency_limit"] = 1
    node = await running(cfg, Slow())
    conns = {}
    for channel in ("vv:1", "vv:2"):
        conn = conns[channel] = FakeConn("u")
        opts = node.config.channel.namespaces[0].shared_poll
        node.shared_poll.subscribe(channel, opts, conn, lambda: None)
        keys = ["a", "b", "c", "d", "e"]
        sig = make_signature(SECRET, "u", channel, keys, 60)
        items = [KeyedItem(key=k) for k in keys]
        req = SubRefreshRequest(
            channel=channel, type=1, track=[TrackBatch(signature=sig, items=items)]
        )
        node.shared_poll.sub_refresh(conn, req)
    await until(lambda: all(len(c.pushes) == 5 for c in conns.values()), "cold data")
    assert all(len(keys) <= 2 for _, keys in calls)
    assert in_flight["max"] == 1  # two channels polling at once, one call at a time
    # a signature that expired 3 s ago still verifies (5 s grace), then expires here
    conn = FakeConn("u")
    opts = node.config.channel.namespaces[0].shared_poll
    node.shared_poll.subscribe("vv:3", opts, conn, lambda: None)
    old = make_signature(SECRET, "u", "vv:3", ["x"], 60, now=int(time.time()) - 63)
    req = SubRefreshRequest(
        channel="vv:3", type=1, track=[TrackBatch(signature=old, items=[KeyedItem(key="x")])]
    )
    result = node.shared_poll.sub_refresh(conn, req)
    assert result.expires and result.ttl == 0
    assert "x" in node.shared_poll.channels["vv:3"].keys
    await until(lambda: "x" not in node.shared_poll.channels["vv:3"].keys, "expired key")
    assert all(not p["pub"].get("removed") for p in conn.pushes)  # no removal push


@pytest.mark.anyio
async def test_a_hung_refresh_is_cancelled(running: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refresh call is bounded (CALL_BOUND or the interval): a hung backend skips the
    cycle and frees its concurrency slot; the next cycle asks again."""
    from centrifuge_asgi import shared_poll

    monkeypatch.setattr(shared_poll, "CALL_BOUND", 0.2)
    hang = {"on": True}

    class Hanging(Backend):
        async def __call__(self, event: SharedPollRefreshEvent) -> SharedPollRefreshReply:
            self.calls.append([(i.key, i.version) for i in event.items])
            if hang["on"]:
                await anyio.sleep_forever()
            return SharedPollRefreshReply([SharedPollResult(i.key, 1) for i in event.items])

    backend = Hanging()
    cfg = poll_config()
    cfg["shared_poll"]["concurrency_limit"] = 1
    node = await running(cfg, backend)
    c = FakeConn("u")
    subscribe(node, c)
    track(node, c, ["a"])
    await until(lambda: len(backend.calls) >= 2, "a second call after the hung one")
    hang["on"] = False
    await until(lambda: len(c.pushes) == 1, "data once the backend answers")
