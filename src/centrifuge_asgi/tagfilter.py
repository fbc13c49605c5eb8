"""Publication tags filters (Centrifugo v6 ``SubscribeRequest.tf``), pure and synchronous.

A subscribe that carries a filter tree has it checked and compiled once by
:func:`compile_filter`; the result is a function of a publication's tags that the
fan-out calls for every publication of the channel. It builds nothing per call: leaves
read one tag and compare strings, ``and``/``or`` loop over their compiled children, set
operators look the value up in a frozenset. Only the numeric comparisons parse the tag's
value (the filter's own value is parsed once, here).

The semantics are those of Centrifugo (centrifuge's ``internal/filter``):

- a missing tag reads as ``""`` for ``in``/``nin`` (so ``nin`` matches it, and ``in``
  only when ``""`` is listed); ``eq``, ``sw``, ``ew``, ``ct`` and the numeric
  comparisons never match it; ``neq`` and ``nex`` always do. A publication without tags
  is one whose every tag is missing;
- ``lt``/``lte``/``gt``/``gte`` compare decimal numbers exactly (``[+-]digits[.digits]``,
  at most 19 fraction digits and 200 characters); a value that is not such a number, on
  either side, makes the comparison false;
- validation: a leaf needs a known ``cmp``; ``val`` (and no ``vals``) for the single-value
  comparisons, a non-empty ``vals`` (and no ``val``) for ``in``/``nin``, neither for
  ``ex``/``nex``; a key except for ``ex``/``nex``. ``and``/``or`` need at least one
  child, ``not`` exactly one; any other ``op`` is invalid.

One limit is ours: a tree deeper than :data:`MAX_DEPTH` is refused as invalid, so that
neither compiling nor matching can exhaust the interpreter's stack.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from types import MappingProxyType

from .protocol.messages import FilterNode

__all__ = ["MAX_DEPTH", "NO_TAGS", "InvalidFilter", "TagsFilter", "compile_filter", "matches"]

TagsFilter = Callable[[Mapping[str, str]], bool]
"""A compiled filter: True when a publication with these tags is delivered."""

MAX_DEPTH = 64
"""Levels of nesting accepted in a filter tree (a leaf alone is depth 1)."""

NO_TAGS: Mapping[str, str] = MappingProxyType({})
"""The tags of a publication that has none."""

# udecimal.Parse (centrifuge's numeric parser): optional sign, digits, optional fraction.
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]{1,19})?", re.ASCII)
_MAX_NUMBER_LEN = 200

_SINGLE = frozenset({"eq", "neq", "sw", "ew", "ct", "gt", "gte", "lt", "lte"})
_SET = frozenset({"in", "nin"})
_EXISTS = frozenset({"ex", "nex"})


class InvalidFilter(ValueError):
    """The filter tree is not well-formed: the subscribe is refused with 107."""


def matches(tf: TagsFilter, tags: Mapping[str, str] | None) -> bool:
    """Whether a publication with ``tags`` (None: no tags) passes ``tf``."""
    return tf(NO_TAGS if tags is None else tags)


def _number(value: str) -> Decimal | None:
    if len(value) > _MAX_NUMBER_LEN or _NUMBER.fullmatch(value) is None:
        return None
    return Decimal(value)


def compile_filter(node: FilterNode) -> TagsFilter:
    """Validate ``node`` and compile it; raises :class:`InvalidFilter`."""
    return _compile(node, 1)


def _compile(node: FilterNode, depth: int) -> TagsFilter:
    if depth > MAX_DEPTH:
        raise InvalidFilter(f"filter nested deeper than {MAX_DEPTH} levels")
    op = node.op
    if op == "":
        return _leaf(node)
    if op in ("and", "or"):
        if not node.nodes:
            raise InvalidFilter(f"{op} node must have at least one child")
        children = tuple(_compile(child, depth + 1) for child in node.nodes)
        return _all(children) if op == "and" else _any(children)
    if op == "not":
        if len(node.nodes) != 1:
            raise InvalidFilter("not node must have exactly one child")
        return _not(_compile(node.nodes[0], depth + 1))
    raise InvalidFilter(f"invalid op: {op}")


def _all(children: tuple[TagsFilter, ...]) -> TagsFilter:
    def match(tags: Mapping[str, str]) -> bool:
        for child in children:  # noqa: SIM110 (all() would build a generator per call)
            if not child(tags):
                return False
        return True

    return match


def _any(children: tuple[TagsFilter, ...]) -> TagsFilter:
    def match(tags: Mapping[str, str]) -> bool:
        for child in children:  # noqa: SIM110 (any() would build a generator per call)
            if child(tags):
                return True
        return False

    return match


def _not(child: TagsFilter) -> TagsFilter:
    def match(tags: Mapping[str, str]) -> bool:
        return not child(tags)

    return match


def _leaf(node: FilterNode) -> TagsFilter:
    cmp, key, val, vals = node.cmp, node.key, node.val, node.vals
    if cmp == "":
        raise InvalidFilter("leaf node must have cmp set")
    if cmp in _SINGLE:
        if val == "":
            raise InvalidFilter(f"{cmp} comparison requires val")
        if vals:
            raise InvalidFilter(f"{cmp} comparison must not use vals")
    elif cmp in _SET:
        if not vals:
            raise InvalidFilter(f"{cmp} comparison requires non-empty vals")
        if val != "":
            raise InvalidFilter(f"{cmp} comparison must not use val")
    elif cmp in _EXISTS:
        if val != "" or vals:
            raise InvalidFilter(f"{cmp} comparison must not use val or vals")
    else:
        raise InvalidFilter(f"unknown comparison operator: {cmp}")
    if key == "" and cmp not in _EXISTS:
        raise InvalidFilter("leaf node requires key")
    return _LEAVES[cmp](key, val, frozenset(vals))


def _eq(key: str, val: str, vals: frozenset[str]) -> TagsFilter:
    return lambda tags: tags.get(key) == val


def _neq(key: str, val: str, vals: frozenset[str]) -> TagsFilter:
    return lambda tags: tags.get(key) != val


def _in(key: str, val: str, vals: frozenset[str]) -> TagsFilter:
    return lambda tags: tags.get(key, "") in vals


def _nin(key: str, val: str, vals: frozenset[str]) -> TagsFilter:
    return lambda tags: tags.get(key, "") not in vals


def _ex(key: str, val: str, vals: frozenset[str]) -> TagsFilter:
    return lambda tags: key in tags


def _nex(key: str, val: str, vals: frozenset[str]) -> TagsFilter:
    return lambda tags: key not in tags


def _sw(key: str, val: str, vals: frozenset[str]) -> TagsFilter:
    def match(tags: Mapping[str, str]) -> bool:
        value = tags.get(key)
        return value is not None and value.startswith(val)

    return match


def _ew(key: str, val: str, vals: frozenset[str]) -> TagsFilter:
    def match(tags: Mapping[str, str]) -> bool:
        value = tags.get(key)
        return value is not None and value.endswith(val)

    return match


def _ct(key: str, val: str, vals: frozenset[str]) -> TagsFilter:
    def match(tags: Mapping[str, str]) -> bool:
        value = tags.get(key)
        return value is not None and val in value

    return match


def _never(tags: Mapping[str, str]) -> bool:
    return False


def _numeric(test: Callable[[Decimal, Decimal], bool]) -> Callable[..., TagsFilter]:
    def build(key: str, val: str, vals: frozenset[str]) -> TagsFilter:
        bound = _number(val)
        if bound is None:  # valid, but no tag can compare with it
            return _never

        def match(tags: Mapping[str, str]) -> bool:
            value = tags.get(key)
            if value is None:
                return False
            number = _number(value)
            return number is not None and test(number, bound)

        return match

    return build


_LEAVES: dict[str, Callable[[str, str, frozenset[str]], TagsFilter]] = {
    "eq": _eq,
    "neq": _neq,
    "in": _in,
    "nin": _nin,
    "ex": _ex,
    "nex": _nex,
    "sw": _sw,
    "ew": _ew,
    "ct": _ct,
    "gt": _numeric(lambda a, b: a > b),
    "gte": _numeric(lambda a, b: a >= b),
    "lt": _numeric(lambda a, b: a < b),
    "lte": _numeric(lambda a, b: a <= b),
}
