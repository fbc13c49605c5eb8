"""The server API over gRPC (``grpc_api``) under a live uvicorn, driven by grpcio clients.

The client stubs are generated from our ``api.proto`` (Centrifugo's own ``api.proto``
cannot be compiled here offline; tests/unit/test_grpc_protos.py checks ours against a
table of its field numbers and types). Effects are observed by centrifuge-python 0.7.0
clients connected over WebSocket: publications, server-side (un)subscribe, disconnect.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import grpc
import pytest
from centrifuge import Client
from google.protobuf.any_pb2 import Any as AnyMessage

from centrifuge_asgi.grpc import api_pb2 as pb
from centrifuge_asgi.grpc.api_pb2_grpc import CentrifugoApiStub
from centrifuge_asgi.node import Node

from .grpc_support import API_KEY, TIMEOUT, Events, GrpcEnv, grpc_config, start
from .support import token

if TYPE_CHECKING:
    from conftest import LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

AUTH = (("authorization", f"apikey {API_KEY}"),)
TRANSPORT_MODE = (*AUTH, ("x-centrifugo-error-mode", "transport"))


@pytest.fixture
def env(live_server: LiveServerFactory) -> GrpcEnv:
    return start(live_server, grpc_config())


@contextlib.asynccontextmanager
async def api(target: str) -> AsyncIterator[CentrifugoApiStub]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield CentrifugoApiStub(channel)


@contextlib.asynccontextmanager
async def sdk(
    env: GrpcEnv, user: str, *channels: str
) -> AsyncIterator[tuple[Client, Events, Events]]:
    """A connected centrifuge-python client with client-side subscriptions."""
    client_events, sub_events = Events(), Events()
    client = Client(env.ws_url, token=token(user), events=client_events, timeout=TIMEOUT)
    try:
        with anyio.fail_after(TIMEOUT):
            await client.connect()
            await client.ready()
            for channel in channels:
                sub = client.new_subscription(channel, events=sub_events)
                await sub.subscribe()
                await sub.ready(timeout=TIMEOUT)
        yield client, client_events, sub_events
    finally:
        with anyio.move_on_after(TIMEOUT), contextlib.suppress(Exception):
            await client.disconnect()


def error_of(response: Any) -> tuple[int, str] | None:
    return (response.error.code, response.error.message) if response.HasField("error") else None


# ------------------------------------------------------------------------ every method


async def test_publish_reaches_sdk_subscriber(env: GrpcEnv) -> None:
    async with sdk(env, "alice", "chat:room") as (_, _, subs), api(env.api_target) as stub:
        reply = await stub.Publish(
            pb.PublishRequest(channel="chat:room", data=b'{"text":"hi"}', tags={"k": "v"}),
            metadata=AUTH,
        )
        assert error_of(reply) is None and reply.HasField("result")
        (publication,) = await subs.wait("publication")
        assert publication.pub.data == {"text": "hi"}
        assert publication.pub.tags == {"k": "v"}


async def test_every_method_over_grpc(env: GrpcEnv) -> None:
    async with sdk(env, "alice", "news:x") as (client, events, subs), api(env.api_target) as s:
        call: Callable[..., Any] = lambda method, req: method(req, metadata=AUTH)  # noqa: E731

        published = await call(s.Publish, pb.PublishRequest(channel="news:x", data=b'{"n":1}'))
        assert error_of(published) is None
        assert published.result.offset == 1 and published.result.epoch

        b64 = await call(s.Publish, pb.PublishRequest(channel="news:x", b64data="eyJuIjoyfQ=="))
        assert b64.result.offset == 2  # b64data ({"n":2}) wins over data

        broadcast = await call(
            s.Broadcast, pb.BroadcastRequest(channels=["news:x", "chat:y"], data=b'{"n":3}')
        )
        assert [error_of(r) for r in broadcast.result.responses] == [None, None]
        assert broadcast.result.responses[0].result.offset == 3
        pubs = await subs.wait("publication", 3)
        assert [p.pub.data for p in pubs] == [{"n": 1}, {"n": 2}, {"n": 3}]

        history = await call(s.History, pb.HistoryRequest(channel="news:x", limit=-1))
        assert [json.loads(p.data) for p in history.result.publications] == [
            {"n": 1},
            {"n": 2},
            {"n": 3},
        ]
        assert history.result.offset == 3 and history.result.epoch == published.result.epoch
        since = await call(
            s.History,
            pb.HistoryRequest(
                channel="news:x",
                limit=10,
                since=pb.StreamPosition(offset=2, epoch=published.result.epoch),
            ),
        )
        assert [p.offset for p in since.result.publications] == [3]

        presence = await call(s.Presence, pb.PresenceRequest(channel="news:x"))
        (info,) = presence.result.presence.values()
        assert (info.user, info.client) == ("alice", client.client_id)
        stats = await call(s.PresenceStats, pb.PresenceStatsRequest(channel="news:x"))
        assert (stats.result.num_clients, stats.result.num_users) == (1, 1)

        channels = await call(s.Channels, pb.ChannelsRequest(pattern="news:*"))
        assert dict(channels.result.channels)["news:x"].num_clients == 1
        info_reply = await call(s.Info, pb.InfoRequest())
        (node,) = info_reply.result.nodes
        assert node.uid == env.node.node_id and node.num_clients == 1 and node.num_subs >= 1

        # server-side subscribe and unsubscribe reach the SDK
        subscribed = await call(
            s.Subscribe, pb.SubscribeRequest(user="alice", channel="chat:server", info=b'{"a":1}')
        )
        assert error_of(subscribed) is None
        (server_sub,) = await events.wait("subscribed")
        assert server_sub.channel == "chat:server"
        unsubscribed = await call(
            s.Unsubscribe, pb.UnsubscribeRequest(user="alice", channel="news:x")
        )
        assert error_of(unsubscribed) is None
        await subs.wait("unsubscribed")

        refreshed = await call(
            s.Refresh, pb.RefreshRequest(user="alice", expire_at=int(time.time()) + 3600)
        )
        assert error_of(refreshed) is None

        removed = await call(s.HistoryRemove, pb.HistoryRemoveRequest(channel="news:x"))
        assert error_of(removed) is None
        after = await call(s.History, pb.HistoryRequest(channel="news:x", limit=-1))
        assert list(after.result.publications) == []

        rpc = await call(s.RPC, pb.RPCRequest(method="nothing", params=b"{}"))
        assert error_of(rpc) == (104, "not found")  # no server API RPC extensions (OSS)

        batch = await call(
            s.Batch,
            pb.BatchRequest(
                commands=[
                    pb.Command(publish=pb.PublishRequest(channel="chat:y", data=b"{}")),
                    pb.Command(presence_stats=pb.PresenceStatsRequest(channel="chat:server")),
                    pb.Command(),
                    pb.Command(publish=pb.PublishRequest(channel="nope:x", data=b"{}")),
                ],
                parallel=True,
            ),
        )
        first, second, third, fourth = batch.replies
        assert first.HasField("publish") and not first.HasField("error")
        assert second.presence_stats.num_clients == 1
        assert error_of(third) == (104, "not found")
        assert error_of(fourth) == (102, "unknown channel")

        disconnected = await call(
            s.Disconnect,
            pb.DisconnectRequest(user="alice", disconnect=pb.Disconnect(code=4500, reason="bye")),
        )
        assert error_of(disconnected) is None
        (gone,) = await events.wait("disconnected")
        assert (gone.code, gone.reason) == (4500, "bye")  # terminal: no reconnect


async def test_binary_payloads_in_a_binary_namespace(env: GrpcEnv) -> None:
    async with api(env.api_target) as s:
        data = bytes(range(256))
        published = await s.Publish(pb.PublishRequest(channel="bin:x", data=data), metadata=AUTH)
        assert error_of(published) is None
        history = await s.History(pb.HistoryRequest(channel="bin:x", limit=-1), metadata=AUTH)
        assert [p.data for p in history.result.publications] == [data]
        # the same bytes into a JSON channel: 107, nothing stored
        refused = await s.Publish(pb.PublishRequest(channel="news:x", data=data), metadata=AUTH)
        assert error_of(refused) == (107, "bad request")


# ------------------------------------------------------------------------------ API key


async def test_api_key_is_required(env: GrpcEnv) -> None:
    async with api(env.api_target) as s:
        request = pb.InfoRequest()
        for metadata in ((), (("authorization", "apikey wrong"),), (("authorization", API_KEY),)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.Info(request, metadata=metadata)
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert caught.value.details() == "unauthenticated"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await s.Batch(pb.BatchRequest(), metadata=())
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert len((await s.Info(request, metadata=AUTH)).result.nodes) == 1


async def test_without_a_key_every_call_is_let_in(live_server: LiveServerFactory) -> None:
    env = start(live_server, grpc_config(api={"key": ""}, uni=False))
    async with api(env.api_target) as s:
        assert len((await s.Info(pb.InfoRequest())).result.nodes) == 1


# ---------------------------------------------------------------------------- error modes


def detail_error(exc: grpc.aio.AioRpcError) -> pb.Error:
    """The ``Error`` packed in the ``grpc-status-details-bin`` trailer (google.rpc.Status)."""
    (raw,) = [v for k, v in exc.trailing_metadata() if k == "grpc-status-details-bin"]
    # google.rpc.Status field 3 (details, Any); parsed with a one-field Any container
    details = _status_details(raw)
    (detail,) = details
    error = pb.Error()
    assert detail.Unpack(error)
    return error


def _status_details(raw: bytes) -> list[AnyMessage]:
    out: list[AnyMessage] = []
    pos = 0
    while pos < len(raw):
        tag, pos = _varint(raw, pos)
        if tag & 7 == 0:
            _, pos = _varint(raw, pos)
            continue
        size, pos = _varint(raw, pos)
        if tag >> 3 == 3:
            out.append(AnyMessage.FromString(raw[pos : pos + size]))
        pos += size
    return out


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


@pytest.mark.parametrize(
    ("request_", "method", "status", "code"),
    [
        (pb.PublishRequest(channel="nope:x", data=b"{}"), "Publish", "NOT_FOUND", 102),
        (pb.PublishRequest(channel="", data=b"{}"), "Publish", "INVALID_ARGUMENT", 107),
        (pb.RPCRequest(method="m"), "RPC", "NOT_FOUND", 104),
        (
            pb.HistoryRequest(channel="news:x", since=pb.StreamPosition(offset=5, epoch="e")),
            "History",
            "OUT_OF_RANGE",
            112,
        ),
    ],
)
async def test_transport_error_mode_by_metadata(
    env: GrpcEnv, request_: Any, method: str, status: str, code: int
) -> None:
    async with api(env.api_target) as s:
        in_body = await getattr(s, method)(request_, metadata=AUTH)
        assert error_of(in_body) is not None and in_body.error.code == code
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(s, method)(request_, metadata=TRANSPORT_MODE)
        assert caught.value.code() is getattr(grpc.StatusCode, status)
        assert caught.value.details() == in_body.error.message
        error = detail_error(caught.value)
        assert (error.code, error.message) == (in_body.error.code, in_body.error.message)


async def test_transport_error_mode_from_config(live_server: LiveServerFactory) -> None:
    env = start(live_server, grpc_config(api={"error_mode": "transport"}, uni=False))
    async with api(env.api_target) as s:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await s.Publish(pb.PublishRequest(channel="nope:x", data=b"{}"), metadata=AUTH)
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        assert detail_error(caught.value).code == 102
        # a batch still answers errors per command
        batch = await s.Batch(
            pb.BatchRequest(commands=[pb.Command(publish=pb.PublishRequest(channel="nope:x"))]),
            metadata=AUTH,
        )
        assert [error_of(r) for r in batch.replies] == [(102, "unknown channel")]
        # and a broadcast per channel
        broadcast = await s.Broadcast(
            pb.BroadcastRequest(channels=["nope:x", "chat:z"], data=b"{}"), metadata=AUTH
        )
        assert [error_of(r) for r in broadcast.result.responses] == [
            (102, "unknown channel"),
            None,
        ]


# ---------------------------------------------------------------------------- bad input


async def test_bad_requests(env: GrpcEnv) -> None:
    async with api(env.api_target) as s:
        cases: list[tuple[Any, Any]] = [
            (s.Publish, pb.PublishRequest(channel="news:x", data=b"not json")),
            (s.Publish, pb.PublishRequest(channel="news:x", b64data="%%%")),
            (s.Broadcast, pb.BroadcastRequest(data=b"{}")),
            (s.Subscribe, pb.SubscribeRequest(user="u")),
            (s.Presence, pb.PresenceRequest()),
            (s.History, pb.HistoryRequest(channel="news:x", limit=-2)),
            (s.RPC, pb.RPCRequest()),
            (
                s.Disconnect,
                pb.DisconnectRequest(user="u", disconnect=pb.Disconnect(code=100, reason="x")),
            ),
            (
                s.Disconnect,
                pb.DisconnectRequest(
                    user="u", disconnect=pb.Disconnect(code=4000, reason="x" * 200)
                ),
            ),
        ]
        for method, request in cases:
            reply = await method(request, metadata=AUTH)
            assert error_of(reply) == (107, "bad request"), request
        # bytes that are no PublishRequest: the call fails, the server stays up
        async with grpc.aio.insecure_channel(env.api_target) as channel:
            raw = channel.unary_unary("/centrifugal.centrifugo.api.CentrifugoApi/Publish")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw(b"\xff\xff\xff", metadata=AUTH)
        assert caught.value.code() is grpc.StatusCode.INTERNAL
        assert len((await s.Info(pb.InfoRequest(), metadata=AUTH)).result.nodes) == 1


def _bytes_field(number: int, value: bytes) -> bytes:
    """A length-delimited protobuf field (``value`` shorter than 128 bytes)."""
    assert len(value) < 128
    return bytes([number << 3 | 2, len(value)]) + value


@pytest.mark.parametrize(
    "body",
    [
        _bytes_field(1, b"news:\xff\xfe") + _bytes_field(2, b"1"),  # channel not UTF-8
        b"\x0b" * 200_000,  # a start-group tag (field 1) nested 200000 deep
    ],
    ids=["invalid-utf8-string", "nested-groups"],
)
async def test_undecodable_request_bytes(
    env: GrpcEnv, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are no PublishRequest end the call with INTERNAL "error unmarshalling
    request", as grpc-go answers; the server answers the next call."""
    async with grpc.aio.insecure_channel(env.api_target) as channel:
        raw = channel.unary_unary("/centrifugal.centrifugo.api.CentrifugoApi/Publish")
        with anyio.fail_after(TIMEOUT), pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(body, metadata=AUTH)
        assert caught.value.code() is grpc.StatusCode.INTERNAL
        assert caught.value.details() == "grpc: error unmarshalling request"
        s = CentrifugoApiStub(channel)
        with anyio.fail_after(TIMEOUT):
            reply = await s.Publish(pb.PublishRequest(channel="news:x", data=b"{}"), metadata=AUTH)
        assert error_of(reply) is None and reply.result.offset == 1  # news: has history
    assert not any(r.exc_info for r in caplog.records)


