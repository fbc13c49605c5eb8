"""tracemalloc for an idle-memory run: where a benchmark server's memory per client goes.

``serve.py --tracemalloc PREFIX`` starts tracing and a daemon thread that waits for the
load generator's trigger files: ``PREFIX.base-trigger`` takes the baseline snapshot
(after the warm-up clients) and writes ``PREFIX.base-done``; ``PREFIX.final-trigger``
compares a second snapshot with it and writes ``PREFIX.json``. Files, not signals:
Python signal handlers can wait a long time inside uvloop's C loop.
"""

from __future__ import annotations

import json
import re
import threading
import time
import tracemalloc
from pathlib import Path

LAYERS = (
    ("centrifuge_asgi/", "centrifuge_asgi"),
    ("anyio/", "anyio"),
    ("uvicorn/", "uvicorn"),
    ("websockets/", "websockets"),
    ("wsproto/", "wsproto"),
    ("starlette/", "starlette"),
    ("asyncio/", "asyncio"),
    ("uvloop/", "uvloop"),
    ("socketio/", "socketio"),
    ("engineio/", "engineio"),
    ("channels/", "channels"),
    ("msgspec", "msgspec"),
    ("uuid.py", "uuid"),
)


def _layer(filename: str) -> str:
    for marker, name in LAYERS:
        if marker in filename:
            return name
    return "other"


def _short(filename: str) -> str:
    """``asyncio/locks.py`` rather than the interpreter's or the venv's full path."""
    if "/centrifuge_asgi/" in filename:  # src/ or run.py's snapshot of it
        return "centrifuge_asgi/" + filename.split("/centrifuge_asgi/", 1)[1]
    for marker in ("site-packages/", "/src/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return re.sub(r"^.*/lib/python3\.\d+/", "", filename)


def _watch(prefix: Path) -> None:
    base_trigger = prefix.with_name(prefix.name + ".base-trigger")
    final_trigger = prefix.with_name(prefix.name + ".final-trigger")
    while not base_trigger.exists():
        time.sleep(0.1)
    baseline = tracemalloc.take_snapshot()
    prefix.with_name(prefix.name + ".base-done").write_text("ok")
    while not final_trigger.exists():
        time.sleep(0.1)
    clients = int(final_trigger.read_text() or 0)
    snap = tracemalloc.take_snapshot()
    diff = snap.compare_to(baseline, "lineno")
    layers: dict[str, int] = {}
    for d in diff:
        name = _layer(d.traceback[0].filename)
        layers[name] = layers.get(name, 0) + d.size_diff
    top = [
        {
            "where": f"{_short(d.traceback[0].filename)}:{d.traceback[0].lineno}",
            "bytes_per_client": round(d.size_diff / max(1, clients), 1),
            "blocks_per_client": round(d.count_diff / max(1, clients), 2),
        }
        for d in diff[:25]
    ]
    out = {
        "clients": clients,
        "traced_bytes_per_client": round(sum(d.size_diff for d in diff) / max(1, clients), 1),
        "layers_bytes_per_client": {
            k: round(v / max(1, clients), 1)
            for k, v in sorted(layers.items(), key=lambda kv: -kv[1])
        },
        "top": top,
    }
    tmp = prefix.with_name(prefix.name + ".json.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.rename(prefix.with_name(prefix.name + ".json"))


def start(prefix: str) -> None:
    tracemalloc.start(1)
    threading.Thread(target=_watch, args=(Path(prefix),), daemon=True).start()
