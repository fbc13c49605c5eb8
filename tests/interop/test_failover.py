"""Failover under traffic, as the official centrifuge-python SDK sees it.

Two nodes, each under its own uvicorn (its own loop and connections). A client on node
B subscribes to a recoverable channel and to one without history; node A publishes
``{"n": 1}``, ``{"n": 2}``, ... back to back into both through its in-process API while
the backend fails over:

* Redis Sentinel (one master, one replica, three sentinels): the master is killed with
  SIGKILL and the sentinels promote the replica;
* Redis Cluster (three masters, three replicas): the master serving the channels' slots
  is killed and its replica takes over; it is the first seed address the nodes know;
* NATS: the server is killed and started again on the same port.

Each Redis failover runs twice: with the replica in sync, and with a replica that had not
applied the last publications (``CLIENT PAUSE WRITE``), as an asynchronous replica may
lag: the promoted master then has the channel's stream without its tail, under the same
epoch. What must hold:

* every publish succeeds or fails with error 100 within ``io_timeout`` plus a margin,
  and publishes succeed again soon after the promotion;
* soon after the promotion, publications without history reach the client again and the
  nodes hear each other over the control channel (no connection stays bound to the dead
  master);
* the client ends with every acknowledged publication, in order and once, or it was told
  (a subscribe with ``recovered: false``) where it could not have them;
* with the lagging replica, the stream starts a new epoch: the client is told.

NATS keeps no history: delivery is at most once and must resume after the restart,
without duplicates.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import pytest
from centrifuge import Client

from centrifuge_asgi.node import Node
from tests.unit.test_redis_engine import RedisProcess, unique_prefix

from .failover_support import (
    MASTER,
    NatsServer,
    Publisher,
    RedisClusterGroup,
    SentinelGroup,
    Watcher,
    catch_up_after_master_died,
    lag_behind,
    redis_cluster_with_replicas,
    sentinel_group,
    slot_master_port,
    untruthful,
)
from .support import BASE_CONFIG, WS_PATH, token

if TYPE_CHECKING:
    from conftest import LiveServer, LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

NAMESPACE = "failover"
CHANNEL = f"{NAMESPACE}:stream"  # history and recovery
LIVE = "live"  # no history: at most once, nothing to recover
IO_TIMEOUT = 1.0
FAIL_FAST = IO_TIMEOUT + 1.5  # any publish, failing or not, returns within this
PROMOTION_BOUND = 20.0  # kill → the replica serves as master
RESUME_BOUND = 10.0  # promotion → publishes succeed again
DELIVERY_BOUND = 15.0  # last acknowledged publish → the client has it


def failover_config(backend: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE_CONFIG)
    # the periodic check finds a loss that no later publication reveals
    cfg["client"]["channel_position_check_delay"] = "1s"
    cfg["channel"]["namespaces"].append(
        {
            "name": NAMESPACE,
            "allow_subscribe_for_client": True,
            "history_size": 1000,
            "history_ttl": "300s",
            "force_recovery": True,
        }
    )
    cfg.update(backend)
    return cfg


def redis_engine(**block: Any) -> dict[str, Any]:
    block.update(prefix=unique_prefix(), io_timeout=f"{IO_TIMEOUT}s", connect_timeout="500ms")
    return {"engine": {"type": "redis", "redis": block}}


def serve(live_server: LiveServerFactory, config: dict[str, Any]) -> tuple[Node, LiveServer]:
    node = Node(config)
    return node, live_server(node.asgi_app())


@contextlib.asynccontextmanager
async def watching(srv: LiveServer, *channels: str) -> AsyncIterator[list[Watcher]]:
    """A centrifuge-python client on ``srv`` subscribed to ``channels``; their events."""
    client = Client(
        srv.ws_url(WS_PATH),
        token=token("watcher"),
        proxy=None,
        timeout=5.0,
        min_reconnect_delay=0.1,
        max_reconnect_delay=1.0,
    )
    watchers = [Watcher() for _ in channels]
    try:
        with anyio.fail_after(10):
            await client.connect()
            await client.ready()
            for channel, watcher in zip(channels, watchers, strict=True):
                sub = client.new_subscription(
                    channel, events=watcher, min_resubscribe_delay=0.1, max_resubscribe_delay=1.0
                )
                await sub.subscribe()
                await sub.ready(timeout=5)
        yield watchers
    finally:
        with anyio.move_on_after(5), contextlib.suppress(Exception):
            await client.disconnect()


async def until(
    predicate: Callable[[], object], what: str, within: float, *, thread: bool = False
) -> float:
    """Poll ``predicate`` (in a worker thread when it runs redis-cli); when it held."""
    with anyio.move_on_after(within):
        while not (await anyio.to_thread.run_sync(predicate) if thread else predicate()):  # noqa: ASYNC110
            await anyio.sleep(0.02)
        return time.monotonic()
    raise AssertionError(f"{what}: not within {within} s")


@dataclass
class Traffic:
    """Node A publishes into a recoverable channel and into one without history; a client
    on node B watches both."""

    stream: Publisher
    live: Publisher
    watcher: Watcher
    live_watcher: Watcher

    def received_live_after(self, moment: float) -> bool:
        return any(self.live.attempts[n - 1].started > moment for n in self.live_watcher.numbers())

    async def surveyed(self, within: float) -> float:
        """Wait until node A's channel survey (over the control channel: a request to
        every node, answers to node A's own topic) counts node B's subscriber."""
        srv, node = self.stream.srv, self.stream.node

        def counted(channels: dict[str, int]) -> bool:
            return channels.get(self.stream.channel) == 1

        with anyio.move_on_after(within):
            while not counted(await srv.acall(node.cluster_channels(wait=0.5))):  # noqa: ASYNC110
                await anyio.sleep(0.05)
            return time.monotonic()
        raise AssertionError(f"node B not heard over the control channel within {within} s")


async def fail_over(
    traffic: Traffic,
    kill: Callable[[], None],
    promoted: Callable[[], bool],
    lagging: RedisProcess | None,
) -> dict[str, float]:
    """Publish, kill the master mid-traffic, wait for the promotion, publish on; timings
    (seconds after the kill)."""
    stream = traffic.stream
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream.run)
        tg.start_soon(traffic.live.run)
        await stream.wait_acked(20)
        await traffic.surveyed(10)  # node announcements (every 3 s) made them peers
        if lagging is not None:
            lag_behind(lagging)
            paused = time.monotonic()
            await stream.wait_acked(5, after=paused)  # acknowledged, never replicated
        killed = time.monotonic()
        kill()
        if lagging is not None:
            await anyio.to_thread.run_sync(catch_up_after_master_died, lagging)
        promotion = await until(promoted, "replica promoted", PROMOTION_BOUND, thread=True)
        await stream.wait_acked(1, after=killed, within=RESUME_BOUND + PROMOTION_BOUND)
        # PUB/SUB too: a publication without history, made after the promotion, arrives
        live = await until(
            lambda: traffic.received_live_after(promotion), "live delivery resumed", RESUME_BOUND
        )
        control = await traffic.surveyed(RESUME_BOUND)
        await stream.wait_acked(40, after=killed)
        stream.stop()
        traffic.live.stop()
    return {
        "killed": killed,
        "promotion": promotion - killed,
        "resumed": stream.acked(killed)[0].started - killed,
        "live": live - killed,
        "control": control - killed,
    }


async def check_outcome(traffic: Traffic, timings: dict[str, float], lagging: bool) -> None:
    stream, watcher = traffic.stream, traffic.watcher
    attempts = stream.attempts + traffic.live.attempts
    acked = stream.acked()
    failed = [a for a in attempts if not a.ok]
    slowest = max(a.elapsed for a in attempts)
    await watcher.wait_for(acked[-1].n, DELIVERY_BOUND)
    print(  # shown with -s: how the failover went
        f"\n  after the kill: promotion {timings['promotion']:.2f}s, publishes resumed "
        f"{timings['resumed']:.2f}s, live delivery {timings['live']:.2f}s, control "
        f"{timings['control']:.2f}s; {len(acked)} "
        f"acknowledged, {len(failed)} failed, slowest {slowest:.2f}s; subscribes "
        f"{[(s.recovered, s.stream_position) for s in watcher.subscribes()]}"
    )
    assert slowest < FAIL_FAST, [a for a in attempts if a.elapsed >= FAIL_FAST]
    assert {a.code for a in failed} <= {100}
    assert timings["resumed"] < timings["promotion"] + RESUME_BOUND
    problems = untruthful(acked, watcher.events)
    assert problems == [], "\n".join(problems)
    live = traffic.live_watcher.numbers()
    assert live == sorted(set(live)), "a publication without history delivered twice"
    if lagging:
        # The promoted replica lacks acknowledged publications. Their offsets are not
        # handed out again under the same epoch: the stream has a new one, and the client
        # was told it could not recover.
        last_before = [a for a in acked if a.started < timings["killed"]][-1].position
        last_after = acked[-1].position
        assert last_before is not None and last_after is not None
        assert last_after.epoch != last_before.epoch
        assert any(s.was_recovering and not s.recovered for s in watcher.subscribes())


# --------------------------------------------------------------------------- Sentinel


@pytest.fixture
def sentinels() -> Iterator[SentinelGroup]:
    with sentinel_group() as group:
        yield group


@pytest.mark.parametrize("lagging", [False, True], ids=["replica in sync", "replica lagging"])
async def test_sentinel_failover(
    sentinels: SentinelGroup, live_server: LiveServerFactory, lagging: bool
) -> None:
    engine = redis_engine(sentinel_address=[sentinels.addresses], sentinel_master_name=MASTER)
    config = failover_config(engine)
    node_a, srv_a = serve(live_server, config)
    _, srv_b = serve(live_server, config)
    async with watching(srv_b, CHANNEL, LIVE) as (watcher, live_watcher):
        traffic = Traffic(
            Publisher(srv_a, node_a, CHANNEL),
            Publisher(srv_a, node_a, LIVE, interval=0.05),
            watcher,
            live_watcher,
        )
        timings = await fail_over(
            traffic,
            sentinels.master.kill,
            sentinels.promoted,
            sentinels.replica if lagging else None,
        )
        await check_outcome(traffic, timings, lagging)


# --------------------------------------------------------------------------- Cluster


@pytest.fixture
def cluster() -> Iterator[RedisClusterGroup]:
    with redis_cluster_with_replicas() as group:
        yield group


def tag(channel: str) -> str:
    """The engine's hash tag: every key and the topic of ``channel`` share its slot."""
    return "{" + channel + "}"


