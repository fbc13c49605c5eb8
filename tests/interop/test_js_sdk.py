"""Protocol features proven with the official centrifuge-js 5.7.4 SDK (Node 20 + ws).

Each test serves a fresh node under uvicorn and runs one ``tests/js/scenarios/sdk_*.mjs``.
Scenarios reach back into the server through RPC handlers registered by :func:`serve` that
call the in-process API (publish, disconnect, subscribe, unsubscribe), which lets a scenario
sequence server actions precisely.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from centrifuge_asgi.auth import connection_token
from centrifuge_asgi.handlers import MessageEvent, RPCEvent
from centrifuge_asgi.node import Node

from .support import (
    TAGS_FILTER_RESULT,
    WS_PATH,
    add_tagged_publish_rpcs,
    make_config,
    make_node,
    recovery_events,
    sub_token,
    token,
)

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory, RunJs

pytestmark = pytest.mark.interop


def serve(live_server: LiveServerFactory, node: Node | None = None) -> tuple[Node, LiveServer]:
    """Start ``node`` (default: the standard one) with the scenario helper RPCs."""
    node = node or make_node()

    @node.on_rpc("sum")
    async def rpc_sum(event: RPCEvent) -> Any:
        return {"sum": event.data["a"] + event.data["b"]}

    @node.on_rpc("publish")
    async def rpc_publish(event: RPCEvent) -> Any:
        for item in event.data["items"]:
            await node.publish(event.data["channel"], item)
        return {}

    @node.on_rpc("drop_and_publish")
    async def rpc_drop_and_publish(event: RPCEvent) -> Any:
        await node.disconnect(event.client.user, code=3011, reason="force reconnect")
        return await rpc_publish(event)

    @node.on_rpc("disconnect")
    async def rpc_disconnect(event: RPCEvent) -> Any:
        await node.disconnect(event.client.user)
        return {}

    @node.on_rpc("subscribe")
    async def rpc_subscribe(event: RPCEvent) -> Any:
        await node.subscribe(event.client.user, event.data["channel"])
        return {}

    @node.on_rpc("unsubscribe")
    async def rpc_unsubscribe(event: RPCEvent) -> Any:
        await node.unsubscribe(event.client.user, event.data["channel"])
        return {}

    return node, live_server(node.asgi_app())


def ws(srv: LiveServer) -> str:
    return srv.ws_url(WS_PATH)


# ------------------------------------------------------------------------- connect / tokens


def test_connect_valid_token(live_server: LiveServerFactory, run_js: RunJs) -> None:
    _, srv = serve(live_server)
    result = run_js("sdk_connect.mjs", "valid", ws(srv), token("u1"), timeout=10)
    assert isinstance(result["client"], str)
    assert len(result["client"]) > 0
    assert result["transport"] == "websocket"
    assert result["errors"] == []


def test_connect_forged_token_is_terminal(live_server: LiveServerFactory, run_js: RunJs) -> None:
    _, srv = serve(live_server)
    forged = connection_token("u1", "not-the-secret")
    result = run_js("sdk_connect.mjs", "bad", ws(srv), forged, timeout=10)
    assert result == {
        "state": "disconnected",
        "code": 3500,
        "reason": "invalid token",
        "connectingAfter": 0,
    }


def test_connect_expired_token_refreshed_by_get_token(
    live_server: LiveServerFactory, run_js: RunJs
) -> None:
    _, srv = serve(live_server)
    result = run_js(
        "sdk_connect.mjs", "expired", ws(srv), token("u1", ttl=-60), token("u1"), timeout=10
    )
    assert result["getTokenCalls"] == 1
    assert result["errors"] == [{"type": "connect", "code": 109}]
    assert result["client"]


def test_connection_refresh_keeps_connection(live_server: LiveServerFactory, run_js: RunJs) -> None:
    _, srv = serve(live_server, make_node(make_config(expired_close_delay="1s")))
    result = run_js(
        "sdk_connect.mjs", "refresh", ws(srv), token("u1", ttl=3), token("u1"), timeout=12
    )
    assert result["getTokenCalls"] == 1
    assert result["state"] == "connected"
    assert result["connectingAfterConnect"] == 0
    assert result["disconnects"] == 0
    assert result["rpc"] == {"sum": 3}


def test_connection_refresh_with_other_user_token(
    live_server: LiveServerFactory, run_js: RunJs
) -> None:
    _, srv = serve(live_server, make_node(make_config(expired_close_delay="1s")))
    result = run_js(
        "sdk_connect.mjs", "refresh_other", ws(srv), token("u1", ttl=2), token("u2"), timeout=12
    )
    assert result["getTokenCalls"] == 1
    assert (result["state"], result["code"], result["reason"]) == (
        "disconnected",
        3500,
        "invalid token",
    )


# ------------------------------------------------------------------------ channel features


def test_publish_subscribe_unsubscribe(live_server: LiveServerFactory, run_js: RunJs) -> None:
    _, srv = serve(live_server)
    result = run_js("sdk_pubsub.mjs", ws(srv), token("u1"), token("u2"), "chat:room", timeout=15)
    expected = {
        "channel": "chat:room",
        "data": {"text": "hi"},
        "user": "u1",
        "client": result["id1"],
    }
    assert result["own"] == expected
    assert result["other"] == expected
    assert result["publishReply"] == {}
    assert result["unsubscribed"] == {
        "code": 0,
        "reason": "unsubscribe called",
        "state": "unsubscribed",
    }
    assert result["statsAfterUnsubscribe"] == {"numClients": 1, "numUsers": 1}
    assert result["received2"] == [{"text": "hi"}]


def test_presence_and_history(live_server: LiveServerFactory, run_js: RunJs) -> None:
    node, srv = serve(live_server)
    for n in (1, 2, 3):
        srv.call(node.publish("news:hist", {"n": n}))
    result = run_js(
        "sdk_presence_history.mjs",
        ws(srv),
        token("u1"),
        token("u2"),
        "chat:pres",
        "news:hist",
        timeout=15,
    )
    id1, id2 = result["ids"]
    assert result["presence"] == {
        id1: {"user": "u1", "client": id1},
        id2: {"user": "u2", "client": id2},
    }
    assert result["stats"] == {"numClients": 2, "numUsers": 2}
    epoch = result["streamPosition"]["epoch"]
    assert epoch
    assert result["streamPosition"] == {"offset": 3, "epoch": epoch}
    assert result["forward"] == {
        "publications": [{"offset": 1, "data": {"n": 1}}, {"offset": 2, "data": {"n": 2}}],
        "offset": 3,
        "epoch": epoch,
    }
    assert result["reverse"] == {
        "publications": [{"offset": 3, "data": {"n": 3}}, {"offset": 2, "data": {"n": 2}}],
        "offset": 3,
        "epoch": epoch,
    }


def test_join_leave(live_server: LiveServerFactory, run_js: RunJs) -> None:
    _, srv = serve(live_server)
    result = run_js("sdk_join_leave.mjs", ws(srv), token("u1"), token("u2"), "chat:jl", timeout=15)
    id1, id2 = result["ids"]
    assert result["joins"] == [{"user": "u1", "client": id1}, {"user": "u2", "client": id2}]
    assert result["leaves"] == [{"user": "u2", "client": id2}]


@pytest.mark.parametrize(
    ("channel", "missed", "recovered"),
    [("news:rec", 3, True), ("tiny:rec", 4, False)],
    ids=["recovered", "trimmed"],
)
def test_recovery_after_reconnect(
    live_server: LiveServerFactory, run_js: RunJs, channel: str, missed: int, recovered: bool
) -> None:
    _, srv = serve(live_server)
    result = run_js("sdk_recovery.mjs", ws(srv), token("u1"), channel, str(missed), timeout=15)
    assert result["connecting"] == {"code": 3011, "reason": "force reconnect"}
    assert result["events"] == recovery_events(missed, recovered)


# ---------------------------------------------------------------------------- permissions


def test_subscription_token_and_private_channel(
    live_server: LiveServerFactory, run_js: RunJs
) -> None:
    _, srv = serve(live_server)
    result = run_js(
        "sdk_sub_auth.mjs",
        ws(srv),
        token("u1"),
        "secret:doc",
        sub_token("u1", "secret:doc"),
        "$chat:priv",
        timeout=15,
    )
    assert result == {
        "plain": {"code": 103, "reason": "permission denied"},
        "withToken": {"state": "subscribed", "getTokenCalls": ["secret:doc"]},
        "private": {"code": 103, "reason": "permission denied"},
    }


def test_user_limited_channel(live_server: LiveServerFactory, run_js: RunJs) -> None:
    _, srv = serve(live_server)
    result = run_js(
        "sdk_user_limited.mjs", ws(srv), token("u1"), token("u3"), "dm:#u1,u2", timeout=10
    )
    assert result == {
        "allowed": "subscribed",
        "denied": {"code": 103, "reason": "permission denied"},
    }


# ------------------------------------------------------------------- server-side features


def test_server_side_subscriptions(live_server: LiveServerFactory, run_js: RunJs) -> None:
    _, srv = serve(live_server)
    tok = token("u1", channels=["news:ss"])
    result = run_js("sdk_server_subs.mjs", ws(srv), tok, "news:ss", "news:srv", timeout=15)
    assert result == {
        "subscribed": [
            {"channel": "news:ss", "recoverable": True},
            {"channel": "news:srv", "recoverable": True},
        ],
        "publications": [
            {"channel": "news:ss", "data": {"n": 1}, "offset": 1},
            {"channel": "news:srv", "data": {"n": 2}, "offset": 1},
        ],
    }


def test_rpc(live_server: LiveServerFactory, run_js: RunJs) -> None:
    _, srv = serve(live_server)
    result = run_js("sdk_rpc.mjs", ws(srv), token("u1"), timeout=10)
    assert result == {"sum": {"sum": 5}, "unknown": {"code": 104, "message": "method not found"}}


def test_server_disconnect(live_server: LiveServerFactory, run_js: RunJs) -> None:
    _, srv = serve(live_server)
    result = run_js("sdk_server_actions.mjs", "disconnect", ws(srv), token("u1"), timeout=10)
    assert result == {
        "code": 3503,
        "reason": "force disconnect",
        "state": "disconnected",
        "connectingAfter": 0,
    }


def test_server_unsubscribe(live_server: LiveServerFactory, run_js: RunJs) -> None:
    _, srv = serve(live_server)
    result = run_js(
        "sdk_server_actions.mjs", "unsubscribe", ws(srv), token("u1"), "chat:kick", timeout=10
    )
    assert result == {
        "code": 2000,
        "reason": "server unsubscribe",
        "state": "unsubscribed",
        "subscribingAfter": 0,
        "clientState": "connected",
    }


def test_send_and_message_push(live_server: LiveServerFactory, run_js: RunJs) -> None:
    node = make_node()

    @node.on_message
    async def echo(event: MessageEvent) -> None:
        await node.send(event.client.user, {"echo": event.data, "to": event.client.user})

    _, srv = serve(live_server, node)
    result = run_js("sdk_messages.mjs", ws(srv), token("u1"), timeout=10)
    assert result == {"data": {"echo": {"ping": "hello"}, "to": "u1"}}


# ------------------------------------------------------------------------------ tags filter


def test_js_tags_filter_live_recovery_and_refusals(
    live_server: LiveServerFactory, run_js: RunJs
) -> None:
    node = make_node()
    add_tagged_publish_rpcs(node)
    _, srv = serve(live_server, node)
    result = run_js("sdk_tags_filter.mjs", ws(srv), token("u1"), token("u2"), "json", timeout=20)
    assert result == TAGS_FILTER_RESULT
