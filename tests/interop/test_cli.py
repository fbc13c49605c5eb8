"""The ``centrifuge-asgi`` command line, run as a real process."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import websockets

from .serve_process import CLI, ServeProcesses, terminate

pytestmark = pytest.mark.anyio


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=30, env=env, check=False
    )


@pytest.fixture
def serve() -> Iterator[Any]:
    processes = ServeProcesses()
    yield processes.start
    processes.stop_all()


async def connect(url: str, token: str) -> Any:
    ws = await websockets.connect(url, open_timeout=5)
    await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
    with anyio.fail_after(5):
        reply = json.loads(await ws.recv())
    assert reply["connect"]["client"], reply
    return ws


async def test_genconfig_checkconfig_gentoken_serve_and_graceful_stop(
    tmp_path: Path, serve: Any
) -> None:
    config = tmp_path / "config.json"
    assert cli("genconfig", "-c", str(config)).returncode == 0
    data = json.loads(config.read_text())
    assert len(data["client"]["token"]["hmac_secret_key"]) >= 32
    assert cli("genconfig", "-c", str(config)).returncode == 1  # never overwrites silently
    check = cli("checkconfig", "-c", str(config))
    assert check.returncode == 0 and "valid" in check.stdout

    token = cli("gentoken", "-c", str(config), "-u", "42").stdout.strip()
    verified = cli("checktoken", "-c", str(config), token)
    assert verified.returncode == 0 and "'42'" in verified.stdout

    served = serve(config)
    ws = await connect(served.ws_url(), token)
    # gensubtoken: a private channel needs a subscription token for that user and channel
    sub = cli("gensubtoken", "-c", str(config), "-u", "42", "-s", "$room").stdout.strip()
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "$room", "token": sub}}))
    with anyio.fail_after(5):
        reply = json.loads(await ws.recv())
    assert reply["id"] == 2 and reply["subscribe"]["expires"] is True  # 7-day default ttl
    served.proc.send_signal(signal.SIGINT)
    with anyio.fail_after(10):
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (3001, "shutdown")
    # uvicorn re-raises the signal once it has shut down cleanly
    assert served.proc.wait(10) in (0, -signal.SIGINT)


@pytest.mark.parametrize("fmt", ["json", "toml", "yaml"])
async def test_serve_reads_every_config_format(tmp_path: Path, serve: Any, fmt: str) -> None:
    texts = {
        "json": '{"client": {"token": {"hmac_secret_key": "s3cret"}}, "health": {"enabled": true}}',
        "toml": '[client.token]\nhmac_secret_key = "s3cret"\n[health]\nenabled = true\n',
        "yaml": "client:\n  token:\n    hmac_secret_key: s3cret\nhealth:\n  enabled: true\n",
    }
    config = tmp_path / f"config.{fmt}"
    config.write_text(texts[fmt])
    token = cli("gentoken", "-c", str(config), "-u", "7").stdout.strip()
    served = serve(config)
    ws = await connect(served.ws_url(), token)
    await ws.close()


async def test_env_overrides_the_file(tmp_path: Path, serve: Any) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"client": {"token": {"hmac_secret_key": "from-file"}}}')
    env = {"CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY": "from-env", "CENTRIFUGO_HEALTH_ENABLED": "1"}
    from centrifuge_asgi import connection_token

    served = serve(config, env=env)
    ws = await connect(served.ws_url(), connection_token("1", "from-env"))
    await ws.close()


def test_broken_config_names_the_key_and_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text('{"client": {"ping_interval": "soon"}}')
    result = cli("checkconfig", "-c", str(config))
    assert result.returncode == 1
    assert "client.ping_interval" in result.stderr and "bad.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = cli("version")
    assert result.returncode == 0 and result.stdout.startswith("centrifuge-asgi ")


def test_gentoken_token_is_accepted_by_centrifuge_js(
    tmp_path: Path, serve: Any, run_js: Any
) -> None:
    config = tmp_path / "config.json"
    assert cli("genconfig", "-c", str(config)).returncode == 0
    token = cli("gentoken", "-c", str(config), "-u", "js-user", "-t", "600").stdout.strip()
    served = serve(config)
    result = run_js("sdk_connect.mjs", "valid", served.ws_url(), token, timeout=15)
    assert result["client"] and result["errors"] == []


MINIMAL_CONFIG = '{"client": {"token": {"hmac_secret_key": "k"}}, "health": {"enabled": true}}'


async def raw_handshake(port: int, subprotocol_headers: list[str]) -> bytes:
    """Send a WebSocket upgrade with the given ``Sec-WebSocket-Protocol`` values; return the
    status line of the answer."""
    lines = [
        "GET /connection/websocket HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *(f"Sec-WebSocket-Protocol: {value}" for value in subprotocol_headers),
    ]
    with anyio.fail_after(5):
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            await stream.send(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
    return head


@pytest.mark.parametrize(
    ("headers", "agreed"),
    [([""], None), (["", "centrifuge-protobuf"], b"centrifuge-protobuf"), (["  "], None)],
)
async def test_serve_accepts_an_empty_subprotocol_header(
    tmp_path: Path, serve: Any, headers: list[str], agreed: bytes | None
) -> None:
    # centrifuge-python up to 0.6 and its default branch open JSON connections with
    # subprotocols=[], which sends "Sec-WebSocket-Protocol:" with no value; Centrifugo
    # reads it as no subprotocol.
    config = tmp_path / "config.json"
    config.write_text(MINIMAL_CONFIG)
    served = serve(config)
    head = await raw_handshake(served.port, headers)
    assert head.startswith(b"HTTP/1.1 101"), head
    answered = [
        line.split(b":", 1)[1].strip()
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"sec-websocket-protocol:")
    ]
    assert answered == ([agreed] if agreed else [])


async def test_serve_talks_to_a_client_that_sends_an_empty_subprotocol_header(
    tmp_path: Path, serve: Any
) -> None:
    from centrifuge_asgi import connection_token

    config = tmp_path / "config.json"
    config.write_text(MINIMAL_CONFIG)
    served = serve(config)
    ws = await websockets.connect(
        served.ws_url(), open_timeout=5, additional_headers={"Sec-WebSocket-Protocol": ""}
    )
    await ws.send(json.dumps({"id": 1, "connect": {"token": connection_token("u", "k")}}))
    with anyio.fail_after(5):
        reply = json.loads(await ws.recv())
    assert reply["connect"]["client"], reply
    await ws.close()


def test_checkconfig_prints_each_warning_once(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"bogus": 1, "client": {"token": {"hmac_secret_key": "k"}}}')
    result = cli("checkconfig", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("unknown config key 'bogus'") == 1, result.stderr


# The environment list the official SDKs' CI gives Centrifugo (a docker-compose
# ``environment:`` list), with named namespaces in the space-separated form.
SDK_CI_ENV = {
    "CENTRIFUGO_CLIENT_INSECURE": "true",
    "CENTRIFUGO_HTTP_STREAM_ENABLED": "true",
    "CENTRIFUGO_SSE_ENABLED": "true",
    "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_PRESENCE": "true",
    "CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY": "secret",
    "CENTRIFUGO_HTTP_API_KEY": "api-key",
    "CENTRIFUGO_HEALTH_ENABLED": "true",
    "CENTRIFUGO_CHANNEL_NAMESPACES": "smallhistory chat",
    "CENTRIFUGO_CHANNEL_NAMESPACES_SMALLHISTORY_HISTORY_SIZE": "2",
    "CENTRIFUGO_CHANNEL_NAMESPACES_SMALLHISTORY_HISTORY_TTL": "300s",
    "CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_PRESENCE": "true",
}


async def read_reply(ws: Any, command_id: int) -> dict[str, Any]:
    """The reply to ``command_id`` (a frame may hold several newline-separated messages)."""
    with anyio.fail_after(5):
        while True:
            for line in (await ws.recv()).splitlines():
                message: dict[str, Any] = json.loads(line)
                if message.get("id") == command_id:
                    return message


async def test_serve_configured_only_by_environment(tmp_path: Path, serve: Any) -> None:
    # no config.json in tmp_path: defaults plus the environment
    served = serve(None, env=SDK_CI_ENV, cwd=tmp_path)
    port, proc = served.port, served.proc
    base = f"http://127.0.0.1:{port}"
    try:
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket", open_timeout=5)
        await ws.send(json.dumps({"id": 1, "connect": {}}))  # insecure: no token needed
        assert "client" in (await read_reply(ws, 1))["connect"]
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "chat:room"}}))
        assert "error" not in await read_reply(ws, 2)
        await ws.send(json.dumps({"id": 3, "presence": {"channel": "chat:room"}}))
        presence = await read_reply(ws, 3)
        assert len(presence["presence"]["presence"]) == 1, presence  # chat: presence on
        await ws.close()
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": "api-key"}) as api:
            for n in range(3):
                r = await api.post("/api/publish", json={"channel": "smallhistory:x", "data": n})
                assert r.json() == {"result": {}} or "offset" in r.json()["result"], r.text
            r = await api.post("/api/history", json={"channel": "smallhistory:x", "limit": -1})
        pubs = r.json()["result"]["publications"]
        assert [p["data"] for p in pubs] == [1, 2], r.text  # history_size 2 from the env
    finally:
        out = terminate(proc, 10)
    assert "unknown environment variable" not in out, out
    assert "Traceback" not in out, out


@pytest.mark.parametrize("compression", [False, True])
async def test_serve_offers_compression_only_when_configured(
    tmp_path: Path, serve: Any, compression: bool
) -> None:
    # Centrifugo answers permessage-deflate only with websocket.compression on; uvicorn's
    # default would always agree to it.
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "client": {"token": {"hmac_secret_key": "k"}},
                "health": {"enabled": True},
                "websocket": {"compression": compression},
            }
        )
    )
    served = serve(config)
    ws = await websockets.connect(served.ws_url(), open_timeout=5, compression="deflate")
    agreed = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
    await ws.close()
    assert ("permessage-deflate" in agreed) is compression, agreed
