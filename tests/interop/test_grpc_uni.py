"""Unidirectional gRPC (``uni_grpc``) under a live uvicorn, read by a grpcio client.

The client stub is generated from our ``unistream.proto``; pushes are decoded with its
``Push`` message (Centrifugo's field numbers, checked in tests/unit/test_grpc_protos.py).
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import grpc
import pytest

from centrifuge_asgi.grpc import api_pb2
from centrifuge_asgi.grpc import unistream_pb2 as pb
from centrifuge_asgi.grpc.api_pb2_grpc import CentrifugoApiStub
from centrifuge_asgi.grpc.unistream_pb2_grpc import CentrifugoUniStreamStub

from .grpc_support import API_KEY, TIMEOUT, GrpcEnv, grpc_config, start
from .serve_process import ServeProcesses
from .support import eventually, token

if TYPE_CHECKING:
    from conftest import LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]


@pytest.fixture
def env(live_server: LiveServerFactory) -> GrpcEnv:
    return start(live_server, grpc_config())


@contextlib.asynccontextmanager
async def consume(env: GrpcEnv, request: pb.ConnectRequest) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(env.uni_target) as channel:
        call = CentrifugoUniStreamStub(channel).Consume(request)
        try:
            yield call
        finally:
            call.cancel()


async def next_push(call: Any) -> pb.Push:
    with anyio.fail_after(TIMEOUT):
        push = await call.read()
    assert push is not grpc.aio.EOF, "the stream ended"
    assert isinstance(push, pb.Push)
    return push


async def users(env: GrpcEnv) -> dict[str, str]:
    async def read() -> dict[str, str]:
        return {s.client_id: s.user for s in env.node.registry.sessions()}

    return await env.srv.acall(read())


async def test_connect_publication_and_shutdown(env: GrpcEnv) -> None:
    request = pb.ConnectRequest(
        token=token("alice", channels=["news:x"]), name="grpc-test", version="1.0"
    )
    async with consume(env, request) as call:
        connect = (await next_push(call)).connect
        assert connect.client and connect.version
        assert connect.ping == 0  # no application pings on uni_grpc (HTTP/2 keepalive)
        assert "news:x" in connect.subs and connect.subs["news:x"].recoverable
        assert await users(env) == {connect.client: "alice"}

        await env.srv.acall(env.node.publish("news:x", {"text": "hi"}))
        pushed = await next_push(call)
        assert pushed.channel == "news:x"
        assert json.loads(pushed.pub.data) == {"text": "hi"} and pushed.pub.offset == 1

        # shutdown: a Disconnect push, then the stream ends with status OK
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, env.srv.stop)
            disconnect = (await next_push(call)).disconnect
            assert (disconnect.code, disconnect.reason) == (3001, "shutdown")
            with anyio.fail_after(TIMEOUT):
                assert await call.read() is grpc.aio.EOF
                assert await call.code() is grpc.StatusCode.OK


async def test_recovery_from_subs_position(env: GrpcEnv) -> None:
    first = await env.srv.acall(env.node.publish("news:r", {"n": 1}))
    await env.srv.acall(env.node.publish("news:r", {"n": 2}))
    request = pb.ConnectRequest(
        token=token("bob", channels=["news:r"]),
        subs={"news:r": pb.SubscribeRequest(recover=True, offset=first.offset, epoch=first.epoch)},
    )
    async with consume(env, request) as call:
        result = (await next_push(call)).connect.subs["news:r"]
        assert result.recovered and result.was_recovering
        assert [json.loads(p.data) for p in result.publications] == [{"n": 2}]


async def test_invalid_token_gets_a_disconnect_push(env: GrpcEnv) -> None:
    async with consume(env, pb.ConnectRequest(token="not-a-token")) as call:
        disconnect = (await next_push(call)).disconnect
        assert (disconnect.code, disconnect.reason) == (3500, "invalid token")
        with anyio.fail_after(TIMEOUT):
            assert await call.read() is grpc.aio.EOF
    assert await users(env) == {}


async def test_client_cancel_releases_the_session(env: GrpcEnv) -> None:
    async with consume(env, pb.ConnectRequest(token=token("carol"))) as call:
        connect = (await next_push(call)).connect
        assert await users(env) == {connect.client: "carol"}
    await eventually(lambda: users(env), {})


async def test_undecodable_request(env: GrpcEnv) -> None:
    async with grpc.aio.insecure_channel(env.uni_target) as channel:
        raw = channel.unary_stream("/centrifugal.centrifugo.unistream.CentrifugoUniStream/Consume")
        call = raw(b"\xff\xff\xff")
        with pytest.raises(grpc.aio.AioRpcError) as caught, anyio.fail_after(TIMEOUT):
            await call.read()
        assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert await users(env) == {}


async def test_serve_runs_both_grpc_servers(tmp_path: Path) -> None:
    """``centrifuge-asgi serve``: gRPC API and uni_grpc on their own ports; SIGTERM ends
    the stream with a Disconnect push and status OK, and the process exits."""
    cfg = grpc_config()
    cfg["health"] = {"enabled": True}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    processes = ServeProcesses()
    try:
        served = await anyio.to_thread.run_sync(processes.start, path)
        uni_target = f"127.0.0.1:{cfg['uni_grpc']['port']}"
        api_target = f"127.0.0.1:{cfg['grpc_api']['port']}"
        request = pb.ConnectRequest(token=token("dave", channels=["news:s"]))
        async with (
            grpc.aio.insecure_channel(uni_target) as uni_channel,
            grpc.aio.insecure_channel(api_target) as api_channel,
        ):
            call = CentrifugoUniStreamStub(uni_channel).Consume(request)
            assert (await next_push(call)).connect.client
            api = CentrifugoApiStub(api_channel)
            reply = await api.Publish(
                api_pb2.PublishRequest(channel="news:s", data=b'{"via":"grpc"}'),
                metadata=(("authorization", f"apikey {API_KEY}"),),
            )
            assert not reply.HasField("error")
            assert json.loads((await next_push(call)).pub.data) == {"via": "grpc"}
            served.proc.send_signal(signal.SIGTERM)
            disconnect = (await next_push(call)).disconnect
            assert (disconnect.code, disconnect.reason) == (3001, "shutdown")
            with anyio.fail_after(TIMEOUT):
                assert await call.read() is grpc.aio.EOF
                assert await call.code() is grpc.StatusCode.OK
        code = await anyio.to_thread.run_sync(lambda: served.proc.wait(15))
        assert code in (0, -signal.SIGTERM), served.output()  # uvicorn re-raises SIGTERM
    finally:
        processes.stop_all()


async def test_binary_publication_and_server_side_pushes(env: GrpcEnv) -> None:
    """Payload bytes arrive as they are; server-side subscribe/unsubscribe are pushes."""
    async with consume(env, pb.ConnectRequest(token=token("erin", channels=["bin:b"]))) as call:
        assert "bin:b" in (await next_push(call)).connect.subs
        await env.srv.acall(env.node.publish("bin:b", b"\x00\x01\xff"))
        assert (await next_push(call)).pub.data == b"\x00\x01\xff"
        await env.srv.acall(env.node.subscribe("erin", "news:extra"))
        subscribed = await next_push(call)
        assert subscribed.channel == "news:extra" and subscribed.HasField("subscribe")
        await env.srv.acall(env.node.unsubscribe("erin", "news:extra"))
        unsubscribed = await next_push(call)
        assert unsubscribed.channel == "news:extra"
        assert unsubscribed.unsubscribe.code == 2000  # server unsubscribe
