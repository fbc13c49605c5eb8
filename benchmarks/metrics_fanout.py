#!/usr/bin/env python3
"""What Prometheus metrics cost the fan-out: one channel, N subscribers, in process.

An in-process node (memory engine, no sockets) with N real sessions (JSON, WebSocket)
subscribed to one channel; P publications through ``node.publish``. Measured: the CPU
time of one publication (store, fan-out to every outbox, and with ``prometheus.enabled``
the metrics: once per fan-out, from the channel's subscriber tally), the median over the
publications with the garbage collector paused, per delivery, with metrics off and on.

    python benchmarks/metrics_fanout.py [--subscribers N] [--publications P] [--repeat R]

The two configurations run R times each, interleaved, and the least disturbed run (the
lowest median) of each counts: the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from typing import Any

from centrifuge_asgi import Node
from centrifuge_asgi.session import TransportInfo


def config(metrics: bool) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "client": {"allow_anonymous_connect_without_token": True},
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
            }
        },
    }
    if metrics:
        cfg["prometheus"] = {"enabled": True}
    return cfg


async def run(subscribers: int, publications: int, *, metrics: bool) -> float:
    """Median CPU microseconds per delivery of one publication."""
    async with Node(config(metrics)) as node:
        sessions = []
        for _ in range(subscribers):
            s = node.create_session(TransportInfo())
            await s.handle_frame(json.dumps({"id": 1, "connect": {}}).encode())
            await s.handle_frame(json.dumps({"id": 2, "subscribe": {"channel": "c"}}).encode())
            s.outbox.drain()
            sessions.append(s)
        cpu: list[float] = []
        gc.collect()
        gc.disable()
        try:
            for n in range(publications):
                start = time.process_time()
                await node.publish("c", {"n": n})
                cpu.append(time.process_time() - start)
                for s in sessions:
                    s.outbox.drain()
        finally:
            gc.enable()
        for s in sessions:
            await s.finish()
    return statistics.median(cpu) / subscribers * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--publications", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    off: list[float] = []
    on: list[float] = []
    for _ in range(args.repeat):
        off.append(await run(args.subscribers, args.publications, metrics=False))
        on.append(await run(args.subscribers, args.publications, metrics=True))
    print(
        f"{args.subscribers} subscribers, {args.publications} publications: "
        f"metrics off {min(off):.3f} µs/delivery, on {min(on):.3f} µs/delivery, "
        f"ratio on/off {min(on) / min(off):.3f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
