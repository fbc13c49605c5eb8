"""The garbage-collector setting of ``centrifuge-asgi serve`` (the command owns its process).

Each connection keeps a few dozen long-lived objects (the library's, uvicorn's and the
WebSocket implementation's). CPython runs a full collection, which walks every tracked
object, whenever the survivors of earlier collections have grown by a quarter; while
thousands of clients connect, those passes over a growing heap take a large share of
the connect time (``docs/benchmarks.md``, "Connect rate"). ``serve`` therefore:

- freezes what start-up created (``gc.freeze()``: modules, config, the node), so that
  no collection walks it again;
- collects the youngest generation every 7,000 allocations instead of 700, so that
  the older generations, and full collections, come ten times less often. At most 7,000
  young objects wait for a collection; reference counting still frees everything else at
  once.

An application that embeds the library (its own ``uvicorn app:app``) keeps CPython's
defaults unless it calls :func:`tune_for_serving` itself.
"""

from __future__ import annotations

import gc

__all__ = ["SERVE_GEN0_THRESHOLD", "tune_for_serving"]

SERVE_GEN0_THRESHOLD = 7000


def tune_for_serving() -> None:
    """Freeze the start-up heap and raise the first generation's threshold (once the
    node is built, before the server accepts connections)."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(SERVE_GEN0_THRESHOLD, gen0), gen1, gen2)
