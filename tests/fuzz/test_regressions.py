"""Every crash the fuzz tests found, as a plain test of the input that found it.

Tests marked with :func:`~.known.regression` are strict xfails while their fix is pending
(see known.py): when the fix lands they pass, and the key must leave ``PENDING``.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from centrifuge_asgi import ClientError, Node
from centrifuge_asgi.auth import TokenInvalid, TokenVerifier, encode_token
from centrifuge_asgi.config import TokenConfig, parse_duration
from centrifuge_asgi.config_loader import config_from_mapping, merge_env
from centrifuge_asgi.errors import ConfigError
from centrifuge_asgi.session import TransportInfo

from .harness import CONFIG, TOKEN
from .harness import SECRET as HARNESS_SECRET
from .known import regression
from .support import dump

pytestmark = pytest.mark.anyio
SECRET = "regression-secret"


# ----------------------------------------------------------------------------------- JWT


@pytest.mark.parametrize("claim", ["b64info", "b64data"])
@pytest.mark.parametrize("value", ["\u0080", "é", "YQ==\u00ff"])
async def test_b64_claim_that_is_not_ascii_is_invalid(claim: str, value: str) -> None:
    """Was ValueError out of ``base64.b64decode``: a traceback and error 100 for the client."""
    verifier = TokenVerifier(TokenConfig(hmac_secret_key=SECRET))
    token = encode_token({"sub": "u1", "channel": "news:a", claim: value}, SECRET)
    with pytest.raises(TokenInvalid, match=claim):
        await verifier.verify_subscribe(token)
    connect = encode_token({"sub": "u1", claim: value, "subs": {"a": {claim: value}}}, SECRET)
    with pytest.raises(TokenInvalid):
        await verifier.verify_connect(connect)


async def test_connect_with_such_a_token_is_3500_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = encode_token({"sub": "u1", "b64info": "\u0080"}, HARNESS_SECRET)
    async with Node(CONFIG) as node:
        session = node.create_session(TransportInfo())
        await session.handle_frame(dump({"id": 1, "connect": {"token": token}}))
        assert session.close_code == 3500
        await session.finish()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("key", ["audience_regex", "issuer_regex"])
@pytest.mark.parametrize("pattern", ["a{4294967296}", "(" * 2000 + ")" * 2000])
def test_token_regex_that_does_not_compile_is_a_config_error(key: str, pattern: str) -> None:
    """Was OverflowError or RecursionError out of Node(config), so ``serve`` crashed."""
    with pytest.raises(ConfigError, match=key):
        TokenVerifier(TokenConfig(**{key: pattern}))
    config = config_from_mapping({"client": {"token": {key: pattern}}}, source="t", env={})
    with pytest.raises(ConfigError, match=key):
        Node(config)


# -------------------------------------------------------------------------------- config


@regression("duration-digits")
@pytest.mark.parametrize("text", ["1" * 5000 + "s", "1." + "0" * 5000 + "1s"])
def test_duration_of_too_many_digits(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ConfigError:
        return  # an integer part this long is out of range
    assert seconds == 1.0  # Go stops reading a fraction's digits past its precision


@regression("channel-regex")
@pytest.mark.parametrize("pattern", ["a{4294967296}", "(" * 2000 + ")" * 2000])
def test_channel_regex_that_does_not_compile_is_a_config_error(pattern: str) -> None:
    data = {"channel": {"namespaces": [{"name": "chat", "channel_regex": pattern}]}}
    with pytest.raises(ConfigError, match="channel_regex"):
        config_from_mapping(data, source="t", env={})


@regression("env-json-depth")
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CENTRIFUGO_CHANNEL_NAMESPACES", "[" * 5000 + "]" * 5000),
        ("CENTRIFUGO_CLIENT_PROXY_CONNECT_HTTP_STATIC_HEADERS", '{"a":' * 3000 + "1"),
    ],
)
def test_environment_json_nested_too_deeply_is_a_config_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        merge_env({}, {name: value})


@regression("named-item-names")
@pytest.mark.parametrize("name", [["chat"], {"a": 1}])
def test_named_list_item_of_unhashable_name(name: Any) -> None:
    data = {"channel": {"namespaces": [{"name": name}]}}
    merged = merge_env(data, {"CENTRIFUGO_CHANNEL_NAMESPACES": "chat news"})
    with pytest.raises(ConfigError, match="name"):
        config_from_mapping(merged, source="t", env={})


@regression("timedelta-range")
def test_duration_timedelta_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_duration(datetime.timedelta(days=-68_757_718))
    with pytest.raises(ConfigError):
        parse_duration(datetime.timedelta.max)


@regression("map-key-case")
def test_map_in_list_form_dumps_and_loads_back_the_same() -> None:
    data = {"rpc": {"proxy": {"grpc": {"static_metadata": [{"key": "A", "value": "1"}]}}}}
    config = config_from_mapping(data, source="t", env={})
    assert config_from_mapping(config.to_dict(), source="dump", env={}) == config


# ---------------------------------------------------------------------------- server API


@regression("server-subscribe-log")
async def test_server_side_subscribe_already_expired_logs_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """API ``subscribe`` with ``expire_at`` in the past: 110 for that connection, no traceback."""
    async with Node(CONFIG) as node:
        session = node.create_session(TransportInfo())
        await session.handle_frame(dump({"id": 1, "connect": {"token": TOKEN}}))
        with caplog.at_level(logging.INFO):
            await node.subscribe("u1", "news:a", expire_at=2)
            await anyio.lowlevel.checkpoint()
        await session.finish()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# ---------------------------------------------------------------------------- shared poll


@pytest.mark.parametrize("data", [b"O", b"\xff", b"{", b"1 2", b""])
async def test_shared_poll_publish_of_data_json_clients_cannot_get_is_107(data: bytes) -> None:
    """Was accepted: the version advanced, and JSON trackers silently never got it (a
    warning "push skipped for json clients"), while publish and map_publish answer 107."""
    async with Node(CONFIG) as node:
        with pytest.raises(ClientError) as caught:
            await node.shared_poll_publish("poll:a", "k1", data, 1)
        assert caught.value.code == 107
        await node.shared_poll_publish("poll:a", "k1", b'{"ok":1}', 1)  # JSON is fine
