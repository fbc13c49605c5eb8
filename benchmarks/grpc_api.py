#!/usr/bin/env python3
"""Server API publish calls per second over HTTP and over gRPC, from one client.

Starts ``centrifuge-asgi serve`` (one process, memory engine, HTTP API and ``grpc_api``
on) and publishes into a channel without history and without subscribers, from this
process: ``POST /api/publish`` over keep-alive HTTP/1.1 (a minimal raw client, one
connection per call in flight, and ``httpx.AsyncClient``), and ``CentrifugoApi/Publish``
over one ``grpc.aio`` channel. Each is measured with 1 call in flight (latency-bound) and
with ``--inflight`` calls in flight (throughput-bound); rounds alternate between the
clients and the median round is reported, with the gRPC/HTTP ratios.

    python benchmarks/grpc_api.py [--seconds S] [--rounds R] [--inflight N]

Needs the ``grpc`` extra and httpx. The client shares the machine with the server, so
the numbers are a ratio between the two protocols, not a capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
from loopback import free_port

from centrifuge_asgi.grpc import api_pb2
from centrifuge_asgi.grpc.api_pb2_grpc import CentrifugoApiStub

KEY = "bench-key"
DATA = {"text": "hello", "n": 1}


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    http_port, grpc_port = free_port(), free_port()
    config = {
        "http_api": {"key": KEY},
        "grpc_api": {"enabled": True, "address": "127.0.0.1", "port": grpc_port, "key": KEY},
        "health": {"enabled": True},
        "log": {"level": "error"},
    }
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "centrifuge_asgi", "serve", "-c", str(path)]
    cmd += ["-a", "127.0.0.1", "-p", str(http_port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=1).raise_for_status()
            return proc, http_port, grpc_port
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("the server did not start") from None
            time.sleep(0.1)


async def rate(call: Callable[[], Awaitable[None]], seconds: float, inflight: int) -> float:
    """Completed calls per second with ``inflight`` callers looping until the deadline."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return done / (time.perf_counter() - started)


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client (one connection per caller): the server's cost
    without a client library's (httpx spends more per call than the server here)."""

    def __init__(self, port: int, body: bytes) -> None:
        self.port = port
        self.request = (
            b"POST /api/publish HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: "
            + KEY.encode()
            + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def publish(self) -> None:
        try:
            await self._publish(self.idle.pop() if self.idle else None)
        except (asyncio.IncompleteReadError, ConnectionError):  # closed while idle
            await self._publish(None)

    async def _publish(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None
    ) -> None:
        if conn is None:
            conn = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = conn
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        answer = await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200") or b"error" in answer:
            raise SystemExit(f"HTTP publish failed: {head!r} {answer!r}")
        self.idle.append(conn)

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def measure(http_port: int, grpc_port: int, args: argparse.Namespace) -> dict[str, float]:
    body = {"channel": "bench", "data": DATA}
    payload = json.dumps(DATA).encode()
    request = api_pb2.PublishRequest(channel="bench", data=payload)
    metadata = (("authorization", f"apikey {KEY}"),)
    results: dict[str, list[float]] = {}
    async with (
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}",
            headers={"X-API-Key": KEY},
            limits=httpx.Limits(max_connections=args.inflight),
        ) as http,
        grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
    ):
        stub = CentrifugoApiStub(channel)

        async def http_publish() -> None:
            response = await http.post("/api/publish", json=body)
            if response.status_code != 200 or "error" in response.json():
                raise SystemExit(f"HTTP publish failed: {response.text}")

        async def grpc_publish() -> None:
            reply = await stub.Publish(request, metadata=metadata)
            if reply.HasField("error"):
                raise SystemExit(f"gRPC publish failed: {reply.error}")

        raw = RawHttp(http_port, json.dumps(body).encode())
        calls = (("httpx", http_publish), ("http", raw.publish), ("grpc", grpc_publish))
        for _, call in calls:  # warm up
            await rate(call, 0.5, args.inflight)
        for _ in range(args.rounds):
            for name, call in calls:
                for inflight in (1, args.inflight):
                    key = f"{name}/{inflight}"
                    results.setdefault(key, []).append(await rate(call, args.seconds, inflight))
        raw.close()
    return {key: statistics.median(values) for key, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, http_port, grpc_port = start_server(Path(tmp))
        try:
            medians = asyncio.run(measure(http_port, grpc_port, args))
        finally:
            proc.terminate()
            proc.wait(15)
    print(f"publish calls per second, median of {args.rounds} rounds of {args.seconds:g} s")
    print(f"(cpu count {os.cpu_count()}, one serve process, client in this process)")
    print("HTTP: a raw keep-alive HTTP/1.1 client; httpx: httpx.AsyncClient; gRPC: grpc.aio")
    print(f"{'in flight':>9}  {'HTTP':>8}  {'httpx':>8}  {'gRPC':>8}  gRPC/HTTP  gRPC/httpx")
    for n in (1, args.inflight):
        http_rate, httpx_rate = medians[f"http/{n}"], medians[f"httpx/{n}"]
        grpc_rate = medians[f"grpc/{n}"]
        print(
            f"{n:>9}  {http_rate:>8.0f}  {httpx_rate:>8.0f}  {grpc_rate:>8.0f}"
            f"  {grpc_rate / http_rate:>8.2f}x  {grpc_rate / httpx_rate:>9.2f}x"
        )


if __name__ == "__main__":
    main()
