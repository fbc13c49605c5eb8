#!/usr/bin/env python3
"""What node-to-node requests cost over Redis (127.0.0.1:6379), two nodes in one process.

- ``cluster_info``: ``node.cluster_info()``, which asks the other node for its statistics
  (the server API's ``info``);
- ``emulation acknowledged``: an ``/emulation`` frame forwarded to the node holding its
  stream, waiting for that node's reply (how nodes that announce replies are sent frames);
- ``emulation sent without waiting``: the same frame sent as to an older node, which sends
  no reply.

Milliseconds per request (median and 99th percentile); the stream takes every frame at
once, so the numbers are the broker round trips and the library's own work.

    python benchmarks/cluster_requests.py [REQUESTS]
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid

import anyio

from centrifuge_asgi import Node


class _Stream:
    async def feed(self, frame: bytes) -> bool:
        return True


def _line(label: str, times: list[float]) -> str:
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return f"{label}: median {statistics.median(times):.3f} ms, p99 {p99:.3f} ms ({len(times)})"


async def main(n: int) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    cfg = {"engine": {"type": "redis", "redis": {"address": "127.0.0.1:6379", "prefix": prefix}}}
    a, b = Node(cfg), Node(cfg)
    async with a, b:
        a.registry.emulation_streams["s"] = _Stream()
        with anyio.fail_after(10):  # until b heard a's announcement
            while "emulation" not in b.cluster._answers.get(a.node_id, ()):  # noqa: ASYNC110
                await anyio.sleep(0.05)
        times = []
        for _ in range(n):
            started = time.perf_counter()
            await b.cluster_info()
            times.append((time.perf_counter() - started) * 1e3)
        print(_line("cluster_info", times))
        for label in ("emulation acknowledged", "emulation sent without waiting"):
            if label.endswith("waiting"):
                b.cluster._answers[a.node_id] = frozenset()  # as an older node announces
            times = []
            for _ in range(n):
                started = time.perf_counter()
                assert await b.cluster.forward_emulation(a.node_id, "s", b'{"id":1}', 6.0)
                times.append((time.perf_counter() - started) * 1e3)
            print(_line(label, times))


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
