"""Placeholder: routes are added by the unidirectional transport work (see the open issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from ..node import Node


def routes(node: Node) -> list[BaseRoute]:
    return []
