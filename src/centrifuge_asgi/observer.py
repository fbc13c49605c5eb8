"""What the node reports as it works: :class:`NodeObserver`, and the silent default.

The node and its sessions call an observer at a few points (a client command finished,
a broker message was fanned out, a server API call finished, the broker refused a
publication), and name Centrifugo's other metric families through ``count``/``observe``;
a fan-out reports once (``fanout_sent``), never per delivery. Exporters live at the
edge: ``metrics.py`` is the Prometheus one, and the node loads it only when
``prometheus.enabled``. Any object with these methods can be passed as
``Node(observer=…)`` (subclass :class:`NoObserver` to get the ones added later as
no-ops). Calls are on the hot path and must not block.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .protocol.codec import Codec, EncodedOnce


class NodeObserver(Protocol):
    def command(self, method: str, duration: float) -> None:
        """A client protocol command finished after ``duration`` seconds."""
        ...

    def fanout(self, kind: str, count: int) -> None:
        """One broker message of ``kind`` (publication, join, leave) reached ``count``
        local connections."""
        ...

    def api_call(
        self, method: str, duration: float, error: str = "", protocol: str = "http"
    ) -> None:
        """A server API call (``protocol`` http or grpc) finished; ``error`` is empty on
        success."""
        ...

    def reply_error(self, method: str, code: int) -> None:
        """A client command was answered with error ``code``."""
        ...

    def server_disconnect(self, code: int) -> None:
        """The server closed a connection with disconnect ``code``."""
        ...

    def published(self, kind: str) -> None:
        """The node handed a message of ``kind`` (publication) to the broker."""
        ...

    def proxy_call(self, protocol: str, kind: str, name: str, duration: float, ok: bool) -> None:
        """A backend proxy call of ``kind`` (connect, rpc, ...) to proxy ``name`` finished."""
        ...

    def broker_publish_error(self) -> None:
        """The broker failed to accept a publication."""
        ...

    def consumer_processed(self, name: str, count: int) -> None:
        """Consumer ``name`` removed ``count`` messages from its source (run or skipped)."""
        ...

    def consumer_error(self, name: str) -> None:
        """Consumer ``name`` failed an attempt (an outage, or a command to retry)."""
        ...

    def count(self, family: str, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        """Add ``amount`` to Centrifugo's counter or gauge ``family`` (its name without
        the namespace, ``metrics.EVENTS``) for the label values ``labels``, in order."""
        ...

    def observe(self, family: str, labels: tuple[str, ...], value: float) -> None:
        """One observation of Centrifugo's histogram (or summary) ``family``."""
        ...

    def fanout_sent(
        self,
        frame_type: str,
        channel: str,
        tally: Mapping[tuple[str, Codec], int],
        data: EncodedOnce,
        unsent: Sequence[tuple[str, Codec]] = (),
    ) -> None:
        """One fan-out pushed ``data`` to the channel's subscribers, ``tally`` of them per
        (transport name, codec), less the ``unsent`` ones (tags filter, late, ...); called
        once per fan-out, only when the registry's ``observer`` is set."""
        ...


class NoObserver:
    """Observes nothing (the default when no exporter is enabled)."""

    def command(self, method: str, duration: float) -> None:
        pass

    def fanout(self, kind: str, count: int) -> None:
        pass

    def api_call(
        self, method: str, duration: float, error: str = "", protocol: str = "http"
    ) -> None:
        pass

    def reply_error(self, method: str, code: int) -> None:
        pass

    def server_disconnect(self, code: int) -> None:
        pass

    def published(self, kind: str) -> None:
        pass

    def proxy_call(self, protocol: str, kind: str, name: str, duration: float, ok: bool) -> None:
        pass

    def broker_publish_error(self) -> None:
        pass

    def consumer_processed(self, name: str, count: int) -> None:
        pass

    def consumer_error(self, name: str) -> None:
        pass

    def count(self, family: str, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        pass

    def observe(self, family: str, labels: tuple[str, ...], value: float) -> None:
        pass

    def fanout_sent(
        self,
        frame_type: str,
        channel: str,
        tally: Mapping[tuple[str, Codec], int],
        data: EncodedOnce,
        unsent: Sequence[tuple[str, Codec]] = (),
    ) -> None:
        pass


class Span(Protocol):
    """What a traced place may add to its span."""

    def set(self, key: str, value: str | int | bool) -> None: ...

    def fail(self, code: int, message: str = "") -> None:
        """The operation ended with error (or disconnect) ``code``."""
        ...


class Tracing(Protocol):
    """Spans (``node.tracing``, None unless ``opentelemetry.enabled``; ``tracing.py``)."""

    api: bool  # opentelemetry.api: spans for server API requests
    consuming: bool  # opentelemetry.consuming

    def span(
        self, name: str, attributes: Mapping[str, Any] | None = None, kind: str = "internal"
    ) -> AbstractContextManager[Span]:
        """A span around a ``with`` body, child of the current context."""
        ...

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Put the current trace context into outgoing ``headers`` (``traceparent``)."""
        ...

    def incoming(self, headers: Mapping[str, str]) -> AbstractContextManager[None]:
        """Continue the trace that incoming ``headers`` carry."""
        ...
