"""The JWT verifier takes any string: claims, or TokenInvalid, TokenExpired, JWKSUnavailable.

Tokens are random strings, three random base64url segments, and tokens whose header and
claims were generated and then mutated (``alg``, ``kid``, ``exp`` as strings, floats or
huge numbers, nested claims of any shape) and then *signed with the right key*, so that
the mutated claims get past the signature check and into claim parsing. Verifiers use an
HMAC secret, RSA and ECDSA public keys, or a JWKS endpoint whose documents (real keys,
mutated, or any bytes) come from the example instead of the network.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.from_thread
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import event, example, given
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms

from centrifuge_asgi.auth import (
    ConnectToken,
    JWKSUnavailable,
    SubscribeToken,
    TokenExpired,
    TokenInvalid,
    TokenVerifier,
)
from centrifuge_asgi.config import TokenConfig

from .support import EXTREME_INTS, bad_values, dump, examples, json_values, mutated, now_plus, texts

SECRET = "fuzz-secret-" + "s" * 52
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEYS = {
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "ES384": ec.generate_private_key(ec.SECP384R1()),
    "ES512": ec.generate_private_key(ec.SECP521R1()),
}
ED_KEY = ed25519.Ed25519PrivateKey.generate()
ALGORITHMS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"]
ALGORITHMS += ["EdDSA"]
_SIGNERS = get_default_algorithms()


def pem(key: Any) -> str:
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return str(public.decode())


def private_key(alg: str) -> Any:
    if alg.startswith("HS"):
        return SECRET.encode()
    if alg.startswith("RS"):
        return RSA_KEY
    if alg.startswith("ES"):
        return EC_KEYS[alg]
    return ED_KEY


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(alg: str, header: bytes, claims: bytes, sign_as: str | None = None) -> str:
    """A compact JWS of these exact header and claims bytes, signed with ``sign_as``'s key."""
    signing_input = f"{b64url(header)}.{b64url(claims)}"
    signer = sign_as or (alg if alg in ALGORITHMS else "HS256")
    signature = _SIGNERS[signer].sign(signing_input.encode(), private_key(signer))
    return f"{signing_input}.{b64url(signature)}"


# ----------------------------------------------------------------------------- verifiers

JWKS_URL = "https://keys.invalid/{{tenant}}/jwks"
ISSUER_REGEX = r"https://(?P<tenant>acme|globex)\.example"


def jwk(key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**data, "kid": kid, "use": "sig", **({"alg": alg} if alg else {})}


JWKS = {
    "keys": [
        jwk(RSA_KEY, "rsa", "RS256"),
        jwk(EC_KEYS["ES256"], "ec256"),
        jwk(EC_KEYS["ES384"], "ec384"),
        jwk(EC_KEYS["ES512"], "ec512"),
        jwk(ED_KEY, "ed", "EdDSA"),
    ]
}
KIDS = ["rsa", "ec256", "ec384", "ec512", "ed", "nope", ""]


class Verifiers:
    """The verifiers, and the JWKS document the fake endpoint serves for this example."""

    def __init__(self) -> None:
        self.document = dump(JWKS)
        self.hmac = TokenVerifier(
            TokenConfig(hmac_secret_key=SECRET, hmac_previous_secret_key="old-" + SECRET)
        )
        self.keys = TokenVerifier(
            TokenConfig(
                rsa_public_key=pem(RSA_KEY),
                ecdsa_public_key=pem(EC_KEYS["ES256"]),
                audience="aud",
                issuer_regex=ISSUER_REGEX,
                user_id_claim="user_id",
            )
        )
        self.jwks = TokenVerifier(
            TokenConfig(jwks_public_endpoint=JWKS_URL, issuer_regex=ISSUER_REGEX),
            jwks_cache_ttl=0.0,  # every verification fetches: the example's document
            jwks_refetch_interval=0.0,
            jwks_fetch_rate=1e9,
            jwks_fetch_burst=1_000_000,
        )
        self.jwks._download = self._download  # type: ignore[method-assign]

    async def _download(self, url: str) -> bytes:
        return self.document

    def all(self) -> list[TokenVerifier]:
        return [self.hmac, self.keys, self.jwks]


@pytest.fixture(scope="module")
def verifiers() -> Iterator[tuple[anyio.from_thread.BlockingPortal, Verifiers]]:
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        yield portal, Verifiers()


# ------------------------------------------------------------------------------- tokens

