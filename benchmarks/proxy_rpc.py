#!/usr/bin/env python3
"""RPC proxy calls per second through an HTTP proxy and through a gRPC proxy.

Starts ``centrifuge-asgi serve`` (one process, memory engine) whose RPC namespace ``viahttp``
calls an HTTP backend and namespace ``viagrpc`` a gRPC backend; both backends run in this
process (a Starlette app under uvicorn, a ``grpc.aio`` server) and answer with the
request's data. One WebSocket client (JSON protocol) sends RPC commands, with 1 call in
flight (latency-bound) and with ``--inflight`` calls in flight; rounds alternate between
the two namespaces and the median round is reported, with the gRPC/HTTP ratios.

    python benchmarks/proxy_rpc.py [--seconds S] [--rounds R] [--inflight N]

Needs the ``grpc`` and ``server`` extras. Client, backends and server share the machine,
so the numbers are a ratio between the two proxy transports, not a capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import grpc
import grpc.aio
import uvicorn
import websockets
from loopback import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from centrifuge_asgi.grpc import proxy_pb2 as pb
from centrifuge_asgi.grpc import proxy_pb2_grpc


class GrpcBackend(proxy_pb2_grpc.CentrifugoProxyServicer):  # type: ignore[misc]
    async def RPC(self, request: Any, context: Any) -> Any:
        return pb.RPCResponse(result=pb.RPCResult(data=request.data))


async def http_rpc(request: Request) -> Response:
    body = json.loads(await request.body())
    answer = b'{"result":{"data":' + json.dumps(body.get("data")).encode() + b"}}"
    return Response(answer, media_type="application/json")


def start_node(
    workdir: Path, http_port: int, grpc_port: int
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = {
        "rpc": {
            "namespaces": [
                {"name": "viahttp", "proxy_enabled": True, "proxy_name": "http"},
                {"name": "viagrpc", "proxy_enabled": True, "proxy_name": "grpc"},
            ]
        },
        "proxies": [
            {"name": "http", "endpoint": f"http://127.0.0.1:{http_port}/rpc"},
            {"name": "grpc", "endpoint": f"grpc://127.0.0.1:{grpc_port}"},
        ],
        "client": {"allow_anonymous_connect_without_token": True},
        "log": {"level": "error"},
    }
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "centrifuge_asgi", "serve", "-c", str(path)]
    proc = subprocess.Popen([*cmd, "-a", "127.0.0.1", "-p", str(port)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("serve did not start")


class Client:
    """One WebSocket connection; RPC replies matched by id."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 1
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def read(self) -> None:
        async for frame in self.ws:
            for line in frame.split("\n"):
                reply = json.loads(line)
                fut = self.waiting.pop(reply.get("id", 0), None)
                if fut is not None:
                    fut.set_result(reply)

    async def call(self, **command: Any) -> dict[str, Any]:
        cid, self.next_id = self.next_id, self.next_id + 1
        fut = asyncio.get_running_loop().create_future()
        self.waiting[cid] = fut
        await self.ws.send(json.dumps({"id": cid, **command}))
        return await fut


async def measure(client: Client, method: str, seconds: float, inflight: int) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            reply = await client.call(rpc={"method": method, "data": {"n": 1}})
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return done / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    grpc_server = grpc.aio.server()
    proxy_pb2_grpc.add_CentrifugoProxyServicer_to_server(GrpcBackend(), grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    http_port = free_port()
    app = Starlette(routes=[Route("/rpc", http_rpc, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="error")
    http_server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(http_server.serve)
            try:
                await measure_all(args, http_port, grpc_port)
            finally:
                http_server.should_exit = True
    finally:
        await grpc_server.stop(None)


async def measure_all(args: argparse.Namespace, http_port: int, grpc_port: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_node(Path(tmp), http_port, grpc_port)
        try:
            url = f"ws://127.0.0.1:{port}/connection/websocket"
            async with websockets.connect(url) as ws, anyio.create_task_group() as tg:
                client = Client(ws)
                tg.start_soon(client.read)
                await client.call(connect={})
                for method in ("viahttp:warm", "viagrpc:warm"):  # open the pools and the channel
                    await measure(client, method, 0.5, 4)
                results: dict[tuple[str, int], list[float]] = {}
                for _ in range(args.rounds):
                    for inflight in (1, args.inflight):
                        for name, method in (("http", "viahttp:echo"), ("grpc", "viagrpc:echo")):
                            rate = await measure(client, method, args.seconds, inflight)
                            results.setdefault((name, inflight), []).append(rate)
                tg.cancel_scope.cancel()  # the reader
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"RPC proxy calls/s, median of {args.rounds} rounds of {args.seconds:g} s:")
    for inflight in (1, args.inflight):
        http = statistics.median(results[("http", inflight)])
        grpc_rate = statistics.median(results[("grpc", inflight)])
        print(
            f"  {inflight:>3} in flight: HTTP {http:8.0f}  gRPC {grpc_rate:8.0f}"
            f"  gRPC/HTTP {grpc_rate / http:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=16)
    asyncio.run(main(parser.parse_args()))
