#!/usr/bin/env python3
"""Server instructions per connect + subscribe, end to end, counted by callgrind.

Each peer runs as in ``run.py``'s connect scenario (``servers/serve.py`` under the shared
uvicorn settings, ``--ws websockets-sansio``, the same collector setting), but under
``valgrind --tool=callgrind``; the suite's load generator connects the warm-up clients,
then N more, each sending its handshake and its connect + subscribe (one frame for
centrifuge-asgi) and waiting for the replies. Through the load generator's snapshot hooks
the counters are zeroed after the warm-up and dumped once the N clients are ready
("connect"), and again once the server has closed them ("teardown"). Instructions per
connection are (I(N2) - I(N1)) / (N2 - N1): what does not grow with N (the settle pauses,
the timers of the idle loop) cancels. Counts do not depend on the machine's load.

    python benchmarks/connect_instructions.py                       # N = 100, 400; twice
    python benchmarks/connect_instructions.py --peers python-socketio --python <venv>/bin/python
    python benchmarks/connect_instructions.py --collector-off       # as connect_cost.py's

Under valgrind a connect is ~50x slower; keep N small (about a minute per server). The
10 ms slice of centrifuge-asgi's pacer would then run out where it does not natively, so
its server gets the ``pacer-unbounded`` what-if unless ``--pacer-bounded``. A client older
than the ping interval (25 s, centrifuge-asgi and python-socketio) gets a ping inside the
counted phase: ``oldest_s`` in the output says how old the first client was at the dump.
For N in the thousands (``--n 100,5000 --no-pings --wait 1200``: about 15 minutes per
server) ``--no-pings`` sets centrifuge-asgi's ping interval to a day, so that no ping falls
inside the counted phase however long valgrind takes (natively a 5,000-client connect
phase lasts seconds); uvicorn's own pings are off in every run.
Only user-space instructions are counted (not the kernel's socket work).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run

WAIT_S = 300.0  # bound on every wait: start-up, a phase, the teardown
SETTLE_S = 2.0  # pause after the warm-up and after the N clients, as the idle scenario's
DUMP = re.compile(r"^desc: Trigger: (?:Client Request: )?dump (\S+)", re.M)


class CountedServer(run.Server):
    """A ``run.Server`` started under callgrind (same serve.py arguments)."""

    def __init__(self, ctx: run.Ctx, peer: run.Peer, out: Path, extra: list[str]) -> None:
        super().__init__(ctx, peer, extra)
        self.out = out / f"callgrind.{peer.key}.{self.port}"
        self.args = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}", *self.args]

    def control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.pid)],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def dumps(self) -> dict[str, int]:
        """Instructions of each named dump (``summary:`` of the dump file)."""
        found: dict[str, int] = {}
        for path in self.out.parent.glob(self.out.name + ".*"):
            text = path.read_text(errors="replace")
            name = DUMP.search(text)
            total = re.search(r"^summary: (\d+)", text, re.M)
            if name and total:
                found[name.group(1)] = int(total.group(1))
        return found

    def open_sockets(self) -> int:
        """Connections on the server's port not yet closed by the server."""
        n = 0
        with open("/proc/net/tcp") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 3 and parts[1].endswith(f":{self.port:04X}"):
                    n += parts[3] not in ("0A", "06")  # not LISTEN, not TIME_WAIT
        return n

    def cpu_ticks(self) -> int:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])


def _wait_for(path: Path, deadline: float, job: concurrent.futures.Future[Any]) -> None:
    while not path.exists():
        if job.done() or time.monotonic() > deadline:
            raise RuntimeError(f"no {path.name}: {job.result() if job.done() else 'timed out'}")
        time.sleep(0.1)


