"""Developer tasks: ``nox -s tests``, ``lint``, ``typecheck``, ``demo``."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

JS_DIR = "tests/js"


def _install_js(session: nox.Session) -> None:
    """Install the pinned official JS SDK used by interop tests (needs Node 20+)."""
    if shutil.which("npm") is None:
        if os.environ.get("CI") == "true":
            session.error("npm is required under CI=true (install Node 20+)")
        session.warn("npm not found: JS interop tests will be skipped")
        return
    session.run("npm", "ci", "--prefix", JS_DIR, "--no-audit", "--no-fund", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite: unit, engine contract, SDK interop, examples."""
    session.install("-e", ".[test]")
    _install_js(session)
    session.run("pytest", "-q", *session.posargs)


LINTED = [p for p in ("src", "tests", "examples", "benchmarks", "noxfile.py") if os.path.exists(p)]


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy>=1.10")
    session.run("mypy", "--strict", "src/centrifuge_asgi")


@nox.session
def demo(session: nox.Session) -> None:
    """Run the chat demo on http://127.0.0.1:8000 (in-memory engine, no Redis)."""
    session.install("-e", ".[server]", "fastapi>=0.110")
    session.run("python", "examples/chat/app.py", *session.posargs)


@nox.session
def protoc(session: nox.Session) -> None:
    """Regenerate ``protocol/client_pb2.py`` and ``.pyi`` from ``protocol/client.proto``.

    grpcio-tools 1.62 bundles protoc 25, whose output carries no runtime version guard, so
    the committed module loads on every supported ``protobuf`` runtime (4.25 through 7.x).
    """
    session.install("grpcio-tools==1.62.3")
    session.run(
        "python",
        "-m",
        "grpc_tools.protoc",
        "-I",
        "src",
        "--python_out=src",
        "--pyi_out=src",
        "src/centrifuge_asgi/protocol/client.proto",
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against python-socketio, Django Channels and two floors.

    ``nox -s bench`` is the full run (about 15 minutes; rewrites the results section of
    docs/benchmarks.md); ``nox -s bench -- --quick`` takes about 2 minutes. Needs Node 18+
    for the load generator, and Redis on 127.0.0.1:6379 for the Redis peers.
    """
    if shutil.which("node") is None:
        session.error("node is required: the load generator is benchmarks/loadgen/loadgen.mjs")
    session.install("-e", ".[server,redis]", "-r", "benchmarks/requirements.txt")
    session.run("python", "benchmarks/run.py", *session.posargs)
