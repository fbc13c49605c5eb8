"""Our gRPC .proto files against Centrifugo v6's, and the grpc edge's small pieces.

Stubs generated from Centrifugo's own ``api.proto`` cannot be built here (no network, and
its copy is not ours to vendor), so the wire facts of Centrifugo v6's
``internal/apiproto/api.proto`` and ``internal/unigrpc/unistream/unistream.proto`` are a
table below: every message and field we declare, with Centrifugo's field number and type,
and every method with its request and response. Fields we leave out (Centrifugo PRO
methods, ``label_filter``/``all_users``) are skipped by the decoder like any unknown field.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest
from msgspec import Raw

from centrifuge_asgi.config import Config
from centrifuge_asgi.errors import ConfigError
from centrifuge_asgi.grpc import api_pb2, unistream_pb2
from centrifuge_asgi.grpc.api_service import METHODS, batch_request, status_details
from centrifuge_asgi.grpc.convert import fill
from centrifuge_asgi.grpc.servers import listen_address, read_pem
from centrifuge_asgi.grpc.uni_stream import UNI_PROTOBUF, connect_request
from centrifuge_asgi.protocol.messages import (
    ClientInfoWire,
    ConnectResult,
    DisconnectPush,
    PublicationWire,
    Push,
    Reply,
    SubscribeResult,
)
from tests.proto_facts import assert_matches

# field sets that more than one Centrifugo message declares number for number
_MAP_CHANGE_RESULT: Final = {
    "offset": (1, "uint64"),
    "epoch": (2, "string"),
    "suppressed": (3, "bool"),
    "suppress_reason": (4, "string"),
}
_MAP_READ_RESULT: Final = {
    "entries": (1, "repeated MapEntry"),
    "offset": (2, "uint64"),
    "epoch": (3, "string"),
}
_PUBLISH_OPTIONS: Final = {
    "data": (2, "bytes"),
    "b64data": (3, "string"),
    "skip_history": (4, "bool"),
    "tags": (5, "map<string,string>"),
    "idempotency_key": (6, "string"),
    "delta": (7, "bool"),
    "version": (8, "uint64"),
    "version_epoch": (9, "string"),
}
API_FIELDS: Final = {
    "Command": {
        "publish": (4, "PublishRequest"),
        "broadcast": (5, "BroadcastRequest"),
        "subscribe": (6, "SubscribeRequest"),
        "unsubscribe": (7, "UnsubscribeRequest"),
        "disconnect": (8, "DisconnectRequest"),
        "presence": (9, "PresenceRequest"),
        "presence_stats": (10, "PresenceStatsRequest"),
        "history": (11, "HistoryRequest"),
        "history_remove": (12, "HistoryRemoveRequest"),
        "info": (13, "InfoRequest"),
        "rpc": (14, "RPCRequest"),
        "refresh": (15, "RefreshRequest"),
        "channels": (16, "ChannelsRequest"),
        "map_publish": (36, "MapPublishRequest"),
        "map_remove": (37, "MapRemoveRequest"),
        "map_read_state": (38, "MapReadStateRequest"),
        "map_read_stream": (39, "MapReadStreamRequest"),
        "map_stats": (40, "MapStatsRequest"),
        "map_clear": (41, "MapClearRequest"),
        "shared_poll_publish": (42, "SharedPollPublishRequest"),
    },
    "Error": {"code": (1, "uint32"), "message": (2, "string")},
    "Reply": {
        "error": (2, "Error"),
        "publish": (4, "PublishResult"),
        "broadcast": (5, "BroadcastResult"),
        "subscribe": (6, "SubscribeResult"),
        "unsubscribe": (7, "UnsubscribeResult"),
        "disconnect": (8, "DisconnectResult"),
        "presence": (9, "PresenceResult"),
        "presence_stats": (10, "PresenceStatsResult"),
        "history": (11, "HistoryResult"),
        "history_remove": (12, "HistoryRemoveResult"),
        "info": (13, "InfoResult"),
        "rpc": (14, "RPCResult"),
        "refresh": (15, "RefreshResult"),
        "channels": (16, "ChannelsResult"),
        "map_publish": (36, "MapPublishResult"),
        "map_remove": (37, "MapRemoveResult"),
        "map_read_state": (38, "MapReadStateResult"),
        "map_read_stream": (39, "MapReadStreamResult"),
        "map_stats": (40, "MapStatsResult"),
        "map_clear": (41, "MapClearResult"),
        "shared_poll_publish": (42, "SharedPollPublishResult"),
    },
    "BatchRequest": {"commands": (1, "repeated Command"), "parallel": (2, "bool")},
    "BatchResponse": {"replies": (1, "repeated Reply")},
    "PublishRequest": {"channel": (1, "string"), **_PUBLISH_OPTIONS},
    "PublishResponse": {"error": (1, "Error"), "result": (2, "PublishResult")},
    "PublishResult": {"offset": (1, "uint64"), "epoch": (2, "string")},
    "BroadcastRequest": {"channels": (1, "repeated string"), **_PUBLISH_OPTIONS},
    "BroadcastResponse": {"error": (1, "Error"), "result": (2, "BroadcastResult")},
    "BroadcastResult": {"responses": (1, "repeated PublishResponse")},
    "SubscribeRequest": {
        "channel": (1, "string"),
        "user": (2, "string"),
        "expire_at": (3, "int64"),
        "info": (4, "bytes"),
        "b64info": (5, "string"),
        "client": (6, "string"),
        "data": (7, "bytes"),
        "b64data": (8, "string"),
        "recover_since": (9, "StreamPosition"),
        "override": (10, "SubscribeOptionOverride"),
        "session": (11, "string"),
    },
    "SubscribeResponse": {"error": (1, "Error"), "result": (2, "SubscribeResult")},
    "BoolValue": {"value": (1, "bool")},
    "SubscribeOptionOverride": {
        "presence": (1, "BoolValue"),
        "join_leave": (2, "BoolValue"),
        "force_recovery": (3, "BoolValue"),
        "force_positioning": (4, "BoolValue"),
        "force_push_join_leave": (5, "BoolValue"),
    },
    "SubscribeResult": {},
    "UnsubscribeRequest": {
        "channel": (1, "string"),
        "user": (2, "string"),
        "client": (3, "string"),
        "session": (4, "string"),
    },
    "UnsubscribeResponse": {"error": (1, "Error"), "result": (2, "UnsubscribeResult")},
    "UnsubscribeResult": {},
    "Disconnect": {"code": (1, "uint32"), "reason": (2, "string")},
    "DisconnectRequest": {
        "user": (1, "string"),
        "disconnect": (2, "Disconnect"),
        "client": (3, "string"),
        "whitelist": (4, "repeated string"),
        "session": (5, "string"),
    },
    "DisconnectResponse": {"error": (1, "Error"), "result": (2, "DisconnectResult")},
    "DisconnectResult": {},
    "PresenceRequest": {"channel": (1, "string")},
    "PresenceResponse": {"error": (1, "Error"), "result": (2, "PresenceResult")},
    "ClientInfo": {
        "user": (1, "string"),
        "client": (2, "string"),
        "conn_info": (3, "bytes"),
        "chan_info": (4, "bytes"),
    },
    "PresenceResult": {"presence": (1, "map<string,ClientInfo>")},
    "PresenceStatsRequest": {"channel": (1, "string")},
    "PresenceStatsResponse": {"error": (1, "Error"), "result": (2, "PresenceStatsResult")},
    "PresenceStatsResult": {"num_clients": (1, "uint32"), "num_users": (2, "uint32")},
    "StreamPosition": {"offset": (1, "uint64"), "epoch": (2, "string")},
    "HistoryRequest": {
        "channel": (1, "string"),
        "limit": (2, "int32"),
        "since": (3, "StreamPosition"),
        "reverse": (4, "bool"),
    },
    "HistoryResponse": {"error": (1, "Error"), "result": (2, "HistoryResult")},
    "Publication": {
        "data": (2, "bytes"),
        "info": (3, "ClientInfo"),
        "offset": (4, "uint64"),
        "tags": (5, "map<string,string>"),
    },
    "HistoryResult": {
        "publications": (1, "repeated Publication"),
        "epoch": (2, "string"),
        "offset": (3, "uint64"),
    },
    "HistoryRemoveRequest": {"channel": (1, "string")},
    "HistoryRemoveResponse": {"error": (1, "Error"), "result": (2, "HistoryRemoveResult")},
    "HistoryRemoveResult": {},
    "InfoRequest": {},
    "InfoResponse": {"error": (1, "Error"), "result": (2, "InfoResult")},
    "InfoResult": {"nodes": (1, "repeated NodeResult")},
    "RPCRequest": {"method": (1, "string"), "params": (2, "bytes")},
    "RPCResponse": {"error": (1, "Error"), "result": (2, "RPCResult")},
    "RPCResult": {"data": (1, "bytes")},
    "RefreshRequest": {
        "user": (1, "string"),
        "client": (2, "string"),
        "expired": (3, "bool"),
        "expire_at": (4, "int64"),
        "info": (5, "bytes"),
        "session": (6, "string"),
    },
    "RefreshResponse": {"error": (1, "Error"), "result": (2, "RefreshResult")},
    "RefreshResult": {},
    "NodeResult": {
        "uid": (1, "string"),
        "name": (2, "string"),
        "version": (3, "string"),
        "num_clients": (4, "uint32"),
        "num_users": (5, "uint32"),
        "num_channels": (6, "uint32"),
        "uptime": (7, "uint32"),
        "metrics": (8, "Metrics"),
        "process": (9, "Process"),
        "num_subs": (10, "uint32"),
    },
    "Metrics": {"interval": (1, "double"), "items": (2, "map<string,double>")},
    "Process": {"cpu": (1, "double"), "rss": (2, "int64")},
    "ChannelsRequest": {"pattern": (1, "string")},
    "ChannelsResponse": {"error": (1, "Error"), "result": (2, "ChannelsResult")},
    "ChannelsResult": {"channels": (1, "map<string,ChannelInfo>")},
    "MapPublishRequest": {
        "channel": (1, "string"),
        "key": (2, "string"),
        "data": (3, "bytes"),
        "b64data": (4, "string"),
        "stream_data": (5, "bytes"),
        "b64stream_data": (6, "string"),
        "tags": (7, "map<string,string>"),
        "idempotency_key": (8, "string"),
        "delta": (9, "bool"),
        "version": (10, "uint64"),
        "version_epoch": (11, "string"),
        "score": (12, "int64"),
        "key_mode": (13, "string"),
    },
    "MapPublishResponse": {"error": (1, "Error"), "result": (2, "MapPublishResult")},
    "MapPublishResult": _MAP_CHANGE_RESULT,
    "MapRemoveRequest": {
        "channel": (1, "string"),
        "key": (2, "string"),
        "idempotency_key": (3, "string"),
    },
    "MapRemoveResponse": {"error": (1, "Error"), "result": (2, "MapRemoveResult")},
    "MapRemoveResult": _MAP_CHANGE_RESULT,
    "MapReadStateRequest": {
        "channel": (1, "string"),
        "cursor": (2, "string"),
        "limit": (3, "int32"),
        "key": (4, "string"),
        "asc": (5, "bool"),
        "revision_offset": (6, "uint64"),
        "revision_epoch": (7, "string"),
    },
    "MapReadStateResponse": {"error": (1, "Error"), "result": (2, "MapReadStateResult")},
    "MapReadStateResult": {**_MAP_READ_RESULT, "cursor": (4, "string")},
    "MapEntry": {
        "key": (1, "string"),
        "data": (2, "bytes"),
        "tags": (3, "map<string,string>"),
        "offset": (4, "uint64"),
        "score": (5, "int64"),
        "removed": (6, "bool"),
        "time": (7, "int64"),
    },
    "MapReadStreamRequest": {
        "channel": (1, "string"),
        "since_offset": (2, "uint64"),
        "since_epoch": (3, "string"),
        "limit": (4, "int32"),
        "reverse": (5, "bool"),
    },
    "MapReadStreamResponse": {"error": (1, "Error"), "result": (2, "MapReadStreamResult")},
    "MapReadStreamResult": _MAP_READ_RESULT,
    "MapStatsRequest": {"channel": (1, "string")},
    "MapStatsResponse": {"error": (1, "Error"), "result": (2, "MapStatsResult")},
    "MapStatsResult": {"num_keys": (1, "int32")},
    "MapClearRequest": {"channel": (1, "string")},
    "MapClearResponse": {"error": (1, "Error"), "result": (2, "MapClearResult")},
    "MapClearResult": {},
    "SharedPollPublishRequest": {
        "channel": (1, "string"),
        "key": (2, "string"),
        "data": (3, "bytes"),
        "b64data": (4, "string"),
        "version": (5, "uint64"),
        "epoch": (6, "string"),
    },
    "SharedPollPublishResponse": {"error": (1, "Error"), "result": (2, "SharedPollPublishResult")},
    "SharedPollPublishResult": {},
    "ChannelInfo": {"num_clients": (1, "uint32")},
}
API_METHODS: Final = {
    "Batch": ("BatchRequest", "BatchResponse", False, False),
    "Publish": ("PublishRequest", "PublishResponse", False, False),
    "Broadcast": ("BroadcastRequest", "BroadcastResponse", False, False),
    "Subscribe": ("SubscribeRequest", "SubscribeResponse", False, False),
    "Unsubscribe": ("UnsubscribeRequest", "UnsubscribeResponse", False, False),
    "Disconnect": ("DisconnectRequest", "DisconnectResponse", False, False),
    "Presence": ("PresenceRequest", "PresenceResponse", False, False),
    "PresenceStats": ("PresenceStatsRequest", "PresenceStatsResponse", False, False),
    "History": ("HistoryRequest", "HistoryResponse", False, False),
    "HistoryRemove": ("HistoryRemoveRequest", "HistoryRemoveResponse", False, False),
    "Info": ("InfoRequest", "InfoResponse", False, False),
    "RPC": ("RPCRequest", "RPCResponse", False, False),
    "Refresh": ("RefreshRequest", "RefreshResponse", False, False),
    "Channels": ("ChannelsRequest", "ChannelsResponse", False, False),
    "MapPublish": ("MapPublishRequest", "MapPublishResponse", False, False),
    "MapRemove": ("MapRemoveRequest", "MapRemoveResponse", False, False),
    "MapReadState": ("MapReadStateRequest", "MapReadStateResponse", False, False),
    "MapReadStream": ("MapReadStreamRequest", "MapReadStreamResponse", False, False),
    "MapStats": ("MapStatsRequest", "MapStatsResponse", False, False),
    "MapClear": ("MapClearRequest", "MapClearResponse", False, False),
    "SharedPollPublish": ("SharedPollPublishRequest", "SharedPollPublishResponse", False, False),
}
UNI_FIELDS: Final = {
    "ConnectRequest": {
        "token": (1, "string"),
        "data": (2, "bytes"),
        "subs": (3, "map<string,SubscribeRequest>"),
        "name": (4, "string"),
        "version": (5, "string"),
        "headers": (6, "map<string,string>"),
    },
    "SubscribeRequest": {"recover": (3, "bool"), "epoch": (6, "string"), "offset": (7, "uint64")},
    "Push": {
        "channel": (2, "string"),
        "pub": (4, "Publication"),
        "join": (5, "Join"),
        "leave": (6, "Leave"),
        "unsubscribe": (7, "Unsubscribe"),
        "message": (8, "Message"),
        "subscribe": (9, "Subscribe"),
        "connect": (10, "Connect"),
        "disconnect": (11, "Disconnect"),
        "refresh": (12, "Refresh"),
    },
    "ClientInfo": {
        "user": (1, "string"),
        "client": (2, "string"),
        "conn_info": (3, "bytes"),
        "chan_info": (4, "bytes"),
    },
    "Publication": {
        "data": (4, "bytes"),
        "info": (5, "ClientInfo"),
        "offset": (6, "uint64"),
        "tags": (7, "map<string,string>"),
    },
    "Join": {"info": (1, "ClientInfo")},
    "Leave": {"info": (1, "ClientInfo")},
    "Unsubscribe": {"code": (2, "uint32"), "reason": (3, "string")},
    "Subscribe": {
        "recoverable": (1, "bool"),
        "epoch": (4, "string"),
        "offset": (5, "uint64"),
        "positioned": (6, "bool"),
        "data": (7, "bytes"),
    },
    "Message": {"data": (1, "bytes")},
    "Connect": {
        "client": (1, "string"),
        "version": (2, "string"),
        "data": (3, "bytes"),
        "subs": (4, "map<string,SubscribeResult>"),
        "expires": (5, "bool"),
        "ttl": (6, "uint32"),
        "ping": (7, "uint32"),
        "pong": (8, "bool"),
        "session": (9, "string"),
        "node": (10, "string"),
    },
    "Disconnect": {"code": (1, "uint32"), "reason": (2, "string"), "reconnect": (3, "bool")},
    "Refresh": {"expires": (1, "bool"), "ttl": (2, "uint32")},
    "SubscribeResult": {
        "expires": (1, "bool"),
        "ttl": (2, "uint32"),
        "recoverable": (3, "bool"),
        "epoch": (6, "string"),
        "publications": (7, "repeated Publication"),
        "recovered": (8, "bool"),
        "offset": (9, "uint64"),
        "positioned": (10, "bool"),
        "data": (11, "bytes"),
        "was_recovering": (12, "bool"),
    },
}
UNI_METHODS: Final = {
    "Consume": ("ConnectRequest", "Push", False, True),
}


@pytest.mark.parametrize(
    ("module", "package", "service", "fields", "methods"),
    [
        (api_pb2, "centrifugal.centrifugo.api", "CentrifugoApi", API_FIELDS, API_METHODS),
        (
            unistream_pb2,
            "centrifugal.centrifugo.unistream",
            "CentrifugoUniStream",
            UNI_FIELDS,
            UNI_METHODS,
        ),
    ],
)
def test_descriptors_match_centrifugo(
    module: Any, package: str, service: str, fields: dict[str, Any], methods: dict[str, Any]
) -> None:
    assert_matches(module.DESCRIPTOR, package, service, fields, methods)


def test_every_executor_method_is_served() -> None:
    from centrifuge_asgi import api_schema

    assert set(METHODS) == set(api_schema.REQUEST_TYPES)


def test_push_bytes_read_as_unistream_push() -> None:
    """The client protocol's Push encoding is what unistream's Push decodes."""
    info = ClientInfoWire(user="u", client="c", conn_info=Raw(b'{"a":1}'), chan_info=Raw(b"\x01"))
    pub = PublicationWire(data=Raw(b"\x00\xff"), info=info, offset=7, tags={"k": "v"})
    data = UNI_PROTOBUF.encode_reply(Reply(push=Push(channel="ch", pub=pub)))
    push = unistream_pb2.Push.FromString(data)
    assert push.channel == "ch" and push.pub.data == b"\x00\xff" and push.pub.offset == 7
    assert (push.pub.info.user, push.pub.info.conn_info, push.pub.info.chan_info) == (
        "u",
        b'{"a":1}',
        b"\x01",
    )
    assert dict(push.pub.tags) == {"k": "v"}
    connect = ConnectResult(
        client="id",
        version="v",
        subs={"ch": SubscribeResult(recoverable=True, epoch="e", offset=3)},
    )
    pushed = unistream_pb2.Push.FromString(
        UNI_PROTOBUF.encode_reply(Reply(push=Push(connect=connect)))
    )
    assert pushed.connect.client == "id" and pushed.connect.subs["ch"].offset == 3
    bye = Reply(push=Push(disconnect=DisconnectPush(code=3001, reason="shutdown")))
    gone = unistream_pb2.Push.FromString(UNI_PROTOBUF.encode_reply(bye))
    assert (gone.disconnect.code, gone.disconnect.reason) == (3001, "shutdown")
    assert UNI_PROTOBUF.encode_reply(Reply()) == b""  # pings are not sent


def test_connect_request_conversion() -> None:
    m = unistream_pb2.ConnectRequest(
        token="t",
        data=b"{}",
        name="n",
        version="1",
        headers={"h": "v"},
        subs={"ch": unistream_pb2.SubscribeRequest(recover=True, epoch="e", offset=5)},
    )
    req = connect_request(m)
    assert (req.token, bytes(req.data), req.name, req.version, req.headers) == (  # type: ignore[arg-type]
        "t",
        b"{}",
        "n",
        "1",
        {"h": "v"},
    )
    sub = req.subs["ch"]
    assert (sub.recover, sub.epoch, sub.offset) == (True, "e", 5)


def test_map_request_conversion() -> None:
    """Every map request field the executor reads crosses from protobuf (via a batch)."""
    commands = [
        api_pb2.Command(
            map_publish=api_pb2.MapPublishRequest(
                channel="m:a",
                key="k",
                data=b"{}",
                tags={"t": "v"},
                idempotency_key="i",
                delta=True,
                version=3,
                version_epoch="ve",
                score=-4,
                key_mode="if_new",
            )
        ),
        api_pb2.Command(
            map_remove=api_pb2.MapRemoveRequest(channel="m:a", key="k", idempotency_key="j")
        ),
        api_pb2.Command(
            map_read_state=api_pb2.MapReadStateRequest(
                channel="m:a",
                cursor="c",
                limit=5,
                key="k",
                asc=True,
                revision_offset=7,
                revision_epoch="e",
            )
        ),
        api_pb2.Command(
            map_read_stream=api_pb2.MapReadStreamRequest(
                channel="m:a", since_offset=2, since_epoch="e", limit=-1, reverse=True
            )
        ),
        api_pb2.Command(map_stats=api_pb2.MapStatsRequest(channel="m:s")),
        api_pb2.Command(map_clear=api_pb2.MapClearRequest(channel="m:c")),
    ]
    pub, rem, state, stream, stats, clear = batch_request(
        api_pb2.BatchRequest(commands=commands)
    ).commands
    assert pub is not None and pub.map_publish is not None
    p = pub.map_publish
    assert (p.channel, p.key, p.b64data, p.tags, p.idempotency_key, p.delta) == (
        "m:a",
        "k",
        base64.b64encode(b"{}").decode(),
        {"t": "v"},
        "i",
        True,
    )
    assert (p.version, p.version_epoch, p.score, p.key_mode) == (3, "ve", -4, "if_new")
    assert rem is not None and rem.map_remove is not None
    assert (rem.map_remove.channel, rem.map_remove.key, rem.map_remove.idempotency_key) == (
        "m:a",
        "k",
        "j",
    )
    assert state is not None and state.map_read_state is not None
    r = state.map_read_state
    assert (r.channel, r.cursor, r.limit, r.key, r.asc, r.revision_offset, r.revision_epoch) == (
        "m:a",
        "c",
        5,
        "k",
        True,
        7,
        "e",
    )
    assert stream is not None and stream.map_read_stream is not None
    st = stream.map_read_stream
    assert (st.channel, st.since_offset, st.since_epoch, st.limit, st.reverse) == (
        "m:a",
        2,
        "e",
        -1,
        True,
    )
    assert stats is not None and stats.map_stats is not None and stats.map_stats.channel == "m:s"
    assert clear is not None and clear.map_clear is not None and clear.map_clear.channel == "m:c"


def test_batch_and_fill() -> None:
    batch = batch_request(
        api_pb2.BatchRequest(
            commands=[
                api_pb2.Command(publish=api_pb2.PublishRequest(channel="a", data=b"{}")),
                api_pb2.Command(),
            ],
            parallel=True,
        )
    )
    assert batch.parallel
    first, second = batch.commands
    assert first is not None and first.publish is not None
    assert first.publish.b64data == base64.b64encode(b"{}").decode()
    assert second is not None and second.method() is None
    reply = api_pb2.BatchResponse()
    fill(
        reply,
        {
            "replies": [
                {
                    "presence": {
                        "presence": {"c": {"user": "u", "client": "c", "conn_info": Raw(b"1")}}
                    }
                },
                {"error": {"code": 104, "message": "not found"}},
                {"channels": {"channels": {"x": {"num_clients": 2}}}},
                {
                    "history": {
                        "publications": [{"data": Raw(b"\x00"), "tags": {"k": "v"}}],
                        "offset": 1,
                    }
                },
                {"unknown_key": 1},
            ]
        },
    )
    presence, error, channels, history, unknown = reply.replies
    assert presence.presence.presence["c"].conn_info == b"1"
    assert (error.error.code, error.error.message) == (104, "not found")
    assert channels.channels.channels["x"].num_clients == 2
    assert history.history.publications[0].data == b"\x00"
    assert history.history.publications[0].tags == {"k": "v"}
    assert unknown == api_pb2.Reply()


def test_status_details_is_a_google_rpc_status() -> None:
    from google.protobuf.any_pb2 import Any as AnyMessage

    raw = status_details(5, "unknown channel", api_pb2.Error(code=102, message="unknown channel"))
    # field 1 (code, varint), field 2 (message), field 3 (one Any)
    assert raw[:2] == b"\x08\x05"
    text = b"unknown channel"
    assert raw[2:4] == b"\x12" + bytes([len(text)]) and raw[4 : 4 + len(text)] == text
    assert raw[4 + len(text)] == 0x1A
    detail = AnyMessage.FromString(raw[4 + len(text) + 2 :])
    assert detail.type_url == "type.googleapis.com/centrifugal.centrifugo.api.Error"
    error = api_pb2.Error()
    assert detail.Unpack(error) and error.code == 102


# ------------------------------------------------------------------------------ config


def test_config_keys_and_defaults() -> None:
    cfg = Config()
    assert (cfg.grpc_api.enabled, cfg.grpc_api.port, cfg.grpc_api.error_mode) == (False, 10000, "")
    assert (cfg.uni_grpc.enabled, cfg.uni_grpc.port) == (False, 11000)
    loaded = Config.from_dict(
        {
            "grpc_api": {
                "enabled": True,
                "key": "k",
                "error_mode": "transport",
                "max_receive_message_size": 1024,
                "reflection": True,
                "tls": {"enabled": True, "cert_pem": "c", "key_pem": "k"},
            },
            "uni_grpc": {"enabled": True, "port": 12000, "max_receive_message_size": 10},
        }
    )
    assert loaded.warnings == ()
    assert loaded.grpc_api.tls.enabled and loaded.uni_grpc.port == 12000


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"grpc_api": {"error_mode": "custom"}}, "grpc_api.error_mode"),
        ({"grpc_api": {"port": 70000}}, "grpc_api.port"),
        ({"uni_grpc": {"port": -1}}, "uni_grpc.port"),
    ],
)
def test_config_errors_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Config.from_dict(data, source="conf.json")


def test_pem_values(tmp_path: Path) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert read_pem(pem, "k") == pem.encode()
    path = tmp_path / "cert.pem"
    path.write_text(pem)
    assert read_pem(str(path), "k") == pem.encode()
    assert read_pem(base64.b64encode(pem.encode()).decode(), "k") == pem.encode()
    with pytest.raises(ConfigError, match=r"grpc_api\.tls\.cert_pem"):
        read_pem("nothing", "grpc_api.tls.cert_pem")


def test_listen_address() -> None:
    assert listen_address("", 10000) == "[::]:10000"
    assert listen_address("127.0.0.1", 1) == "127.0.0.1:1"
    assert listen_address("::1", 2) == "[::1]:2"


# ----------------------------------------------------------------------- lazy grpcio


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_import_and_plain_node_load_no_grpc() -> None:
    done = _python(
        "import sys, anyio, centrifuge_asgi\n"
        "async def main():\n"
        "    async with centrifuge_asgi.Node():\n"
        "        pass\n"
        "anyio.run(main)\n"
        "assert 'grpc' not in sys.modules, 'grpc loaded'\n"
        "print('ok')\n"
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_grpc_configured_but_not_installed() -> None:
    done = _python(
        "import sys, anyio\n"
        "sys.modules['grpc'] = None  # as if grpcio were not installed\n"
        "import centrifuge_asgi\n"
        "from centrifuge_asgi.errors import ConfigError\n"
        "node = centrifuge_asgi.Node({'grpc_api': {'enabled': True, 'port': 10999}})\n"
        "async def main():\n"
        "    async with node:\n"
        "        pass\n"
        "try:\n"
        "    anyio.run(main)\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
        "print('running' if node.running else 'stopped')\n"
    )
    hint = "pip install 'centrifuge-asgi[grpc]'"
    assert done.stdout.splitlines() == [
        f"grpc_api.enabled needs grpcio, which is not installed: {hint}",
        "stopped",
    ], done.stderr
