"""The embedded recipe under gunicorn: ``gunicorn app:app -k uvicorn.workers.UvicornWorker
-w 2`` over the shared Redis at 127.0.0.1:6379 (a unique prefix per test), driven by the
official centrifuge-python SDK. The helpers are test_workers.py's (its
``uvicorn app:app --workers 2`` test is the same recipe under uvicorn's supervisor).

Real processes on loopback: gunicorn's arbiter and its two workers. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import pytest

from tests.unit.test_redis_engine import require_main_redis, unique_prefix

from .serve_process import free_port
from .test_workers import (
    WAIT,
    Subscriber,
    alive,
    assert_one_cluster,
    children,
    clients_per_node,
    cluster_config,
    health,
    nodes_seen,
    publish_numbers,
    subscribers,
    until,
    wait_for,
)

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

# uvicorn 0.55 still ships this class (its module warns that it moves to the
# ``uvicorn-worker`` package; DeprecationWarning is not shown by default).
WORKER_CLASS = "uvicorn.workers.UvicornWorker"
GRACEFUL_TIMEOUT = 10  # gunicorn's default is 30 s


@dataclass
class Gunicorn:
    proc: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def stop(self) -> str:
        """SIGTERM (a no-op once it has exited); its output, killing it if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.communicate(timeout=GRACEFUL_TIMEOUT + 5)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()[0] + "\n(killed: SIGTERM did not stop it)"


@pytest.fixture
def gunicorn() -> Iterator[Gunicorn]:
    """``gunicorn tests.interop.workers_app:app -k uvicorn.workers.UvicornWorker -w 2``;
    returns once both workers answer (two nodes in ``info``)."""
    require_main_redis()
    port = free_port()
    env = {**os.environ, "WORKERS_APP_CONFIG": json.dumps(cluster_config(unique_prefix()))}
    command = ["gunicorn", "tests.interop.workers_app:app", "-k", WORKER_CLASS, "-w", "2"]
    command += ["--bind", f"127.0.0.1:{port}", "--graceful-timeout", str(GRACEFUL_TIMEOUT)]
    # no control socket in ~/.gunicorn (gunicorn 27): tests may run side by side
    command += ["--log-level", "warning", "--no-control-socket"]
    proc = subprocess.Popen(
        [sys.executable, "-m", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    served = Gunicorn(proc, port)
    try:
        wait_for(lambda: proc.poll() is not None or health(port) == 200, "gunicorn")
        assert proc.poll() is None, served.stop()
        wait_for(lambda: nodes_seen(port) == 2, "two nodes in info")
        yield served
    finally:
        out = served.stop()
    assert "Traceback" not in out, out


async def test_gunicorn_workers_form_one_cluster(gunicorn: Gunicorn) -> None:
    """Clients land on both workers; a publication from the API (either worker) and from
    a client on each worker reaches all of them; presence and history agree."""
    assert len(children(gunicorn.proc.pid)) == 2
    async with subscribers(gunicorn.url, "room:g", 8, gunicorn.port) as subs:
        await assert_one_cluster(gunicorn.port, subs, "room:g")


async def test_sigterm_drains_gunicorn_workers(gunicorn: Gunicorn) -> None:
    """SIGTERM to one worker while a publisher runs: its clients are disconnected with
    a code that tells the SDK to reconnect, reconnect to a worker of the same cluster,
    recover, and have every publication exactly once, in order; gunicorn starts a
    replacement. Then SIGTERM to the arbiter: gunicorn passes it to both workers, every
    client is disconnected, the nodes shut down (no traceback), and gunicorn exits with
    0 well within its graceful timeout, leaving no worker behind."""
    pid, port = gunicorn.proc.pid, gunicorn.port
    workers = children(pid)
    assert len(workers) == 2
    victim = min(workers)
    sent: list[int] = []
    async with subscribers(gunicorn.url, "room:stop", 6, port) as subs:
        per_node = await clients_per_node(port)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_numbers, port, "room:stop", sent, stop)
            await anyio.sleep(0.3)
            os.kill(victim, signal.SIGTERM)
            await until(lambda: len(now := children(pid)) == 2 and victim not in now)
            await until(lambda: not alive(victim))

            def moved_and_resubscribed() -> bool:
                moved = [sub for sub in subs if reconnecting(sub)]
                return len(moved) in per_node and all(resubscribed(sub) for sub in moved)

            await until(moved_and_resubscribed)
            await anyio.sleep(0.3)
            stop.set()
        await until(lambda: all(len(sub.received()) >= len(sent) for sub in subs))
        moved = [sub for sub in subs if reconnecting(sub)]
        assert len(moved) in per_node and moved, (len(moved), per_node)
        for sub in subs:
            assert sub.received() == sent, (len(sub.received()), len(sent))
            again = sub.sub_events.rec.of("subscribed")[1:]
            assert all(ctx.was_recovering and ctx.recovered for ctx in again)
        codes = {ctx.code for sub in moved for ctx in sub.events.rec.of("connecting")[1:]}
        assert codes <= RECONNECT_CODES, codes

        workers = children(pid)
        before = {id(sub): len(sub.events.rec.of("connecting")) for sub in subs}
        gunicorn.proc.send_signal(signal.SIGTERM)
        await until(
            lambda: all(len(sub.events.rec.of("connecting")) > before[id(sub)] for sub in subs)
        )
        with anyio.fail_after(WAIT):
            while gunicorn.proc.poll() is None:  # noqa: ASYNC110 (a process, not a task)
                await anyio.sleep(0.05)
    assert gunicorn.proc.returncode == 0, gunicorn.stop()
    assert not any(alive(worker) for worker in workers)


# centrifuge-python reports a close below 3000 as 1 "transport closed": uvicorn closes
# its WebSockets with 1012 "service restart" before the node's 3001 "shutdown" can go
# out (docs/deploy.md). Both mean "reconnect" to the SDKs.
RECONNECT_CODES = {1, 3001}


def resubscribed(sub: Subscriber) -> bool:
    return len(sub.sub_events.rec.of("subscribed")) > 1


def reconnecting(sub: Subscriber) -> bool:
    """The client was connected and has since begun to reconnect."""
    return len(sub.events.rec.of("connecting")) > 1
