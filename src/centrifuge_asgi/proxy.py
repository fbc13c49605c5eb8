"""Backend proxies over HTTP (placeholder: being written, see the open issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .node import Node


def install(node: Node) -> None:
    """Register handlers that call the proxies configured for ``node`` (none yet)."""
