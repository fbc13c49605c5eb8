"""Unit tests for centrifuge_asgi.auth (JWT verification, client protocol §6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from centrifuge_asgi.auth import (
    JWKSUnavailable,
    ServerSubscription,
    SubscriptionOverride,
    TokenExpired,
    TokenInvalid,
    TokenVerifier,
    connection_token,
    encode_token,
    subscription_token,
)
from centrifuge_asgi.config import TokenConfig
from centrifuge_asgi.errors import CentrifugeError, ConfigError

pytestmark = pytest.mark.anyio

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
SECRET = "s" * 64  # long enough that pyjwt does not warn for HS512
OTHER_SECRET = "o" * 64


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- keys ----------------------------------------------------------------------------------


@dataclass
class Keys:
    rsa: rsa.RSAPrivateKey
    ec: dict[str, ec.EllipticCurvePrivateKey]
    ed: ed25519.Ed25519PrivateKey

    @staticmethod
    def priv_pem(key: PrivateKey) -> str:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    @staticmethod
    def pub_pem(key: PrivateKey) -> str:
        return (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec={
            "ES256": ec.generate_private_key(ec.SECP256R1()),
            "ES384": ec.generate_private_key(ec.SECP384R1()),
            "ES512": ec.generate_private_key(ec.SECP521R1()),
        },
        ed=ed25519.Ed25519PrivateKey.generate(),
    )


# -- helpers -------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None) -> str:
    """Hand-made JWS (for things pyjwt refuses to sign, e.g. PEM text as an HMAC key)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    sig = b""
    if hmac_key is not None:
        sig = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def jws(header: bytes, claims: bytes, signature: str = "") -> str:
    return f"{b64url(header)}.{b64url(claims)}.{signature}"


def hs(claims: dict[str, Any], secret: str = SECRET, alg: str = "HS256", **headers: Any) -> str:
    return jwt.encode(claims, secret, algorithm=alg, headers=headers or None)


def future(seconds: int = 3600) -> int:
    return int(time.time()) + seconds


def verifier(**cfg: Any) -> TokenVerifier:
    return TokenVerifier(TokenConfig(**cfg))


HS_VERIFIER_CFG: dict[str, Any] = {"hmac_secret_key": SECRET}


# -- algorithms ----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_algorithms_accepted(alg: str) -> None:
    tok = await verifier(**HS_VERIFIER_CFG).verify_connect(hs({"sub": "42"}, alg=alg))
    assert tok.user == "42"
    assert tok.expire_at is None


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
async def test_rsa_algorithms_accepted(keys: Keys, alg: str) -> None:
    token = jwt.encode({"sub": "u"}, Keys.priv_pem(keys.rsa), algorithm=alg)
    tok = await verifier(rsa_public_key=Keys.pub_pem(keys.rsa)).verify_connect(token)
    assert tok.user == "u"


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
async def test_ecdsa_algorithms_accepted(keys: Keys, alg: str) -> None:
    key = keys.ec[alg]
    token = jwt.encode({"sub": "u"}, Keys.priv_pem(key), algorithm=alg)
    tok = await verifier(ecdsa_public_key=Keys.pub_pem(key)).verify_connect(token)
    assert tok.user == "u"


async def test_ecdsa_curve_must_match_algorithm(keys: Keys) -> None:
    token = jwt.encode({"sub": "u"}, Keys.priv_pem(keys.ec["ES384"]), algorithm="ES384")
    v = verifier(ecdsa_public_key=Keys.pub_pem(keys.ec["ES256"]))
    with pytest.raises(TokenInvalid):
        await v.verify_connect(token)


async def test_alg_none_rejected() -> None:
    token = raw_token({"alg": "none", "typ": "JWT"}, {"sub": "42"}, None)
    with pytest.raises(TokenInvalid):
        await verifier(**HS_VERIFIER_CFG).verify_connect(token)


async def test_unknown_alg_rejected(keys: Keys) -> None:
    token = jwt.encode({"sub": "u"}, Keys.priv_pem(keys.rsa), algorithm="PS256")
    with pytest.raises(TokenInvalid, match="unsupported"):
        await verifier(rsa_public_key=Keys.pub_pem(keys.rsa)).verify_connect(token)


@pytest.mark.parametrize("with_hmac", [False, True])
async def test_hs_token_signed_with_rsa_public_pem_rejected(keys: Keys, with_hmac: bool) -> None:
    pem = Keys.pub_pem(keys.rsa)
    token = raw_token({"alg": "HS256", "typ": "JWT"}, {"sub": "admin"}, pem.encode())
    cfg: dict[str, Any] = {"rsa_public_key": pem}
    if with_hmac:
        cfg["hmac_secret_key"] = SECRET
    with pytest.raises(TokenInvalid):
        await verifier(**cfg).verify_connect(token)


async def test_family_without_configured_key_rejected(keys: Keys) -> None:
    rs = jwt.encode({"sub": "u"}, Keys.priv_pem(keys.rsa), algorithm="RS256")
    es = jwt.encode({"sub": "u"}, Keys.priv_pem(keys.ec["ES256"]), algorithm="ES256")
    ed = jwt.encode({"sub": "u"}, Keys.priv_pem(keys.ed), algorithm="EdDSA")
    with pytest.raises(TokenInvalid, match="not enabled"):
        await verifier(**HS_VERIFIER_CFG).verify_connect(rs)
    with pytest.raises(TokenInvalid, match="not enabled"):
        await verifier(rsa_public_key=Keys.pub_pem(keys.rsa)).verify_connect(es)
    with pytest.raises(TokenInvalid, match="not enabled"):
        await verifier(rsa_public_key=Keys.pub_pem(keys.rsa)).verify_connect(hs({"sub": "u"}))
    with pytest.raises(TokenInvalid, match="not enabled"):  # EdDSA only via JWKS
        await verifier(**HS_VERIFIER_CFG).verify_connect(ed)


async def test_wrong_secret_rejected() -> None:
    with pytest.raises(TokenInvalid, match="signature"):
        await verifier(**HS_VERIFIER_CFG).verify_connect(hs({"sub": "1"}, OTHER_SECRET))


# -- time ----------------------------------------------------------------------------------


