#!/usr/bin/env python3
"""Server CPU time per connect + subscribe, natively: connect_instructions.py's phases
without valgrind.

Each peer runs under its real uvicorn (``servers/serve.py``, the suite's settings); the
load generator connects the warm-up clients, then N more (handshake, connect and
subscribe, 100 in flight), and the server process's user + system CPU ticks are read at
the two snapshots around the N clients. Rounds alternate the peers' order. The rate of
scenario 5 is wall-clock, and the server is not busy all of that time (it waits for the
load generator's next handshakes); this is what each connect costs the server.

    python benchmarks/connect_cpu.py [N] [ROUNDS]       # default 5,000 clients, 3 rounds
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import connect_instructions as ci
import run

PEERS = ("centrifuge-asgi", "asgi-floor")


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def measure(ctx: run.Ctx, peer: run.Peer, n: int, out: Path) -> float:
    """Server CPU seconds for ``n`` connects + subscribes after the warm-up."""
    ctx.job_no += 1
    srv = run.Server(ctx, peer, [])
    snap = out / f"snap-{ctx.job_no}"
    job: dict[str, Any] = {
        "proto": peer.proto,
        "port": srv.port,
        "scenario": "idle",
        "warm": run.IDLE_WARM,
        "steps": [run.IDLE_WARM + n],
        "settle_s": 1.0,
        "deflate": False,
        "snapshot": str(snap),
        "pids": {},
    }
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        srv.start(timeout=120)
        job["pids"] = {"server": srv.pid}
        lg = pool.submit(run.run_loadgen, ctx, job, 600)
        ci._wait_for(Path(f"{snap}.base-trigger"), time.monotonic() + 300, lg)
        before = cpu_ticks(srv.pid)
        ci._done(Path(f"{snap}.base-done"), "")
        ci._wait_for(Path(f"{snap}.final-trigger"), time.monotonic() + 300, lg)
        after = cpu_ticks(srv.pid)
        ci._done(Path(f"{snap}.json"), "{}")
        result = lg.result(timeout=300)
        if not result.get("ok") or result.get("errors"):
            raise RuntimeError(f"load generator: {result}")
    finally:
        srv.stop()
        pool.shutdown(wait=True, cancel_futures=True)
    return (after - before) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    peers = [run.PEER_BY_KEY[k] for k in PEERS]
    run.raise_nofile()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        env, digest = run.snapshot_src(out / "src")
        params = dataclasses.replace(run.FULL, connect_cap_s=300)
        ctx = run.Ctx(params, "cpu", sys.executable, "node", out, "cpu", peers, set(), env=env)
        ctx.ports = run.Ports(19100 + os.getpid() % 800)
        print(f"src digest {digest}; N = {n}; {rounds} rounds", flush=True)
        per: dict[str, list[float]] = {p.key: [] for p in peers}
        for r in range(rounds):
            for peer in peers if r % 2 == 0 else peers[::-1]:
                us = measure(ctx, peer, n, out) / n * 1e6
                per[peer.key].append(us)
                print(f"round {r + 1} {peer.key}: {us:.0f} µs server CPU per connect", flush=True)
    medians = {k: sorted(v)[len(v) // 2] for k, v in per.items()}
    for key, values in per.items():
        print(f"{key}: median {medians[key]:.0f} µs ({', '.join(f'{v:.0f}' for v in values)})")
    print(f"floor ÷ centrifuge-asgi: {medians['asgi-floor'] / medians['centrifuge-asgi']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
