"""The garbage collector's view of a benchmark server under load (``serve.py --gc-stats``).

A daemon thread waits for ``PREFIX.trigger`` (written by the load generator once its
clients are connected and the burst is delivered), then writes ``PREFIX.json``: RSS, the
objects the collector tracks, the time of three full collections run then, and the
collections of each generation since start-up with the total time spent in full ones.
Files, not signals, for the reason memtrace.py gives.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

_full = {"count": 0, "seconds": 0.0, "longest": 0.0}
_started = [0.0]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if info["generation"] != 2:
        return
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    took = time.perf_counter() - _started[0]
    _full["count"] += 1
    _full["seconds"] += took
    _full["longest"] = max(_full["longest"], took)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _wait_and_report(prefix: str) -> None:
    trigger = Path(f"{prefix}.trigger")
    while not trigger.exists():
        time.sleep(0.2)
    during = dict(_full)
    tracked = len(gc.get_objects())
    passes = []
    for _ in range(3):
        t0 = time.perf_counter()
        gc.collect()
        passes.append(round((time.perf_counter() - t0) * 1000, 1))
    report = {
        "rss_mb": round(_rss_mb(), 1),
        "tracked_objects": tracked,
        "frozen_objects": gc.get_freeze_count(),
        "full_gc_ms": passes,
        "gc_threshold": list(gc.get_threshold()),
        "full_collections_during_run": during["count"],
        "full_collections_ms_total": round(during["seconds"] * 1000, 1),
        "full_collection_longest_ms": round(during["longest"] * 1000, 1),
        "collections_by_generation": [s["collections"] for s in gc.get_stats()],
    }
    tmp = Path(f"{prefix}.json.tmp")
    tmp.write_text(json.dumps(report))
    tmp.rename(f"{prefix}.json")


def start(prefix: str) -> None:
    gc.callbacks.append(_on_gc)
    threading.Thread(target=_wait_and_report, args=(prefix,), daemon=True).start()
