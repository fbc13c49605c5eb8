#!/usr/bin/env python3
"""The benchmark suite: centrifuge-asgi against python-socketio, Django Channels and two
floors, in one run, on this machine, with one Node load generator.

    python benchmarks/run.py --quick     # small N, about 2 minutes; benchmarks/results/ only
    python benchmarks/run.py             # full run, about 15 minutes; also docs/benchmarks.md
    nox -s bench [-- --quick]            # the same, in a venv with benchmarks/requirements.txt

Every server is a separate process started by ``servers/serve.py`` on 127.0.0.1 under the
same uvicorn settings (uvloop, httptools, ``--ws websockets-sansio``, no uvicorn-level
pings, no permessage-deflate); the uvloop floor has no uvicorn at all. Each measurement
gets a fresh server. The load generator (``loadgen/loadgen.mjs``) is one Node process per
measurement; it reads the servers' CPU time and RSS from /proc itself.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SERVE = BENCH / "servers" / "serve.py"
LOADGEN = BENCH / "loadgen" / "loadgen.mjs"
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "benchmarks.png"
WS_IMPL = "websockets-sansio"

sys.path.insert(0, str(BENCH))
import report  # noqa: E402


@dataclass(frozen=True)
class Peer:
    key: str  # id in results and tables
    server: str  # serve.py --peer
    proto: str  # load generator protocol
    broker: str = "memory"
    redis_scenario: bool = False  # takes part in scenario 6


PEERS = [
    Peer("uvloop-floor", "uvloop-floor", "simple"),
    Peer("asgi-floor", "asgi-floor", "simple"),
    Peer("centrifuge-asgi", "centrifuge", "centrifuge", redis_scenario=True),
    Peer("python-socketio", "socketio", "socketio", redis_scenario=True),
    Peer("channels-memory", "channels", "simple"),
    Peer("channels-redis", "channels", "simple", broker="redis", redis_scenario=True),
]
PEER_BY_KEY = {p.key: p for p in PEERS}


@dataclass
class Params:
    burst_sizes: list[int]
    burst_pubs: int
    deadline_s: float
    steady_subs: int
    steady_rate: int
    steady_seconds: int
    steady_drain_s: float
    channels_n: int
    channels_shared_pubs: int
    idle_steps: list[int]
    idle_settle_s: float
    redis_subs: int
    redis_pubs: int
    scale_n: int = 15000
    scale_pubs: int = 20
    repeats: int = 1
    repeat_budget_s: float = 0
    connect_rounds: int = 3
    connect_clients: int = 0  # scenario 5's clients; 0: the largest burst size
    memtrace_n: int = 1000
    matrix_n: int = 2000
    connect_cap_s: float = 45
    window: int = 100
    warmup: int = 2
    memory_matrix: bool = False
    profile: bool = False
    what_if: bool = False
    # rate sweep (issue 19): deliveries/s from sweep_start, times sweep_factor per step,
    # up to sweep_max; after the first failed step, sweep_refine geometric bisections
    sweep_subs: int = 2500
    sweep_start: float = 2500
    sweep_factor: float = math.sqrt(2)
    sweep_max: float = 2_000_000
    sweep_refine: int = 2
    sweep_step_s: float = 4
    sweep_drain_s: float = 2
    sweep_recover_s: float = 20
    sweep_settle_s: float = 0.5
    sweep_rounds: int = 2


FULL = Params(
    burst_sizes=[1000, 5000, 10000],
    burst_pubs=200,
    deadline_s=10,
    steady_subs=2500,
    steady_rate=20,
    steady_seconds=10,
    steady_drain_s=5,
    channels_n=5000,
    channels_shared_pubs=20,
    idle_steps=[5000, 10000],
    idle_settle_s=2.0,
    redis_subs=1000,
    redis_pubs=200,
    repeats=3,
    repeat_budget_s=8,
    memory_matrix=True,
    profile=True,
    what_if=True,
)
QUICK = Params(
    burst_sizes=[300],
    burst_pubs=40,
    deadline_s=4,
    steady_subs=200,
    steady_rate=20,
    steady_seconds=2,
    steady_drain_s=3,
    channels_n=300,
    channels_shared_pubs=10,
    idle_steps=[400, 800],
    idle_settle_s=0.7,
    redis_subs=300,
    redis_pubs=40,
    scale_n=1000,
    scale_pubs=10,
    repeats=2,
    repeat_budget_s=2,
    connect_cap_s=10,
    connect_rounds=2,
    sweep_subs=500,
    sweep_start=1000,
    sweep_factor=2,
    sweep_max=200_000,
    sweep_refine=1,
    sweep_step_s=2,
    sweep_drain_s=1,
    sweep_recover_s=8,
    sweep_rounds=1,
)

# uvicorn variants for the idle-memory matrix: (label, serve.py flags, client offers deflate)
MEMORY_VARIANTS = [
    ("`--ws websockets-sansio` (the suite's settings)", [], False),
    ("`--ws wsproto`", ["--ws", "wsproto"], False),
    ("`--ws websockets` (legacy implementation)", ["--ws", "websockets"], False),
    (
        "`--ws websockets-sansio`, uvicorn default `--ws-per-message-deflate true`, "
        "client offers permessage-deflate (browsers do)",
        ["--deflate"],
        True,
    ),
]
MEMORY_MATRIX_PEERS = ["asgi-floor", "centrifuge-asgi"]


# ---------------------------------------------------------------------- processes

_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def _track(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    with _children_lock:
        _children[proc.pid] = proc
    return proc


def _stop(proc: subprocess.Popen[bytes], grace: float = 1.0) -> None:
    """SIGTERM, then SIGKILL after ``grace``; the process's group goes with it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with _children_lock:
        _children.pop(proc.pid, None)


