"""The JSON codec's one-line check of encoded messages."""

from __future__ import annotations

import pytest

from centrifuge_asgi.protocol.codec import InappropriateProtocol
from centrifuge_asgi.protocol.json_codec import one_line


def test_one_line_drops_the_line_breaks_of_embedded_whitespace() -> None:
    assert one_line(b'{"a":\n1,\r\n"b":\r2}') == b'{"a":1,"b":2}'
    single = b'{"a":"x y"}'
    assert one_line(single) is single  # nothing to drop: the same object


def test_one_line_refuses_what_is_not_utf8_json() -> None:
    with pytest.raises(InappropriateProtocol):
        one_line(b"\x08\x01")
    with pytest.raises(InappropriateProtocol):
        one_line(b'"\xff"')


def test_replies_without_payloads_are_encoded_as_checked_ones() -> None:
    from msgspec import Raw

    from centrifuge_asgi.protocol.json_codec import JSON, _encoder, _without_payloads
    from centrifuge_asgi.protocol.messages import (
        ConnectResult,
        PublicationWire,
        Reply,
        SubscribeResult,
    )

    plain = [
        Reply(id=1, connect=ConnectResult(client="c\n\u2028", version="1", ping=25)),
        Reply(id=2, subscribe=SubscribeResult(epoch="e\r", offset=3)),
    ]
    for reply in plain:
        assert _without_payloads(reply)
        assert JSON.encode_reply(reply) == one_line(_encoder.encode(reply))
    multiline = Raw(b'{"a":\n1}')
    pub = PublicationWire(data=Raw(b"1"))
    checked = [
        Reply(id=1, connect=ConnectResult(client="c", data=multiline)),
        Reply(id=1, connect=ConnectResult(client="c", subs={"s": SubscribeResult()})),
        Reply(id=2, subscribe=SubscribeResult(data=multiline)),
        Reply(id=2, subscribe=SubscribeResult(publications=[pub])),
        Reply(id=2, subscribe=SubscribeResult(state=[pub])),
    ]
    for reply in checked:
        assert not _without_payloads(reply)
    assert JSON.encode_reply(checked[0]) == b'{"id":1,"connect":{"client":"c","data":{"a":1}}}'
    binary = Reply(id=2, subscribe=SubscribeResult(data=Raw(b"\xff\x01")))
    with pytest.raises(InappropriateProtocol):
        JSON.encode_reply(binary)
