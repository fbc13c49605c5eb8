"""Starting and stopping a node's gRPC servers (``grpc_api``, ``uni_grpc``).

:func:`start_servers` is what :meth:`Node.__aenter__` calls (through ``EDGES``) when
either is enabled; :meth:`GrpcServers.stop` runs in the node's exit, after
:meth:`Node.shutdown` has sent every client (unidirectional gRPC streams included) its
Disconnect push. Each server listens on its own ``address:port`` (an empty address: every
interface), with TLS from its ``tls`` block and ``max_receive_message_size`` when set.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConfigError
from .runtime import load_grpc

if TYPE_CHECKING:
    from ..config import TLSConfig
    from ..node import Node

log = logging.getLogger("centrifuge_asgi.grpc")

STOP_GRACE: Final = 2.0  # seconds for calls in flight when a server stops
# As Centrifugo's unidirectional gRPC server: keepalive pings every 25 s (5 s timeout);
# a client may ping every 5 s at most.
UNI_KEEPALIVE: Final = (
    ("grpc.keepalive_time_ms", 25_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


def read_pem(value: str, key: str) -> bytes:
    """A PEM value as Centrifugo reads it: the PEM text itself, a file path, or base64."""
    if "-----BEGIN" in value:
        return value.encode()
    if os.path.isfile(value):
        with open(value, "rb") as f:
            return f.read()
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if b"-----BEGIN" in decoded:
        return decoded
    raise ConfigError(f"{key}: neither PEM text, a readable file nor base64 of PEM")


def server_credentials(grpc: Any, tls: TLSConfig, prefix: str) -> Any:
    """grpcio server credentials for a ``tls`` block (client CA: mutual TLS)."""
    if not tls.cert_pem or not tls.key_pem:
        raise ConfigError(f"{prefix}.tls.enabled needs {prefix}.tls.cert_pem and key_pem")
    cert = read_pem(tls.cert_pem, f"{prefix}.tls.cert_pem")
    key = read_pem(tls.key_pem, f"{prefix}.tls.key_pem")
    client_ca = (
        read_pem(tls.client_ca_pem, f"{prefix}.tls.client_ca_pem") if (tls.client_ca_pem) else None
    )
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def listen_address(address: str, port: int) -> str:
    """``host:port`` for grpcio (an IPv6 host in brackets; empty: every interface)."""
    host = address or "[::]"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


@dataclass
class GrpcServers:
    """The running gRPC servers of a node, and the ports they listen on."""

    servers: list[Any] = field(default_factory=list)
    api_port: int = 0
    uni_port: int = 0

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop every server: calls in flight get ``grace`` seconds, then are cancelled."""
        servers, self.servers = self.servers, []
        for server in servers:
            await server.stop(grace)


def _bind(grpc: Any, server: Any, address: str, port: int, tls: TLSConfig, prefix: str) -> int:
    target = listen_address(address, port)
    try:
        if tls.enabled:
            bound = server.add_secure_port(target, server_credentials(grpc, tls, prefix))
        else:
            bound = server.add_insecure_port(target)
    except RuntimeError as exc:  # grpcio raises when the port cannot be bound
        raise OSError(f"{prefix}: cannot listen on {target}: {exc}") from exc
    if not bound:
        raise OSError(f"{prefix}: cannot listen on {target}")
    return int(bound)


def _reflection(server: Any, services: tuple[str, ...]) -> None:
    try:  # in the grpc extra, but an install with grpcio alone may lack it
        reflection = importlib.import_module("grpc_reflection.v1alpha.reflection")
    except ImportError:
        log.warning(
            "grpc_api.reflection needs grpcio-reflection, which is not installed: "
            "the gRPC API server runs without reflection"
        )
        return
    reflection.enable_server_reflection((*services, reflection.SERVICE_NAME), server)


async def start_servers(node: Node) -> GrpcServers:
    """Start the gRPC servers the node's config enables (bind errors raise OSError)."""
    cfg = node.config
    grpc = load_grpc("grpc_api.enabled" if cfg.grpc_api.enabled else "uni_grpc.enabled")
    running = GrpcServers()
    try:
        if cfg.grpc_api.enabled:
            from ..api_exec import Executor
            from .api_service import SERVICE, ApiService

            api = cfg.grpc_api
            options = [("grpc.max_receive_message_length", api.max_receive_message_size)]
            server = grpc.aio.server(options=options if api.max_receive_message_size > 0 else None)
            server.add_generic_rpc_handlers(
                (ApiService(Executor(node, any_bytes=True)).generic_handler(),)
            )
            if api.reflection:
                _reflection(server, (SERVICE,))
            running.api_port = _bind(grpc, server, api.address, api.port, api.tls, "grpc_api")
            await server.start()
            running.servers.append(server)
            if not api.key:
                log.warning("grpc_api.key is empty: every gRPC API call is let in")
            log.info("serving the gRPC API on %s", listen_address(api.address, running.api_port))
        if cfg.uni_grpc.enabled:
            from .uni_stream import UniStreamService

            uni = cfg.uni_grpc
            uni_options: list[tuple[str, int]] = list(UNI_KEEPALIVE)
            if uni.max_receive_message_size > 0:
                uni_options.append(
                    ("grpc.max_receive_message_length", uni.max_receive_message_size)
                )
            server = grpc.aio.server(options=uni_options)
            server.add_generic_rpc_handlers((UniStreamService(node).generic_handler(),))
            running.uni_port = _bind(grpc, server, uni.address, uni.port, uni.tls, "uni_grpc")
            await server.start()
            running.servers.append(server)
            log.info(
                "serving unidirectional gRPC on %s", listen_address(uni.address, running.uni_port)
            )
    except BaseException:
        await running.stop(0)
        raise
    return running
