"""Cache recovery (``force_recovery_mode: cache``, ``auto_cache_recover``) through sessions:
what a subscribe reply carries in each state of the client and of the channel."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from centrifuge_asgi import Node
from centrifuge_asgi.engines.base import Publication, StreamPosition
from centrifuge_asgi.session import Session, TransportInfo
from centrifuge_asgi.subscriptions import _cache_recovered
from tests.interop.support import BASE_CONFIG, token

pytestmark = pytest.mark.anyio

_CACHE = {
    "allow_subscribe_for_client": True,
    "history_size": 5,
    "history_ttl": "300s",
    "force_recovery": True,
    "force_recovery_mode": "cache",
}


def cache_config() -> dict[str, Any]:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["channel"]["namespaces"] += [
        {"name": "cache", **_CACHE},
        {"name": "auto", **_CACHE, "auto_cache_recover": True},
        {"name": "ctags", **_CACHE, "allow_tags_filter": True},
    ]
    return cfg


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with Node(cache_config()) as n:
        yield n
        for s in list(n.registry.sessions()):
            await s.finish()


def replies(session: Session) -> list[dict[str, Any]]:
    return [json.loads(m) for m in session.outbox.drain()]


async def connected(node: Node, user: str = "u1", **claims: Any) -> tuple[Session, dict[str, Any]]:
    s = node.create_session(TransportInfo())
    connect = {"id": 1, "connect": {"token": token(user, **claims)}}
    await s.handle_frame(json.dumps(connect).encode())
    [reply] = replies(s)
    return s, reply["connect"]


async def subscribe(node: Node, **req: Any) -> dict[str, Any]:
    s, _ = await connected(node)
    await s.handle_frame(json.dumps({"id": 2, "subscribe": req}).encode())
    [reply] = replies(s)
    assert "error" not in reply, reply
    result: dict[str, Any] = reply["subscribe"]
    return result


async def publish(node: Node, channel: str, count: int) -> StreamPosition:
    for i in range(1, count + 1):
        await node.publish(channel, {"n": i})
    hist = await node.history(channel)
    return StreamPosition(hist.offset, hist.epoch)


async def test_first_subscribe_with_recover_gets_only_the_latest(node: Node) -> None:
    await publish(node, "cache:a", 3)
    result = await subscribe(node, channel="cache:a", recover=True)
    assert result["recovered"] is True and result["was_recovering"] is True
    assert result["positioned"] is True and result["recoverable"] is True
    assert [(p["offset"], p["data"]) for p in result["publications"]] == [(3, {"n": 3})]
    assert "offset" not in result  # the client's own offset (0), as Centrifugo


async def test_resubscribe_behind_gets_the_latest_not_a_replay(node: Node) -> None:
    top = await publish(node, "cache:b", 4)
    result = await subscribe(node, channel="cache:b", recover=True, offset=1, epoch=top.epoch)
    assert result["recovered"] is True and result["offset"] == 1
    assert [p["offset"] for p in result["publications"]] == [4]


async def test_client_at_the_top_is_recovered_with_nothing(node: Node) -> None:
    top = await publish(node, "cache:c", 2)
    result = await subscribe(node, channel="cache:c", recover=True, offset=2, epoch=top.epoch)
    assert result["recovered"] is True and "publications" not in result
    assert result["offset"] == 2 and result["epoch"] == top.epoch


async def test_another_epoch_still_gets_the_latest(node: Node) -> None:
    top = await publish(node, "cache:d", 2)
    result = await subscribe(node, channel="cache:d", recover=True, offset=2, epoch="old")
    assert result["recovered"] is True and result["epoch"] == top.epoch
    assert [p["offset"] for p in result["publications"]] == [2]


async def test_empty_history_is_not_recovered_and_not_refused(node: Node) -> None:
    # the reject-unrecovered flag (2) refuses with 112 only in stream mode
    result = await subscribe(node, channel="cache:e", recover=True, offset=3, epoch="x", flag=2)
    assert "recovered" not in result and "publications" not in result
    assert result["was_recovering"] is True and result["epoch"]


async def test_without_recover_no_publication_is_sent(node: Node) -> None:
    await publish(node, "cache:f", 2)
    result = await subscribe(node, channel="cache:f")
    assert "was_recovering" not in result and "publications" not in result
    assert result["offset"] == 2 and result["recoverable"] is True


async def test_auto_cache_recover_recovers_unasked(node: Node) -> None:
    await publish(node, "auto:a", 3)
    result = await subscribe(node, channel="auto:a")
    assert result["was_recovering"] is True and result["recovered"] is True
    assert [p["offset"] for p in result["publications"]] == [3]


async def test_tags_filter_gets_the_latest_matching(node: Node) -> None:
    for i, team in enumerate(["red", "blue", "red", "blue"], 1):
        await node.publish("ctags:x", {"n": i}, tags={"team": team})
    tf = {"key": "team", "cmp": "eq", "val": "red"}
    result = await subscribe(node, channel="ctags:x", recover=True, tf=tf)
    assert result["recovered"] is True
    assert [p["offset"] for p in result["publications"]] == [3]
    none = {"key": "team", "cmp": "eq", "val": "green"}
    result = await subscribe(node, channel="ctags:x", recover=True, tf=none)
    assert "recovered" not in result and "publications" not in result


async def test_server_side_subscription_recovers_with_auto(node: Node) -> None:
    await publish(node, "auto:srv", 2)
    await publish(node, "cache:srv", 2)
    _, connect = await connected(node, channels=["auto:srv", "cache:srv"])
    auto, plain = connect["subs"]["auto:srv"], connect["subs"]["cache:srv"]
    assert auto["recovered"] is True and [p["offset"] for p in auto["publications"]] == [2]
    assert "publications" not in plain and "was_recovering" not in plain


async def test_server_api_subscribe_recovers_as_a_stream(node: Node) -> None:
    """Centrifugo's server API subscribe (``recover_since``) ignores the recovery mode."""
    s, _ = await connected(node, "api")
    top = await publish(node, "cache:api", 4)
    await node.subscribe("api", "cache:api", recover_since=StreamPosition(1, top.epoch))
    pushes = [r["push"] for r in replies(s)]
    assert pushes[0]["subscribe"]["offset"] == 1
    assert [p["pub"]["offset"] for p in pushes[1:]] == [2, 3, 4]


