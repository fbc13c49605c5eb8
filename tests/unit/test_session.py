"""The session state machine without sockets: frames in, encoded replies out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from centrifuge_asgi import ClientError, ConnectReply, Node, RPCEvent
from centrifuge_asgi.codes import DisconnectCode, disconnect_reason
from centrifuge_asgi.errors import Disconnect
from centrifuge_asgi.session import Session, TransportInfo, new_id
from centrifuge_asgi.subscriptions import Subscription
from tests.interop.support import make_config, token

pytestmark = pytest.mark.anyio


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with Node(make_config()) as n:
        yield n
        await finish_all(n)


async def finish_all(node: Node) -> None:
    """What a transport does when its socket ends (there are no sockets here)."""
    for s in list(node.registry.sessions()):
        await s.finish()


def replies(session: Session) -> list[dict[str, Any]]:
    return [json.loads(m) for m in session.outbox.drain()]


def frame(*commands: dict[str, Any]) -> bytes:
    return "\n".join(json.dumps(c) for c in commands).encode()


async def connected(node: Node, user: str = "u1") -> Session:
    s = node.create_session(TransportInfo())
    await s.handle_frame(frame({"id": 1, "connect": {"token": token(user)}}))
    [reply] = replies(s)
    assert reply["id"] == 1 and reply["connect"]["client"] == s.client_id
    return s


async def test_connect_reply_advertises_ping_and_expiry(node: Node) -> None:
    s = node.create_session(TransportInfo())
    await s.handle_frame(frame({"id": 1, "connect": {"token": token("u1", ttl=100)}}))
    [reply] = replies(s)
    result = reply["connect"]
    assert result["ping"] == 25 and result["pong"] is True
    assert result["expires"] is True and 98 <= result["ttl"] <= 100
    assert "session" not in result and "node" not in result


async def test_subscriptions_slot_holds_a_dict_only_for_two_or_more(node: Node) -> None:
    s = node.create_session(TransportInfo())
    a, b, a2 = (Subscription(channel=ch, flags=0, chan_info=None) for ch in ("a", "b", "a"))
    s.add_sub(a)
    assert s.sub_slot is a and s.sub("a") is a and s.sub("b") is None and s.sub_count() == 1
    s.add_sub(b)
    assert s.sub_slot == {"a": a, "b": b} and s.sub_channels() == ["a", "b"]
    assert s.pop_sub("a") is a and s.sub_slot is b and s.pop_sub("a") is None
    s.add_sub(a)
    s.add_sub(a2)  # in place of the subscription of its channel, as a dict would
    assert s.sub_slot == {"a": a2, "b": b} and dict(s.subs) == {"a": a2, "b": b}
    assert s.pop_sub("b") is b and s.sub_slot is a2
    s.add_sub(a)
    assert s.sub_slot is a and s.pop_sub("a") is a and s.sub_slot is None and not s.subs
    await s.finish()


async def test_client_side_refresh_moves_the_expiry(node: Node) -> None:
    s = node.create_session(TransportInfo())
    await s.handle_frame(frame({"id": 1, "connect": {"token": token("u1", ttl=100)}}))
    [reply] = replies(s)
    assert reply["connect"]["expires"] is True and s.client_side_refresh
    await s.handle_frame(frame({"id": 2, "refresh": {"token": token("u1", ttl=200)}}))
    [reply] = replies(s)
    assert reply["id"] == 2 and reply["refresh"]["expires"] is True
    assert 198 <= reply["refresh"]["ttl"] <= 200 and s.connected


async def test_connect_and_subscribe_in_one_frame(node: Node) -> None:
    s = node.create_session(TransportInfo())
    await s.handle_frame(
        frame(
            {"connect": {"token": token("u1")}, "id": 1},
            {"subscribe": {"channel": "news:a", "flag": 1}, "id": 2},
        )
    )
    out = replies(s)
    assert [r["id"] for r in out] == [1, 2]
    sub = out[1]["subscribe"]
    assert sub["recoverable"] is True and sub["positioned"] is True and sub["epoch"]
    assert "offset" not in sub  # zero is omitted


async def test_reply_shapes_keep_required_fields(node: Node) -> None:
    s = await connected(node)
    await s.handle_frame(
        frame(
            {"id": 2, "subscribe": {"channel": "news:a"}},
            {"id": 3, "history": {"channel": "news:a"}},
            {"id": 4, "presence": {"channel": "news:a"}},
            {"id": 5, "presence_stats": {"channel": "news:a"}},
            {"id": 6, "publish": {"channel": "news:a", "data": {"x": 1}}},
            {"id": 7, "unsubscribe": {"channel": "nothing"}},
        )
    )
    out = {r.get("id"): r for r in replies(s)}
    assert out[3]["history"]["publications"] == [] and out[3]["history"]["offset"] == 0
    assert "epoch" in out[3]["history"]
    presence = out[4]["presence"]["presence"]
    assert presence == {s.client_id: {"user": "u1", "client": s.client_id}}
    assert out[5]["presence_stats"] == {"num_clients": 1, "num_users": 1}
    assert out[6] == {"id": 6, "publish": {}}
    assert out[7] == {"id": 7, "unsubscribe": {}}


async def test_publications_wait_for_the_subscribe_reply(node: Node) -> None:
    """Non-positioned: a publication arriving while subscribe is in flight is one push after
    the reply."""
    s = await connected(node)
    original = node.broker.subscribe

    async def subscribe_then_publish(channel: str) -> None:
        await original(channel)  # delivery is live, the reply is not written yet
        await node.publish(channel, {"n": "during"})

    node.broker.subscribe = subscribe_then_publish  # type: ignore[method-assign]
    await s.handle_frame(frame({"id": 2, "subscribe": {"channel": "chat:a"}}))
    out = replies(s)
    assert out[0] == {"id": 2, "subscribe": {}}
    pushes = [r["push"] for r in out[1:]]
    assert all(p["channel"] == "chat:a" for p in pushes)
    # the buffered publication once, then the subscriber's own join (chat: pushes join/leave)
    assert [next(k for k in p if k != "channel") for p in pushes] == ["pub", "join"]
    assert pushes[0]["pub"]["data"] == {"n": "during"}


async def test_publication_before_the_top_is_read_is_in_the_reply_position(node: Node) -> None:
    """Positioned, no recovery: a publication that lands before the stream top is read is
    counted in the reply's offset, so its buffered copy is a duplicate and is not pushed."""
    s = await connected(node)
    original = node.broker.history

    async def publish_then_history(*args: Any, **kwargs: Any) -> Any:
        await node.publish("news:a", {"n": "during"})
        return await original(*args, **kwargs)

    node.broker.history = publish_then_history  # type: ignore[method-assign]
    await s.handle_frame(frame({"id": 2, "subscribe": {"channel": "news:a"}}))
    out = replies(s)
    assert len(out) == 1, out  # nothing after the reply
    reply = out[0]
    assert reply["id"] == 2
    sub = reply["subscribe"]
    assert sub["positioned"] is True and sub["offset"] == 1
    assert "publications" not in sub and "recovered" not in sub
    assert s.subs["news:a"].offset == 1


