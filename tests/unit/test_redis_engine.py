"""The Redis engine: the shared engine contract on one Redis, on client-side shards and on a
Redis Cluster, plus Redis-only behaviour (TTLs, churn, failures, probes, parsing).

Uses the Redis at 127.0.0.1:6379 (``.ci/run`` starts it) and private ``redis-server``
processes on spare ports, killed at teardown. Without Redis the tests skip locally and
fail under ``CI=true``. The helpers here are shared with the interop tests.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from centrifuge_asgi.config import Config
from centrifuge_asgi.engines.base import ClientInfo, HistoryFilter, PublishOptions
from centrifuge_asgi.engines.factory import build_engine
from centrifuge_asgi.errors import ConfigError, EngineUnavailable
from tests.conditions import unavailable, until
from tests.engine_contract import EngineContract, EngineUnderTest, RecordingHandler, wait_for
from tests.interop import serve_process

# Under CI=true a missing redis-py fails the module (the `redis` extra must be installed).
redis_py = __import__("redis") if os.environ.get("CI") == "true" else pytest.importorskip("redis")

from centrifuge_asgi.engines import redis as redis_engine  # noqa: E402
from centrifuge_asgi.engines.redis import (  # noqa: E402
    RedisBroker,
    RedisPresenceManager,
    build_shards,
)
from centrifuge_asgi.engines.redis_pubsub import Subscriber  # noqa: E402
from centrifuge_asgi.engines.redis_resp import Endpoint, RespConnection  # noqa: E402
from centrifuge_asgi.engines.redis_shard import (  # noqa: E402
    RedisTarget,
    jump_hash,
    parse_targets,
    shard_index,
)

MAIN_REDIS = ("127.0.0.1", 6379)
HISTORY = PublishOptions(history_size=10, history_ttl=60.0)


# --------------------------------------------------------------------------- helpers


need = unavailable  # the name tests/interop/test_admin.py imports from here


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def require_main_redis() -> None:
    if not port_open(*MAIN_REDIS):
        unavailable("Redis is not running at 127.0.0.1:6379 (.ci/run starts it)")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(cluster: bool = False) -> int:
    """A spare port; for a cluster node also ``port + 10000`` (its bus) must be free."""
    if not cluster:
        return serve_process.free_port()
    for _ in range(200):
        port = random.randint(20000, 45000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


class RedisProcess:
    """A private ``redis-server`` on a spare port that a test may kill and restart."""

    def __init__(self, *extra: str, persistent: bool = False) -> None:
        if shutil.which("redis-server") is None:
            unavailable("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port(cluster="--cluster-enabled" in extra)
        self.persistent = persistent
        self.dir = tempfile.mkdtemp(prefix="redis-test-")
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if persistent
            else ["--appendonly", "no"]
        )
        self.args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            self.dir,
            *persistence,
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisProcess:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        try:
            return self.cli("PING") == "PONG"
        except (OSError, subprocess.SubprocessError):
            return False

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to save anything."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def redis_processes(count: int, *extra: str, persistent: bool = False) -> Iterator[list[Any]]:
    procs: list[RedisProcess] = []
    try:
        for _ in range(count):
            procs.append(RedisProcess(*extra, persistent=persistent).start())
        yield procs
    finally:
        for proc in procs:
            proc.stop()


@contextlib.contextmanager
def redis_cluster(masters: int = 3) -> Iterator[list[RedisProcess]]:
    """A Redis Cluster of ``masters`` primaries (no replicas), ready within 30 s."""
    extra = ("--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
    with redis_processes(masters, *extra) as procs:
        addresses = [p.address for p in procs]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],
            capture_output=True,
            timeout=30,
            check=True,
        )
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in p.cli("CLUSTER", "INFO") for p in procs):
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield procs


def redis_config(address: str | list[str], **extra: Any) -> Config:
    """A Config with the Redis engine at ``address`` and a unique prefix."""
    block = {"address": address, "prefix": unique_prefix(), **extra}
    return Config.from_dict({"engine": {"type": "redis", "redis": block}})


@contextlib.asynccontextmanager
async def started_engine(config: Config, **broker_options: Any) -> AsyncIterator[EngineUnderTest]:
    """Broker (started with a RecordingHandler) and presence manager from ``config``."""
    handler = RecordingHandler()
    broker = RedisBroker.from_config(config.engine.redis)
    if broker_options:
        broker = RedisBroker(build_shards(config.engine.redis), **broker_options)
    presence = RedisPresenceManager.from_config(config.engine.redis)
    broker.register_control_handler(handler, handler.node_id)
    await broker.start(handler)
    try:
        yield EngineUnderTest(broker, presence, handler, anyio.sleep)
    finally:
        await broker.close()
        await presence.close()


def sync_redis(port: int = 6379) -> Any:
    return redis_py.Redis(host="127.0.0.1", port=port)


def keys_without_ttl(client: Any, prefix: str) -> list[bytes]:
    return [k for k in client.scan_iter(match=f"{prefix}*", count=1000) if client.ttl(k) < 0]


# --------------------------------------------------------------------------- contracts


class TestRedisEngineContract(EngineContract):
    """The engine contract on one Redis (127.0.0.1:6379)."""

    @pytest.fixture
    async def engine(self) -> AsyncIterator[EngineUnderTest]:
        require_main_redis()
        async with started_engine(redis_config("127.0.0.1:6379")) as engine:
            yield engine


@pytest.fixture(scope="module")
def two_shards() -> Iterator[list[RedisProcess]]:
    with redis_processes(2) as procs:
        yield procs


class TestShardedRedisEngineContract(EngineContract):
    """The engine contract on two independent Redis servers (client-side sharding)."""

    @pytest.fixture
    async def engine(self, two_shards: list[RedisProcess]) -> AsyncIterator[EngineUnderTest]:
        config = redis_config([p.address for p in two_shards])
        async with started_engine(config) as engine:
            yield engine


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[RedisProcess]]:
    with redis_cluster() as procs:
        yield procs


class TestClusterEngineContract(EngineContract):
    """The engine contract on a 3-master Redis Cluster (hash tags, SPUBLISH/SSUBSCRIBE)."""

    @pytest.fixture
    async def engine(self, cluster: list[RedisProcess]) -> AsyncIterator[EngineUnderTest]:
        config = Config.from_dict(
            {
                "engine": {
                    "type": "redis",
                    "redis": {
                        "cluster_address": [",".join(p.address for p in cluster)],
                        "prefix": unique_prefix(),
                    },
                }
            }
        )
        async with started_engine(config) as engine:
            yield engine


# --------------------------------------------------------------------------- parsing


def test_address_forms() -> None:
    cfg = Config.from_dict({"engine": {"redis": {"address": "10.0.0.1:7000", "db": 2}}})
    assert parse_targets(cfg.engine.redis) == [
        RedisTarget("standalone", (("10.0.0.1", 7000),), db=2)
    ]
    (url,) = parse_targets(
        Config.from_dict(
            {"engine": {"redis": {"address": "rediss://u:p%40ss@h:6380/3"}}}
        ).engine.redis
    )
    assert (url.kind, url.hosts, url.username, url.password, url.db, url.tls) == (
        "standalone",
        (("h", 6380),),
        "u",
        "p@ss",
        3,
        True,
    )
    (unix,) = parse_targets(
        Config.from_dict({"engine": {"redis": {"address": "unix:///tmp/r.sock"}}}).engine.redis
    )
    assert unix.unix_path == "/tmp/r.sock"


def test_sentinel_and_cluster_forms() -> None:
    block = {
        "address": "ignored:1",
        "sentinel_address": ["s1:26379,s2:26379"],
        "sentinel_master_name": "mymaster",
    }
    (sentinel,) = parse_targets(Config.from_dict({"engine": {"redis": block}}).engine.redis)
    assert sentinel.kind == "sentinel"
    assert sentinel.hosts == (("s1", 26379), ("s2", 26379))
    assert sentinel.master_name == "mymaster"
    block["cluster_address"] = ["c1:7000,c2:7001", "d1:7000"]
    clusters = parse_targets(Config.from_dict({"engine": {"redis": block}}).engine.redis)
    assert [c.kind for c in clusters] == ["cluster", "cluster"]
    assert clusters[0].hosts == (("c1", 7000), ("c2", 7001))
    urls = {
        "address": [
            "redis+cluster://c1:7000?addr=c2:7001",
            "redis+sentinel://s1:26379?sentinel_master_name=m&addr=s2:26380",
        ]
    }
    cluster_url, sentinel_url = parse_targets(
        Config.from_dict({"engine": {"redis": urls}}).engine.redis
    )
    assert cluster_url.kind == "cluster"
    assert cluster_url.hosts == (("c1", 7000), ("c2", 7001))
    assert sentinel_url.master_name == "m"
    assert sentinel_url.hosts == (("s1", 26379), ("s2", 26380))


@pytest.mark.parametrize(
    "block",
    [
        {"sentinel_address": ["s:26379"]},
        {"address": "redis+sentinel://s:26379"},
        {"address": "http://h:1"},
    ],
)
def test_bad_addresses_are_config_errors(block: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_targets(Config.from_dict({"engine": {"redis": block}}).engine.redis)


def test_jump_hash_is_consistent() -> None:
    channels = [f"ch{i}" for i in range(2000)]
    three = [shard_index(ch, 3) for ch in channels]
    four = [shard_index(ch, 4) for ch in channels]
    assert {0, 1, 2} == set(three)
    assert all(500 < three.count(i) < 830 for i in range(3))
    moved = [a != b for a, b in zip(three, four, strict=True)]
    assert all(b == 3 for a, b, m in zip(three, four, moved, strict=True) if m)
    assert 350 < sum(moved) < 650  # about a quarter moves, only to the new shard
    assert jump_hash(0, 1) == 0
    assert shard_index("anything", 1) == 0


def test_factory_builds_the_configured_engine() -> None:
    broker, presence = build_engine(redis_config("127.0.0.1:6379"))
    assert isinstance(broker, RedisBroker)
    assert isinstance(presence, RedisPresenceManager)
    mixed = Config.from_dict(
        {
            "broker": {"enabled": True, "type": "redis", "redis": {"address": "h:1"}},
            "presence_manager": {"enabled": True, "type": "redis"},
        }
    )
    broker, presence = build_engine(mixed)
    assert isinstance(broker, RedisBroker)
    assert isinstance(presence, RedisPresenceManager)
    with pytest.raises(ConfigError):
        build_engine(Config.from_dict({"broker": {"enabled": True, "type": "postgres"}}))


# --------------------------------------------------------------------------- Redis-only


@pytest.fixture
async def engine() -> AsyncIterator[EngineUnderTest]:
    require_main_redis()
    async with started_engine(redis_config("127.0.0.1:6379")) as engine:
        yield engine


def prefix_of(engine: EngineUnderTest) -> str:
    assert isinstance(engine.broker, RedisBroker)
    return engine.broker.prefix


def subscriber_of(engine: EngineUnderTest) -> Any:
    assert isinstance(engine.broker, RedisBroker)
    return engine.broker.subscribers[0]


@pytest.mark.anyio
async def test_every_key_has_a_ttl(engine: EngineUnderTest) -> None:
    broker, presence = engine.broker, engine.presence
    await broker.publish("a", b"{}", HISTORY)
    await broker.publish("b", b"{}", PublishOptions(idempotency_key="k"))
    await broker.publish("c", b"{}", PublishOptions(10, 60.0, idempotency_key="k", version=1))
    await broker.history("d", HistoryFilter(limit=-1))
    await presence.add_presence("e", "c1", ClientInfo("u", "c1"))
    await broker.remove_history("a")
    client = sync_redis()
    keys = list(client.scan_iter(match=f"{prefix_of(engine)}*", count=1000))
    assert len(keys) >= 7
    assert keys_without_ttl(client, prefix_of(engine)) == []


@pytest.mark.anyio
async def test_subscribe_returns_after_redis_confirmed_it(engine: EngineUnderTest) -> None:
    await engine.broker.subscribe("confirmed")
    topic = f"{prefix_of(engine)}.client.confirmed"
    assert dict(sync_redis().pubsub_numsub(topic)) == {topic.encode(): 1}
    sync_redis().publish(topic, b"__j__" + b"\x92\xa1u\xa1c")  # a join from a "Go node"
    await wait_for(lambda: len(engine.handler.joins) == 1)
    assert engine.handler.joins == [("confirmed", ClientInfo("u", "c"))]


@pytest.mark.anyio
async def test_subscribe_churn_leaves_no_redis_subscriptions(engine: EngineUnderTest) -> None:
    broker = engine.broker
    names = [f"churn-{i}" for i in range(600)]

    async def flap(channel: str, times: int) -> None:
        for _ in range(times):
            await broker.subscribe(channel)
            await broker.unsubscribe(channel)

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(flap, name, 2)
        for _ in range(100):
            tg.start_soon(flap, "churn-same", 3)
    for name in names[:100]:  # subscribed and dropped before the writer ran: never sent
        await broker.subscribe(name)
        await broker.unsubscribe(name)
    await broker.subscribe("churn-kept")
    sub = subscriber_of(engine)
    topic = f"{prefix_of(engine)}.client."
    kept = topic.encode() + b"churn-kept"
    await until(lambda: {c for c in sub.active if b".client." in c} == {kept})
    assert sync_redis().pubsub_channels(f"{topic}*") == [topic.encode() + b"churn-kept"]
    numsub = dict(sync_redis().pubsub_numsub(*(topic + n for n in [*names, "churn-same"])))
    assert set(numsub.values()) == {0}
    await broker.unsubscribe("churn-kept")
    await until(lambda: not sync_redis().pubsub_channels(f"{topic}*"))


@pytest.mark.anyio
async def test_malformed_pubsub_data_is_ignored(engine: EngineUnderTest) -> None:
    assert isinstance(engine.broker, RedisBroker)
    await engine.broker.subscribe("junk")
    topic = f"{prefix_of(engine)}.client.junk"
    client = sync_redis()
    for junk in (b"garbage", b"__p1:x:y__\x90", b"__p1:5:ep", b"__j__\xc1", b"__p1:1:e__zz"):
        client.publish(topic, junk)
    await engine.broker.publish("junk", b'"ok"', PublishOptions())
    await wait_for(lambda: engine.handler.data_in("junk") == [b'"ok"'])
    assert engine.broker.malformed == 5


@pytest.mark.anyio
async def test_lost_meta_starts_a_new_epoch_without_old_entries(engine: EngineUnderTest) -> None:
    broker = engine.broker
    for _ in range(3):
        old = (await broker.publish("lost", b"{}", HISTORY)).position
    sync_redis().delete(f"{prefix_of(engine)}.stream.meta.lost")
    fresh = (await broker.publish("lost", b"{}", HISTORY)).position
    assert fresh.offset == 1
    assert fresh.epoch != old.epoch
    history = await broker.history("lost", HistoryFilter(limit=-1))
    assert [p.offset for p in history.publications] == [1]


@pytest.mark.anyio
async def test_versions_stored_by_the_older_scripts_still_suppress(
    engine: EngineUnderTest,
) -> None:
    """Older scripts stored a version as a Lua number: a double, in exponent form from
    1e17 on. It is compared as a double, as then; the next version is stored as text."""
    broker = engine.broker
    await broker.publish("older", b"{}", HISTORY)
    meta = f"{prefix_of(engine)}.stream.meta.older"
    client = sync_redis()
    client.hset(meta, mapping={"v": "1.152921504606847e+18", "ve": ""})  # 2**60 + 1, rounded

    async def suppressed(version: int) -> bool:
        opts = PublishOptions(10, 60.0, version=version)
        return (await broker.publish("older", b"{}", opts)).suppressed

    assert await suppressed(2**60 + 1)
    assert not await suppressed(2**61)
    assert client.hget(meta, "v") == b"2305843009213693952"
    assert not await suppressed(2**61 + 1)
    assert client.hget(meta, "v") == b"2305843009213693953"


@pytest.mark.anyio
async def test_presence_expires_without_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each entry expires ``presence_ttl`` after its last add: its ZSET score is that expiry
    (unix seconds by the node's clock), and a read drops what is past it. The node's clock is
    faked here, so the entries' expiry needs no sleeping; the keys' own Redis TTL (the
    backstop for a channel nobody reads) is real, and checked to be the presence TTL."""
    require_main_redis()
    now = time.time()
    clock = SimpleNamespace(time=lambda: now)
    monkeypatch.setattr(redis_engine, "time", clock)
    config = redis_config("127.0.0.1:6379", presence_ttl="10s")
    prefix = config.engine.redis.prefix
    data_key, expire_key = f"{prefix}.presence.data.p", f"{prefix}.presence.expire.p"
    presence = RedisPresenceManager.from_config(config.engine.redis)
    try:
        started = now
        await presence.add_presence("p", "gone", ClientInfo("u1", "gone"))
        now = started + 6
        await presence.add_presence("p", "live", ClientInfo("u2", "live"))
        scores = dict(sync_redis().zrange(expire_key, 0, -1, withscores=True))
        assert scores == pytest.approx({b"gone": started + 10, b"live": started + 16}, abs=1e-3)
        for key in (data_key, expire_key):
            assert 5000 < sync_redis().pttl(key) <= 10000  # refreshed by the last add

        now = started + 9.5  # both still within their TTL
        assert sorted(await presence.presence("p")) == ["gone", "live"]
        now = started + 10.5  # "gone" was not refreshed: past its expiry
        assert list(await presence.presence("p")) == ["live"]
        stats = await presence.presence_stats("p")
        assert (stats.num_clients, stats.num_users) == (1, 1)
        assert sync_redis().hkeys(data_key) == [b"live"]
        assert sync_redis().zrange(expire_key, 0, -1) == [b"live"]
        now = started + 16.5
        assert await presence.presence("p") == {}
    finally:
        await presence.close()


