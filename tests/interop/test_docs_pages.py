"""Every page runs as a reader would run it: its configs saved, its servers started, its
commands and clients run against them, and what it shows compared with what they print.

The marker scheme and what the runner does on the reader's behalf (free ports instead of
8000, installs checked rather than run) are described in ``tests/docs_pages.py``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests import docs_pages

PAGES = [page for page in docs_pages.all_pages() if page.has_session]

pytestmark = pytest.mark.interop


def test_pages_with_sessions_are_found() -> None:
    names = {page.name for page in PAGES}
    assert {"README.md", "docs/quickstart.md", "docs/server-api.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_page_runs_as_written(page: docs_pages.Page, tmp_path: Path) -> None:
    assert not page.problems, "\n".join(page.problems)
    commands = " ".join(b.code for b in page.blocks if b.kind in ("run", "start"))
    missing = [tool for tool in ("node", "curl") if tool in commands and not shutil.which(tool)]
    if "node " in commands and not docs_pages.JS_MODULES.is_dir():
        missing.append("tests/js/node_modules (npm ci --prefix tests/js)")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"required under CI=true: {missing}")
        pytest.skip(f"missing: {missing}")
    with docs_pages.page_session(page, tmp_path) as session:
        try:
            session.run()
        except docs_pages.PageFailure as exc:
            transcript = "\n".join(session.transcript[-40:])
            raise docs_pages.PageFailure(f"{exc}\n\nsession so far:\n{transcript}") from None
