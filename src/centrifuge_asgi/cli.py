"""``centrifuge-asgi`` command line: serve, genconfig, checkconfig, gentoken, gensubtoken,
checktoken, version (also ``python -m centrifuge_asgi``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import ConfigError


def _load(path: str | None, overrides: dict[str, Any] | None = None) -> Any:
    """Load the config with the loader's own log quiet: each command reports
    ``config.warnings`` once, in its own way."""
    from .config import load_config

    config_log = logging.getLogger("centrifuge_asgi.config")
    was_disabled, config_log.disabled = config_log.disabled, True
    try:
        return load_config(path, overrides=overrides)
    finally:
        config_log.disabled = was_disabled


def _serve(args: argparse.Namespace) -> int:
    from .collector import tune_for_serving
    from .logging_setup import configure_logging
    from .node import Node
    from .server import WS_PROTOCOL, run

    overrides = {
        "http_server.address": args.host,
        "http_server.port": args.port,
        "http_server.workers": args.workers,
    }
    config = _load(args.config, overrides)
    configure_logging(config.log)
    worker = args.worker_fds is not None
    if not worker:  # a worker's supervisor has already said them
        for warning in config.warnings:
            logging.getLogger("centrifuge_asgi.config").warning("%s", warning)
        from .workers import worker_count

        count = worker_count(config)
        if count > 1:
            return _supervise(args, config, count)
    node = Node(config)
    tune_for_serving()  # collector.py: freeze the start-up heap, fewer full collections
    server = config.http_server
    host = server.address or "0.0.0.0"
    max_size = config.websocket.message_size_limit
    options: dict[str, Any] = {
        "ws_max_size": max_size if max_size > 0 else 16 * 1024 * 1024,
        "log_level": config.log.level if config.log.level in ("debug", "info") else "warning",
        "ws": WS_PROTOCOL,
        # Centrifugo offers permessage-deflate only with websocket.compression on
        "ws_per_message_deflate": config.websocket.compression,
    }
    if config.log.json:
        options["log_config"] = None  # uvicorn's records go through our JSON handler
    if worker:
        return _run_worker(node, args, options)
    internal_port = _internal_port(server.internal_port)
    if internal_port is None or internal_port == server.port:
        # shutdown.timeout as in Centrifugo: still running at the deadline, exit with 1
        run(
            node.asgi_app(), node=node, host=host, port=server.port, exit_on_timeout=True, **options
        )
        return 0
    internal_host = server.internal_address or host
    _run_split(node, (host, server.port), (internal_host, internal_port), options)
    return 0


def _supervise(args: argparse.Namespace, config: Any, count: int) -> int:
    """``serve`` with ``http_server.workers`` > 1: bind, then run the workers
    (``centrifuge_asgi.workers``)."""
    from .workers import Supervisor, bind, check_engine, worker_command

    check_engine(config, count)
    server = config.http_server
    host = server.address or "0.0.0.0"
    internal_port = _internal_port(server.internal_port)
    where = [(host, server.port)]
    if internal_port is not None and internal_port != server.port:
        where.append((server.internal_address or host, internal_port))
    sockets = []
    for address, port in where:
        try:
            sockets.append(bind(address, port))
        except OSError as exc:  # as uvicorn reports it, without a traceback
            logging.getLogger("centrifuge_asgi.workers").error(
                "cannot listen on %s:%d: %s", address, port, exc.strerror or exc
            )
            for sock in sockets:
                sock.close()
            return 1
    argv = ["serve", "-c", args.config]
    supervisor = Supervisor(worker_command(argv), sockets, count, config.shutdown.timeout)
    try:
        return supervisor.run()
    finally:
        for sock in sockets:
            sock.close()


def _run_worker(node: Any, args: argparse.Namespace, options: dict[str, Any]) -> int:
    """One worker of ``serve --workers N``: serve the inherited listening sockets."""
    import os
    import socket

    sockets = [socket.socket(fileno=int(fd)) for fd in args.worker_fds.split(",")]
    apps = [node.asgi_app()] if len(sockets) == 1 else list(_split_apps(node))
    _run_listeners(
        node,
        list(zip(apps, sockets, strict=True)),
        options,
        ready_fd=args.worker_ready_fd,
        parent=os.getppid(),
    )
    return 0


def _internal_port(value: str | int) -> int | None:
    text = str(value).strip()
    if not text or text == "0":
        return None
    if not text.isdigit():
        raise ConfigError(f"http_server.internal_port: {text!r} is not a port number")
    return int(text)


def _split_apps(node: Any) -> tuple[Any, Any]:
    """The main and internal apps (see ``centrifuge_asgi.app.split_apps``)."""
    from .app import split_apps

    return split_apps(node)


def _run_split(
    node: Any, main: tuple[str, int], internal: tuple[str, int], options: dict[str, Any]
) -> None:
    """The main and internal listeners in one process around one node lifespan."""
    main_app, internal_app = _split_apps(node)
    _run_listeners(node, [(main_app, main), (internal_app, internal)], options)


def _run_listeners(
    node: Any,
    listeners: list[tuple[Any, Any]],
    options: dict[str, Any],
    *,
    ready_fd: int | None = None,
    parent: int | None = None,
) -> None:
    """uvicorn listeners in one process around one node lifespan.

    Each listener is an app and where it listens: ``(host, port)``, or a socket inherited
    from the ``--workers`` supervisor. The first is the main one; the others (the internal
    port) stop only once it has drained, so ``/health`` there answers 503 while clients
    are being disconnected. Signals are handled here, not by uvicorn: SIGINT/SIGTERM stop
    the server (the main listener first disconnects clients with 3001 "shutdown"); a
    second SIGINT forces the exit; SIGUSR1 (sent by the supervisor to a worker it
    replaces) closes every listener at once, so probes reach the other workers. With
    ``ready_fd``, one byte is written there once every listener accepts; with ``parent``,
    the server stops when that process (the supervisor) is gone. Each listener bounds its
    own pending connections; all stop within ``shutdown.timeout``.
    """
    import contextlib
    import os
    import signal
    import socket
    from collections.abc import Iterator

    import anyio
    import uvicorn

    from .server import GracefulServer, http_protocol
    from .workers import RETIRE_SIGNAL, parent_gone

    class Listener(GracefulServer):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    limits = node.config.http_server
    timeout = node.config.shutdown.timeout

    def listener(app: Any, where: Any, nodes: list[Any]) -> Listener:
        http = http_protocol(limits.read_header_timeout, limits.max_pending_connections)
        address = {} if isinstance(where, socket.socket) else {"host": where[0], "port": where[1]}
        config = uvicorn.Config(app, lifespan="off", http=http, **address, **options)
        return Listener(config, nodes, shutdown_timeout=timeout, exit_on_timeout=bool(nodes))

    servers = [
        listener(app, where, [node] if i == 0 else []) for i, (app, where) in enumerate(listeners)
    ]
    main = servers[0]

    def stop(sig: int) -> None:
        if main.should_exit and sig == signal.SIGINT:
            for srv in servers:
                srv.force_exit = True
        main.should_exit = True  # the others follow once it has drained

    def retire() -> None:
        for srv in servers:
            srv.should_exit = True

    async def serve_one(index: int) -> None:
        srv, where = servers[index], listeners[index][1]
        try:
            await srv.serve(sockets=[where] if isinstance(where, socket.socket) else None)
        finally:
            if index == 0:
                for other in servers[1:]:
                    other.should_exit = True

    async def report_ready() -> None:
        assert ready_fd is not None
        # uvicorn sets a flag, there is no event to wait on
        while not all(srv.started for srv in servers):  # noqa: ASYNC110
            await anyio.sleep(0.05)
        os.write(ready_fd, b"R")
        os.close(ready_fd)

    async def watch_parent() -> None:
        assert parent is not None
        # nothing to wait on: the kernel reparents an orphan quietly
        while not parent_gone(parent):  # noqa: ASYNC110
            await anyio.sleep(0.5)
        logging.getLogger("centrifuge_asgi.workers").warning("supervisor gone: stopping")
        stop(signal.SIGTERM)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)
        if ready_fd is not None:
            loop.add_signal_handler(RETIRE_SIGNAL, retire)
        async with node, anyio.create_task_group() as tg:
            if ready_fd is not None:
                tg.start_soon(report_ready)
            if parent is not None:
                tg.start_soon(watch_parent)
            async with anyio.create_task_group() as listening:
                for index in range(len(servers)):
                    listening.start_soon(serve_one, index)
            tg.cancel_scope.cancel()

    asyncio.run(serve())


def _genconfig(args: argparse.Namespace) -> int:
    path = Path(args.config)
    if path.exists() and not args.force:
        print(f"{path} exists (use --force to overwrite)", file=sys.stderr)
        return 1
    data = {
        "client": {
            "token": {"hmac_secret_key": secrets.token_urlsafe(48)},
            "allowed_origins": [],
        },
        "http_api": {"key": secrets.token_urlsafe(48)},
        "health": {"enabled": True},
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def _checkconfig(args: argparse.Namespace) -> int:
    config = _load(args.config)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.config}: valid")
    return 0


def _secret(config: Any, subscription: bool) -> str:
    token_cfg = config.client.token
    if subscription and config.client.subscription_token.enabled:
        token_cfg = config.client.subscription_token
    if not token_cfg.hmac_secret_key:
        raise ConfigError("client.token.hmac_secret_key is required to generate tokens")
    return str(token_cfg.hmac_secret_key)


def _gentoken(args: argparse.Namespace) -> int:
    from .auth import connection_token

    config = _load(args.config)
    ttl = args.ttl if args.ttl > 0 else None
    print(connection_token(args.user, _secret(config, False), ttl=ttl))
    return 0


def _gensubtoken(args: argparse.Namespace) -> int:
    from .auth import subscription_token

    config = _load(args.config)
    ttl = args.ttl if args.ttl > 0 else None
    print(subscription_token(args.user, args.channel, _secret(config, True), ttl=ttl))
    return 0


def _checktoken(args: argparse.Namespace) -> int:
    from .auth import JWKSUnavailable, TokenExpired, TokenInvalid, TokenVerifier

    config = _load(args.config)
    verifier = TokenVerifier(config.client.token)
    try:
        claims = asyncio.run(verifier.verify_connect(args.token))
    except TokenExpired:
        print("token expired", file=sys.stderr)
        return 1
    except TokenInvalid as exc:
        print(f"invalid token: {exc}", file=sys.stderr)
        return 1
    except JWKSUnavailable as exc:
        print(f"token not checked: {exc}", file=sys.stderr)
        return 1
    print(f"valid token for user {claims.user!r}, expires at {claims.expire_at}")
    return 0


def _version(args: argparse.Namespace) -> int:
    print(f"centrifuge-asgi {__version__}")
    return 0


DESCRIPTION = (
    "A Centrifugo-compatible real-time server: serve a Centrifugo v6 configuration file, "
    "and the tools around it. Also runs as: python -m centrifuge_asgi"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="centrifuge-asgi", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, fn: Any, help_text: str, *, config: bool = True) -> Any:
        p = sub.add_parser(name, help=help_text)
        if config:
            p.add_argument(
                "-c", "--config", default="config.json", help="config file (default: config.json)"
            )
        p.set_defaults(fn=fn)
        return p

    serve = command("serve", _serve, "run the server (uvicorn)")
    serve.add_argument(
        "-a",
        "--host",
        default=None,
        help="bind address (http_server.address); default 0.0.0.0, every interface",
    )
    serve.add_argument(
        "-p", "--port", type=int, default=None, help="port (http_server.port); default 8000"
    )
    serve.add_argument(
        "-w",
        "--workers",
        type=int,
        default=None,
        help="processes on the port, each a node over the configured broker "
        "(http_server.workers); default 1; more need Redis or NATS",
    )
    # set by the --workers supervisor for each worker process
    serve.add_argument("--worker-fds", default=None, help=argparse.SUPPRESS)
    serve.add_argument("--worker-ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    gen = command("genconfig", _genconfig, "write a starter config with fresh secrets")
    gen.add_argument("--force", action="store_true")
    command("checkconfig", _checkconfig, "validate a config file")
    tok = command("gentoken", _gentoken, "make a connection JWT (HMAC)")
    tok.add_argument("-u", "--user", required=True)
    tok.add_argument("-t", "--ttl", type=int, default=604800, help="seconds; 0 = no expiry")
    subtok = command("gensubtoken", _gensubtoken, "make a subscription JWT (HMAC)")
    subtok.add_argument("-u", "--user", required=True)
    subtok.add_argument("-s", "--channel", required=True)
    subtok.add_argument("-t", "--ttl", type=int, default=604800, help="seconds; 0 = no expiry")
    check = command("checktoken", _checktoken, "verify a connection JWT")
    check.add_argument("token")
    command("version", _version, "print the version", config=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        # Ctrl+C: uvicorn raises it again once it has shut down. End as a process that
        # SIGINT stopped, without a traceback.
        import os
        import signal

        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 1
