"""examples/django_outbox end to end, as a reader runs it: ``manage.py migrate``, then the
Django app and the centrifuge-asgi node in one ``uvicorn`` process, against the real
PostgreSQL (127.0.0.1:5432, database ``test``), in a schema of its own (dropped at the end).

What is proven: a Django view that saves a message and calls ``outbox_table.publish_sync``
with Django's cursor inside ``transaction.atomic()`` commits both rows; the node's
``postgresql`` consumer delivers the publication to a centrifuge-python subscriber
exactly once and empties the outbox; the view that fails after the same two writes rolls
both back, so nothing is saved or published.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.interop.serve_process import free_port

from .conftest import PG_DSN, unavailable, until

pytestmark = [pytest.mark.anyio]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_outbox"
TIMEOUT = 10.0  # each step: migrate, server start, delivery


def _sql(*statements: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh PostgreSQL schema for the example's tables, dropped afterwards."""
    try:
        import django  # noqa: F401
        import psycopg
    except ImportError as exc:
        unavailable(f"{exc.name} is not installed (test extra)")
    name = f"dj_{uuid.uuid4().hex[:12]}"
    try:
        _sql(f"CREATE SCHEMA {name}")
    except (OSError, psycopg.Error) as exc:
        unavailable(f"PostgreSQL at {PG_DSN} is not available: {exc}")
    try:
        yield name
    finally:
        _sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _run_example(schema: str, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "DJANGO_OUTBOX_SCHEMA": schema, "PYTHONUNBUFFERED": "1"}
    migrate = subprocess.run(
        [sys.executable, str(EXAMPLE / "manage.py"), "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "Applying chat.0001_initial... OK" in migrate.stdout
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLE)]
    command += ["outbox_site.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_ready(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + TIMEOUT * 2
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/messages", timeout=1)
            return
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                output = proc.communicate(timeout=5)[0]
                raise AssertionError(f"the example did not start:\n{output}") from None
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.communicate(timeout=5)[0]


def _outbox_rows(schema: str) -> int:
    import psycopg

    with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
        row = conn.execute(f"SELECT count(*) FROM {schema}.chat_outbox").fetchone()
    assert row is not None
    return int(row[0])


async def test_django_view_commits_publishes_once_and_rollback_publishes_nothing(
    schema: str,
) -> None:
    from centrifuge import Client, PublicationContext, SubscriptionEventHandler

    port = free_port()
    proc = _run_example(schema, port)
    try:
        _wait_ready(proc, port)
        received: list[Any] = []

        class Events(SubscriptionEventHandler):
            async def on_publication(self, ctx: PublicationContext) -> None:
                received.append(ctx.pub.data)

        client = Client(f"ws://127.0.0.1:{port}/connection/websocket", timeout=5)
        sub = client.new_subscription("chat:lobby", events=Events())
        await client.connect()
        await sub.subscribe()
        await sub.ready(timeout=5)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                hello = await http.post("/messages", json={"text": "hello"})
                assert hello.status_code == 200
                lost = await http.post("/messages/rejected", json={"text": "lost"})
                assert (lost.status_code, lost.json()) == (409, {"rejected": True})
                bye = await http.post("/messages", json={"text": "bye"})
                assert bye.status_code == 200

                async def two_received() -> bool:
                    return len(received) >= 2

                async def outbox_empty() -> bool:
                    return await anyio.to_thread.run_sync(_outbox_rows, schema) == 0

                await until(two_received, TIMEOUT)
                await until(outbox_empty, TIMEOUT)
                await anyio.sleep(0.5)  # a repeat, or the rolled-back row, would show by now
                saved = (await http.get("/messages")).json()["messages"]
        finally:
            await client.disconnect()
        assert received == [hello.json(), bye.json()]  # each once, the rejected one never
        assert [m["text"] for m in saved] == ["hello", "bye"]
        assert saved == received
    finally:
        output = _stop(proc)
    assert "Traceback" not in output, output