@pytest.mark.parametrize("lagging", [False, True], ids=["replica in sync", "replica lagging"])
async def test_cluster_failover(
    cluster: RedisClusterGroup, live_server: LiveServerFactory, lagging: bool
) -> None:
    master, replica = cluster.owner(tag(CHANNEL))
    # the master to be killed is the first seed: nothing may stay bound to it
    seeds = ",".join([master.address, *(p.address for p in cluster.procs if p is not master)])
    config = failover_config(redis_engine(cluster_address=[seeds]))
    node_a, srv_a = serve(live_server, config)
    _, srv_b = serve(live_server, config)
    # the channel without history on the same master
    names = (f"{LIVE}-{i}" for i in range(1000))
    live = next(n for n in names if slot_master_port(master, tag(n)) == master.port)
    async with watching(srv_b, CHANNEL, live) as (watcher, live_watcher):
        traffic = Traffic(
            Publisher(srv_a, node_a, CHANNEL),
            Publisher(srv_a, node_a, live, interval=0.05),
            watcher,
            live_watcher,
        )
        timings = await fail_over(
            traffic,
            master.kill,
            lambda: cluster.serves(tag(CHANNEL), replica) and cluster.ok(),
            replica if lagging else None,
        )
        await check_outcome(traffic, timings, lagging)


