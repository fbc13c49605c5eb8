"""What-if experiments on centrifuge-asgi's delivery path, for the profile section only.

These patches are applied to a *benchmark server process* (``serve.py --what-if NAME``)
to measure what a change in ``src/`` would buy before anyone makes it. They never ship:
the library's behaviour is whatever ``src/`` says.

- ``no-publish-yield``: ``Node.publish`` without its ``anyio.lowlevel.checkpoint()``
  after each publication, so a burst read from one connection is fanned out before the
  writers run and each writer sends everything queued as one frame (coalescing).
- ``gc-gen0-7000``: ``gc.set_threshold(7000, 10, 10)`` in the server process (CPython's
  default first-generation threshold is 700). Every connection leaves long-lived objects
  behind, so while thousands connect the collector runs often over a growing heap;
  ``benchmarks/connect_cost.py`` measures the library's share of that.

- ``gc-freeze``: ``gc.collect(); gc.freeze()`` once the library is imported, before the
  app is built: the start-up objects leave the collector's generations, so a full
  collection walks only what the connections added.

- ``pacer-unbounded``: the node's pacer (``pacing.py``) gets a slice of an hour instead
  of 10 ms, so paced work never waits for a later iteration. Under valgrind everything
  runs some 50 times slower and the 10 ms slice would run out where it does not natively;
  ``benchmarks/connect_instructions.py`` counts instructions with it.

(``no-write-timeout``, which removed the ``anyio.fail_after`` around every send, was
retired once commit bf0758f replaced that scope with a shared write watchdog.)

``no-publish-yield`` re-binds one function to a copy of its module globals in which
``anyio`` is replaced by a proxy that overrides a single attribute; nothing else changes.
"""

from __future__ import annotations

import gc
import types
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel


class _Proxy:
    """Forwards every attribute to ``real`` except the overridden ones."""

    def __init__(self, real: Any, **overrides: Any) -> None:
        self._real = real
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def _no_checkpoint() -> None:
    return None


def _rebind(fn: Callable[..., Any], **globals_over: Any) -> Callable[..., Any]:
    new_globals = {**fn.__globals__, **globals_over}
    new = types.FunctionType(fn.__code__, new_globals, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    return new


def _uses(fn: Callable[..., Any], *names: str) -> bool:
    """True when ``fn`` (or a function nested in it) refers to all ``names``."""
    seen: set[str] = set()
    stack = [fn.__code__]
    while stack:
        code = stack.pop()
        seen.update(code.co_names)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return all(n in seen for n in names)


def apply(names: list[str]) -> list[str]:
    """Apply the named patches; returns the ones that found their target."""
    from centrifuge_asgi.node import Node

    applied = []
    if "no-publish-yield" in names and _uses(Node.publish, "lowlevel", "checkpoint"):
        lowlevel = _Proxy(anyio.lowlevel, checkpoint=_no_checkpoint)
        Node.publish = _rebind(Node.publish, anyio=_Proxy(anyio, lowlevel=lowlevel))  # type: ignore[method-assign]
        applied.append("no-publish-yield")
    if "gc-gen0-7000" in names:
        gc.set_threshold(7000, 10, 10)
        applied.append("gc-gen0-7000")
    if "gc-freeze" in names:
        gc.collect()
        gc.freeze()
        applied.append("gc-freeze")
    if "pacer-unbounded" in names:
        from centrifuge_asgi.pacing import Pacer

        Pacer.__init__.__defaults__ = (3600.0,)
        applied.append("pacer-unbounded")
    return applied
