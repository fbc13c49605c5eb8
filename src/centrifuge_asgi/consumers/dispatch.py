"""A consumed message -> one server API command, run by the node's one API executor.

Centrifugo's rules (``internal/api/consuming.go``): only commands that change state are
run (publish, broadcast, subscribe, unsubscribe, disconnect, history_remove, refresh);
other methods and undecodable payloads are logged and skipped; an API error other than
100 (internal) is logged and the message counts as processed; error 100 raises
:class:`RetryLater`, so the consumer keeps the message and tries again. A broadcast is
retried when any of its channels failed with 100 (its idempotency key prevents repeats).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Final

import msgspec

from .. import api_schema as s
from ..api_exec import INTERNAL, ApiError, Executor

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("centrifuge_asgi.consumers")

STATE_CHANGING: Final = frozenset(
    {"publish", "broadcast", "subscribe", "unsubscribe", "disconnect", "history_remove", "refresh"}
)


class RetryLater(Exception):
    """The command failed with an internal error: keep the message and retry it."""


class _Envelope(msgspec.Struct):
    """``{"method": …, "payload": …}``: a message that does not carry its method aside."""

    method: str = ""
    payload: msgspec.Raw = msgspec.Raw(b"null")


_envelope = msgspec.json.Decoder(_Envelope)
_string = msgspec.json.Decoder(str)


class CommandDispatcher:
    """Runs consumed commands through the server API :class:`~..api_exec.Executor`."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.executor = Executor(node)

    async def dispatch(self, method: str, payload: bytes) -> bool:
        """Run one command; True when it ran, False when it was skipped as bad.

        ``method`` empty means ``payload`` is the envelope. Raises :class:`RetryLater`.
        """
        if not method:
            try:
                envelope = _envelope.decode(payload)
            except (msgspec.DecodeError, RecursionError) as exc:
                log.error("skip malformed consumed message: %s", exc)
                return False
            method, payload = envelope.method, bytes(envelope.payload)
        if payload[:1] == b'"':  # JSONB as a JSON string (Debezium does this): unwrap it
            with contextlib.suppress(msgspec.DecodeError, RecursionError):
                payload = _string.decode(payload).encode()
        if method not in STATE_CHANGING:
            log.info("skip unsupported consumed API command method %r", method)
            return False
        try:
            req = msgspec.json.decode(payload, type=s.REQUEST_TYPES[method])
        except (msgspec.DecodeError, RecursionError) as exc:
            log.error("skip consumed %s: bad payload: %s", method, exc)
            return False
        try:
            tracing = self.node.tracing
            if tracing is None or not tracing.consuming:
                result = await self.executor.call(method, req)
            else:  # opentelemetry.consuming: a span per consumed command
                attributes = {"centrifugo.channel": getattr(req, "channel", "")}
                with tracing.span(f"centrifugo.consume.{method}", attributes, kind="consumer"):
                    result = await self.executor.call(method, req)
        except ApiError as exc:
            if exc.code == INTERNAL:
                raise RetryLater(f"{method}: {exc}") from exc
            log.error("non retryable error during consuming, skip message: %s: %s", method, exc)
            return False
        if method == "broadcast":
            for response in result.get("responses", ()):
                error = response.get("error")
                if error and error.get("code") == INTERNAL:
                    raise RetryLater(f"broadcast: {error}")
        return True