async def test_max_receive_message_size(live_server: LiveServerFactory) -> None:
    env = start(live_server, grpc_config(api={"max_receive_message_size": 1000}, uni=False))
    async with api(env.api_target) as s:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await s.Publish(
                pb.PublishRequest(channel="chat:x", data=b'"' + b"x" * 2000 + b'"'), metadata=AUTH
            )
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        small = await s.Publish(pb.PublishRequest(channel="chat:x", data=b"{}"), metadata=AUTH)
        assert error_of(small) is None


def self_signed() -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM text."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


async def test_tls(live_server: LiveServerFactory, tmp_path: Path) -> None:
    cert, key = self_signed()
    (tmp_path / "key.pem").write_text(key)  # a file path works as well as the PEM text
    tls = {"enabled": True, "cert_pem": cert, "key_pem": str(tmp_path / "key.pem")}
    env = start(live_server, grpc_config(api={"tls": tls}, uni=False))
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.encode())
    async with grpc.aio.secure_channel(env.api_target, credentials) as channel:
        info = await CentrifugoApiStub(channel).Info(pb.InfoRequest(), metadata=AUTH)
        assert len(info.result.nodes) == 1
    async with grpc.aio.insecure_channel(env.api_target) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await CentrifugoApiStub(plain).Info(pb.InfoRequest(), metadata=AUTH, timeout=TIMEOUT)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_port_in_use_fails_the_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = grpc_config(uni=False)
        cfg["grpc_api"]["port"] = taken.getsockname()[1]
        node = Node(cfg)
        with pytest.raises(OSError, match=r"grpc_api: cannot listen on 127\.0\.0\.1:"):
            async with node:
                pass
        assert not node.running


