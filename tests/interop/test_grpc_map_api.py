"""The map server API methods over gRPC (``CentrifugoApi.Map*``) under a live uvicorn.

The same executor serves HTTP and gRPC, so these tests mirror tests/interop/test_map_api.py
over a real grpcio channel: results as protobuf, payloads as bytes, both error modes, the
batch, and a centrifuge-js 5.7.4 map subscriber seeing what the gRPC calls change.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import grpc
import pytest

from centrifuge_asgi.grpc import api_pb2 as pb

from .grpc_support import TIMEOUT, GrpcEnv, grpc_config, start
from .support import token
from .test_grpc_api import AUTH, TRANSPORT_MODE, api, detail_error, error_of
from .test_js_map import MAP_NAMESPACES

if TYPE_CHECKING:
    from conftest import ARunJs, LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]


@pytest.fixture
def env(live_server: LiveServerFactory) -> GrpcEnv:
    cfg = grpc_config(uni=False)
    binary = {
        "name": "binmap",
        "subscription_type": "map",
        "publication_data_format": "binary",
        "map": {"mode": "persistent"},
    }
    cfg["channel"]["namespaces"] = [*cfg["channel"]["namespaces"], *MAP_NAMESPACES, binary]
    return start(live_server, cfg)


def keys(entries: Any) -> list[tuple[str, bool]]:
    return [(e.key, e.removed) for e in entries]


async def test_map_publish_read_remove_stats_clear(env: GrpcEnv) -> None:
    ch = "board:grpc"
    async with api(env.api_target) as s:
        first = await s.MapPublish(
            pb.MapPublishRequest(channel=ch, key="a", data=b'{"v":1}'), metadata=AUTH
        )
        assert error_of(first) is None and first.result.offset == 1
        epoch = first.result.epoch
        assert epoch
        await s.MapPublish(
            pb.MapPublishRequest(channel=ch, key="b", data=b'{"v":2}', tags={"t": "x"}),
            metadata=AUTH,
        )
        suppressed = await s.MapPublish(
            pb.MapPublishRequest(channel=ch, key="a", data=b'{"v":9}', key_mode="if_new"),
            metadata=AUTH,
        )
        assert (suppressed.result.offset, suppressed.result.epoch) == (2, epoch)
        assert suppressed.result.suppressed
        assert suppressed.result.suppress_reason == "key_exists"

        page = await s.MapReadState(pb.MapReadStateRequest(channel=ch, limit=1), metadata=AUTH)
        assert page.result.cursor == "a" and keys(page.result.entries) == [("a", False)]
        assert (page.result.offset, page.result.epoch) == (2, epoch)
        rest = await s.MapReadState(
            pb.MapReadStateRequest(channel=ch, limit=1, cursor="a"), metadata=AUTH
        )
        (entry,) = rest.result.entries
        assert (entry.key, json.loads(entry.data), dict(entry.tags), entry.offset) == (
            "b",
            {"v": 2},
            {"t": "x"},
            2,
        )
        assert entry.time > 0 and rest.result.cursor == ""
        one = await s.MapReadState(
            pb.MapReadStateRequest(channel=ch, key="b", limit=-1), metadata=AUTH
        )
        assert keys(one.result.entries) == [("b", False)]

        removed = await s.MapRemove(pb.MapRemoveRequest(channel=ch, key="a"), metadata=AUTH)
        assert (removed.result.offset, removed.result.epoch) == (3, epoch)
        assert not removed.result.suppressed
        missing = await s.MapRemove(pb.MapRemoveRequest(channel=ch, key="a"), metadata=AUTH)
        assert missing.result.suppress_reason == "key_not_found"

        stream = await s.MapReadStream(pb.MapReadStreamRequest(channel=ch, limit=-1), metadata=AUTH)
        assert keys(stream.result.entries) == [("a", False), ("b", False), ("a", True)]
        assert stream.result.entries[2].data == b""
        assert (stream.result.offset, stream.result.epoch) == (3, epoch)
        since = await s.MapReadStream(
            pb.MapReadStreamRequest(channel=ch, limit=10, since_offset=2, since_epoch=epoch),
            metadata=AUTH,
        )
        assert [e.offset for e in since.result.entries] == [3]
        backwards = await s.MapReadStream(
            pb.MapReadStreamRequest(channel=ch, limit=2, reverse=True), metadata=AUTH
        )
        assert [e.offset for e in backwards.result.entries] == [3, 2]

        stats = await s.MapStats(pb.MapStatsRequest(channel=ch), metadata=AUTH)
        assert stats.result.num_keys == 1
        cleared = await s.MapClear(pb.MapClearRequest(channel=ch), metadata=AUTH)
        assert error_of(cleared) is None and cleared.HasField("result")
        stats = await s.MapStats(pb.MapStatsRequest(channel=ch), metadata=AUTH)
        assert stats.result.num_keys == 0
        fresh = await s.MapReadState(pb.MapReadStateRequest(channel=ch, limit=-1), metadata=AUTH)
        assert list(fresh.result.entries) == [] and fresh.result.epoch != epoch


async def test_binary_payloads(env: GrpcEnv) -> None:
    """Bytes that are not JSON: refused on a JSON map (107), kept and read back as they are
    on a binary one; ``b64data`` wins over ``data``."""
    async with api(env.api_target) as s:
        for channel in ("cursors:x", "board:bin"):
            bad = await s.MapPublish(
                pb.MapPublishRequest(channel=channel, key="k", data=b"\xff\x00"), metadata=AUTH
            )
            assert error_of(bad) == (107, "bad request")
        ok = await s.MapPublish(
            pb.MapPublishRequest(
                channel="board:b64", key="k", data=b"ignored", b64data="eyJ4IjoxfQ=="
            ),
            metadata=AUTH,
        )
        assert error_of(ok) is None
        state = await s.MapReadState(
            pb.MapReadStateRequest(channel="board:b64", limit=-1), metadata=AUTH
        )
        assert [json.loads(e.data) for e in state.result.entries] == [{"x": 1}]
        raw = await s.MapPublish(
            pb.MapPublishRequest(channel="binmap:x", key="k", data=b"\xff\x00"), metadata=AUTH
        )
        assert error_of(raw) is None
        for read in (
            await s.MapReadState(
                pb.MapReadStateRequest(channel="binmap:x", limit=-1), metadata=AUTH
            ),
            await s.MapReadStream(
                pb.MapReadStreamRequest(channel="binmap:x", limit=-1), metadata=AUTH
            ),
        ):
            assert [e.data for e in read.result.entries] == [b"\xff\x00"]


ERRORS: list[tuple[str, Any, int, str]] = [
    ("MapPublish", pb.MapPublishRequest(key="a", data=b"{}"), 107, "INVALID_ARGUMENT"),
    ("MapPublish", pb.MapPublishRequest(channel="board:x", data=b"{}"), 107, "INVALID_ARGUMENT"),
    (
        "MapPublish",
        pb.MapPublishRequest(channel="board:x", key="a", data=b"{}", key_mode="x"),
        107,
        "INVALID_ARGUMENT",
    ),
    (
        "MapPublish",
        pb.MapPublishRequest(channel="chat:x", key="a", data=b"{}"),
        107,
        "INVALID_ARGUMENT",
    ),
    ("MapPublish", pb.MapPublishRequest(channel="nope:x", key="a", data=b"{}"), 102, "NOT_FOUND"),
    (
        "MapPublish",
        pb.MapPublishRequest(channel="cursors:x", key="a", data=b"[1]"),
        107,
        "INVALID_ARGUMENT",
    ),
    ("MapRemove", pb.MapRemoveRequest(channel="board:x"), 107, "INVALID_ARGUMENT"),
    ("MapReadState", pb.MapReadStateRequest(), 107, "INVALID_ARGUMENT"),
    (
        "MapReadState",
        pb.MapReadStateRequest(channel="board:x", revision_epoch="zz"),
        112,
        "OUT_OF_RANGE",
    ),
    (
        "MapReadStream",
        pb.MapReadStreamRequest(channel="board:x", limit=5, since_offset=1, since_epoch="zz"),
        112,
        "OUT_OF_RANGE",
    ),
    ("MapStats", pb.MapStatsRequest(channel="chat:x"), 107, "INVALID_ARGUMENT"),
    ("MapClear", pb.MapClearRequest(channel="nope:x"), 102, "NOT_FOUND"),
]


@pytest.mark.parametrize(("method", "request_", "code", "status"), ERRORS)
async def test_map_errors_in_both_modes(
    env: GrpcEnv, method: str, request_: Any, code: int, status: str
) -> None:
    async with api(env.api_target) as s:
        if method == "MapReadStream":  # an epoch exists only once the channel has a stream
            await s.MapPublish(
                pb.MapPublishRequest(channel="board:x", key="k", data=b"{}"), metadata=AUTH
            )
        in_body = await getattr(s, method)(request_, metadata=AUTH)
        assert error_of(in_body) is not None and in_body.error.code == code
        assert not in_body.HasField("result")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(s, method)(request_, metadata=TRANSPORT_MODE)
        assert caught.value.code() is getattr(grpc.StatusCode, status)
        error = detail_error(caught.value)
        assert (error.code, error.message) == (in_body.error.code, in_body.error.message)


async def test_map_methods_in_a_batch_and_unauthenticated(env: GrpcEnv) -> None:
    async with api(env.api_target) as s:
        batch = await s.Batch(
            pb.BatchRequest(
                commands=[
                    pb.Command(
                        map_publish=pb.MapPublishRequest(channel="board:b", key="k", data=b"{}")
                    ),
                    pb.Command(map_stats=pb.MapStatsRequest(channel="board:b")),
                    pb.Command(map_clear=pb.MapClearRequest(channel="nope:b")),
                    pb.Command(map_read_state=pb.MapReadStateRequest(channel="board:b", limit=-1)),
                ]
            ),
            metadata=TRANSPORT_MODE,  # a batch answers errors per command in either mode
        )
        first, stats, clear, state = batch.replies
        assert first.map_publish.offset == 1
        assert stats.map_stats.num_keys == 1
        assert error_of(clear) == (102, "unknown channel")
        assert keys(state.map_read_state.entries) == [("k", False)]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await s.MapStats(pb.MapStatsRequest(channel="board:b"))
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_js_map_subscriber_sees_grpc_changes(env: GrpcEnv, arun_js: ARunJs) -> None:
    ch = "board:live"
    result: dict[str, Any] = {}
    async with api(env.api_target) as s:
        await s.MapPublish(
            pb.MapPublishRequest(channel=ch, key="before", data=b'{"n":0}'), metadata=AUTH
        )

        async def subscriber() -> None:
            args = (env.ws_url, token("js"), ch, "2")
            result.update(await arun_js("grpc_map_subscriber.mjs", *args, timeout=20))

        async with anyio.create_task_group() as tg:
            tg.start_soon(subscriber)
            with anyio.fail_after(3 * TIMEOUT):  # node start and the SDK's subscribe
                while True:
                    found = await s.Channels(pb.ChannelsRequest(pattern=ch), metadata=AUTH)
                    if ch in found.result.channels:
                        break
                    await anyio.sleep(0.05)
            await s.MapPublish(
                pb.MapPublishRequest(channel=ch, key="live", data=b'{"n":1}', tags={"t": "g"}),
                metadata=AUTH,
            )
            await s.MapRemove(pb.MapRemoveRequest(channel=ch, key="before"), metadata=AUTH)
    assert result["sync"] == [{"key": "before", "data": {"n": 0}}]
    assert result["updates"] == [
        {"key": "live", "removed": False, "data": {"n": 1}, "tags": {"t": "g"}},
        {"key": "before", "removed": True, "data": None, "tags": None},
    ]