async def test_expired_token() -> None:
    token = hs({"sub": "1", "exp": int(time.time()) - 1})
    with pytest.raises(TokenExpired):
        await verifier(**HS_VERIFIER_CFG).verify_connect(token)


async def test_nbf_in_future_is_expired_and_past_nbf_ok() -> None:
    v = verifier(**HS_VERIFIER_CFG)
    with pytest.raises(TokenExpired):
        await v.verify_connect(hs({"sub": "1", "nbf": future(60)}))
    assert (await v.verify_connect(hs({"sub": "1", "nbf": future(-60)}))).user == "1"


async def test_forged_signature_on_expired_token_is_invalid() -> None:
    token = hs({"sub": "1", "exp": int(time.time()) - 100}, OTHER_SECRET)
    with pytest.raises(TokenInvalid):
        await verifier(**HS_VERIFIER_CFG).verify_connect(token)


async def test_insecure_skip_signature_still_checks_time() -> None:
    v = TokenVerifier(TokenConfig(**HS_VERIFIER_CFG), insecure_skip_signature=True)
    assert (await v.verify_connect(hs({"sub": "x"}, OTHER_SECRET))).user == "x"
    with pytest.raises(TokenExpired):
        await v.verify_connect(hs({"sub": "x", "exp": int(time.time()) - 5}, OTHER_SECRET))


async def test_exceptions_are_centrifuge_errors() -> None:
    assert issubclass(TokenInvalid, CentrifugeError)
    assert issubclass(TokenExpired, CentrifugeError)


# -- audience / issuer ---------------------------------------------------------------------


async def test_audience_and_issuer_exact() -> None:
    v = verifier(hmac_secret_key=SECRET, audience="app", issuer="auth")
    ok = await v.verify_connect(hs({"sub": "1", "aud": "app", "iss": "auth"}))
    assert ok.user == "1"
    listed = await v.verify_connect(hs({"sub": "1", "aud": ["x", "app"], "iss": "auth"}))
    assert listed.user == "1"
    for claims in (
        {"aud": "other", "iss": "auth"},
        {"aud": ["x", "y"], "iss": "auth"},
        {"aud": "app", "iss": "evil"},
        {"iss": "auth"},
        {"aud": "app"},
        {"aud": 5, "iss": "auth"},
    ):
        with pytest.raises(TokenInvalid):
            await v.verify_connect(hs({"sub": "1", **claims}))


async def test_audience_issuer_not_checked_when_unconfigured() -> None:
    tok = await verifier(**HS_VERIFIER_CFG).verify_connect(
        hs({"sub": "1", "aud": "whatever", "iss": "anyone"})
    )
    assert tok.user == "1"


async def test_audience_and_issuer_regex_full_match() -> None:
    v = verifier(hmac_secret_key=SECRET, audience_regex=r"app-\d+", issuer_regex=r"auth\.(a|b)")
    ok = await v.verify_connect(hs({"sub": "1", "aud": ["zzz", "app-7"], "iss": "auth.b"}))
    assert ok.user == "1"
    for claims in (
        {"aud": "app-7x", "iss": "auth.a"},
        {"aud": "xapp-7", "iss": "auth.a"},
        {"aud": "app-7", "iss": "auth.c"},
    ):
        with pytest.raises(TokenInvalid):
            await v.verify_connect(hs({"sub": "1", **claims}))


# -- connection token claims ---------------------------------------------------------------


async def test_custom_user_id_claim() -> None:
    v = verifier(hmac_secret_key=SECRET, user_id_claim="user_id")
    assert (await v.verify_connect(hs({"sub": "no", "user_id": "yes"}))).user == "yes"
    assert (await v.verify_connect(hs({"sub": "no"}))).user == ""
    with pytest.raises(TokenInvalid):
        await v.verify_connect(hs({"user_id": 42}))


async def test_non_string_sub_invalid_and_missing_sub_anonymous() -> None:
    v = verifier(**HS_VERIFIER_CFG)
    with pytest.raises(TokenInvalid):
        await v.verify_connect(hs({"sub": 42}))
    assert (await v.verify_connect(hs({}))).user == ""


async def test_channel_claim_in_connection_token_invalid() -> None:
    with pytest.raises(TokenInvalid, match="channel"):
        await verifier(**HS_VERIFIER_CFG).verify_connect(hs({"sub": "1", "channel": "news"}))


async def test_expire_at_semantics() -> None:
    v = verifier(**HS_VERIFIER_CFG)
    exp, later = future(100), future(5000)
    assert (await v.verify_connect(hs({"exp": exp}))).expire_at == exp
    assert (await v.verify_connect(hs({"exp": exp, "expire_at": later}))).expire_at == later
    assert (await v.verify_connect(hs({"exp": exp, "expire_at": 0}))).expire_at is None
    assert (await v.verify_connect(hs({}))).expire_at is None
    assert (await v.verify_connect(hs({"expire_at": later}))).expire_at == later
    with pytest.raises(TokenInvalid):
        await v.verify_connect(hs({"expire_at": "soon"}))
    with pytest.raises(TokenExpired):  # expire_at does not rescue an expired exp
        await v.verify_connect(hs({"exp": int(time.time()) - 1, "expire_at": 0}))


async def test_info_and_b64info() -> None:
    v = verifier(**HS_VERIFIER_CFG)
    tok = await v.verify_connect(hs({"info": {"name": "Alice", "n": [1, 2]}, "meta": {"m": 1}}))
    assert json.loads(tok.info or b"") == {"name": "Alice", "n": [1, 2]}
    assert b" " not in (tok.info or b"")
    assert tok.meta == {"m": 1}
    b64 = base64.b64encode(b"\x00\xffbin").decode()
    tok = await v.verify_connect(hs({"info": {"x": 1}, "b64info": b64}))
    assert tok.info == b"\x00\xffbin"
    assert (await v.verify_connect(hs({}))).info is None
    with pytest.raises(TokenInvalid):
        await v.verify_connect(hs({"b64info": "not base64!"}))


