"""The timer wheel that carries every connection's ping and stale-connection deadline."""

from __future__ import annotations

import json
import logging

import pytest

from centrifuge_asgi import Node
from centrifuge_asgi.session import TransportInfo
from centrifuge_asgi.timers import Scheduler, Wheel, wheel_resolution
from tests.interop.support import make_config, token


class Clock:
    def __init__(self) -> None:
        self.now = 1024.0

    def __call__(self) -> float:
        return self.now


def wheel(resolution: float = 0.25) -> tuple[Wheel[str], Scheduler, Clock, list[str]]:
    clock = Clock()
    sched = Scheduler(clock=clock)
    fired: list[str] = []
    return Wheel(sched, fired.append, resolution), sched, clock, fired


def advance(sched: Scheduler, clock: Clock, seconds: float) -> None:
    clock.now += seconds
    sched.fire_due()


def test_fires_never_early_and_at_most_one_resolution_late() -> None:
    w, sched, clock, fired = wheel(0.25)
    clock.now += 0.125  # between ticks (binary fractions: exact arithmetic)
    w.add("a", 1.0)  # due at 1025.125: its tick is 1025.25
    advance(sched, clock, 0.875)  # 1025.0
    assert fired == []
    advance(sched, clock, 0.125)  # 1025.125: due, but the tick is not reached
    assert fired == []
    advance(sched, clock, 0.125)  # 1025.25
    assert fired == ["a"]
    assert len(w) == 0


def test_items_of_one_tick_share_one_timer() -> None:
    w, sched, clock, fired = wheel(1.0)
    for i in range(100):
        w.add(f"c{i}", 10.0)
    assert len(sched) == 1 and len(w) == 100
    advance(sched, clock, 10.0)
    assert sorted(fired) == sorted(f"c{i}" for i in range(100))


def test_add_moves_the_deadline_and_discard_cancels_it() -> None:
    w, sched, clock, fired = wheel(0.25)
    w.add("moved", 1.0)
    w.add("gone", 1.0)
    w.add("moved", 3.0)
    w.discard("gone")
    w.discard("never added")
    advance(sched, clock, 2.0)
    assert fired == []
    advance(sched, clock, 1.0)
    assert fired == ["moved"]


@pytest.mark.parametrize("delay", [0.0, -1.0, float("inf")])
def test_a_delay_that_is_not_positive_and_finite_means_no_deadline(delay: float) -> None:
    w, sched, clock, fired = wheel()
    w.add("x", 1.0)
    w.add("x", delay)  # replaces the earlier deadline with none
    advance(sched, clock, 3600.0)
    assert fired == [] and len(w) == 0


def test_callbacks_may_discard_and_re_add_items_of_the_same_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    sched = Scheduler(clock=clock)
    fired: list[str] = []

    def fire(item: str) -> None:
        fired.append(item)
        if item == "first":
            w.discard("second")  # due in the same tick: must not fire
            w.add("first", 1.0)  # re-armed: fires again one second later

    w: Wheel[str] = Wheel(sched, fire, 0.5)
    for item in ("first", "second", "third"):
        w.add(item, 1.0)
    advance(sched, clock, 1.0)
    advance(sched, clock, 1.0)
    assert fired == ["first", "third", "first"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_callback_that_compacts_the_heap_does_not_fire_due_timers_twice() -> None:
    clock = Clock()
    sched = Scheduler(clock=clock)
    fired: list[int] = []

    def first() -> None:
        fired.append(0)
        for _ in range(2100):  # enough cancelled timers to make call_later compact
            sched.call_later(3600, lambda: None).cancel()

    sched.call_later(1, first)
    sched.call_later(1, lambda: fired.append(1))
    sched.call_later(1, lambda: fired.append(2))
    advance(sched, clock, 1.0)
    sched.fire_due()  # the next round must not find them again
    assert sorted(fired) == [0, 1, 2]


def test_a_failing_callback_does_not_stop_the_others() -> None:
    clock = Clock()
    sched = Scheduler(clock=clock)
    fired: list[str] = []

    def fire(item: str) -> None:
        if item == "bad":
            raise RuntimeError("boom")
        fired.append(item)

    w: Wheel[str] = Wheel(sched, fire, 1.0)
    for item in ("bad", "good"):
        w.add(item, 1.0)
    advance(sched, clock, 1.0)
    assert fired == ["good"]


@pytest.mark.parametrize(
    ("delay", "expected"),
    [(25.0, 1.0), (10.0, 1.0), (8.0, 1.0), (2.0, 0.25), (1.0, 0.125), (0.5, 0.0625), (0, 1.0)],
)
def test_resolution_is_a_power_of_two_up_to_an_eighth_of_the_delay(
    delay: float, expected: float
) -> None:
    assert wheel_resolution(delay) == expected


@pytest.mark.anyio
async def test_a_connection_keeps_no_timer_object_for_its_ping_and_stale_check() -> None:
    """Both deadlines live in the node's wheels; a closed session leaves none behind."""
    async with Node(make_config()) as node:
        timers_before = len(node.scheduler)
        sessions = []
        for i in range(50):
            s = node.create_session(TransportInfo())
            sessions.append(s)
            assert s in node.stale_checks
            frame = {"id": 1, "connect": {"token": token(f"u{i}", ttl=None)}}
            await s.handle_frame(json.dumps(frame).encode())
            assert s.connected and s not in node.stale_checks
        assert len(node.pings) == 50 and len(node.stale_checks) == 0
        # one timer per wheel tick (two ticks each when the loop crosses a tick boundary),
        # not one per client
        assert len(node.scheduler) - timers_before <= 4
        for s in sessions:
            await s.finish()
        assert len(node.pings) == 0
        # the wheels keep no reference to closed sessions
        for ticks in (node.pings._ticks, node.stale_checks._ticks):
            assert not any(s in items for s in sessions for items in ticks.values())
