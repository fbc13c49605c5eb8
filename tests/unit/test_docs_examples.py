"""The examples in the documentation run.

Markers (for every author of ``docs/*.md`` and ``README.md``)
--------------------------------------------------------------

Put an HTML comment on the line right before a fenced code block (blank lines in between
are allowed; nothing else is). Unmarked blocks are not checked.

``<!-- test -->`` before a ```` ```python ```` (or ```` ```py ````) block
    The block is executed with ``exec`` in a fresh namespace whose ``__name__`` is
    ``"__docs_example__"``, so an ``if __name__ == "__main__":`` tail (for example one that
    calls ``uvicorn.run``) is skipped. The current directory is a fresh temporary
    directory, and changes to ``os.environ`` are undone afterwards. A block may be async
    through a top-level ``asyncio.run(main())``. Keep blocks fast (well under a second or
    two), use no network except loopback, and use ``assert`` to check what the prose
    promises. The test fails if the block raises or runs longer than
    :data:`PYTHON_TIMEOUT` seconds.

``<!-- config -->`` before a ```` ```json ````, ```` ```toml ```` or ```` ```yaml ```` block
    The block is parsed and loaded with :meth:`centrifuge_asgi.Config.from_dict`. The test
    fails on a parse error, on a :class:`~centrifuge_asgi.ConfigError`, or when the load
    produced any warning (an unknown or unsupported key).

A marker that is not followed by a block of a matching language is an error too, so a typo
cannot silently switch a check off.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import textwrap
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import yaml  # pyyaml is in the `test` extra: a missing one is an error, never a skip

from centrifuge_asgi import Config

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

PYTHON_TIMEOUT = 30
TEST_MARKER = "<!-- test -->"
CONFIG_MARKER = "<!-- config -->"
PYTHON_LANGS = frozenset({"python", "py"})
CONFIG_LANGS = frozenset({"json", "toml", "yaml", "yml"})

_FENCE_OPEN = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Block:
    """One marked code block of a Markdown file."""

    path: Path
    name: str  # the path as shown in messages (relative to the repository root)
    line: int  # 1-based line of the first line of code (after the opening fence)
    marker: str
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.name}:{self.line}"


def _display_name(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name


def _find_close(lines: list[str], start: int, fence: str) -> int:
    """Index of the line closing the fence opened before ``start`` (len(lines) if none)."""
    closing = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
    for i in range(start, len(lines)):
        if closing.match(lines[i]):
            return i
    return len(lines)


def parse_blocks(path: Path) -> tuple[list[Block], list[str]]:
    """Marked blocks of ``path`` and the problems found (dangling or mismatched markers)."""
    name = _display_name(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    pending: tuple[str, int] | None = None  # (marker, 1-based line)
    i = 0
    while i < len(lines):
        text = lines[i].strip()
        match = _FENCE_OPEN.match(lines[i])
        if match:
            end = _find_close(lines, i + 1, match["fence"])
            lang = match["lang"].lower()
            if pending is not None:
                marker, marker_line = pending
                wanted = PYTHON_LANGS if marker == TEST_MARKER else CONFIG_LANGS
                if lang in wanted:
                    code = textwrap.dedent("\n".join(lines[i + 1 : end]))
                    blocks.append(Block(path, name, i + 2, marker, lang, code))
                else:
                    problems.append(
                        f"{name}:{marker_line}: {marker} is followed by a "
                        f"```{lang or '(no language)'} block; expected one of {sorted(wanted)}"
                    )
                pending = None
            i = end + 1
            continue
        if text in (TEST_MARKER, CONFIG_MARKER):
            if pending is not None:
                problems.append(f"{name}:{pending[1]}: marker without a block")
            pending = (text, i + 1)
        elif text and pending is not None:
            problems.append(f"{name}:{pending[1]}: marker without a block")
            pending = None
        i += 1
    if pending is not None:
        problems.append(f"{name}:{pending[1]}: marker without a block")
    return blocks, problems


def _collect() -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    problems: list[str] = []
    for path in DOC_FILES:
        if path.is_file():
            found, bad = parse_blocks(path)
            blocks += found
            problems += bad
    return blocks, problems


BLOCKS, PROBLEMS = _collect()
PYTHON_BLOCKS = [b for b in BLOCKS if b.marker == TEST_MARKER]
CONFIG_BLOCKS = [b for b in BLOCKS if b.marker == CONFIG_MARKER]


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


def _parse_config(block: Block) -> Any:
    if block.lang == "json":
        return json.loads(block.code)
    if block.lang == "toml":
        return tomllib.loads(block.code)
    return yaml.safe_load(block.code)


# --------------------------------------------------------------------------- tests


def test_markers_are_well_formed() -> None:
    assert not PROBLEMS, "\n".join(PROBLEMS)


def test_docs_have_marked_blocks() -> None:
    """Guard against the discovery silently finding nothing."""
    assert PYTHON_BLOCKS, "no <!-- test --> python block found"
    assert CONFIG_BLOCKS, "no <!-- config --> block found"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.where)
def test_python_example_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # Pad with newlines so tracebacks show the line numbers of the Markdown file.
    source = "\n" * (block.line - 1) + block.code
    code = compile(source, str(block.path), "exec")
    namespace: dict[str, Any] = {"__name__": "__docs_example__"}
    with _restored_environ(), _time_limit(PYTHON_TIMEOUT, block.where):
        exec(code, namespace)


@pytest.mark.parametrize("block", CONFIG_BLOCKS, ids=lambda b: b.where)
def test_config_example_loads_without_warnings(block: Block) -> None:
    data = _parse_config(block)
    assert isinstance(data, dict), f"{block.where}: the top level must be an object"
    config = Config.from_dict(data, source=block.where)
    assert config.warnings == (), f"{block.where}: {config.warnings}"


def test_parser_finds_markers_and_reports_mistakes(tmp_path: Path) -> None:
    doc = tmp_path / "sample.md"
    doc.write_text(
        "\n".join(
            [
                "<!-- test -->",
                "",
                "```python",
                "x = 1",
                "```",
                "```python",
                "unmarked = True",
                "```",
                "- item:",
                "  <!-- config -->",
                "  ```json",
                '  {"client": {"insecure": true}}',
                "  ```",
                "<!-- config -->",
                "```python",
                "wrong = 'language'",
                "```",
                "<!-- test -->",
                "some prose",
            ]
        ),
        encoding="utf-8",
    )
    blocks, problems = parse_blocks(doc)
    assert [(b.marker, b.lang, b.line, b.code) for b in blocks] == [
        (TEST_MARKER, "python", 4, "x = 1"),
        (CONFIG_MARKER, "json", 12, '{"client": {"insecure": true}}'),
    ]
    assert len(problems) == 2
    assert "sample.md:14" in problems[0] and "```python" in problems[0]
    assert "sample.md:18: marker without a block" in problems[1]
