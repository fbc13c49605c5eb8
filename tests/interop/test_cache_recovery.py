"""Cache recovery (``force_recovery_mode: cache``, ``auto_cache_recover``) with the official
SDKs: a (re)subscribing client gets the channel's latest publication, not a replay."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from centrifuge_asgi.handlers import RPCEvent
from centrifuge_asgi.node import Node
from tests.unit.test_cache_recovery import cache_config  # namespaces cache, auto (and ctags)

from .support import WS_PATH, token
from .test_python_sdk import ClientFactory, Env, ReconnectHook, sdk_client, server, subscribe
from .test_unidirectional import KINDS, open_uni

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory, RunJs

pytestmark = pytest.mark.interop

__all__ = ["sdk_client", "server"]  # fixtures of test_python_sdk, used here


def cache_node() -> Node:
    node = Node(cache_config())

    async def publish(channels: list[str], items: list[Any]) -> None:
        for channel in channels:
            for item in items:
                await node.publish(channel, item)

    @node.on_rpc("publish")
    async def rpc_publish(event: RPCEvent) -> Any:
        await publish([event.data["channel"]], event.data["items"])
        return {}

    @node.on_rpc("drop_and_publish")
    async def rpc_drop_and_publish(event: RPCEvent) -> Any:
        await node.disconnect(event.client.user, code=3011, reason="force reconnect")
        await publish(event.data["channels"], event.data["items"])
        return {}

    return node


def serve(live_server: LiveServerFactory) -> LiveServer:
    return live_server(cache_node().asgi_app())


def test_js_gets_the_latest_publication_on_subscribe_and_after_reconnect(
    live_server: LiveServerFactory, run_js: RunJs
) -> None:
    srv = serve(live_server)
    url = srv.ws_url(WS_PATH)
    result = run_js("sdk_cache_recovery.mjs", url, token("u1"), "cache:now", "auto:now", timeout=20)
    recovered = {"subscribed": {"wasRecovering": True, "recovered": True}}
    expected = [
        recovered,
        {"pub": 3, "n": 3},
        recovered,
        {"pub": 6, "n": 6},
        {"pub": 7, "n": 7},
    ]
    assert result == {"cache:now": expected, "auto:now": expected}


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_unidirectional_server_side_subscription_gets_the_latest(
    live_server: LiveServerFactory, kind: str
) -> None:
    """auto_cache_recover (Centrifugo v6.8.3): a unidirectional client that only sends a
    token naming its channels gets the latest publication of each in its Connect push."""
    cfg = cache_config()
    cfg[kind] = {"enabled": True}
    node = Node(cfg)
    srv = live_server(node.asgi_app())
    for n in range(1, 4):
        await srv.acall(node.publish("auto:uni", {"n": n}))
        await srv.acall(node.publish("cache:uni", {"n": n}))
    request = {"token": token("u1", channels=["auto:uni", "cache:uni"])}
    async with open_uni(srv, kind, request) as reader:
        subs = ((await reader.next()) or {})["connect"]["subs"]
        auto, plain = subs["auto:uni"], subs["cache:uni"]
        assert auto["recovered"] is True and auto["was_recovering"] is True
        assert [(p["offset"], p["data"]) for p in auto["publications"]] == [(3, {"n": 3})]
        assert "publications" not in plain and plain["offset"] == 3
        await srv.acall(node.publish("auto:uni", {"n": 4}))
        pub = await reader.until(lambda p: "pub" in p)
        assert pub["channel"] == "auto:uni" and pub["pub"]["offset"] == 4


@pytest.mark.anyio
async def test_python_sdk_resubscribes_to_the_latest_publication_only(
    server: Callable[..., Env], sdk_client: ClientFactory
) -> None:
    env = server(cache_node())

    async def publish_while_away(ctx: Any) -> None:
        if ctx.code == 3011:  # the SDK awaits this before it reconnects: 3, 4, 5 are missed
            for n in (3, 4, 5):
                await env.srv.acall(env.node.publish("cache:py", {"n": n}))

    for n in (1, 2, 3):
        await env.srv.acall(env.node.publish("auto:py", {"n": n}))
    client, _ = await sdk_client(
        env,
        token=token("alice"),
        events=ReconnectHook(publish_while_away),
        min_reconnect_delay=0.05,
    )
    _, auto = await subscribe(client, "auto:py")
    [first] = await auto.rec.wait("subscribed")
    assert (first.was_recovering, first.recovered) == (True, True)
    await auto.rec.wait("publication")
    assert auto.data() == [{"n": 3}]

    _, cache = await subscribe(client, "cache:py")
    for n in (1, 2):
        await env.srv.acall(env.node.publish("cache:py", {"n": n}))
    await cache.rec.wait("publication", 2)
    await env.srv.acall(env.node.disconnect("alice", code=3011, reason="force reconnect"))
    first, second = await cache.rec.wait("subscribed", 2)
    assert (first.was_recovering, first.recovered) == (False, False)
    assert (second.was_recovering, second.recovered) == (True, True)
    await cache.rec.wait("publication", 3)
    await env.srv.acall(env.node.publish("cache:py", {"n": 6}))
    await cache.rec.wait("publication", 4)
    assert cache.data() == [{"n": 1}, {"n": 2}, {"n": 5}, {"n": 6}]
    assert cache.offsets() == [1, 2, 5, 6]
