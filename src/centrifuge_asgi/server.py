"""Running under uvicorn with Centrifugo's graceful shutdown (needs the ``server`` extra).

Plain uvicorn closes every open WebSocket with 1012 before the application's lifespan
ends, so clients never see Centrifugo's 3001 "shutdown". :class:`GracefulServer` first
stops accepting connections, then lets each node disconnect its clients with 3001, and
only then runs uvicorn's own shutdown, all within ``shutdown.timeout``.

:data:`WS_PROTOCOL` is the WebSocket implementation ``serve`` and :func:`run` use unless told
otherwise: uvicorn's default (websockets sans-I/O) with one leniency that Centrifugo has,
an empty ``Sec-WebSocket-Protocol`` header read as no subprotocol.

:func:`http_protocol` is the HTTP/1.1 implementation they use: uvicorn's own (httptools,
else h11) with the two bounds Go's ``http.Server`` gives Centrifugo and uvicorn lacks, on
connections that have not sent complete request headers yet: their time
(``http_server.read_header_timeout``) and their number
(``http_server.max_pending_connections``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import uvicorn

from .node import Node

log = logging.getLogger("centrifuge_asgi.server")

_SUBPROTOCOL_HEADER = "Sec-WebSocket-Protocol"


def _lenient_protocol() -> type[Any] | None:
    """uvicorn's sans-I/O WebSocket protocol, minus its 400 for an empty subprotocol header.

    centrifuge-python up to 0.6 (and its repository's default branch) opens JSON
    connections with ``subprotocols=[]``, which sends ``Sec-WebSocket-Protocol:`` with no
    value. websockets refuses that handshake with
    400 "invalid Sec-WebSocket-Protocol header"; Centrifugo, wsproto and uvicorn's legacy
    implementation read it as "no subprotocol". Empty values are dropped before the
    handshake is checked; everything else is uvicorn's own code.
    """
    try:  # uvicorn >= 0.35; the older default (legacy websockets) accepts the empty header
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:  # pragma: no cover
        return None

    class LenientWebSocketProtocol(WebSocketsSansIOProtocol):
        def handle_connect(self, event: Any) -> None:
            headers = event.headers
            values = headers.get_all(_SUBPROTOCOL_HEADER)
            if values and not all(v.strip() for v in values):
                del headers[_SUBPROTOCOL_HEADER]
                for value in values:
                    if value.strip():
                        headers[_SUBPROTOCOL_HEADER] = value
            super().handle_connect(event)

    return LenientWebSocketProtocol


WS_PROTOCOL: type[Any] | str = _lenient_protocol() or "auto"


# ------------------------------------------------------------------- request headers


def default_max_pending() -> int:
    """``http_server.max_pending_connections`` when 0: a quarter of the soft open-file
    limit, between 16 and 1024 (1024 where the limit is unknown or unlimited)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        return 1024
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 1024
    return max(16, min(1024, soft // 4))


class _HeaderDeadline(asyncio.Protocol):
    """Mixed in before uvicorn's HTTP/1.1 protocol class by :func:`http_protocol`.

    A connection *waits for headers* from the moment it is accepted, and again from the
    end of each response, until the next request's headers are complete (or it becomes a
    WebSocket). While it waits, it is closed without an answer after
    ``read_header_timeout`` seconds (as Go's ``ReadHeaderTimeout`` does), and it is in the
    listener's ``pending`` set: a new connection that would make the set larger than
    ``max_pending`` closes the connection that has waited longest. Real clients send
    their headers at once, so silent or slow sockets are the ones that go.

    Only uvicorn's ``cycle`` (the current request; None before the first one) and
    ``cycle.response_complete`` are read. Without them, the protection is off and a
    warning says so once.
    """

    read_header_timeout: ClassVar[float] = 0.0
    max_pending: ClassVar[int] = 0
    pending: ClassVar[dict[_HeaderDeadline, None]]  # oldest first
    dropped: ClassVar[dict[str, int]]  # closed since the last warning, by reason
    warned_at: ClassVar[list[float]]
    unsupported: ClassVar[bool] = False
    _header_timer: asyncio.TimerHandle | None = None
    transport: Any  # set by uvicorn
    cycle: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._understood():
            self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._check_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        super().connection_lost(exc)

    def _understood(self) -> bool:
        cls = type(self)
        if cls.unsupported:
            return False
        transport = getattr(self, "transport", None)
        if hasattr(self, "cycle") and hasattr(transport, "get_protocol"):
            return True
        cls.unsupported = True
        log.warning(
            "uvicorn %s: unknown HTTP protocol internals; http_server.read_header_timeout "
            "and http_server.max_pending_connections are not enforced",
            uvicorn.__version__,
        )
        return False

    def _check_headers(self) -> None:
        """After input or a response: still waiting for headers, or done waiting?"""
        if type(self).unsupported:
            return
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self:
            self._headers_done()  # closing, or upgraded: the WebSocket protocol took over
            return
        cycle = self.cycle
        if cycle is None or getattr(cycle, "response_complete", False):
            self._await_headers()
        else:
            self._headers_done()

    def _await_headers(self) -> None:
        cls = type(self)
        if cls.max_pending > 0 and self not in cls.pending:
            while len(cls.pending) >= cls.max_pending:
                next(iter(cls.pending))._drop("max_pending_connections")
            cls.pending[self] = None
        if self._header_timer is None and cls.read_header_timeout > 0:
            loop = asyncio.get_running_loop()
            timeout = cls.read_header_timeout
            self._header_timer = loop.call_later(timeout, self._drop, "read_header_timeout")

    def _headers_done(self) -> None:
        timer = self._header_timer
        if timer is not None:
            timer.cancel()
            self._header_timer = None
        type(self).pending.pop(self, None)

    def _drop(self, reason: str) -> None:
        self._headers_done()
        transport = self.transport
        if transport.get_protocol() is self and not transport.is_closing():
            transport.close()
        cls = type(self)
        cls.dropped[reason] = cls.dropped.get(reason, 0) + 1
        now = time.monotonic()
        if now - cls.warned_at[0] >= 10.0:  # at most one warning per 10 s
            counts = ", ".join(f"{n} by http_server.{r}" for r, n in sorted(cls.dropped.items()))
            log.warning("closed connections that had not sent their request headers: %s", counts)
            cls.dropped.clear()
            cls.warned_at[0] = now


def _on_response_complete(self: _HeaderDeadline) -> None:
    super(_HeaderDeadline, self).on_response_complete()  # type: ignore[misc]
    self._check_headers()  # waiting for the next request's headers now, unless pipelined


def http_protocol(
    read_header_timeout: float = 10.0,
    max_pending_connections: int = 0,
    base: type[asyncio.Protocol] | None = None,
) -> type[asyncio.Protocol] | str:
    """uvicorn's HTTP/1.1 protocol (``base``, default httptools or else h11) bounding the
    connections that have not sent complete request headers (see :class:`_HeaderDeadline`).

    Pass the result as ``http=`` to ``uvicorn.Config`` or ``uvicorn.run``; each call makes
    a class with its own pending set, so call it once per listener. A timeout of 0 or less
    turns the timer off; ``max_pending_connections`` 0 means :func:`default_max_pending`,
    less than 0 no cap. Returns ``"auto"`` when uvicorn's protocol cannot be imported.
    """
    if base is None:
        try:
            from uvicorn.protocols.http.auto import AutoHTTPProtocol
        except ImportError:  # pragma: no cover
            log.warning("uvicorn has no HTTP protocol to extend: request headers are unbounded")
            return "auto"
        base = AutoHTTPProtocol
    if max_pending_connections == 0:
        max_pending_connections = default_max_pending()
    namespace: dict[str, Any] = {
        "read_header_timeout": read_header_timeout,
        "max_pending": max_pending_connections,
        "pending": {},
        "dropped": {},
        "warned_at": [-1e9],
        "__module__": __name__,
    }
    if hasattr(base, "on_response_complete"):
        namespace["on_response_complete"] = _on_response_complete
    return type(f"Guarded{base.__name__}", (_HeaderDeadline, base), namespace)


#: :func:`http_protocol` with the default bounds (10 s, :func:`default_max_pending`), for
#: the uvicorn command line: ``uvicorn app:app --http centrifuge_asgi.server:HTTP_PROTOCOL``.
HTTP_PROTOCOL: type[asyncio.Protocol] | str = http_protocol()


# ------------------------------------------------------------------------- shutdown


def _exit_after(seconds: float) -> None:
    """Centrifugo's last resort: a process still running ``seconds`` from now logs
    "shutdown timeout reached" and exits with status 1 (a daemon thread; normal exit
    is not delayed)."""

    def fire() -> None:
        log.critical("shutdown timeout reached")
        os._exit(1)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


class GracefulServer(uvicorn.Server):
    """``uvicorn.Server`` that shuts the given nodes down before closing sockets.

    With ``shutdown_timeout`` (seconds, > 0), the whole shutdown is bounded: clients are
    disconnected with 3001 and in-flight requests may finish until shortly before the
    deadline (the node already ended request bodies still arriving), then uvicorn cancels
    what is left and the lifespan shutdown runs. ``exit_on_timeout`` adds Centrifugo's
    last resort for a process: still running at the deadline, it exits with status 1.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        nodes: Sequence[Node],
        *,
        shutdown_timeout: float | None = None,
        exit_on_timeout: bool = False,
    ) -> None:
        super().__init__(config)
        self.nodes = list(nodes)
        self.shutdown_timeout = shutdown_timeout
        self.exit_on_timeout = exit_on_timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        timeout = self.shutdown_timeout
        loop = asyncio.get_running_loop()
        wait_until: float | None = None
        if timeout is not None and timeout > 0:
            if self.exit_on_timeout:
                _exit_after(timeout)
            # Waiting ends a little before the deadline: the lifespan shutdown comes after.
            wait_until = loop.time() + timeout - min(1.0, timeout / 5)
        for server in self.servers:
            server.close()
        for node in self.nodes:
            if node.running:
                if wait_until is None:
                    await node.shutdown()
                else:
                    await node.shutdown(max(0.0, min(5.0, wait_until - loop.time())))
        if wait_until is not None:
            remaining = max(0.0, wait_until - loop.time())
            self.config.timeout_graceful_shutdown = remaining  # type: ignore[assignment]
        await super().shutdown(sockets)


def run(
    app: Any,
    *,
    node: Node | Sequence[Node],
    shutdown_timeout: float | None = None,
    exit_on_timeout: bool = False,
    **uvicorn_options: Any,
) -> None:
    """``uvicorn.run`` with graceful Centrifugo shutdown of ``node`` (or several nodes).

    The first node's config supplies the defaults: ``http`` is :func:`http_protocol` with
    its ``http_server.read_header_timeout`` and ``max_pending_connections``, and
    ``shutdown_timeout`` its ``shutdown.timeout`` (see :class:`GracefulServer`).
    """
    nodes = [node] if isinstance(node, Node) else list(node)
    uvicorn_options.setdefault("ws", WS_PROTOCOL)
    if nodes:
        config = nodes[0].config
        if "http" not in uvicorn_options:
            server = config.http_server
            uvicorn_options["http"] = http_protocol(
                server.read_header_timeout, server.max_pending_connections
            )
        if shutdown_timeout is None:
            shutdown_timeout = config.shutdown.timeout
    GracefulServer(
        uvicorn.Config(app, **uvicorn_options),
        nodes,
        shutdown_timeout=shutdown_timeout,
        exit_on_timeout=exit_on_timeout,
    ).run()
