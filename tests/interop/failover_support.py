"""Helpers of ``test_failover.py``: private Redis Sentinel groups, Redis Clusters with
replicas and nats-servers on loopback, a publisher that times every call, a recording
subscriber, and the check that what a client saw is the truth.

Every process lives in its own temporary directory on spare ports and is killed (SIGKILL,
then waited for) when its context manager exits, also when the test failed. A missing
binary skips the test locally and fails it under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from centrifuge import (
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

from centrifuge_asgi.engines.base import StreamPosition
from centrifuge_asgi.errors import ClientError
from centrifuge_asgi.node import Node
from tests.conditions import unavailable
from tests.unit.test_redis_engine import RedisProcess, free_port, port_open, redis_py

if TYPE_CHECKING:
    from conftest import LiveServer

SETUP_SECONDS = 30.0  # bound on any process or topology becoming ready
MASTER = "mymaster"


def binary(name: str, *fallbacks: str) -> str:
    """The path of ``name`` (or of an existing fallback path); skip or fail (CI) if none."""
    found = shutil.which(name) or next((p for p in fallbacks if Path(p).is_file()), None)
    if found is None:
        unavailable(f"{name} is not installed (apt-get install {name})")
    assert found is not None
    return found


def wait_until(predicate: Callable[[], object], what: str, timeout: float = SETUP_SECONDS) -> None:
    """Poll (synchronously, every 50 ms) until ``predicate()`` is true, or raise."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached within {timeout} s")
        time.sleep(0.05)


def info(proc: RedisProcess, section: str) -> dict[str, str]:
    """``INFO <section>`` of a Redis as a dict (empty when it does not answer)."""
    try:
        text = proc.cli("INFO", section)
    except (OSError, subprocess.SubprocessError):
        return {}
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def in_sync(replica: RedisProcess, master: RedisProcess) -> bool:
    """The replica's link is up and it has applied everything the master has sent."""
    r, m = info(replica, "replication"), info(master, "replication")
    return (
        r.get("master_link_status") == "up"
        and bool(m.get("master_repl_offset"))
        and r.get("slave_repl_offset") == m.get("master_repl_offset")
    )


# Fast full syncs: Redis 7 waits 5 s for more replicas before a diskless sync by default.
REPLICATION = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")


def lag_behind(replica: RedisProcess) -> None:
    """Make ``replica`` stop applying its master's stream (it still reads it and answers
    PING and INFO): what an asynchronous replica that fell behind looks like. When the
    master then dies, the replica drops what it read but did not apply."""
    replica.cli("CLIENT", "PAUSE", str(int(SETUP_SECONDS * 1000)), "WRITE")


def catch_up_after_master_died(replica: RedisProcess) -> None:
    """After the master's death: wait until the replica saw its link drop, then resume it."""
    wait_until(
        lambda: info(replica, "replication").get("master_link_status") == "down",
        "replica noticed its master died",
        10,
    )
    replica.cli("CLIENT", "UNPAUSE")


# --------------------------------------------------------------------------- Sentinel


