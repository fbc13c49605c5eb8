#!/usr/bin/env python3
"""How fast the ``postgresql`` consumer drains an outbox table (docs/benchmarks.md).

Needs PostgreSQL (default ``postgresql://postgres@127.0.0.1:5432/test``; ``--dsn``) and
asyncpg. Each run uses a schema of its own, dropped at the end. Two measurements:

* drain: ``--rows`` (10,000) ``publish`` rows are committed while no consumer runs, then
  the consumer starts; throughput is rows / time until the last one was fanned out, and
  each row's latency is from the consumer's start to its fan-out (a row waits for the
  rows before it);
* steady: the consumer runs (LISTEN/NOTIFY on, and off with the default 300 ms polling)
  while rows are committed one transaction each at ``--rate`` per second; the latency of
  each from the moment its ``COMMIT`` is sent to its fan-out.

The node uses the memory engine; a publication is "fanned out" when the server API
executor returned from it (the memory broker delivers synchronously to local sessions).

    .venv/bin/python benchmarks/consumers_outbox.py
    .venv/bin/python benchmarks/consumers_outbox.py --rows 10000 --partitions 4 --limit 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import anyio
import asyncpg

from centrifuge_asgi import Node
from centrifuge_asgi.config import Config
from centrifuge_asgi.consumers import CommandDispatcher, outbox_table, run_consumers, statuses

CHANNEL = "bench"


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50_ms": round(at(0.50), 1),
        "p95_ms": round(at(0.95), 1),
        "p99_ms": round(at(0.99), 1),
        "max_ms": round(max(ordered) * 1000, 1),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 1),
    }


class Clock:
    """Commit times (by sequence number) and fan-out times of the publications."""

    def __init__(self) -> None:
        self.committed: dict[int, float] = {}
        self.delivered: dict[int, float] = {}
        self.done = anyio.Event()
        self.expected = 0

    def latencies(self) -> list[float]:
        return [self.delivered[n] - self.committed[n] for n in self.delivered]


async def measure(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    table, wake = f"{schema}.centrifugo_outbox", f"{schema}_wake"
    admin = await asyncpg.connect(args.dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    for sql in outbox_table.create_table_sql(table, wake):
        await admin.execute(sql)
    clock = Clock()
    notify = mode != "steady-poll"
    pg = {
        "dsn": args.dsn,
        "outbox_table_name": table,
        "num_partitions": args.partitions,
        "partition_select_limit": args.limit,
        "partition_notification_channel": wake if notify else "",
    }
    item = {"name": "bench", "enabled": True, "type": "postgresql", "postgresql": pg}
    configs = Config.from_dict({"consumers": [item]}).consumers
    node = Node()  # the consumer runs below, with a dispatcher that takes the time
    real = CommandDispatcher(node).dispatch

    async def timed(method: str, payload: bytes) -> bool:
        ran = await real(method, payload)
        n = json.loads(payload)["data"]
        clock.delivered[n] = time.perf_counter()
        if len(clock.delivered) >= clock.expected:
            clock.done.set()
        return ran

    async def insert_backlog() -> None:
        rows = args.rows
        clock.expected = rows
        batch = 1000
        for start in range(0, rows, batch):
            async with admin.transaction():
                for n in range(start, min(rows, start + batch)):
                    await outbox_table.publish(
                        admin, CHANNEL, n, table=table, partition=n % args.partitions
                    )
            now = time.perf_counter()
            for n in range(start, min(rows, start + batch)):
                clock.committed[n] = now

    async def trickle() -> None:
        clock.expected = args.steady
        for n in range(args.steady):
            tx = admin.transaction()
            await tx.start()
            await outbox_table.publish(
                admin, CHANNEL, n, table=table, partition=n % args.partitions
            )
            clock.committed[n] = time.perf_counter()  # COMMIT is sent now (the NOTIFY with it)
            await tx.commit()
            await anyio.sleep(1 / args.rate)

    result: dict[str, Any] = {"mode": mode}
    try:
        async with node:
            if mode == "drain":
                await insert_backlog()
            async with anyio.create_task_group() as tg:
                started = time.perf_counter()
                if mode == "drain":  # the backlog's latency counts from the consumer's start
                    clock.committed = dict.fromkeys(clock.committed, started)
                tg.start_soon(run_consumers, node, timed, configs)
                if mode == "drain":
                    with anyio.fail_after(600):
                        await clock.done.wait()
                    elapsed = time.perf_counter() - started
                    result.update(
                        rows=args.rows,
                        seconds=round(elapsed, 2),
                        rows_per_second=round(args.rows / elapsed),
                    )
                else:
                    await anyio.sleep(0.5)  # the LISTEN is set up
                    await trickle()
                    with anyio.fail_after(60):
                        await clock.done.wait()
                    result.update(rows=args.steady, rate=args.rate)
                while await admin.fetchval(f"SELECT count(*) FROM {table}"):  # noqa: ASYNC110
                    await anyio.sleep(0.05)  # the last batch's DELETE committed
                result["errors"] = statuses(node)["bench"].errors
                tg.cancel_scope.cancel()
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
    result.update(percentiles(clock.latencies()))
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--limit", type=int, default=100, help="partition_select_limit")
    parser.add_argument("--steady", type=int, default=500, help="rows of the steady runs")
    parser.add_argument("--rate", type=float, default=100.0, help="steady rows per second")
    args = parser.parse_args()
    modes = ("drain", "steady-notify", "steady-poll") if args.steady else ("drain",)
    for mode in modes:
        print(json.dumps(await measure(args, mode)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
