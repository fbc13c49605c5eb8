"""What each running consumer reports: its state, counters and last error (for /health)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Literal

State = Literal["starting", "running", "retrying", "stopped"]


@dataclasses.dataclass
class ConsumerStatus:
    """One consumer's health, updated as it works; read by ``/health`` and tests."""

    name: str
    type: str
    state: State = "starting"
    processed: int = 0  # commands run (or skipped as bad) and removed from their source
    skipped: int = 0  # of which bad messages, logged and dropped
    errors: int = 0  # failed attempts: outages and commands to retry
    retries: int = 0  # consecutive failures since the last success
    last_error: str = ""
    last_error_at: float = 0.0

    def ok(self, processed: int = 0, skipped: int = 0) -> None:
        self.state = "running"
        self.processed += processed
        self.skipped += skipped
        self.retries = 0

    def failed(self, exc: BaseException) -> int:
        """Record a failure; returns the number of consecutive failures."""
        self.state = "retrying"
        self.errors += 1
        self.retries += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        self.last_error_at = time.time()
        return self.retries

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "status": self.state,
            "processed": self.processed,
            "skipped": self.skipped,
            "errors": self.errors,
        }
        if self.state == "retrying":
            out["retries"] = self.retries
            out["last_error"] = self.last_error
        return out


class Reporter:
    """Updates a :class:`ConsumerStatus` and tells the node's observer (metrics)."""

    def __init__(self, status: ConsumerStatus, observer: Any) -> None:
        self.status = status
        self._observer = observer

    def ok(self, processed: int = 0, skipped: int = 0) -> None:
        self.status.ok(processed, skipped)
        if processed:
            self._observer.consumer_processed(self.status.name, processed)

    def failed(self, exc: BaseException) -> int:
        self._observer.consumer_error(self.status.name)
        return self.status.failed(exc)