async def test_publication_after_the_top_is_read_is_pushed_once(node: Node) -> None:
    """Positioned: a publication that lands after the top is read (here: while presence is
    added) is not in the reply's offset, so it follows the reply as exactly one push."""
    s = await connected(node)
    original = node.presence_manager.add_presence

    async def add_presence_during_publish(*args: Any, **kwargs: Any) -> Any:
        await node.publish("news:b", {"n": "during"})
        return await original(*args, **kwargs)

    node.presence_manager.add_presence = add_presence_during_publish  # type: ignore[method-assign]
    await s.handle_frame(frame({"id": 2, "subscribe": {"channel": "news:b"}}))
    reply, *rest = replies(s)
    assert reply["id"] == 2
    assert "offset" not in reply["subscribe"]  # top 0 at the time it was read
    assert [r["push"]["channel"] for r in rest] == ["news:b"]
    pub = rest[0]["push"]["pub"]
    assert pub["data"] == {"n": "during"} and pub["offset"] == 1
    assert s.subs["news:b"].offset == 1


async def test_recovery_is_all_or_nothing(node: Node) -> None:
    for i in range(3):
        await node.publish("news:r", {"i": i})
    hist = await node.history("news:r")
    s = await connected(node)
    await s.handle_frame(
        frame(
            {
                "id": 2,
                "subscribe": {
                    "channel": "news:r",
                    "recover": True,
                    "offset": 1,
                    "epoch": hist.epoch,
                },
            }
        )
    )
    [reply] = replies(s)
    result = reply["subscribe"]
    assert result["recovered"] is True and result["was_recovering"] is True
    assert result["offset"] == 1
    assert [p["offset"] for p in result["publications"]] == [2, 3]

    s2 = await connected(node, "u2")
    await s2.handle_frame(
        frame(
            {
                "id": 2,
                "subscribe": {"channel": "news:r", "recover": True, "offset": 1, "epoch": "_"},
            }
        )
    )
    [reply] = replies(s2)
    result = reply["subscribe"]
    assert "recovered" not in result and "publications" not in result
    assert result["offset"] == 3 and result["was_recovering"] is True