class SentinelProcess:
    """``redis-server <conf> --sentinel`` on a spare port, watching ``MASTER``."""

    def __init__(self, directory: Path, master_port: int, quorum: int = 2) -> None:
        self.port = free_port()
        self.conf = directory / f"sentinel-{self.port}.conf"
        # Sentinels rewrite their file: each has its own. failover-timeout also spaces
        # retries (twice it) after a split vote, so it is short.
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {MASTER} 800\n"
            f"sentinel failover-timeout {MASTER} 3000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        self.proc = subprocess.Popen(
            [binary("redis-server"), str(self.conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc = self.proc
        wait_until(
            lambda: port_open("127.0.0.1", self.port) or proc.poll() is not None,
            f"sentinel on {self.port} started",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"sentinel on port {self.port} exited")
        return self

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()

    def master_state(self) -> dict[str, str]:
        """``SENTINEL MASTER mymaster`` as a dict."""
        try:
            fields = self.cli("SENTINEL", "MASTER", MASTER).splitlines()
        except (OSError, subprocess.SubprocessError):
            return {}
        return dict(zip(fields[::2], fields[1::2], strict=False))

    def master_port(self) -> int:
        try:
            _, port = self.cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER).splitlines()
            return int(port)
        except (OSError, subprocess.SubprocessError, ValueError):
            return 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


@dataclass
class SentinelGroup:
    """One master, one replica and three sentinels (quorum 2) on loopback."""

    master: RedisProcess
    replica: RedisProcess
    sentinels: list[SentinelProcess]

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def promoted(self) -> bool:
        """A majority of the sentinels name the replica as the master, and it is one."""
        agreeing = sum(s.master_port() == self.replica.port for s in self.sentinels)
        return agreeing >= 2 and info(self.replica, "replication").get("role") == "master"


@contextlib.contextmanager
def sentinel_group() -> Iterator[SentinelGroup]:
    binary("redis-server")
    binary("redis-cli")
    directory = Path(tempfile.mkdtemp(prefix="sentinel-test-"))
    procs: list[RedisProcess] = []
    sentinels: list[SentinelProcess] = []
    try:
        master = RedisProcess(*REPLICATION)
        procs.append(master.start())
        replica = RedisProcess("--replicaof", "127.0.0.1", str(master.port), *REPLICATION)
        procs.append(replica.start())
        master.cli("SET", "sync-probe", "1")
        wait_until(lambda: in_sync(replica, master), "replica in sync")
        for _ in range(3):
            sentinels.append(SentinelProcess(directory, master.port).start())

        def ready() -> bool:
            # Each sentinel must know the other two (hello messages, every 2 s) and the
            # replica before a failover can be voted and carried out.
            states = [s.master_state() for s in sentinels]
            return all(
                st.get("num-other-sentinels") == "2" and st.get("num-slaves") == "1"
                for st in states
            )

        wait_until(ready, "sentinels know each other and the replica")
        yield SentinelGroup(master, replica, sentinels)
    finally:
        for sentinel in sentinels:
            sentinel.stop()
        for proc in procs:
            proc.stop()
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- Cluster


@dataclass
class ClusterNode:
    proc: RedisProcess
    node_id: str
    master_id: str  # "" for a master


@dataclass
class RedisClusterGroup:
    """Three masters with one replica each on loopback."""

    procs: list[RedisProcess]

    @property
    def seeds(self) -> str:
        return ",".join(p.address for p in self.procs)

    def live(self) -> list[RedisProcess]:
        return [p for p in self.procs if p.proc is not None]

    def nodes(self) -> list[ClusterNode]:
        """Who is who, as the first live node sees it (``CLUSTER NODES``)."""
        by_port = {p.port: p for p in self.procs}
        out = []
        for line in self.live()[0].cli("CLUSTER", "NODES").splitlines():
            parts = line.split()
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            master_id = parts[3] if parts[3] != "-" else ""
            out.append(ClusterNode(by_port[port], parts[0], master_id))
        return out

    def owner(self, key: str) -> tuple[RedisProcess, RedisProcess]:
        """The master serving ``key``'s slot, and its replica."""
        master = next(p for p in self.procs if p.port == slot_master_port(self.live()[0], key))
        nodes = self.nodes()
        master_id = next(n.node_id for n in nodes if n.proc is master)
        replica = next(n.proc for n in nodes if n.master_id == master_id)
        return master, replica

    def ok(self) -> bool:
        """Every live node reports ``cluster_state:ok``."""
        try:
            return all("cluster_state:ok" in p.cli("CLUSTER", "INFO") for p in self.live())
        except (OSError, subprocess.SubprocessError):
            return False

    def serves(self, key: str, proc: RedisProcess) -> bool:
        """Every live node names ``proc`` as the master of ``key``'s slot."""
        return all(slot_master_port(p, key) == proc.port for p in self.live())


def slot_master_port(proc: RedisProcess, key: str) -> int:
    """The port of the master of ``key``'s slot, by ``proc``'s view (0: unknown)."""
    try:
        with redis_py.Redis(port=proc.port, socket_timeout=5) as client:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
    except (redis_py.RedisError, OSError):
        pass
    return 0


@contextlib.contextmanager
def redis_cluster_with_replicas() -> Iterator[RedisClusterGroup]:
    binary("redis-server")
    cli = binary("redis-cli")
    extra = ("--cluster-enabled", "yes", "--cluster-node-timeout", "1000", *REPLICATION)
    procs: list[RedisProcess] = []
    try:
        for _ in range(6):
            procs.append(RedisProcess(*extra).start())
        addresses = [p.address for p in procs]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            timeout=SETUP_SECONDS,
            check=True,
        )
        group = RedisClusterGroup(procs)
        wait_until(group.ok, "cluster_state:ok on every node")

        def replicas_synced() -> bool:
            nodes = group.nodes()
            ids = {n.node_id: n.proc for n in nodes}
            replicas = [n for n in nodes if n.master_id]
            return len(replicas) == 3 and all(in_sync(n.proc, ids[n.master_id]) for n in replicas)

        wait_until(replicas_synced, "every replica in sync")
        yield group
    finally:
        for proc in procs:
            proc.stop()


# --------------------------------------------------------------------------- NATS


