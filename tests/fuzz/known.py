"""Crashes the fuzz tests found whose fix is not in the code yet, and how they are told apart.

While a key is in :data:`PENDING`, the properties tolerate exactly that crash (the
exception type raised in that function), so the rest of the run still counts, and its
regression test in test_regressions.py is a strict xfail. Once the fix lands, that test
passes, the strict xfail fails the run, and the key must be removed from here.
"""

from __future__ import annotations

import logging
import traceback

import pytest

PENDING: dict[str, str] = {}
"""key → the fix that is missing."""

# key → (exception type names, function where it is raised)
_SIGNATURES: dict[str, tuple[set[str], str]] = {}


def _origin(exc: BaseException) -> str:
    """The innermost function of centrifuge_asgi that the exception went through."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "centrifuge_asgi" in f.filename and not f.name.startswith("<")
    ]
    return frames[-1].name if frames else ""


def pending(exc: BaseException) -> str | None:
    """The key of the pending crash that ``exc`` is, if any."""
    for key, (types, function) in _SIGNATURES.items():
        if key in PENDING and type(exc).__name__ in types and _origin(exc) == function:
            return key
    return None


def pending_record(record: logging.LogRecord) -> str | None:
    """The key of the pending crash that a logged traceback is, if any."""
    if record.exc_info is None or record.exc_info[1] is None:
        return None
    return pending(record.exc_info[1])


def regression(key: str) -> pytest.MarkDecorator:
    """Marks the regression test of ``key``: a strict xfail while its fix is pending."""
    return pytest.mark.xfail(key in PENDING, reason=PENDING.get(key, ""), strict=True)
