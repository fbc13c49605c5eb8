"""The examples in the documentation run, and every code block is run or exempted.

The marker scheme (``<!-- test -->``, ``<!-- config -->``, ``<!-- file: … -->``,
``<!-- run -->``, ``<!-- start -->``, ``<!-- output: … -->``, ``<!-- stop -->``,
``<!-- not-run: reason -->``) is described in ``tests/docs_pages.py``. This module checks
that every fenced block of every page carries a well-formed marker, executes the
``<!-- test -->`` Python blocks in-process and loads the ``<!-- config -->`` blocks.
``tests/interop/test_docs_pages.py`` runs the pages' shell sessions against real servers.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from centrifuge_asgi import Config
from tests.docs_pages import (
    Block,
    Marker,
    all_pages,
    console_commands,
    install_check,
    output_matches,
    parse_config,
    parse_page,
)

PYTHON_TIMEOUT = 30

PAGES = all_pages()
BLOCKS = [block for page in PAGES for block in page.blocks]
PROBLEMS = [problem for page in PAGES for problem in page.problems]
PYTHON_BLOCKS = [b for b in BLOCKS if b.kind == "test"]
CONFIG_BLOCKS = [b for b in BLOCKS if b.kind == "config"]


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _time_limit(seconds: int, where: str) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (POSIX only; else no limit)."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"{where}: example still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _restored_environ() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --------------------------------------------------------------------------- tests


def test_every_block_is_marked_and_markers_are_well_formed() -> None:
    assert not PROBLEMS, "\n".join(PROBLEMS)


def test_docs_have_marked_blocks() -> None:
    """Guard against the discovery silently finding nothing."""
    assert PYTHON_BLOCKS, "no <!-- test --> python block found"
    assert CONFIG_BLOCKS, "no <!-- config --> block found"
    names = {page.name for page in PAGES}
    assert {"README.md", "docs/quickstart.md", "examples/chat/README.md"} <= names


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.where)
def test_python_example_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # Finalizers of earlier tests' leftovers (an SDK's unclosed socket warns when collected)
    # must not run inside the compiler: CPython 3.11 then fails the parse with
    # "SystemError: AST constructor recursion depth mismatch".
    gc.collect()
    # Pad with newlines so tracebacks show the line numbers of the Markdown file.
    source = "\n" * (block.line - 1) + block.code
    code = compile(source, str(block.path), "exec")
    namespace: dict[str, Any] = {"__name__": "__docs_example__"}
    with (
        _restored_environ(),
        _time_limit(PYTHON_TIMEOUT, block.where),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("error")  # a reader would see it printed
        exec(code, namespace)


@pytest.mark.parametrize("block", CONFIG_BLOCKS, ids=lambda b: b.where)
def test_config_example_loads_without_warnings(block: Block) -> None:
    data = parse_config(block)
    assert isinstance(data, dict), f"{block.where}: the top level must be an object"
    config = Config.from_dict(data, source=block.where)
    assert config.warnings == (), f"{block.where}: {config.warnings}"


def test_testclient_imports_without_a_deprecation_warning() -> None:
    """Starlette's TestClient warns when it has to fall back to ``httpx`` (the docs tell
    readers to install ``httpx2``, and the ``test`` extra has it)."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import starlette.testclient"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_parser_finds_markers_and_reports_mistakes(tmp_path: Path) -> None:
    doc = tmp_path / "sample.md"
    doc.write_text(
        "\n".join(
            [
                "<!-- test -->",  # 1
                "",
                "```python",
                "x = 1",
                "```",
                "```python",  # 6: unmarked
                "unmarked = True",
                "```",
                "- item:",
                "  <!-- config: config.json -->",  # 10
                "  ```json",
                '  {"client": {"insecure": true}}',
                "  ```",
                "<!-- config -->",  # 14: wrong language
                "```python",
                "wrong = 'language'",
                "```",
                "<!-- stop -->",  # 18
                "<!-- not-run: a diagram -->",
                "```",
                "a -> b",
                "```",
                "<!-- not-run -->",  # 23: no reason
                "```text",
                "x",
                "```",
                "",
                "    indented code",  # 28
                "<!-- test -->",  # 29: dangling
                "some prose",
            ]
        ),
        encoding="utf-8",
    )
    page = parse_page(doc)
    blocks = [(b.kind, b.marker.arg, b.lang, b.line, b.code) for b in page.blocks]
    assert blocks == [
        ("test", "", "python", 4, "x = 1"),
        ("config", "config.json", "json", 12, '{"client": {"insecure": true}}'),
        ("not-run", "a diagram", "", 21, "a -> b"),
    ]
    assert [s for s in page.steps if isinstance(s, Marker)] == [Marker("stop", "", 18)]
    problems = page.problems
    assert len(problems) == 6, problems
    assert "sample.md:6: unmarked ```python block" in problems[0]
    assert "sample.md:14" in problems[1] and "```python" in problems[1]
    assert "sample.md:23: <!-- not-run: … --> needs a value" in problems[2]
    assert "sample.md:24: unmarked ```text block" in problems[3]
    assert "sample.md:28: indented code block" in problems[4]
    assert "sample.md:29: marker without a block" in problems[5]


def test_console_blocks_and_output_matching() -> None:
    commands = console_commands(
        "$ curl -s -X POST http://127.0.0.1:8000/api/info \\\n    -d '{}'\n"
        '{"result":{}}\n\n$ centrifuge-asgi gentoken -u ann\n…\n'
    )
    assert [(c.text, c.expected) for c in commands] == [
        ("curl -s -X POST http://127.0.0.1:8000/api/info \\\n    -d '{}'", '{"result":{}}\n'),
        ("centrifuge-asgi gentoken -u ann", "…"),
    ]
    assert output_matches('{"client":"…","n":1}', '{"client":"abc-1","n":1}')
    assert not output_matches('{"client":"…","n":1}', '{"client":"abc","n":2}')
    assert output_matches("first\n...\nlast", "first\nx\ny\nlast\n")
    assert output_matches("first\n...\nlast", "first\nlast")
    assert output_matches("ready", "ready\nmore\npartial", prefix=True)
    assert not output_matches("ready", "rea", prefix=True)
    assert not output_matches("ready", "ready\nmore")


def test_installs_are_checked() -> None:
    assert install_check("centrifuge-asgi genconfig") is None
    assert install_check("pip install -e '.[server]'   # from a checkout") == ""
    assert install_check("python3 -m pip install centrifuge-python cent") == ""
    assert "not installed" in (install_check("pip install surely-not-installed-pkg") or "")
    assert install_check("npm install centrifuge ws") == ""
