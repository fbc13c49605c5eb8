#!/usr/bin/env python3
"""Fossil delta compression: bytes saved and CPU spent on a 1,000-subscriber channel.

An in-process node (memory engine, no sockets) with N connections subscribed to one
positioned channel with history; P publications of a ~1 KB JSON document whose versions
change one to four fields each. The same run is made with the subscribers asking for
``delta: "fossil"`` and the publisher publishing with ``delta=True``, and without, for
JSON and for Protobuf connections. Measured per publication, over all subscribers:

* bytes queued for the clients (what the transports would write), and the ratio;
* CPU time of ``node.publish`` (store, fan-out, encoding, and the fossil delta, which is
  computed once per publication; the median over the publications, with the garbage
  collector paused), and the ratio;
* the delta computation alone (``fossil.create``) and one client's decoding of it
  (centrifuge-python's ``apply_delta``), in microseconds.

    python benchmarks/delta_fanout.py [--subscribers N] [--publications P] [--repeat R]

Each configuration runs R times, interleaved with the other, and the run with the lowest
CPU median counts (the least disturbed by other processes on a shared machine).

Draining the outboxes is not timed (a transport would do it, not the publisher).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import itertools
import json
import random
import statistics
import string
import time
from typing import Any

from centrifuge_asgi import Node, fossil
from centrifuge_asgi.protocol.protobuf_codec import PROTOBUF, uvarint
from centrifuge_asgi.session import Session, TransportInfo

CONFIG: dict[str, Any] = {
    "client": {"allow_anonymous_connect_without_token": True},
    "channel": {
        "namespaces": [
            {
                "name": "bench",
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
                "history_size": 10,
                "history_ttl": "300s",
                "force_positioning": True,
                "allowed_delta_types": ["fossil"],
            }
        ]
    },
}


def documents(count: int, seed: int = 1) -> list[bytes]:
    """``count`` versions of a ~1 KB JSON document, each changing 1 to 4 fields."""
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choices(string.ascii_lowercase, k=rng.randrange(3, 9)))

    doc: dict[str, Any] = {
        "id": "order-1",
        "fields": {f"f{i:02d}": rng.randrange(10**6) for i in range(64)},
        "labels": [word() for _ in range(16)],
        "note": " ".join(word() for _ in range(20)),
    }
    out = []
    for _ in range(count):
        for _ in range(rng.randrange(1, 5)):
            kind = rng.randrange(3)
            if kind == 0:
                doc["fields"][f"f{rng.randrange(64):02d}"] = rng.randrange(10**6)
            elif kind == 1:
                doc["labels"][rng.randrange(16)] = word()
            else:
                doc["note"] = doc["note"][: rng.randrange(100)] + " " + word()
        out.append(json.dumps(copy.deepcopy(doc), separators=(",", ":")).encode())
    return out


def _frame(codec_protobuf: bool, cmd: dict[str, Any]) -> bytes:
    if not codec_protobuf:
        return json.dumps(cmd).encode()
    from google.protobuf.json_format import ParseDict

    from centrifuge_asgi.protocol import client_pb2 as pb

    raw = ParseDict(cmd, pb.Command()).SerializeToString()
    return uvarint(len(raw)) + raw


async def run(
    subscribers: int, docs: list[bytes], *, delta: bool, protobuf: bool
) -> dict[str, float]:
    async with Node(CONFIG) as node:
        info = TransportInfo(codec=PROTOBUF) if protobuf else TransportInfo()
        sessions: list[Session] = []
        sub: dict[str, Any] = {"channel": "bench:doc"}
        if delta:
            sub["delta"] = "fossil"
        for _ in range(subscribers):
            s = node.create_session(info)
            await s.handle_frame(_frame(protobuf, {"id": 1, "connect": {}}))
            await s.handle_frame(_frame(protobuf, {"id": 2, "subscribe": sub}))
            s.outbox.drain()
            sessions.append(s)
        sent = 0
        cpu: list[float] = []
        gc.collect()
        gc.disable()  # a collection landing inside one publication is not its cost
        try:
            for data in docs:
                start = time.process_time()
                await node.publish("bench:doc", data, delta=delta)
                cpu.append(time.process_time() - start)
                for s in sessions:
                    sent += sum(len(m) for m in s.outbox.drain())
        finally:
            gc.enable()
        for s in sessions:
            await s.finish()
    return {"bytes": sent / len(docs), "cpu_ms": statistics.median(cpu) * 1000}


def codec_costs(docs: list[bytes]) -> dict[str, float]:
    from centrifuge.fossil import apply_delta

    create, apply, sizes = [], [], []
    for prev, cur in itertools.pairwise(docs):
        t = time.perf_counter()
        patch = fossil.create(prev, cur)
        create.append(time.perf_counter() - t)
        t = time.perf_counter()
        apply_delta(prev, patch)
        apply.append(time.perf_counter() - t)
        sizes.append(len(patch))
    return {
        "create_us": statistics.median(create) * 1e6,
        "apply_us": statistics.median(apply) * 1e6,
        "patch": statistics.mean(sizes),
        "doc": statistics.mean(len(d) for d in docs),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--publications", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    docs = documents(args.publications)
    costs = codec_costs(docs)
    print(
        f"{args.subscribers} subscribers, {args.publications} publications, "
        f"document {costs['doc']:.0f} B, delta {costs['patch']:.0f} B on average"
    )
    print(
        f"fossil.create {costs['create_us']:.0f} µs per publication (once for all "
        f"subscribers); one client's apply (centrifuge-python) {costs['apply_us']:.0f} µs\n"
    )
    print(
        "| protocol | bytes/publication, off | with delta | ratio "
        "| CPU ms/publication, off | with delta | ratio |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    for protobuf in (False, True):
        offs, ons = [], []
        for _ in range(args.repeat):  # interleaved; the quietest run of each counts
            offs.append(await run(args.subscribers, docs, delta=False, protobuf=protobuf))
            ons.append(await run(args.subscribers, docs, delta=True, protobuf=protobuf))
        off = min(offs, key=lambda r: r["cpu_ms"])
        on = min(ons, key=lambda r: r["cpu_ms"])
        print(
            f"| {'Protobuf' if protobuf else 'JSON'} | {off['bytes']:,.0f} | {on['bytes']:,.0f} "
            f"| {on['bytes'] / off['bytes']:.3f} | {off['cpu_ms']:.2f} | {on['cpu_ms']:.2f} "
            f"| {on['cpu_ms'] / off['cpu_ms']:.2f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
