"""OpenTelemetry tracing of one node: the node's :class:`~.observer.Tracing` when
``opentelemetry.enabled``.

An edge module, loaded by ``edges.py`` only when the config enables it, so the
``opentelemetry`` packages (the ``otel`` extra) are imported only then; without it
``node.tracing`` is None and every traced place costs one ``is None`` test.

Which provider: when the embedding host already installed an SDK tracer provider
globally (``opentelemetry.trace.set_tracer_provider``), the node's spans go there, into
the host's traces. Otherwise the node builds its own, as Centrifugo does: a batch span
processor and an OTLP exporter configured by the standard ``OTEL_*`` variables
(``OTEL_EXPORTER_OTLP_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``: ``http/protobuf``,
the default, or ``grpc``; ``OTEL_EXPORTER_OTLP_ENDPOINT``, headers, ...), a resource with
``service.name`` (``OTEL_SERVICE_NAME``, default ``centrifugo``), the node id as
``service.instance.id`` and ``version``, overridden by ``OTEL_RESOURCE_ATTRIBUTES``. That
provider is flushed and shut down when the node stops.

Propagation is the global text-map propagator's (W3C ``traceparent`` by default):
incoming API requests continue the caller's trace, and proxy calls carry the current
context in their HTTP headers and gRPC metadata.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from .node import Node

INSTRUMENTATION = "centrifuge_asgi"
_KINDS = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "internal": SpanKind.INTERNAL,
    "consumer": SpanKind.CONSUMER,
}


class SpanHandle:
    """What a traced place may add to its span: attributes, and the outcome."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def set(self, key: str, value: str | int | bool) -> None:
        self.span.set_attribute(key, value)

    def fail(self, code: int, message: str = "") -> None:
        """The operation ended with error (or disconnect) ``code``."""
        self.span.set_attribute("centrifugo.error_code", code)
        self.span.set_status(Status(StatusCode.ERROR, message or str(code)))


class OtelTracing:
    """Spans of one node (see :class:`~.observer.Tracing`)."""

    def __init__(self, node: Node, provider: Any = None) -> None:
        cfg = node.config.opentelemetry
        self.api = cfg.api
        self.consuming = cfg.consuming
        self.node_id = node.node_id
        self.version = node.version
        self._own: TracerProvider | None = None
        # without a provider given, the choice waits for the node's start (or its first
        # span): a host that sets up OpenTelemetry after creating the node is seen
        self._tracer: Any = None if provider is None else self._from(provider)

    def _from(self, provider: Any) -> Any:
        return provider.get_tracer(INSTRUMENTATION, self.version)

    def _resolve(self) -> Any:
        """The host's global SDK provider's tracer, or one of a provider of our own."""
        if self._tracer is None:
            provider = _host_provider()
            if provider is None:
                provider = self._own = build_provider(self.node_id, self.version)
            self._tracer = self._from(provider)
        return self._tracer

    @contextlib.contextmanager
    def span(
        self, name: str, attributes: Mapping[str, Any] | None = None, kind: str = "internal"
    ) -> Iterator[SpanHandle]:
        """A span around the ``with`` body, child of the current context; an exception
        leaving it marks it failed."""
        tracer = self._tracer or self._resolve()
        with tracer.start_as_current_span(
            name,
            kind=_KINDS[kind],
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            handle = SpanHandle(span)
            try:
                yield handle
            except BaseException as exc:
                code = getattr(exc, "code", 0)
                if isinstance(code, int) and code:
                    handle.fail(code, str(getattr(exc, "message", "") or exc))
                elif not isinstance(exc, (GeneratorExit, anyio.get_cancelled_exc_class())):
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Put the current context (``traceparent``...) into outgoing ``headers``."""
        propagate.inject(headers)

    @contextlib.contextmanager
    def incoming(self, headers: Mapping[str, str]) -> Iterator[None]:
        """Make the context that ``headers`` carry (a caller's ``traceparent``) current,
        unless a span is current already: a host that traces its requests (FastAPI's
        instrumentation, a middleware) continued the caller's trace itself, and the
        node's spans belong under the host's request span."""
        if trace.get_current_span().get_span_context().is_valid:
            yield
            return
        token = otel_context.attach(propagate.extract(headers))
        try:
            yield
        finally:
            otel_context.detach(token)

    async def run(self) -> None:
        """Held by the node while it runs; flushes and shuts down its own provider."""
        self._resolve()
        try:
            await anyio.sleep_forever()
        finally:
            own, self._own = self._own, None
            if own is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(own.shutdown)


def _host_provider() -> Any:
    """The embedding host's global SDK provider, if it installed one."""
    from opentelemetry.sdk.trace import TracerProvider

    current = trace.get_tracer_provider()
    return current if isinstance(current, TracerProvider) else None


def build_provider(node_id: str, version: str) -> TracerProvider:
    """A provider exporting over OTLP as the ``OTEL_*`` variables say."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, str] = {"service.instance.id": node_id, "version": version}
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes["service.name"] = "centrifugo"
    # the environment's OTEL_RESOURCE_ATTRIBUTES win over the node's own, as in Centrifugo
    resource = Resource.create(attributes).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    return provider


def _exporter() -> Any:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()
