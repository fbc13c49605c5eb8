"""The examples run as their READMEs say, and work with the official JS SDK."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin

from tests.interop.serve_process import free_port

ROOT = Path(__file__).resolve().parents[2]


def load_example(name: str) -> ModuleType:
    path = ROOT / "examples" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_chat_example_serves_page_token_and_realtime(live_server: Any, run_js: Any) -> None:
    chat = load_example("chat")
    srv = live_server(chat.app)
    page = httpx.get(srv.url("/"))
    assert page.status_code == 200
    assert "centrifuge@5.7.4" in page.text and "chat:lobby" in page.text
    assert httpx.get(srv.url("/health")).status_code == 200

    result = run_js("example_chat.mjs", srv.http_url)
    assert result["client"]
    assert result["rpcUser"] == "alice"
    assert result["announceStatus"] == 200
    assert result["pubData"] == {"user": "server", "text": "hello from backend"}
    assert result["pubOffset"] == 1
    assert result["presenceUsers"] == ["alice"]


def test_chat_example_runs_as_its_readme_says(tmp_path: Path) -> None:
    """``python examples/chat/app.py`` starts a server; PORT picks the port, and the page
    served there may connect (``allowed_origins`` follows PORT)."""
    port = free_port()
    env = {**os.environ, "PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "chat" / "app.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/token?user=bob", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise AssertionError(f"demo did not start:\n{out}") from None
                time.sleep(0.1)
        assert resp.status_code == 200 and resp.text.count(".") == 2  # a JWT
        # The page connects from its own origin on whichever port PORT picked, as a
        # browser would (Origin header); another port's origin is refused.
        ws_url = f"ws://127.0.0.1:{port}/connection/websocket"
        for host in ("127.0.0.1", "localhost"):
            with ws_connect(ws_url, origin=Origin(f"http://{host}:{port}"), open_timeout=5) as ws:
                ws.send(json.dumps({"id": 1, "connect": {"token": resp.text}}))
                assert "connect" in json.loads(str(ws.recv(timeout=5)).split("\n")[0])
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(ws_url, origin=Origin(f"http://127.0.0.1:{port + 1}"), open_timeout=5)
        assert refused.value.response.status_code == 403
    finally:
        proc.terminate()
        proc.wait(10)
