"""Fossil delta encoding (the format of fossil-scm's ``delta.c``), as the SDKs decode it.

A delta turns a *source* into a *target*. It starts with the target length and a newline,
then holds commands, each an integer followed by an operator: ``N@O,`` copies N bytes
from offset O of the source, ``N:`` followed by N bytes inserts those bytes, and the
final ``C;`` carries a checksum of the target. Integers are written in base 64 with the
digits ``0-9 A-Z _ a-z ~``, most significant first.

:func:`create` follows fossil's encoder: the source is cut into 16-byte blocks, every
16-byte window of the target is looked up among them, and each candidate block is
extended forwards and backwards; a copy is kept when it is longer than its own encoding.
Two differences: blocks are found by their bytes (a dict) where fossil uses a rolling
hash (the same candidates, cheaper in Python), and copies start and end on character
boundaries of a UTF-8 target, so the delta of a UTF-8 text is UTF-8 too (it can travel
as a JSON string). Any delta it makes is valid; its size may differ from other
encoders' on the same input.
:func:`apply` is the strict decoder (every bound and the checksum are checked).
"""

from __future__ import annotations

import struct

__all__ = ["DeltaError", "apply", "checksum", "create", "create_within"]

_DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_VALUE = {d: i for i, d in enumerate(_DIGITS)}
_NHASH = 16  # bytes per indexed source block (and per target window looked up)
_SEARCH_LIMIT = 250  # candidate blocks tried per target position, as in fossil
_CHUNK = 32  # bytes compared at once when extending a match (then doubled)


class DeltaError(ValueError):
    """A delta that is malformed or does not fit its source."""


def _int(value: int) -> bytes:
    if value == 0:
        return b"0"
    out = bytearray()
    while value > 0:
        out.append(_DIGITS[value & 63])
        value >>= 6
    out.reverse()
    return bytes(out)


def _digits(value: int) -> int:
    """How many base-64 digits ``value`` takes."""
    n, limit = 1, 64
    while value >= limit:
        n += 1
        limit <<= 6
    return n


def checksum(data: bytes) -> int:
    """Sum of the big-endian 32-bit words of ``data`` (zero-padded), modulo 2**32."""
    n = len(data)
    whole = n - n % 4
    total = sum(struct.unpack_from(f">{whole // 4}I", data)) if whole else 0
    if whole != n:
        total += int.from_bytes(data[whole:].ljust(4, b"\0"), "big")
    return total & 0xFFFFFFFF


def _is_multibyte_text(data: bytes) -> bool:
    """UTF-8 with characters beyond ASCII (whose boundaries copies must respect)."""
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _forward(src: bytes, x: int, out: bytes, y: int) -> int:
    """Length of the common run of ``src[x:]`` and ``out[y:]``: slices that double while
    they match and halve when they do not, then byte by byte (a long run costs a few
    slice comparisons, not one step per byte)."""
    limit = min(len(src) - x, len(out) - y)
    n = 0
    step = _CHUNK
    while n < limit:
        m = min(step, limit - n)
        if src[x + n : x + n + m] == out[y + n : y + n + m]:
            n += m
            step = m * 2
        elif m <= 8:
            break
        else:
            step = m // 2
    while n < limit and src[x + n] == out[y + n]:
        n += 1
    return n


def _backward(src: bytes, x: int, out: bytes, y: int, limit: int) -> int:
    """How many bytes before ``src[x]`` and ``out[y]`` agree (at most ``limit``)."""
    k = 0
    while k < limit and src[x - k - 1] == out[y - k - 1]:
        k += 1
    return k


def create(source: bytes, target: bytes) -> bytes:
    """A delta that :func:`apply` turns, with ``source``, back into ``target``."""
    delta = create_within(source, target, None)
    assert delta is not None  # no budget: always a delta
    return delta