def _done(path: Path, content: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(content)
    tmp.rename(path)


def _quiet(srv: CountedServer, deadline: float) -> None:
    """Wait until the server closed every connection and used < 20% of a core for 2 s."""
    while srv.open_sockets() and time.monotonic() < deadline:
        time.sleep(0.2)
    tick = os.sysconf("SC_CLK_TCK")
    last = srv.cpu_ticks()
    while time.monotonic() < deadline:
        time.sleep(2.0)
        now = srv.cpu_ticks()
        if now - last < 0.4 * tick:
            return
        last = now
    raise RuntimeError("server did not go quiet")


def measure(ctx: run.Ctx, peer: run.Peer, n: int, out: Path, extra: list[str]) -> dict[str, Any]:
    """One server under callgrind: instructions for ``n`` connects, then their teardown."""
    ctx.job_no += 1
    srv = CountedServer(ctx, peer, out, extra)
    snap = out / f"snap-{ctx.job_no}"
    job = {
        "proto": peer.proto,
        "port": srv.port,
        "scenario": "idle",
        "warm": run.IDLE_WARM,
        "steps": [run.IDLE_WARM + n],
        "settle_s": SETTLE_S,
        "deflate": False,
        "snapshot": str(snap),
        "pids": {},
    }
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        srv.start(timeout=WAIT_S)
        job["pids"] = {"server": srv.pid}
        t0 = time.monotonic()
        lg = pool.submit(run.run_loadgen, ctx, job, WAIT_S * 3)
        deadline = time.monotonic() + WAIT_S
        _wait_for(Path(f"{snap}.base-trigger"), deadline, lg)
        srv.control("-z")
        _done(Path(f"{snap}.base-done"), "")
        _wait_for(Path(f"{snap}.final-trigger"), time.monotonic() + WAIT_S, lg)
        srv.control("-d", "connect")
        oldest = time.monotonic() - t0  # the first client's age: under 25 s, no pings counted
        _done(Path(f"{snap}.json"), "{}")
        result = lg.result(timeout=WAIT_S)
        if not result.get("ok") or result.get("errors"):
            raise RuntimeError(f"load generator: {result}")
        _quiet(srv, time.monotonic() + WAIT_S)
        srv.control("-d", "teardown")
        counts = srv.dumps()
    finally:
        srv.stop()
        pool.shutdown(wait=True, cancel_futures=True)
    return {"n": n, "oldest_s": round(oldest, 1), **counts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--peers", default="centrifuge-asgi,asgi-floor")
    p.add_argument("--n", default="100,400", help="N1,N2: clients after the warm-up")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--window", type=int, default=run.FULL.window, help="handshakes in flight")
    p.add_argument("--python", default=sys.executable, help="the servers' interpreter")
    p.add_argument("--collector-off", action="store_true", help="gc.disable() in every server")
    p.add_argument(
        "--pacer-bounded",
        action="store_true",
        help="keep the pacer's 10 ms slice (it runs out under valgrind, not natively)",
    )
    p.add_argument(
        "--no-pings",
        action="store_true",
        help="centrifuge-asgi's ping interval a day: no pings however long the run (uvicorn's "
        "are off in every run)",
    )
    p.add_argument("--wait", type=float, default=WAIT_S, help="bound on each wait, seconds")
    p.add_argument("--keep", type=Path, help="keep the callgrind files here")
    args = p.parse_args(argv)
    globals()["WAIT_S"] = args.wait
    n1, n2 = (int(x) for x in args.n.split(","))
    peers = [run.PEER_BY_KEY[k] for k in args.peers.split(",")]
    for tool in ("valgrind", "callgrind_control", "node"):
        if not shutil.which(tool):
            print(f"{tool} not found")
            return 2
    run.raise_nofile()
    with contextlib.ExitStack() as stack:
        out = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        out.mkdir(parents=True, exist_ok=True)
        env, digest = run.snapshot_src(out / "src")
        env["PYTHONHASHSEED"] = "0"
        if args.collector_off:  # as connect_cost.py --collector-off: no collections at all
            (out / "site").mkdir(exist_ok=True)
            (out / "site" / "sitecustomize.py").write_text("import gc\n\ngc.disable()\n")
            env["PYTHONPATH"] = f"{out / 'site'}{os.pathsep}{env['PYTHONPATH']}"
        params = dataclasses.replace(run.FULL, window=args.window, connect_cap_s=WAIT_S)
        ctx = run.Ctx(params, "instructions", args.python, "node", out, "ci", peers, set(), env=env)
        ctx.ports = run.Ports(18100 + os.getpid() % 800)  # apart from a concurrent run's
        stack.callback(run.stop_all_children)
        print(f"src digest {digest}; N = {n1}, {n2}; window {args.window}", flush=True)
        rows: list[dict[str, Any]] = []
        for rnd in range(args.repeat):
            for peer in peers:
                extra = ["--what-if", "pacer-unbounded"] if peer.server == "centrifuge" else []
                if args.pacer_bounded:
                    extra = []
                if args.no_pings and peer.server == "centrifuge":
                    extra += ["--client-ping-interval", "86400"]
                a, b = measure(ctx, peer, n1, out, extra), measure(ctx, peer, n2, out, extra)
                row: dict[str, Any] = {"peer": peer.key, "round": rnd + 1, "raw": [a, b]}
                for phase in ("connect", "teardown"):
                    row[phase] = round((b[phase] - a[phase]) / (n2 - n1))
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| peer | round | connect + subscribe | teardown | both |\n|---|--:|--:|--:|--:|")
    for r in rows:
        both = r["connect"] + r["teardown"]
        print(f"| {r['peer']} | {r['round']} | {r['connect']:,} | {r['teardown']:,} | {both:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
