"""Coverage-guided fuzzing of the decoders with atheris (libFuzzer). Not run by CI.

Usage (docs/security.md, "Fuzzing")::

    .venv/bin/pip install atheris            # not in the lock: a manual tool
    .venv/bin/python -m tests.fuzz.atheris_harness TARGET [libFuzzer options]

TARGET is one of ``json``, ``protobuf``, ``api``, ``config``, ``env`` or ``jwt``; for
example ``json -max_total_time=600 -rss_limit_mb=4096 corpus/json``. An input that
raises anything but the documented errors is a crash: libFuzzer saves it as
``crash-<sha1>``. Turn each one into a test in tests/fuzz/test_regressions.py. The
``config``, ``env`` and ``jwt`` targets build their input (schema keys, variable names,
claim names) from the bytes, so the fuzzer need not discover the JSON syntax first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import sys
from collections.abc import Callable

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports():
    import msgspec

    from centrifuge_asgi import auth, config_loader
    from centrifuge_asgi.api_schema import REQUEST_TYPES, BatchRequest
    from centrifuge_asgi.config import TokenConfig
    from centrifuge_asgi.errors import ConfigError
    from centrifuge_asgi.protocol.codec import ProtocolError
    from centrifuge_asgi.protocol.json_codec import JSON
    from centrifuge_asgi.protocol.protobuf_codec import PROTOBUF

SECRET = "atheris-secret"
_API_TYPES = [*REQUEST_TYPES.values(), BatchRequest]
_loop = asyncio.new_event_loop()
_verifier = auth.TokenVerifier(TokenConfig(hmac_secret_key=SECRET))


def fuzz_json(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        JSON.decode_commands(data)


def fuzz_protobuf(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        PROTOBUF.decode_commands(data)


def fuzz_api(data: bytes) -> None:
    """What api.py does with a body: decode it into the method's request type."""
    if not data:
        return
    kind = _API_TYPES[data[0] % len(_API_TYPES)]
    with contextlib.suppress(msgspec.DecodeError, RecursionError):
        msgspec.json.decode(data[1:], type=kind)


def fuzz_config(data: bytes) -> None:
    """A config mapping: keys of the schema (picked by the input) and values of any type."""
    document = _mapping(atheris.FuzzedDataProvider(data), 0)
    with contextlib.suppress(ConfigError):
        config_loader.config_from_mapping(document, source="atheris", env={})


def _mapping(provider: atheris.FuzzedDataProvider, depth: int) -> dict[str, object]:
    return {
        provider.PickValueInList(_KEYS): _value(provider, depth + 1)
        for _ in range(provider.ConsumeIntInRange(0, 4))
    }


def _value(provider: atheris.FuzzedDataProvider, depth: int) -> object:
    kind = provider.ConsumeIntInRange(0, 7 if depth < 5 else 5)
    if kind == 0:
        return provider.ConsumeInt(provider.ConsumeIntInRange(1, 12))
    if kind == 1:
        return provider.ConsumeFloat()
    if kind == 2:
        return provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 40))
    if kind == 3:
        return provider.ConsumeBool()
    if kind == 4:
        return provider.PickValueInList([None, "25s", "1m30s", "0", "true", "chat", "json"])
    if kind == 5:
        return provider.ConsumeIntInRange(0, 100)
    if kind == 6:
        return [_value(provider, depth + 1) for _ in range(provider.ConsumeIntInRange(0, 3))]
    return _mapping(provider, depth)


def fuzz_env(data: bytes) -> None:
    """CENTRIFUGO_* variables: names of the schema (picked by the input) and values."""
    provider = atheris.FuzzedDataProvider(data)
    env = {}
    for _ in range(provider.ConsumeIntInRange(1, 4)):
        name = provider.PickValueInList(_ENV_NAMES)
        env[name] = provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 200))
    with contextlib.suppress(ConfigError):
        config_loader.load(None, env=env)


def fuzz_jwt(data: bytes) -> None:
    """A token whose claims are the input, signed with the right key."""
    provider = atheris.FuzzedDataProvider(data)
    if provider.ConsumeBool():
        header = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 64))
    else:
        header = b'{"alg":"HS256","typ":"JWT"}'
    claims = _claims(provider)
    encode = auth._b64url_encode
    signing_input = f"{encode(header)}.{encode(claims)}"
    mac = hmac.new(SECRET.encode(), signing_input.encode(), "sha256").digest()
    token = f"{signing_input}.{encode(mac)}"
    for verify in (_verifier.verify_connect, _verifier.verify_subscribe):
        with contextlib.suppress(auth.TokenInvalid, auth.TokenExpired, auth.JWKSUnavailable):
            _loop.run_until_complete(verify(token))


_CLAIMS = ["sub", "exp", "nbf", "iat", "expire_at", "aud", "iss", "jti", "channel", "client"]
_CLAIMS += ["info", "b64info", "data", "b64data", "meta", "channels", "subs", "override"]


def _claims(provider: atheris.FuzzedDataProvider) -> bytes:
    """A JSON object of claim names, with values of any JSON type (or raw bytes)."""
    parts = []
    for _ in range(provider.ConsumeIntInRange(0, 6)):
        name = json.dumps(provider.PickValueInList(_CLAIMS))
        kind = provider.ConsumeIntInRange(0, 5)
        if kind == 0:
            value = str(provider.ConsumeInt(provider.ConsumeIntInRange(1, 16))).encode()
        elif kind == 1:
            value = json.dumps(provider.ConsumeRegularFloat()).encode()
        elif kind == 2:
            value = json.dumps(provider.ConsumeUnicodeNoSurrogates(30)).encode()
        elif kind == 3:
            value = provider.PickValueInList([b"true", b"null", b"[]", b"{}", b'{"value":1}'])
        else:
            value = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 40))
        parts.append(name.encode() + b":" + value)
    return b"{" + b",".join(parts) + b"}"


def _env_names() -> list[str]:
    names = [f"CENTRIFUGO_{suffix}" for suffix in config_loader._env_table(config_loader.Config)]
    return [*names, "CENTRIFUGO_CHANNEL_NAMESPACES_CHAT_PRESENCE"]


def _schema_keys() -> list[str]:
    keys: set[str] = set()
    todo = [config_loader.Config]
    while todo:
        for field in config_loader.schema(todo.pop()).values():
            keys.add(field.name)
            if field.inner is not None:
                todo.append(field.inner)
    return sorted(keys)


_ENV_NAMES = _env_names()
_KEYS = _schema_keys()
TARGETS: dict[str, Callable[[bytes], None]] = {
    "json": fuzz_json,
    "protobuf": fuzz_protobuf,
    "api": fuzz_api,
    "config": fuzz_config,
    "env": fuzz_env,
    "jwt": fuzz_jwt,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.atheris_harness {{{','.join(TARGETS)}}} [options]")
    logging.disable(logging.WARNING)  # config warnings would flood the output
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