@pytest.mark.anyio
async def test_concurrent_publishers_get_contiguous_offsets() -> None:
    require_main_redis()
    config = redis_config("127.0.0.1:6379")
    async with started_engine(config) as a, started_engine(config) as b:
        await a.broker.subscribe("race")

        async def burst(engine: EngineUnderTest) -> None:
            for _ in range(100):
                await engine.broker.publish("race", b"{}", PublishOptions(1000, 60.0))

        async with anyio.create_task_group() as tg:
            for engine in (a, b, a, b):
                tg.start_soon(burst, engine)
        await wait_for(lambda: len(a.handler.publications) == 400)
        assert [pub.offset for _, pub, _ in a.handler.publications] == list(range(1, 401))
        keyed = PublishOptions(10, 60.0, idempotency_key="same")
        results = []

        async def keyed_publish(engine: EngineUnderTest) -> None:
            results.append(await engine.broker.publish("race-key", b"{}", keyed))

        async with anyio.create_task_group() as tg:
            for engine in (a, b, a, b):
                tg.start_soon(keyed_publish, engine)
        assert len({r.position for r in results}) == 1
        assert sorted(r.suppressed for r in results) == [False, True, True, True]


@pytest.mark.anyio
async def test_control_reaches_every_node_or_one() -> None:
    require_main_redis()
    config = redis_config("127.0.0.1:6379")
    async with started_engine(config) as a, started_engine(config) as b:
        assert isinstance(b.broker, RedisBroker)
        await a.broker.publish_control(b"all")
        await a.broker.publish_control(b"only-b", node_id=b.broker.node_id)
        await wait_for(lambda: b.handler.controls == [b"all", b"only-b"])
        await wait_for(lambda: a.handler.controls == [b"all"])


