"""Turning application values into payload bytes and back.

Payloads are opaque bytes on the way through the node, kept byte for byte; for JSON
clients they must be one JSON value (the JSON codec checks that when it encodes).
Python values are encoded with msgspec; ``bytes`` are taken as they are.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


def to_payload(value: Any) -> bytes:
    """Encode ``value`` as payload bytes (bytes and msgspec.Raw pass through)."""
    if isinstance(value, bytes | bytearray | memoryview | msgspec.Raw):
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
