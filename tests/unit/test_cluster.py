"""Cluster messages: the wire of earlier versions both ways, newer nodes' messages, surveys.

``_OldControl`` is the single struct that nodes sent and read before ``cluster.py``
(copied from the previous ``node.py``): a rolling upgrade runs both side by side, so each
must read what the other writes.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from anyio.abc import TaskGroup

from centrifuge_asgi import cluster
from centrifuge_asgi.cluster import (
    ChannelsReply,
    ChannelsSurvey,
    Cluster,
    Disconnect,
    Emulation,
    InfoSurvey,
    NodeInfo,
    Refresh,
    Reply,
    Send,
    Subscribe,
    Survey,
    UnknownMessage,
    Unsubscribe,
)
from centrifuge_asgi.engines.base import Capabilities, ControlEventHandler
from centrifuge_asgi.registry import Registry

pytestmark = pytest.mark.anyio


class _OldControl(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The node-to-node command of the previous version, verbatim."""

    op: str
    origin: str
    user: str = ""
    client: str = ""
    channel: str = ""
    code: int = 0
    reason: str = ""
    expire_at: int = 0
    expired: bool = False
    info: bytes | None = None
    whitelist: list[str] = []
    session: str = ""
    # subscribe only:
    data: bytes | None = None
    override: dict[str, bool] = {}
    recover_offset: int = 0
    recover_epoch: str = ""
    recover: bool = False


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Messages as the previous version wrote them (its JSON, literally), and what they mean now.
OLD_WIRE: list[tuple[str, cluster.AnyMessage]] = [
    (
        '{"op":"disconnect","origin":"n1","user":"u","client":"c","code":4000,'
        '"reason":"bye","whitelist":["c2"],"session":"s"}',
        Disconnect(
            origin="n1",
            user="u",
            client="c",
            session="s",
            code=4000,
            reason="bye",
            whitelist=["c2"],
        ),
    ),
    ('{"op":"disconnect","origin":"n1","user":"u"}', Disconnect(origin="n1", user="u")),
    (
        '{"op":"unsubscribe","origin":"n1","user":"u","client":"c","channel":"news","session":"s"}',
        Unsubscribe(origin="n1", user="u", client="c", session="s", channel="news"),
    ),
    (
        '{"op":"subscribe","origin":"n1","user":"u","channel":"news","expire_at":99,'
        f'"info":"{b64(b"{}")}","data":"{b64(b"[1]")}","override":{{"presence":true}},'
        '"recover_offset":5,"recover_epoch":"ep","recover":true}',
        Subscribe(
            origin="n1",
            user="u",
            channel="news",
            info=b"{}",
            data=b"[1]",
            expire_at=99,
            override={"presence": True},
            recover=True,
            recover_offset=5,
            recover_epoch="ep",
        ),
    ),
    (
        f'{{"op":"refresh","origin":"n1","user":"u","expire_at":7,"expired":true,'
        f'"info":"{b64(b"{}")}"}}',
        Refresh(origin="n1", user="u", expire_at=7, expired=True, info=b"{}"),
    ),
    (
        f'{{"op":"send","origin":"n1","user":"u","client":"c","info":"{b64(b"hi")}"}}',
        Send(origin="n1", user="u", client="c", data=b"hi"),
    ),
    (
        '{"op":"channels_survey","origin":"n1","client":"req","channel":"chat:*"}',
        ChannelsSurvey(origin="n1", request="req", pattern="chat:*"),
    ),
    (
        '{"op":"channels_survey","origin":"n1","client":"req"}',
        ChannelsSurvey(origin="n1", request="req"),
    ),
    (
        f'{{"op":"channels_reply","origin":"n2","client":"req","info":"{b64(b"{}")}"}}',
        ChannelsReply(origin="n2", request="req", counts=b"{}"),
    ),
    (
        f'{{"op":"node","origin":"n2","info":"{b64(b"{}")}"}}',
        NodeInfo(origin="n2", stats=b"{}"),
    ),
    (
        f'{{"op":"emulation","origin":"n1","client":"sess","info":"{b64(b"{}")}"}}',
        Emulation(origin="n1", session_id="sess", data=b"{}"),
    ),
]


@pytest.mark.parametrize(("wire", "message"), OLD_WIRE)
def test_the_previous_versions_messages_are_understood(
    wire: str, message: cluster.AnyMessage
) -> None:
    assert cluster.decode(wire.encode()) == message