def create_within(source: bytes, target: bytes, max_literal: int | None) -> bytes | None:
    """:func:`create`, or None once more than ``max_literal`` bytes of ``target`` were
    scanned without a match (each costs a slice and a dict lookup in Python): a bound
    keeps an unrelated payload from stalling the caller, and its delta would not be much
    shorter than the payload anyway."""
    len_src, len_out = len(source), len(target)
    parts: list[bytes] = [_int(len_out), b"\n"]
    if len_src <= _NHASH:
        parts += [_int(len_out), b":", target, _int(checksum(target)), b";"]
        return b"".join(parts)

    text = _is_multibyte_text(target)
    # Fossil finds candidates with a rolling hash of 16-byte windows; here the source's
    # blocks are indexed by their bytes (a dict), and each target window is looked up
    # by its bytes: the same candidates without collisions, and a slice plus a dict
    # lookup per target byte instead of Python arithmetic.
    n_blocks = (len_src - 1) // _NHASH  # blocks starting before len_src - NHASH
    index: dict[bytes, int] = {}
    collide = [-1] * n_blocks  # the previous block with the same bytes
    for block in range(n_blocks):
        i = block * _NHASH
        key = source[i : i + _NHASH]
        collide[block] = index.get(key, -1)
        index[key] = block

    base = 0
    scanned = 0  # target bytes passed over without a match
    while base + _NHASH < len_out:
        i = 0
        best_cnt = best_ofst = best_lit = 0
        while True:
            pos = base + i
            block = index.get(target[pos : pos + _NHASH], -1)
            limit = _SEARCH_LIMIT
            while block >= 0 and limit > 0:
                limit -= 1
                i_src = block * _NHASH
                j = _forward(source, i_src, target, pos)
                k = _backward(source, i_src, target, pos, min(i_src, i))
                cnt = j + k
                ofst = i_src - k
                lit = i - k
                # Keep copies on UTF-8 character boundaries of the target, so that the
                # inserted bytes of a text's delta are whole characters: a JSON client
                # receives the delta as a string.
                start = base + lit
                while text and cnt > 0 and 0x80 <= target[start] < 0xC0:
                    start += 1
                    lit += 1
                    ofst += 1
                    cnt -= 1
                end = start + cnt
                while text and cnt > 0 and end < len_out and 0x80 <= target[end] < 0xC0:
                    end -= 1
                    cnt -= 1
                cost = _digits(lit) + _digits(cnt) + _digits(ofst) + 3
                if cnt >= cost and cnt > best_cnt:
                    best_cnt, best_ofst, best_lit = cnt, ofst, lit
                block = collide[block]
            if best_cnt > 0:
                if best_lit > 0:
                    parts += [_int(best_lit), b":", target[base : base + best_lit]]
                    base += best_lit
                base += best_cnt
                parts += [_int(best_cnt), b"@", _int(best_ofst), b","]
                break
            if base + i + _NHASH >= len_out:
                parts += [_int(len_out - base), b":", target[base:]]
                base = len_out
                break
            i += 1
            scanned += 1
            if max_literal is not None and scanned > max_literal:
                return None
    if base < len_out:
        parts += [_int(len_out - base), b":", target[base:]]
    parts += [_int(checksum(target)), b";"]
    return b"".join(parts)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def integer(self) -> int:
        data, pos = self.data, self.pos
        value = 0
        start = pos
        while pos < len(data) and (digit := _VALUE.get(data[pos])) is not None:
            value = (value << 6) | digit
            pos += 1
        if pos == start:
            raise DeltaError("integer expected")
        self.pos = pos
        return value

    def char(self) -> int:
        if self.pos >= len(self.data):
            raise DeltaError("unexpected end of delta")
        c = self.data[self.pos]
        self.pos += 1
        return c


def apply(source: bytes, delta: bytes) -> bytes:
    """The target that ``delta`` describes, built from ``source``; DeltaError if invalid."""
    r = _Reader(delta)
    limit = r.integer()
    if r.char() != 0x0A:
        raise DeltaError("size integer not terminated by a newline")
    out = bytearray()
    while r.pos < len(delta):
        cnt = r.integer()
        op = r.char()
        if op == 0x40:  # '@' copy
            ofst = r.integer()
            if r.pos < len(delta) and r.char() != 0x2C:
                raise DeltaError("copy command not terminated by ','")
            if len(out) + cnt > limit:
                raise DeltaError("copy exceeds output size")
            if ofst + cnt > len(source):
                raise DeltaError("copy extends past end of source")
            out += source[ofst : ofst + cnt]
        elif op == 0x3A:  # ':' insert
            if len(out) + cnt > limit:
                raise DeltaError("insert exceeds output size")
            if r.pos + cnt > len(delta):
                raise DeltaError("insert count exceeds size of delta")
            out += delta[r.pos : r.pos + cnt]
            r.pos += cnt
        elif op == 0x3B:  # ';' checksum
            result = bytes(out)
            if cnt != checksum(result):
                raise DeltaError("bad checksum")
            if len(result) != limit:
                raise DeltaError("output size does not match the announced size")
            return result
        else:
            raise DeltaError("unknown delta operator")
    raise DeltaError("unterminated delta")
