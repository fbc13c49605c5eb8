"""Turning application values into payload bytes and back, and checking publications.

Payloads are opaque bytes on the way through the node, kept byte for byte. Python values
are encoded with msgspec; ``bytes`` are taken as they are. A publication is checked once,
when it enters the node (:func:`publication_data_problem`): unless its channel's
``publication_data_format`` is ``binary``, it must be a payload that every JSON client can
receive (:func:`json_problem`).
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

_encoder = msgspec.json.Encoder()
_validator = msgspec.json.Decoder(msgspec.Raw)  # parses (validates) without building objects

MAX_DEPTH: Final = 512
"""How deeply a publication's JSON may nest arrays and objects.

The JSON decoders that read it are recursive: msgspec's validator here, and in the SDKs
``json.loads`` (centrifuge-python) among others. Their limit depends on the Python version
and on the depth of the call stack (about 970 levels under uvicorn on Python 3.11). This
fixed limit, checked without recursion, keeps every accepted payload well inside all of
them.
"""


class ParsedJson:
    """Payload bytes that a msgspec JSON decoder has already parsed as one JSON value.

    The data of a JSON client's command and the server API's ``data`` field arrive so.
    Publishing them skips the syntax pass of :func:`json_problem` (UTF-8 and depth are
    still checked: msgspec checks neither while skipping over a raw value).
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


_BYTES_LIKE: Final = (bytes, bytearray, memoryview, msgspec.Raw)  # taken as they are


def to_payload(value: Any) -> bytes:
    """Encode ``value`` as payload bytes (bytes and msgspec.Raw pass through)."""
    if isinstance(value, _BYTES_LIKE):
        return bytes(value)
    if isinstance(value, ParsedJson):
        return value.data
    return _encoder.encode(value)


def is_parsed(value: Any) -> bool:
    """Whether :func:`to_payload` of ``value`` is JSON by construction (no bytes given)."""
    return not isinstance(value, _BYTES_LIKE)


def optional_payload(value: Any) -> bytes | None:
    """Like :func:`to_payload`, but ``None`` stays ``None`` (no payload)."""
    return None if value is None else to_payload(value)


def decode_payload(data: bytes | None) -> Any:
    """Decode JSON payload bytes into Python values (None when there is no payload)."""
    if not data:
        return None
    return msgspec.json.decode(data)


# ------------------------------------------------------------------------------- checks


def json_problem(data: bytes, *, parsed: bool = False) -> str | None:
    """Why a JSON client could not receive ``data`` as a payload; None when it can.

    It must be one JSON value (as msgspec parses it: strict RFC 8259) in valid UTF-8,
    nested at most :data:`MAX_DEPTH` levels. ``parsed``: a msgspec JSON decoder has parsed
    it already, so the syntax is not checked again.
    """
    if not data:
        return "data is empty"
    if not data.isascii():
        try:
            data.decode()
        except UnicodeDecodeError:
            return "data is not valid UTF-8"
    if len(data) > 2 * MAX_DEPTH and deeper_than(data, MAX_DEPTH):
        return f"data nests deeper than {MAX_DEPTH} levels"
    if not parsed:
        try:
            _validator.decode(data)
        except msgspec.DecodeError:
            return "data is not JSON"
        except RecursionError:  # within MAX_DEPTH: only under an extremely deep call stack
            return "data nests too deeply to check here"
    return None


_OBJECT = re.compile(rb"[ \t\r\n]*\{")


def publication_data_problem(data: bytes, data_format: str, *, parsed: bool = False) -> str | None:
    """Why a channel with ``publication_data_format`` = ``data_format`` refuses ``data``.

    ``binary`` takes anything, empty data included (for Protobuf clients; a JSON client
    skips the publications it cannot receive). ``json_object`` takes what
    :func:`json_problem` accepts if it is an object. ``json`` and the default (``""``) take
    what :func:`json_problem` accepts.
    """
    if data_format == "binary":
        return None
    problem = json_problem(data, parsed=parsed)
    if problem is None and data_format == "json_object" and _OBJECT.match(data) is None:
        problem = "data is not a JSON object"
    return problem


_TO_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_STRUCTURE = bytes(range(256)).translate(None, b'[]{}"')
_RUNS = re.compile(rb"\(+|\)+")
_LEAF_PASSES = 8


def deeper_than(data: bytes, limit: int) -> bool:
    """Whether the JSON ``data`` nests arrays and objects more than ``limit`` levels deep.

    Without recursion, in a few passes of bytes methods; brackets inside strings do not
    count. Meant for valid JSON: for anything else the answer is arbitrary (the syntax
    check refuses it anyway).
    """
    if len(data) <= 2 * limit:
        return False  # each level takes two bytes
    # Only the brackets (as parentheses) and the quotes.
    s = data.translate(_TO_PARENS, _NOT_STRUCTURE)
    if s.count(b"(") <= limit:
        return False  # fewer openings, those in strings included, than the limit
    if b"\\" in data:
        # Escaped backslashes first, then escaped quotes: each quote left delimits a string.
        s = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(_TO_PARENS, _NOT_STRUCTURE)
    # Two adjacent quotes enclose no bracket, and dropping them keeps the others' parity.
    s = s.replace(b'""', b"")
    if b'"' in s:
        s = b"".join(s.split(b'"')[::2])  # what lies outside the strings
    # Peel the leaves ("()"): each pass lowers the greatest depth by exactly one. Wide,
    # shallow data (a long list of records) vanishes here.
    peeled = 0
    while s and peeled < _LEAF_PASSES:
        shorter = s.replace(b"()", b"")
        if len(shorter) == len(s):
            break
        s = shorter
        peeled += 1
    depth = peeled
    if depth > limit:
        return True
    for run in _RUNS.findall(s):
        if run[0] == 0x28:  # "("
            depth += len(run)
            if depth > limit:
                return True
        else:
            depth -= len(run)
    return False