async def test_reject_unrecovered_flag_gives_112(node: Node) -> None:
    s = await connected(node)
    await s.handle_frame(
        frame(
            {
                "id": 2,
                "subscribe": {
                    "channel": "news:x",
                    "recover": True,
                    "offset": 5,
                    "epoch": "nope",
                    "flag": 3,
                },
            }
        )
    )
    [reply] = replies(s)
    assert reply["error"] == {"code": 112, "message": "unrecoverable position"}
    assert "news:x" not in s.subs and not node.registry.has_subscribers("news:x")


async def test_gap_on_positioned_subscription_unsubscribes_with_2500(node: Node) -> None:
    s = await connected(node)
    await s.handle_frame(frame({"id": 2, "subscribe": {"channel": "news:g"}}))
    replies(s)
    await node.publish("news:g", {"a": 1})
    s.subs["news:g"].offset = 0  # pretend offset 1 was lost: offset 2 is a gap
    await node.publish("news:g", {"a": 2})
    out = replies(s)
    assert out[-1] == {
        "push": {"channel": "news:g", "unsubscribe": {"code": 2500, "reason": "insufficient state"}}
    }
    assert "news:g" not in s.subs


async def test_rpc_ping_and_the_codes_of_unknown_methods() -> None:
    """Spec §2.8.9: without any RPC 108; with the built-in ping on, other methods are 104."""
    for ping, unknown in ((False, 108), (True, 104)):
        config = make_config()
        config["rpc"] = {"ping": {"enabled": ping, "method": "hello"}}
        async with Node(config) as node:
            s = await connected(node)
            await s.handle_frame(
                frame({"id": 2, "rpc": {"method": "hello"}}, {"id": 3, "rpc": {"method": "x"}})
            )
            first, second = replies(s)
            if ping:
                assert first == {"id": 2, "rpc": {}}
            else:
                assert first["error"]["code"] == 108
            assert second["error"]["code"] == unknown, second
            await finish_all(node)


