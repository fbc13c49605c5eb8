"""Checking a generated ``*_pb2`` module against a table of Centrifugo's wire facts.

Centrifugo's own .proto files are not vendored here, so each test module keeps their facts
as tables: message name -> field name -> ``(number, type as a .proto file spells it)``,
and method name -> ``(request, response, client streaming, server streaming)``.
:func:`assert_matches` compares one generated file with such tables.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from centrifuge_asgi.grpc.convert import is_repeated

Fields = dict[str, dict[str, tuple[int, str]]]
Methods = dict[str, tuple[str, str, bool, bool]]

_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_DOUBLE: "double",
}


def proto_type(field: Any) -> str:
    """A field's type as a .proto file spells it (``repeated X``, ``map<K,V>``)."""
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        key, value = message.fields_by_name["key"], message.fields_by_name["value"]
        return f"map<{proto_type(key)},{proto_type(value)}>"
    name = message.name if message is not None else _SCALARS[field.type]
    return f"repeated {name}" if is_repeated(field) else name


def assert_matches(file: Any, package: str, service: str, fields: Fields, methods: Methods) -> None:
    """``file`` (a ``FileDescriptor``) declares exactly ``fields`` and one service,
    ``package.service``, with exactly ``methods``."""
    assert file.package == package
    ours = {
        name: {f.name: (f.number, proto_type(f)) for f in message.fields}
        for name, message in file.message_types_by_name.items()
    }
    assert ours == fields
    (svc,) = file.services_by_name.values()
    assert svc.full_name == f"{package}.{service}"
    assert {
        m.name: (m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming)
        for m in svc.methods
    } == methods