def _pub(offset: int) -> Publication:
    return Publication(offset=offset, data=b"{}")


@pytest.mark.parametrize(
    ("latest", "top", "since", "sent", "recovered"),
    [
        pytest.param(None, (0, "e"), (0, ""), [], False, id="never published"),
        pytest.param(None, (5, "e"), (5, "e"), [], True, id="expired, client at top"),
        pytest.param(None, (5, "e"), (4, "e"), [], False, id="expired, client behind"),
        pytest.param(None, (5, "e"), (5, "f"), [], False, id="expired, other epoch"),
        pytest.param(5, (5, "e"), (0, ""), [5], True, id="first subscribe"),
        pytest.param(5, (5, "e"), (2, "e"), [5], True, id="behind"),
        pytest.param(5, (5, "e"), (5, "e"), [], True, id="at top"),
        pytest.param(5, (5, "e"), (5, "f"), [5], True, id="other epoch"),
        pytest.param(4, (5, "e"), (1, "e"), [], False, id="top publication missing"),
    ],
)
def test_cache_recovered_table(
    latest: int | None,
    top: tuple[int, str],
    since: tuple[int, str],
    sent: list[int],
    recovered: bool,
) -> None:
    pub = None if latest is None else _pub(latest)
    pubs, outcome = _cache_recovered(pub, pub, StreamPosition(*top), *since)
    assert [p.offset for p in pubs] == sent
    assert outcome is recovered
