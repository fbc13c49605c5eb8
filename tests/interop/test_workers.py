"""``serve --workers N`` and ``uvicorn app:app --workers N``: one port, N processes, one
cluster over the shared Redis at 127.0.0.1:6379 (a unique prefix per test), driven by
the official centrifuge-python SDK.

Real processes on loopback: the supervisor, its workers and uvicorn's own supervisor.
Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from centrifuge import Client, Subscription

from centrifuge_asgi.auth import connection_token
from tests import conditions
from tests.unit.test_redis_engine import require_main_redis, unique_prefix

from .serve_process import CLI, Served, ServeProcesses, free_port, terminate
from .test_python_sdk import ClientEvents, SubEvents

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

SECRET = "workers-secret"
API_KEY = "workers-api-key"
WAIT = 15.0
OPEN = {
    "allow_subscribe_for_client": True,
    "allow_publish_for_subscriber": True,
    "allow_presence_for_subscriber": True,
    "allow_history_for_subscriber": True,
}


def cluster_config(prefix: str, **http_server: Any) -> dict[str, Any]:
    """Redis engine under ``prefix``; ``room``: presence, and history for recovery."""
    return {
        "client": {"token": {"hmac_secret_key": SECRET}, "allowed_origins": ["*"]},
        "http_api": {"key": API_KEY},
        "health": {"enabled": True},
        "log": {"level": "warn"},  # no access log: nobody reads the pipe while it runs
        "http_server": http_server,
        "engine": {"type": "redis", "redis": {"address": "127.0.0.1:6379", "prefix": prefix}},
        "channel": {
            "namespaces": [
                {
                    "name": "room",
                    **OPEN,
                    "presence": True,
                    "history_size": 1000,
                    "history_ttl": "300s",
                    "force_recovery": True,
                }
            ]
        },
    }


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start ``serve --workers 2``; return once both workers answer (two nodes in info)."""
    processes = ServeProcesses()

    def start(config: Path, internal: int | None = None) -> Served:
        served = processes.start(config, "--workers", "2")
        port = internal or served.port
        wait_for(lambda: len(children(served.proc.pid)) == 2, "two workers")
        wait_for(lambda: nodes_seen(port) == 2, "two nodes in info")
        return served

    yield start
    processes.stop_all()


def nodes_seen(port: int) -> int:
    reply = httpx.post(
        f"http://127.0.0.1:{port}/api/info", json={}, headers={"X-API-Key": API_KEY}, timeout=2
    )
    return len(reply.json()["result"]["nodes"])


def children(pid: int) -> set[int]:
    """Pids of the live processes whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and fields[0] != "Z":
                    found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def until(predicate: Any, within: float = WAIT) -> None:
    """The shared bounded poll with the process tests' patience (``WAIT`` s, every 50 ms)."""
    await conditions.until(predicate, within, every=0.05)


