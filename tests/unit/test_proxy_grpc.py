"""gRPC proxies without a network: the service against Centrifugo v6's, request messages,
replies as HTTP answers, metadata.

Stubs generated from Centrifugo's own ``proxy.proto`` are not built here (its copy is not
ours to vendor), so the wire facts of Centrifugo v6's ``internal/proxyproto/proxy.proto``
are a table below: every message and field we declare with Centrifugo's number and type,
and every method we call with its request, response and streaming kinds.
"""

from __future__ import annotations

import base64
import json
from typing import Final

import msgspec
import pytest
from msgspec import Raw

from centrifuge_asgi.config import Config, ProxyConfig
from centrifuge_asgi.errors import ClientError, ConfigError, Disconnect
from centrifuge_asgi.grpc import proxy_pb2 as pb
from centrifuge_asgi.proxy_grpc import answer_json, metadata, request_message
from centrifuge_asgi.proxy_hooks import _CONNECT, _RPC, _SUBSCRIBE
from centrifuge_asgi.proxy_http import ProxyCaller, ProxyFailure, build_headers
from tests.proto_facts import assert_matches

# the client fields every request to a proxy starts with
_CLIENT: Final = {
    "client": (1, "string"),
    "transport": (2, "string"),
    "protocol": (3, "string"),
    "encoding": (4, "string"),
}


def _response(result: str) -> dict[str, tuple[int, str]]:
    """A unary method's response: its result, an error or a disconnect."""
    return {"result": (1, result), "error": (2, "Error"), "disconnect": (3, "Disconnect")}


