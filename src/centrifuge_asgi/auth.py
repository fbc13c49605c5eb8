"""JWT verification for connection and subscription tokens (client protocol §6).

Validation order (as in Centrifugo's ``jwtverify``):

1. split and decode header and claims without verification → :class:`TokenInvalid`;
2. ``aud`` / ``iss`` checks (exact values and full-match regexes, only when configured) →
   :class:`TokenInvalid`; regex named groups may fill ``{{name}}`` placeholders of the JWKS URL;
3. signature → :class:`TokenInvalid` (so a forged token is *invalid* even if also expired);
4. claim shapes (a connection token must not carry ``channel``) → :class:`TokenInvalid`;
5. ``exp`` / ``nbf`` (strict, no leeway) → :class:`TokenExpired`.

A JWKS key set that cannot be had right now (endpoint down, fetch budget spent) is
:class:`JWKSUnavailable`, which is *not* a :class:`TokenInvalid`: it says nothing about the
token, and callers answer it with a temporary error that the SDKs retry.

Every algorithm family is bound to its own key: HS* only to the HMAC secret(s), RS* only to
the RSA key, ES* only to the ECDSA key, and, with a JWKS endpoint, RS*/ES*/EdDSA only to the
JWK selected by ``kid``. ``none`` and anything else is rejected, which rules out key confusion.
"""

from __future__ import annotations

import base64
import hmac
import logging
import math
import re
import ssl
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import anyio
import jwt
import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .config import TokenConfig
from .errors import CentrifugeError, ConfigError

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "ConnectToken",
    "JWKSUnavailable",
    "ServerSubscription",
    "SubscribeToken",
    "SubscriptionOverride",
    "TokenExpired",
    "TokenInvalid",
    "TokenVerifier",
    "connection_token",
    "encode_token",
    "hmac_sha256_hex",
    "subscription_token",
]

log = logging.getLogger(__name__)

