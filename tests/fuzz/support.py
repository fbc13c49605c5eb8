"""Strategies shared by the fuzz tests.

JSON inputs are built as Python values and written by :func:`dump`, which also takes
:class:`RawJSON` pieces verbatim: that is how a mutation puts text no encoder would
write (nesting thousands deep, invalid UTF-8, ``NaN``, ``01``) anywhere in a document.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st


def examples(share: float = 1.0) -> settings:
    """Settings for a test that runs ``share`` of the profile's ``max_examples``."""
    return settings(max_examples=max(10, int(settings().max_examples * share)))


class Timer:
    """Fails a property whose single step took too long: a hang, or super-linear work."""

    def __init__(self, limit: float = 10.0) -> None:
        self.limit = limit

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.started
        assert elapsed < self.limit, f"took {elapsed:.1f} s"


# ------------------------------------------------------------------------- raw JSON


class RawJSON(bytes):
    """JSON text that :func:`dump` writes as it is (it need not be valid)."""


def dump(value: Any) -> bytes:
    """``value`` as JSON text, with :class:`RawJSON` pieces inserted verbatim.

    Lone surrogates in strings are written as escapes: valid JSON, not valid UTF-16.
    """
    if isinstance(value, RawJSON):
        return bytes(value)
    if isinstance(value, dict):
        items = (_scalar(str(k)) + b":" + dump(v) for k, v in value.items())
        return b"{" + b",".join(items) + b"}"
    if isinstance(value, list | tuple):
        return b"[" + b",".join(dump(v) for v in value) + b"]"
    return _scalar(value)


def _scalar(value: Any) -> bytes:
    text = json.dumps(value, ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # lone surrogates: escaped (raw ones are in GARBAGE)
        return json.dumps(value).encode()


EXTREME_INTS = [
    -1,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**32 - 1,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64 - 1,
    2**64,
    10**30,
    -(10**30),
]

ints = st.integers() | st.sampled_from(EXTREME_INTS)
texts = st.text(max_size=20) | st.sampled_from(["", " ", "\x00", "\u2028", "é" * 70])
finite = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | ints | finite | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def deep(draw: st.DrawFn) -> RawJSON:
    """Valid or cut JSON nested past any decoder's recursion limit (or just below)."""
    depth = draw(st.sampled_from([30, 100, 500, 1_000, 3_000, 20_000]))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"a":', b"}]")]))
    inner = b"1" if opener != b"[" else b""
    cut = draw(st.booleans())
    return RawJSON(opener * depth + inner + (b"" if cut else closer * depth))


GARBAGE = [
    b"",
    b"tru",
    b"nul",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"-1e999",
    b"1e-999",
    b"-0",
    b"01",
    b"0x10",
    b"1.",
    b".5",
    b"+1",
    b'"\\ud800"',
    b'"\\udc00\\ud800"',
    b'"\\u00"',
    b'"\\x41"',
    b'"\xff\xfe"',
    b'"\xc3"',
    b'"\xed\xa0\x80"',
    b'"\xf4\x90\x80\x80"',
    b'"\x00"',
    b'"unterminated',
    b"[1,]",
    b'{"a":1,}',
    b'{"a"}',
    b'{"a":1 "b":2}',
    b"[1 2]",
    b"\x00",
    b"\xef\xbb\xbf{}",
]


@st.composite
def huge_string(draw: st.DrawFn) -> RawJSON:
    size = draw(st.sampled_from([1_000, 70_000, 300_000]))
    char = draw(st.sampled_from(["x", "é", "\\n", "\\u0000", "\U0001f600"]))
    return RawJSON(b'"' + (char * size).encode() + b'"')


bad_values: st.SearchStrategy[Any] = st.one_of(
    json_values,
    st.floats(),  # NaN and Infinity are written as such: not JSON
    st.sampled_from(EXTREME_INTS),
    st.sampled_from([RawJSON(g) for g in GARBAGE]),
    deep(),
    huge_string(),
    st.binary(max_size=20).map(lambda b: RawJSON(b'"' + b + b'"')),
    st.binary(max_size=20).map(RawJSON),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replace(value: Any, path: tuple[Any, ...], fn: Callable[[Any], Any]) -> Any:
    if not path:
        return fn(value)
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, fn)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, fn)
    return copy


_DROP = object()


@st.composite
def mutate(draw: st.DrawFn, value: Any, keys: list[str] | None = None) -> Any:
    """``value`` with up to three random nodes replaced, wrapped, dropped or added to."""
    for _ in range(draw(st.integers(0, 3))):
        paths = list(_paths(value))
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "wrap", "add", "drop"]))
        if action == "replace" or (action == "drop" and not path):
            bad = draw(bad_values)
            value = _replace(value, path, lambda _v, bad=bad: bad)
        elif action == "wrap":
            value = _replace(value, path, lambda v: draw(st.sampled_from([[v], {"value": v}])))
        elif action == "add":
            key = draw(st.sampled_from(keys) | texts) if keys else draw(texts)
            bad = draw(bad_values)

            def add(v: Any, key: str = key, bad: Any = bad) -> Any:
                if isinstance(v, dict):
                    return {**v, key: bad}
                if isinstance(v, list):
                    return [*v, bad]
                return v

            value = _replace(value, path, add)
        else:
            parent, last = path[:-1], path[-1]

            def drop(v: Any, last: Any = last) -> Any:
                if isinstance(v, dict):
                    return {k: x for k, x in v.items() if k != last}
                return [x for i, x in enumerate(v) if i != last]

            value = _replace(value, parent, drop)
    return value


def mutated(base: st.SearchStrategy[Any], keys: list[str] | None = None) -> st.SearchStrategy[Any]:
    """Values of ``base``, mutated (see :func:`mutate`)."""
    return base.flatmap(lambda v: mutate(v, keys))


@st.composite
def mangle(draw: st.DrawFn, data: bytes) -> bytes:
    """Byte-level damage: cut, flip, insert, duplicate."""
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            data = draw(st.binary(max_size=8))
            continue
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["cut", "flip", "insert", "duplicate"]))
        if action == "cut":
            data = data[:pos]
        elif action == "flip":
            flipped = data[pos] ^ (1 << draw(st.integers(0, 7)))
            data = data[:pos] + bytes([flipped]) + data[pos + 1 :]
        elif action == "insert":
            data = data[:pos] + draw(st.binary(min_size=1, max_size=8)) + data[pos:]
        else:
            data = data[:pos] + data[pos:] + data[pos:]
    return data


# ------------------------------------------------------------ config-file-like values

file_scalars = st.one_of(
    json_scalars,
    st.dates(),
    st.datetimes(),
    st.times(),
    st.timedeltas(),
    st.binary(max_size=10),
)
file_values = st.recursive(
    file_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
durations = st.one_of(
    st.sampled_from(
        [
            "25s",
            "1m30s",
            "0",
            "-1s",
            "1d",
            "1h-1s",
            ".5s",
            "1.s",
            "500ms",
            "3µs",
            "1e3s",
            "9223372036854775807ns",
            "9223372036854775808ns",
            "2562047h47m16.854775808s",
            "99999999999999999999h",
            "1" * 5000 + "s",
            "0." + "1" * 5000 + "s",
            "\u0661s",  # an Arabic-Indic digit: \d matches it
        ]
    ),
    st.integers() | st.sampled_from(EXTREME_INTS),
    st.floats(),
    st.timedeltas(),
    st.from_regex(r"-?[0-9.]{1,12}(ns|us|µs|ms|s|m|h){1,3}", fullmatch=True),
)


def now_plus(seconds: float) -> int:
    return int(time.time() + seconds)
