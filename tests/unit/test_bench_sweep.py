"""The rate sweep of the benchmark harness (``benchmarks/run.py``, scenario ``sweep``):
the verdict on one step, the choice of the next rate, the reported rate, and its tables.

These are the harness's pure functions on synthetic steps; the sweep itself needs Node
and the peers' servers (``benchmarks/run.py --scenarios sweep``).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


run = _load("run")
report = sys.modules["report"]  # run.py imports it from benchmarks/


def step(**over: Any) -> dict[str, Any]:
    """A sustained step: 10 publications/s to 1,000 subscribers for 4 s."""
    base: dict[str, Any] = {
        "step": True,
        "recovered": True,
        "rate_pubs": 10.0,
        "subscribers": 1000,
        "publications": 40,
        "expected": 40_000,
        "delivered": 40_000,
        "complete": True,
        "send_s": 3.91,
        "step_s": 4,
        "wall_s": 4.0,
        "first_last_s": 3.92,  # within the 4 s of sending: 10,000 deliveries/s achieved
        "p50_ms": 5.0,
        "p99_ms": 12.0,
        "by_second": [{"n": 10_000, "p50_ms": 5.0, "p99_ms": 12.0} for _ in range(4)],
        "halves": [{"n": 20_000, "p50_ms": 5.0, "p99_ms": 12.0} for _ in range(2)],
        "frames": 40_000,
        "errors": 0,
        "closed": 0,
        "cpu_s": {"server": 1.0},
        "loadgen_cpu_share": 0.2,
    }
    base.update(over)
    return base


def test_a_step_that_keeps_up_is_sustained() -> None:
    assert run.sweep_verdict(step()) == ("pass", "")


@pytest.mark.parametrize(
    ("over", "verdict", "why"),
    [
        ({"recovered": False, "backlog": 5}, "invalid", "previous backlog not drained"),
        ({"send_s": 4.4}, "invalid", "generator sent in 4.40 s"),
        ({"closed": 3}, "fail", "3 clients closed"),
        ({"errors": 1}, "fail", "1 errors"),
        ({"errors": 2, "first_error": "close frame 3009 "}, "fail", "(first: close frame 3009)"),
        ({"complete": False, "delivered": 30_000}, "fail", "75.0% delivered"),
        ({"first_last_s": 4.3}, "fail", "achieved 9,302/s of 10,000/s"),
        ({"first_last_s": None}, "fail", "achieved 0/s"),
    ],
)
def test_a_step_that_falls_behind_or_cannot_be_measured(
    over: dict[str, Any], verdict: str, why: str
) -> None:
    got, reason = run.sweep_verdict(step(**over))
    assert got == verdict
    assert why in reason


def test_achieved_rate_at_exactly_95_percent_passes() -> None:
    assert run.sweep_verdict(step(first_last_s=40_000 / 9_500))[0] == "pass"
    assert run.sweep_verdict(step(first_last_s=40_000 / 9_499))[0] == "fail"


def test_achieved_rate_is_over_the_sending_time_at_least() -> None:
    # one publication per 2 s fanned out in 0.3 s: the peer keeps up with what is offered
    one = step(rate_pubs=0.5, publications=2, expected=2000, delivered=2000, send_s=2.0)
    assert run.sweep_achieved({**one, "first_last_s": 2.3}) == pytest.approx(2000 / 4)
    assert run.sweep_verdict({**one, "first_last_s": 2.3})[0] == "pass"
    # the last delivery 1 s after the end of sending: a backlog of 1 s
    assert run.sweep_achieved({**one, "first_last_s": 5.0}) == pytest.approx(2000 / 5)
    assert run.sweep_achieved({**one, "delivered": 0}) is None


def halves(first: float, last: float, p99: float = 400.0) -> list[dict[str, Any]]:
    """The two halves of a step: median latencies ``first`` and ``last``."""
    return [
        {"n": 20_000, "p50_ms": first, "p99_ms": 400.0},
        {"n": 20_000, "p50_ms": last, "p99_ms": p99},
    ]


def test_latency_growing_through_the_step_is_a_backlog() -> None:
    # the bound is first x 1.5 + 20 ms: 12 ms -> 38 ms; 100 ms -> 170 ms
    assert run.sweep_verdict(step(halves=halves(12, 38)))[0] == "pass"
    verdict, why = run.sweep_verdict(step(halves=halves(12, 38.1)))
    assert verdict == "fail"
    assert "p50 grew from 12.0 ms (first half) to 38.1 ms" in why
    assert run.sweep_verdict(step(halves=halves(100, 170)))[0] == "pass"
    assert run.sweep_verdict(step(halves=halves(100, 171)))[0] == "fail"
    # a falling latency (the first half's warm-up) is no backlog
    assert run.sweep_verdict(step(halves=halves(80, 10)))[0] == "pass"
    # one slow tail in the second half (p99), with the median flat, is no backlog either
    assert run.sweep_verdict(step(halves=halves(12, 12, p99=900)))[0] == "pass"


def test_a_half_without_deliveries_is_not_compared() -> None:
    empty = [halves(12, 100)[0], {"n": 0, "p50_ms": None, "p99_ms": None}]
    assert run.sweep_verdict(step(halves=empty))[0] == "pass"


def rates(history: list[tuple[float, str]], refine: int = 2) -> float | None:
    return run.next_sweep_rate(history, 1000, 2, 64_000, refine)


def test_next_rate_steps_up_geometrically_to_the_top_and_stops() -> None:
    assert rates([]) == 1000
    assert rates([(1000, "pass")]) == 2000
    assert rates([(1000, "pass"), (2000, "pass")]) == 4000
    assert rates([(32_000, "pass")]) == 64_000
    assert run.next_sweep_rate([(50_000, "pass")], 1000, 2, 64_000, 2) == 64_000  # capped
    assert rates([(64_000, "pass")]) is None


def test_next_rate_bisects_below_the_first_failure() -> None:
    history = [(1000, "pass"), (2000, "pass"), (4000, "fail")]
    mid = rates(history)
    assert mid == pytest.approx(math.sqrt(2000 * 4000))
    assert mid is not None
    # a pass moves the lower end up, a failure the upper end down
    after_pass = rates([*history, (mid, "pass")])
    assert after_pass == pytest.approx(math.sqrt(mid * 4000))
    after_fail = rates([*history, (mid, "fail")])
    assert after_fail == pytest.approx(math.sqrt(2000 * mid))
    # refine=2: two bisections, then done
    assert rates([*history, (mid, "pass"), (3500, "fail")]) is None
    assert rates(history, refine=0) is None


def test_next_rate_steps_down_when_the_first_step_fails() -> None:
    assert rates([(1000, "fail")]) == 500
    assert rates([(1000, "fail"), (500, "fail")]) == 250
    assert rates([(1000, "fail"), (500, "fail"), (250, "fail")]) == 125
    assert rates([(1000, "fail"), (500, "fail"), (250, "fail"), (125, "fail")]) is None
    # a pass on the way down: bisections as usual (two with refine=2)
    down = [(1000, "fail"), (500, "pass")]
    mid = rates(down)
    assert mid == pytest.approx(math.sqrt(500 * 1000))
    assert mid is not None
    assert rates([*down, (mid, "fail")]) == pytest.approx(math.sqrt(500 * mid))
    assert rates([*down, (mid, "fail"), (600, "pass")]) is None


def test_next_rate_stops_on_an_invalid_step() -> None:
    assert rates([(1000, "pass"), (2000, "invalid")]) is None
    assert rates([(1000, "invalid")]) is None


def test_the_sustained_rate_is_the_highest_pass_below_the_lowest_failure() -> None:
    history = [(1000, "pass"), (2000, "pass"), (4000, "fail"), (2828, "pass"), (3364, "fail")]
    assert run.sweep_sustained(history, 64_000) == (2828, "fail")
    # a pass above a failure (noise) does not count
    assert run.sweep_sustained([(1000, "pass"), (2000, "fail"), (4000, "pass")], 64_000) == (
        1000,
        "fail",
    )
    assert run.sweep_sustained([(1000, "fail")], 64_000) == (None, "fail")
    assert run.sweep_sustained([(32_000, "pass"), (64_000, "pass")], 64_000) == (64_000, "top")
    assert run.sweep_sustained([(1000, "pass"), (2000, "invalid")], 64_000) == (1000, "invalid")


def test_a_peer_is_reported_at_its_best_round() -> None:
    runs = [
        {"ok": True, "sustained": 2000, "ended": "fail"},
        {"ok": False, "error": "server exited"},
        {"ok": True, "sustained": 2828, "ended": "fail"},
    ]
    got = run.sweep_summary(runs)
    assert got["ok"] is True
    assert got["sustained"] == 2828
    assert got["rates"] == [2000, None, 2828]
    assert run.sweep_summary([{"ok": False, "error": "x"}]) == {
        "ok": False,
        "error": "x",
        "runs": [{"ok": False, "error": "x"}],
    }


def peer_sweep(sustained: float, ended: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    one = {"ok": True, "sustained": sustained, "ended": ended, "steps": steps}
    return {"ok": True, "sustained": sustained, "ended": ended, "runs": [one]}


def judged(rate_pubs: float, **over: Any) -> dict[str, Any]:
    pubs = round(rate_pubs * 4)
    sent = {"publications": pubs, "expected": pubs * 1000, "delivered": pubs * 1000}
    s = step(rate_pubs=rate_pubs, **{**sent, **over})
    verdict, why = run.sweep_verdict(s)
    s.update(offered=rate_pubs * 1000, achieved=run.sweep_achieved(s), verdict=verdict, why=why)
    return s


def test_the_report_gives_rates_ratios_bounds_and_every_step() -> None:
    data = {
        "params": {**run.QUICK.__dict__, "sweep_subs": 1000},
        "peers": ["asgi-floor", "centrifuge-asgi", "python-socketio"],
        "results": {
            "sweep": {
                "asgi-floor": peer_sweep(
                    20_000, "fail", [judged(20), judged(40, complete=False, delivered=1)]
                ),
                "centrifuge-asgi": peer_sweep(200_000, "top", [judged(200)]),
                "python-socketio": peer_sweep(5_000, "fail", [judged(5), judged(10, closed=2)]),
            }
        },
    }
    lines = report._sweep_table(data)
    text = "\n".join(lines)
    floor = next(ln for ln in lines if ln.startswith("| ASGI floor | 20,000 "))
    x = report.X
    assert f"| 20.0 | 4.00{x} | 1.00{x} | 20,000 | 40,000/s: 0.0% delivered" in floor
    ours = next(ln for ln in lines if ln.startswith("| **centrifuge-asgi** | ≥ 200,000 "))
    assert f"| ≥ 40.0{x} | ≥ 10.0{x} | ≥ 200,000 | none |" in ours
    assert (
        "| python-socketio | 10,000 | 10,000 | 5.0 | 12.0 | 5.0 | 5.0 | 1.000 | 25% | 20% " in text
    )
    assert "**no**: 2 clients closed" in text
    assert "Round 1, every step" in text
    whole = {**data, "machine": machine(), "mode": "quick", "started": "now"}
    assert "### 8. Highest sustained rate (sweep)" in report.render(whole)


def test_the_report_without_a_sweep() -> None:
    assert report._sweep_table({"params": {}, "results": {}}) == ["not run", ""]


def machine() -> dict[str, Any]:
    return {
        "nproc": 2,
        "cpu": "cpu",
        "memory_gib": 1,
        "kernel": "k",
        "python": "3.11",
        "node": "v20",
        "versions": {},
        "git": "abc",
        "loadavg_start": "0 0 0",
    }
