"""Turning application values into payload bytes and back.

Payloads are opaque bytes on the way through the node; for JSON clients they must be
one JSON value. Python values are encoded with msgspec; ``bytes`` are taken as
already-encoded JSON (raw newlines, which can only be whitespace, are removed).
"""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


def to_payload(value: Any) -> bytes:
    """Encode ``value`` as payload bytes (bytes and msgspec.Raw pass through)."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return data.replace(b"\n", b"") if b"\n" in data else data
    if isinstance(value, msgspec.Raw):
        return bytes(value)
    return _encoder.encode(value)


def optional_payload(value: Any) -> bytes | None:
    """Like :func:`to_payload`, but ``None`` stays ``None`` (no payload)."""
    return None if value is None else to_payload(value)


def decode_payload(data: bytes | None) -> Any:
    """Decode JSON payload bytes into Python values (None when there is no payload)."""
    if not data:
        return None
    return msgspec.json.decode(data)
