"""A boolean attribute kept as one bit of an ``int`` slot.

Objects made once per connection (a subscription, a connection's writer) keep their
rarely changing booleans in one int instead of a slot each (8 bytes per slot). A
:class:`BitFlag` reads one of those bits as a ``bool``, and sets it when the class
allows that; hot paths may still test the bits inline.
"""

from __future__ import annotations

from typing import Any, overload


class BitFlag:
    """``bool(obj.<field> & bit)`` as an attribute; settable unless ``read_only``."""

    __slots__ = ("bit", "field", "read_only")

    def __init__(self, bit: int, field: str = "flags", *, read_only: bool = True) -> None:
        self.bit = bit
        self.field = field
        self.read_only = read_only

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> BitFlag: ...

    @overload
    def __get__(self, obj: object, owner: type[Any] | None = None) -> bool: ...

    def __get__(self, obj: object | None, owner: type[Any] | None = None) -> BitFlag | bool:
        if obj is None:
            return self
        return bool(getattr(obj, self.field) & self.bit)

    def __set__(self, obj: object, on: bool) -> None:
        if self.read_only:
            raise AttributeError(f"flag bit {self.bit} of {type(obj).__name__} is read-only")
        flags: int = getattr(obj, self.field)
        setattr(obj, self.field, flags | self.bit if on else flags & ~self.bit)
