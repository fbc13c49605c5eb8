#!/usr/bin/env python3
"""What OpenTelemetry tracing costs per client command (``benchmarks/command_dispatch.py``'s
round: RPCs to a handler and ``presence_stats`` on one connection, no sockets).

- ``off``: ``opentelemetry.enabled`` false (the default): ``node.tracing`` is None, and
  each traced place costs one ``is None`` test;
- ``on, not sampled``: an SDK provider that samples nothing (``ALWAYS_OFF``);
- ``on, sampled``: every span recorded and handed to a span processor that drops it
  (the cost of the spans themselves, without any exporter).

The fastest of the alternating rounds is printed in microseconds per command, with its
ratio to ``off``. To see what ``off`` costs against a tree without tracing, run the
``default`` line of command_dispatch.py against both trees
(``PYTHONPATH=other/src python benchmarks/command_dispatch.py``).

    python benchmarks/tracing_overhead.py [COMMANDS_PER_ROUND] [ROUNDS]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

from centrifuge_asgi import Node, RPCEvent
from centrifuge_asgi.tracing import OtelTracing

sys.path.insert(0, str(Path(__file__).parent))
from command_dispatch import config, one_round


def node_with(provider: TracerProvider | None) -> Node:
    node = Node(config())
    if provider is not None:
        node.tracing = OtelTracing(node, provider)

    @node.on_rpc("echo")
    async def echo(event: RPCEvent) -> Any:
        return {}

    return node


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commands", nargs="?", type=int, default=3_000)
    parser.add_argument("rounds", nargs="?", type=int, default=15)
    args = parser.parse_args()
    sampled = TracerProvider(sampler=ALWAYS_ON)
    sampled.add_span_processor(SpanProcessor())  # receives every span, keeps none
    variants = {
        "off": node_with(None),
        "on, not sampled": node_with(TracerProvider(sampler=ALWAYS_OFF)),
        "on, sampled": node_with(sampled),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    async with contextlib.AsyncExitStack() as stack:
        for node in variants.values():
            await stack.enter_async_context(node)
        await one_round(variants["off"], 2_000)  # warm up
        for _ in range(args.rounds):
            for name, node in variants.items():
                results[name].append(await one_round(node, args.commands))
    base = min(results["off"])
    for name, runs in results.items():
        best, median = min(runs), statistics.median(runs)
        print(f"{name:16} {best:6.2f} us/command (median {median:6.2f}), {best / base:.3f} x off")


if __name__ == "__main__":
    asyncio.run(main())
