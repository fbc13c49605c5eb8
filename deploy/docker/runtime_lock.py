"""Print the part of a uv lock (``requirements/dev.txt``) that an install needs.

``python runtime_lock.py requirements/dev.txt --extras server,redis,nats`` prints the
pinned, hash-checked entries for the project's dependencies with those extras and
everything they pull in; ``--packages hatchling`` does the same for named packages (the
build backend). The lock's ``# via`` comments say who needs each entry: an entry is kept
when it is asked for, or when a kept entry needs it. The image installs the result with
``pip install --require-hashes --no-deps`` and checks it with ``pip check``, so nothing
outside the committed lock is installed, and a missing entry fails the build.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

PROJECT = "centrifuge-asgi"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    assert match, spec
    return canonical(match.group(1))


def via_name(text: str) -> str:
    """The needing package of a ``# via`` line (``-r FILE``, ``-c FILE`` stay as they are)."""
    return text if text.startswith(("-r", "-c")) else requirement_name(text)


def parse_lock(text: str) -> dict[str, tuple[list[str], set[str]]]:
    """name -> (the entry's lines, the names in its ``# via`` comment)."""
    entries: dict[str, tuple[list[str], set[str]]] = {}
    current: str | None = None
    in_via = False
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            current = requirement_name(line)
            entries[current] = ([line], set())
            in_via = False
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("--hash") or stripped.startswith("\\"):
            entries[current][0].append(line)
        elif stripped.startswith("# via"):
            rest = stripped[len("# via") :].strip()
            in_via = not rest
            if rest:
                entries[current][1].add(via_name(rest))
        elif in_via and stripped.startswith("#"):
            entries[current][1].add(via_name(stripped.lstrip("# ")))
    return entries


def project_roots(pyproject: Path, extras: list[str]) -> set[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    specs = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}")
        specs += optional[extra]
    return {requirement_name(spec) for spec in specs}


def closure(entries: dict[str, tuple[list[str], set[str]]], roots: set[str]) -> list[str]:
    missing = roots - entries.keys()
    if missing:
        raise SystemExit(f"not in the lock: {', '.join(sorted(missing))}")
    keep = set(roots)
    changed = True
    while changed:
        changed = False
        for name, (_, via) in entries.items():
            if name not in keep and via & keep:
                keep.add(name)
                changed = True
    return sorted(keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--extras", default="", help="comma-separated extras of the project")
    parser.add_argument("--packages", default="", help="comma-separated package names")
    args = parser.parse_args(argv)
    entries = parse_lock(args.lock.read_text())
    roots: set[str] = set()
    if args.extras or not args.packages:
        extras = [e.strip() for e in args.extras.split(",") if e.strip()]
        roots |= project_roots(args.pyproject, extras)
    roots |= {canonical(p.strip()) for p in args.packages.split(",") if p.strip()}
    for name in closure(entries, roots):
        print("\n".join(entries[name][0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
