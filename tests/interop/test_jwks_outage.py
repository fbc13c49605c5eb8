"""A JWKS outage with the official SDKs against a live uvicorn: the clients keep
reconnecting (connect error 100, temporary) and connect once the key set is back.

Before, an unavailable key set was an invalid token: disconnect 3500, and the SDKs stopped.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import anyio
import jwt
import pytest
from centrifuge import (
    Client,
    ClientEventHandler,
    ClientState,
    ConnectedContext,
    DisconnectedContext,
    ErrorContext,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from centrifuge_asgi.auth import TokenVerifier
from centrifuge_asgi.config import TokenConfig
from centrifuge_asgi.node import Node
from tests.interop.serve_process import free_port

from .support import WS_PATH, make_config, make_node

if TYPE_CHECKING:
    from conftest import ARunJs, LiveServer, LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

TIMEOUT = 10.0
KID = "key-1"


class JwksEndpoint:
    """A JWKS server on a fixed port that is down (nothing listens) until ``start()``."""

    def __init__(self, document: bytes) -> None:
        self.port = free_port()
        self.document = document
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    def start(self) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(endpoint.document)))
                self.end_headers()
                self.wfile.write(endpoint.document)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_endpoint(rsa_key: rsa.RSAPrivateKey) -> Iterator[JwksEndpoint]:
    jwk = {**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": KID}
    endpoint = JwksEndpoint(json.dumps({"keys": [jwk]}).encode())
    yield endpoint
    endpoint.stop()


def rs_token(key: rsa.RSAPrivateKey, user: str) -> str:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return jwt.encode({"sub": user}, pem, algorithm="RS256", headers={"kid": KID})


def serve(live_server: LiveServerFactory, endpoint: JwksEndpoint) -> tuple[Node, LiveServer]:
    node = make_node(make_config(token={"jwks_public_endpoint": endpoint.url}))
    # a short refetch interval, so that the test does not wait 5 s for a retry
    node.token_verifier = TokenVerifier(
        TokenConfig(jwks_public_endpoint=endpoint.url), jwks_refetch_interval=0.2
    )
    return node, live_server(node.asgi_app())


class Events(ClientEventHandler):
    def __init__(self) -> None:
        self.errors: list[ErrorContext] = []
        self.disconnects: list[DisconnectedContext] = []
        self.connected: list[ConnectedContext] = []
        self.failed_thrice = anyio.Event()  # three errors, or a disconnect

    async def on_error(self, ctx: ErrorContext) -> None:
        self.errors.append(ctx)
        if len(self.errors) >= 3:
            self.failed_thrice.set()

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnects.append(ctx)
        self.failed_thrice.set()

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.connected.append(ctx)


async def test_python_sdk_keeps_reconnecting_through_a_jwks_outage(
    live_server: LiveServerFactory, jwks_endpoint: JwksEndpoint, rsa_key: rsa.RSAPrivateKey
) -> None:
    node, srv = serve(live_server, jwks_endpoint)
    events = Events()
    client = Client(
        srv.ws_url(WS_PATH),
        events=events,
        token=rs_token(rsa_key, "alice"),
        proxy=None,
        timeout=TIMEOUT,
        min_reconnect_delay=0.05,
        max_reconnect_delay=0.3,
    )
    try:
        await client.connect()
        with anyio.fail_after(TIMEOUT):
            await events.failed_thrice.wait()
        assert events.disconnects == []  # before: (3500, "invalid token"), and no retry
        assert client.state is ClientState.CONNECTING
        codes = {(e.error.code, e.error.temporary) for e in events.errors}  # type: ignore[attr-defined]
        assert codes == {(100, True)}
        jwks_endpoint.start()  # the key set is back
        await client.ready(timeout=TIMEOUT)
        assert client.state is ClientState.CONNECTED
        assert events.disconnects == []

        async def users() -> list[str]:
            return [s.user for s in node.registry.sessions()]

        assert await srv.acall(users()) == ["alice"]
        assert jwks_endpoint.requests == 1
    finally:
        with anyio.move_on_after(TIMEOUT):
            await client.disconnect()


async def test_js_sdk_keeps_reconnecting_through_a_jwks_outage(
    live_server: LiveServerFactory,
    jwks_endpoint: JwksEndpoint,
    rsa_key: rsa.RSAPrivateKey,
    arun_js: ARunJs,
) -> None:
    _, srv = serve(live_server, jwks_endpoint)
    result: dict[str, Any] = {}

    async def run() -> None:
        # "valid": connect within 8 s, failing on any `disconnected` event
        token = rs_token(rsa_key, "bob")
        result.update(await arun_js("sdk_connect.mjs", "valid", srv.ws_url(WS_PATH), token))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.sleep(1.5)  # the key set is down while the SDK tries to connect
        jwks_endpoint.start()
    assert result["client"]
    assert result["errors"]  # it did fail first ...
    assert {(e["type"], e["code"]) for e in result["errors"]} == {("connect", 100)}
    assert jwks_endpoint.requests == 1  # ... and connected once the key set was back
