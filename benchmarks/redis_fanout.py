"""Publications per second and latency across two processes over Redis, with Redis's cost.

A child process publishes ``--count`` publications (history on: the Lua script path)
into ``--channels`` channels; this process subscribes to them through its own
RedisBroker and measures end-to-end latency (publish call → handler) and throughput.
Redis's own cost per publication comes from ``INFO commandstats`` before and after.

    python benchmarks/redis_fanout.py --count 20000 --channels 10 --workers 16
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
import uuid
from typing import Any

import anyio
import redis

from centrifuge_asgi.config import Config
from centrifuge_asgi.engines.base import ClientInfo, Publication, PublishOptions
from centrifuge_asgi.engines.redis import RedisBroker

OPTS = PublishOptions(history_size=100, history_ttl=300.0)


class Receiver:
    node_id = "bench-receiver"

    def __init__(self, expected: int) -> None:
        self.latencies: list[float] = []
        self.first = self.last = 0.0
        self.expected = expected
        self.done = anyio.Event()

    def handle_publication(self, channel: str, pub: Publication, epoch: str) -> None:
        now = time.time()
        self.first = self.first or now
        self.last = now
        self.latencies.append(now - float(pub.data))
        if len(self.latencies) >= self.expected:
            self.done.set()

    def handle_join(self, channel: str, info: ClientInfo) -> None: ...

    def handle_leave(self, channel: str, info: ClientInfo) -> None: ...

    def handle_control(self, data: bytes) -> None: ...


def _config(address: str, prefix: str) -> Config:
    return Config.from_dict({"engine": {"redis": {"address": address, "prefix": prefix}}})


def _publisher(address: str, prefix: str, count: int, channels: int, workers: int) -> None:
    async def worker(broker: RedisBroker, first: int) -> None:
        for i in range(first, count, workers):
            await broker.publish(f"bench-{i % channels}", b"%.6f" % time.time(), OPTS)

    async def run() -> None:
        broker = RedisBroker.from_config(_config(address, prefix).engine.redis)
        await broker.start(Receiver(0))
        try:
            async with anyio.create_task_group() as tg:
                for first in range(workers):
                    tg.start_soon(worker, broker, first)
        finally:
            await broker.close()

    anyio.run(run)


def _script_usec(client: Any) -> tuple[int, float]:
    stats = client.info("commandstats")
    calls = usec = 0.0
    for name in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_publish"):
        if name in stats:
            calls += stats[name]["calls"]
            usec += stats[name]["usec"]
    return int(calls), usec


async def main(address: str, count: int, channels: int, workers: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    receiver = Receiver(count)
    broker = RedisBroker.from_config(_config(address, prefix).engine.redis)
    await broker.start(receiver)
    host, _, port = address.partition(":")
    client = redis.Redis(host=host, port=int(port or 6379))
    try:
        for i in range(channels):
            await broker.subscribe(f"bench-{i}")
        calls0, usec0 = _script_usec(client)
        proc = multiprocessing.Process(
            target=_publisher, args=(address, prefix, count, channels, workers), daemon=True
        )
        proc.start()
        with anyio.fail_after(max(30.0, count / 500)):
            await receiver.done.wait()
        elapsed = receiver.last - receiver.first
        await anyio.to_thread.run_sync(proc.join, 10)
        calls1, usec1 = _script_usec(client)
    finally:
        await broker.close()
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
    lat = sorted(receiver.latencies)
    p50, p99 = statistics.median(lat) * 1000, lat[int(len(lat) * 0.99) - 1] * 1000
    print(f"publications: {count} into {channels} channels, history on, {workers} publishers")
    print(f"throughput:   {count / elapsed:,.0f} deliveries/s (first to last delivery)")
    print(f"latency ms:   p50 {p50:.2f}  p99 {p99:.2f}  max {lat[-1] * 1000:.2f}")
    per_call = (usec1 - usec0) / max(1, calls1 - calls0)
    print(f"redis cost:   {per_call:.1f} us of Redis CPU per publication (EVALSHA incl. PUBLISH)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--address", default="127.0.0.1:6379")
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--workers", type=int, default=16, help="concurrent publish tasks")
    args = parser.parse_args()
    anyio.run(main, args.address, args.count, args.channels, args.workers)