async def test_channels_and_subs_merge_with_override() -> None:
    claims = {
        "sub": "1",
        "channels": ["a", "b"],
        "subs": {
            "b": {
                "info": {"k": "v"},
                "b64data": base64.b64encode(b"raw").decode(),
                "override": {
                    "presence": {"value": True},
                    "join_leave": {"value": False},
                    "force_recovery": {"value": True},
                },
            },
            "c": {"data": [1]},
        },
    }
    tok = await verifier(**HS_VERIFIER_CFG).verify_connect(hs(claims))
    assert tok.subs == [
        ServerSubscription("a", None, None, None),
        ServerSubscription(
            "b",
            info=b'{"k":"v"}',
            data=b"raw",
            override=SubscriptionOverride(
                presence=True,
                join_leave=False,
                force_push_join_leave=None,
                force_positioning=None,
                force_recovery=True,
            ),
        ),
        ServerSubscription("c", info=None, data=b"[1]", override=None),
    ]


@pytest.mark.parametrize(
    "claims",
    [
        {"channels": "news"},
        {"channels": ["ok", 1]},
        {"subs": ["a"]},
        {"subs": {"a": 1}},
        {"subs": {"a": {"override": {"presence": True}}}},
        {"subs": {"a": {"override": {"presence": {"value": "yes"}}}}},
        {"subs": {"a": {"b64info": 12}}},
        {"exp": "tomorrow"},
        {"nbf": [1]},
        {"iat": "now"},
        {"jti": 7},
        {"exp": True},
    ],
)
async def test_wrong_claim_types_invalid(claims: dict[str, Any]) -> None:
    with pytest.raises(TokenInvalid):
        await verifier(**HS_VERIFIER_CFG).verify_connect(hs({"sub": "1", **claims}))


# -- subscription tokens -------------------------------------------------------------------


async def test_subscription_token_fields() -> None:
    claims = {
        "sub": "42",
        "channel": "$private",
        "client": "cid",
        "exp": future(60),
        "info": {"role": "x"},
        "data": {"welcome": True},
        "override": {"force_positioning": {"value": True}},
    }
    tok = await verifier(**HS_VERIFIER_CFG).verify_subscribe(hs(claims))
    assert tok.user == "42"
    assert tok.channel == "$private"
    assert tok.client == "cid"
    assert tok.expire_at == claims["exp"]
    assert tok.info == b'{"role":"x"}'
    assert tok.data == b'{"welcome":true}'
    assert tok.override == SubscriptionOverride(force_positioning=True)


async def test_subscription_token_defaults_and_b64() -> None:
    data = base64.b64encode(b"\x01").decode()
    tok = await verifier(**HS_VERIFIER_CFG).verify_subscribe(
        hs({"sub": "1", "channel": "c", "expire_at": 0, "b64data": data})
    )
    assert (tok.client, tok.expire_at, tok.info, tok.data, tok.override) == (
        "",
        None,
        None,
        b"\x01",
        None,
    )


async def test_subscription_token_requires_channel() -> None:
    v = verifier(**HS_VERIFIER_CFG)
    for claims in ({"sub": "1"}, {"sub": "1", "channel": ""}, {"sub": "1", "channel": 3}):
        with pytest.raises(TokenInvalid):
            await v.verify_subscribe(hs(claims))


async def test_subscription_token_expired() -> None:
    token = hs({"sub": "1", "channel": "c", "exp": int(time.time()) - 1})
    with pytest.raises(TokenExpired):
        await verifier(**HS_VERIFIER_CFG).verify_subscribe(token)


# -- HMAC key rotation ---------------------------------------------------------------------


async def test_previous_hmac_key_rotation() -> None:
    old = hs({"sub": "1"}, OTHER_SECRET)
    for until in (0, future(60)):
        v = verifier(
            hmac_secret_key=SECRET,
            hmac_previous_secret_key=OTHER_SECRET,
            hmac_previous_secret_key_valid_until=until,
        )
        assert (await v.verify_connect(old)).user == "1"
        assert (await v.verify_connect(hs({"sub": "2"}))).user == "2"
    expired = verifier(
        hmac_secret_key=SECRET,
        hmac_previous_secret_key=OTHER_SECRET,
        hmac_previous_secret_key_valid_until=int(time.time()) - 1,
    )
    with pytest.raises(TokenInvalid):
        await expired.verify_connect(old)


# -- malformed input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c.d",
        "....",
        "!!!.@@@.###",
        "é.é.é",
        "a.b.c",
        "abcde.abcde.abcde",
        jws(b"[]", b"{}"),
        jws(b"{}", b"{}"),
        jws(b'{"alg":5}', b"{}"),
        jws(b'{"alg":"HS256","kid":1}', b"{}"),
        jws(b'{"alg":"HS256"}', b"not json"),
        jws(b'{"alg":"HS256"}', b"[1,2]"),
        jws(b'{"alg":"HS256"}', b"\xff\xfe"),
        jws(b'{"alg":"HS256"}', b"{}", "===="),
        jws(b'{"alg":"HS256"}', b"[" * 100_000 + b"]" * 100_000),
    ],
)
async def test_malformed_tokens_invalid(token: str) -> None:
    v = verifier(**HS_VERIFIER_CFG)
    with pytest.raises(TokenInvalid):
        await v.verify_connect(token)
    with pytest.raises(TokenInvalid):
        await v.verify_subscribe(token)


async def test_non_string_token_invalid() -> None:
    with pytest.raises(TokenInvalid):
        await verifier(**HS_VERIFIER_CFG).verify_connect(None)  # type: ignore[arg-type]


# -- JWKS ----------------------------------------------------------------------------------


DRIP_INTERVAL = 0.5  # seconds between the bytes of a dripped response
DRIP_FOR = 6.0  # a dripping response gives up after this long (so old code ends too)


@dataclass
class JwksServer:
    port: int
    documents: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    drip: set[str] = field(default_factory=set)  # paths answered one byte per DRIP_INTERVAL
    redirects: dict[str, str] = field(default_factory=dict)  # path → Location of a 302

    def url(self, path: str = "/jwks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, jwks: list[dict[str, Any]], path: str = "/jwks") -> None:
        self.documents[path] = json.dumps({"keys": jwks}).encode()


@pytest.fixture(scope="module")
def jwks_http() -> Iterator[JwksServer]:
    state = JwksServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if self.path in state.redirects:
                self.send_response(302)
                self.send_header("Location", state.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path in state.drip:
                self.drip(state.documents.get(self.path, b"{}"))
                return
            body = state.documents.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body or b"{}")

        def drip(self, body: bytes) -> None:
            """A complete, valid answer, written one byte every DRIP_INTERVAL seconds."""
            self.close_connection = True
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
            deadline = time.monotonic() + DRIP_FOR
            for i in range(len(data)):
                if time.monotonic() > deadline:
                    return
                try:
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    return  # the client gave up
                time.sleep(DRIP_INTERVAL)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def jwks(jwks_http: JwksServer) -> JwksServer:
    jwks_http.documents.clear()
    jwks_http.requests.clear()
    jwks_http.drip.clear()
    jwks_http.redirects.clear()
    return jwks_http


def jwk_of(private_key: PrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**data, "kid": kid, **extra}


def signed(private_key: PrivateKey, alg: str, kid: str | None, claims: dict[str, Any]) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, Keys.priv_pem(private_key), algorithm=alg, headers=headers)


