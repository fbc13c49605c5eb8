"""grpc/convert.py: repeated fields on every protobuf runtime, dict ↔ message both ways."""

from __future__ import annotations

import base64
import subprocess
import sys
from dataclasses import dataclass

import pytest
from google.protobuf.descriptor import FieldDescriptor
from msgspec import Raw

from centrifuge_asgi.grpc import api_pb2, proxy_pb2
from centrifuge_asgi.grpc.convert import fill, is_repeated, to_plain


@dataclass
class LabelOnly:
    """A field descriptor as protobuf 4.25 to 6.30 has it: ``label``, no ``is_repeated``."""

    label: int
    LABEL_REPEATED = FieldDescriptor.LABEL_REPEATED


@pytest.mark.parametrize(
    ("field", "repeated"),
    [
        (api_pb2.BatchRequest.DESCRIPTOR.fields_by_name["commands"], True),
        (api_pb2.BatchRequest.DESCRIPTOR.fields_by_name["parallel"], False),
        (LabelOnly(FieldDescriptor.LABEL_REPEATED), True),
        (LabelOnly(FieldDescriptor.LABEL_OPTIONAL), False),
    ],
)
def test_is_repeated_on_new_and_old_runtimes(field: object, repeated: bool) -> None:
    assert is_repeated(field) is repeated


def test_fill_then_to_plain_round_trip() -> None:
    message = proxy_pb2.ConnectResult()
    fill(
        message,
        {
            "user": "u",
            "data": Raw(b'{"a":1}'),
            "meta": Raw(b'{"m":true}'),
            "channels": ["a", "b"],
            "subs": {"c": {"info": Raw(b"\x00"), "override": {"presence": {"value": True}}}},
            "caps": [{"channels": ["x"], "allow": ["sub"]}],
            "labels": {"k": "v"},
            "expire_at": None,  # skipped, as the message constructor skips it
            "not_a_field": 1,
        },
    )
    assert to_plain(message, frozenset({"meta"})) == {
        "user": "u",
        "b64data": base64.b64encode(b'{"a":1}').decode(),
        "meta": Raw(b'{"m":true}'),
        "channels": ["a", "b"],
        "subs": {"c": {"b64info": "AA==", "override": {"presence": {"value": True}}}},
        "caps": [{"channels": ["x"], "allow": ["sub"]}],
        "labels": {"k": "v"},
    }


def test_to_plain_keeps_a_b64_field_the_message_sets() -> None:
    message = proxy_pb2.RPCResult(data=b"raw", b64data="Zm9v")
    assert to_plain(message) == {"b64data": "Zm9v"}


def test_convert_loads_no_grpcio() -> None:
    code = "import sys, centrifuge_asgi.grpc.convert; assert 'grpc' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
