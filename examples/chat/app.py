"""Chat demo: FastAPI + centrifuge-asgi, in-memory engine, no Redis (unless configured).

Run it with ``python examples/chat/app.py`` (or ``nox -s demo``) and open
http://127.0.0.1:8000 in two browser tabs. ``PORT`` picks another port
(``PORT=8001 python examples/chat/app.py``); the page's origin is allowed on that port.
In compose.yaml it runs behind nginx next to two ``centrifuge-asgi serve`` nodes:
``HOST``, ``CHAT_ALLOWED_ORIGINS`` and ``CHAT_REDIS_ADDRESS`` (docs/deploy.md).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse
from pydantic import BaseModel

from centrifuge_asgi import Node, RPCEvent, connection_token

HERE = Path(__file__).parent
PORT = int(os.environ.get("PORT") or "8000")
SECRET = os.environ.get("CHAT_SECRET") or secrets.token_urlsafe(32)
CDN_SCRIPT = "https://unpkg.com/centrifuge@5.7.4/dist/centrifuge.js"
LOCAL_SDK = os.environ.get("CHAT_CENTRIFUGE_JS", "")
if LOCAL_SDK and not Path(LOCAL_SDK).is_file():
    raise SystemExit(f"CHAT_CENTRIFUGE_JS={LOCAL_SDK!r} is not a file")
PAGE = (
    (HERE / "index.html")
    .read_text()
    .replace("{{CENTRIFUGE_JS}}", "/centrifuge.js" if LOCAL_SDK else CDN_SCRIPT)
)

# Behind a load balancer (compose.yaml): the page's public origins, the address to bind,
# and the Redis that makes this app a node of the cluster its real-time nodes form.
ORIGINS = [o for o in os.environ.get("CHAT_ALLOWED_ORIGINS", "").split(",") if o]
HOST = os.environ.get("HOST") or "127.0.0.1"
REDIS = os.environ.get("CHAT_REDIS_ADDRESS", "")
ENGINE = {"type": "redis", "redis": {"address": REDIS}} if REDIS else {"type": "memory"}

node = Node(
    {
        "engine": ENGINE,
        "client": {
            "token": {"hmac_secret_key": SECRET},
            # the page's own origin, on whichever port it is served
            "allowed_origins": ORIGINS or [f"http://127.0.0.1:{PORT}", f"http://localhost:{PORT}"],
        },
        "health": {"enabled": True},
        "channel": {
            "namespaces": [
                {
                    "name": "chat",
                    "presence": True,
                    "join_leave": True,
                    "force_push_join_leave": True,
                    "history_size": 50,
                    "history_ttl": "600s",
                    "force_recovery": True,
                    "allow_subscribe_for_client": True,
                    "allow_publish_for_subscriber": True,
                    "allow_presence_for_subscriber": True,
                    "allow_history_for_subscriber": True,
                }
            ]
        },
    }
)

app = FastAPI(title="centrifuge-asgi chat demo", lifespan=node.lifespan)


@node.on_rpc("time")
async def server_time(event: RPCEvent) -> dict[str, Any]:
    """A Python function the browser calls with ``centrifuge.rpc("time", {})``."""
    return {"unix": time.time(), "user": event.client.user}


@app.get("/token", response_class=PlainTextResponse)
async def token(user: str) -> str:
    """Login-free demo: anybody gets a token for the name they type (15 minutes)."""
    return connection_token(user[:32] or "anonymous", SECRET, ttl=900)


class Announcement(BaseModel):
    text: str


@app.post("/announce")
async def announce(body: Announcement) -> dict[str, Any]:
    """Publish from ordinary backend code, in the same process."""
    result = await node.publish("chat:lobby", {"user": "server", "text": body.text})
    return {"offset": result.offset, "epoch": result.epoch}


@app.get("/centrifuge.js")
async def local_sdk() -> Any:
    """Serve centrifuge-js from a local file when CHAT_CENTRIFUGE_JS points to one."""
    if not LOCAL_SDK:
        return PlainTextResponse("not configured", status_code=404)
    return FileResponse(LOCAL_SDK, media_type="text/javascript")


@app.get("/", response_class=HTMLResponse)
async def index() -> str:
    return PAGE


# The real-time endpoints (/connection/websocket, /health) live at the root.
app.mount("/", node.asgi_app())


if __name__ == "__main__":
    from centrifuge_asgi.server import run

    # Like uvicorn.run, plus clients get Centrifugo's 3001 "shutdown" on Ctrl+C.
    run(app, node=node, host=HOST, port=PORT)