# --------------------------------------------------------------------------- failures


class TcpProxy:
    """A loopback TCP proxy to ``target_port``; :meth:`blackhole` makes every open
    connection swallow traffic silently (a wedged replica), new connections still work."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._generation = 0

    def blackhole(self) -> None:
        self._generation += 1

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        await listener.serve(self._handle)

    async def _handle(self, client: Any) -> None:
        generation = self._generation
        async with client, await anyio.connect_tcp("127.0.0.1", self.target_port) as server:

            async def pump(src: Any, dst: Any) -> None:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    async for chunk in src:
                        if generation == self._generation:
                            await dst.send(chunk)

            async with anyio.create_task_group() as tg:
                tg.start_soon(pump, client, server)
                await pump(server, client)
                tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_probe_restarts_a_connection_that_went_silent() -> None:
    require_main_redis()
    client = redis_py.asyncio.Redis(host="127.0.0.1", port=6379)
    prefix = unique_prefix()
    probe_channel, channel = f"{prefix}.probe".encode(), f"{prefix}.data".encode()
    received: list[bytes] = []
    proxy = TcpProxy(6379)

    async def probe() -> None:
        await client.publish(probe_channel, b"probe")

    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        sub = Subscriber(
            "probe-test",
            lambda: RespConnection.open(Endpoint(port=proxy.port), 2.0),
            lambda ch, data: received.append(data) if ch == channel else None,
            fixed=[probe_channel],
            probe=probe,
            probe_interval=0.2,
            io_timeout=1.0,
        )
        tg.start_soon(sub.run)
        assert await sub.wait_ready(5)
        await sub.subscribe(channel)
        await client.publish(channel, b"before")
        await wait_for(lambda: received == [b"before"])
        proxy.blackhole()
        await client.publish(channel, b"lost")
        # the probe (after 0.2 s idle) + one silent interval + a redial
        await until(lambda: sub.connects >= 2 and channel in sub.active, 3)
        await client.publish(channel, b"after")
        await wait_for(lambda: received[-1:] == [b"after"])
        assert b"lost" not in received
        tg.cancel_scope.cancel()
    await client.aclose()


async def timed_failure(call: Any) -> float:
    """Seconds until ``call`` raised EngineUnavailable (asserts it did)."""
    started = time.monotonic()
    with pytest.raises(EngineUnavailable):
        await call
    return time.monotonic() - started


@pytest.mark.anyio
async def test_redis_down_fails_fast_then_everything_is_resubscribed() -> None:
    with redis_processes(1) as (proc,):
        # Redis refuses connections once killed: every call fails at once. The io_timeout is
        # long, so the bounds below (half of it) prove no call waited for a reply or a
        # confirmation, with seconds of margin for a loaded machine.
        config = redis_config(proc.address, io_timeout="5s", connect_timeout="500ms")
        fast = 2.5
        async with started_engine(config) as eng:
            assert isinstance(eng.broker, RedisBroker)
            broker, presence = eng.broker, eng.presence
            names = [f"served-{i}" for i in range(600)]  # more than one 512 batch
            for name in names:
                await broker.subscribe(name)
            sub = broker.subscribers[0]
            proc.kill()
            info = ClientInfo("u", "c")
            calls = [
                broker.publish("x", b"{}", HISTORY),
                broker.publish("x", b"{}", PublishOptions()),
                broker.history("x", HistoryFilter(limit=-1)),
                broker.remove_history("x"),
                broker.publish_join("x", info),
                broker.publish_control(b"{}"),
                presence.add_presence("x", "c", info),
                presence.remove_presence("x", "c", "u"),
                presence.presence("x"),
                presence.presence_stats("x"),
            ]
            for call in calls:
                assert await timed_failure(call) < fast
            await until(lambda: not sub.connected, fast)
            assert await timed_failure(broker.subscribe("during-outage")) < fast
            await broker.unsubscribe("during-outage")

            proc.start()  # empty: no persistence, no scripts loaded
            expected = {f"{broker.prefix}.client.{n}".encode() for n in names}
            await until(lambda: expected <= sub.active)
            numsub = dict(sync_redis(proc.port).pubsub_numsub(*expected))
            assert set(numsub.values()) == {1}
            assert len(numsub) == 600
            result = await broker.publish("served-7", b'"back"', HISTORY)
            assert result.position.offset == 1
            await wait_for(lambda: eng.handler.data_in("served-7") == [b'"back"'])

            proc.cli("SCRIPT", "FLUSH")
            assert (await broker.publish("served-7", b"{}", HISTORY)).position.offset == 2
            assert (await broker.history("served-7", HistoryFilter(limit=-1))).position.offset == 2
            await presence.add_presence("served-7", "c", info)
            assert list(await presence.presence("served-7")) == ["c"]

            proc.cli("CLIENT", "KILL", "TYPE", "pubsub")
            await until(lambda: sub.connects >= 3 and expected <= sub.active)
            await broker.publish("served-8", b'"again"', PublishOptions())
            await wait_for(lambda: eng.handler.data_in("served-8") == [b'"again"'])


# --------------------------------------------------------------------------- topologies


@pytest.mark.anyio
async def test_sharding_keeps_each_channel_on_its_shard(two_shards: list[RedisProcess]) -> None:
    config = redis_config([p.address for p in two_shards])
    async with started_engine(config) as eng:
        prefix = prefix_of(eng)
        channels = [f"spread-{i}" for i in range(40)]
        for ch in channels:
            await eng.broker.publish(ch, b"{}", HISTORY)
            await eng.presence.add_presence(ch, "c", ClientInfo("u", "c"))
        await eng.broker.subscribe("spread-0")
        clients = [sync_redis(p.port) for p in two_shards]
        for ch in channels:
            owner = shard_index(ch, 2)
            assert clients[owner].exists(f"{prefix}.stream.{ch}")
            assert clients[owner].exists(f"{prefix}.presence.data.{ch}")
            assert not clients[1 - owner].exists(f"{prefix}.stream.{ch}")
        assert {shard_index(ch, 2) for ch in channels} == {0, 1}
        topic = f"{prefix}.client.spread-0"
        owner = shard_index("spread-0", 2)
        assert dict(clients[owner].pubsub_numsub(topic)) == {topic.encode(): 1}
        assert dict(clients[1 - owner].pubsub_numsub(topic)) == {topic.encode(): 0}
        for client in clients:  # every node listens for control on every shard
            assert dict(client.pubsub_numsub(f"{prefix}.control"))[f"{prefix}.control".encode()]
            assert keys_without_ttl(client, prefix) == []


@pytest.mark.anyio
async def test_cluster_uses_hash_tags_and_sharded_pubsub(cluster: list[RedisProcess]) -> None:
    seeds = ",".join(p.address for p in cluster)
    prefix = unique_prefix()
    config = Config.from_dict(
        {"engine": {"type": "redis", "redis": {"cluster_address": [seeds], "prefix": prefix}}}
    )
    async with started_engine(config) as eng:
        assert isinstance(eng.broker, RedisBroker)
        channels = [f"slot-{i}" for i in range(12)]
        for ch in channels:
            await eng.broker.subscribe(ch)
        assert len(eng.broker.subscribers) == 4  # control + one per master
        counts = []
        for proc in cluster:
            topics = [f"{prefix}.client.{{{ch}}}" for ch in channels]
            raw = proc.cli("PUBSUB", "SHARDNUMSUB", *topics).split("\n")
            counts.append(sum(int(n) for n in raw[1::2]))
        assert sum(counts) == 12
        assert all(counts)  # spread over the three masters
        for ch in channels:
            await eng.broker.unsubscribe(ch)
        await until(lambda: not any(p.cli("PUBSUB", "SHARDCHANNELS", "*") for p in cluster))
        await eng.broker.publish("slot-1", b"{}", HISTORY)
        owner = redis_py.RedisCluster(host="127.0.0.1", port=cluster[0].port)
        try:
            assert owner.exists(f"{prefix}.stream.{{slot-1}}", f"{prefix}.stream.meta.{{slot-1}}")
        finally:
            owner.close()


@contextlib.contextmanager
def sentinel_for(master: RedisProcess) -> Iterator[int]:
    """A Redis Sentinel watching ``master`` as ``mymaster``; yields its port."""
    port = free_port()
    conf = Path(master.dir) / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {master.dir}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\n"
    )
    proc = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis sentinel did not start")
            time.sleep(0.02)
        yield port
    finally:
        proc.kill()
        proc.wait(5)


@pytest.mark.anyio
async def test_sentinel_finds_the_master() -> None:
    with redis_processes(1) as (master,), sentinel_for(master) as port:
        block = {
            "sentinel_address": [f"127.0.0.1:{port}"],
            "sentinel_master_name": "mymaster",
            "prefix": unique_prefix(),
        }
        config = Config.from_dict({"engine": {"type": "redis", "redis": block}})
        async with started_engine(config) as eng:
            await eng.broker.subscribe("s")
            result = await eng.broker.publish("s", b'"via sentinel"', HISTORY)
            assert result.position.offset == 1
            await wait_for(lambda: eng.handler.data_in("s") == [b'"via sentinel"'])
            await eng.presence.add_presence("s", "c", ClientInfo("u", "c"))
            assert list(await eng.presence.presence("s")) == ["c"]
            assert sync_redis(master.port).exists(f"{prefix_of(eng)}.stream.s")


@pytest.mark.anyio
async def test_addressed_control_tells_whether_a_node_listens() -> None:
    """Emulation forwarding relies on it: 404 when the addressed node is not there."""
    require_main_redis()
    config = redis_config("127.0.0.1:6379")
    async with started_engine(config) as a, started_engine(config) as b:
        assert await a.broker.publish_control(b"frame", node_id=b.handler.node_id)
        assert not await a.broker.publish_control(b"lost", node_id="no-such-node")
        assert await a.broker.publish_control(b"all")
        await wait_for(lambda: b.handler.controls == [b"frame", b"all"])
        await wait_for(lambda: a.handler.controls == [b"all"])