async def test_jwks_rsa_ec_ed25519_with_kid_selection(keys: Keys, jwks: JwksServer) -> None:
    jwks.serve(
        [
            jwk_of(keys.rsa, "r1"),
            jwk_of(keys.ec["ES256"], "e1"),
            jwk_of(keys.ec["ES512"], "e5"),
            jwk_of(keys.ed, "d1"),
        ]
    )
    v = verifier(jwks_public_endpoint=jwks.url())
    for key, alg, kid in (
        (keys.rsa, "RS256", "r1"),
        (keys.rsa, "RS512", "r1"),
        (keys.ec["ES256"], "ES256", "e1"),
        (keys.ec["ES512"], "ES512", "e5"),
        (keys.ed, "EdDSA", "d1"),
    ):
        tok = await v.verify_connect(signed(key, alg, kid, {"sub": kid}))
        assert tok.user == kid
    # right kid, but the signature is from another key
    with pytest.raises(TokenInvalid):
        await v.verify_connect(signed(keys.ec["ES256"], "ES256", "e5", {"sub": "x"}))
    with pytest.raises(TokenInvalid):  # RSA key selected for an ES token
        await v.verify_connect(signed(keys.ec["ES256"], "ES256", "r1", {"sub": "x"}))
    assert jwks.requests == ["/jwks"]


async def test_jwks_unknown_or_missing_kid_invalid(keys: Keys, jwks: JwksServer) -> None:
    jwks.serve([jwk_of(keys.rsa, "r1")])
    v = verifier(jwks_public_endpoint=jwks.url())
    with pytest.raises(TokenInvalid, match="kid"):
        await v.verify_connect(signed(keys.rsa, "RS256", "nope", {"sub": "x"}))
    with pytest.raises(TokenInvalid, match="kid"):
        await v.verify_connect(signed(keys.rsa, "RS256", None, {"sub": "x"}))
    # an unknown kid right after a fetch is rate-limited: no second request, and (the key
    # may have been published a moment ago) a temporary error rather than an invalid token
    with pytest.raises(JWKSUnavailable, match="kid"):
        await v.verify_connect(signed(keys.rsa, "RS256", "nope2", {"sub": "x"}))
    assert jwks.requests == ["/jwks"]


async def test_jwks_key_rotated_in_after_a_fetch_is_temporary(keys: Keys, jwks: JwksServer) -> None:
    """A kid published right after the key set was fetched: unavailable (the client
    retries) until the set may be fetched again, then accepted."""
    # the refetch interval leaves a loaded machine ample time between the first fetch and
    # the rotated token's first check (0.3 s was once too short in CI)
    interval = 2.0
    jwks.serve([jwk_of(keys.rsa, "old")])
    v = TokenVerifier(TokenConfig(jwks_public_endpoint=jwks.url()), jwks_refetch_interval=interval)
    rotated = signed(keys.ed, "EdDSA", "new", {"sub": "y"})  # signed before the clock starts
    other = signed(keys.ed, "EdDSA", "other", {"sub": "y"})
    await v.verify_connect(signed(keys.rsa, "RS256", "old", {"sub": "x"}))
    jwks.serve([jwk_of(keys.rsa, "old"), jwk_of(keys.ed, "new")])
    with pytest.raises(JWKSUnavailable):
        await v.verify_connect(rotated)
    await anyio.sleep(interval + 0.05)
    assert (await v.verify_connect(rotated)).user == "y"
    # a kid missing from the set fetched for this very token is invalid
    await anyio.sleep(interval + 0.05)
    with pytest.raises(TokenInvalid, match="unknown token kid"):
        await v.verify_connect(other)
    assert len(jwks.requests) == 3


async def test_jwks_cached_between_verifications(keys: Keys, jwks: JwksServer) -> None:
    jwks.serve([jwk_of(keys.rsa, "r1")])
    v = verifier(jwks_public_endpoint=jwks.url())
    token = signed(keys.rsa, "RS256", "r1", {"sub": "x"})
    await v.verify_connect(token)
    await v.verify_subscribe(signed(keys.rsa, "RS256", "r1", {"sub": "x", "channel": "c"}))
    await v.verify_connect(token)
    assert len(jwks.requests) == 1


async def test_jwks_unknown_kid_refetches_after_rotation(keys: Keys, jwks: JwksServer) -> None:
    jwks.serve([jwk_of(keys.rsa, "old")])
    v = TokenVerifier(TokenConfig(jwks_public_endpoint=jwks.url()), jwks_refetch_interval=0)
    await v.verify_connect(signed(keys.rsa, "RS256", "old", {"sub": "x"}))
    jwks.serve([jwk_of(keys.rsa, "old"), jwk_of(keys.ed, "new")])
    assert (await v.verify_connect(signed(keys.ed, "EdDSA", "new", {"sub": "y"}))).user == "y"
    assert len(jwks.requests) == 2


async def test_jwks_ttl_expiry_refetches(keys: Keys, jwks: JwksServer) -> None:
    jwks.serve([jwk_of(keys.rsa, "r1")])
    v = TokenVerifier(
        TokenConfig(jwks_public_endpoint=jwks.url()), jwks_cache_ttl=0, jwks_refetch_interval=0
    )
    token = signed(keys.rsa, "RS256", "r1", {"sub": "x"})
    await v.verify_connect(token)
    await v.verify_connect(token)
    assert len(jwks.requests) == 2


