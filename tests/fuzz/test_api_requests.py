"""The server HTTP API takes any body: a documented answer, never a 500 or a traceback.

Bodies are arbitrary bytes, arbitrary JSON, and per-method requests (valid, then mutated:
wrong types, extreme integers, deep nesting, invalid UTF-8, huge strings, extra keys),
sent to ``/api/<method>``, ``/api/batch`` and the legacy ``/api``. Properties (server-api
spec §1): the status is 200, 400 (plain ``Bad Request``) or 413; a 200 carries JSON whose
errors have codes of the API's table; and nothing is logged at ERROR. With the
``transport`` error mode the error's own HTTP status is used, and 500 (code 100) is
allowed only where it is documented: it must not come with a logged traceback.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from centrifuge.fossil import apply_delta
from hypothesis import event, example, given
from hypothesis import strategies as st

from centrifuge_asgi import Node
from centrifuge_asgi.api_exec import API_MESSAGES, HTTP_STATUS
from centrifuge_asgi.api_schema import LEGACY_METHOD_NUMBERS, REQUEST_TYPES
from centrifuge_asgi.session import TransportInfo
from centrifuge_asgi.shared_poll import make_signature

from .harness import CHANNELS, CONFIG, POLL_SECRET, TOKEN, ErrorRecords, Served, serve
from .support import (
    bad_values,
    dump,
    examples,
    json_values,
    mangle,
    mutated,
    texts,
)

KEY = "fuzz-key"
MAX_BODY = 200_000
API_CONFIG: dict[str, Any] = {**CONFIG, "http_api": {"key": KEY, "max_body_size": MAX_BODY}}
AUTH = {"X-API-Key": KEY}

users = st.sampled_from(["u1", "u2", ""]) | texts
channel = st.sampled_from(CHANNELS) | texts
b64 = st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()) | texts
u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
opt_bool = st.fixed_dictionaries({}, optional={"value": st.booleans()})
position = st.fixed_dictionaries({}, optional={"offset": u64, "epoch": texts})
map_channel = st.sampled_from(["map:a", "cursor:a"]) | channel
poll_channel = st.sampled_from(["poll:a", "pollx:a"]) | channel
map_key = st.sampled_from(["k1", "k2", "gone", ""]) | texts
limits = st.sampled_from([0, 1, -1, 1000, 1001]) | st.integers(-(2**31), 2**31 - 1)
publish_fields = {
    "data": json_values,
    "b64data": b64,
    "skip_history": st.booleans(),
    "tags": st.dictionaries(texts, texts, max_size=3),
    "idempotency_key": texts,
    "delta": st.booleans(),
    "version": u64,
    "version_epoch": texts,
}
REQUESTS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "publish": st.fixed_dictionaries({"channel": channel}, optional=publish_fields),
    "broadcast": st.fixed_dictionaries(
        {"channels": st.lists(channel, max_size=4)}, optional=publish_fields
    ),
    "subscribe": st.fixed_dictionaries(
        {"user": users, "channel": channel},
        optional={
            "expire_at": i64,
            "info": json_values,
            "b64info": b64,
            "client": texts,
            "session": texts,
            "data": json_values,
            "b64data": b64,
            "recover_since": position,
            "override": st.fixed_dictionaries(
                {},
                optional={
                    k: opt_bool
                    for k in (
                        "presence",
                        "join_leave",
                        "force_push_join_leave",
                        "force_positioning",
                        "force_recovery",
                    )
                },
            ),
        },
    ),
    "unsubscribe": st.fixed_dictionaries(
        {"user": users, "channel": channel}, optional={"client": texts, "session": texts}
    ),
    "disconnect": st.fixed_dictionaries(
        {"user": users},
        optional={
            "client": texts,
            "session": texts,
            "whitelist": st.lists(texts, max_size=3),
            "disconnect": st.fixed_dictionaries(
                {},
                optional={
                    "code": st.integers(0, 2**32 - 1) | st.integers(2990, 5010),
                    "reason": texts,
                },
            ),
        },
    ),
    "refresh": st.fixed_dictionaries(
        {"user": users},
        optional={
            "client": texts,
            "session": texts,
            "expired": st.booleans(),
            "expire_at": i64,
            "info": json_values,
        },
    ),
    "history": st.fixed_dictionaries(
        {"channel": channel},
        optional={
            "limit": st.integers(-(2**31), 2**31 - 1),
            "since": position,
            "reverse": st.booleans(),
        },
    ),
    "history_remove": st.fixed_dictionaries({"channel": channel}),
    "presence": st.fixed_dictionaries({"channel": channel}),
    "presence_stats": st.fixed_dictionaries({"channel": channel}),
    "info": st.just({}),
    "rpc": st.fixed_dictionaries({}, optional={"method": texts, "params": json_values}),
    "channels": st.fixed_dictionaries(
        {}, optional={"pattern": st.sampled_from(["*", "news:*", "[", "[!a-", "**?"]) | texts}
    ),
    "map_publish": st.fixed_dictionaries(
        {"channel": map_channel, "key": map_key},
        optional={
            **publish_fields,
            "score": i64,
            "key_mode": st.sampled_from(["", "if_new", "if_exists", "IF_NEW", "x"]) | texts,
        },
    ),
    "map_remove": st.fixed_dictionaries(
        {"channel": map_channel, "key": map_key}, optional={"idempotency_key": texts}
    ),
    "map_read_state": st.fixed_dictionaries(
        {"channel": map_channel},
        optional={
            "cursor": map_key,
            "limit": limits,
            "key": map_key,
            "asc": st.booleans(),
            "revision_offset": u64,
            "revision_epoch": texts,
        },
    ),
    "map_read_stream": st.fixed_dictionaries(
        {"channel": map_channel},
        optional={
            "since_offset": u64,
            "since_epoch": texts,
            "limit": limits,
            "reverse": st.booleans(),
        },
    ),
    "map_stats": st.fixed_dictionaries({"channel": map_channel}),
    "map_clear": st.fixed_dictionaries({"channel": map_channel}),
    "shared_poll_publish": st.fixed_dictionaries(
        {"channel": poll_channel, "key": map_key},
        optional={
            "data": json_values,
            "b64data": b64,
            "version": st.sampled_from([0, 1, 2, 2**64 - 1]) | u64,
            "epoch": st.sampled_from(["", "e1"]) | texts,
        },
    ),
}
assert set(REQUESTS) == set(REQUEST_TYPES)
METHODS = sorted(REQUESTS)
KEYS = sorted(
    {"channel", "channels", "data", "user", "method", "params", "commands", "key", "version"}
)

single = st.sampled_from(METHODS).flatmap(lambda m: st.tuples(st.just(m), REQUESTS[m]))
batch = st.fixed_dictionaries(
    {"commands": st.lists(single.map(lambda t: {t[0]: t[1]}), max_size=5)},
    optional={"parallel": st.booleans()},
)
legacy_one = single.map(lambda t: {"method": t[0], "params": t[1]}) | single.map(
    lambda t: {  # the map and shared poll methods have no number (by name: 104)
        "id": 1,
        "method": LEGACY_METHOD_NUMBERS.index(t[0]) if t[0] in LEGACY_METHOD_NUMBERS else t[0],
        "params": t[1],
    }
)


@st.composite
def bodies(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> bytes:
    """A valid body, a mutated one, a byte-damaged one, any JSON, or any bytes."""
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "mangled", "json", "bytes"]))
    if kind == "valid":
        return dump(draw(valid))
    if kind == "mutated":
        return dump(draw(mutated(valid, KEYS)))
    if kind == "mangled":
        return draw(mangle(dump(draw(mutated(valid, KEYS)))))
    if kind == "json":
        return dump(draw(bad_values))
    return draw(st.binary(max_size=200))


@st.composite
def method_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from([*METHODS, "batch"]))
    return name, draw(bodies(batch if name == "batch" else REQUESTS[name]))


@st.composite
def legacy_bodies(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(bodies(legacy_one), min_size=1, max_size=3))
    return draw(st.sampled_from([b"\n", b" ", b""])).join(lines)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serve(API_CONFIG) as served:
        yield served


def check_error(error: Any) -> None:
    assert isinstance(error, dict) and set(error) == {"code", "message"}, error
    assert API_MESSAGES.get(error["code"]) == error["message"], error


def check_result(method: str, answer: Any) -> None:
    """``{"result": …}`` or ``{"error": …}``; batch: ``{"replies": [...]}``."""
    assert isinstance(answer, dict)
    if method == "batch":
        assert set(answer) == {"replies"}
        for reply in answer["replies"]:
            assert isinstance(reply, dict) and len(reply) == 1, reply
            [(key, value)] = reply.items()
            if key == "error":
                check_error(value)
            else:
                assert key in REQUEST_TYPES and isinstance(value, dict), reply
        return
    assert len(answer) == 1 and set(answer) <= {"result", "error"}, answer
    if "error" in answer:
        check_error(answer["error"])


SUBSCRIPTIONS = [  # what the client of each request is subscribed to: deltas go out to it
    {"channel": "delta:a", "delta": "fossil"},
    {"channel": "map:a", "type": 1, "phase": 2, "delta": "fossil"},
    {"channel": "poll:a", "type": 4, "delta": "fossil"},
]


async def post(node: Node, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """One request, with a connected client of user u1, subscribed with fossil deltas, for
    it to act on; what that client gets must be well-formed client-protocol replies."""
    session = node.create_session(TransportInfo())
    await session.handle_frame(dump({"id": 1, "connect": {"token": TOKEN}}))
    for n, sub in enumerate(SUBSCRIPTIONS, 2):
        await session.handle_frame(dump({"id": n, "subscribe": sub}))
    transport = httpx.ASGITransport(app=node.asgi_app())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post(path, content=body, headers=headers)
    finally:
        for message in session.outbox.drain():
            for line in message.split(b"\n"):
                reply = json.loads(line)
                assert isinstance(reply, dict) and "error" not in reply, reply
        await session.finish()


def request(served: Served, path: str, body: bytes, transport_mode: bool = False) -> Any:
    """The JSON answer, or None for a documented plain-text or transport-mode error."""
    headers = {**AUTH, "x-centrifugo-error-mode": "transport"} if transport_mode else AUTH
    with ErrorRecords() as errors:
        response = served.portal.call(post, served.node, path, body, headers)
    errors.check()
    status = response.status_code
    event(f"HTTP {status}")
    if status in (400, 413) and response.headers["content-type"].startswith("text/plain"):
        assert response.text == ("Bad Request" if status == 400 else "Request Entity Too Large")
        return None
    assert response.headers["content-type"] == "application/json", (status, response.text)
    lines = [json.loads(line) for line in response.content.split(b"\n")]
    if transport_mode and status != 200:
        [error] = lines
        check_error(error)
        assert HTTP_STATUS.get(error["code"], 500) == status
        return None
    assert status == 200, (status, response.text)
    return lines if path == "/api" else lines[0]


@examples(0.5)
@given(method_requests())
@example(("publish", b'{"channel":"news:a","data":' + b"[" * 5000 + b"]" * 5000 + b"}"))
@example(("history", b'{"channel":"bin:a","limit":-1}'))
@example(("channels", b'{"pattern":"[!"}'))
@example(("batch", b'{"commands":[null,{},{"info":{}}],"parallel":true}'))
@example(("disconnect", b'{"user":"u1","disconnect":{"code":4294967295}}'))
@example(("publish", b'{"channel":"news:a","data":"' + b"x" * MAX_BODY + b'"}'))
def test_method_endpoint(served: Served, request_: tuple[str, bytes]) -> None:
    method, body = request_
    answer = request(served, f"/api/{method}", body)
    if answer is not None:
        check_result(method, answer)


@examples(0.25)
@given(method_requests())
def test_method_endpoint_transport_error_mode(served: Served, request_: tuple[str, bytes]) -> None:
    method, body = request_
    answer = request(served, f"/api/{method}", body, transport_mode=True)
    if answer is not None and method != "batch":
        assert set(answer) == {"result"}, answer


@examples(0.25)
@given(legacy_bodies())
@example(b'{"method":"publish","params":{"channel":"news:a","data":1}}\n{"method":99}')
@example(b'{"method":"info","params":null} {"method":"INFO"}')
def test_legacy_endpoint(served: Served, body: bytes) -> None:
    answers = request(served, "/api", body)
    for answer in answers or []:
        assert set(answer) - {"id"} in ({"result"}, {"error"}), answer
        if "error" in answer:
            check_error(answer["error"])


def map_change(method: str) -> st.SearchStrategy[tuple[str, Any]]:
    valid = REQUESTS[method].map(lambda r: {**r, "channel": "map:s"})
    return st.tuples(st.just(method), st.one_of(valid, valid, mutated(valid, KEYS)))


map_changes = st.sampled_from(["map_publish", "map_publish", "map_remove", "map_clear"]).flatmap(
    map_change
)


def read_map(served: Served, channel: str) -> tuple[list[Any], list[Any], int]:
    """(state entries, stream entries, top offset) of ``channel``, all of them."""
    state: list[Any] = []
    cursor = ""
    for _ in range(50):
        body = dump({"channel": channel, "limit": 1000, "cursor": cursor})
        result = request(served, "/api/map_read_state", body)["result"]
        state += result["entries"]
        cursor = result.get("cursor", "")
        if not cursor:
            break
    stream = request(served, "/api/map_read_stream", dump({"channel": channel, "limit": -1}))
    assert stream["result"]["epoch"] == result["epoch"], (stream, result)
    return state, stream["result"]["entries"], result["offset"]


@examples(0.25)
@given(st.lists(map_changes, max_size=6))
def test_map_state_stays_consistent(served: Served, changes: list[tuple[str, Any]]) -> None:
    """Whatever the API is asked, a map's state, stream and stats agree (server-api
    spec: map methods): unique keys in key order, each key's entry is its last change in
    the stream, offsets grow, and ``map_stats`` counts the state."""
    for method, req in changes:
        answer = request(served, f"/api/{method}", dump(req))
        if answer is not None:
            check_result(method, answer)
    state, stream, top = read_map(served, "map:s")
    keys = [e["key"] for e in state]
    assert keys == sorted(set(keys)), keys
    stats = request(served, "/api/map_stats", dump({"channel": "map:s"}))
    assert stats == {"result": {"num_keys": len(state)}}, (stats, state)
    offsets = [e["offset"] for e in stream]
    assert offsets == sorted(set(offsets)) and all(0 < o <= top for o in offsets), (offsets, top)
    assert all(0 < e["offset"] <= top for e in state), (state, top)
    last = {e["key"]: e for e in stream}
    window = offsets[0] if offsets else top + 1
    for entry in state:
        change = last.get(entry["key"])
        if entry["offset"] >= window:
            assert change is not None and not change.get("removed"), (entry, stream)
            assert change["offset"] == entry["offset"], (entry, change)
            assert change.get("data") == entry.get("data"), (entry, change)
    for key, change in last.items():
        if change.get("removed"):
            assert key not in keys, (key, state)


delta_publishes = st.lists(
    st.tuples(
        st.sampled_from([("publish", ""), ("map_publish", "k1"), ("map_publish", "k2")]),
        json_values | st.just({"text": "é" * 40}) | st.just({"text": "x" * 200}),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
)
DELTA_CHANNELS = {"publish": "delta:d", "map_publish": "map:d"}


async def publish_to_delta_subscriber(
    node: Node, publishes: list[tuple[tuple[str, str], Any, bool]]
) -> tuple[list[tuple[str, str, bytes]], list[tuple[str, str, bytes]], int]:
    """(what was published, what a fossil-delta subscriber rebuilt, per channel and key;
    how many of the pushes were deltas)."""
    session = node.create_session(TransportInfo())
    await session.handle_frame(dump({"id": 1, "connect": {"token": TOKEN}}))
    subs = [
        {"channel": "delta:d", "delta": "fossil"},
        {"channel": "map:d", "type": 1, "phase": 2, "delta": "fossil"},
    ]
    for n, sub in enumerate(subs, 2):
        await session.handle_frame(dump({"id": n, "subscribe": sub}))
    held: dict[tuple[str, str], bytes] = {}  # the payload each key's next delta applies to
    for message in session.outbox.drain():
        for line in message.split(b"\n"):
            result = json.loads(line).get("subscribe", {})
            for pub in result.get("state", []):  # map:d's entries: the keys' bases
                held["map:d", pub["key"]] = pub["data"].encode()
    sent: list[tuple[str, str, bytes]] = []
    transport = httpx.ASGITransport(app=node.asgi_app())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for (method, key), data, delta in publishes:
                channel = DELTA_CHANNELS[method]
                req = {
                    "channel": channel,
                    "data": data,
                    "delta": delta,
                    **({"key": key} if key else {}),
                }
                answer = (
                    await client.post(f"/api/{method}", content=dump(req), headers=AUTH)
                ).json()
                assert set(answer) == {"result"}, answer
                sent.append((channel, key, dump(data)))
        got: list[tuple[str, str, bytes]] = []
        deltas = 0
        for message in session.outbox.drain():
            for line in message.split(b"\n"):
                pub = json.loads(line)["push"]["pub"]
                where = (json.loads(line)["push"]["channel"], pub.get("key", ""))
                raw = pub["data"].encode()
                held[where] = apply_delta(held[where], raw) if pub.get("delta") else raw
                deltas += bool(pub.get("delta"))
                got.append((*where, held[where]))
        return sent, got, deltas
    finally:
        await session.finish()


@examples(0.25)
@given(delta_publishes)
def test_fossil_delta_subscribers_rebuild_every_publication(
    served: Served, publishes: list[tuple[tuple[str, str], Any, bool]]
) -> None:
    """API publishes with and without ``delta`` to a stream and a map channel: a JSON
    subscriber that negotiated fossil rebuilds every payload byte for byte (with the
    official Python SDK's delta decoder)."""
    with ErrorRecords() as errors:
        sent, got, deltas = served.portal.call(publish_to_delta_subscriber, served.node, publishes)
    errors.check()
    event("deltas pushed" if deltas else "no delta pushed")
    assert got == sent


POLL_KEYS = ["k1", "k2"]
poll_publishes = st.lists(
    st.one_of(
        poll_valid := REQUESTS["shared_poll_publish"].map(lambda r: {**r, "channel": "poll:s"}),
        poll_valid.map(lambda r: {**r, "key": r["key"] if r["key"] in POLL_KEYS else "k1"}),
        mutated(poll_valid, KEYS),
    ),
    min_size=1,
    max_size=6,
)


async def publish_to_poll_subscriber(
    node: Node, requests: list[Any]
) -> tuple[list[tuple[str, int, Any]], list[Any]]:
    """(pushes ``(key, version, data)`` a client tracking k1 and k2 of poll:s got, with
    None for an unsubscribe; the API's answers)."""
    session = node.create_session(TransportInfo())
    await session.handle_frame(dump({"id": 1, "connect": {"token": TOKEN}}))
    await session.handle_frame(dump({"id": 2, "subscribe": {"channel": "poll:s", "type": 4}}))
    signature = make_signature(POLL_SECRET, "u1", "poll:s", POLL_KEYS, ttl=3600)
    batch = {"signature": signature, "items": [{"key": k} for k in POLL_KEYS]}
    track = {"channel": "poll:s", "type": 1, "track": [batch]}
    await session.handle_frame(dump({"id": 3, "sub_refresh": track}))
    answers = []
    transport = httpx.ASGITransport(app=node.asgi_app())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for req in requests:
                response = await client.post(
                    "/api/shared_poll_publish", content=dump(req), headers=AUTH
                )
                answers.append(response.json() if response.status_code == 200 else None)
        await anyio.sleep(0.02)  # the pushes of the last publish
        pushes: list[Any] = []
        for message in session.outbox.drain():
            for line in message.split(b"\n"):
                reply = json.loads(line)
                assert "error" not in reply, reply
                push = reply.get("push", {})
                if "unsubscribe" in push:
                    pushes.append(None)
                elif "pub" in push:
                    pub = push["pub"]
                    pushes.append((pub["key"], pub.get("version", 0), pub.get("data")))
        return pushes, answers
    finally:
        await session.finish()


@examples(0.25)
@given(poll_publishes)
def test_shared_poll_versions_only_grow(served: Served, requests: list[Any]) -> None:
    """Whatever ``shared_poll_publish`` is sent, a tracking client sees each key's
    versions grow (until a publisher epoch change unsubscribes it: 2500), only its keys,
    and every accepted publish newer than what it holds."""
    with ErrorRecords() as errors:
        pushes, answers = served.portal.call(publish_to_poll_subscriber, served.node, requests)
    errors.check()
    held: dict[str, int] = {}
    for push in pushes:
        if push is None:
            held.clear()
            continue
        key, version, _data = push
        assert key in POLL_KEYS and version > held.get(key, 0), (push, pushes)
        held[key] = version
    for answer in answers:
        if answer is not None:
            check_result("shared_poll_publish", answer)
    if None not in pushes:
        for req, answer in zip(requests, answers, strict=True):
            if answer == {"result": {}} and req.get("key") in POLL_KEYS:
                assert held.get(req["key"], 0) >= req.get("version", 0), (req, pushes)
