"""Burst deliveries/s of ``centrifuge-asgi serve --workers N`` over Redis, N = 1 and 2.

The scenario is run.py's burst (loadgen/loadgen.mjs): ``--subs`` subscribers of one
channel connect through the one port, then a publisher sends ``--pubs`` publications as
one write and the load generator counts deliveries until every subscriber has all of
them (best of ``--repeats`` runs). The server is the real ``serve`` command (the
supervisor and its workers, Redis engine under a fresh prefix); CPU is read for every
worker and for redis-server. The scaling ratio is rate(N=2) / rate(N=1).

    .venv/bin/python benchmarks/workers_scaling.py                 # 5,000 subscribers
    .venv/bin/python benchmarks/workers_scaling.py --subs 1000 --pubs 40 --repeats 1

Needs Node 18+ and Redis on 127.0.0.1:6379. Writes benchmarks/results/workers-<N>.json
and prints a markdown table (docs/deploy.md cites it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from loopback import free_port

ROOT = Path(__file__).resolve().parents[1]
LOADGEN = ROOT / "benchmarks" / "loadgen" / "loadgen.mjs"
RESULTS = ROOT / "benchmarks" / "results"
API_KEY = "bench"
OPEN = {
    "allow_subscribe_for_client": True,
    "allow_subscribe_for_anonymous": True,
    "allow_publish_for_client": True,
    "allow_publish_for_anonymous": True,
}


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    found.append(int(entry.name))
    return sorted(found)


def redis_pid() -> int | None:
    out = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    return pids[0] if len(pids) == 1 else None


def api_info(port: int) -> list[dict[str, Any]]:
    reply = httpx.post(
        f"http://127.0.0.1:{port}/api/info", json={}, headers={"X-API-Key": API_KEY}, timeout=5
    )
    nodes: list[dict[str, Any]] = reply.json()["result"]["nodes"]
    return nodes


class Serve:
    """``centrifuge-asgi serve --workers N`` with the benchmark peer's config on Redis."""

    def __init__(self, workers: int, logs: Path) -> None:
        self.workers = workers
        self.port = free_port()
        self.config = logs / f"config-{workers}.json"
        self.config.write_text(
            json.dumps(
                {
                    "client": {"allow_anonymous_connect_without_token": True},
                    "channel": {"without_namespace": OPEN},
                    "http_api": {"key": API_KEY},
                    "health": {"enabled": True},
                    "log": {"level": "warn"},
                    "engine": {
                        "type": "redis",
                        "redis": {
                            "address": "127.0.0.1:6379",
                            "prefix": f"bench-{uuid.uuid4().hex[:8]}",
                        },
                    },
                }
            )
        )
        self.log = logs / f"serve-{workers}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Serve:
        command = [sys.executable, "-m", "centrifuge_asgi", "serve", "-c", str(self.config)]
        command += ["-a", "127.0.0.1", "-p", str(self.port), "--workers", str(self.workers)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
            )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                if len(api_info(self.port)) == self.workers:
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {self.log.read_text()[-800:]}")
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def pids(self) -> dict[str, int]:
        assert self.proc is not None
        workers = children(self.proc.pid) if self.workers > 1 else [self.proc.pid]
        pids = {f"worker{n + 1}": pid for n, pid in enumerate(workers)}
        redis = redis_pid()
        if redis is not None:
            pids["redis"] = redis
        return pids


def spread_watch(port: int, stop: threading.Event, seen: dict[str, int]) -> None:
    """The most clients each node held at once (the kernel's spread over the workers)."""
    while not stop.wait(0.5):
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            for node in api_info(port):
                seen[node["name"]] = max(seen.get(node["name"], 0), node["num_clients"])


def measure(workers: int, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    with Serve(workers, logs) as serve:
        job = {
            "proto": "centrifuge",
            "port": serve.port,
            "scenario": "burst",
            "subs": args.subs,
            "pubs": args.pubs,
            "deadline_s": args.deadline,
            "repeats": args.repeats,
            "repeat_budget_s": args.repeat_budget,
            "pids": serve.pids(),
            "clk_tck": os.sysconf("SC_CLK_TCK"),
            "src_base": 10 + workers,
            "window": 100,
            "warmup": 2,
            "connect_cap_s": 60,
            "budget_s": 120,
        }
        seen: dict[str, int] = {}
        stop = threading.Event()
        watcher = threading.Thread(target=spread_watch, args=(serve.port, stop, seen))
        watcher.start()
        try:
            out = subprocess.run(
                [args.node, str(LOADGEN), json.dumps(job)],
                capture_output=True,
                text=True,
                timeout=240,
                cwd=ROOT,
                check=False,
            )
        finally:
            stop.set()
            watcher.join()
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"load generator: {out.stderr[-800:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        result["workers"] = workers
        result["clients_per_worker"] = sorted(seen.values())
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subs", type=int, default=5000)
    parser.add_argument("--pubs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repeat-budget", type=float, default=8.0)
    parser.add_argument("--deadline", type=float, default=20.0)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--node", default=shutil.which("node") or "node")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logs = Path(tempfile.mkdtemp(prefix="workers-bench-"))
    results = [measure(int(n), args, logs) for n in args.workers.split(",")]
    load = os.getloadavg()
    print(f"\n{args.subs} subscribers, {args.pubs} publications per burst, {os.cpu_count()} CPUs,")
    print(f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    print("| workers | deliveries/s (best) | runs | complete | clients per worker | CPU s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        cpu = ", ".join(f"{k} {v}" for k, v in (r.get("cpu_s") or {}).items())
        print(
            f"| {r['workers']} | {r.get('rate')} | {r.get('runs')} | {r.get('complete')} "
            f"| {r['clients_per_worker']} | {cpu} |"
        )
    if len(results) == 2 and results[0].get("rate"):
        ratio = results[1]["rate"] / results[0]["rate"]
        print(f"\nscaling ratio (2 workers / 1): {ratio:.2f}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"workers-{args.subs}.json"
    summary = {"subs": args.subs, "pubs": args.pubs, "loadavg": load, "results": results}
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
