"""Check the gRPC servers with stubs generated from Centrifugo's own ``.proto`` files.

Not a pytest module (it needs a Centrifugo checkout and grpcio-tools, which CI has
neither of): a maintainer's check after Centrifugo changes its schemas. It compiles
``internal/apiproto/api.proto`` and ``internal/unigrpc/unistream/unistream.proto`` of the
given checkout into a temporary directory, starts a node with ``grpc_api`` and
``uni_grpc`` on, and runs a client made of those stubs in a separate process (their
message names are ours, so both cannot share one protobuf descriptor pool):

    python tests/interop/upstream_grpc_check.py ~/src/centrifugo [python-with-grpc-tools]

The client connects a Consume stream, publishes through the API, reads the publication
from the stream, publishes to a map and reads its state, runs a batch (history, a PRO
command, presence, map stats) and calls a PRO method;
the script exits 1 with the client's output when any expectation fails.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio

from centrifuge_asgi import Node, connection_token

CLIENT = """
import sys
import grpc
import api_pb2, api_pb2_grpc, unistream_pb2, unistream_pb2_grpc

api_port, uni_port, token = sys.argv[1:4]
key = (("authorization", "apikey k"),)
api = api_pb2_grpc.CentrifugoApiStub(grpc.insecure_channel(f"127.0.0.1:{api_port}"))
uni = unistream_pb2_grpc.CentrifugoUniStreamStub(grpc.insecure_channel(f"127.0.0.1:{uni_port}"))
stream = uni.Consume(unistream_pb2.ConnectRequest(token=token))
assert "news:x" in next(stream).connect.subs
reply = api.Publish(api_pb2.PublishRequest(channel="news:x", data=b'{"a":1}'), metadata=key)
assert reply.result.offset == 1, reply
pushed = next(stream)
assert (pushed.channel, pushed.pub.data) == ("news:x", b'{"a":1}'), pushed
mp = api.MapPublish(
    api_pb2.MapPublishRequest(channel="board:x", key="k", data=b'{"b":1}', tags={"t": "v"}),
    metadata=key,
)
assert (mp.result.offset, mp.result.suppressed) == (1, False), mp
state = api.MapReadState(api_pb2.MapReadStateRequest(channel="board:x", limit=-1), metadata=key)
entries = [(e.key, e.data, dict(e.tags), e.offset) for e in state.result.entries]
assert entries == [("k", b'{"b":1}', {"t": "v"}, 1)], state
batch = api.Batch(api_pb2.BatchRequest(commands=[
    api_pb2.Command(history=api_pb2.HistoryRequest(channel="news:x", limit=-1)),
    api_pb2.Command(connections=api_pb2.ConnectionsRequest(user="x")),
    api_pb2.Command(presence=api_pb2.PresenceRequest(channel="news:x")),
    api_pb2.Command(map_stats=api_pb2.MapStatsRequest(channel="board:x")),
]), metadata=key)
history, pro, presence, map_stats = batch.replies
assert history.history.publications[0].data == b'{"a":1}', batch
assert pro.error.code == 104, batch
assert [i.user for i in presence.presence.presence.values()] == ["alice"], batch
assert map_stats.map_stats.num_keys == 1, batch
try:
    api.Connections(api_pb2.ConnectionsRequest(), metadata=key)
    raise AssertionError("a PRO method answered")
except grpc.RpcError as exc:
    assert exc.code() is grpc.StatusCode.UNIMPLEMENTED, exc
print("ok")
"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def compile_protos(checkout: Path, out: Path, python: str) -> None:
    for proto in ("internal/apiproto/api.proto", "internal/unigrpc/unistream/unistream.proto"):
        shutil.copy(checkout / proto, out)
    cmd = [python, "-m", "grpc_tools.protoc", "-I", str(out), f"--python_out={out}"]
    cmd += [f"--grpc_python_out={out}", str(out / "api.proto"), str(out / "unistream.proto")]
    subprocess.run(cmd, check=True)


async def check(out: Path) -> str:
    api_port, uni_port = _port(), _port()
    config = {
        "client": {"token": {"hmac_secret_key": "secret"}},
        "channel": {
            "namespaces": [
                {"name": "news", "presence": True, "history_size": 10, "history_ttl": "60s"},
                {"name": "board", "subscription_type": "map", "map": {"mode": "persistent"}},
            ]
        },
        "grpc_api": {"enabled": True, "address": "127.0.0.1", "port": api_port, "key": "k"},
        "uni_grpc": {"enabled": True, "address": "127.0.0.1", "port": uni_port},
    }
    token = connection_token("alice", "secret", channels=["news:x"])
    (out / "client.py").write_text(CLIENT)
    async with Node(config):
        done = await anyio.run_process(
            [sys.executable, "client.py", str(api_port), str(uni_port), token],
            cwd=out,
            check=False,
        )
    return (done.stdout + done.stderr).decode()


def main() -> None:
    checkout = Path(sys.argv[1])
    python = sys.argv[2] if len(sys.argv) > 2 else sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        compile_protos(checkout, Path(tmp), python)
        output = anyio.run(check, Path(tmp))
    print(output.strip())
    sys.exit(0 if output.strip().endswith("ok") else 1)


if __name__ == "__main__":
    main()
