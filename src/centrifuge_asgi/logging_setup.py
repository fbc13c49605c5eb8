"""Log output for the standalone server: ``log.level``, ``log.file`` and ``log.json``.

With ``log.json`` every record is one JSON object per line::

    {"time": "2026-01-02T03:04:05.678+00:00", "level": "info",
     "logger": "centrifuge_asgi.session", "msg": "disconnect client=… code=3503 …",
     "client": "…", "user": "42", "code": 3503, "reason": "force disconnect"}

Fields passed with ``extra=`` (``client``, ``user``, ``method``, ``code``, ``reason``,
``channel``, …) become top-level keys; an exception adds ``error`` with its traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Final

from .config import LogConfig

LEVELS: Final = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STANDARD: Final = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured copy of msg
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra=`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["error"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


def level_of(name: str) -> int:
    """The :mod:`logging` level of a Centrifugo ``log.level`` name (default info)."""
    return LEVELS.get(name.lower(), logging.INFO)


def configure_logging(cfg: LogConfig, stream: IO[str] | None = None) -> logging.Handler:
    """Install one handler on the root logger per ``cfg``; returns it.

    Earlier handlers of the root logger are replaced, so calling this twice is safe.
    Loggers that propagate (``centrifuge_asgi.*``, and uvicorn's when it runs with
    ``log_config=None``) all go through it.
    """
    handler: logging.Handler
    if cfg.file:
        handler = logging.FileHandler(cfg.file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if cfg.json else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level_of(cfg.level))
    return handler
