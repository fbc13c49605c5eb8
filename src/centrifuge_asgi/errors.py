"""The exception tree of centrifuge-asgi.

::

    CentrifugeError
    ├── ClientError          a reply error (code + message) for one command
    ├── Disconnect           closes the connection with a disconnect code + reason
    ├── ConfigError          a configuration key has a bad value (names key and source)
    └── EngineError          a broker / presence / history backend failed
        └── EngineUnavailable  the backend cannot be reached right now

Foreign errors (jwt, msgspec, redis) are translated into these at the boundary.
"""

from __future__ import annotations

from .codes import DisconnectCode, ErrorCode


class CentrifugeError(Exception):
    """Base of every error raised by centrifuge-asgi."""


class ClientError(CentrifugeError):
    """An error that becomes ``{"error": {"code", "message"}}`` in a reply."""

    def __init__(self, code: int, message: str = "", temporary: bool = False) -> None:
        if not message:
            try:
                message = ErrorCode(code).message
            except ValueError:
                message = "error"
        if code in (ErrorCode.INTERNAL, ErrorCode.TOO_MANY_REQUESTS):
            temporary = True
        super().__init__(f"{code}: {message}")
        self.code = int(code)
        self.message = message
        self.temporary = temporary

    @classmethod
    def of(cls, code: ErrorCode) -> ClientError:
        return cls(int(code), code.message, code.temporary)


class Disconnect(CentrifugeError):
    """Disconnect the client with a code and a non-empty plain-text reason."""

    def __init__(self, code: int, reason: str = "") -> None:
        if not reason:
            try:
                reason = DisconnectCode(code).reason
            except ValueError:
                reason = "disconnect"
        super().__init__(f"{code}: {reason}")
        self.code = int(code)
        self.reason = reason

    @classmethod
    def of(cls, code: DisconnectCode) -> Disconnect:
        return cls(int(code), code.reason)


class ConfigError(CentrifugeError, ValueError):
    """A configuration value is invalid; the message names the key and its source."""


class EngineError(CentrifugeError):
    """A broker, presence manager or history backend failed."""


class EngineUnavailable(EngineError):
    """The backend could not be reached (for example Redis is down)."""


class ProxyFailure(Exception):
    """A proxy backend gave no usable answer (unreachable, timeout, non-200, garbage)."""
