#!/usr/bin/env python3
"""The longest time one peer's work holds the event loop (see docs/security.md).

Drives ``node.asgi_app()`` at the ASGI level (no sockets, memory engine) while a monitor
task sleeps 2 ms at a time and records how late it wakes:

    python benchmarks/loop_stall.py frame    # one client sends 100,000 commands in one frame
    python benchmarks/loop_stall.py batch    # one API batch of 24,000 publications
    python benchmarks/loop_stall.py drop     # 5,000 subscribed clients disconnect at once

Each prints how long the work took and the longest stall the monitor saw. The numbers
depend on the machine; compare runs of the same machine (for example before and after a
change, with ``git stash``).
"""

import asyncio
import json
import sys
import time

import anyio
from connect_cost import SCOPE  # the same WebSocket scope as the connect-cost harness

from centrifuge_asgi import Node

CONFIG = {
    "client": {"allow_anonymous_connect_without_token": True},
    "websocket": {"message_size_limit": 64 * 1024 * 1024},
    "http_api": {"key": "k", "max_body_size": 64 * 1024 * 1024},
    "channel": {
        "without_namespace": {
            "allow_subscribe_for_client": True,
            "allow_subscribe_for_anonymous": True,
            "presence": True,
            "allow_presence_for_anonymous": True,
            "allow_presence_for_subscriber": True,
            "join_leave": True,
        }
    },
}


class Lag:
    def __init__(self):
        self.max = 0.0

    async def run(self):
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.002)
            self.max = max(self.max, time.perf_counter() - t - 0.002)


class Client:
    def __init__(self, app, frames):
        self.inbox = asyncio.Queue()
        self.sent = []
        self.closed = asyncio.Event()
        for f in frames:
            self.inbox.put_nowait(f)
        self.replies = 0
        self.app = app
        self.close_code = None

    async def receive(self):
        return await self.inbox.get()

    async def send(self, m):
        if m["type"] == "websocket.send":
            self.replies += (m.get("text") or "").count("\n") + 1
        if m["type"] == "websocket.close":
            self.close_code = m.get("code")
            self.closed.set()

    async def run(self):
        await self.app(dict(SCOPE), self.receive, self.send)


async def main(which):
    node = Node(CONFIG)
    app = node.asgi_app()
    async with node, anyio.create_task_group() as tg:
        lag = Lag()
        tg.start_soon(lag.run)
        if which == "frame":
            n = 100_000
            cmds = [
                json.dumps({"id": 1, "connect": {}}),
                json.dumps({"id": 2, "subscribe": {"channel": "c"}}),
            ]
            cmds += [json.dumps({"id": i + 3, "presence": {"channel": "c"}}) for i in range(n)]
            c = Client(
                app,
                [
                    {"type": "websocket.connect"},
                    {"type": "websocket.receive", "text": "\n".join(cmds)},
                ],
            )
            async with anyio.create_task_group() as running:
                running.start_soon(c.run)
                t0 = time.perf_counter()
                while c.replies < n + 2 and not c.closed.is_set():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                print(
                    "frame: replies",
                    c.replies,
                    "close",
                    c.close_code,
                    "took %.2fs" % (time.perf_counter() - t0),
                )
                c.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        elif which == "drop":
            n = 5000
            clients = [
                Client(
                    app,
                    [
                        {"type": "websocket.connect"},
                        {
                            "type": "websocket.receive",
                            "text": json.dumps({"id": 1, "connect": {}})
                            + "\n"
                            + json.dumps({"id": 2, "subscribe": {"channel": f"c{i % 50}"}}),
                        },
                    ],
                )
                for i in range(n)
            ]
            async with anyio.create_task_group() as running:
                for c in clients:
                    running.start_soon(c.run)
                while sum(c.replies for c in clients) < 2 * n:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)
                lag.max = 0
                t0 = time.perf_counter()
                for c in clients:
                    c.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
            # the task group waited for every client to finish
            print("drop: took %.2fs" % (time.perf_counter() - t0))
        elif which == "batch":
            n = 24_000
            body = json.dumps(
                {"commands": [{"publish": {"channel": "c", "data": {"i": i}}} for i in range(n)]}
            ).encode()
            out = []
            msgs = [{"type": "http.request", "body": body, "more_body": False}]

            async def rcv():
                return msgs.pop(0) if msgs else {"type": "http.disconnect"}

            async def snd(m):
                out.append(m)

            scope = {
                "type": "http",
                "method": "POST",
                "path": "/api/batch",
                "root_path": "",
                "query_string": b"",
                "headers": [(b"x-api-key", b"k"), (b"content-type", b"application/json")],
            }
            await asyncio.sleep(0.1)
            lag.max = 0
            t0 = time.perf_counter()
            await app(scope, rcv, snd)
            print("batch: status", out[0].get("status"), "took %.2fs" % (time.perf_counter() - t0))
        await asyncio.sleep(0.05)
        print(which, "max loop stall %.0f ms" % (lag.max * 1000))
        tg.cancel_scope.cancel()  # the monitor


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("frame", "batch", "drop"):
        sys.exit("usage: loop_stall.py frame|batch|drop")
    asyncio.run(main(sys.argv[1]))
