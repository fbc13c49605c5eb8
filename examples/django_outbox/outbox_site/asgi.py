"""One ASGI app: the centrifuge-asgi node serves ``/connection/...`` and runs the outbox
consumer in its lifespan; Django serves everything else.

    uvicorn --app-dir examples/django_outbox outbox_site.asgi:application
"""

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "outbox_site.settings")

from django.conf import settings
from django.core.asgi import get_asgi_application

from centrifuge_asgi import Node

django_app = get_asgi_application()  # sets Django up first
node = Node(settings.CENTRIFUGE)
realtime = node.asgi_app()  # brings the node's lifespan: the consumer starts with the server


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # Django's ASGI handler takes HTTP only: the lifespan and the WebSocket go to the node.
    if scope["type"] == "lifespan" or scope["path"].startswith("/connection/"):
        await realtime(scope, receive, send)
    else:
        await django_app(scope, receive, send)
