"""Shared poll: what one node's poll cycle costs, with no sockets (docs/shared-poll.md).

N connections each track K keys out of a pool of U keys; the refresh handler answers in
Python. Measured: the time to verify and register every track request (HMAC included),
the backend calls per cycle (one per batch of ``refresh_batch_size`` keys, whatever N),
and the time from a cycle's answer to every push of a change to all U keys being queued.

    .venv/bin/python benchmarks/shared_poll.py [--conns 2000] [--keys 50] [--pool 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

from centrifuge_asgi import (
    Node,
    SharedPollRefreshEvent,
    SharedPollRefreshReply,
    SharedPollResult,
)
from centrifuge_asgi.protocol.json_codec import JSON
from centrifuge_asgi.protocol.messages import KeyedItem, SubRefreshRequest, TrackBatch
from centrifuge_asgi.shared_poll import make_signature

SECRET = "bench"
CHANNEL = "poll:bench"


class Conn:
    """A JSON connection that counts its pushes (no socket; encoded once per key)."""

    codec = JSON

    def __init__(self, user: str) -> None:
        self.user = user
        self.pushes = 0

    def send(self, data: bytes) -> None:
        self.pushes += 1


async def run(conns: int, keys: int, pool: int, batch: int) -> dict[str, Any]:
    generation = {"n": 0}
    calls: list[int] = []
    answered = asyncio.Event()

    async def refresh(event: SharedPollRefreshEvent) -> SharedPollRefreshReply:
        calls.append(len(event.items))
        n = generation["n"]
        items = [SharedPollResult(i.key, {"v": n, "k": i.key}) for i in event.items]
        answered.set()
        return SharedPollRefreshReply(items)

    config = {
        "shared_poll": {"hmac_secret_key": SECRET},
        "channel": {
            "namespaces": [
                {
                    "name": "poll",
                    "subscription_type": "shared_poll",
                    "shared_poll": {
                        "refresh_interval": "2s",
                        "refresh_batch_size": batch,
                        "max_keys_per_connection": keys,
                    },
                }
            ]
        },
    }
    node = Node(config)
    node.on_shared_poll_refresh(refresh)
    rng = random.Random(1)
    names = [f"k{i}" for i in range(pool)]
    async with node:
        manager = node.shared_poll
        opts = node.config.channel.namespaces[0].shared_poll
        peers = [Conn(f"u{i}") for i in range(conns)]
        requests = []
        for c in peers:
            mine = rng.sample(names, keys)
            sig = make_signature(SECRET, c.user, CHANNEL, mine, 600)
            items = [KeyedItem(key=k) for k in mine]
            batch_ = TrackBatch(signature=sig, items=items)
            requests.append(SubRefreshRequest(channel=CHANNEL, type=1, track=[batch_]))
        started = time.perf_counter()
        for c, req in zip(peers, requests, strict=True):
            manager.subscribe(CHANNEL, opts, c, lambda: None)
            manager.sub_refresh(c, req)
        track_s = time.perf_counter() - started
        tracked = len(manager.channels[CHANNEL].keys)
        await asyncio.sleep(0.5)  # the cold keys' immediate poll
        cold_pushes = sum(c.pushes for c in peers)
        # one full cycle with every key changed: time the apply + fan-out of the answer
        generation["n"] = 1
        calls.clear()
        answered.clear()
        ch = manager.channels[CHANNEL]
        before = sum(c.pushes for c in peers)
        started = time.perf_counter()
        await manager._poll(ch, list(ch.keys), spread=False)
        cycle_s = time.perf_counter() - started
        pushed = sum(c.pushes for c in peers) - before
    return {
        "connections": conns,
        "keys_per_connection": keys,
        "distinct_keys_tracked": tracked,
        "track_requests_per_s": round(conns / track_s),
        "cold_pushes": cold_pushes,
        "backend_calls_per_cycle": len(calls),
        "keys_per_call": calls,
        "changed_cycle_ms": round(cycle_s * 1000, 1),
        "pushes_in_cycle": pushed,
        "pushes_per_s": round(pushed / cycle_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    result = asyncio.run(run(args.conns, args.keys, args.pool, args.batch))
    for name, value in result.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
