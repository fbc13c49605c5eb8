"""The embedded recipe's app for ``uvicorn tests.interop.workers_app:app --workers N``:
each worker process imports this module and builds its own node from the JSON config in
``WORKERS_APP_CONFIG`` (test_workers.py sets it)."""

from __future__ import annotations

import json
import os

from centrifuge_asgi import Node

node = Node(json.loads(os.environ["WORKERS_APP_CONFIG"]))
app = node.asgi_app()