async def test_jwks_disables_static_keys_and_hmac(keys: Keys, jwks: JwksServer) -> None:
    jwks.serve([jwk_of(keys.ed, "d1")])
    v = verifier(
        jwks_public_endpoint=jwks.url(),
        hmac_secret_key=SECRET,
        rsa_public_key=Keys.pub_pem(keys.rsa),
    )
    with pytest.raises(TokenInvalid):
        await v.verify_connect(hs({"sub": "x"}, kid="d1"))
    with pytest.raises(TokenInvalid):  # the static RSA key would accept it
        await v.verify_connect(signed(keys.rsa, "RS256", "r1", {"sub": "x"}))


async def test_jwk_alg_member_must_match(keys: Keys, jwks: JwksServer) -> None:
    jwks.serve([jwk_of(keys.rsa, "r1", alg="RS512")])
    v = verifier(jwks_public_endpoint=jwks.url())
    assert (await v.verify_connect(signed(keys.rsa, "RS512", "r1", {"sub": "x"}))).user == "x"
    with pytest.raises(TokenInvalid):
        await v.verify_connect(signed(keys.rsa, "RS256", "r1", {"sub": "x"}))


async def test_jwks_expired_token_with_valid_key(keys: Keys, jwks: JwksServer) -> None:
    jwks.serve([jwk_of(keys.ed, "d1")])
    v = verifier(jwks_public_endpoint=jwks.url())
    with pytest.raises(TokenExpired):
        await v.verify_connect(signed(keys.ed, "EdDSA", "d1", {"exp": int(time.time()) - 1}))


async def test_jwks_unreachable_is_unavailable_not_invalid(keys: Keys, jwks: JwksServer) -> None:
    """A key set that cannot be fetched says nothing about the token: JWKSUnavailable, which
    is not a TokenInvalid (callers answer it with a temporary error, not 3500)."""
    assert not issubclass(JWKSUnavailable, TokenInvalid)
    token = signed(keys.rsa, "RS256", "r1", {"sub": "x"})
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{closed.getsockname()[1]}/jwks"
    jwks.documents["/broken"] = b"not json"
    jwks.serve([], path="/empty")
    for url in (down, jwks.url("/missing"), jwks.url("/broken"), jwks.url("/empty")):
        with pytest.raises(JWKSUnavailable) as info:
            await verifier(jwks_public_endpoint=url).verify_connect(token)
        assert not isinstance(info.value, TokenInvalid)
    with pytest.raises(JWKSUnavailable):  # subscription tokens alike
        sub = signed(keys.rsa, "RS256", "r1", {"sub": "x", "channel": "c"})
        await verifier(jwks_public_endpoint=down).verify_subscribe(sub)


async def test_jwks_url_placeholders_from_issuer_regex(keys: Keys, jwks: JwksServer) -> None:
    jwks.serve([jwk_of(keys.rsa, "k")], path="/acme/jwks")
    jwks.serve([jwk_of(keys.ed, "k")], path="/other/jwks")
    v = verifier(
        jwks_public_endpoint=jwks.url("/{{tenant}}/jwks"),
        issuer_regex=r"https://auth\.example/(?P<tenant>.+)",
        insecure_skip_jwks_endpoint_safety_check=True,
    )
    acme = signed(keys.rsa, "RS256", "k", {"sub": "a", "iss": "https://auth.example/acme"})
    assert (await v.verify_connect(acme)).user == "a"
    # same kid, other tenant: its own key set is used (cache keyed by URL and kid)
    other = signed(keys.rsa, "RS256", "k", {"sub": "a", "iss": "https://auth.example/other"})
    with pytest.raises(TokenInvalid):
        await v.verify_connect(other)
    evil = signed(keys.rsa, "RS256", "k", {"sub": "a", "iss": "https://auth.example/x/../y"})
    with pytest.raises(TokenInvalid, match="unsafe"):
        await v.verify_connect(evil)
    assert jwks.requests == ["/acme/jwks", "/other/jwks"]


TENANT_REGEX = r"https://auth\.example/(?P<tenant>[A-Za-z0-9_-]+)"


def tenant_token(keys: Keys, tenant: str, kid: str = "k") -> str:
    return signed(keys.rsa, "RS256", kid, {"sub": tenant, "iss": f"https://auth.example/{tenant}"})


def tenant_verifier(jwks: JwksServer, **options: Any) -> TokenVerifier:
    """Any tenant name is fetched: the Centrifugo-style safety check is switched off."""
    cfg = TokenConfig(
        jwks_public_endpoint=jwks.url("/{{tenant}}/jwks"),
        issuer_regex=TENANT_REGEX,
        insecure_skip_jwks_endpoint_safety_check=True,
    )
    return TokenVerifier(cfg, **options)


