"""The image's HEALTHCHECK: exit 0 when ``/health`` answers 200, else 1.

The port is the internal one when ``CENTRIFUGO_HTTP_SERVER_INTERNAL_PORT`` is set (health
lives there then), else ``CENTRIFUGO_HTTP_SERVER_PORT``, else 8000; ``HEALTHCHECK_URL``
overrides the whole URL (for ports set only in a config file). A draining server answers
503: unhealthy, as it should be.
"""

import os
import sys
import urllib.error
import urllib.request

port = (
    os.environ.get("CENTRIFUGO_HTTP_SERVER_INTERNAL_PORT")
    or os.environ.get("CENTRIFUGO_HTTP_SERVER_PORT")
    or "8000"
)
url = os.environ.get("HEALTHCHECK_URL") or f"http://127.0.0.1:{port}/health"
try:
    with urllib.request.urlopen(url, timeout=3) as reply:
        sys.exit(0 if reply.status == 200 else 1)
except (urllib.error.URLError, OSError) as exc:
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
