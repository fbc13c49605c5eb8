"""Plain values ↔ protobuf messages, walking a message's fields by its descriptor.

:func:`fill` sets a message from a dict (the server API's replies, the gRPC proxies'
requests); :func:`to_plain` reads one back as a dict (the gRPC proxies' answers). Only
``google.protobuf`` is used here, never grpcio.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from msgspec import Raw


def is_repeated(field: Any) -> bool:
    """Whether a ``FieldDescriptor`` is repeated, on every supported protobuf runtime.

    ``is_repeated`` exists from protobuf 6.31 (where ``label`` became deprecated) and is
    the only way in 7.x, which dropped ``label``; 4.25 to 6.30 have only ``label``.
    """
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return bool(field.label == field.LABEL_REPEATED)


def _is_map(field: Any) -> bool:
    entry = field.message_type
    return entry is not None and bool(entry.GetOptions().map_entry)


def fill(message: Any, values: Mapping[str, Any]) -> None:
    """Set ``message``'s fields from ``values`` (``Raw`` → bytes; dicts into sub-messages
    and maps, lists into repeated fields); unknown keys and ``None`` values are skipped."""
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in values.items():
        field = fields.get(key)
        if field is None or value is None:
            continue
        target = getattr(message, key)
        entry = field.message_type
        if _is_map(field):
            if entry.fields_by_name["value"].message_type is None:
                target.update(value)
            else:
                for k, v in value.items():
                    fill(target[k], v)
        elif is_repeated(field):
            if entry is None:
                target.extend(value)
            else:
                for item in value:
                    fill(target.add(), item)
        elif entry is not None:
            target.SetInParent()
            fill(target, value)
        else:
            setattr(message, key, bytes(value) if isinstance(value, Raw) else value)


def to_plain(message: Any, raw_json: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The fields ``message`` has set, as a dict: sub-messages and maps as dicts, repeated
    fields as lists. A bytes field named in ``raw_json`` holds JSON and stays as ``Raw``;
    any other travels as its ``b64<name>`` sibling, unless the message sets that one."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        name = field.name
        if field.type == field.TYPE_BYTES:
            if name in raw_json:
                out[name] = Raw(value)
            elif not getattr(message, f"b64{name}", ""):
                out[f"b64{name}"] = base64.b64encode(value).decode()
        elif _is_map(field):
            nested = field.message_type.fields_by_name["value"].message_type is not None
            out[name] = {k: to_plain(v, raw_json) if nested else v for k, v in value.items()}
        elif field.message_type is not None:
            if is_repeated(field):
                out[name] = [to_plain(v, raw_json) for v in value]
            else:
                out[name] = to_plain(value, raw_json)
        else:
            out[name] = list(value) if is_repeated(field) else value
    return out


__all__ = ["fill", "is_repeated", "to_plain"]