class NatsServer:
    """A private ``nats-server`` on a spare port; :meth:`start` after :meth:`kill` reuses it."""

    def __init__(self) -> None:
        self.binary = binary("nats-server", "/usr/sbin/nats-server")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="nats-test-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.proc = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port)],
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc = self.proc
        wait_until(
            lambda: port_open("127.0.0.1", self.port) or proc.poll() is not None,
            f"nats-server on {self.port} started",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server on port {self.port} exited")
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- traffic


@dataclass
class Attempt:
    """One publish: its number, how long it took, and its result or error code."""

    n: int
    started: float
    elapsed: float
    position: StreamPosition | None = None
    code: int = 0

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass
class Publisher:
    """Publishes ``{"n": 1}``, ``{"n": 2}``, ... one after another through a node's
    in-process API on its own server loop, recording every attempt."""

    srv: LiveServer
    node: Node
    channel: str
    interval: float = 0.02
    attempts: list[Attempt] = field(default_factory=list)
    _stop: bool = False

    async def run(self) -> None:
        n = 0
        while not self._stop:
            n += 1
            started = time.monotonic()
            attempt = Attempt(n, started, 0.0)
            try:
                # acall bounds the call to 10 s: a hang fails the test with TimeoutError
                attempt.position = await self.srv.acall(self.node.publish(self.channel, {"n": n}))
            except ClientError as exc:
                attempt.code = exc.code
            attempt.elapsed = time.monotonic() - started
            self.attempts.append(attempt)
            await anyio.sleep(self.interval)

    def stop(self) -> None:
        self._stop = True

    def acked(self, after: float = 0.0) -> list[Attempt]:
        return [a for a in self.attempts if a.ok and a.started >= after]

    async def wait_acked(self, count: int, after: float = 0.0, within: float = 20.0) -> None:
        with anyio.move_on_after(within):
            while len(self.acked(after)) < count:  # noqa: ASYNC110
                await anyio.sleep(0.02)
            return
        codes = [a.code for a in self.attempts if a.started >= after]
        raise AssertionError(f"{count} publishes not acknowledged within {within} s: {codes}")


class Watcher(SubscriptionEventHandler):
    """Every subscription event in order: ``("subscribed", ctx)``, ``("pub", ctx)``,
    ``("unsubscribed", ctx)``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.events.append(("subscribed", ctx))

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.events.append(("unsubscribed", ctx))

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.events.append(("pub", ctx))

    def numbers(self) -> list[int]:
        return [int(ctx.pub.data["n"]) for kind, ctx in self.events if kind == "pub"]

    def subscribes(self) -> list[SubscribedContext]:
        return [ctx for kind, ctx in self.events if kind == "subscribed"]

    async def wait_for(self, n: int, within: float) -> None:
        with anyio.move_on_after(within):
            while n not in self.numbers():  # noqa: ASYNC110
                await anyio.sleep(0.02)
            return
        raise AssertionError(f"n={n} not delivered within {within} s; got {self.numbers()}")


def untruthful(acked: list[Attempt], events: list[tuple[str, Any]]) -> list[str]:
    """What a positioned, recoverable subscriber saw that is not the truth (empty: fine).

    The rules, for publications numbered in the order they were published (one
    publisher, one at a time):

    * each segment (from a subscribe to the next) starts at the position its subscribe
      returned and continues it offset by offset: nothing silently skipped, nothing twice
      (the first subscribe comes before the first publish);
    * a subscribe that recovered continues the previous segment's epoch and offset;
    * numbers only grow: no publication delivered twice or out of order;
    * every acknowledged publication was delivered, unless a subscribe that did not
      recover (``recovered: false``: the client was told) lies between the deliveries
      on either side of it.
    """
    problems: list[str] = []
    timeline: list[tuple[str, int]] = []  # ("pub", n) / ("told", 0) in delivery order
    epoch, offset = "", -1
    last_n = 0
    for kind, ctx in events:
        if kind == "subscribed":
            position = ctx.stream_position
            if ctx.was_recovering and ctx.recovered:
                if (position.epoch, position.offset) != (epoch, offset):
                    problems.append(
                        f"recovered at {position} but the client was at {epoch}/{offset}"
                    )
            elif ctx.was_recovering:
                timeline.append(("told", 0))
            epoch, offset = position.epoch, position.offset
        elif kind == "pub":
            n = int(ctx.pub.data["n"])
            if ctx.pub.offset != offset + 1:
                problems.append(f"n={n} at offset {ctx.pub.offset} after offset {offset}")
            offset = ctx.pub.offset
            if n <= last_n:
                problems.append(f"n={n} delivered after n={last_n} (duplicate or reordered)")
            last_n = max(last_n, n)
            timeline.append(("pub", n))
    delivered = {n for kind, n in timeline if kind == "pub"}
    for attempt in acked:
        if attempt.n in delivered:
            continue
        told = False
        for kind, n in timeline:
            if kind == "pub" and n > attempt.n:
                break
            if kind == "told":
                told = True
            elif n < attempt.n:
                told = False  # only a notice after the last delivery before it counts
        if not told:
            problems.append(
                f"acknowledged n={attempt.n} at {attempt.position} never delivered, "
                "and the client was not told (silent gap)"
            )
    return problems
