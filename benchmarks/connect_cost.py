#!/usr/bin/env python3
"""centrifuge-asgi's own cost per connect + subscribe, without sockets or an ASGI server.

Drives ``node.asgi_app()`` at the ASGI level: each simulated client is one task that
sends ``websocket.connect``, then a protocol ``connect`` and a ``subscribe`` in one frame
(as centrifuge-js does), and waits for both replies. The clients stay connected, as in
the suite's connect phase, so the heap grows as it does there. What this measures is what
the library adds to the server's own handshake (uvicorn's cost is in ``run.py``'s connect
rate, not here).

    python benchmarks/connect_cost.py [N]       # default 10,000 clients
    python benchmarks/connect_cost.py N --only centrifuge-asgi --collector-off
    python benchmarks/connect_cost.py N --only centrifuge-asgi --tracemalloc

It prints microseconds per connect under CPython's default garbage-collector settings
and under a larger first-generation threshold, and the same for the suite's ASGI floor
app under the same harness. Each line also gives the time spent in full (generation 2)
collections and how many objects the collector tracks per connection kept open: a
growing heap of long-lived connection objects makes the collector a large share of the
cost, since each full collection walks all of them.

``--only`` runs one peer once; with ``--collector-off`` the collector is disabled and not
inspected, so the run does only the connects and their teardown. That is the mode for an
instruction count that does not depend on the machine's load: the difference between two
runs of ``valgrind --tool=callgrind`` (say N = 1,000 and N = 200), divided by the
difference in N, is the instructions per connect + subscribe + teardown. With
``--tracemalloc`` the run reports what the N connections kept allocated (the heap's growth
per connection, harness included, and the library's lines that hold the most) and the
objects the collector tracks per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from centrifuge_asgi import Node

sys.path.insert(0, str(Path(__file__).parent / "servers"))
from peer_asgi_floor import build_app as build_floor_app

CONFIG = {
    "client": {"allow_anonymous_connect_without_token": True},
    "channel": {
        "without_namespace": {
            "allow_subscribe_for_client": True,
            "allow_subscribe_for_anonymous": True,
        }
    },
}
# centrifuge-js sends the connect command and the subscribe commands of subscriptions made
# before connect() in one frame, one command per line; so does the suite's load generator.
FRAMES = [
    {"type": "websocket.connect"},
    {
        "type": "websocket.receive",
        "text": "\n".join(
            json.dumps(cmd)
            for cmd in ({"id": 1, "connect": {}}, {"id": 2, "subscribe": {"channel": "c"}})
        ),
    },
]
SCOPE = {
    "type": "websocket",
    "path": "/connection/websocket",
    "root_path": "",
    "query_string": b"",
    "subprotocols": [],
    "headers": [(b"host", b"localhost"), (b"origin", b"http://localhost")],
}


FLOOR_FRAMES = [
    {"type": "websocket.connect"},
    {"type": "websocket.receive", "text": json.dumps({"op": "sub", "ch": "c"})},
]


@dataclass
class Cost:
    """Per connect: wall time, time in full (generation 2) collections, and the objects
    the collector tracks that each connection leaves behind (harness included)."""

    us: float
    full_gc_us: float
    tracked_objects: float


async def connect_one(
    app: Any, tasks: list[asyncio.Future[None]], frames: list[dict[str, Any]], replies: int
) -> None:
    """Start one client and return once ``replies`` replies were sent to it."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for frame in frames:
        incoming.put_nowait(frame)
    replied = asyncio.get_running_loop().create_future()
    got = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal got
        if message["type"] == "websocket.send":
            got += message["text"].count("\n") + 1
            if got >= replies and not replied.done():
                replied.set_result(None)

    tasks.append(asyncio.ensure_future(app(dict(SCOPE), incoming.get, send)))
    await replied


async def started_peer(
    stack: contextlib.AsyncExitStack, peer: str
) -> tuple[Node | None, Any, Any, int]:
    """The peer's app (a started node's, or the floor's), its frames and reply count."""
    if peer == "floor":
        return None, build_floor_app(argparse.Namespace()), FLOOR_FRAMES, 1
    node = await stack.enter_async_context(Node(CONFIG))
    return node, node.asgi_app(), FRAMES, 2