async def test_reflection_describes_the_api(live_server: LiveServerFactory) -> None:
    """With ``grpc_api.reflection``, a client that has no stubs (as grpcurl) lists the
    service and reads its methods and message fields from the server."""
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    env = start(live_server, grpc_config(api={"reflection": True}, uni=False))

    def describe() -> tuple[list[str], list[str], dict[str, int]]:
        with grpc.insecure_channel(env.api_target) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            services = sorted(database.get_services())
            service = DescriptorPool(database).FindServiceByName(services[0])
            publish = service.FindMethodByName("Publish").input_type
            methods = sorted(m.name for m in service.methods)
            return services, methods, {f.name: f.number for f in publish.fields}

    with anyio.fail_after(TIMEOUT):
        services, methods, fields = await anyio.to_thread.run_sync(describe)
    assert services == [
        "centrifugal.centrifugo.api.CentrifugoApi",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    assert {"Publish", "Broadcast", "Presence", "History", "Info", "Batch"} <= set(methods)
    assert fields["channel"] == 1
    assert fields["data"] == 2


async def test_reflection_without_grpcio_reflection(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the package (an install without the ``grpc`` extra's reflection), the
    server runs without reflection and says why."""
    import importlib

    real = importlib.import_module

    def without_reflection(name: str, package: str | None = None) -> Any:
        if name.startswith("grpc_reflection"):
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_reflection)
    async with Node(grpc_config(api={"reflection": True}, uni=False)):
        pass
    assert "grpc_api.reflection needs grpcio-reflection" in caplog.text