def wait_for(predicate: Any, what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


async def api(port: int, method: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        reply = await http.post(
            f"http://127.0.0.1:{port}/api/{method}", json=body, headers={"X-API-Key": API_KEY}
        )
    result: dict[str, Any] = reply.json()
    assert "error" not in result, result
    return result["result"]


class Subscriber:
    """One centrifuge-python client subscribed (recoverable) to a channel."""

    def __init__(self, url: str, user: str, channel: str) -> None:
        self.events = ClientEvents()
        self.client = Client(
            url, events=self.events, token=connection_token(user, SECRET), max_reconnect_delay=0.5
        )
        self.sub_events = SubEvents()
        self.sub: Subscription = self.client.new_subscription(
            channel, events=self.sub_events, recoverable=True, positioned=True
        )

    async def start(self) -> None:
        await self.client.connect()
        await self.sub.subscribe()
        await self.sub_events.rec.wait("subscribed", within=WAIT)

    def received(self) -> list[Any]:
        return [ctx.pub.data for ctx in self.sub_events.rec.of("publication")]

    def shutdown_disconnects(self) -> int:
        return sum(
            1
            for ctx in self.events.rec.of("connecting")
            if (ctx.code, ctx.reason) == (3001, "shutdown")
        )


@contextlib.asynccontextmanager
async def subscribers(
    url: str, channel: str, count: int, spread_over: int | None = None
) -> AsyncIterator[list[Subscriber]]:
    """``count`` subscribed clients; with ``spread_over`` (an API port), more are added
    (at most :data:`MAX_CLIENTS`) until both workers hold some. The kernel gives each
    connection to whichever worker accepts first, so on a busy machine a few in a row can
    land on one worker."""
    subs: list[Subscriber] = []
    try:
        while len(subs) < count or (spread_over and not await on_both(spread_over, len(subs))):
            assert len(subs) < MAX_CLIENTS, "the clients never reached both workers"
            sub = Subscriber(url, f"user-{len(subs)}", channel)
            subs.append(sub)
            await sub.start()
        yield subs
    finally:
        for sub in subs:
            with anyio.move_on_after(5, shield=True):
                await sub.client.disconnect()


MAX_CLIENTS = 40


async def on_both(port: int, connected: int) -> bool:
    """Both workers hold clients (once ``info`` counts all ``connected`` of them)."""
    with anyio.fail_after(WAIT):
        while True:
            per_node = await clients_per_node(port)
            if sum(per_node) == connected:
                return len(per_node) == 2 and per_node[0] > 0
            await anyio.sleep(0.05)


async def clients_per_node(port: int) -> list[int]:
    nodes = (await api(port, "info", {}))["nodes"]
    return sorted(node["num_clients"] for node in nodes)


async def assert_one_cluster(port: int, subs: list[Subscriber], channel: str) -> None:
    """Both workers hold clients; a publication from the API (either worker) and from a
    client on each worker reaches everyone; presence and history agree on every worker."""

    async def all_counted() -> bool:
        return sum(await clients_per_node(port)) == len(subs)

    await until(all_counted)
    per_node = await clients_per_node(port)
    assert len(per_node) == 2 and per_node[0] > 0, f"not on both workers: {per_node}"
    expected = []
    for n in range(6):  # several requests: the kernel spreads them over the workers
        await api(port, "publish", {"channel": channel, "data": {"api": n}})
        expected.append({"api": n})
    for n, sub in enumerate(subs):  # clients sit on both workers
        await sub.sub.publish({"client": n})
        expected.append({"client": n})
    await until(lambda: all(len(sub.received()) >= len(expected) for sub in subs))
    for sub in subs:
        assert sorted(map(json.dumps, sub.received())) == sorted(map(json.dumps, expected))
    presences = [await api(port, "presence", {"channel": channel}) for _ in range(6)]
    users = {frozenset(c["user"] for c in p["presence"].values()) for p in presences}
    assert users == {frozenset(f"user-{n}" for n in range(len(subs)))}
    histories = [await api(port, "history", {"channel": channel, "limit": -1}) for _ in range(6)]
    assert len({json.dumps(h["publications"]) for h in histories}) == 1
    assert len(histories[0]["publications"]) == len(expected)


# ------------------------------------------------------------------- refusals


@pytest.mark.parametrize("form", ["flag", "file", "env"])
def test_memory_engine_with_workers_is_refused(tmp_path: Path, form: str) -> None:
    config: dict[str, Any] = {"client": {"token": {"hmac_secret_key": "k"}}}
    args, env = [], dict(os.environ)
    if form == "flag":
        args = ["--workers", "2"]
    elif form == "file":
        config["http_server"] = {"workers": 2}
    else:
        env["CENTRIFUGO_HTTP_SERVER_WORKERS"] = "2"
    path = write_config(tmp_path, config)
    port = str(free_port())
    result = subprocess.run(
        [*CLI, "serve", "-c", str(path), "-a", "127.0.0.1", "-p", port, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "http_server.workers is 2" in result.stderr, result.stderr
    assert "engine.type: redis" in result.stderr and "nats" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_reported_without_a_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path, cluster_config(unique_prefix()))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLI, "serve", "-c", str(path), "-a", "127.0.0.1", "-p", str(port), "-w", "2"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_negative_worker_count_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"http_server": {"workers": -1}})
    result = subprocess.run(
        [*CLI, "serve", "-c", str(path), "-a", "127.0.0.1", "-p", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1 and "http_server.workers" in result.stderr, result.stderr


# ----------------------------------------------------------------- one cluster


async def test_serve_workers_form_one_cluster(tmp_path: Path, serve: Any) -> None:
    require_main_redis()
    served = serve(write_config(tmp_path, cluster_config(unique_prefix())))
    async with subscribers(served.ws_url(), "room:a", 8, served.port) as subs:
        await assert_one_cluster(served.port, subs, "room:a")


@pytest.fixture
def uvicorn_workers() -> Iterator[int]:
    """``uvicorn tests.interop.workers_app:app --workers 2`` over Redis; yields its port."""
    require_main_redis()
    port = free_port()
    env = {**os.environ, "WORKERS_APP_CONFIG": json.dumps(cluster_config(unique_prefix()))}
    command = ["uvicorn", "tests.interop.workers_app:app", "--workers", "2"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(
        [sys.executable, "-m", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: health(port) == 200 and nodes_seen(port) == 2, "uvicorn workers")
        yield port
    finally:
        out = terminate(proc, 20)
    assert "Traceback" not in out, out


async def test_uvicorn_workers_form_one_cluster(uvicorn_workers: int) -> None:
    """The embedded recipe: ``uvicorn module:app --workers 2`` over Redis."""
    url = f"ws://127.0.0.1:{uvicorn_workers}/connection/websocket"
    async with subscribers(url, "room:u", 8, uvicorn_workers) as subs:
        await assert_one_cluster(uvicorn_workers, subs, "room:u")


def health(port: int) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code
    except httpx.TransportError:
        return 0


# ----------------------------------------------------------- restarts and stop


async def publish_numbers(port: int, channel: str, sent: list[int], stop: anyio.Event) -> None:
    """Publish 0, 1, 2, ... every 20 ms, as a careful API client does across a rolling
    restart: a request that a retiring worker answers 503 (it had accepted it just before
    draining) or whose keep-alive connection it closes is sent again, with the same
    idempotency key, so a publication that did go through is not published twice."""
    n = 0
    async with httpx.AsyncClient(timeout=5) as http:
        while not stop.is_set():
            body = {"channel": channel, "data": n, "idempotency_key": f"n{n}"}
            try:
                reply = await http.post(
                    f"http://127.0.0.1:{port}/api/publish",
                    json=body,
                    headers={"X-API-Key": API_KEY},
                )
            except httpx.TransportError:
                continue
            if reply.status_code == 503:
                continue
            assert reply.status_code == 200 and "error" not in reply.json(), reply.text
            sent.append(n)
            n += 1
            await anyio.sleep(0.02)


async def test_rolling_restart_loses_no_publication(tmp_path: Path, serve: Any) -> None:
    """SIGHUP replaces every worker one at a time while a publisher runs: each client is
    disconnected with 3001, reconnects to another worker, recovers, and has received
    every publication exactly once, in order."""
    require_main_redis()
    served = serve(write_config(tmp_path, cluster_config(unique_prefix())))
    before = children(served.proc.pid)
    assert len(before) == 2
    sent: list[int] = []
    async with subscribers(served.ws_url(), "room:roll", 6, served.port) as subs:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_numbers, served.port, "room:roll", sent, stop)
            await anyio.sleep(0.3)
            served.proc.send_signal(signal.SIGHUP)
            await until(lambda: len(now := children(served.proc.pid)) == 2 and not now & before, 30)
            await until(lambda: all(sub.shutdown_disconnects() for sub in subs))
            # every client is subscribed again
            await until(lambda: all(len(sub.sub_events.rec.of("subscribed")) > 1 for sub in subs))
            await anyio.sleep(0.3)
            stop.set()
        await until(lambda: all(len(sub.received()) >= len(sent) for sub in subs))
        for sub in subs:
            assert sub.received() == sent, (len(sub.received()), len(sent))
            resubscribed = sub.sub_events.rec.of("subscribed")[1:]
            assert all(ctx.was_recovering and ctx.recovered for ctx in resubscribed)
    assert served.proc.poll() is None  # the supervisor itself never stopped


async def test_sigterm_drains_every_worker(tmp_path: Path, serve: Any) -> None:
    """SIGTERM to the supervisor: clients on both workers get 3001, the supervisor and
    its workers exit with 0 (internal port configured: API and health live there)."""
    require_main_redis()
    internal = free_port()
    config = cluster_config(unique_prefix(), internal_port=str(internal))
    served = serve(write_config(tmp_path, config), internal)
    assert health(internal) == 200
    workers = children(served.proc.pid)
    async with subscribers(served.ws_url(), "room:stop", 6, internal) as subs:
        served.proc.send_signal(signal.SIGTERM)
        await until(lambda: all(sub.shutdown_disconnects() for sub in subs))
    status = served.proc.wait(WAIT)
    out = served.output()
    assert status == 0, out
    assert not any(alive(pid) for pid in workers)
    assert "Traceback" not in out, out


async def test_crashed_worker_is_restarted(tmp_path: Path, serve: Any) -> None:
    require_main_redis()
    served = serve(write_config(tmp_path, cluster_config(unique_prefix())))
    first = children(served.proc.pid)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(c := children(served.proc.pid)) == 2 and victim not in c, "a replacement")
    now = children(served.proc.pid)
    assert len(now & first) == 1
    wait_for(lambda: health(served.port) == 200, "health")
    async with subscribers(served.ws_url(), "room:crash", 2) as subs:
        await api(served.port, "publish", {"channel": "room:crash", "data": 1})
        await until(lambda: all(sub.received() == [1] for sub in subs))
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(WAIT) == 0


def test_sigterm_while_workers_start(tmp_path: Path) -> None:
    """A stop that arrives while the second worker is still starting stops it too."""
    require_main_redis()
    processes = ServeProcesses()
    try:
        config = write_config(tmp_path, cluster_config(unique_prefix()))
        served = processes.start(config, "--workers", "2")  # returns once one worker answers
        workers = wait_for(lambda: children(served.proc.pid), "a worker process")
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(WAIT) == 0, served.output()
        wait_for(lambda: not any(alive(pid) for pid in workers), "every worker to exit")
    finally:
        processes.stop_all()


def test_orphaned_workers_stop(tmp_path: Path, serve: Any) -> None:
    """A supervisor killed with SIGKILL cannot drain its workers: they notice and stop."""
    require_main_redis()
    served = serve(write_config(tmp_path, cluster_config(unique_prefix())))
    workers = children(served.proc.pid)
    assert len(workers) == 2, workers  # else the wait below would pass with nothing to stop
    served.proc.kill()
    served.proc.wait(5)
    wait_for(lambda: not any(alive(pid) for pid in workers), "orphaned workers to exit")


# ----------------------------------------------------------------- /health


def test_internal_health_answers_503_until_the_drain_ends(tmp_path: Path) -> None:
    """``serve`` with an internal port: after SIGTERM, /health there answers 503 for as
    long as the main listener drains, then the port closes. The drain is held open by a
    unidirectional SSE client that never reads (a 4 KiB receive buffer) while 5 MB of
    publications is queued for it, until shutdown.timeout ends it."""
    internal = free_port()
    config = {
        "client": {"token": {"hmac_secret_key": SECRET}},
        "http_api": {"key": API_KEY},
        "health": {"enabled": True},
        "log": {"level": "warn"},
        "uni_sse": {"enabled": True},
        "http_server": {"internal_port": str(internal)},
        "shutdown": {"timeout": "3s"},
    }
    processes = ServeProcesses()
    reader = socket.socket()
    try:
        served = processes.start(write_config(tmp_path, config))
        wait_for(lambda: health(internal) == 200, "health on the internal port")
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(("127.0.0.1", served.port))
        connect = json.dumps({"token": connection_token("u", SECRET, channels=["stuck"])})
        query = httpx.QueryParams({"cf_connect": connect})
        request = f"GET /connection/uni_sse?{query} HTTP/1.1\r\nHost: x\r\n\r\n"
        reader.sendall(request.encode())
        reader.recv(1)  # the response has begun: the server-side subscription exists
        for _ in range(12):
            data = {"channel": "stuck", "data": {"pad": "x" * 400_000}}
            reply = httpx.post(
                f"http://127.0.0.1:{internal}/api/publish",
                json=data,
                headers={"X-API-Key": API_KEY},
                timeout=5,
            )
            assert reply.status_code == 200, reply.text
        served.proc.send_signal(signal.SIGTERM)
        seen = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            seen.append(health(internal))
            if seen[-1] == 0:
                break
            time.sleep(0.05)
        assert served.proc.wait(WAIT) in (0, 1)  # 1: shutdown.timeout reached
        assert seen[-1] == 0 and 200 not in seen[1:], seen
        assert seen.count(503) >= 5, seen  # 503 all along a drain of about 3 s
    finally:
        reader.close()
        processes.stop_all()


def test_health_answers_503_while_the_node_drains(live_server: Any) -> None:
    """From the first moment of shutdown until the node is gone, ``/health`` says 503, so
    a load balancer or a readiness probe stops sending new clients to a draining server.
    (In ``serve`` the internal listener, where health lives, closes only after the main
    one has drained.) The drain is held open here by a registry that reports clients
    until the test lets it go."""
    import asyncio
    import threading

    from centrifuge_asgi import Node

    node = Node({"client": {"token": {"hmac_secret_key": "k"}}, "health": {"enabled": True}})
    srv = live_server(node.asgi_app())
    assert health(srv.port) == 200
    released = threading.Event()

    async def clients_still_leaving() -> None:
        while not released.is_set():  # noqa: ASYNC110 (set from the test thread)
            await asyncio.sleep(0.01)

    node.registry.wait_empty = clients_still_leaving  # type: ignore[method-assign]
    assert srv.loop is not None
    draining = asyncio.run_coroutine_threadsafe(node.shutdown(5.0), srv.loop)
    try:
        wait_for(lambda: health(srv.port) == 503, "503 while draining", timeout=5)
        reply = httpx.get(f"http://127.0.0.1:{srv.port}/health", timeout=2)
        assert (reply.status_code, reply.json()) == (503, {})
    finally:
        released.set()
        draining.result(5)


def listening_sockets(port: int) -> int:
    """TCP sockets listening on ``port`` on this machine (Linux /proc/net)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                count += int(local.rsplit(":", 1)[1], 16) == port and state == "0A"
    return count


async def test_grpc_api_port_is_shared_by_the_workers(tmp_path: Path, serve: Any) -> None:
    """Each worker starts the gRPC API server on the same port (grpcio listens with
    SO_REUSEPORT on Linux, so the kernel spreads gRPC connections over the workers):
    both workers start, and publications sent over fresh gRPC connections reach the
    subscribers on both workers."""
    require_main_redis()
    import grpc

    from centrifuge_asgi.grpc import api_pb2 as pb
    from centrifuge_asgi.grpc.api_pb2_grpc import CentrifugoApiStub

    grpc_port = free_port()
    config = cluster_config(unique_prefix())
    config["grpc_api"] = {"enabled": True, "address": "127.0.0.1", "port": grpc_port, "key": "g"}
    served = serve(write_config(tmp_path, config))
    assert listening_sockets(grpc_port) == 2  # one gRPC listener per worker
    async with subscribers(served.ws_url(), "room:g", 6, served.port) as subs:
        for n in range(6):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                reply = await CentrifugoApiStub(channel).Publish(
                    pb.PublishRequest(channel="room:g", data=json.dumps(n).encode()),
                    metadata=(("authorization", "apikey g"),),
                    timeout=5,
                )
            assert not reply.HasField("error"), reply
        await until(lambda: all(sub.received() == list(range(6)) for sub in subs))
        assert len(await clients_per_node(served.port)) == 2