PROXY_FIELDS: Final = {
    "Error": {"code": (1, "uint32"), "message": (2, "string"), "temporary": (3, "bool")},
    "Disconnect": {"code": (1, "uint32"), "reason": (2, "string")},
    "FilterNode": {
        "op": (1, "string"),
        "key": (2, "string"),
        "cmp": (3, "string"),
        "val": (4, "string"),
        "vals": (5, "repeated string"),
        "nodes": (6, "repeated FilterNode"),
    },
    "BoolValue": {"value": (1, "bool")},
    "Int32Value": {"value": (1, "int32")},
    "SubscribeOptionOverride": {
        "presence": (1, "BoolValue"),
        "join_leave": (2, "BoolValue"),
        "force_recovery": (3, "BoolValue"),
        "force_positioning": (4, "BoolValue"),
        "force_push_join_leave": (5, "BoolValue"),
    },
    "ChannelsCapability": {
        "channels": (1, "repeated string"),
        "allow": (2, "repeated string"),
        "match": (3, "string"),
    },
    "ConnectRequest": {
        **_CLIENT,
        "data": (10, "bytes"),
        "b64data": (11, "string"),
        "name": (12, "string"),
        "version": (13, "string"),
        "channels": (14, "repeated string"),
    },
    "SubscribeOptions": {
        "expire_at": (1, "int64"),
        "info": (2, "bytes"),
        "b64info": (3, "string"),
        "data": (4, "bytes"),
        "b64data": (5, "string"),
        "override": (6, "SubscribeOptionOverride"),
        "server_tags_filter": (7, "FilterNode"),
        "cache_recover": (8, "bool"),
    },
    "ConnectResult": {
        "user": (1, "string"),
        "expire_at": (2, "int64"),
        "info": (3, "bytes"),
        "b64info": (4, "string"),
        "data": (5, "bytes"),
        "b64data": (6, "string"),
        "channels": (7, "repeated string"),
        "subs": (8, "map<string,SubscribeOptions>"),
        "meta": (9, "bytes"),
        "caps": (10, "repeated ChannelsCapability"),
        "labels": (11, "map<string,string>"),
    },
    "ConnectResponse": _response("ConnectResult"),
    "RefreshRequest": {
        **_CLIENT,
        "user": (10, "string"),
        "meta": (11, "bytes"),
        "labels": (12, "map<string,string>"),
    },
    "RefreshResult": {
        "expired": (1, "bool"),
        "expire_at": (2, "int64"),
        "info": (3, "bytes"),
        "b64info": (4, "string"),
        "meta": (5, "bytes"),
        "caps": (6, "repeated ChannelsCapability"),
    },
    "RefreshResponse": _response("RefreshResult"),
    "SubscribeRequest": {
        **_CLIENT,
        "user": (10, "string"),
        "channel": (11, "string"),
        "token": (12, "string"),
        "meta": (13, "bytes"),
        "data": (14, "bytes"),
        "b64data": (15, "string"),
        "labels": (16, "map<string,string>"),
    },
    "SubscribeResult": {
        "expire_at": (1, "int64"),
        "info": (2, "bytes"),
        "b64info": (3, "string"),
        "data": (4, "bytes"),
        "b64data": (5, "string"),
        "override": (6, "SubscribeOptionOverride"),
        "allow": (7, "repeated string"),
        "server_tags_filter": (8, "FilterNode"),
    },
    "SubscribeResponse": _response("SubscribeResult"),
    "PublishRequest": {
        **_CLIENT,
        "user": (10, "string"),
        "channel": (11, "string"),
        "data": (12, "bytes"),
        "b64data": (13, "string"),
        "meta": (14, "bytes"),
        "labels": (15, "map<string,string>"),
    },
    "PublishResult": {
        "data": (1, "bytes"),
        "b64data": (2, "string"),
        "skip_history": (3, "bool"),
        "tags": (4, "map<string,string>"),
        "idempotency_key": (5, "string"),
        "delta": (6, "bool"),
        "version": (7, "uint64"),
        "version_epoch": (8, "string"),
    },
    "PublishResponse": _response("PublishResult"),
    "RPCRequest": {
        **_CLIENT,
        "user": (10, "string"),
        "method": (11, "string"),
        "data": (12, "bytes"),
        "b64data": (13, "string"),
        "meta": (14, "bytes"),
        "labels": (15, "map<string,string>"),
    },
    "RPCResult": {"data": (1, "bytes"), "b64data": (2, "string")},
    "RPCResponse": _response("RPCResult"),
    "SubRefreshRequest": {
        **_CLIENT,
        "user": (10, "string"),
        "channel": (11, "string"),
        "meta": (12, "bytes"),
        "labels": (13, "map<string,string>"),
    },
    "SubRefreshResult": {
        "expired": (1, "bool"),
        "expire_at": (2, "int64"),
        "info": (3, "bytes"),
        "b64info": (4, "string"),
    },
    "SubRefreshResponse": _response("SubRefreshResult"),
    "MapPublishRequest": {
        **_CLIENT,
        "user": (10, "string"),
        "channel": (11, "string"),
        "key": (12, "string"),
        "data": (13, "bytes"),
        "b64data": (14, "string"),
        "meta": (15, "bytes"),
        "labels": (16, "map<string,string>"),
    },
    "MapPublishResult": {
        "key": (1, "string"),
        "data": (2, "bytes"),
        "b64data": (3, "string"),
        "tags": (4, "map<string,string>"),
        "score": (5, "int64"),
        "key_mode": (6, "string"),
        "stream_data": (7, "bytes"),
        "b64stream_data": (8, "string"),
        "idempotency_key": (9, "string"),
        "delta": (10, "bool"),
        "version": (11, "uint64"),
        "version_epoch": (12, "string"),
    },
    "MapPublishResponse": _response("MapPublishResult"),
    "MapRemoveRequest": {
        **_CLIENT,
        "user": (10, "string"),
        "channel": (11, "string"),
        "key": (12, "string"),
        "meta": (13, "bytes"),
        "labels": (14, "map<string,string>"),
    },
    "MapRemoveResult": {
        "key": (1, "string"),
        "tags": (2, "map<string,string>"),
        "idempotency_key": (3, "string"),
    },
    "MapRemoveResponse": _response("MapRemoveResult"),
    "SharedPollRefreshRequest": {
        "channel": (1, "string"),
        "items": (2, "repeated SharedPollRefreshItem"),
    },
    "SharedPollRefreshItem": {"key": (1, "string"), "version": (2, "uint64")},
    "SharedPollRefreshResult": {
        "items": (1, "repeated SharedPollRefreshResultItem"),
        "epoch": (2, "string"),
    },
    "SharedPollRefreshResultItem": {
        "key": (1, "string"),
        "data": (2, "bytes"),
        "version": (3, "uint64"),
        "removed": (4, "bool"),
        "prev_data": (5, "bytes"),
    },
    "SharedPollRefreshResponse": {
        "result": (1, "SharedPollRefreshResult"),
        "error": (2, "Error"),
    },
    "Publication": {"data": (4, "bytes"), "tags": (7, "map<string,string>")},
    "StreamSubscribeRequest": {
        "subscribe_request": (1, "SubscribeRequest"),
        "publication": (2, "Publication"),
    },
    "StreamSubscribeResponse": {
        "subscribe_response": (1, "SubscribeResponse"),
        "publication": (2, "Publication"),
    },
}
# method: (request, response, client streaming, server streaming)
PROXY_METHODS: Final = {
    "Connect": ("ConnectRequest", "ConnectResponse", False, False),
    "Refresh": ("RefreshRequest", "RefreshResponse", False, False),
    "Subscribe": ("SubscribeRequest", "SubscribeResponse", False, False),
    "Publish": ("PublishRequest", "PublishResponse", False, False),
    "RPC": ("RPCRequest", "RPCResponse", False, False),
    "SubRefresh": ("SubRefreshRequest", "SubRefreshResponse", False, False),
    "MapPublish": ("MapPublishRequest", "MapPublishResponse", False, False),
    "MapRemove": ("MapRemoveRequest", "MapRemoveResponse", False, False),
    "SharedPollRefresh": ("SharedPollRefreshRequest", "SharedPollRefreshResponse", False, False),
    "SubscribeUnidirectional": ("SubscribeRequest", "StreamSubscribeResponse", False, True),
    "SubscribeBidirectional": ("StreamSubscribeRequest", "StreamSubscribeResponse", True, True),
}