numbers = st.integers() | st.sampled_from(EXTREME_INTS) | st.floats(allow_nan=False)
times = st.one_of(
    st.integers(-3600, 86_400).map(now_plus),
    numbers,
    st.sampled_from(["1700000000", "", None, True, [1], {"a": 1}]),
)
override = st.dictionaries(
    st.sampled_from(["presence", "join_leave", "force_push_join_leave", "force_recovery"]),
    st.fixed_dictionaries({}, optional={"value": st.booleans()}),
    max_size=3,
)
claims = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.sampled_from(["u1", ""]) | texts,
        "user_id": texts,
        "exp": times,
        "nbf": times,
        "iat": times,
        "expire_at": times,
        "jti": texts,
        "aud": st.sampled_from(["aud", "other"]) | st.lists(texts, max_size=2),
        "iss": st.sampled_from(["https://acme.example", "https://evil.example", ""]),
        "channel": st.sampled_from(["", "news:a"]) | texts,
        "client": texts,
        "info": json_values,
        "b64info": st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()) | texts,
        "data": json_values,
        "b64data": texts,
        "meta": json_values,
        "channels": st.lists(texts, max_size=3),
        "subs": st.dictionaries(
            texts,
            st.fixed_dictionaries(
                {}, optional={"info": json_values, "b64data": texts, "override": override}
            ),
            max_size=2,
        ),
        "override": override,
    },
)
headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(ALGORITHMS)},
    optional={"kid": st.sampled_from(KIDS), "typ": st.just("JWT")},
)
HEADER_KEYS = ["alg", "kid", "typ", "crit", "jku"]
CLAIM_KEYS = ["exp", "nbf", "iat", "sub", "aud", "iss", "channel", "subs", "info", "b64info"]


@st.composite
def signed_tokens(draw: st.DrawFn) -> str:
    """A token of generated (perhaps mutated) header and claims, signed with a real key."""
    header = draw(headers | mutated(headers, HEADER_KEYS))
    body = draw(claims | mutated(claims, CLAIM_KEYS))
    alg = header.get("alg") if isinstance(header, dict) else None
    sign_as = draw(st.none() | st.sampled_from(ALGORITHMS))  # sometimes the wrong family
    return sign(alg if isinstance(alg, str) else "HS256", dump(header), dump(body), sign_as)


segments = st.binary(max_size=40).map(b64url) | st.text(max_size=10)
tokens = st.one_of(
    signed_tokens(),
    signed_tokens(),
    signed_tokens(),
    st.text(max_size=60),
    st.tuples(segments, segments, segments).map(".".join),
    st.tuples(bad_values, bad_values).map(
        lambda t: f"{b64url(dump(t[0]))}.{b64url(dump(t[1]))}.{b64url(b'sig')}"
    ),
)
jwks_documents = st.one_of(
    st.just(dump(JWKS)),
    mutated(st.just(JWKS), ["keys", "kid", "kty", "crv", "n", "e", "x", "y", "alg", "use"]).map(
        dump
    ),
    st.binary(max_size=100),
)


async def verify(v: Verifiers, token: str, document: bytes) -> list[str]:
    """Every verifier, both kinds of token: what each said."""
    v.document = document
    outcomes = []
    for verifier in v.all():
        for method in (verifier.verify_connect, verifier.verify_subscribe):
            try:
                with anyio.fail_after(10):
                    result = await method(token)
            except (TokenInvalid, TokenExpired, JWKSUnavailable) as exc:
                outcomes.append(type(exc).__name__)
            else:
                assert isinstance(result, ConnectToken | SubscribeToken)
                outcomes.append("ok")
    return outcomes


@examples(1.0)
@given(tokens, jwks_documents)
@example(sign("HS256", b'{"alg":"HS256"}', '{"b64info":"\u0080"}'.encode()), dump(JWKS))
@example(sign("HS256", b'{"alg":"HS256"}', b'{"sub":"u1","exp":1e308}'), dump(JWKS))
@example(sign("HS256", b'{"alg":"HS256"}', b'{"sub":"u1","exp":-1e308}'), dump(JWKS))
@example(sign("HS256", b'{"alg":"HS256"}', b'{"expire_at":' + b"9" * 400 + b"}"), dump(JWKS))
@example(sign("HS256", b'{"alg":"HS256"}', b'{"info":' + b"[" * 5000 + b"]" * 5000 + b"}"), b"")
@example(sign("RS256", b'{"alg":"RS256","kid":"rsa"}', b'{"iss":"https://acme.example"}'), b"{")
@example(
    sign("EdDSA", b'{"alg":"EdDSA","kid":"ed"}', b'{"iss":"https://acme.example"}'),
    b'{"keys":[{"kid":"ed","kty":"OKP","crv":"Ed25519","x":"AAAA"}]}',
)
@example(
    sign("RS256", b'{"alg":"RS256","kid":"rsa"}', b'{"iss":"https://acme.example"}'),
    b'{"keys":[{"kid":"rsa","kty":"RSA","n":"","e":""}]}',
)
def test_verifier(
    verifiers: tuple[anyio.from_thread.BlockingPortal, Verifiers], token: str, document: bytes
) -> None:
    portal, v = verifiers
    for outcome in portal.call(verify, v, token, document):
        event(outcome)
