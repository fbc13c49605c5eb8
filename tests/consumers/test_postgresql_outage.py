"""A PostgreSQL restart in the middle of draining an outbox loses nothing.

A throwaway cluster (Debian's ``initdb`` and ``pg_ctl``, a temporary directory, a free
port, ``fsync=off``) is stopped with ``-m immediate`` (a crash) while the consumer is
half-way through 200 rows, kept down while the consumer reports ``retrying``, started
again, and given 100 more rows: every publication arrives, once, in order.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from centrifuge_asgi.config import Config
from centrifuge_asgi.consumers import CommandDispatcher, outbox_table, run_consumers, statuses
from centrifuge_asgi.node import Node
from tests.conditions import module
from tests.interop.serve_process import free_port
from tests.interop.support import make_config

from .conftest import unavailable, until

pytestmark = [pytest.mark.anyio]

asyncpg = module("asyncpg")


class Cluster:
    """A PostgreSQL cluster of its own, run as user postgres when the tests run as root."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir, self.root = bindir, root
        self.data = root / "data"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    tools = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not tools:
        unavailable("PostgreSQL server binaries (Debian's postgresql package) are not installed")
    root = Path(tempfile.mkdtemp(prefix="cf_pg_"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    c = Cluster(Path(tools[-1]).parent, root)
    try:
        c.init()
        c.start()
        yield c
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            c.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


async def insert(dsn: str, numbers: range) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for n in numbers:
                await outbox_table.publish(conn, "outage:x", n)
    finally:
        await conn.close()


async def test_a_restart_mid_stream_loses_nothing(cluster: Cluster) -> None:
    conn = await asyncpg.connect(cluster.dsn)
    try:
        for sql in outbox_table.create_table_sql():
            await conn.execute(sql)
    finally:
        await conn.close()
    cfg = make_config()
    cfg["channel"]["namespaces"].append(
        {"name": "outage", "history_size": 1000, "history_ttl": "300s"}
    )
    pg = {
        "dsn": cluster.dsn,
        "outbox_table_name": "centrifugo_outbox",
        "partition_select_limit": 10,
        "partition_poll_interval": "50ms",
    }
    cfg["consumers"] = [{"name": "pg", "enabled": False, "type": "postgresql", "postgresql": pg}]
    node = Node(cfg)
    real = CommandDispatcher(node).dispatch

    async def slow(method: str, payload: bytes) -> bool:  # ~200 commands a second at most
        await anyio.sleep(0.005)
        return await real(method, payload)

    async def delivered() -> list[Any]:
        page = await node.history("outage:x", limit=-1)
        return [json.loads(p.data) for p in page.publications]

    # the configured consumer, run here rather than by the node, to slow its commands down
    item = {**cfg["consumers"][0], "enabled": True}
    configs = Config.from_dict({"consumers": [item]}).consumers
    async with node:
        await insert(cluster.dsn, range(200))
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_consumers, node, slow, configs)
            await until(lambda: _at_least(delivered, 50))
            await anyio.to_thread.run_sync(cluster.stop, "immediate")
            status = statuses(node)["pg"]
            await until(lambda: _true(status.state == "retrying"))
            got_while_down = len(await delivered())
            assert got_while_down < 200, "the restart must land mid-stream"
            await anyio.sleep(0.5)
            await anyio.to_thread.run_sync(cluster.start)
            await insert(cluster.dsn, range(200, 300))
            await until(lambda: _at_least(delivered, 300), within=30)
            await anyio.sleep(0.2)
            assert status.state == "running"  # recovered by itself
            tg.cancel_scope.cancel()
        assert await delivered() == list(range(300))  # nothing lost, nothing twice, in order
    assert status.errors >= 1


async def _at_least(read: Any, count: int) -> bool:
    return len(await read()) >= count


async def _true(value: bool) -> bool:
    return value
