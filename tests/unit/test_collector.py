"""collector.tune_for_serving: what ``centrifuge-asgi serve`` does to the collector.

Run in a child interpreter: the setting is process-wide, and the test process keeps
CPython's defaults.
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import gc, json
from centrifuge_asgi.collector import SERVE_GEN0_THRESHOLD, tune_for_serving
before = gc.get_threshold()
objects = [[i] for i in range(1000)]  # survive start-up: frozen with it
tune_for_serving()
print(json.dumps({"before": before, "after": gc.get_threshold(),
                  "frozen": gc.get_freeze_count(), "want": SERVE_GEN0_THRESHOLD,
                  "tracked": gc.is_tracked(objects[0])}))
"""


def test_serve_freezes_the_start_up_heap_and_raises_the_first_threshold() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    got = json.loads(out.stdout)
    assert got["before"][0] < got["want"]
    assert got["after"] == [got["want"], got["before"][1], got["before"][2]]
    assert got["frozen"] >= 1000  # start-up objects left the collected generations
    assert got["tracked"]  # still tracked: only no longer walked by collections


def test_serve_applies_it() -> None:
    import inspect

    from centrifuge_asgi import cli

    assert "tune_for_serving()" in inspect.getsource(cli._serve)
