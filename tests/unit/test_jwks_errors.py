"""What a client is told when the JWKS key set cannot be had: a temporary error, not 3500.

An unavailable key set says nothing about the token, so connect, refresh, subscribe and
sub_refresh answer it with error 100 (``temporary``), which the SDKs retry; a
unidirectional connect is closed with 3004 (reconnect). Only a token that is really
invalid gets 3500 / 103.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from centrifuge_asgi import Node
from centrifuge_asgi.auth import JWKSUnavailable, TokenInvalid
from centrifuge_asgi.protocol.messages import ConnectRequest
from centrifuge_asgi.session import Session, TransportInfo
from tests.interop.serve_process import free_port
from tests.interop.support import make_config, sub_token, token

pytestmark = pytest.mark.anyio

TEMPORARY = {"code": 100, "message": "internal server error", "temporary": True}


def closed_port_url() -> str:
    """A JWKS URL nothing listens on: every fetch is refused."""
    return f"http://127.0.0.1:{free_port()}/jwks"


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture
async def jwks_node() -> AsyncIterator[Node]:
    """A node whose connection and subscription tokens are checked against a dead JWKS."""
    async with Node(make_config(token={"jwks_public_endpoint": closed_port_url()})) as n:
        yield n
        for s in list(n.registry.sessions()):
            await s.finish()


def replies(session: Session) -> list[dict[str, Any]]:
    return [json.loads(m) for m in session.outbox.drain()]


def frame(*commands: dict[str, Any]) -> bytes:
    return "\n".join(json.dumps(c) for c in commands).encode()


async def unavailable(*args: Any) -> NoReturn:
    raise JWKSUnavailable("JWKS fetch failed: connection refused")


async def invalid(*args: Any) -> NoReturn:
    raise TokenInvalid("invalid token signature")


async def test_connect_with_the_key_set_down_is_a_temporary_error(
    jwks_node: Node, rsa_pem: bytes
) -> None:
    rs_token = jwt.encode({"sub": "alice"}, rsa_pem, algorithm="RS256", headers={"kid": "k1"})
    s = jwks_node.create_session(TransportInfo())
    await s.handle_frame(frame({"id": 1, "connect": {"token": rs_token}}))
    [reply] = replies(s)
    assert reply == {"id": 1, "error": TEMPORARY}
    assert s.close_code == 0  # not 3500: the SDK closes the transport and reconnects


async def test_unidirectional_connect_with_the_key_set_down_reconnects(
    jwks_node: Node, rsa_pem: bytes
) -> None:
    rs_token = jwt.encode({"sub": "alice"}, rsa_pem, algorithm="RS256", headers={"kid": "k1"})
    s = jwks_node.create_session(TransportInfo(name="sse", unidirectional=True))
    assert await s.connect_unidirectional(ConnectRequest(token=rs_token)) == 100
    assert (s.close_code, s.close_reason) == (3004, "internal server error")


async def test_an_invalid_token_still_disconnects_3500(node: Node) -> None:
    node.token_verifier.verify_connect = invalid  # type: ignore[method-assign]
    s = node.create_session(TransportInfo())
    await s.handle_frame(frame({"id": 1, "connect": {"token": token("alice")}}))
    assert (s.close_code, s.close_reason) == (3500, "invalid token")


async def test_refresh_with_the_key_set_down_is_a_temporary_error(node: Node) -> None:
    s = node.create_session(TransportInfo())
    await s.handle_frame(frame({"id": 1, "connect": {"token": token("alice", ttl=100)}}))
    [reply] = replies(s)
    assert reply["connect"]["expires"] is True
    node.token_verifier.verify_connect = unavailable  # type: ignore[method-assign]
    await s.handle_frame(frame({"id": 2, "refresh": {"token": token("alice", ttl=200)}}))
    assert replies(s) == [{"id": 2, "error": TEMPORARY}]
    assert s.close_code == 0  # the SDK retries the refresh later


async def test_subscribe_with_the_key_set_down_is_a_temporary_error(node: Node) -> None:
    s = node.create_session(TransportInfo())
    await s.handle_frame(frame({"id": 1, "connect": {"token": token("alice")}}))
    replies(s)
    node.subscription_token_verifier.verify_subscribe = unavailable  # type: ignore[method-assign]
    sub = sub_token("alice", "secret:x")
    await s.handle_frame(frame({"id": 2, "subscribe": {"channel": "secret:x", "token": sub}}))
    assert replies(s) == [{"id": 2, "error": TEMPORARY}]  # not 103: the SDK resubscribes
    assert "secret:x" not in s.subs and s.close_code == 0


async def test_sub_refresh_with_the_key_set_down_is_a_temporary_error(node: Node) -> None:
    s = node.create_session(TransportInfo())
    await s.handle_frame(frame({"id": 1, "connect": {"token": token("alice")}}))
    sub = sub_token("alice", "secret:x", ttl=100)
    await s.handle_frame(frame({"id": 2, "subscribe": {"channel": "secret:x", "token": sub}}))
    out = replies(s)
    assert out[-1]["subscribe"]["expires"] is True
    node.subscription_token_verifier.verify_subscribe = unavailable  # type: ignore[method-assign]
    fresh = sub_token("alice", "secret:x", ttl=200)
    await s.handle_frame(frame({"id": 3, "sub_refresh": {"channel": "secret:x", "token": fresh}}))
    assert replies(s) == [{"id": 3, "error": TEMPORARY}]
    assert s.close_code == 0 and "secret:x" in s.subs  # the SDK retries the sub refresh
    # a really invalid refresh token still disconnects
    node.subscription_token_verifier.verify_subscribe = invalid  # type: ignore[method-assign]
    await s.handle_frame(frame({"id": 4, "sub_refresh": {"channel": "secret:x", "token": fresh}}))
    assert (s.close_code, s.close_reason) == (3500, "invalid token")
