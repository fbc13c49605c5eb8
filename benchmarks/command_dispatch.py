#!/usr/bin/env python3
"""The library's own cost per client command on one connection, without sockets.

A connected session gets frames of one command each (an RPC to a handler that returns at
once, and ``presence_stats``) through ``Session.handle_frame`` inside
``Session.command_tasks()``, as its transport's reader feeds it; the replies are drained
from its outbox. Rounds of each configuration alternate, and the fastest round is printed
in microseconds per command (the least disturbed by other load on the machine):

- ``default``: ``client.concurrency`` 0, no rate limits: the hot path of every connection;
- ``concurrency=4``: every command in a task of its own;
- ``rate limits``: ``client.rate_limit.client_command`` with a default bucket that never
  runs out.

    python benchmarks/command_dispatch.py [COMMANDS_PER_ROUND] [ROUNDS]

To see what a change costs, run it against two source trees
(``PYTHONPATH=other/src python benchmarks/command_dispatch.py``); a tree without
``command_tasks`` or ``client.rate_limit`` runs the ``default`` line only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from typing import Any

from centrifuge_asgi import Node, RPCEvent
from centrifuge_asgi.session import Session, TransportInfo

BASE: dict[str, Any] = {
    "client": {"allow_anonymous_connect_without_token": True},
    "channel": {"without_namespace": {"presence": True, "allow_presence_for_client": True}},
}
UNLIMITED = {"enabled": True, "buckets": [{"interval": "1s", "rate": 1_000_000_000}]}


def config(**client: Any) -> dict[str, Any]:
    cfg = json.loads(json.dumps(BASE))
    cfg["client"].update(client)
    return cfg


CONFIGS = {
    "default": config(),
    "concurrency=4": config(concurrency=4),
    "rate limits": config(rate_limit={"client_command": {"enabled": True, "default": UNLIMITED}}),
}


async def one_round(node: Node, commands: int) -> float:
    """Microseconds per command for ``commands`` commands on a fresh connection."""
    session: Session = node.create_session(TransportInfo())
    await session.handle_frame(b'{"id":1,"connect":{}}')
    session.outbox.drain()
    frames = [
        json.dumps(
            {"id": i, "rpc": {"method": "echo", "data": {}}}
            if i % 2
            else {"id": i, "presence_stats": {"channel": "room"}}
        ).encode()
        for i in range(2, commands + 2)
    ]
    scope = getattr(session, "command_tasks", None)
    started = time.perf_counter()
    async with scope() if scope is not None else contextlib.nullcontext():
        for frame in frames:
            await session.handle_frame(frame)
            session.outbox.drain()
        while session.outbox.size:  # concurrent: the last replies come from their tasks
            session.outbox.drain()
            await asyncio.sleep(0)
    elapsed = time.perf_counter() - started
    await session.finish()
    return elapsed / commands * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commands", nargs="?", type=int, default=3_000)
    parser.add_argument("rounds", nargs="?", type=int, default=15)
    args = parser.parse_args()
    nodes: dict[str, Node] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name, cfg in CONFIGS.items():
            node = Node(cfg)
            if node.config.warnings or (
                cfg["client"].get("concurrency") and not hasattr(Session, "command_tasks")
            ):
                continue  # a tree without this feature

            @node.on_rpc("echo")
            async def echo(event: RPCEvent) -> Any:
                return {}

            nodes[name] = await stack.enter_async_context(node)
        results: dict[str, list[float]] = {name: [] for name in nodes}
        await one_round(next(iter(nodes.values())), 2_000)  # warm up
        for _ in range(args.rounds):
            for name, node in nodes.items():
                results[name].append(await one_round(node, args.commands))
    base = min(results["default"])
    for name, runs in results.items():
        best = min(runs)
        median = statistics.median(runs)
        ratio = best / base
        print(f"{name:15} {best:6.2f} us/command (median {median:6.2f}), {ratio:.3f} x default")


if __name__ == "__main__":
    asyncio.run(main())