async def test_jwks_slow_drip_endpoint_fails_within_the_timeout(
    keys: Keys, jwks: JwksServer
) -> None:
    """A server dripping a valid answer byte by byte cannot hold a verification (or a
    second one waiting for the same URL) beyond ``http_timeout``; other URLs go on."""
    timeout = 2.0
    jwks.serve([jwk_of(keys.rsa, "k")], path="/slow/jwks")
    jwks.serve([jwk_of(keys.rsa, "k")], path="/good/jwks")
    jwks.drip.add("/slow/jwks")
    v = tenant_verifier(jwks, http_timeout=timeout)
    outcomes: dict[str, tuple[str, float]] = {}

    async def verify(name: str, token: str) -> None:
        start = time.monotonic()
        try:
            await v.verify_connect(token)
            outcome = "ok"
        except (TokenInvalid, JWKSUnavailable) as exc:
            outcome = type(exc).__name__
        outcomes[name] = (outcome, time.monotonic() - start)

    with anyio.fail_after(DRIP_FOR + 10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(verify, "first", tenant_token(keys, "slow"))
            await anyio.sleep(0.2)
            tg.start_soon(verify, "second", tenant_token(keys, "slow"))
            tg.start_soon(verify, "other", tenant_token(keys, "good"))
    assert outcomes["first"][0] == "JWKSUnavailable"
    assert outcomes["first"][1] < timeout + 0.5
    assert outcomes["second"][0] == "JWKSUnavailable"
    assert outcomes["second"][1] < timeout + 0.5
    assert outcomes["other"][0] == "ok"
    assert outcomes["other"][1] < timeout / 2  # not queued behind the slow URL
    assert jwks.requests.count("/slow/jwks") == 1  # the second shared the first fetch
    # the failure is remembered for the refetch interval: no new request, same error
    with pytest.raises(JWKSUnavailable):
        await v.verify_connect(tenant_token(keys, "slow"))
    assert jwks.requests.count("/slow/jwks") == 1


async def test_jwks_fetch_is_cancelled_with_its_caller(keys: Keys, jwks: JwksServer) -> None:
    jwks.serve([jwk_of(keys.rsa, "k")])
    jwks.drip.add("/jwks")
    v = TokenVerifier(TokenConfig(jwks_public_endpoint=jwks.url()), http_timeout=30.0)
    token = signed(keys.rsa, "RS256", "k", {"sub": "x"})
    start = time.monotonic()
    with anyio.fail_after(DRIP_FOR + 10), anyio.move_on_after(0.3):
        await v.verify_connect(token)
    assert time.monotonic() - start < 1.0
    # a cancelled attempt says nothing about the endpoint: the next caller fetches again
    jwks.drip.clear()
    assert (await v.verify_connect(token)).user == "x"
    assert jwks.requests == ["/jwks", "/jwks"]


async def test_jwks_redirects_are_not_followed(keys: Keys, jwks: JwksServer) -> None:
    jwks.serve([jwk_of(keys.rsa, "k")])
    jwks.redirects["/moved"] = "/jwks"
    v = verifier(jwks_public_endpoint=jwks.url("/moved"))
    with pytest.raises(JWKSUnavailable):
        await v.verify_connect(signed(keys.rsa, "RS256", "k", {"sub": "x"}))
    assert jwks.requests == ["/moved"]


async def test_jwks_fetch_ignores_proxy_environment(
    keys: Keys, jwks: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead_proxy)
    # urllib reads the proxy variables once, into its cached global opener: drop that
    # cache so that the environment set above is what any urllib-based client would see
    urllib.request.install_opener(None)
    try:
        jwks.serve([jwk_of(keys.rsa, "k")])
        v = verifier(jwks_public_endpoint=jwks.url())
        token = signed(keys.rsa, "RS256", "k", {"sub": "x"})
        assert (await v.verify_connect(token)).user == "x"
        assert jwks.requests == ["/jwks"]
    finally:
        urllib.request.install_opener(None)  # rebuilt from the restored environment


async def test_jwks_failures_are_cached(keys: Keys, jwks: JwksServer) -> None:
    v = verifier(jwks_public_endpoint=jwks.url("/missing"))
    token = signed(keys.rsa, "RS256", "k", {"sub": "x"})
    for _ in range(5):
        with pytest.raises(JWKSUnavailable):
            await v.verify_connect(token)
    assert jwks.requests == ["/missing"]


async def test_jwks_templated_urls_fetch_a_bounded_number(keys: Keys, jwks: JwksServer) -> None:
    """300 issuers, each naming a new JWKS URL, cause only the budgeted fetches, and the
    key set cached before stays in use."""
    jwks.serve([jwk_of(keys.rsa, "k")], path="/acme/jwks")
    v = tenant_verifier(jwks)  # defaults: a burst of 10, then 2 fetches per second
    acme = tenant_token(keys, "acme")
    assert (await v.verify_connect(acme)).user == "acme"
    # the fetch comes before the signature check, so an attacker needs no valid signature
    tokens = [
        raw_token({"alg": "RS256", "kid": "k"}, {"iss": f"https://auth.example/t{i}"}, None)
        for i in range(300)
    ]
    failures: list[str] = []

    async def verify(token: str) -> None:
        try:
            await v.verify_connect(token)
        except (TokenInvalid, JWKSUnavailable) as exc:
            failures.append(type(exc).__name__)

    start = time.monotonic()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for token in tokens:
                tg.start_soon(verify, token)
    elapsed = time.monotonic() - start
    fetched = [path for path in jwks.requests if path != "/acme/jwks"]
    assert len(failures) == 300
    assert set(failures) == {"JWKSUnavailable"}
    assert len(fetched) <= 10 + 2 * elapsed + 1
    assert (await v.verify_connect(acme)).user == "acme"
    assert jwks.requests.count("/acme/jwks") == 1
    # the same 300 again: failed URLs are remembered, refused ones are still refused
    seen = len(jwks.requests)
    for token in tokens[:50]:
        with pytest.raises(JWKSUnavailable):
            await v.verify_connect(token)
    assert len(jwks.requests) - seen <= 2 * (time.monotonic() - start) + 1


async def test_jwks_flood_of_made_up_tenants_cannot_starve_known_tenants(
    keys: Keys, jwks: JwksServer
) -> None:
    """The hardening issue's scenario: 200 unsigned tokens naming random tenants, then 20
    users of tenants whose key sets were fetched before and are past their TTL (so each
    needs a fetch again). The flood only gets the shared budget; the 20 are all verified."""
    tenants = [f"t{i}" for i in range(20)]
    for tenant in tenants:
        jwks.serve([jwk_of(keys.rsa, "k")], path=f"/{tenant}/jwks")
    created = time.monotonic()
    v = tenant_verifier(jwks, jwks_cache_ttl=1.0, jwks_refetch_interval=0.5, jwks_fetch_burst=20)
    for tenant in tenants:
        assert (await v.verify_connect(tenant_token(keys, tenant))).user == tenant
    await anyio.sleep(1.1)  # every cached key set is past its TTL now
    jwks.requests.clear()
    forged = [
        raw_token({"alg": "RS256", "kid": "k"}, {"iss": f"https://auth.example/x{i}"}, None)
        for i in range(200)
    ]
    refused: list[str] = []

    async def attack(token: str) -> None:
        try:
            await v.verify_connect(token)
        except (TokenInvalid, JWKSUnavailable) as exc:
            refused.append(type(exc).__name__)

    verified: list[str] = []

    async def user(tenant: str) -> None:
        verified.append((await v.verify_connect(tenant_token(keys, tenant))).user)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for token in forged:
                tg.start_soon(attack, token)
        async with anyio.create_task_group() as tg:
            for tenant in tenants:
                tg.start_soon(user, tenant)
    elapsed = time.monotonic() - created
    assert len(refused) == 200
    assert sorted(verified) == sorted(tenants)
    # the first fetches of the 20 spent the burst: the flood got what refilled, 2 a second
    made_up = [path for path in jwks.requests if path.startswith("/x")]
    assert len(made_up) <= 2 * elapsed + 1
    assert sorted(p for p in jwks.requests if p.startswith("/t")) == sorted(
        f"/{tenant}/jwks" for tenant in tenants
    )


async def test_jwks_new_tenant_is_fetched_soon_after_a_flood(keys: Keys, jwks: JwksServer) -> None:
    """With any tenant name allowed, a flood spends the shared budget; a tenant never seen
    before gets a temporary error meanwhile (its SDK retries) and its first fetch as soon
    as the budget refills."""
    jwks.serve([jwk_of(keys.rsa, "k")], path="/newco/jwks")
    v = tenant_verifier(jwks, jwks_fetch_rate=4.0)
    forged = [
        raw_token({"alg": "RS256", "kid": "k"}, {"iss": f"https://auth.example/x{i}"}, None)
        for i in range(200)
    ]
    for token in forged:
        with pytest.raises(JWKSUnavailable):
            await v.verify_connect(token)
    flood_ended = time.monotonic()
    token = tenant_token(keys, "newco")
    with anyio.fail_after(2):
        while True:
            try:
                assert (await v.verify_connect(token)).user == "newco"
                break
            except JWKSUnavailable:
                await anyio.sleep(0.05)
    assert time.monotonic() - flood_ended < 1 / 4.0 + 0.5  # one refill, and some slack
    # the flood's names were fetched within the budget, and failed names are not refetched
    seen = len(jwks.requests)
    for token in forged:
        with pytest.raises(JWKSUnavailable):
            await v.verify_connect(token)
    assert len(jwks.requests) - seen <= 4 * (time.monotonic() - flood_ended) + 1


LISTED_REGEX = r"https://auth\.example/(?P<tenant>acme|globex|broken)"


async def test_jwks_listed_tenants_make_the_flood_cost_no_fetch(
    keys: Keys, jwks: JwksServer
) -> None:
    """The default (Centrifugo's) safety rule: placeholder groups list their values. Made-up
    tenants are then refused before any fetch; forged tokens for listed tenants cost one
    fetch per tenant, and a broken tenant's failure is remembered."""
    jwks.serve([jwk_of(keys.rsa, "k")], path="/acme/jwks")
    jwks.serve([jwk_of(keys.rsa, "k")], path="/globex/jwks")
    cfg = TokenConfig(jwks_public_endpoint=jwks.url("/{{tenant}}/jwks"), issuer_regex=LISTED_REGEX)
    v = TokenVerifier(cfg, jwks_fetch_burst=3, jwks_fetch_rate=0.001)
    for i in range(200):
        made_up = raw_token(
            {"alg": "RS256", "kid": "k"}, {"iss": f"https://auth.example/x{i}"}, None
        )
        with pytest.raises(TokenInvalid, match="regex"):
            await v.verify_connect(made_up)
    assert jwks.requests == []
    for i in range(200):
        tenant = ("acme", "globex", "broken")[i % 3]
        claims = {"sub": "x", "iss": f"https://auth.example/{tenant}"}
        with pytest.raises((TokenInvalid, JWKSUnavailable)):
            await v.verify_connect(raw_token({"alg": "RS256", "kid": "k"}, claims, None))
    assert sorted(jwks.requests) == ["/acme/jwks", "/broken/jwks", "/globex/jwks"]
    for tenant in ("acme", "globex"):  # the shared budget is spent, known tenants go on
        assert (await v.verify_connect(tenant_token(keys, tenant))).user == tenant


async def test_jwks_known_url_outage_spends_no_shared_budget(keys: Keys, jwks: JwksServer) -> None:
    """A known URL is refetched on its own budget (once per refetch interval), so an
    outage and the recovery work with the shared budget spent."""
    jwks.serve([jwk_of(keys.rsa, "k")], path="/acme/jwks")
    v = tenant_verifier(
        jwks,
        jwks_cache_ttl=1.0,  # wide windows: a loaded CI machine may stall for tenths of a second
        jwks_refetch_interval=0.6,
        jwks_fetch_burst=1,
        jwks_fetch_rate=0.001,  # the first fetch spends the whole shared budget
    )
    acme = tenant_token(keys, "acme")
    assert (await v.verify_connect(acme)).user == "acme"
    with pytest.raises(JWKSUnavailable, match="rate limit"):
        await v.verify_connect(tenant_token(keys, "other"))
    del jwks.documents["/acme/jwks"]  # the endpoint fails from now on
    await anyio.sleep(1.05)
    with pytest.raises(JWKSUnavailable, match="404"):
        await v.verify_connect(acme)
    with pytest.raises(JWKSUnavailable, match="failed recently"):  # remembered
        await v.verify_connect(acme)
    assert jwks.requests.count("/acme/jwks") == 2
    jwks.serve([jwk_of(keys.rsa, "k")], path="/acme/jwks")
    await anyio.sleep(0.65)  # a known URL is retried after the refetch interval, no backoff
    assert (await v.verify_connect(acme)).user == "acme"
    assert jwks.requests.count("/acme/jwks") == 3


async def test_jwks_failing_url_never_fetched_backs_off(keys: Keys, jwks: JwksServer) -> None:
    v = tenant_verifier(jwks, jwks_refetch_interval=0.2)
    token = tenant_token(keys, "gone")
    fetched_at: list[float] = []
    start = time.monotonic()
    while time.monotonic() - start < 1.7:
        seen = len(jwks.requests)
        asked_at = time.monotonic()  # a fetch starts right after this, before any await
        with pytest.raises(JWKSUnavailable):
            await v.verify_connect(token)
        if len(jwks.requests) > seen:
            fetched_at.append(asked_at)
        await anyio.sleep(0.02)
    gaps = [b - a for a, b in itertools.pairwise(fetched_at)]
    assert len(fetched_at) == 4, gaps  # at 0, 0.2, 0.6 and 1.4 s: 0.2 s doubling
    for i, gap in enumerate(gaps):
        assert 0.2 * 2**i - 0.01 <= gap < 0.2 * 2**i + 0.15


async def test_jwks_known_urls_lru_and_failures_kept_apart(keys: Keys, jwks: JwksServer) -> None:
    for tenant in ("t0", "t1", "t2", "t3"):
        jwks.serve([jwk_of(keys.rsa, "k")], path=f"/{tenant}/jwks")
    v = tenant_verifier(
        jwks, jwks_cache_size=3, jwks_failure_cache_size=2, jwks_refetch_interval=30
    )

    async def ok(tenant: str) -> None:
        assert (await v.verify_connect(tenant_token(keys, tenant))).user == tenant

    async def fails(tenant: str) -> None:
        with pytest.raises(JWKSUnavailable):
            await v.verify_connect(tenant_token(keys, tenant))

    def fetches() -> int:
        return len(jwks.requests)

    for tenant in ("t0", "t1", "t2"):
        await ok(tenant)
    for tenant in ("f0", "f1", "f2"):  # failures fill their own LRU (2), f0 drops out
        await fails(tenant)
    assert fetches() == 6
    for tenant in ("t0", "t1", "t2"):  # known key sets were not pushed out by failures
        await ok(tenant)
    await fails("f1")  # still remembered as failed
    assert fetches() == 6
    await fails("f0")  # forgotten: fetched again
    assert fetches() == 7
    await ok("t0")
    await ok("t3")  # a fourth known URL: the least recently used (t1) goes
    assert fetches() == 8
    for tenant in ("t0", "t2", "t3"):
        await ok(tenant)
    assert fetches() == 8
    await ok("t1")
    assert jwks.requests[-1] == "/t1/jwks"


# -- configuration -------------------------------------------------------------------------


async def test_config_errors(keys: Keys) -> None:
    with pytest.raises(ConfigError, match="rsa_public_key"):
        verifier(rsa_public_key="not a pem")
    with pytest.raises(ConfigError, match="rsa_public_key"):
        verifier(rsa_public_key=Keys.pub_pem(keys.ec["ES256"]))
    with pytest.raises(ConfigError, match="ecdsa_public_key"):
        verifier(ecdsa_public_key=Keys.pub_pem(keys.rsa))
    with pytest.raises(ConfigError, match="jwks_public_endpoint"):
        verifier(jwks_public_endpoint="file:///etc/passwd")
    with pytest.raises(ConfigError, match="placeholder"):
        verifier(jwks_public_endpoint="https://x/{{tenant}}/jwks")
    with pytest.raises(ConfigError, match="user_id_claim"):
        verifier(user_id_claim="user-id")
    with pytest.raises(ConfigError, match="issuer_regex"):
        verifier(issuer_regex="(")


@pytest.mark.parametrize(
    "regex",
    [
        r"https://auth\.example/(?P<tenant>[A-Za-z0-9_-]+)",
        r"https://auth\.example/(?P<tenant>\w+)",
        r"https://auth\.example/(?P<tenant>.+)",
        r"https://auth\.example/(?P<tenant>acme|glob.*)",
        r"https://auth\.example/(?P<tenant>acme|globex?)",
        r"https://auth\.example/(?P<tenant>acme|(?=g)globex)",
        r"https://auth\.example/(?P<tenant>acme|\x67lobex)",
        r"https://auth\.example/(?P<tenant>acme|globex)/\d+",  # a class anywhere
        r"https://[a-z]+\.example/(?P<tenant>acme|globex)",
    ],
)
async def test_jwks_placeholder_groups_must_list_their_values(
    regex: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Centrifugo's JWKS template safety check: a group that fills a URL placeholder may
    only list fixed values, and the regex may have no character class at all."""
    endpoint = "https://keys.example/{{tenant}}/jwks"
    for name in ("issuer_regex", "audience_regex"):
        with pytest.raises(ConfigError, match=f"client.token.{name}: .*explicit list"):
            verifier(jwks_public_endpoint=endpoint, **{name: regex})
        # the escape hatch lets it through, with a warning
        caplog.clear()
        verifier(
            jwks_public_endpoint=endpoint,
            insecure_skip_jwks_endpoint_safety_check=True,
            **{name: regex},
        )
        assert "insecure_skip_jwks_endpoint_safety_check" in caplog.text
    # without placeholders the regex is not restricted
    verifier(jwks_public_endpoint="https://keys.example/jwks", issuer_regex=regex)


@pytest.mark.parametrize(
    "regex",
    [
        r"https://auth\.example/(?P<tenant>acme|globex|init\-ech)",
        r"https://(?P<tenant>acme|globex)\.auth\.example/?",
        r"https://auth\.example/(?P<tenant>acme|(?:glob|tele)ex|(?P<x>umbrella))",
        r"(?P<tenant>acme|globex)+",  # the group itself lists values
    ],
)
async def test_jwks_placeholder_groups_listing_values_are_accepted(regex: str) -> None:
    endpoint = "https://keys.example/{{tenant}}/jwks"
    verifier(jwks_public_endpoint=endpoint, issuer_regex=regex)
    verifier(jwks_public_endpoint=endpoint, audience_regex=regex)
    TokenVerifier(
        TokenConfig(jwks_public_endpoint=endpoint, issuer_regex=regex),
        config_prefix="client.subscription_token",
    )


# -- minting helpers -----------------------------------------------------------------------


async def test_minting_helpers_roundtrip(keys: Keys) -> None:
    v = verifier(hmac_secret_key="short")
    tok = await v.verify_connect(connection_token("u1", "short", info={"a": 1}))
    assert tok.user == "u1"
    assert tok.expire_at is not None and tok.expire_at > time.time()
    assert tok.info == b'{"a":1}'
    assert (await v.verify_connect(connection_token("u1", "short", ttl=None))).expire_at is None
    sub = await v.verify_subscribe(subscription_token("u1", "$c", "short", ttl=10, client="id"))
    assert (sub.user, sub.channel, sub.client) == ("u1", "$c", "id")
    with pytest.raises(TokenExpired):
        await v.verify_connect(connection_token("u1", "short", ttl=-1))
    for alg in ("HS384", "HS512"):
        token = encode_token({"sub": "z"}, SECRET, alg)
        assert jwt.decode(token, SECRET, algorithms=[alg]) == {"sub": "z"}
    rs = encode_token({"sub": "r"}, Keys.priv_pem(keys.rsa), "RS256")
    assert (await verifier(rsa_public_key=Keys.pub_pem(keys.rsa)).verify_connect(rs)).user == "r"
