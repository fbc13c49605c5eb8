"""The server HTTP API under a live uvicorn, driven by ``cent`` 5.2.0 and raw HTTP.

* ``cent.Client`` (requests) and ``cent.AsyncClient`` (aiohttp) call every OSS method,
  batch included, and get cent's own exceptions for 401 and API errors.
* What the API does reaches real connections: a raw JSON-protocol WebSocket client sees
  the publication, the server-side subscribe/unsubscribe pushes and the disconnect.
* The legacy ``POST /api`` endpoint and bad input with raw HTTP (httpx).
* ``serve`` with ``http_server.internal_port``: API and metrics on their own listener.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import httpx
import pytest
import websockets
from cent import (
    AsyncClient,
    BatchRequest,
    BroadcastRequest,
    ChannelsRequest,
    Client,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
    StreamPosition,
    SubscribeRequest,
    UnsubscribeRequest,
)
from cent.dto import BoolValue, ChannelOptionsOverride
from cent.exceptions import CentApiResponseError, CentTransportError, CentUnauthorizedError
from websockets.asyncio.client import ClientConnection

from centrifuge_asgi.node import Node
from tests.interop.serve_process import free_port

from .support import WS_PATH, make_config, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory

pytestmark = pytest.mark.interop

KEY = "interop-api-key"
TIMEOUT = 5.0


@dataclass
class Api:
    srv: LiveServer
    node: Node

    @property
    def url(self) -> str:
        return self.srv.url("/api")


@pytest.fixture
def api(live_server: LiveServerFactory) -> Api:
    cfg = make_config()
    cfg["http_api"] = {"key": KEY}
    node = Node(cfg)
    return Api(live_server(node.asgi_app()), node)


# --------------------------------------------------------------------------- cent (sync)


def test_cent_client_every_method(api: Api) -> None:
    with Client(api.url, KEY, timeout=TIMEOUT) as client:
        # publish: position on a history channel, {} without history, extra fields accepted
        first = client.publish(PublishRequest(channel="news:1", data={"n": 1}, tags={"t": "1"}))
        assert first.offset == 1 and first.epoch
        assert client.publish(PublishRequest(channel="chat:1", data="x")).offset == 0
        extra = PublishRequest(
            channel="news:1", data={"n": 2}, delta=True, version=0, version_epoch=""
        )
        assert client.publish(extra).offset == 2
        keyed = PublishRequest(channel="news:1", data={"n": 3}, idempotency_key="k1")
        assert client.publish(keyed).offset == client.publish(keyed).offset == 3

        # broadcast: per-channel results and errors, never raised
        out = client.broadcast(BroadcastRequest(channels=["news:2", "zzz:1"], data={"b": 1}))
        assert out.responses[0].result is not None and out.responses[0].result.offset == 1
        assert out.responses[1].error is not None and out.responses[1].error.code == 102

        # history with since / reverse, then history_remove keeps the position
        hist = client.history(HistoryRequest(channel="news:1", limit=-1))
        assert [p.data for p in hist.publications] == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert hist.publications[0].tags == {"t": "1"} and hist.offset == 3
        since = StreamPosition(offset=1, epoch=hist.epoch)
        later = client.history(HistoryRequest(channel="news:1", limit=10, since=since))
        assert [p.offset for p in later.publications] == [2, 3]
        newest = client.history(HistoryRequest(channel="news:1", limit=1, reverse=True))
        assert [p.offset for p in newest.publications] == [3]
        client.history_remove(HistoryRemoveRequest(channel="news:1"))
        after = client.history(HistoryRequest(channel="news:1", limit=-1))
        assert after.publications == [] and (after.offset, after.epoch) == (3, hist.epoch)

        # presence, channels, info on an idle node
        assert client.presence(PresenceRequest(channel="chat:1")).presence == {}
        stats = client.presence_stats(PresenceStatsRequest(channel="chat:1"))
        assert (stats.num_clients, stats.num_users) == (0, 0)
        assert client.channels(ChannelsRequest()).channels == {}
        info = client.info(InfoRequest())
        assert info.nodes[0].uid == api.node.node_id and info.nodes[0].num_clients == 0

        # connection management with nobody connected still succeeds
        client.subscribe(SubscribeRequest(user="u", channel="chat:1", info={"i": 1}))
        client.unsubscribe(UnsubscribeRequest(user="u", channel="chat:1"))
        client.refresh(RefreshRequest(user="u", expire_at=int(time.time()) + 60))
        client.disconnect(DisconnectRequest(user="u"))

        # batch, sequential and parallel; results come back typed in order
        for parallel in (False, True):
            batch = client.batch(
                BatchRequest(
                    requests=[
                        PublishRequest(channel="news:b", data=1),
                        PresenceStatsRequest(channel="chat:1"),
                        InfoRequest(),
                    ],
                    parallel=parallel,
                )
            )
            pub, pstats, binfo = batch.replies
            assert pub.offset >= 1  # type: ignore[attr-defined]
            assert pstats.num_clients == 0  # type: ignore[attr-defined]
            assert binfo.nodes[0].uid == api.node.node_id  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (PublishRequest(channel="zzz:1", data=1), 102),
        (PublishRequest(channel="", data=1), 107),
        (PresenceRequest(channel="news:1"), None),
        (PresenceRequest(channel="tiny:1"), 108),
        (HistoryRequest(channel="chat:1"), 108),
        (HistoryRequest(channel="news:1", since=StreamPosition(offset=0, epoch="x")), 112),
        (SubscribeRequest(user="u", channel="zzz:1"), 102),
    ],
)
def test_cent_api_errors(api: Api, request_: Any, code: int | None) -> None:
    with Client(api.url, KEY, timeout=TIMEOUT) as client:
        send = getattr(client, request_.api_method)
        if code is None:
            send(request_)
            return
        with pytest.raises(CentApiResponseError) as err:
            send(request_)
        assert err.value.code == code and err.value.message


def test_cent_auth_and_transport_errors(api: Api) -> None:
    for key in ("wrong", ""):
        with Client(api.url, key, timeout=TIMEOUT) as client, pytest.raises(CentUnauthorizedError):
            client.info(InfoRequest())
    # a base URL with a trailing slash (cent posts to //info) still works
    with Client(api.url + "/", KEY, timeout=TIMEOUT) as client:
        assert client.info(InfoRequest()).nodes
    # a PRO-only method is not served: 404, which cent reports as a transport error
    from cent import ConnectionsRequest

    with Client(api.url, KEY, timeout=TIMEOUT) as client, pytest.raises(CentTransportError) as err:
        client.connections(ConnectionsRequest(user="u", expression=""))
    assert err.value.status_code == 404


# ------------------------------------------------------------ API → live connections


class Raw:
    """A raw JSON-protocol WebSocket client (no SDK logic)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = 0
        self.pending: list[dict[str, Any]] = []

    async def send(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.ids += 1
        cmd_id = self.ids
        await self.ws.send(json.dumps({"id": cmd_id, method: params}))
        return await self.next(lambda m: m.get("id") == cmd_id)

    async def next(self, match: Any) -> dict[str, Any]:
        with anyio.fail_after(TIMEOUT):
            while True:
                while self.pending:
                    msg = self.pending.pop(0)
                    if match(msg):
                        return msg
                frame = await self.ws.recv()
                assert isinstance(frame, str)
                self.pending.extend(json.loads(line) for line in frame.split("\n") if line)

    async def push(self, kind: str) -> dict[str, Any]:
        msg = await self.next(lambda m: kind in m.get("push", {}))
        return dict(msg["push"])


@contextlib.asynccontextmanager
async def raw_client(srv: LiveServer, user: str) -> AsyncIterator[Raw]:
    async with websockets.connect(
        srv.ws_url(WS_PATH), open_timeout=TIMEOUT, close_timeout=1, ping_interval=None
    ) as ws:
        raw = Raw(ws)
        reply = await raw.send("connect", {"token": token(user)})
        assert "connect" in reply, reply
        yield raw


@pytest.mark.anyio
async def test_async_cent_drives_live_connections(api: Api) -> None:
    async with (
        AsyncClient(api.url, KEY, timeout=TIMEOUT) as client,
        raw_client(api.srv, "42") as ws,
    ):
        assert "subscribe" in await ws.send("subscribe", {"channel": "chat:room"})

        # publish via the API reaches the subscriber, tags included
        await client.publish(PublishRequest(channel="chat:room", data={"hi": 1}, tags={"a": "b"}))
        push = await ws.push("pub")
        assert push["channel"] == "chat:room"
        assert push["pub"]["data"] == {"hi": 1} and push["pub"]["tags"] == {"a": "b"}
        out = await client.broadcast(BroadcastRequest(channels=["chat:room", "news:x"], data=2))
        assert all(r.error is None for r in out.responses)
        assert (await ws.push("pub"))["pub"]["data"] == 2

        # the connection shows up in presence, channels and info
        presence = await client.presence(PresenceRequest(channel="chat:room"))
        (entry,) = presence.presence.values()
        assert entry.user == "42" and entry.client
        channels = await client.channels(ChannelsRequest(pattern="chat:*"))
        assert channels.channels["chat:room"].num_clients == 1
        assert (await client.info(InfoRequest())).nodes[0].num_clients == 1

        # server-side subscribe and unsubscribe arrive as pushes
        await client.subscribe(SubscribeRequest(user="42", channel="news:srv"))
        assert (await ws.push("subscribe"))["channel"] == "news:srv"
        await client.unsubscribe(UnsubscribeRequest(user="42", channel="news:srv"))
        assert (await ws.push("unsubscribe"))["channel"] == "news:srv"

        # disconnect with the default code: 3503 "force disconnect" (terminal)
        await client.disconnect(DisconnectRequest(user="42"))
        with anyio.fail_after(TIMEOUT), pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (3503, "force disconnect")


@pytest.mark.anyio
async def test_async_cent_errors(api: Api) -> None:
    async with AsyncClient(api.url, KEY, timeout=TIMEOUT) as client:
        with pytest.raises(CentApiResponseError) as err:
            await client.publish(PublishRequest(channel="zzz:1", data=1))
        assert (err.value.code, err.value.message) == (102, "unknown channel")
    async with AsyncClient(api.url, "nope", timeout=TIMEOUT) as client:
        with pytest.raises(CentUnauthorizedError):
            await client.info(InfoRequest())


# --------------------------------------------------------------- raw HTTP: legacy + bad input


def test_legacy_endpoint_raw_http(api: Api) -> None:
    commands = [
        {"id": 1, "method": "publish", "params": {"channel": "news:l", "data": {"x": 1}}},
        {"id": 2, "method": "history", "params": {"channel": "news:l", "limit": -1}},
        {"id": 3, "method": 9, "params": {}},
        {"id": 4, "method": "nope", "params": {}},
        {"id": 5, "method": "presence", "params": {"channel": 7}},
    ]
    body = "\n".join(json.dumps(c) for c in commands)
    with httpx.Client(timeout=TIMEOUT) as http:
        for headers, query in (
            ({"Authorization": f"apikey {KEY}"}, ""),
            ({"X-API-Key": KEY}, ""),
            ({}, f"?api_key={KEY}"),
        ):
            r = http.post(api.url + query, content=body, headers=headers)
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            replies = [json.loads(line) for line in r.text.split("\n")]
            assert [x.get("id") for x in replies] == [1, 2, 3, 4, 5]
            assert replies[0]["result"]["offset"] >= 1
            assert replies[1]["result"]["publications"][0]["data"] == {"x": 1}
            assert replies[2]["result"]["nodes"][0]["uid"] == api.node.node_id
            assert replies[3]["error"] == {"code": 104, "message": "not found"}
            assert replies[4]["error"] == {"code": 107, "message": "bad request"}
        assert http.post(api.url, content=body).status_code == 401
        assert http.post(api.url, content=b"", headers={"X-API-Key": KEY}).status_code == 400
        assert http.post(api.url, content=b"{oops", headers={"X-API-Key": KEY}).status_code == 400


def test_bad_input_over_the_wire(api: Api) -> None:
    auth = {"X-API-Key": KEY}
    with httpx.Client(timeout=TIMEOUT) as http:
        cases = [
            (http.post(api.url + "/publish", content=b"{", headers=auth), 400, b"Bad Request"),
            (http.post(api.url + "/history", json={"limit": "x"}, headers=auth), 400, None),
            (http.post(api.url + "/nope", json={}, headers=auth), 404, None),
            (http.get(api.url + "/publish", headers=auth), 405, b""),
            (http.post(api.url + "/info", json={}), 401, b""),
            (
                http.post(api.url + "/publish", content=b" " * (2 << 20), headers=auth),
                413,
                None,
            ),
        ]
        for r, status, body in cases:
            assert r.status_code == status, (r.request.url, r.status_code)
            if body is not None:
                assert r.content == body
            assert b"Traceback" not in r.content
        # still healthy afterwards
        r = http.post(api.url + "/publish", json={"channel": "chat:1", "data": 1}, headers=auth)
        assert r.json() == {"result": {}}


# ------------------------------------------------------------------ CLI: internal port


@pytest.fixture
def split_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """``serve`` with ``http_server.internal_port`` and JSON logs: (process, port, internal)."""
    port, internal = free_port(), free_port()
    config = {
        "client": {"token": {"hmac_secret_key": "split-secret"}},
        "http_server": {"internal_port": str(internal)},
        "http_api": {"key": KEY},
        "health": {"enabled": True},
        "prometheus": {"enabled": True},
        "log": {"json": True},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "centrifuge_asgi", "serve", "-c", str(path)]
    cmd += ["-a", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{internal}/health", timeout=1)
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(f"serve did not start:\n{proc.communicate()[1]}") from None
                time.sleep(0.1)
        yield proc, port, internal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.anyio
async def test_serve_with_internal_port(
    split_server: tuple[subprocess.Popen[str], int, int],
) -> None:
    from centrifuge_asgi import connection_token

    proc, port, internal = split_server
    main_url, internal_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{internal}"
    url = f"ws://127.0.0.1:{port}{WS_PATH}"
    async with websockets.connect(url, open_timeout=TIMEOUT, ping_interval=None) as ws:
        connect = {"id": 1, "connect": {"token": connection_token("7", "split-secret")}}
        await ws.send(json.dumps(connect))
        with anyio.fail_after(TIMEOUT):
            assert "connect" in json.loads(await ws.recv())
        async with AsyncClient(internal_url + "/api", KEY, timeout=TIMEOUT) as client:
            info = await client.info(InfoRequest())
            assert info.nodes[0].num_clients == 1
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            # the internal endpoints are not on the main port, and vice versa
            assert (await http.post(main_url + "/api/info", json={})).status_code == 404
            assert (await http.get(main_url + "/metrics")).status_code == 404
            assert (await http.get(main_url + "/health")).status_code == 404
            assert (await http.get(internal_url + "/metrics")).status_code == 200
            assert (await http.get(internal_url + WS_PATH)).status_code == 404

        # SIGTERM stops both listeners; the client first gets 3001 "shutdown"
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(10), pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 3001
    assert await anyio.to_thread.run_sync(proc.wait, 10) == 0
    stderr = proc.communicate()[1]
    assert "Traceback" not in stderr
    records = [json.loads(line) for line in stderr.splitlines()]  # log.json: all JSON
    disconnect = next(r for r in records if r["msg"].startswith("disconnect "))
    assert (disconnect["user"], disconnect["code"], disconnect["reason"]) == ("7", 3001, "shutdown")
    assert disconnect["client"] and disconnect["level"] == "info"


@pytest.mark.anyio
async def test_api_subscribe_with_data_override_and_recovery(api: Api) -> None:
    async with (
        AsyncClient(api.url, KEY, timeout=TIMEOUT) as client,
        raw_client(api.srv, "7") as ws,
    ):
        for n in (1, 2, 3):
            await client.publish(PublishRequest(channel="news:subrec", data={"n": n}))
        top = await client.history(HistoryRequest(channel="news:subrec", limit=0))
        await client.subscribe(
            SubscribeRequest(
                user="7",
                channel="news:subrec",
                data={"hello": "7"},
                recover_since=StreamPosition(offset=1, epoch=top.epoch),
            )
        )
        push = await ws.push("subscribe")
        sub = push["subscribe"]
        assert sub["data"] == {"hello": "7"} and sub["recoverable"] and sub["epoch"] == top.epoch
        assert sub["offset"] == 1  # the position recovered from; the missed ones follow
        missed = [(await ws.push("pub"))["pub"] for _ in range(2)]
        assert [(p["offset"], p["data"]) for p in missed] == [(2, {"n": 2}), (3, {"n": 3})]

        # override: presence switched off for this subscription only
        await client.subscribe(
            SubscribeRequest(
                user="7",
                channel="chat:quiet",
                override=ChannelOptionsOverride(presence=BoolValue(value=False)),
            )
        )
        assert (await ws.push("subscribe"))["channel"] == "chat:quiet"
        stats = await client.presence_stats(PresenceStatsRequest(channel="chat:quiet"))
        assert (stats.num_clients, stats.num_users) == (0, 0)