# --------------------------------------------------------------------------- NATS


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer()
    try:
        yield server.start()
    finally:
        server.stop()


async def test_nats_restart(nats_server: NatsServer, live_server: LiveServerFactory) -> None:
    if os.environ.get("CI") != "true":
        pytest.importorskip("nats")
    backend = {
        "broker": {
            "enabled": True,
            "type": "nats",
            "nats": {"url": nats_server.url, "prefix": unique_prefix()},
        }
    }
    config = failover_config(backend)
    node_a, srv_a = serve(live_server, config)
    _, srv_b = serve(live_server, config)
    channel = "chat:nats"  # no history with NATS: at most once
    async with watching(srv_b, channel) as (watcher,):
        publisher = Publisher(srv_a, node_a, channel)
        attempts = publisher.attempts

        def received_after(moment: float) -> bool:
            return any(attempts[n - 1].started > moment for n in watcher.numbers())

        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher.run)
            await until(lambda: len(watcher.numbers()) >= 20, "first deliveries", 10)
            killed = time.monotonic()
            nats_server.kill()
            await anyio.sleep(1.0)  # publishing into the outage
            restarted = time.monotonic()
            await anyio.to_thread.run_sync(nats_server.start)
            resumed = await until(
                lambda: received_after(restarted), "delivery resumed", RESUME_BOUND
            )
            await publisher.wait_acked(40, after=resumed)
            publisher.stop()
        acked = publisher.acked()
        await watcher.wait_for(acked[-1].n, DELIVERY_BOUND)
    failed = [a for a in attempts if not a.ok]
    slowest = max(a.elapsed for a in attempts)
    print(
        f"\n  outage {restarted - killed:.2f}s, delivery resumed {resumed - restarted:.2f}s "
        f"after the restart; {len(acked)} acknowledged, {len(failed)} failed, slowest "
        f"{slowest:.2f}s"
    )
    assert slowest < FAIL_FAST, [a for a in attempts if a.elapsed >= FAIL_FAST]
    assert {a.code for a in failed} <= {100}
    received = watcher.numbers()
    assert received == sorted(set(received)), "a publication delivered twice or out of order"
    # at most once during the outage; once both nodes are back, nothing is lost
    first_back = min(n for n in received if attempts[n - 1].started > restarted)
    assert [a.n for a in acked if a.n >= first_back and a.n not in received] == []
