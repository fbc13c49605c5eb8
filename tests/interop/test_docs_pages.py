"""Every page runs as a reader would run it: its configs saved, its servers started, its
commands and clients run against them, and what it shows compared with what they print.

The marker scheme and what the runner does on the reader's behalf (free ports instead of
8000, installs checked rather than run) are described in ``tests/docs_pages.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import docs_pages
from tests.conditions import unavailable

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
        unavailable(f"missing: {missing}")
    with docs_pages.page_session(page, tmp_path) as session:
        try:
            session.run()
        except docs_pages.PageFailure as exc:
            transcript = "\n".join(session.transcript[-40:])
            raise docs_pages.PageFailure(f"{exc}\n\nsession so far:\n{transcript}") from None


PAGE_THAT_IS_NO_LONGER_TRUE = """\
<!-- config: config.json -->
```json
{"http_api": {"key": "k"}}
```

<!-- start -->
```console
$ centrifuge-asgi serve --config config.json
...
INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)
```

<!-- run -->
```console
$ curl -s -X POST http://127.0.0.1:8000/api/publish -H 'X-API-Key: k' \\
    -d '{"channel": "news:1", "data": 1}'
{"result":{}}
```
"""


def test_a_page_that_stops_being_true_fails(tmp_path: Path) -> None:
    """The config has no ``news`` namespace, so the page's publish answers 102: the run
    fails with both outputs shown, and the server it started is stopped."""
    doc = tmp_path / "page.md"
    doc.write_text(PAGE_THAT_IS_NO_LONGER_TRUE, encoding="utf-8")
    page = docs_pages.parse_page(doc)
    assert not page.problems and page.has_session
    (tmp_path / "session").mkdir()
    with docs_pages.page_session(page, tmp_path / "session") as session:
        with pytest.raises(docs_pages.PageFailure, match="unknown channel") as failure:
            session.run()
        assert '{"result":{}}' in str(failure.value)
        assert session.ports[8000] != 8000
        assert session.started == []