def test_descriptors_match_centrifugo() -> None:
    assert_matches(
        pb.DESCRIPTOR,
        "centrifugal.centrifugo.proxy",
        "CentrifugoProxy",
        PROXY_FIELDS,
        PROXY_METHODS,
    )


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


def test_map_proxy_messages() -> None:
    """A map publish body and reply cross as for HTTP: payload bytes as ``b64data``."""
    body = {"client": "c", "user": "u", "channel": "m:1", "key": "k", "data": Raw(b"{}")}
    message = request_message("map_publish", body)
    assert isinstance(message, pb.MapPublishRequest)
    assert (message.channel, message.key, message.data) == ("m:1", "k", b"{}")
    remove = request_message("map_remove", {**body, "data": Raw(b"x")})
    assert isinstance(remove, pb.MapRemoveRequest) and remove.key == "k"
    result = pb.MapPublishResult(key="k2", data=b"\x01", tags={"t": "v"}, key_mode="if_new")
    assert json.loads(answer_json(pb.MapPublishResponse(result=result))) == {
        "result": {"key": "k2", "b64data": "AQ==", "tags": {"t": "v"}, "key_mode": "if_new"}
    }


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


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (
            {
                "channel": {
                    "proxy": {"subscribe_stream": {"endpoint": "http://backend/stream"}},
                    "namespaces": [{"name": "ss", "subscribe_stream_proxy_enabled": True}],
                }
            },
            "channel.proxy.subscribe_stream.endpoint",
        ),
        (
            {
                "proxies": [{"name": "web", "endpoint": "http://backend/x"}],
                "channel": {
                    "namespaces": [
                        {
                            "name": "ss",
                            "subscribe_stream_proxy_enabled": True,
                            "subscribe_stream_proxy_name": "web",
                        }
                    ]
                },
            },
            "proxies[web].endpoint",
        ),
    ],
)
def test_a_stream_proxy_needs_grpc(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_dict(data)
    assert f"'{key}'" in str(info.value)
    assert "needs grpc://" in str(info.value)


def test_a_stream_namespace_without_endpoint_loads() -> None:
    """Served by ``@node.on_subscribe_stream`` (108 without one)."""
    config = Config.from_dict(
        {"channel": {"namespaces": [{"name": "ss", "subscribe_stream_proxy_enabled": True}]}}
    )
    assert config.proxy("subscribe_stream") is not None
