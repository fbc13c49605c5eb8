"""``client.connection_rate_limit``: new connections past the token bucket are refused with
HTTP 503 at the handshake, on every connection endpoint, as Centrifugo's middleware does;
clients below the limit and requests that are not new connections are not affected."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest

from centrifuge_asgi.node import Node
from centrifuge_asgi.token_bucket import TokenBucket

from .support import WS_PATH, eventually, token
from .test_bad_input import (
    ACCEPTED,
    ENDPOINTS,
    TIMEOUT,
    Env,
    ServerFactory,
    _every_transport,
    _open_status,
    server,
)

if TYPE_CHECKING:
    from conftest import LiveServerFactory, RunJs

pytestmark = pytest.mark.interop

__all__ = ["server"]  # the fixture, imported for this module's tests


class FrozenClock:
    """Time stands still unless a test moves it: refills happen only when asked."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def freeze(env: Env, limit: int) -> FrozenClock:
    """Swap the node's limiter for one of the same shape on a frozen clock."""
    configured = env.node.connection_rate
    assert configured is not None and (configured.capacity, configured.refill) == (limit, 1.0)
    clock = FrozenClock()
    env.node.connection_rate = TokenBucket(limit, 1.0, clock)
    return clock


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ENDPOINTS)
async def test_past_the_burst_the_handshake_is_503(server: ServerFactory, kind: str) -> None:
    env = server(config=_every_transport(connection_rate_limit=2))
    clock = freeze(env, 2)
    assert await _open_status(env, kind, None) == ACCEPTED[kind]
    assert await _open_status(env, kind, None) == ACCEPTED[kind]
    assert await _open_status(env, kind, None) == 503
    assert await _open_status(env, kind, None) == 503
    clock.now += 1.0  # one token back
    assert await _open_status(env, kind, None) == ACCEPTED[kind]
    assert await _open_status(env, kind, None) == 503
    await eventually(env.num_clients, 0)


@pytest.mark.anyio
async def test_the_limit_is_per_node_across_transports(server: ServerFactory) -> None:
    env = server(config=_every_transport(connection_rate_limit=len(ENDPOINTS)))
    freeze(env, len(ENDPOINTS))
    for kind in ENDPOINTS:
        assert await _open_status(env, kind, None) == ACCEPTED[kind]
    for kind in ENDPOINTS:
        assert await _open_status(env, kind, None) == 503


@pytest.mark.anyio
async def test_below_the_limit_every_client_connects(server: ServerFactory) -> None:
    """The real clock: a burst up to the limit is never refused."""
    env = server(config=_every_transport(connection_rate_limit=20))
    for kind in ENDPOINTS * 3:
        assert await _open_status(env, kind, None) == ACCEPTED[kind]
    await eventually(env.num_clients, 0)


@pytest.mark.anyio
async def test_other_requests_take_no_token(server: ServerFactory) -> None:
    """Emulation, the server API and health are no new connections."""
    cfg = _every_transport(connection_rate_limit=1)
    cfg["http_api"] = {"insecure": True}
    env = server(config=cfg)
    freeze(env, 1)
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for _ in range(3):
            api = await http.post(env.srv.url("/api/info"), content=b"{}")
            assert api.status_code == 200
            emulation = await http.post(
                env.srv.url("/emulation"), content=json.dumps({"session": "x", "node": "y"})
            )
            assert emulation.status_code != 503
    assert await _open_status(env, "websocket", None) == 101
    assert await _open_status(env, "websocket", None) == 503


@pytest.mark.anyio
async def test_without_a_limit_nothing_is_refused(server: ServerFactory) -> None:
    env = server(config=_every_transport())
    assert env.node.connection_rate is None
    for _ in range(5):
        assert await _open_status(env, "uni_http_stream", None) == 200


def test_js_client_refused_by_the_limit_connects_after_a_refill(
    live_server: LiveServerFactory, run_js: RunJs
) -> None:
    """One token, refilled every 2 s here (Centrifugo's bucket refills every second): the
    second client's first handshakes get 503, centrifuge-js retries, and gets in."""
    node = Node(_every_transport(connection_rate_limit=1))
    node.connection_rate = TokenBucket(1, 0.5)
    srv = live_server(node.asgi_app())
    result = run_js("sdk_connection_rate_limit.mjs", srv.ws_url(WS_PATH), token("u1"), timeout=15)
    assert result["first"] == result["second"] == "connected"
    assert result["errors"] and set(result["errors"]) == {"transport"}
    assert result["waitedMs"] >= 1000