async def measure(n: int, peer: str, freeze: bool = False, inspect_gc: bool = True) -> Cost:
    """The cost per connect + subscribe for ``n`` clients that stay connected; with
    ``freeze``, ``gc.freeze()`` after start-up and warm-up (as ``serve`` does). Without
    ``inspect_gc`` the collector is neither run nor counted (0 tracked objects)."""
    tasks: list[asyncio.Future[None]] = []
    async with contextlib.AsyncExitStack() as stack:
        node, app, frames, replies = await started_peer(stack, peer)
        if node is not None and not inspect_gc:
            # Under valgrind a connect takes some 50 times longer, so the pacer's 10 ms
            # slice (pacing.py) would run out in most connects, as it does not
            # natively, and the count would depend on timing: an unbounded slice.
            node.pacer.slice = 3600.0
        for _ in range(100):  # warm-up
            await connect_one(app, tasks, frames, replies)
        if not inspect_gc:
            started = time.perf_counter()
            for _ in range(n):
                await connect_one(app, tasks, frames, replies)
            elapsed = time.perf_counter() - started
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return Cost(elapsed / n * 1e6, 0.0, 0.0)
        gc.collect()
        if freeze:
            gc.freeze()
        tracked = len(gc.get_objects()) + gc.get_freeze_count()
        full_gc = 0.0
        started_gc = 0.0

        def on_gc(phase: str, info: dict[str, int]) -> None:
            nonlocal full_gc, started_gc
            if info["generation"] != 2:
                return
            if phase == "start":
                started_gc = time.perf_counter()
            else:
                full_gc += time.perf_counter() - started_gc

        gc.callbacks.append(on_gc)
        try:
            started = time.perf_counter()
            for _ in range(n):
                await connect_one(app, tasks, frames, replies)
            elapsed = time.perf_counter() - started
        finally:
            gc.callbacks.remove(on_gc)
        gc.collect()
        tracked = len(gc.get_objects()) + gc.get_freeze_count() - tracked
        gc.unfreeze()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return Cost(elapsed / n * 1e6, full_gc / n * 1e6, tracked / n)


async def kept(n: int, peer: str, top: int = 25) -> None:
    """Print what ``n`` connections keep allocated, per connection (tracemalloc)."""
    import tracemalloc

    tasks: list[asyncio.Future[None]] = []
    async with contextlib.AsyncExitStack() as stack:
        _, app, frames, replies = await started_peer(stack, peer)
        for _ in range(100):  # warm-up
            await connect_one(app, tasks, frames, replies)
        gc.collect()
        tracked = len(gc.get_objects())
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for _ in range(n):
            await connect_one(app, tasks, frames, replies)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        diff = [s for s in after.compare_to(before, "lineno") if s.size_diff]
        total = sum(s.size_diff for s in diff)
        diff = [s for s in diff if "centrifuge_asgi" in s.traceback[0].filename]
        del before, after  # the snapshots' traces are tracked tuples
        gc.collect()
        tracked = len(gc.get_objects()) - tracked
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(f"heap growth {total / n:.0f} B per connection; {tracked / n:.1f} tracked objects")
    for stat in diff[:top]:
        where = stat.traceback[0]
        name = where.filename.split("/centrifuge_asgi/")[-1]
        print(
            f"  {stat.size_diff / n:7.1f} B {stat.count_diff / n:5.2f} blocks"
            f"  {name}:{where.lineno}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description="centrifuge-asgi's own cost per connect")
    ap.add_argument("n", nargs="?", type=int, default=10_000, help="clients kept open")
    ap.add_argument("--only", choices=("centrifuge-asgi", "floor"), help="one peer, one run")
    ap.add_argument(
        "--collector-off", action="store_true", help="with --only: gc.disable(), no gc figures"
    )
    ap.add_argument("--tracemalloc", action="store_true", help="with --only: what stays allocated")
    args = ap.parse_args()
    n = args.n
    if args.only and args.tracemalloc:
        asyncio.run(kept(n, "floor" if args.only == "floor" else "us"))
        return
    if args.only:
        if args.collector_off:
            gc.disable()
        peer = "floor" if args.only == "floor" else "us"
        cost = asyncio.run(measure(n, peer, inspect_gc=not args.collector_off))
        print(f"{args.only}: {cost.us:6.1f} µs per connect + subscribe ({n} clients)")
        return
    default = gc.get_threshold()
    runs = (
        ("centrifuge-asgi", "us", default, False),
        ("centrifuge-asgi, gen0 7000", "us", (7000, 10, 10), False),
        ("centrifuge-asgi, gc.freeze()", "us", default, True),
        ("ASGI floor app", "floor", default, False),
        ("ASGI floor app, gc.freeze()", "floor", default, True),
    )
    print(f"{n} clients kept open; per connect + subscribe:")
    for label, peer, threshold, freeze in runs:
        gc.collect()
        gc.set_threshold(*threshold)
        try:
            cost = asyncio.run(measure(n, peer, freeze))
        finally:
            gc.set_threshold(*default)
        print(
            f"{label:>28}: {cost.us:6.1f} µs, of which full collections {cost.full_gc_us:5.1f} µs;"
            f" {cost.tracked_objects:4.1f} tracked objects left behind"
        )


if __name__ == "__main__":
    main()
