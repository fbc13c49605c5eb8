"""Map-subscription and shared-poll fields of the client protocol, JSON and Protobuf.

Field numbers follow centrifugal/protocol ``definitions/client.proto`` (Centrifugo v6.8+);
JSON names are the proto names, as Go's encoder writes them.
"""

from __future__ import annotations

import msgspec
from msgspec import UNSET, Raw

from centrifuge_asgi.protocol import client_pb2 as pb
from centrifuge_asgi.protocol.json_codec import JSON
from centrifuge_asgi.protocol.messages import (
    PublicationWire,
    Reply,
    SubRefreshResult,
    SubscribeResult,
)
from centrifuge_asgi.protocol.protobuf_codec import PROTOBUF, uvarint


def _frame(cmd: pb.Command) -> bytes:
    body = cmd.SerializeToString()
    return uvarint(len(body)) + body


def test_protobuf_map_subscribe_publish_and_track_fields_decode() -> None:
    sub = pb.Command(id=1)
    sub.subscribe.channel = "m:a"
    sub.subscribe.type = 1
    sub.subscribe.phase = 2
    sub.subscribe.cursor = "c1"
    sub.subscribe.limit = 50
    pub = pb.Command(id=2)
    pub.publish.channel = "m:a"
    pub.publish.type = 1
    pub.publish.key = "k"
    pub.publish.removed = True
    track = pb.Command(id=3)
    track.sub_refresh.channel = "p:a"
    track.sub_refresh.type = 1
    batch = track.sub_refresh.track.add()
    batch.signature = "sig"
    batch.items.add(key="x", version=7)
    track.sub_refresh.untrack.append("y")
    cmds = PROTOBUF.decode_commands(_frame(sub) + _frame(pub) + _frame(track))
    s = cmds[0].subscribe
    assert s is not None
    assert (s.type, s.phase, s.cursor, s.limit) == (1, 2, "c1", 50)
    p = cmds[1].publish
    assert p is not None
    assert (p.type, p.key, p.removed, p.data) == (1, "k", True, UNSET)
    r = cmds[2].sub_refresh
    assert r is not None
    assert r.type == 1 and r.untrack == ["y"]
    assert r.track[0].signature == "sig"
    assert (r.track[0].items[0].key, r.track[0].items[0].version) == ("x", 7)


def test_json_map_fields_decode() -> None:
    frame = (
        b'{"id":1,"subscribe":{"channel":"m:a","type":1,"phase":1,"offset":3,"epoch":"e",'
        b'"limit":10,"cursor":"z"}}\n'
        b'{"id":2,"publish":{"channel":"m:a","type":1,"key":"k","data":{"v":1}}}\n'
        b'{"id":3,"sub_refresh":{"channel":"p:a","type":1,'
        b'"track":[{"signature":"s","items":[{"key":"x"}]}]}}'
    )
    sub, pub, track = JSON.decode_commands(frame)
    assert sub.subscribe is not None and sub.subscribe.phase == 1
    assert sub.subscribe.cursor == "z" and sub.subscribe.limit == 10
    assert pub.publish is not None and pub.publish.key == "k"
    assert track.sub_refresh is not None
    assert track.sub_refresh.track[0].items[0].version == 0


def _state_reply() -> Reply:
    removal = PublicationWire(data=UNSET, key="gone", removed=True, offset=9)
    entry = PublicationWire(data=Raw(b'{"v":1}'), key="k", offset=4)
    result = SubscribeResult(
        epoch="e", offset=9, type=1, phase=2, cursor="next", state=[entry], publications=[removal]
    )
    return Reply(id=5, subscribe=result)


def test_map_subscribe_result_encodes_in_protobuf() -> None:
    data = PROTOBUF.encode_reply(_state_reply())
    reply = pb.Reply.FromString(data[1:])
    r = reply.subscribe
    assert (r.type, r.phase, r.cursor) == (1, 2, "next")
    assert r.state[0].key == "k" and r.state[0].data == b'{"v":1}'
    assert r.publications[0].removed and r.publications[0].key == "gone"
    assert r.publications[0].data == b""


def test_map_subscribe_result_encodes_in_json_without_removal_payload() -> None:
    decoded = msgspec.json.decode(JSON.encode_reply(_state_reply()))
    r = decoded["subscribe"]
    assert r["phase"] == 2 and r["cursor"] == "next" and r["type"] == 1
    assert r["state"] == [{"data": {"v": 1}, "offset": 4, "key": "k"}]
    assert r["publications"] == [{"offset": 9, "key": "gone", "removed": True}]


def test_live_phase_is_omitted_and_sub_refresh_items_encode() -> None:
    live = JSON.encode_reply(Reply(id=1, subscribe=SubscribeResult(type=1, publish_debounce=20)))
    assert msgspec.json.decode(live) == {"id": 1, "subscribe": {"type": 1, "publish_debounce": 20}}
    item = PublicationWire(data=Raw(b"1"), key="x", version=3)
    reply = Reply(id=2, sub_refresh=SubRefreshResult(ttl=10, items=[item]))
    m = pb.Reply.FromString(PROTOBUF.encode_reply(reply)[1:])
    assert m.sub_refresh.items[0].version == 3 and m.sub_refresh.ttl == 10


def test_json_map_state_leaves_out_entries_a_json_client_cannot_receive() -> None:
    good = PublicationWire(data=Raw(b'{"v":1}'), key="ok")
    binary = PublicationWire(data=Raw(b"\xff\x00"), key="bin")
    reply = Reply(id=1, subscribe=SubscribeResult(type=1, phase=2, state=[good, binary]))
    decoded = msgspec.json.decode(JSON.encode_reply(reply))
    assert decoded["subscribe"]["state"] == [{"data": {"v": 1}, "key": "ok"}]
