"""Conditions a test needs or waits for, shared by every test package.

:func:`unavailable` is the one rule for a missing service or SDK (skip locally, fail under
``CI=true``), :func:`module` the same for an optional Python package; :func:`until` is the
one bounded poll.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from types import ModuleType
from typing import NoReturn

import anyio
import pytest

CI = os.environ.get("CI") == "true"


def unavailable(problem: str) -> NoReturn:
    """A service or SDK the test needs is missing: skip locally, fail under ``CI=true``."""
    if CI:
        pytest.fail(problem, pytrace=False)
    pytest.skip(problem)


def module(name: str) -> ModuleType:
    """Import an optional package a test module needs: under ``CI=true`` a missing one fails
    (the lock installs it), elsewhere the module is skipped."""
    if CI:
        return importlib.import_module(name)
    return pytest.importorskip(name)


async def until(
    check: Callable[[], object], within: float = 5.0, *, every: float = 0.02, what: str = ""
) -> None:
    """Poll ``check`` (sync or async) until it is true; fail after ``within`` seconds (with
    ``what`` in the message when given)."""
    with anyio.move_on_after(within):
        while True:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await anyio.sleep(every)
    raise AssertionError(f"not true within {within} s" + (f": {what}" if what else ""))