async def test_rpc_result_object_always_present(node: Node) -> None:
    @node.on_rpc("none")
    async def none(event: RPCEvent) -> None:
        return None

    @node.on_rpc("fail")
    async def fail(event: RPCEvent) -> None:
        raise RuntimeError("boom")

    @node.on_rpc("deny")
    async def deny(event: RPCEvent) -> None:
        raise ClientError(403, "nope")

    s = await connected(node)
    await s.handle_frame(
        frame(
            {"id": 2, "rpc": {"method": "none"}},
            {"id": 3, "rpc": {"method": "fail"}},
            {"id": 4, "rpc": {"method": "deny"}},
            {"id": 5, "rpc": {"method": "missing"}},
        )
    )
    out = replies(s)
    assert out[0] == {"id": 2, "rpc": {}}
    assert out[1]["error"] == {"code": 100, "message": "internal server error", "temporary": True}
    assert out[2]["error"] == {"code": 403, "message": "nope"}
    assert out[3]["error"] == {"code": 104, "message": "method not found"}
    assert s.connected


async def test_send_without_handler_disconnects_3508(node: Node) -> None:
    s = await connected(node)
    await s.handle_frame(frame({"send": {"data": {"x": 1}}}))
    assert (s.close_code, s.close_reason) == (3508, "not available")


async def test_overflowing_outbox_disconnects_slow(node: Node) -> None:
    s = await connected(node)
    s.outbox.max_bytes = 1000
    await s.handle_frame(frame({"id": 2, "subscribe": {"channel": "chat:x"}}))
    for _ in range(20):
        await node.publish("chat:x", {"pad": "x" * 100})
    assert (s.close_code, s.close_reason) == (3008, "slow")
    assert s.outbox.drain() == []  # queued messages are dropped for a slow client


async def test_connecting_handler_authenticates_tokenless_clients(node: Node) -> None:
    @node.on_connecting
    async def auth(event: Any) -> ConnectReply:
        return ConnectReply(user=event.data["name"], channels=["chat:lobby"])

    s = node.create_session(TransportInfo())
    await s.handle_frame(frame({"id": 1, "connect": {"data": {"name": "ann"}}}))
    reply, *pushes = replies(s)
    assert s.user == "ann"
    assert pushes == [
        {
            "push": {
                "channel": "chat:lobby",
                "join": {"info": {"user": "ann", "client": s.client_id}},
            }
        }
    ]
    assert reply["connect"]["subs"] == {"chat:lobby": {}}
    assert node.registry.has_subscribers("chat:lobby")


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1024.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def pinging() -> AsyncIterator[tuple[Node, Callable[[float], None]]]:
    """A node with 1 s pings and a 500 ms pong timeout on a fake clock, and
    ``advance(seconds)``: move the clock and fire every timer that is due (steps are
    binary fractions, so deadlines compare exactly)."""
    clock = FakeClock()
    n = Node(make_config(ping_interval="1s", pong_timeout="500ms"))
    n.scheduler.clock = clock  # before start (the ping wheel reads the same clock)

    def advance(seconds: float) -> None:
        clock.now += seconds
        n.scheduler.fire_due()

    async with n:
        yield n, advance
        await finish_all(n)


PING = b"{}"


async def test_missed_pong_disconnects_3012(
    pinging: tuple[Node, Callable[[float], None]],
) -> None:
    node, advance = pinging
    s = await connected(node)
    advance(0.75)
    assert s.outbox.drain() == []  # not yet time to ping
    advance(0.25)
    assert s.outbox.drain() == [PING]
    advance(0.25)
    assert not s.closing  # the pong may still come
    advance(0.25)
    assert (s.close_code, s.close_reason) == (3012, "no pong")
    assert await s.outbox.take_all() is None  # closed


async def test_answered_pings_keep_the_connection(
    pinging: tuple[Node, Callable[[float], None]],
) -> None:
    node, advance = pinging
    s = await connected(node)
    advance(1.0)
    for _ in range(5):
        assert s.outbox.drain() == [PING]
        await s.handle_frame(PING)  # the pong
        advance(0.75)  # past the pong deadline of the ping just answered
        assert s.outbox.drain() == []
        assert not s.closing
        advance(0.25)  # the next ping, 1 s after the previous one
    assert s.outbox.drain() == [PING]  # still pinged: the connection is alive
    assert not s.closing


