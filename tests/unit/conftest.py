"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from centrifuge_asgi import Node
from tests.interop.support import make_config


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    """A running node with the interop tests' config; its sessions are finished after the
    test. A test module may define its own ``node`` instead."""
    async with Node(make_config()) as n:
        yield n
        for s in list(n.registry.sessions()):
            await s.finish()