@pytest.mark.parametrize(("wire", "message"), OLD_WIRE)
def test_the_previous_version_understands_new_messages(
    wire: str, message: cluster.AnyMessage
) -> None:
    encoded = cluster.encode(message)
    assert json.loads(encoded) == json.loads(wire)  # byte for byte but the field order
    old = msgspec.json.decode(encoded, type=_OldControl)
    assert old == msgspec.json.decode(wire, type=_OldControl)


def test_version_1_is_not_on_the_wire_and_newer_versions_are_refused() -> None:
    assert b'"v"' not in cluster.encode(NodeInfo(origin="n", stats=b"{}"))
    assert cluster.decode(b'{"op":"node","origin":"n","v":1}') == NodeInfo(origin="n")
    with pytest.raises(UnknownMessage) as info:
        cluster.decode(b'{"op":"node","origin":"n","v":2}')
    assert (info.value.op, info.value.version) == ("node", 2)
    with pytest.raises(UnknownMessage) as info:
        cluster.decode(b'{"op":"node","origin":"n","v":2,"info":{"a":"shape from v2"}}')
    assert info.value.op == "node"
    with pytest.raises(UnknownMessage) as info:
        cluster.decode(b'{"op":"rebalance","origin":"n","shard":3}')
    assert (info.value.op, info.value.version) == ("rebalance", 1)


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[]", b'{"op":"node"}', b'{"origin":"n"}', b'{"op":"node","origin":1}'],
)
def test_malformed_messages_raise_decode_errors(data: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        cluster.decode(data)


# ---------------------------------------------------------------------------- a cluster


class Bus:
    """An in-process controller network: every node hears broadcasts (its own too) and
    the messages addressed to it; what a node sends arrives ``delay[node_id]`` seconds
    later when set."""

    def __init__(self, tg: TaskGroup) -> None:
        self.tg = tg
        self.handlers: dict[str, ControlEventHandler] = {}
        self.delay: dict[str, float] = {}
        self.sent: list[tuple[str, bytes]] = []

    def deliver(self, sender: str, node_id: str, data: bytes) -> None:
        delay = self.delay.get(sender)
        handler = self.handlers[node_id]
        if delay is None:
            handler.handle_control(data)
            return

        async def later() -> None:
            await anyio.sleep(delay)
            handler.handle_control(data)

        self.tg.start_soon(later)


class BusController:
    capabilities = Capabilities()

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.node_id = ""

    def register_control_handler(self, handler: ControlEventHandler, node_id: str) -> None:
        self.bus.handlers[node_id] = handler
        self.node_id = node_id

    async def publish_control(self, data: bytes, node_id: str = "") -> bool:
        self.bus.sent.append((node_id, data))
        targets = [n for n in self.bus.handlers if node_id in ("", n)]
        for target in targets:
            self.bus.deliver(self.node_id, target, data)
        return bool(targets)


class Host:
    """The narrow surface of a node that a Cluster needs."""

    def __init__(self, bus: Bus, node_id: str, channels: dict[str, int]) -> None:
        self.node_id = node_id
        self.registry = Registry()
        self.controller = BusController(bus)
        self._tg = bus.tg
        self._channels = channels
        self.cluster = Cluster(self)
        self.controller.register_control_handler(self.cluster, node_id)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        self._tg.start_soon(fn, *args)
        return True

    def channels(self, pattern: str = "") -> dict[str, int]:
        return {ch: n for ch, n in self._channels.items() if ch.startswith(pattern.rstrip("*"))}

    def node_stats(self) -> dict[str, Any]:
        return {"uid": self.node_id, "num_channels": len(self._channels)}


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    async with anyio.create_task_group() as tg:
        yield Bus(tg)
        tg.cancel_scope.cancel()


async def settle() -> None:
    for _ in range(10):
        await anyio.lowlevel.checkpoint()


async def meet(*hosts: Host) -> None:
    for host in hosts:
        await host.cluster.announce()
    await settle()


async def test_channels_survey_sums_every_peer(bus: Bus) -> None:
    a = Host(bus, "a", {"chat:1": 1, "news": 2})
    b = Host(bus, "b", {"chat:1": 2, "chat:2": 1})
    c = Host(bus, "c", {"chat:3": 5})
    await meet(a, b, c)
    with anyio.fail_after(1):
        assert await a.cluster.channels("chat:*", wait=5.0) == {
            "chat:1": 3,
            "chat:2": 1,
            "chat:3": 5,
        }
    assert a.cluster._surveys == {}
    # the reply went to the asking node only
    replies = [(to, cluster.decode(data)) for to, data in bus.sent]
    assert {to for to, m in replies if isinstance(m, ChannelsReply)} == {"a"}


async def test_a_silent_peer_is_left_out_after_the_wait_and_its_late_reply_dropped(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    a = Host(bus, "a", {"x": 1})
    b = Host(bus, "b", {"x": 2})
    slow = Host(bus, "slow", {"x": 4})
    await meet(a, b, slow)
    bus.delay["slow"] = 0.3  # what slow sends arrives late from now on
    started = anyio.current_time()
    assert await a.cluster.channels(wait=0.1) == {"x": 3}
    assert 0.1 <= anyio.current_time() - started < 0.3
    assert a.cluster._surveys == {}
    with caplog.at_level(logging.WARNING, "centrifuge_asgi.cluster"):
        await anyio.sleep(0.4)  # the late replies arrive: nothing waits for them any more
    assert a.cluster._surveys == {}
    assert caplog.records == []


async def test_a_peer_that_went_away_is_forgotten(bus: Bus) -> None:
    a = Host(bus, "a", {"x": 1})
    b = Host(bus, "b", {"x": 2})
    await meet(a, b)
    assert [p["uid"] for p in a.cluster.peers()] == ["b"]
    del bus.handlers["b"]  # b stops
    seen, stats = a.cluster._peers["b"]
    a.cluster._peers["b"] = (seen - cluster.NODE_TTL - 1, stats)  # and stays silent
    assert a.cluster.peers() == []
    assert await a.cluster.channels(wait=5.0) == {"x": 1}  # nobody to ask: no wait


async def test_survey_primitive() -> None:
    survey: Survey[int] = Survey({"b", "c"})
    survey.add("b", 1)
    assert not survey.done.is_set()
    survey.add("d", 4)  # not expected (announced meanwhile): kept, not enough
    assert not survey.done.is_set()
    with anyio.fail_after(1):
        assert await survey.wait(0.05) == {"b": 1, "d": 4}  # c missing: after the wait
    survey.add("c", 3)
    assert survey.done.is_set()
    with anyio.fail_after(0.05):
        assert await survey.wait(10) == {"b": 1, "c": 3, "d": 4}
    nobody: Survey[int] = Survey(set())
    with anyio.fail_after(0.05):
        assert await nobody.wait(10) == {}
    assert Survey[int](set()).request != nobody.request


async def test_announcements_make_info_and_a_new_peer_is_answered_at_once(bus: Bus) -> None:
    a = Host(bus, "a", {})
    b = Host(bus, "b", {"x": 1})
    await b.cluster.announce()
    await settle()
    assert a.cluster.peers() == [{"uid": "b", "num_channels": 1}]
    assert b.cluster.peers() == [{"uid": "a", "num_channels": 0}]  # a answered the newcomer


async def test_newer_and_malformed_messages_are_logged_and_ignored(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    a = Host(bus, "a", {})
    with caplog.at_level(logging.WARNING, "centrifuge_asgi.cluster"):
        for _ in range(3):
            a.cluster.handle_control(b'{"op":"rebalance","origin":"z","v":1}')
            a.cluster.handle_control(b'{"op":"node","origin":"z","v":3}')
        a.cluster.handle_control(b"\xff garbage")
        await settle()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "control message from a newer node ignored: op 'rebalance' v1",
        "control message from a newer node ignored: op 'node' v3",
        "malformed control message ignored",
    ]
    assert a.cluster.peers() == []


class RecordingStream:
    """An emulation stream that keeps every frame fed to it."""

    def __init__(self) -> None:
        self.fed: list[bytes] = []

    async def feed(self, frame: bytes) -> bool:
        self.fed.append(frame)
        return True


async def test_emulation_is_an_addressed_message(bus: Bus) -> None:
    a = Host(bus, "a", {})
    b = Host(bus, "b", {})
    stream = RecordingStream()
    b.registry.emulation_streams["sess"] = stream
    assert await a.cluster.forward_emulation("b", "sess", b'{"id":1}')
    assert not await a.cluster.forward_emulation("gone", "sess", b"{}")
    await settle()
    assert stream.fed == [b'{"id":1}']
    to, data = bus.sent[0]
    assert to == "b"
    wire = {"op": "emulation", "origin": "a", "client": "sess", "info": b64(b'{"id":1}')}
    assert json.loads(data) == wire


# ------------------------------------------------------------ one request/reply primitive


def test_new_requests_and_replies_round_trip_and_older_nodes_read_what_they_know() -> None:
    new = [
        NodeInfo(origin="n", stats=b"{}", answers=["info_survey", "emulation"]),
        InfoSurvey(origin="n", request="r"),
        Emulation(origin="n", session_id="s", data=b"{}", request="r"),
        Reply(origin="n", request="r", code=cluster.QUEUE_FULL, data=b"{}"),
    ]
    for message in new:
        assert cluster.decode(cluster.encode(message)) == message
    # An older node reads an announcement and an acknowledged frame as it always did.
    old = msgspec.json.decode(cluster.encode(new[0]), type=_OldControl)
    assert (old.op, old.origin, old.info) == ("node", "n", b"{}")
    old = msgspec.json.decode(cluster.encode(new[2]), type=_OldControl)
    assert (old.op, old.client, old.info) == ("emulation", "s", b"{}")


async def test_info_asks_every_peer_and_falls_back_to_announcements(bus: Bus) -> None:
    a = Host(bus, "a", {})
    b = Host(bus, "b", {"x": 1})
    slow = Host(bus, "slow", {"y": 1})
    await meet(a, b, slow)
    b._channels["z"] = 1  # b's statistics changed after it announced itself
    slow._channels["z"] = 1
    bus.delay["slow"] = 0.3  # slow answers after the wait
    with anyio.fail_after(1):
        found = await a.cluster.info(wait=0.1)
    assert sorted(found, key=lambda s: s["uid"]) == [
        {"uid": "b", "num_channels": 2},  # asked now
        {"uid": "slow", "num_channels": 1},  # as announced
    ]
    assert a.cluster._surveys == {}
    sent = [(to, cluster.decode(data)) for to, data in bus.sent]
    assert [to for to, m in sent if isinstance(m, InfoSurvey)] == [""]  # one broadcast
    assert {to for to, m in sent if isinstance(m, Reply)} == {"a"}


async def test_an_older_peer_is_not_asked_for_info(bus: Bus) -> None:
    a = Host(bus, "a", {})
    stats = json.dumps({"uid": "old", "num_channels": 1}).encode()
    a.cluster.handle_control(cluster.encode(NodeInfo(origin="old", stats=stats)))  # no answers
    await settle()
    bus.sent.clear()
    with anyio.fail_after(0.05):  # nobody to wait for
        assert await a.cluster.info(wait=5.0) == [{"uid": "old", "num_channels": 1}]
    assert bus.sent == []


async def test_emulation_frames_are_acknowledged_by_nodes_that_announced_it(bus: Bus) -> None:
    a = Host(bus, "a", {})
    b = Host(bus, "b", {})
    await meet(a, b)
    fed: list[bytes] = []
    full = False

    class Stream:
        async def feed(self, frame: bytes) -> bool:
            if full:
                raise TimeoutError
            fed.append(frame)
            return True

    b.registry.emulation_streams["sess"] = Stream()
    bus.sent.clear()
    with anyio.fail_after(1):
        assert await a.cluster.forward_emulation("b", "sess", b'{"id":1}', wait=5.0)
    assert fed == [b'{"id":1}']  # queued before the answer
    (to, request), (reply_to, reply) = [(to, cluster.decode(d)) for to, d in bus.sent]
    assert to == "b" and isinstance(request, Emulation) and request.request
    assert reply_to == "a" and reply == Reply(origin="b", request=request.request)
    with anyio.fail_after(1):  # no such stream on b: dropped there, as a local one
        assert await a.cluster.forward_emulation("b", "other", b"{}", wait=5.0)
    full = True
    with anyio.fail_after(1), pytest.raises(TimeoutError):
        await a.cluster.forward_emulation("b", "sess", b"{}", wait=5.0)
    full = False
    bus.delay["b"] = 0.3  # b answers too late
    with anyio.fail_after(1), pytest.raises(TimeoutError):
        await a.cluster.forward_emulation("b", "sess", b"{}", wait=0.1)
    del bus.handlers["b"]  # b is gone: the controller knows nobody listens
    with anyio.fail_after(1):
        assert not await a.cluster.forward_emulation("b", "sess", b"{}", wait=5.0)
    assert a.cluster._surveys == {}


async def test_an_older_nodes_emulation_frame_gets_no_reply(bus: Bus) -> None:
    b = Host(bus, "b", {})
    stream = RecordingStream()
    b.registry.emulation_streams["sess"] = stream
    old = b'{"op":"emulation","origin":"old","client":"sess","info":"' + b64(b"[]").encode() + b'"}'
    b.cluster.handle_control(old)
    await settle()
    assert stream.fed == [b"[]"]
    assert bus.sent == []