async def test_finish_releases_channels_and_presence(node: Node) -> None:
    s = await connected(node)
    await s.handle_frame(frame({"id": 2, "subscribe": {"channel": "chat:p"}}))
    assert (await node.presence_stats("chat:p")).num_clients == 1
    await s.finish()
    assert not node.registry.has_subscribers("chat:p")
    assert (await node.presence_stats("chat:p")).num_clients == 0
    assert node.registry.num_clients == 0


async def test_periodic_position_check_flags_a_lost_publication(node: Node) -> None:
    s = await connected(node)
    await s.handle_frame(frame({"id": 2, "subscribe": {"channel": "news:pc"}}))
    replies(s)
    await node._check_positions()  # top 0: nothing to compare yet
    await node.publish("news:pc", {"n": 1})
    s.subs["news:pc"].offset = 0  # as if that delivery was lost
    await node._check_positions()  # first sighting of top 1: allow it to be in flight
    assert "news:pc" in s.subs
    await node._check_positions()  # still behind a whole interval later: insufficient state
    assert replies(s)[-1]["push"]["unsubscribe"]["code"] == 2500
    assert "news:pc" not in s.subs


async def test_tag_filter_where_the_namespace_allows_none_is_107(node: Node) -> None:
    s = await connected(node)
    tf = {"key": "k", "cmp": "eq", "val": "v"}
    await s.handle_frame(frame({"id": 2, "subscribe": {"channel": "chat:t", "tf": tf}}))
    assert replies(s)[0]["error"]["code"] == 107
    await s.handle_frame(frame({"id": 3, "subscribe": {"channel": "tags:t", "tf": tf}}))
    assert "subscribe" in replies(s)[0]  # tests/unit/test_tagfilter.py has the rest


async def test_fan_out_encodes_once_per_publication(node: Node, monkeypatch: Any) -> None:
    from centrifuge_asgi.protocol.json_codec import JsonCodec

    sessions = [await connected(node, f"u{i}") for i in range(5)]
    for s in sessions:
        await s.handle_frame(frame({"id": 2, "subscribe": {"channel": "news:fan"}}))
        replies(s)
    calls = []
    original = JsonCodec.encode_reply
    monkeypatch.setattr(
        JsonCodec, "encode_reply", lambda self, reply: calls.append(1) or original(self, reply)
    )
    await node.publish("news:fan", {"x": 1})
    assert len(calls) == 1
    assert all(len(replies(s)) == 1 for s in sessions)


async def test_an_observer_subclassing_no_observer_gets_every_count() -> None:
    """The default observer skips per-message counting; a subclass of it (the documented
    way to write an observer) still gets the connect and reply counts."""
    from centrifuge_asgi.observer import NoObserver

    class Counts(NoObserver):
        def __init__(self) -> None:
            self.seen: list[tuple[str, tuple[str, ...]]] = []

        def count(self, family: str, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
            self.seen.append((family, labels))

        def fanout_sent(self, frame_type: str, channel: str, *args: Any, **kw: Any) -> None:
            self.seen.append(("fanout", (frame_type, channel)))

    counts = Counts()
    async with Node(make_config(), observer=counts) as node:
        assert node.counting
        s = await connected(node)
        await s.handle_frame(frame({"id": 2, "subscribe": {"channel": "news:a"}}))
        await node.publish("news:a", {"n": 1})
        await finish_all(node)
    assert ("fanout", ("push_publication", "news:a")) in counts.seen, counts.seen
    families = [family for family, _ in counts.seen]
    assert "client_connections_accepted" in families
    assert ("transport_messages_sent", (s.transport.name, "connect", "")) in counts.seen
    async with Node(make_config()) as node:
        assert not node.counting


def test_disconnect_reason_is_the_exceptions() -> None:
    for code in [*DisconnectCode, 4000, 4999, 3999, 1009]:
        assert disconnect_reason(int(code)) == Disconnect(int(code)).reason


def test_client_ids_are_version_4_uuids() -> None:
    import uuid

    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in list(ids)[:50]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
