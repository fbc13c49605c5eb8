"""The documentation runs as written: every code block of every page is run or exempted.

Pages: ``README.md``, ``docs/*.md`` and ``examples/*/README.md``.
``tests/unit/test_docs_examples.py`` checks that every block is marked, runs the
``test`` and ``config`` blocks in-process, and ``tests/interop/test_docs_pages.py`` runs
each page's session (``file``, ``run``, ``start``, ``output`` and ``stop``) the way a reader
would: in order, in a shell, against real servers.

Markers (for every author of a page)
------------------------------------

Put an HTML comment on the line right before a fenced code block (blank lines in between
are allowed; nothing else is). **Every fenced block needs one**, and indented code blocks
are not allowed (use a fenced block): the test fails on an unmarked block, so a block is
either run or deliberately exempted, with the reason written down.

``<!-- test -->`` before a ```` ```python ```` block
    Executed in-process with ``exec`` in a fresh namespace whose ``__name__`` is
    ``"__docs_example__"`` (an ``if __name__ == "__main__":`` tail is skipped), in a fresh
    temporary directory, with ``os.environ`` restored afterwards, and any warning it emits
    is an error. Use ``assert`` to check what the prose promises; keep it fast (a few
    seconds at most), with no network but loopback. May be async through a top-level
    ``asyncio.run(main())``.

``<!-- config -->`` before a ```` ```json ````, ```` ```toml ```` or ```` ```yaml ```` block
    Loaded with :meth:`centrifuge_asgi.Config.from_dict`; a parse error, a
    ``ConfigError`` or any load warning fails. ``<!-- config: NAME -->`` also saves it
    as ``NAME`` in the page's directory, where the page's commands find it (for example
    ``centrifuge-asgi serve --config config.json``).

``<!-- file: NAME -->`` before a block of any language
    Saved as ``NAME`` in the page's directory (an app module, a client script, a backend).

``<!-- run -->`` before a ```` ```console ```` or ```` ```sh ```` block
    Run now, in the page's directory. In a ``console`` block every line that starts with
    ``$ `` is a command (a line ending in ``\\`` continues on the next line); the lines
    after it, up to the next command, are its expected output (stdout and stderr, as a
    terminal shows them). An ``sh`` block is one script whose output is not shown. Every
    command must exit with status 0.

``<!-- start -->`` before a ```` ```console ```` block with one command
    The command keeps running, as in another terminal: a server, a listening client, a
    stream. The runner starts it in the background and waits until the output the block
    shows has appeared (so show at least the line that says it is ready: uvicorn's
    "Uvicorn running on …", or a client's "subscribed").

``<!-- output: PREFIX -->`` before a ```` ```text ```` block
    What a started command has printed by now, in full: the most recent ``start`` whose
    command begins with ``PREFIX``. The runner waits until the output matches.

``<!-- stop -->`` or ``<!-- stop: PREFIX -->``, on its own
    Stops every started command (or those beginning with ``PREFIX``), as Ctrl+C would.
    Write it where the page tells the reader to stop a server, for example before a second
    server takes the same port. Whatever still runs is stopped at the end of the page.

``<!-- not-run: REASON -->`` before a block of any language
    Not executed, for the reason given (which must not be empty): a diagram, a browser
    snippet, a fragment of the reader's own code, a command that takes many minutes.

Comparing output
    Lines are compared after trailing whitespace is removed, and blank lines at the
    start and end are ignored. ``…`` (or ``...``) inside a line matches any text in that
    line (ids, epochs, timestamps, tokens); a line that is only ``…`` or ``...`` matches
    any number of lines, including none.

What the runner does on the reader's behalf
    * Each page runs in a fresh temporary directory holding symlinks to the repository's
      top-level files and folders (so ``python examples/chat/app.py`` works as it does
      from a checkout) and ``node_modules`` pointing at ``tests/js/node_modules`` (as if
      ``npm install centrifuge ws`` had run there). Commands run with ``bash``, the
      test's Python environment first on ``PATH``, stdin from ``/dev/null``,
      ``PYTHONUNBUFFERED=1`` (a terminal shows ``print`` at once; a pipe would buffer it)
      and ``COLUMNS=80`` (a terminal 80 columns wide, for ``--help`` output).
      Shell variables set by one command (``TOKEN=$(…)``) are seen by the later ones,
      started commands included, and reach the programs they start only when exported
      (``export TOKEN=$(…)``), as in a terminal.
    * **Ports.** Every port the page names (``localhost:8000``, ``127.0.0.1:9000``,
      ``--port 3000``, ``PORT=8001``, ``"port": 8000``; and 8000 always) is replaced by a
      free port everywhere in the page's commands, saved files, configs and expected
      output, so pages never clash with each other or with anything on the machine.
      ``PORT``, ``UVICORN_PORT`` and ``CENTRIFUGO_HTTP_SERVER_PORT`` (unless the page's
      config sets ``http_server.port`` to another port) are set to the port standing for
      8000, so ``centrifuge-asgi serve``, ``uvicorn app:app`` and the chat example, which
      listen on 8000 by default, listen there.
    * **Installs are checked, not run**: a ``pip install``/``python -m pip install`` or
      ``npm install`` command passes when what it names is installed in the test's
      environment (``tests/js/node_modules`` for npm). A test cannot download packages.
    * Every wait is bounded (:data:`COMMAND_TIMEOUT`, :data:`READY_TIMEOUT`,
      :data:`OUTPUT_TIMEOUT`), and every started command is stopped when the page ends.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
JS_MODULES = ROOT / "tests" / "js" / "node_modules"

COMMAND_TIMEOUT = 30.0  # one foreground command
READY_TIMEOUT = 20.0  # a started command shows its output
OUTPUT_TIMEOUT = 10.0  # an output block matches
STOP_TIMEOUT = 5.0  # a started command exits after Ctrl+C

KINDS = ("test", "config", "file", "run", "start", "output", "stop", "not-run")
LANGS: dict[str, frozenset[str] | None] = {
    "test": frozenset({"python", "py"}),
    "config": frozenset({"json", "toml", "yaml", "yml"}),
    "file": None,  # any
    "run": frozenset({"console", "sh", "bash", "shell"}),
    "start": frozenset({"console"}),
    "output": frozenset({"text", ""}),
    "not-run": None,
}
NEEDS_ARG = {"file", "output", "not-run"}
SESSION_KINDS = {"run", "start"}

_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>[a-z-]+)\b\s*(?::\s*(?P<arg>.*?))?\s*-->\s*$")
_FENCE_OPEN = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")


@dataclass(frozen=True)
class Marker:
    kind: str
    arg: str
    line: int  # 1-based


@dataclass(frozen=True)
class Block:
    """One marked code block of a page."""

    path: Path
    name: str  # the path as shown in messages (relative to the repository root)
    line: int  # 1-based line of the first line of code (after the opening fence)
    marker: Marker
    lang: str
    code: str

    @property
    def kind(self) -> str:
        return self.marker.kind

    @property
    def where(self) -> str:
        return f"{self.name}:{self.line}"


@dataclass
class Page:
    path: Path
    name: str
    steps: list[Block | Marker] = field(default_factory=list)  # a Marker here is a stop
    problems: list[str] = field(default_factory=list)

    @property
    def blocks(self) -> list[Block]:
        return [s for s in self.steps if isinstance(s, Block)]

    @property
    def has_session(self) -> bool:
        return any(b.kind in SESSION_KINDS for b in self.blocks)


def page_paths() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "examples").glob("*/README.md")),
    ]


def display_name(path: Path) -> str:
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


def parse_page(path: Path) -> Page:
    """The steps of ``path`` and the problems found (unmarked blocks, bad markers)."""
    page = Page(path, display_name(path))
    name = page.name
    lines = path.read_text(encoding="utf-8").splitlines()
    pending: Marker | None = None
    previous = ""  # the last non-blank line outside fences
    i = 0
    while i < len(lines):
        raw = lines[i]
        match = _FENCE_OPEN.match(raw)
        if match:
            end = _find_close(lines, i + 1, match["fence"])
            lang = match["lang"].lower()
            if pending is None:
                page.problems.append(
                    f"{name}:{i + 1}: unmarked ```{lang} block: run it or mark it "
                    "<!-- not-run: REASON --> (see tests/docs_pages.py)"
                )
            else:
                wanted = LANGS[pending.kind]
                if wanted is not None and lang not in wanted:
                    page.problems.append(
                        f"{name}:{pending.line}: <!-- {pending.kind} --> is followed by a "
                        f"```{lang or '(no language)'} block; expected one of {sorted(wanted)}"
                    )
                else:
                    code = textwrap.dedent("\n".join(lines[i + 1 : end]))
                    page.steps.append(Block(path, name, i + 2, pending, lang, code))
                pending = None
            previous = raw
            i = end + 1
            continue
        marker = _MARKER.match(raw)
        if marker and marker["kind"] in KINDS:
            found = Marker(marker["kind"], (marker["arg"] or "").strip(), i + 1)
            if pending is not None:
                page.problems.append(f"{name}:{pending.line}: marker without a block")
                pending = None
            if found.kind in NEEDS_ARG and not found.arg:
                page.problems.append(f"{name}:{found.line}: <!-- {found.kind}: … --> needs a value")
            elif found.kind == "stop":
                page.steps.append(found)
            else:
                pending = found
        elif raw.strip():
            if pending is not None:
                page.problems.append(f"{name}:{pending.line}: marker without a block")
                pending = None
            indented = raw.startswith(("    ", "\t"))
            after_blank = i > 0 and not lines[i - 1].strip()
            in_list = bool(_LIST_ITEM.match(previous)) or previous.startswith((" ", "\t"))
            if indented and after_blank and not in_list:
                page.problems.append(
                    f"{name}:{i + 1}: indented code block: use a fenced block with a marker"
                )
            previous = raw
        i += 1
    if pending is not None:
        page.problems.append(f"{name}:{pending.line}: marker without a block")
    return page


def all_pages() -> list[Page]:
    return [parse_page(p) for p in page_paths() if p.is_file()]


def parse_config(block: Block) -> Any:
    if block.lang == "json":
        return json.loads(block.code)
    if block.lang == "toml":
        return tomllib.loads(block.code)
    return yaml.safe_load(block.code)


# --------------------------------------------------------------------------- console blocks


@dataclass(frozen=True)
class Command:
    text: str  # without the "$ " prompt; continuation lines kept
    expected: str  # the output shown below it


def console_commands(code: str) -> list[Command]:
    commands: list[Command] = []
    lines = code.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            if lines[i].strip():
                raise ValueError(f"output before the first command: {lines[i]!r}")
            i += 1
            continue
        parts = [lines[i][2:]]
        while parts[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            parts.append(lines[i])
        i += 1
        output: list[str] = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        commands.append(Command("\n".join(parts), "\n".join(output)))
    return commands


_ELLIPSIS = re.compile(r"\.\.\.|…")


def _trim(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r", "").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def output_pattern(expected: str) -> re.Pattern[str]:
    """A regex for the shown output: ``…``/``...`` is any text in a line, alone any lines."""
    parts: list[str] = []
    for line in _trim(expected):
        if line.strip() in ("...", "…"):
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            pieces = _ELLIPSIS.split(line)
            parts.append("[^\n]*?".join(re.escape(p) for p in pieces) + r"\n")
    return re.compile("".join(parts))


def output_matches(expected: str, actual: str, *, prefix: bool = False) -> bool:
    lines = _trim(actual)
    if prefix and not actual.endswith("\n") and lines:
        lines = lines[:-1]  # a line still being written
    text = "".join(line + "\n" for line in lines)
    pattern = output_pattern(expected)
    return bool(pattern.match(text) if prefix else pattern.fullmatch(text))


# --------------------------------------------------------------------------- installs


_PIP = re.compile(r"^(?:python3?\s+-m\s+)?pip3?\s+install\b")
_NPM = re.compile(r"^npm\s+(?:install|i|ci)\b")


def install_check(command: str) -> str | None:
    """For an install command: '' when what it names is installed, else the problem.

    None when ``command`` is not an install command.
    """
    try:
        words = shlex.split(command.replace("\\\n", " "), comments=True)
    except ValueError:  # a line of a longer command (an open quote)
        return None
    text = " ".join(words)
    if _PIP.match(text):
        start = words.index("install") + 1
        return _check_pip(words[start:])
    if _NPM.match(text):
        names = [w for w in words[2:] if not w.startswith("-")]
        missing = [n for n in names if not (JS_MODULES / n / "package.json").is_file()]
        return f"not in tests/js/node_modules: {missing}" if missing else ""
    return None


def _check_pip(args: list[str]) -> str:
    missing: list[str] = []
    specs: list[str] = []
    skip_value = {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url"}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in skip_value:
            return f"cannot check `pip install {arg}`: mark the block not-run"
        if arg in ("-e", "--editable"):
            i += 1
            continue
        if not arg.startswith("-"):
            specs.append(arg)
        i += 1
    for spec in specs:
        if spec.startswith((".", "/")):  # the project itself, from a checkout
            extras = re.findall(r"\[(.*)\]", spec)
            spec = "centrifuge-asgi" + (f"[{extras[0]}]" if extras else "")
        missing += _missing(Requirement(spec))
    return f"not installed: {missing}" if missing else ""


def _missing(req: Requirement, seen: frozenset[str] = frozenset()) -> list[str]:
    try:
        version = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        return [str(req)]
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return [f"{req} (installed: {version})"]
    missing: list[str] = []
    for extra in req.extras:
        for line in importlib.metadata.requires(req.name) or []:
            dep = Requirement(line)
            if dep.marker and dep.marker.evaluate({"extra": extra}) and dep.name not in seen:
                missing += _missing(dep, seen | {req.name})
    return missing


# --------------------------------------------------------------------------- ports

_PORT_MENTIONS = [
    re.compile(r"(?:localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\]):(\d{2,5})\b"),
    re.compile(r"(?:--port|-p)[ =](\d{2,5})\b"),
    re.compile(r"\bPORT=(\d{2,5})\b"),
    re.compile(r"\bport=(\d{2,5})\b"),
    re.compile(r"\"(?:internal_)?port\":\s*\"?(\d{2,5})\b"),
]


def page_ports(page: Page) -> set[int]:
    ports = {8000}
    for block in page.blocks:
        if block.kind in ("config", "file", "run", "start", "output"):
            for pattern in _PORT_MENTIONS:
                ports.update(int(p) for p in pattern.findall(block.code))
    return ports


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# --------------------------------------------------------------------------- sessions


class PageFailure(AssertionError):
    pass


@dataclass
class Started:
    command: str
    process: subprocess.Popen[bytes]
    log: Path
    where: str

    def output(self) -> str:
        return self.log.read_bytes().decode("utf-8", "replace")


# Each command runs in a fresh ``bash``: the prelude restores the variables (exported or
# not, as the reader's shell would keep them) and the directory that the previous command
# left; the epilogue saves them. Read-only variables are bash's own and are not saved.
_PRELUDE = ". {state} 2>/dev/null\n"
_EPILOGUE = (
    "\n__docs_rc=$?\n"
    "declare -p | grep -v -E '^declare -[a-zA-Z]*r' > {state}.new 2>/dev/null\n"
    'printf "cd %q\\n" "$PWD" >> {state}.new\n'
    "mv {state}.new {state}\n"
    "exit $__docs_rc\n"
)


class PageSession:
    """Runs one page's steps in order, as a reader in a terminal (or two) would."""

    def __init__(self, page: Page, workdir: Path, logdir: Path) -> None:
        self.page = page
        self.workdir = workdir
        self.logdir = logdir
        wanted = sorted(page_ports(page))
        self.ports = dict(zip(wanted, free_ports(len(wanted)), strict=True))
        self._port_re = re.compile(r"\b(" + "|".join(str(p) for p in wanted) + r")\b")
        self.started: list[Started] = []
        self.state = logdir / "shell-state.sh"
        self.env = self._environment()
        self.transcript: list[str] = []

    # -- setup

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CENTRIFUGO_")}
        bins = [str(Path(sys.executable).parent)]
        node = shutil.which("node")
        if node:
            bins.append(str(Path(node).parent))
        env["PATH"] = os.pathsep.join([*bins, env.get("PATH", "")])
        env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
        env["PYTHONUNBUFFERED"] = "1"
        env["COLUMNS"] = "80"  # a terminal 80 columns wide (argparse wraps --help to it)
        env.pop("PYTHONPATH", None)
        main = str(self.ports[8000])
        env["PORT"] = env["UVICORN_PORT"] = main
        if not self._config_sets_other_port():
            env["CENTRIFUGO_HTTP_SERVER_PORT"] = main
        return env

    def _config_sets_other_port(self) -> bool:
        for block in self.page.blocks:
            if block.kind == "config" and block.marker.arg:
                port = (parse_config(block).get("http_server") or {}).get("port")
                if port not in (None, 0, 8000, "8000"):
                    return True
        return False

    def prepare(self) -> None:
        for entry in ROOT.iterdir():
            if entry.name.startswith(".") or entry.name in ("node_modules",):
                continue
            (self.workdir / entry.name).symlink_to(entry)
        if JS_MODULES.is_dir():
            (self.workdir / "node_modules").symlink_to(JS_MODULES)
        self.state.write_text(f"cd {shlex.quote(str(self.workdir))}\n")

    def map_ports(self, text: str) -> str:
        return self._port_re.sub(lambda m: str(self.ports[int(m[1])]), text)

    # -- running

    def run(self) -> None:
        self.prepare()
        try:
            for step in self.page.steps:
                if isinstance(step, Marker):
                    self.stop(step.arg, f"{self.page.name}:{step.line}")
                else:
                    self.step(step)
        finally:
            self.stop("", "end of page")

    def step(self, block: Block) -> None:
        kind = block.kind
        if kind in ("test", "not-run"):
            return
        if kind in ("config", "file"):
            if block.marker.arg:
                target = self.workdir / block.marker.arg
                if target.is_symlink():
                    target.unlink()
                if not target.parent.resolve().is_relative_to(self.workdir.resolve()):
                    raise PageFailure(
                        f"{block.where}: {block.marker.arg} would be written into the checkout"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(self.map_ports(block.code) + "\n", encoding="utf-8")
                self.transcript.append(f"# saved {block.marker.arg}")
            return
        if kind == "output":
            self.check_output(block)
            return
        if block.lang != "console":
            self.foreground(block, block.code, None)
            return
        try:
            commands = console_commands(block.code)
        except ValueError as exc:
            raise PageFailure(f"{block.where}: {exc}") from None
        if kind == "start":
            if len(commands) != 1:
                raise PageFailure(f"{block.where}: a start block holds exactly one command")
            self.start(block, commands[0])
            return
        for command in commands:
            self.foreground(block, command.text, command.expected)

    def _script(self, command: str, *, epilogue: bool) -> str:
        script = _PRELUDE.format(state=shlex.quote(str(self.state))) + self.map_ports(command)
        if epilogue:
            script += _EPILOGUE.format(state=shlex.quote(str(self.state)))
        return script

    def foreground(self, block: Block, command: str, expected: str | None) -> None:
        self.transcript.append(f"$ {command}")
        if expected is None and any(
            install_check(line) is not None for line in command.splitlines()
        ):
            raise PageFailure(f"{block.where}: put install commands in a console block")
        check = install_check(command) if expected is not None else None
        if check is not None:
            if check:
                raise PageFailure(f"{block.where}: `{command}`: {check}")
            output = ""
        else:
            process = subprocess.Popen(
                ["bash", "-c", self._script(command, epilogue=True)],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                raw, _ = process.communicate(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                raise PageFailure(
                    f"{block.where}: `{command}` still running after {COMMAND_TIMEOUT} s "
                    "(a command that keeps running belongs in a <!-- start --> block)"
                ) from None
            output = raw.decode("utf-8", "replace")
            self.transcript.append(output)
            if process.returncode != 0:
                raise PageFailure(
                    f"{block.where}: `{command}` exited with {process.returncode}:\n{output}"
                )
        if expected is not None:
            wanted = self.map_ports(expected)
            if not output_matches(wanted, output):
                raise PageFailure(
                    f"{block.where}: `{command}` printed\n{_show(output)}\n"
                    f"but the page shows\n{_show(wanted)}"
                )

    def start(self, block: Block, command: Command) -> None:
        self.transcript.append(f"$ {command.text} &")
        log = self.logdir / f"started-{len(self.started)}.log"
        handle = log.open("wb")
        process = subprocess.Popen(
            ["bash", "-c", self._script(command.text, epilogue=False)],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()
        started = Started(" ".join(command.text.split()), process, log, block.where)
        self.started.append(started)
        wanted = self.map_ports(command.expected)
        if not _trim(wanted):
            raise PageFailure(f"{block.where}: a start block shows the output that says ready")
        deadline = time.monotonic() + READY_TIMEOUT
        while not output_matches(wanted, started.output(), prefix=True):
            if process.poll() is not None or time.monotonic() > deadline:
                state = "exited" if process.poll() is not None else "still not ready"
                raise PageFailure(
                    f"{block.where}: `{command.text}` {state}; it printed\n"
                    f"{_show(started.output())}\nbut the page shows\n{_show(wanted)}"
                )
            time.sleep(0.05)

    def check_output(self, block: Block) -> None:
        prefix = " ".join(block.marker.arg.split())
        candidates = [s for s in self.started if s.command.startswith(prefix)]
        if not candidates:
            raise PageFailure(f"{block.where}: no started command begins with {prefix!r}")
        started = candidates[-1]
        wanted = self.map_ports(block.code)
        deadline = time.monotonic() + OUTPUT_TIMEOUT
        while not output_matches(wanted, started.output()):
            if time.monotonic() > deadline:
                raise PageFailure(
                    f"{block.where}: `{started.command}` printed\n{_show(started.output())}\n"
                    f"but the page shows\n{_show(wanted)}"
                )
            time.sleep(0.05)

    def stop(self, prefix: str, where: str) -> None:
        prefix = " ".join(prefix.split())
        keep = []
        for started in self.started:
            if started.command.startswith(prefix):
                _interrupt(started.process)
            else:
                keep.append(started)
        self.started = keep


def _show(text: str) -> str:
    return textwrap.indent(text.replace("\r", "").rstrip("\n") or "(nothing)", "    | ")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(STOP_TIMEOUT)


def _interrupt(process: subprocess.Popen[bytes]) -> None:
    """Ctrl+C for the command's process group, then SIGKILL if it does not end."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(process)
    # children that outlived their shell (none expected) go with the group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def page_session(page: Page, tmp: Path) -> Iterator[PageSession]:
    workdir = tmp / "page"
    logdir = tmp / "logs"
    workdir.mkdir()
    logdir.mkdir()
    yield PageSession(page, workdir, logdir)
