#!/usr/bin/env python3
"""centrifuge-asgi's own cost per connect + subscribe, without sockets or an ASGI server.

Drives ``node.asgi_app()`` at the ASGI level: each simulated client is one task that
sends ``websocket.connect``, then a protocol ``connect`` and a ``subscribe`` in one frame
(as centrifuge-js does), and waits for both replies. The clients stay connected, as in
the suite's connect phase, so the heap grows as it does there. What this measures is what
the library adds to the server's own handshake (uvicorn's cost is in ``run.py``'s connect
rate, not here).

    python benchmarks/connect_cost.py [N]       # default 10,000 clients

It prints microseconds per connect under CPython's default garbage-collector settings
and under a larger first-generation threshold, since a growing heap of long-lived
connection objects makes the collector a large share of the cost.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from typing import Any

from centrifuge_asgi import Node

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


async def connect_one(app: Any, tasks: list[asyncio.Future[None]]) -> None:
    """Start one client and return once both replies were sent to it."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for frame in FRAMES:
        incoming.put_nowait(frame)
    replied = asyncio.get_running_loop().create_future()
    replies = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal replies
        if message["type"] == "websocket.send":
            replies += message["text"].count("\n") + 1
            if replies >= 2 and not replied.done():
                replied.set_result(None)

    tasks.append(asyncio.ensure_future(app(dict(SCOPE), incoming.get, send)))
    await replied


async def measure(n: int) -> float:
    """Microseconds per connect + subscribe for ``n`` clients that stay connected."""
    node = Node(CONFIG)
    app = node.asgi_app()
    tasks: list[asyncio.Future[None]] = []
    async with node:
        for _ in range(100):  # warm-up
            await connect_one(app, tasks)
        started = time.perf_counter()
        for _ in range(n):
            await connect_one(app, tasks)
        elapsed = time.perf_counter() - started
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    default = gc.get_threshold()
    results = {}
    for label, threshold in (("default", default), ("gen0 7000", (7000, 10, 10))):
        gc.collect()
        gc.set_threshold(*threshold)
        results[label] = asyncio.run(measure(n))
        gc.set_threshold(*default)
    for label, us in results.items():
        print(f"{label:>10}: {us:6.1f} µs per connect + subscribe ({n} clients kept open)")


if __name__ == "__main__":
    main()
