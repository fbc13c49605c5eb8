"""gRPC proxies without a network: request messages, replies as HTTP answers, metadata."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest
from msgspec import Raw

from centrifuge_asgi.config import ProxyConfig
from centrifuge_asgi.errors import ClientError, Disconnect
from centrifuge_asgi.grpc import proxy_pb2 as pb
from centrifuge_asgi.proxy_grpc import answer_json, metadata, request_message
from centrifuge_asgi.proxy_hooks import _CONNECT, _RPC, _SUBSCRIBE
from centrifuge_asgi.proxy_http import ProxyCaller, ProxyFailure, build_headers


def grpc_proxy(**fields: object) -> ProxyConfig:
    return msgspec.convert({"endpoint": "grpc://backend:10001", **fields}, ProxyConfig)


def test_request_message_takes_the_body_fields_it_has() -> None:
    body = {
        "client": "c1",
        "transport": "websocket",
        "protocol": "json",
        "encoding": "json",
        "user": "alice",
        "channel": "chat:1",
        "data": Raw(b'{"a":1}'),
        "meta": Raw(b'{"m":2}'),
        "method": "not a subscribe field",
    }
    message = request_message("subscribe", body)
    assert isinstance(message, pb.SubscribeRequest)
    assert (message.client, message.user, message.channel) == ("c1", "alice", "chat:1")
    assert (message.data, message.meta) == (b'{"a":1}', b'{"m":2}')
    connect = request_message("connect", {"client": "c1", "name": "js", "user": "x"})
    assert (connect.client, connect.name) == ("c1", "js")  # ConnectRequest has no user


def test_a_reply_becomes_the_http_answer() -> None:
    result = pb.ConnectResult(
        user="alice",
        expire_at=123,
        data=b'{"hello":1}',
        info=b"\x00binary",
        b64info="eyJ4IjoxfQ==",  # wins over info, as in Centrifugo
        channels=["a", "b"],
        subs={"news": pb.SubscribeOptions(data=b"{}")},
        meta=b'{"tenant":"acme"}',
    )
    answer = json.loads(answer_json(pb.ConnectResponse(result=result)))
    assert answer == {
        "result": {
            "user": "alice",
            "expire_at": 123,
            "b64data": base64.b64encode(b'{"hello":1}').decode(),
            "b64info": "eyJ4IjoxfQ==",
            "channels": ["a", "b"],
            "subs": {"news": {"b64data": base64.b64encode(b"{}").decode()}},
            "meta": {"tenant": "acme"},
        }
    }
    env = ProxyCaller.decode(answer_json(pb.ConnectResponse(result=result)), _CONNECT)
    settled = env.settle()
    assert settled is not None and settled.user == "alice"


def test_override_error_and_disconnect_replies() -> None:
    override = pb.SubscribeOptionOverride(presence=pb.BoolValue(value=False))
    reply = pb.SubscribeResponse(result=pb.SubscribeResult(override=override))
    result = ProxyCaller.decode(answer_json(reply), _SUBSCRIBE).settle()
    assert result is not None and result.override is not None
    assert result.override.convert().presence is False

    error = pb.RPCResponse(error=pb.Error(code=1500, message="nope", temporary=True))
    with pytest.raises(ClientError) as info:
        ProxyCaller.decode(answer_json(error), _RPC).settle()
    assert (info.value.code, info.value.temporary) == (1500, True)

    bye = pb.RPCResponse(disconnect=pb.Disconnect(code=4001, reason="bye"))
    with pytest.raises(Disconnect) as dis:
        ProxyCaller.decode(answer_json(bye), _RPC).settle()
    assert (dis.value.code, dis.value.reason) == (4001, "bye")

    for bad, decoder in (
        (pb.RPCResponse(error=pb.Error(code=5)), _RPC),  # below 400
        (pb.RPCResponse(disconnect=pb.Disconnect(code=3000, reason="x")), _RPC),  # not 4xxx
        (pb.ConnectResponse(result=pb.ConnectResult(meta=b"not json")), _CONNECT),
    ):
        with pytest.raises(ProxyFailure):
            ProxyCaller.decode(answer_json(bad), decoder)


def test_grpc_metadata_rules() -> None:
    proxy = grpc_proxy(
        http_headers=["X-Tenant", "Authorization", "TE", "X-Bin-Bin"],
        grpc_metadata=["x-trace"],
        emulated_headers=["x-app"],
        grpc={"static_metadata": {"X-Static": "1", "x-tenant": "static"}},
        http={"static_headers": {"x-http-only": "1"}},
    )
    headers = build_headers(
        proxy,
        {
            "x-tenant": "acme",
            "authorization": "Bearer t",
            "te": "trailers",
            "x-bin-bin": "v",
            "x-trace": "abc",
            "x-other": "no",
        },
        {"X-App": "ok", "x-tenant": "emulated"},
    )
    assert headers == {
        "x-static": "1",
        "x-tenant": "acme",  # transport headers come last
        "authorization": "Bearer t",
        "x-trace": "abc",
        "x-app": "ok",
    }
    creds = grpc_proxy(grpc={"credentials_key": "Api-Key", "credentials_value": "s"})
    assert metadata(creds, {"a": "b"}) == [("a", "b"), ("api-key", "s")]
    # non-ASCII values cannot be metadata; HTTP proxies keep their rules
    assert build_headers(grpc_proxy(http_headers=["x-name"]), {"x-name": "Zoë"}) == {}
    http = msgspec.convert({"endpoint": "http://b", "http_headers": ["x-name"]}, ProxyConfig)
    assert build_headers(http, {"x-name": "Zoë"}) == {
        "x-name": "Zoë",
        "content-type": "application/json",
    }
