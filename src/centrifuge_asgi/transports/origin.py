"""Origin checks for connection endpoints (``client.allowed_origins``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from urllib.parse import urlsplit


def origin_allowed(origin: str | None, host: str | None, allowed: Sequence[str]) -> bool:
    """Decide whether a request with this ``Origin`` may connect.

    No Origin header (non-browser clients) always passes. With an empty allow-list only
    a same-host origin passes; otherwise the lower-cased origin must match one of the
    glob patterns (``*`` allows every origin).
    """
    if not origin:
        return True
    origin = origin.lower()
    if not allowed:
        return host is not None and urlsplit(origin).netloc == host.lower()
    return any(p == "*" or fnmatch.fnmatchcase(origin, p.lower()) for p in allowed)
