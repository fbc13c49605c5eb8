"""The JWKS fetcher: one HTTP GET of a key set, with httpx.

Imported by :class:`~centrifuge_asgi.auth.TokenVerifier` at its first fetch, which only a
configured ``jwks_public_endpoint`` causes: token verification and minting never load
httpx. The key-set cache, budgets and parsing stay in ``auth.py``.
"""

from __future__ import annotations

import ssl
from typing import Final

import httpx

MAX_JWKS_BYTES: Final = 1 << 20
HEADERS: Final = {
    "Accept": "application/json",
    "Accept-Encoding": "identity",  # no decompression bombs: the size cap is on the wire
    "User-Agent": "centrifuge-asgi",
}


class FetchFailed(ValueError):
    """The request failed (connection, TLS, protocol, URL): httpx's error, by its message."""


async def download(url: str, *, ssl_context: ssl.SSLContext | None, io_timeout: float) -> bytes:
    """GET a JWKS document: no redirects, no proxies from the environment, size-capped.

    The caller puts the whole call under one deadline; ``io_timeout`` (httpx's own) only
    bounds single network operations (connect, each read). Raises :class:`ValueError`
    (:class:`FetchFailed` for a failed request) or :class:`OSError`.
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError("JWKS URL must be http(s)")
    try:
        return await _get(url, ssl_context, io_timeout)
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        raise FetchFailed(str(exc) or type(exc).__name__) from exc


async def _get(url: str, ssl_context: ssl.SSLContext | None, io_timeout: float) -> bytes:
    async with (
        httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            verify=ssl_context or True,
            timeout=io_timeout,
            headers=HEADERS,
        ) as client,
        client.stream("GET", url) as response,
    ):
        if response.status_code != 200:
            raise ValueError(f"HTTP status {response.status_code}")
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise ValueError("JWKS document has a content encoding")
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_JWKS_BYTES:
            raise ValueError("JWKS document too large")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError("JWKS document too large")
    return bytes(body)
