#!/usr/bin/env python3
"""What map channels cost on the memory and Redis (127.0.0.1:6379) map brokers, in process.

- ``map_publish/s``: ``node.map_publish`` of KEYS distinct keys into one persistent map
  channel, one after another from one task (the Redis figure is one script round trip each);
- ``state``: reading all of them back in pages of 100 (``node.map_read_state`` with the
  cursor), as a map subscribe's state phase does.

    python benchmarks/map_broker.py [KEYS]
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

from centrifuge_asgi import Node


def config(broker: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "channel": {
            "namespaces": [
                {"name": "bench", "subscription_type": "map", "map": {"mode": "persistent"}}
            ]
        }
    }
    if broker == "redis":
        prefix = "bench-map-" + uuid.uuid4().hex[:8]
        cfg["map_broker"] = {"type": "redis", "redis": {"prefix": prefix}}
    return cfg


async def run(broker: str, keys: int) -> str:
    async with Node(config(broker)) as node:
        started = time.perf_counter()
        for i in range(keys):
            await node.map_publish("bench:1", f"k{i:07d}", {"v": i})
        rate = keys / (time.perf_counter() - started)
        started = time.perf_counter()
        cursor, pages, seen = "", 0, 0
        while True:
            page = await node.map_read_state("bench:1", cursor=cursor, limit=100)
            seen, pages, cursor = seen + len(page.publications), pages + 1, page.cursor
            if not cursor:
                break
        took = time.perf_counter() - started
        await node.map_clear("bench:1")
    assert seen == keys
    state = f"state: {seen} keys, {pages} pages, {took * 1000:.0f} ms"
    return f"{broker:6} {rate:8.0f} map_publish/s   {state}"


def main() -> None:
    keys = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    for broker in ("memory", "redis"):
        print(asyncio.run(run(broker, keys)))


if __name__ == "__main__":
    main()