def stop_all_children() -> None:
    with _children_lock:
        procs = list(_children.values())
    for proc in procs:
        _stop(proc, grace=1.0)


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (max(hard, 65536), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            continue
    return soft


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Ports:
    def __init__(self, base: int = 18100) -> None:
        self.next = base

    def take(self) -> int:
        while True:
            port = self.next
            self.next += 1
            if self.next > 18999:
                self.next = 18100
            if not _port_open(port):
                return port


@dataclass
class Ctx:
    params: Params
    mode: str
    python: str
    node: str
    logs: Path
    prefix: str
    peers: list[Peer]
    scenarios: set[str]
    explicit: bool = False  # --scenarios given: run them even where the mode skips them
    env: dict[str, str] | None = None  # servers' environment (PYTHONPATH: the src snapshot)
    ports: Ports = field(default_factory=Ports)
    job_no: int = 0
    verbose: bool = True

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, flush=True)


class Server:
    """One benchmark server process (``servers/serve.py``)."""

    def __init__(self, ctx: Ctx, peer: Peer, extra: list[str] | None = None) -> None:
        self.ctx = ctx
        self.peer = peer
        self.port = ctx.ports.take()
        self.args = [
            ctx.python,
            str(SERVE),
            "--peer",
            peer.server,
            "--port",
            str(self.port),
            "--ws",
            WS_IMPL,
            "--ws-ping-interval",
            "none",
            "--broker",
            peer.broker,
            "--redis-prefix",
            ctx.prefix,
            *(extra or []),
        ]
        self.log_path = ctx.logs / f"{ctx.job_no:03d}-{peer.key}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "wb") as out:
            self.proc = _track(
                subprocess.Popen(
                    self.args,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=ROOT,
                    env=self.ctx.env,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-800:]
                taken = "address already in use" in tail
                raise (PortTaken if taken else RuntimeError)(
                    f"{self.peer.key} server exited: {tail}"
                )
            # the port may answer from another process (another run on this machine took
            # it after Ports.take): only this server's own listening socket counts
            if _listens(self.proc.pid, self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.peer.key} server did not listen within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


class PortTaken(RuntimeError):
    """A server could not bind: another process took its port after ``Ports.take``."""


def _listens(pid: int, port: int) -> bool:
    """Does process ``pid`` hold the socket listening on 127.0.0.1:``port``?"""
    inodes = set()
    with contextlib.suppress(OSError), open("/proc/net/tcp") as f:
        for line in f:
            parts = line.split()
            local = parts[1] if len(parts) > 9 else ""
            if local in (f"0100007F:{port:04X}", f"00000000:{port:04X}") and parts[3] == "0A":
                inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return False
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return True
    return False


@contextlib.contextmanager
def servers(ctx: Ctx, *specs: tuple[Peer, list[str]]) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for peer, extra in specs:
            for attempt in range(3):  # a port taken by another process: the next one
                srv = Server(ctx, peer, extra)
                started.append(srv)
                try:
                    srv.start()
                    break
                except PortTaken:
                    if attempt == 2:
                        raise
        yield started
    finally:
        for srv in started:
            srv.stop()


def loadgen_job(ctx: Ctx, job: dict[str, Any], budget_s: float) -> dict[str, Any]:
    """``job`` with the settings every load generator run shares."""
    return {
        **job,
        "clk_tck": os.sysconf("SC_CLK_TCK"),
        "src_base": 10 + ctx.job_no % 240,
        "window": ctx.params.window,
        "warmup": ctx.params.warmup,
        "connect_cap_s": ctx.params.connect_cap_s,
        "budget_s": budget_s,
    }


def run_loadgen(ctx: Ctx, job: dict[str, Any], budget_s: float) -> dict[str, Any]:
    """Run one load generator job; its JSON result, or ``{"ok": False, "error": ...}``."""
    job = loadgen_job(ctx, job, budget_s)
    proc = _track(
        subprocess.Popen(
            [ctx.node, str(LOADGEN), json.dumps(job)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,
        )
    )
    try:
        out, err = proc.communicate(timeout=budget_s + 15)
    except subprocess.TimeoutExpired:
        _stop(proc, grace=0.5)
        return {"ok": False, "error": f"load generator exceeded {budget_s + 15:.0f} s"}
    finally:
        _stop(proc, grace=0.5)
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"no result: {err.decode(errors='replace')[-500:]}"}
    return json.loads(lines[-1])


# ---------------------------------------------------------------------- scenarios


def _connect_budget(ctx: Ctx, n: int) -> float:
    return 20 + n / 150  # generous: the slowest peer connects ~300/s here


def job_burst(
    ctx: Ctx, peer: Peer, n: int, pubs: int, extra: list[str] | None = None
) -> dict[str, Any]:
    ctx.job_no += 1
    with servers(ctx, (peer, extra or [])) as (srv,):
        job = {
            "proto": peer.proto,
            "port": srv.port,
            "scenario": "burst",
            "subs": n,
            "pubs": pubs,
            "deadline_s": ctx.params.deadline_s,
            "repeats": ctx.params.repeats,
            "repeat_budget_s": ctx.params.repeat_budget_s,
            "pids": {"server": srv.pid},
        }
        budget = _connect_budget(ctx, n) + ctx.params.deadline_s + ctx.params.repeat_budget_s
        return run_loadgen(ctx, job, budget + 30)


def job_scale(ctx: Ctx, peer: Peer) -> dict[str, Any]:
    """Scenario 7: ``scale_n`` subscribed clients in one process, one burst, then the
    server's collector (``servers/gcstats.py``) with every client still connected."""
    ctx.job_no += 1
    p = ctx.params
    prefix = ctx.logs / f"gcstats-{peer.key}-{ctx.job_no}"
    with servers(ctx, (peer, ["--gc-stats", str(prefix)])) as (srv,):
        job = {
            "proto": peer.proto,
            "port": srv.port,
            "scenario": "burst",
            "subs": p.scale_n,
            "pubs": p.scale_pubs,
            "deadline_s": 2 * p.deadline_s,
            "repeats": 1,
            "gc_stats": str(prefix),
            "pids": {"server": srv.pid},
        }
        budget = _connect_budget(ctx, p.scale_n) + 2 * p.deadline_s + 60
        return run_loadgen(ctx, job, budget)


SCALE_PEERS = ["asgi-floor", "centrifuge-asgi"]


def job_steady(ctx: Ctx, peer: Peer) -> dict[str, Any]:
    ctx.job_no += 1
    p = ctx.params
    with servers(ctx, (peer, [])) as (srv,):
        job = {
            "proto": peer.proto,
            "port": srv.port,
            "scenario": "steady",
            "subs": p.steady_subs,
            "rate": p.steady_rate,
            "duration_s": p.steady_seconds,
            "drain_s": p.steady_drain_s,
            "pids": {"server": srv.pid},
        }
        budget = _connect_budget(ctx, p.steady_subs) + p.steady_seconds + p.steady_drain_s + 30
        return run_loadgen(ctx, job, budget)


# ---------------------------------------------------------------------- rate sweep

# A sweep step is sustained when all four hold (sweep_verdict):
SWEEP_MIN_SHARE = 0.95  # achieved deliveries/s >= 95% of offered
SWEEP_GROWTH_FACTOR = 1.5  # p50 of the second half <= 1.5 x the first half's + 20 ms
SWEEP_GROWTH_SLACK_MS = 20.0
SWEEP_SEND_SLACK = 1.05  # the generator sent the step within 5% (+50 ms) of its duration
SWEEP_LOADGEN_BUSY = 0.9  # a failed step with the generator this busy may be its limit
SWEEP_DOWN_STEPS = 3  # when the first step fails: steps down, at most this many
SWEEP_MIN_PUBS = 8  # a step lasts long enough for this many publications


def sweep_verdict(step: dict[str, Any]) -> tuple[str, str]:
    """``("pass" | "fail" | "invalid", why)`` for one step of the rate sweep.

    Sustained ("pass"): no client closed or errored; every delivery of the step arrived
    within ``drain_s`` after its last publication was sent (``complete``); the achieved
    rate (``sweep_achieved``) is at least 95% of the offered rate (publications/s x
    subscribers); and the median latency of the publications sent in the step's second
    half is at most 1.5 x that of its first half + 20 ms (no backlog growing through the
    step: a backlog delays every later message, the median too, whereas a p99 is the
    slowest 1%, which one scheduler pause on a shared machine sets). "invalid": the
    measurement itself did not hold (the previous step's backlog never drained, or the
    generator could not send at the rate).
    """
    if not step.get("recovered", False):
        return (
            "invalid",
            f"previous backlog not drained ({step.get('backlog', '?')} deliveries owed)",
        )
    nominal = step["publications"] / step["rate_pubs"]
    if step["send_s"] > nominal * SWEEP_SEND_SLACK + 0.05:
        return "invalid", f"generator sent in {step['send_s']:.2f} s, not {nominal:.2f} s"
    if step.get("closed") or step.get("errors"):
        first = str(step.get("first_error") or "").strip()[:80]
        why = f"{step.get('closed', 0)} clients closed, {step.get('errors', 0)} errors"
        return "fail", why + (f" (first: {first})" if first else "")
    if not step.get("complete"):
        share = 100 * step["delivered"] / max(1, step["expected"])
        return "fail", f"{share:.1f}% delivered within the drain time"
    offered = step["rate_pubs"] * step["subscribers"]
    achieved = sweep_achieved(step)
    if achieved is None or achieved < SWEEP_MIN_SHARE * offered:
        return "fail", f"achieved {achieved or 0:,.0f}/s of {offered:,.0f}/s offered"
    halves = [b for b in step.get("halves", []) if b.get("n")]
    if len(halves) == 2:
        first, last = halves[0]["p50_ms"], halves[1]["p50_ms"]
        if last > first * SWEEP_GROWTH_FACTOR + SWEEP_GROWTH_SLACK_MS:
            return "fail", f"p50 grew from {first:.1f} ms (first half) to {last:.1f} ms (second)"
    return "pass", ""


def sweep_achieved(step: dict[str, Any]) -> float | None:
    """Deliveries/s of a step: deliveries / max(the step's sending time, first to last
    delivery). A peer that keeps up delivers over the sending time; one that falls behind
    delivers its last message late, by what its backlog grew to."""
    span = step.get("first_last_s")
    if span is None or not step["delivered"]:
        return None
    nominal = step["publications"] / step["rate_pubs"]
    return float(step["delivered"] / max(nominal, span))


def next_sweep_rate(
    history: list[tuple[float, str]], start: float, factor: float, top: float, refine: int
) -> float | None:
    """The next offered rate (deliveries/s) of a sweep, or None when it is done.

    Geometric steps from ``start`` by ``factor`` up to ``top`` until a step fails. While no
    step below the lowest failure has passed, steps go down by ``factor`` (at most
    ``SWEEP_DOWN_STEPS`` below ``start``). Then ``refine`` geometric bisections between
    the highest pass below the lowest failure and that failure. An invalid step ends the
    sweep.
    """
    if not history:
        return start
    if any(v == "invalid" for _, v in history):
        return None
    fails = [r for r, v in history if v == "fail"]
    if not fails:
        last = history[-1][0]
        return None if last >= top else min(last * factor, top)
    lowest_fail = min(fails)
    below = [r for r, v in history if v == "pass" and r < lowest_fail]
    if not below:
        down = lowest_fail / factor
        return down if down >= start / factor**SWEEP_DOWN_STEPS * 0.999 else None
    if _bisections(history) >= refine:
        return None
    return math.sqrt(max(below) * lowest_fail)


def _bisections(history: list[tuple[float, str]]) -> int:
    """Steps of ``history`` chosen by bisection: taken when a failure and a pass below
    the lowest failure were both already known."""
    count = 0
    for i in range(len(history)):
        fails = [r for r, v in history[:i] if v == "fail"]
        if fails and any(v == "pass" and r < min(fails) for r, v in history[:i]):
            count += 1
    return count


def sweep_sustained(history: list[tuple[float, str]], top: float) -> tuple[float | None, str]:
    """The highest sustained rate: the highest pass below the lowest failure, and how the
    sweep ended ("fail", "top" when it reached ``top`` without failing, "invalid")."""
    fails = [r for r, v in history if v == "fail"]
    ceiling = min(fails) if fails else math.inf
    passes = [r for r, v in history if v == "pass" and r < ceiling]
    best = max(passes) if passes else None
    if any(v == "invalid" for _, v in history):
        return best, "invalid"
    if fails:
        return best, "fail"
    return best, "top" if history and history[-1][0] >= top else "stopped"


class LoadgenSession:
    """A load generator driven line by line (the sweep): every read is bounded."""

    def __init__(self, ctx: Ctx, job: dict[str, Any], budget_s: float) -> None:
        job = loadgen_job(ctx, job, budget_s)
        self.err_path = ctx.logs / f"{ctx.job_no:03d}-loadgen.err"
        with open(self.err_path, "wb") as err:
            self.proc = _track(
                subprocess.Popen(
                    [ctx.node, str(LOADGEN), json.dumps(job)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    cwd=ROOT,
                    start_new_session=True,
                )
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("{"):
                self.lines.put(line)
        self.lines.put(None)

    def reply(self, timeout: float) -> dict[str, Any]:
        """The generator's next JSON line, or an error after ``timeout`` seconds."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return {"ok": False, "error": f"no answer from the load generator in {timeout:.0f} s"}
        if line is None:
            tail = self.err_path.read_text(errors="replace")[-500:]
            return {"ok": False, "error": f"load generator ended: {tail}"}
        result: dict[str, Any] = json.loads(line)
        return result

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send({"stop": True})
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        _stop(self.proc, grace=0.5)
        self.reader.join(5)


def job_sweep(ctx: Ctx, peer: Peer) -> dict[str, Any]:
    """One rate sweep of ``peer``: one server, ``sweep_subs`` subscribers, steps of
    offered deliveries/s chosen by ``next_sweep_rate`` and judged by ``sweep_verdict``."""
    ctx.job_no += 1
    p = ctx.params
    lowest = p.sweep_start / p.sweep_factor**SWEEP_DOWN_STEPS / p.sweep_subs  # publications/s
    longest = max(p.sweep_step_s, SWEEP_MIN_PUBS / lowest)
    most = math.ceil(math.log(p.sweep_max / p.sweep_start, p.sweep_factor))
    most += 2 + p.sweep_refine + SWEEP_DOWN_STEPS
    slack = p.sweep_drain_s + p.sweep_recover_s + p.sweep_settle_s + 5
    connect = _connect_budget(ctx, p.sweep_subs) + 30
    with servers(ctx, (peer, [])) as (srv,):
        job = {
            "proto": peer.proto,
            "port": srv.port,
            "scenario": "sweep",
            "subs": p.sweep_subs,
            "step_s": p.sweep_step_s,
            "drain_s": p.sweep_drain_s,
            "recover_s": p.sweep_recover_s,
            "settle_s": p.sweep_settle_s,
            "pids": {"server": srv.pid},
        }
        session = LoadgenSession(ctx, job, connect + most * (longest + slack) + 30)
        try:
            ready = session.reply(connect)
            if not ready.get("ready"):
                return {"ok": False, "error": ready.get("error", "not ready")}
            subs = int(ready["subscribers"])
            history: list[tuple[float, str]] = []
            steps: list[dict[str, Any]] = []
            while (
                rate := next_sweep_rate(
                    history, p.sweep_start, p.sweep_factor, p.sweep_max, p.sweep_refine
                )
            ) is not None:
                pubs = round(rate / subs, 3)
                step_s = max(p.sweep_step_s, SWEEP_MIN_PUBS / pubs)
                session.send({"rate_pubs": pubs, "step_s": round(step_s, 3)})
                step = session.reply(step_s + slack)
                if not step.get("step"):
                    return {"ok": False, "error": step.get("error", "?"), "steps": steps}
                verdict, why = sweep_verdict(step)
                busy = step.get("loadgen_cpu_share", 0) >= SWEEP_LOADGEN_BUSY
                if verdict == "fail" and busy:
                    why += f" (load generator {100 * step['loadgen_cpu_share']:.0f}% busy)"
                offered = step["rate_pubs"] * subs
                step.update(offered=offered, achieved=sweep_achieved(step), verdict=verdict)
                step.update(why=why, loadgen_busy=busy)
                steps.append(step)
                history.append((offered, verdict))
                ctx.log(f"    sweep {peer.key:<16} {offered:>10,.0f}/s  {verdict} {why}")
        finally:
            session.close()
    best, ended = sweep_sustained(history, p.sweep_max)
    limit = next((s for s in steps if s["verdict"] == "fail"), None)
    return {
        "ok": True,
        "subscribers": subs,
        "connect_rate": ready.get("connect_rate"),
        "sustained": best,
        "ended": ended,
        "generator_busy_at_failure": bool(limit and limit["loadgen_busy"]),
        "steps": steps,
    }


def sweep_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A peer's sweep over its rounds: the best round's rate, every round kept."""
    good = [r for r in runs if r.get("ok") and r.get("sustained") is not None]
    if not good:
        failed = next((r for r in runs if not r.get("ok")), None)
        why = "no step sustained" if failed is None else failed.get("error")
        return {"ok": False, "error": why, "runs": runs}
    best = max(good, key=lambda r: r["sustained"])
    return {
        "ok": True,
        "sustained": best["sustained"],
        "ended": best["ended"],
        "rates": [r.get("sustained") if r.get("ok") else None for r in runs],
        "runs": runs,
    }


def job_channels(ctx: Ctx, peer: Peer) -> dict[str, Any]:
    ctx.job_no += 1
    p = ctx.params
    with servers(ctx, (peer, [])) as (srv,):
        job = {
            "proto": peer.proto,
            "port": srv.port,
            "scenario": "channels",
            "subs": p.channels_n,
            "pubs": p.channels_shared_pubs,
            "deadline_s": p.deadline_s,
            "pids": {"server": srv.pid},
        }
        budget = 2 * _connect_budget(ctx, p.channels_n) + 2 * p.deadline_s + 30
        return run_loadgen(ctx, job, budget)


IDLE_WARM = 100  # clients connected before the measured steps (scenarios 4 and 5)


def job_idle(
    ctx: Ctx,
    peer: Peer,
    steps: list[int],
    extra: list[str] | None = None,
    deflate: bool = False,
    settle_s: float | None = None,
) -> dict[str, Any]:
    ctx.job_no += 1
    settle = ctx.params.idle_settle_s if settle_s is None else settle_s
    with servers(ctx, (peer, extra or [])) as (srv,):
        job = {
            "proto": peer.proto,
            "port": srv.port,
            "scenario": "idle",
            "warm": IDLE_WARM,
            "steps": steps,
            "settle_s": settle,
            "deflate": deflate,
            "pids": {"server": srv.pid},
        }
        budget = _connect_budget(ctx, max(steps)) + len(steps) * settle + 30
        result = run_loadgen(ctx, job, budget)
        result["ws"] = next((extra[i + 1] for i, a in enumerate(extra or []) if a == "--ws"), None)
        return result


def job_connect(ctx: Ctx, peer: Peer, n: int) -> dict[str, Any]:
    """One round of scenario 5: after the warm-up clients, ``n`` clients connect."""
    return job_idle(ctx, peer, [IDLE_WARM + n], settle_s=0.5)


def connect_summary(runs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Scenario 5 for one peer: the median connect rate of its rounds, every round kept."""
    good = [r for r in runs if r.get("ok") and not r.get("capped") and r.get("connect_rate")]
    if not good:
        failed = next((r for r in runs if not r.get("ok") or r.get("capped")), None)
        why = "no connects measured" if failed is None else failed.get("error")
        return {"ok": False, "error": why or "connect phase capped", "runs": runs}
    return {
        "ok": True,
        "clients": n,
        "connect_rate": round(statistics.median(r["connect_rate"] for r in good)),
        "rates": [r["connect_rate"] if r in good else None for r in runs],
        "failed_rounds": len(runs) - len(good),
    }


def probe(ctx: Ctx, peer: Peer, broker: str) -> str:
    """Empty when ``peer`` can run with ``broker``; otherwise why not."""
    cmd = [ctx.python, str(SERVE), "--peer", peer.server, "--broker", broker, "--probe"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=60, cwd=ROOT, env=ctx.env)
    except subprocess.TimeoutExpired:
        return "probe timed out"
    if done.returncode == 0:
        return ""
    text = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
    return text[-1] if text else f"probe exited {done.returncode}"


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_cleanup(prefix: str) -> None:
    """Delete every key this run created (they all start with the run's prefix)."""
    try:
        import redis
    except ImportError:
        return
    with contextlib.suppress(Exception):
        client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()


def job_redis(ctx: Ctx, peer: Peer) -> dict[str, Any]:
    """Scenario 6: publisher on process A, subscribers on process B, Redis between."""
    ctx.job_no += 1
    p = ctx.params
    redis_peer = Peer(peer.key, peer.server, peer.proto, broker="redis")
    why = probe(ctx, redis_peer, "redis")
    if why:
        return {"ok": False, "not_available": True, "error": why}
    try:
        with servers(ctx, (redis_peer, []), (redis_peer, [])) as (pub_srv, sub_srv):
            job = {
                "proto": peer.proto,
                "port": sub_srv.port,
                "pub_port": pub_srv.port,
                "scenario": "burst",
                "subs": p.redis_subs,
                "pubs": p.redis_pubs,
                "deadline_s": p.deadline_s,
                "repeats": p.repeats,
                "repeat_budget_s": p.repeat_budget_s,
                "pids": {"publisher_process": pub_srv.pid, "subscriber_process": sub_srv.pid},
            }
            budget = _connect_budget(ctx, p.redis_subs) + p.deadline_s + p.repeat_budget_s + 30
            return run_loadgen(ctx, job, budget)
    finally:
        redis_cleanup(ctx.prefix)


def _py_spy(ctx: Ctx) -> str | None:
    py_spy = shutil.which("py-spy") or str(Path(ctx.python).parent / "py-spy")
    return py_spy if Path(py_spy).exists() else None


def job_profile(ctx: Ctx, phase: str, n: int, pubs: int) -> dict[str, Any]:
    """py-spy on centrifuge-asgi during one phase: ``burst`` (sampling starts once the n
    subscribers are connected) or ``connect`` (n clients connecting and subscribing).
    The collapsed stacks are kept in results/."""
    py_spy = _py_spy(ctx)
    if py_spy is None:
        return {"ok": False, "error": "py-spy is not installed"}
    ctx.job_no += 1
    peer = PEER_BY_KEY["centrifuge-asgi"]
    out_path = RESULTS / f"profile-{ctx.mode}-centrifuge-{phase}.txt"
    out_path.unlink(missing_ok=True)
    with servers(ctx, (peer, [])) as (srv,):
        if phase == "burst":
            job: dict[str, Any] = {
                "scenario": "burst",
                "subs": n,
                "pubs": pubs,
                "deadline_s": ctx.params.deadline_s,
            }
        elif phase == "steady":
            p = ctx.params
            job = {
                "scenario": "steady",
                "subs": p.steady_subs,
                "rate": p.steady_rate,
                "duration_s": p.steady_seconds,
                "drain_s": p.steady_drain_s,
            }
        else:
            job = {"scenario": "idle", "steps": [n], "settle_s": 0.5}
        job.update(proto=peer.proto, port=srv.port, pids={"server": srv.pid})
        spy: subprocess.Popen[bytes] | None = None
        result: dict[str, Any] = {}

        def loadgen() -> None:
            result.update(run_loadgen(ctx, job, _connect_budget(ctx, n) + 60))

        worker = threading.Thread(target=loadgen)
        worker.start()
        if phase in ("burst", "steady"):
            # the connect phase is not what this profile is about: wait for n+1 sockets
            deadline = time.monotonic() + _connect_budget(ctx, n)
            while time.monotonic() < deadline and worker.is_alive():
                if _established(srv.port) > n:
                    break
                time.sleep(0.2)
        if worker.is_alive():
            spy = _track(
                subprocess.Popen(
                    [
                        *(py_spy, "record", "-p", str(srv.pid), "-r", "100", "--nonblocking"),
                        *("-f", "raw", "-o", str(out_path)),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        worker.join()
        if spy is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(spy.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(15)
            _stop(spy, grace=0.5)
    if out_path.exists():
        result["profile"] = report.summarize_profile(out_path)
        result["profile_file"] = str(out_path.relative_to(ROOT))
    return result


def job_memtrace(ctx: Ctx, peer: Peer, n: int) -> dict[str, Any]:
    """tracemalloc growth per idle client (``servers/memtrace.py``)."""
    ctx.job_no += 1
    prefix = ctx.logs / f"memtrace-{peer.key}"
    for f in ctx.logs.glob(f"memtrace-{peer.key}*"):
        f.unlink()
    with servers(ctx, (peer, ["--tracemalloc", str(prefix)])) as (srv,):
        job = {
            "proto": peer.proto,
            "port": srv.port,
            "scenario": "idle",
            "steps": [n],
            "settle_s": 1.0,
            "snapshot": str(prefix),
            "pids": {"server": srv.pid},
        }
        return run_loadgen(ctx, job, _connect_budget(ctx, n) + 90)


def _established(port: int) -> int:
    """Established TCP connections to 127.0.0.1:port (from /proc/net/tcp)."""
    want = f"0100007F:{port:04X}"
    count = 0
    with contextlib.suppress(OSError), open("/proc/net/tcp") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 3 and parts[1] == want and parts[3] == "01":
                count += 1
    return count


# gc-gen0-7000 and gc-freeze are what the peer now does itself (collector.py, as serve)
WHAT_IFS = ["no-publish-yield"]


def what_if_applicable(ctx: Ctx, patch: str) -> bool:
    """Does the tree still have the code ``patch`` replaces (``servers/what_if.py``)?"""
    cmd = [ctx.python, str(SERVE), "--peer", "centrifuge", "--what-if", patch, "--probe"]
    done = subprocess.run(cmd, capture_output=True, timeout=60, cwd=ROOT, env=ctx.env)
    return done.returncode == 0


def job_what_if(ctx: Ctx, patches: str, n: int, pubs: int) -> dict[str, Any]:
    try:
        return job_burst(ctx, PEER_BY_KEY["centrifuge-asgi"], n, pubs, ["--what-if", patches])
    except RuntimeError as exc:
        return {"ok": False, "error": str(exc)}


# ---------------------------------------------------------------------- src snapshot


def snapshot_src(dest: Path) -> tuple[dict[str, str], str]:
    """Copy ``src/centrifuge_asgi`` to ``dest`` and point the servers' PYTHONPATH at it.

    Other people edit ``src/`` while a run takes a quarter of an hour; with the copy
    every server of one run imports the same code. Returns the environment and a short
    digest of the copied files.
    """
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(
        ROOT / "src" / "centrifuge_asgi",
        dest / "centrifuge_asgi",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    digest = hashlib.sha256()
    for path in sorted((dest / "centrifuge_asgi").rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(dest), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    return env, digest.hexdigest()[:12]


# ---------------------------------------------------------------------- machine


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(ctx: Ctx) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    hypervisor = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        if " hypervisor" in f.read():
            hypervisor = "virtual machine (hypervisor flag set)"
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    node_version = subprocess.run([ctx.node, "--version"], capture_output=True, text=True)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True, cwd=ROOT
    )
    dists = [
        "centrifuge-asgi",
        "uvicorn",
        "uvloop",
        "httptools",
        "websockets",
        "wsproto",
        "starlette",
        "anyio",
        "msgspec",
        "python-socketio",
        "python-engineio",
        "channels",
        "channels-redis",
        "django",
        "redis",
    ]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "virtualization": hypervisor,
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node_version.stdout.strip(),
        "versions": {d: _version(d) for d in dists},
        "git": git.stdout.strip() + (" + uncommitted changes in src/" if dirty.stdout else ""),
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> str:
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
    return "?"


# ---------------------------------------------------------------------- driver


def _short(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"FAILED: {r.get('error', '?')}"
    keys = ("rate", "connect_rate", "p99_ms", "kb_per_client", "cpu_us_per_delivery", "sustained")
    bits = [f"{k}={r[k]}" for k in keys if k in r]
    if "points" in r:
        bits.append("kb/client=" + ",".join(str(pt["kb_per_client"]) for pt in r["points"]))
    if "unicast" in r:
        bits.append(f"unicast={r['unicast'].get('rate')} shared={r['shared'].get('rate')}")
    if r.get("complete") is False:
        bits.append(f"TIMED OUT ({r.get('delivered')}/{r.get('expected')})")
    return " ".join(bits)


def run_suite(ctx: Ctx) -> dict[str, Any]:
    p = ctx.params
    res: dict[str, Any] = {}
    started = time.monotonic()

    def record(section: str, key: str, fn: Any, *args: Any) -> None:
        t0 = time.monotonic()
        try:
            r = fn(*args)
        except Exception as exc:  # a peer that cannot start must not stop the suite
            r = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        r["wall_s"] = round(time.monotonic() - t0, 1)
        res.setdefault(section, {})[key] = r
        ctx.log(f"  {section:<14} {key:<16} {r['wall_s']:>6.1f}s  {_short(r)}")

    if "burst" in ctx.scenarios:
        for n in p.burst_sizes:
            for peer in ctx.peers:
                record(f"burst-{n}", peer.key, job_burst, ctx, peer, n, p.burst_pubs)
    if "connect" in ctx.scenarios:
        # Rounds interleave the peers, so that a slow minute of a shared machine does not
        # land on one peer only; each peer is reported at its median round.
        # The order of the peers rotates from round to round for the same reason.
        n = p.connect_clients or p.burst_sizes[-1]
        rounds: dict[str, list[dict[str, Any]]] = {}
        for i in range(p.connect_rounds):
            shift = i % len(ctx.peers)
            for peer in ctx.peers[shift:] + ctx.peers[:shift]:
                record(f"connect-round-{i + 1}", peer.key, job_connect, ctx, peer, n)
                rounds.setdefault(peer.key, []).append(res.pop(f"connect-round-{i + 1}")[peer.key])
        res["connect"] = {key: connect_summary(runs, n) for key, runs in rounds.items()}
    if "steady" in ctx.scenarios:
        for peer in ctx.peers:
            record("steady", peer.key, job_steady, ctx, peer)
    if "sweep" in ctx.scenarios:
        # as for connect: rounds interleave the peers and rotate their order
        sweeps: dict[str, list[dict[str, Any]]] = {}
        for i in range(p.sweep_rounds):
            shift = i % len(ctx.peers)
            for peer in ctx.peers[shift:] + ctx.peers[:shift]:
                record(f"sweep-round-{i + 1}", peer.key, job_sweep, ctx, peer)
                sweeps.setdefault(peer.key, []).append(res.pop(f"sweep-round-{i + 1}")[peer.key])
        res["sweep"] = {key: sweep_summary(runs) for key, runs in sweeps.items()}
    if "channels" in ctx.scenarios:
        for peer in ctx.peers:
            record("channels", peer.key, job_channels, ctx, peer)
    if "idle" in ctx.scenarios:
        for peer in ctx.peers:
            record("idle", peer.key, job_idle, ctx, peer, p.idle_steps)
    if "redis" in ctx.scenarios:
        for peer in ctx.peers:
            if not peer.redis_scenario:
                continue
            if not redis_up():
                res.setdefault("redis", {})[peer.key] = {
                    "ok": False,
                    "not_available": True,
                    "error": "no Redis at 127.0.0.1:6379",
                }
                continue
            record("redis", peer.key, job_redis, ctx, peer)
    if "scale" in ctx.scenarios:
        for peer in ctx.peers:
            if peer.key in SCALE_PEERS:
                record("scale", peer.key, job_scale, ctx, peer)
    if "memory-matrix" in ctx.scenarios and (p.memory_matrix or ctx.explicit):
        step = [p.matrix_n]
        for label, extra, deflate in MEMORY_VARIANTS:
            for key in MEMORY_MATRIX_PEERS:
                peer = PEER_BY_KEY.get(key)
                if peer is None or peer not in ctx.peers:
                    continue
                if deflate and peer.proto == "socketio":
                    continue  # its Engine.IO handshake cannot be followed blind
                record(f"memory:{label}", key, job_idle, ctx, peer, step, extra, deflate)
    if "profile" in ctx.scenarios and (p.profile or ctx.explicit):
        n = p.burst_sizes[0]
        record("profile", "burst", job_profile, ctx, "burst", n, p.burst_pubs)
        record("profile", "steady", job_profile, ctx, "steady", p.steady_subs, 0)
        record("profile", "connect", job_profile, ctx, "connect", p.idle_steps[0], 0)
        for key in ("asgi-floor", "centrifuge-asgi"):
            if PEER_BY_KEY[key] in ctx.peers:
                record("memtrace", key, job_memtrace, ctx, PEER_BY_KEY[key], p.memtrace_n)
    if "what-if" in ctx.scenarios and (p.what_if or ctx.explicit):
        usable = []
        for patch in WHAT_IFS:
            if what_if_applicable(ctx, patch):
                usable.append(patch)
            else:
                res.setdefault("what-if", {})[patch] = {
                    "ok": False,
                    "not_available": True,
                    "error": "the code it patches is no longer in src/ (already changed)",
                }
        combos = usable + ([",".join(usable)] if len(usable) > 1 else [])
        for patches in combos:
            record("what-if", patches, job_what_if, ctx, patches, p.burst_sizes[0], p.burst_pubs)
    res["_wall_s"] = round(time.monotonic() - started, 1)
    return res


SCENARIOS = [
    "burst",
    "connect",
    "steady",
    "sweep",
    "channels",
    "idle",
    "redis",
    "scale",
    "memory-matrix",
    "profile",
    "what-if",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small N (about 2 minutes)")
    ap.add_argument(
        "--peers", default="", help="comma-separated subset of: " + ", ".join(PEER_BY_KEY)
    )
    ap.add_argument(
        "--scenarios", default="", help="comma-separated subset of: " + ", ".join(SCENARIOS)
    )
    ap.add_argument(
        "--docs",
        choices=["auto", "yes", "no"],
        default="auto",
        help="rewrite the results section of docs/benchmarks.md and docs/benchmarks.png "
        "(auto: only for a full run of every peer and scenario)",
    )
    ap.add_argument("--report-only", metavar="RESULTS_JSON", help="re-render a saved run")
    ap.add_argument(
        "--connect-clients",
        type=int,
        help="clients of scenario 5 (default: the largest burst size, 10,000)",
    )
    ap.add_argument("--connect-rounds", type=int, help="rounds of scenario 5 (default 3)")
    args = ap.parse_args(argv)

    if args.report_only:
        data = json.loads(Path(args.report_only).read_text())
        _write_outputs(data, docs=args.docs == "yes")
        return 0

    node = shutil.which("node")
    if node is None:
        print("node (v18+) is required for the load generator", file=sys.stderr)
        return 2
    peers = PEERS
    if args.peers:
        wanted = args.peers.split(",")
        unknown = set(wanted) - set(PEER_BY_KEY)
        if unknown:
            ap.error(f"unknown peers: {sorted(unknown)}")
        peers = [p for p in PEERS if p.key in wanted]
    scenarios = set(args.scenarios.split(",")) if args.scenarios else set(SCENARIOS)
    if scenarios - set(SCENARIOS):
        ap.error(f"unknown scenarios: {sorted(scenarios - set(SCENARIOS))}")
    mode = "quick" if args.quick else "full"
    params = QUICK if args.quick else FULL
    if args.connect_clients:
        params = dataclasses.replace(params, connect_clients=args.connect_clients)
    if args.connect_rounds:
        params = dataclasses.replace(params, connect_rounds=args.connect_rounds)
    RESULTS.mkdir(exist_ok=True)
    logs = RESULTS / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    nofile = raise_nofile()
    env, src_digest = snapshot_src(RESULTS / "src-snapshot")
    ctx = Ctx(
        params=params,
        mode=mode,
        python=sys.executable,
        node=node,
        logs=logs,
        prefix=f"cfbench-{uuid.uuid4().hex[:10]}",
        peers=peers,
        scenarios=scenarios,
        explicit=bool(args.scenarios),
        env=env,
    )
    print(f"benchmark run ({mode}); RLIMIT_NOFILE={nofile}; logs in {logs}", flush=True)
    data: dict[str, Any] = {
        "mode": mode,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {**machine(ctx), "src_digest": src_digest},
        "params": params.__dict__,
        "ws": WS_IMPL,
        "peers": [p.key for p in peers],
    }

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        data["results"] = run_suite(ctx)
    except KeyboardInterrupt:
        print("interrupted: stopping every child process", file=sys.stderr)
        return 130
    finally:
        stop_all_children()
        if "redis" in scenarios:
            redis_cleanup(ctx.prefix)
    data["machine"]["loadavg_end"] = _loadavg()
    complete = peers == PEERS and scenarios == set(SCENARIOS)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # only a run of every peer and scenario replaces latest-<mode>.*; a partial run
    # (--peers/--scenarios) is kept beside it as partial-<mode>.*
    data["label"] = mode if complete else f"partial-{mode}"
    for name in (f"{mode}-{stamp}.json", f"latest-{data['label']}.json"):
        (RESULTS / name).write_text(json.dumps(data, indent=1))
    docs = args.docs == "yes" or (args.docs == "auto" and mode == "full" and complete)
    _write_outputs(data, docs=docs)
    return 0


def _write_outputs(data: dict[str, Any], *, docs: bool) -> None:
    md = report.render(data, plot_name=PLOT.name)
    label = data.get("label", data["mode"])
    (RESULTS / f"latest-{label}.md").write_text(md)
    report.plot(data, RESULTS / f"latest-{label}.png")
    print(md)
    if docs:
        report.plot(data, PLOT)
        report.update_doc(DOC, md)
        print(f"updated {DOC.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}")
    else:
        print(f"written {RESULTS.relative_to(ROOT)}/latest-{label}.md and .png")


if __name__ == "__main__":
    sys.exit(main())
