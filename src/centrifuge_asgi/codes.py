"""Error, disconnect and unsubscribe codes of the Centrifugo client protocol (v2).

The numbers and reasons match the reference tables exactly: the official SDKs decide
whether to reconnect or stop from them (3000-3499 reconnect, 3500-3999 terminal).
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Reply error codes (``Error.code``)."""

    INTERNAL = 100
    UNAUTHORIZED = 101
    UNKNOWN_CHANNEL = 102
    PERMISSION_DENIED = 103
    METHOD_NOT_FOUND = 104
    ALREADY_SUBSCRIBED = 105
    LIMIT_EXCEEDED = 106
    BAD_REQUEST = 107
    NOT_AVAILABLE = 108
    TOKEN_EXPIRED = 109
    EXPIRED = 110
    TOO_MANY_REQUESTS = 111
    UNRECOVERABLE_POSITION = 112

    @property
    def message(self) -> str:
        return _ERROR_MESSAGES[self]

    @property
    def temporary(self) -> bool:
        return self in (ErrorCode.INTERNAL, ErrorCode.TOO_MANY_REQUESTS)


_ERROR_MESSAGES = {
    ErrorCode.INTERNAL: "internal server error",
    ErrorCode.UNAUTHORIZED: "unauthorized",
    ErrorCode.UNKNOWN_CHANNEL: "unknown channel",
    ErrorCode.PERMISSION_DENIED: "permission denied",
    ErrorCode.METHOD_NOT_FOUND: "method not found",
    ErrorCode.ALREADY_SUBSCRIBED: "already subscribed",
    ErrorCode.LIMIT_EXCEEDED: "limit exceeded",
    ErrorCode.BAD_REQUEST: "bad request",
    ErrorCode.NOT_AVAILABLE: "not available",
    ErrorCode.TOKEN_EXPIRED: "token expired",
    ErrorCode.EXPIRED: "expired",
    ErrorCode.TOO_MANY_REQUESTS: "too many requests",
    ErrorCode.UNRECOVERABLE_POSITION: "unrecoverable position",
}


class DisconnectCode(IntEnum):
    """Disconnect codes sent as WebSocket close codes or Disconnect pushes."""

    CONNECTION_CLOSED = 3000
    SHUTDOWN = 3001
    SERVER_ERROR = 3004
    EXPIRED = 3005
    SUBSCRIPTION_EXPIRED = 3006
    SLOW = 3008
    WRITE_ERROR = 3009
    INSUFFICIENT_STATE = 3010
    FORCE_RECONNECT = 3011
    NO_PONG = 3012
    TOO_MANY_REQUESTS = 3013
    STATE_INVALIDATED = 3014
    INVALID_TOKEN = 3500
    BAD_REQUEST = 3501
    STALE = 3502
    FORCE_DISCONNECT = 3503
    CONNECTION_LIMIT = 3504
    CHANNEL_LIMIT = 3505
    INAPPROPRIATE_PROTOCOL = 3506
    PERMISSION_DENIED = 3507
    NOT_AVAILABLE = 3508
    TOO_MANY_ERRORS = 3509

    @property
    def reason(self) -> str:
        return _DISCONNECT_REASONS[self]


_DISCONNECT_REASONS: dict[int, str] = {
    DisconnectCode.CONNECTION_CLOSED: "connection closed",
    DisconnectCode.SHUTDOWN: "shutdown",
    DisconnectCode.SERVER_ERROR: "internal server error",
    DisconnectCode.EXPIRED: "connection expired",
    DisconnectCode.SUBSCRIPTION_EXPIRED: "subscription expired",
    DisconnectCode.SLOW: "slow",
    DisconnectCode.WRITE_ERROR: "write error",
    DisconnectCode.INSUFFICIENT_STATE: "insufficient state",
    DisconnectCode.FORCE_RECONNECT: "force reconnect",
    DisconnectCode.NO_PONG: "no pong",
    DisconnectCode.TOO_MANY_REQUESTS: "too many requests",
    DisconnectCode.STATE_INVALIDATED: "state invalidated",
    DisconnectCode.INVALID_TOKEN: "invalid token",
    DisconnectCode.BAD_REQUEST: "bad request",
    DisconnectCode.STALE: "stale",
    DisconnectCode.FORCE_DISCONNECT: "force disconnect",
    DisconnectCode.CONNECTION_LIMIT: "connection limit",
    DisconnectCode.CHANNEL_LIMIT: "channel limit",
    DisconnectCode.INAPPROPRIATE_PROTOCOL: "inappropriate protocol",
    DisconnectCode.PERMISSION_DENIED: "permission denied",
    DisconnectCode.NOT_AVAILABLE: "not available",
    DisconnectCode.TOO_MANY_ERRORS: "too many errors",
}


def disconnect_reason(code: int) -> str:
    """The reason of a disconnect code, as ``Disconnect(code).reason`` gives it ("disconnect"
    for a code of the application's), without making the exception."""
    return _DISCONNECT_REASONS.get(code, "disconnect")


class UnsubscribeCode(IntEnum):
    """Codes of the Unsubscribe push (< 2500 terminal, >= 2500 resubscribe)."""

    SERVER = 2000
    INSUFFICIENT_STATE = 2500
    EXPIRED = 2501
    STATE_INVALIDATED = 2502

    @property
    def reason(self) -> str:
        return _UNSUBSCRIBE_REASONS[self]


_UNSUBSCRIBE_REASONS = {
    UnsubscribeCode.SERVER: "server unsubscribe",
    UnsubscribeCode.INSUFFICIENT_STATE: "insufficient state",
    UnsubscribeCode.EXPIRED: "subscription expired",
    UnsubscribeCode.STATE_INVALIDATED: "state invalidated",
}


def is_terminal_disconnect(code: int) -> bool:
    """True when the SDKs stop reconnecting after this disconnect code."""
    return 3500 <= code < 4000 or 4500 <= code < 5000