SUPPORTED_ALGORITHMS: Final = frozenset(
    {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
# ES alg → (curve name, byte length of r and of s in the JOSE signature)
_EC_ALGS: Final = {
    "ES256": ("secp256r1", 32),
    "ES384": ("secp384r1", 48),
    "ES512": ("secp521r1", 66),
}
_JWK_CURVES: Final[dict[str, type[ec.EllipticCurve]]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}
_OVERRIDE_FIELDS: Final = (
    "presence",
    "join_leave",
    "force_push_join_leave",
    "force_positioning",
    "force_recovery",
)
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")
_USER_CLAIM: Final = re.compile(r"[A-Za-z_]+")
_PLACEHOLDER: Final = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
_SAFE_PLACEHOLDER_VALUE: Final = re.compile(r"[A-Za-z0-9_-]+")
_MAX_JWKS_URLS: Final = 256
_MAX_FAILED_JWKS_URLS: Final = 1024
_MAX_FAILURE_BACKOFF: Final = 60.0  # seconds a never-fetched URL that keeps failing waits

_PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | Ed25519PublicKey
_Key: TypeAlias = bytes | _PublicKey
_Claims: TypeAlias = dict[str, object]


class TokenInvalid(CentrifugeError):
    """The token is malformed, badly signed, or its claims are not acceptable."""


class TokenExpired(CentrifugeError):
    """The token is authentic but expired (``exp``) or not yet valid (``nbf``)."""


class JWKSUnavailable(CentrifugeError):
    """The key set needed to check a token cannot be had right now.

    The JWKS endpoint failed, timed out or returned no usable key, a failure is still
    remembered, or the fetch budget is spent. This is temporary and says nothing about the
    token, so it is deliberately not a :class:`TokenInvalid`: a client is answered with a
    temporary error (code 100) and its SDK reconnects or retries.
    """


@dataclass(frozen=True, slots=True)
class SubscriptionOverride:
    """Per-subscription feature overrides (``override`` claim); ``None`` = not set."""

    presence: bool | None = None
    join_leave: bool | None = None
    force_push_join_leave: bool | None = None
    force_positioning: bool | None = None
    force_recovery: bool | None = None


@dataclass(frozen=True, slots=True)
class ServerSubscription:
    """A server-side subscription requested by a connection token."""

    channel: str
    info: bytes | None = None
    data: bytes | None = None
    override: SubscriptionOverride | None = None


@dataclass(frozen=True, slots=True)
class ConnectToken:
    """Verified connection-token claims; ``expire_at`` ``None`` means never expires."""

    user: str
    expire_at: int | None
    info: bytes | None
    subs: list[ServerSubscription]
    meta: object | None


@dataclass(frozen=True, slots=True)
class SubscribeToken:
    """Verified subscription-token claims."""

    user: str
    channel: str
    client: str
    expire_at: int | None
    info: bytes | None
    data: bytes | None
    override: SubscriptionOverride | None


@dataclass(frozen=True, slots=True)
class _Parsed:
    alg: str
    kid: str | None
    claims: _Claims
    signing_input: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class _JWK:
    key: _PublicKey
    alg: str | None


@dataclass(slots=True)
class _JWKSEntry:
    keys: dict[str, _JWK] = field(default_factory=dict)
    fetched_at: float = -math.inf  # monotonic time of the last successful fetch
    attempted_at: float = -math.inf  # monotonic time of the last attempt
    error: str | None = None  # why the last attempt failed (negative cache), None if it did not
    failures: int = 0  # attempts that failed in a row
    configured: bool = False  # the URL is the configured one, it has no placeholders

    @property
    def known(self) -> bool:
        """The URL is configured or has served a usable key set (it is no guess)."""
        return self.configured or self.fetched_at > -math.inf


class _TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; one token per JWKS fetch."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(max(1, burst))
        self._tokens = self._burst
        self._updated_at = time.monotonic()

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self._updated_at)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class TokenVerifier:
    """Verifies connection and subscription JWTs against one :class:`TokenConfig`.

    JWKS key sets are cached per URL for ``jwks_cache_ttl`` seconds, so a key is always looked
    up by ``(url, kid)``. Whenever a key set cannot be had (the endpoint fails, a failure is
    still remembered, the budget below is spent) verification raises
    :class:`JWKSUnavailable`, a temporary error, never :class:`TokenInvalid`.

    With ``{{name}}`` placeholders, every claim that fills them is chosen by whoever sent
    the token, before any signature is checked. So, as in Centrifugo, the named groups that
    fill placeholders must be explicit lists of values (``acme|globex``), unless
    ``insecure_skip_jwks_endpoint_safety_check`` is set. At run time outbound fetches are
    bounded, and bounded separately for URLs that have served a key set and for the rest,
    so that tokens naming made-up URLs cannot use up the fetches of real ones:

    * a *known* URL (the configured one when it has no placeholders, or one that has
      served a usable key set) is fetched at most once per ``jwks_refetch_interval``
      seconds: after its TTL, for an unknown ``kid``, or again after a failure. That
      per-URL limit is its whole budget: it spends nothing from the shared one and has
      its own ``jwks_max_concurrent_fetches`` slots;
    * any other URL draws on a shared budget of ``jwks_fetch_rate`` fetches per second
      (bursts of up to ``jwks_fetch_burst``) and its own ``jwks_max_concurrent_fetches``
      slots. When it fails it is not fetched again for ``jwks_refetch_interval`` seconds,
      doubling after each further failure up to 60 s;
    * at most ``jwks_cache_size`` known URLs are kept (least recently used goes first), and
      at most ``jwks_failure_cache_size`` others (in flight or remembered as failed);
    * a fetch, including waiting for a free slot, has ``http_timeout`` seconds in total
      (a slowly dripping server cannot hold it longer) and is cancelled with its caller;
      concurrent verifications that need the same URL share one fetch;
    * redirects are not followed and proxy environment variables are ignored.

    A ``kid`` missing from a key set fetched for this very verification makes the token
    invalid; one missing from a key set fetched earlier, which may not be refetched yet
    (a key rotated in meanwhile), is :class:`JWKSUnavailable`.
    """

    def __init__(
        self,
        cfg: TokenConfig,
        *,
        insecure_skip_signature: bool = False,
        http_timeout: float = 5.0,
        jwks_cache_ttl: float = 300.0,
        jwks_refetch_interval: float = 5.0,
        jwks_fetch_rate: float = 2.0,
        jwks_fetch_burst: int = 10,
        jwks_max_concurrent_fetches: int = 4,
        jwks_cache_size: int = _MAX_JWKS_URLS,
        jwks_failure_cache_size: int = _MAX_FAILED_JWKS_URLS,
        config_prefix: str = "client.token",
    ) -> None:
        self._cfg = cfg
        self._insecure = insecure_skip_signature
        self._http_timeout = http_timeout
        self._jwks_ttl = jwks_cache_ttl
        self._jwks_refetch_interval = jwks_refetch_interval
        self._jwks_cache_size = max(1, jwks_cache_size)
        self._jwks_failure_cache_size = max(1, jwks_failure_cache_size)
        self._user_claim = cfg.user_id_claim or "sub"
        if not _USER_CLAIM.fullmatch(self._user_claim):
            raise ConfigError(f"{config_prefix}.user_id_claim: must match ^[a-zA-Z_]+$")
        self._aud_re = _compile(cfg.audience_regex, f"{config_prefix}.audience_regex")
        self._iss_re = _compile(cfg.issuer_regex, f"{config_prefix}.issuer_regex")
        self._rsa = _load_rsa(cfg.rsa_public_key, f"{config_prefix}.rsa_public_key")
        self._ec = _load_ec(cfg.ecdsa_public_key, f"{config_prefix}.ecdsa_public_key")
        self._jwks_url = cfg.jwks_public_endpoint
        if self._jwks_url:
            self._check_jwks_url(config_prefix)
        # known URLs (the configured one, or any that has served a usable key set) and all
        # others (in flight for the first time, or failed so far), each in LRU order; an
        # entry is in one of the two
        self._jwks: OrderedDict[str, _JWKSEntry] = OrderedDict()
        self._jwks_unknown: OrderedDict[str, _JWKSEntry] = OrderedDict()
        self._jwks_inflight: dict[str, anyio.Event] = {}  # URL → set when its fetch ends
        # the shared budget, for URLs that are not known only
        self._jwks_budget = _TokenBucket(jwks_fetch_rate, jwks_fetch_burst)
        slots = max(1, jwks_max_concurrent_fetches)
        self._jwks_slots = anyio.CapacityLimiter(slots)  # fetches of URLs not known
        self._jwks_known_slots = anyio.CapacityLimiter(slots)  # refetches of known URLs
        if self._jwks_url and not _PLACEHOLDER.search(self._jwks_url):
            self._jwks[self._jwks_url] = _JWKSEntry(configured=True)
        self._refusal_logged_at = -math.inf
        # the system trust store, as urllib used before; built once, not per fetch
        self._ssl_context = ssl.create_default_context() if self._jwks_url else None

    async def verify_connect(self, token: str) -> ConnectToken:
        """Verify a connection token; raises :class:`TokenInvalid` / :class:`TokenExpired`."""
        claims = await self._verified_claims(token)
        if claims.get("channel") not in (None, ""):
            raise TokenInvalid("connection token must not contain a channel claim")
        result = ConnectToken(
            user=_user(claims, self._user_claim),
            expire_at=_expire_at(claims),
            info=_binary(claims, "info", "b64info"),
            subs=_server_subs(claims),
            meta=claims.get("meta"),
        )
        _check_times(claims)
        return result

    async def verify_subscribe(self, token: str) -> SubscribeToken:
        """Verify a subscription token; the ``channel`` claim is required."""
        claims = await self._verified_claims(token)
        channel = claims.get("channel")
        if not isinstance(channel, str) or not channel:
            raise TokenInvalid("subscription token requires a channel claim")
        result = SubscribeToken(
            user=_user(claims, self._user_claim),
            channel=channel,
            client=_opt_str(claims, "client") or "",
            expire_at=_expire_at(claims),
            info=_binary(claims, "info", "b64info"),
            data=_binary(claims, "data", "b64data"),
            override=_override(claims.get("override")),
        )
        _check_times(claims)
        return result

    # -- pipeline ---------------------------------------------------------------------------

    async def _verified_claims(self, token: str) -> _Claims:
        parsed = _parse(token)
        variables = self._check_audience_issuer(parsed.claims)
        if not self._insecure:
            await self._check_signature(parsed, variables)
        _numeric(parsed.claims, "iat")
        _opt_str(parsed.claims, "jti")
        return parsed.claims

    def _check_audience_issuer(self, claims: _Claims) -> dict[str, str]:
        """Check ``aud``/``iss``; return named regex groups (for JWKS URL placeholders)."""
        cfg = self._cfg
        audiences = _audiences(claims)
        issuer = _opt_str(claims, "iss")
        if cfg.audience and cfg.audience not in audiences:
            raise TokenInvalid("token audience mismatch")
        if cfg.issuer and issuer != cfg.issuer:
            raise TokenInvalid("token issuer mismatch")
        variables: dict[str, str] = {}
        if self._aud_re is not None:
            variables |= _regex_groups(self._aud_re, audiences, "audience")
        if self._iss_re is not None:
            variables |= _regex_groups(self._iss_re, [issuer] if issuer else [], "issuer")
        return variables

    async def _check_signature(self, parsed: _Parsed, variables: dict[str, str]) -> None:
        alg = parsed.alg
        if alg not in SUPPORTED_ALGORITHMS:
            raise TokenInvalid(f"unsupported token algorithm {alg[:16]!r}")
        keys = await self._keys_for(parsed, variables)
        if not keys:
            raise TokenInvalid(f"token algorithm {alg} is not enabled")
        if not any(_signature_ok(alg, k, parsed.signing_input, parsed.signature) for k in keys):
            raise TokenInvalid("invalid token signature")

    async def _keys_for(self, parsed: _Parsed, variables: dict[str, str]) -> list[_Key]:
        alg = parsed.alg
        if self._jwks_url:
            if alg.startswith("HS"):
                return []
            jwk = await self._jwk(self._jwks_url_for(variables), parsed.kid)
            if jwk.alg is not None and jwk.alg != alg:
                raise TokenInvalid("token algorithm does not match the JWK")
            return [jwk.key]
        if alg.startswith("HS"):
            return self._hmac_keys()
        if alg.startswith("RS") and self._rsa is not None:
            return [self._rsa]
        if alg.startswith("ES") and self._ec is not None:
            return [self._ec]
        return []  # EdDSA is only available through JWKS

    def _hmac_keys(self) -> list[_Key]:
        cfg = self._cfg
        keys: list[_Key] = []
        if cfg.hmac_secret_key:
            keys.append(cfg.hmac_secret_key.encode())
        until = cfg.hmac_previous_secret_key_valid_until
        if cfg.hmac_previous_secret_key and (until <= 0 or time.time() < until):
            keys.append(cfg.hmac_previous_secret_key.encode())
        return keys

    # -- JWKS -------------------------------------------------------------------------------

    def _check_jwks_url(self, prefix: str) -> None:
        key = f"{prefix}.jwks_public_endpoint"
        scheme = urllib.parse.urlsplit(_PLACEHOLDER.sub("x", self._jwks_url)).scheme
        if scheme not in ("http", "https"):
            raise ConfigError(f"{key}: must be an http(s) URL")
        groups: set[str] = set()
        for pattern in (self._aud_re, self._iss_re):
            if pattern is not None:
                groups |= set(pattern.groupindex)
        placeholders = set(_PLACEHOLDER.findall(self._jwks_url))
        for name in sorted(placeholders):
            if name not in groups:
                raise ConfigError(f"{key}: placeholder {{{{{name}}}}} is no regex group")
        if not placeholders:
            return
        try:
            for name, pattern in (("audience_regex", self._aud_re), ("issuer_regex", self._iss_re)):
                if pattern is not None:
                    _check_placeholder_regex(pattern.pattern, placeholders, f"{prefix}.{name}")
        except ConfigError as exc:
            if not self._cfg.insecure_skip_jwks_endpoint_safety_check:
                raise
            log.warning(
                "JWKS endpoint safety check skipped (%s.insecure_skip_jwks_endpoint_safety_check)"
                ": this is insecure, any value a token names is fetched: %s",
                prefix,
                exc,
            )

    def _jwks_url_for(self, variables: dict[str, str]) -> str:
        """Fill ``{{name}}`` placeholders, refusing anything but ``[A-Za-z0-9_-]+`` (SSRF)."""

        def fill(match: re.Match[str]) -> str:
            value = variables.get(match.group(1), "")
            if not _SAFE_PLACEHOLDER_VALUE.fullmatch(value):
                raise TokenInvalid("unsafe value for a JWKS URL placeholder")
            return value

        return _PLACEHOLDER.sub(fill, self._jwks_url)

    async def _jwk(self, url: str, kid: str | None) -> _JWK:
        if not kid:
            raise TokenInvalid("token has no kid header")
        asked_at = time.monotonic()
        jwk = self._cached_jwk(url, kid)
        if jwk is not None:
            return jwk
        inflight = self._jwks_inflight.get(url)
        if inflight is None:
            keys = await self._refresh_jwks(url)
        else:
            # another verification is fetching this URL: share its result (the fetch has
            # its own deadline; this wait is bounded the same way)
            with anyio.move_on_after(self._http_timeout):
                await inflight.wait()
            entry = self._entry(url)
            if entry is None or entry.fetched_at < asked_at:  # failed, cancelled or slow
                error = entry.error if entry is not None else None
                raise JWKSUnavailable(f"JWKS key set is unavailable: {error or 'no answer'}")
            keys = entry.keys
        jwk = keys.get(kid)
        if jwk is not None:
            return jwk
        entry = self._entry(url)
        if entry is not None and entry.fetched_at >= asked_at:
            raise TokenInvalid("unknown token kid")  # not in a key set fetched just now
        # not in a key set fetched a moment before this token arrived: the key may have
        # been published since, and the set may not be fetched again yet
        raise JWKSUnavailable("unknown token kid, the key set was fetched too recently")

    def _entry(self, url: str) -> _JWKSEntry | None:
        entry = self._jwks.get(url)
        return entry if entry is not None else self._jwks_unknown.get(url)

    def _cached_jwk(self, url: str, kid: str) -> _JWK | None:
        entry = self._jwks.get(url)
        if entry is None or time.monotonic() - entry.fetched_at >= self._jwks_ttl:
            return None
        self._jwks.move_to_end(url)
        return entry.keys.get(kid)

    def _retry_after(self, entry: _JWKSEntry) -> float:
        """Seconds after an attempt before the URL may be fetched again."""
        interval = self._jwks_refetch_interval
        if entry.error is None or entry.known:
            return interval
        # a URL that never served a key set: back off while it keeps failing
        backoff = interval * 2.0 ** min(max(entry.failures - 1, 0), 16)
        return min(backoff, max(interval, _MAX_FAILURE_BACKOFF))

    async def _refresh_jwks(self, url: str) -> dict[str, _JWK]:
        """Fetch the key set of ``url``, or return the one fetched within the refetch interval.

        Raises :class:`JWKSUnavailable` when the last attempt failed and may not be repeated
        yet, the shared budget is spent (for a URL that is not known), or the fetch itself
        fails or runs out of time.
        """
        now = time.monotonic()
        entry = self._entry(url)
        if entry is not None and now - entry.attempted_at < self._retry_after(entry):
            if entry.error is not None:
                if not entry.known:
                    self._jwks_unknown.move_to_end(url)
                raise JWKSUnavailable(f"JWKS fetch failed recently: {entry.error}")
            return entry.keys
        known = entry is not None and entry.known
        if not known:
            if not self._jwks_budget.take(now):
                self._warn_refused("JWKS fetch of %s refused: fetch rate limit reached", url)
                raise JWKSUnavailable("JWKS fetch rate limit reached")
            if entry is None:
                self._make_room(url)
        # from here to the first await nothing yields: the entry and the in-flight marker
        # are in place before another verification can look
        created = entry is None
        if entry is None:
            entry = self._jwks_unknown[url] = _JWKSEntry()
        elif not known:
            self._jwks_unknown.move_to_end(url)
        previous = (entry.attempted_at, entry.error, entry.failures)
        entry.attempted_at = now
        entry.error = "fetch did not complete"
        done = self._jwks_inflight[url] = anyio.Event()
        slots = self._jwks_known_slots if known else self._jwks_slots
        try:
            with anyio.fail_after(self._http_timeout):
                async with slots:
                    body = await self._download(url)
            keys = _parse_jwks(body)
            if not keys:
                raise ValueError("no usable signing key in the JWK set")
        except TimeoutError as exc:
            self._fetch_failed(url, entry, f"no complete answer within {self._http_timeout:g} s")
            raise JWKSUnavailable(f"JWKS fetch failed: {entry.error}") from exc
        except (OSError, ValueError, RecursionError, msgspec.DecodeError) as exc:
            self._fetch_failed(url, entry, str(exc) or type(exc).__name__)
            raise JWKSUnavailable(f"JWKS fetch failed: {entry.error}") from exc
        except anyio.get_cancelled_exc_class():
            # the caller was cancelled: that says nothing about the endpoint, so forget the
            # attempt (the fetch budget still bounds how often this can happen)
            if created:
                self._jwks_unknown.pop(url, None)
            else:
                entry.attempted_at, entry.error, entry.failures = previous
            raise
        finally:
            del self._jwks_inflight[url]
            done.set()
        entry.keys = keys
        entry.fetched_at = time.monotonic()
        entry.error = None
        entry.failures = 0
        if not known:
            self._promote(url, entry)
        return keys

    def _fetch_failed(self, url: str, entry: _JWKSEntry, error: str) -> None:
        entry.error = error
        entry.failures += 1
        log.warning("JWKS fetch from %s failed: %s", url, error)

    def _make_room(self, new_url: str) -> None:
        """Drop the least recently used URLs that are not known (nor in flight) when full."""
        unknown = self._jwks_unknown
        for url in list(unknown):
            if len(unknown) < self._jwks_failure_cache_size:
                return
            if url not in self._jwks_inflight:
                del unknown[url]
        if len(unknown) >= self._jwks_failure_cache_size:
            self._warn_refused("JWKS fetch of %s refused: too many fetches in flight", new_url)
            raise JWKSUnavailable("too many JWKS fetches in flight")

    def _promote(self, url: str, entry: _JWKSEntry) -> None:
        """A URL served a usable key set: it is known now (the least recently used go)."""
        self._jwks_unknown.pop(url, None)
        self._jwks[url] = entry
        for old in list(self._jwks):
            if len(self._jwks) <= self._jwks_cache_size:
                return
            if old != url and old not in self._jwks_inflight:
                del self._jwks[old]

    def _warn_refused(self, message: str, url: str) -> None:
        """Log a refused fetch at most every 10 s (refusals are what an attack produces)."""
        now = time.monotonic()
        if now - self._refusal_logged_at >= 10.0:
            self._refusal_logged_at = now
            log.warning(message, url)

    async def _download(self, url: str) -> bytes:
        """GET a JWKS document (``jwks.download``: httpx is loaded at the first fetch)."""
        from .jwks import download

        return await download(url, ssl_context=self._ssl_context, io_timeout=self._http_timeout)


# -- parsing helpers ------------------------------------------------------------------------


def _b64url_decode(text: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 §2); raises ``ValueError``."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_object(raw: bytes, what: str) -> _Claims:
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise TokenInvalid(f"malformed token {what}") from exc
    if not isinstance(value, dict):
        raise TokenInvalid(f"token {what} is not a JSON object")
    return value


def _parse(token: str) -> _Parsed:
    """Split and decode a compact JWS without verifying it."""
    if not isinstance(token, str):
        raise TokenInvalid("token is not a string")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenInvalid("malformed token")
    try:
        header_raw, claims_raw, signature = (_b64url_decode(p) for p in parts)
    except ValueError as exc:
        raise TokenInvalid("malformed token encoding") from exc
    header = _json_object(header_raw, "header")
    alg = header.get("alg")
    kid = header.get("kid")
    if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
        raise TokenInvalid("malformed token header")
    claims = _json_object(claims_raw, "claims")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return _Parsed(alg, kid, claims, signing_input, signature)


def _opt_str(claims: Mapping[str, object], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        raise TokenInvalid(f"claim {name} must be a string")
    return value


def _numeric(claims: Mapping[str, object], name: str) -> int | float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenInvalid(f"claim {name} must be a number")
    return value


def _user(claims: Mapping[str, object], name: str) -> str:
    return _opt_str(claims, name) or ""


def _audiences(claims: Mapping[str, object]) -> list[str]:
    aud = claims.get("aud")
    if aud is None:
        return []
    if isinstance(aud, str):
        return [aud]
    return _str_list(aud, "aud")


def _str_list(value: object, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TokenInvalid(f"claim {name} must be an array of strings")
    return value


def _object(value: object, name: str) -> _Claims:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TokenInvalid(f"claim {name} must be an object")
    return value


def _regex_groups(pattern: re.Pattern[str], values: list[str], what: str) -> dict[str, str]:
    for value in values:
        match = pattern.fullmatch(value)
        if match is not None:
            return {k: v for k, v in match.groupdict().items() if v is not None}
    raise TokenInvalid(f"token {what} does not match the configured regex")


def _check_placeholder_regex(pattern: str, placeholders: set[str], key: str) -> None:
    """Centrifugo's JWKS template safety check (``jwtverify/validate.go``), for one regex.

    Claims fill the JWKS URL before any signature is checked, so a group that fills a
    placeholder may only match an explicit list of fixed strings (``acme|globex``): no
    character classes anywhere in the regex, and in such a group no ``.``, repetition,
    anchor or other construct that would match more than the listed values.
    """
    hint = "use an explicit list of allowed values (e.g. value1|value2|value3)"
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            raise ConfigError(
                f"{key}: contains character class syntax, which is not allowed when the "
                f"JWKS endpoint URL has placeholders; {hint}"
            )
        if pattern[i] == "\\":
            if pattern[i + 1 : i + 2] in ("d", "D", "w", "W", "s", "S", "p", "P"):
                raise ConfigError(
                    f"{key}: contains the character class shorthand \\{pattern[i + 1]}, which "
                    f"is not allowed when the JWKS endpoint URL has placeholders; {hint}"
                )
            i += 2
            continue
        i += 1
    for name, body_at in _named_groups(pattern):
        if name in placeholders and not _literal_group(pattern, body_at):
            raise ConfigError(
                f"{key}: named group {name!r} fills a placeholder of the JWKS endpoint URL, "
                f"so it may only list fixed values; {hint}"
            )


def _named_groups(pattern: str) -> Iterator[tuple[str, int]]:
    """``(name, index of the group's first character)`` for each ``(?P<name>...)``."""
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern.startswith("(?P<", i):
            end = pattern.find(">", i)
            if end < 0:
                return
            yield pattern[i + 4 : end], end + 1
            i = end + 1
            continue
        i += 1


def _literal_group(pattern: str, i: int) -> bool:
    """Does the group body starting at ``pattern[i]`` match only fixed alternatives?

    Allowed: plain characters, escaped punctuation, ``|`` and nested ``(...)``,
    ``(?:...)`` and ``(?P<x>...)`` groups (character classes are refused before).
    """
    depth = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escaped = pattern[i + 1 : i + 2]
            if not escaped or escaped.isalnum():  # \d \b \A \1 … are no fixed strings
                return False
            i += 2
        elif char == "(":
            if pattern.startswith("(?:", i):
                i += 3
            elif pattern.startswith("(?P<", i):
                i = pattern.index(">", i) + 1
            elif pattern.startswith("(?", i):  # flags, lookarounds, back-references
                return False
            else:
                i += 1
            depth += 1
        elif char == ")":
            if depth == 0:
                return True
            depth -= 1
            i += 1
        elif char in ".^$*+?{}":
            return False
        else:
            i += 1
    return False


def _expire_at(claims: Mapping[str, object]) -> int | None:
    """``expire_at`` > 0 → it; ``expire_at`` ≤ 0 → never; absent → ``exp`` (or never)."""
    value = claims.get("expire_at")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TokenInvalid("claim expire_at must be an integer")
        return value if value > 0 else None
    exp = _numeric(claims, "exp")
    return None if exp is None else int(exp)


def _check_times(claims: Mapping[str, object]) -> None:
    """Strict ``exp > now`` and ``nbf < now``, no leeway."""
    now = time.time()
    exp = _numeric(claims, "exp")
    nbf = _numeric(claims, "nbf")
    if exp is not None and not exp > now:
        raise TokenExpired("token expired")
    if nbf is not None and not nbf < now:
        raise TokenExpired("token is not valid yet")


def _binary(obj: Mapping[str, object], json_name: str, b64_name: str) -> bytes | None:
    """``b64<name>`` (standard base64) wins over ``<name>`` (any JSON → compact JSON)."""
    encoded = obj.get(b64_name)
    if encoded is not None and not isinstance(encoded, str):
        raise TokenInvalid(f"claim {b64_name} must be a string")
    if encoded:
        try:
            return base64.b64decode(encoded, validate=True)
        except ValueError as exc:  # binascii.Error, or a character that is not ASCII
            raise TokenInvalid(f"claim {b64_name} is not valid base64") from exc
    value = obj.get(json_name)
    return None if value is None else msgspec.json.encode(value)


def _bool_value(value: object, name: str) -> bool | None:
    """Parse ``{"value": bool}`` (protobuf ``BoolValue`` JSON shape)."""
    if value is None:
        return None
    inner = _object(value, f"override.{name}").get("value", False)
    if not isinstance(inner, bool):
        raise TokenInvalid(f"claim override.{name}.value must be a boolean")
    return inner


def _override(value: object) -> SubscriptionOverride | None:
    if value is None:
        return None
    obj = _object(value, "override")
    return SubscriptionOverride(
        presence=_bool_value(obj.get("presence"), "presence"),
        join_leave=_bool_value(obj.get("join_leave"), "join_leave"),
        force_push_join_leave=_bool_value(
            obj.get("force_push_join_leave"), "force_push_join_leave"
        ),
        force_positioning=_bool_value(obj.get("force_positioning"), "force_positioning"),
        force_recovery=_bool_value(obj.get("force_recovery"), "force_recovery"),
    )


def _server_subs(claims: Mapping[str, object]) -> list[ServerSubscription]:
    """Merge ``channels`` (plain) and ``subs`` (with options; wins for shared channels)."""
    subs: dict[str, ServerSubscription] = {}
    for channel in _str_list(claims.get("channels"), "channels"):
        subs[channel] = ServerSubscription(channel)
    for channel, raw in _object(claims.get("subs"), "subs").items():
        opts = _object(raw, f"subs.{channel}")
        subs[channel] = ServerSubscription(
            channel=channel,
            info=_binary(opts, "info", "b64info"),
            data=_binary(opts, "data", "b64data"),
            override=_override(opts.get("override")),
        )
    return list(subs.values())


# -- keys and signatures --------------------------------------------------------------------


def _compile(pattern: str, key: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:  # a{4294967296}, (((…)))
        raise ConfigError(f"{key}: invalid regex ({exc})") from exc


def _load_pem(text: str, key: str) -> object:
    data = text.strip().encode()
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{key}: not a PEM public key ({exc})") from exc


def _load_rsa(text: str, key: str) -> rsa.RSAPublicKey | None:
    if not text:
        return None
    loaded = _load_pem(text, key)
    if not isinstance(loaded, rsa.RSAPublicKey):
        raise ConfigError(f"{key}: not an RSA public key")
    return loaded


def _load_ec(text: str, key: str) -> ec.EllipticCurvePublicKey | None:
    if not text:
        return None
    loaded = _load_pem(text, key)
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        raise ConfigError(f"{key}: not an ECDSA public key")
    return loaded


def _signature_ok(alg: str, key: _Key, message: bytes, signature: bytes) -> bool:
    """Verify ``signature`` only if ``key`` belongs to the family of ``alg``."""
    try:
        if alg.startswith("HS") and isinstance(key, bytes):
            mac = hmac.new(key, message, "sha" + alg[2:]).digest()
            return hmac.compare_digest(mac, signature)
        if alg.startswith("RS") and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), _HASHES[alg[2:]]())
            return True
        if alg.startswith("ES") and isinstance(key, ec.EllipticCurvePublicKey):
            return _ecdsa_ok(alg, key, message, signature)
        if alg == "EdDSA" and isinstance(key, Ed25519PublicKey):
            key.verify(signature, message)
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def _ecdsa_ok(alg: str, key: ec.EllipticCurvePublicKey, message: bytes, signature: bytes) -> bool:
    curve, size = _EC_ALGS[alg]
    if key.curve.name != curve or len(signature) != 2 * size:
        return False
    r = int.from_bytes(signature[:size], "big")
    s = int.from_bytes(signature[size:], "big")
    key.verify(encode_dss_signature(r, s), message, ec.ECDSA(_HASHES[alg[2:]]()))
    return True


def _parse_jwks(body: bytes) -> dict[str, _JWK]:
    """Parse a JWK set; keys without ``kid``, not for signing or unusable are skipped."""
    document = msgspec.json.decode(body)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys: dict[str, _JWK] = {}
    for item in document["keys"]:
        if not isinstance(item, dict):
            continue
        kid, alg = item.get("kid"), item.get("alg")
        if not isinstance(kid, str) or not kid or item.get("use", "sig") != "sig":
            continue
        if alg is not None and not isinstance(alg, str):
            continue
        try:
            key = _jwk_public_key(item)
        except (ValueError, TypeError, KeyError, UnsupportedAlgorithm):
            continue
        if key is not None:
            keys[kid] = _JWK(key, alg)
    return keys


def _jwk_public_key(item: Mapping[str, object]) -> _PublicKey | None:
    kty = item.get("kty")
    if kty == "RSA":
        return rsa.RSAPublicNumbers(_jwk_int(item["e"]), _jwk_int(item["n"])).public_key()
    if kty == "EC":
        curve = _JWK_CURVES[str(item["crv"])]()
        x, y = _jwk_int(item["x"]), _jwk_int(item["y"])
        return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    if kty == "OKP" and item.get("crv") == "Ed25519":
        return Ed25519PublicKey.from_public_bytes(_jwk_bytes(item["x"]))
    return None


def _jwk_bytes(value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError("JWK member must be a string")
    return _b64url_decode(value.rstrip("="))


def _jwk_int(value: object) -> int:
    return int.from_bytes(_jwk_bytes(value), "big")


# -- minting (demo, CLI, tests) -------------------------------------------------------------


def encode_token(claims: dict[str, object], secret: str, algorithm: str = "HS256") -> str:
    """Sign ``claims``; HS* with the secret, other algorithms with a private-key PEM."""
    if algorithm in ("HS256", "HS384", "HS512"):
        header = _b64url_encode(msgspec.json.encode({"alg": algorithm, "typ": "JWT"}))
        payload = _b64url_encode(msgspec.json.encode(claims))
        signing_input = f"{header}.{payload}".encode("ascii")
        mac = hmac.new(secret.encode(), signing_input, "sha" + algorithm[2:]).digest()
        return f"{header}.{payload}.{_b64url_encode(mac)}"
    return jwt.encode(claims, secret, algorithm=algorithm)


def hmac_sha256_hex(secret: str, message: str) -> str:
    """Hex HMAC-SHA256 of ``message`` under ``secret`` (both UTF-8): the admin page's
    tokens and shared poll signatures."""
    return hmac.new(secret.encode(), message.encode(), "sha256").hexdigest()


def _timed_claims(user: str, ttl: float | None, claims: dict[str, object]) -> dict[str, object]:
    base: dict[str, object] = {"sub": user}
    if ttl is not None:
        base["exp"] = int(time.time() + ttl)
    return base | claims


def connection_token(user: str, secret: str, ttl: float | None = 3600, **claims: object) -> str:
    """HS256 connection token for ``user`` expiring in ``ttl`` seconds (``None``: no exp)."""
    return encode_token(_timed_claims(user, ttl, claims), secret)


def subscription_token(
    user: str, channel: str, secret: str, ttl: float | None = 3600, **claims: object
) -> str:
    """HS256 subscription token for ``user`` and ``channel``."""
    return encode_token(_timed_claims(user, ttl, {"channel": channel, **claims}), secret)
