"""The container setup without a container runtime (none runs on the CI machine).

What the image runs is read from the ``Dockerfile`` itself (the default ``server`` stage's
``ENV``, ``ENTRYPOINT``, ``CMD``, ``HEALTHCHECK`` and ``STOPSIGNAL``) and run directly,
with this checkout's virtualenv where the image has ``/opt/centrifuge``. ``compose.yaml``
is run the same way: its two nodes with their ``environment``, the chat example with its
own, and nginx with ``deploy/compose/nginx.conf`` (only the service host names are
rewritten to loopback ports). Not covered here: building the image (``docker build``),
the base image, the non-root user and compose's own networking.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from centrifuge import Client

from centrifuge_asgi.auth import connection_token
from tests.conditions import unavailable, until
from tests.unit.test_redis_engine import RedisProcess, require_main_redis, unique_prefix

from .serve_process import free_port
from .test_python_sdk import ClientEvents, SubEvents

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)
WAIT = 15.0


# ------------------------------------------------------------------ Dockerfile


def dockerfile_stage(target: str) -> dict[str, Any]:
    """The instructions of one stage of the Dockerfile (continuations joined)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stage: dict[str, Any] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            name = rest.split(" AS ")[-1].strip() if " AS " in rest else ""
            if stage is not None and stage["name"] == target:
                break
            stage = {"name": name, "env": {}, "copy": {}}
            continue
        if stage is None:
            continue
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                stage["env"][key] = value
        elif word in ("ENTRYPOINT", "CMD", "STOPSIGNAL", "EXPOSE", "WORKDIR", "USER"):
            stage[word.lower()] = json.loads(rest) if rest.startswith("[") else rest.strip()
        elif word == "HEALTHCHECK":
            stage["healthcheck"] = json.loads(rest.split(" CMD ", 1)[1])
        elif word == "COPY" and not rest.startswith("--from"):
            *sources, dest = rest.split()
            for source in sources:  # a file copied to a file or into a directory
                target_path = dest if len(sources) == 1 else dest + Path(source).name
                stage["copy"][target_path] = source
    assert stage is not None and stage["name"] == target, f"no stage {target!r}"
    return stage


def image_env(stage: dict[str, Any], extra: dict[str, str]) -> dict[str, str]:
    """The stage's ENV with this virtualenv in place of the image's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CENTRIFUGO_")}
    for key, value in stage["env"].items():
        env[key] = value.replace("/opt/centrifuge/bin", VENV_BIN).replace("$PATH", env["PATH"])
    env.update(extra)
    return env


def image_command(stage: dict[str, Any], words: list[str]) -> list[str]:
    """A command of the image with its copied files mapped back to the checkout."""
    mapped = []
    for word in words:
        for dest, source in stage["copy"].items():
            if word == dest or word.startswith(dest.rstrip("/") + "/"):
                word = str(ROOT / source) + word[len(dest.rstrip("/")) :]
                break
        mapped.append(word)
    return mapped


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def node_environment(redis: str, port: int, internal: int) -> dict[str, str]:
    """compose.yaml's node environment (defaults of ${VAR:-default} applied), on loopback."""
    env = {}
    for key, value in compose()["x-node"]["environment"].items():
        env[key] = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
    env["CENTRIFUGO_ENGINE_REDIS_ADDRESS"] = redis
    env["CENTRIFUGO_HTTP_SERVER_PORT"] = str(port)
    env["CENTRIFUGO_HTTP_SERVER_INTERNAL_PORT"] = str(internal)
    env["CENTRIFUGO_HTTP_SERVER_ADDRESS"] = "127.0.0.1"
    return env


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.stop_all()


def wait_for(predicate: Any, what: str, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: exited with {proc.returncode}:\n{proc.stdout.read()}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return 0


def healthcheck(stage: dict[str, Any], env: dict[str, str]) -> int:
    command = image_command(stage, stage["healthcheck"])
    return subprocess.run(command, env=env, capture_output=True, timeout=10, check=False).returncode


def test_dockerfile_stages_and_ignore_file() -> None:
    server = dockerfile_stage("server")
    assert server["user"] == "centrifuge" and server["entrypoint"] == ["centrifuge-asgi"]
    assert server["stopsignal"] == "SIGTERM" and server["expose"] == "8000"
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("--require-hashes") >= 3 and "pip check" in text
    assert "--extras server,redis,nats" in text
    # the last stage is the default target: `docker build .` gives the server
    assert text.rstrip().rsplit("\nFROM ", 1)[1].startswith("${PYTHON_IMAGE} AS server")
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        for needed in line.split()[:-1]:
            assert in_build_context(needed.rstrip("/")), needed
    assert not in_build_context("tests/interop/test_deploy.py")
    assert not in_build_context(".venv")


def in_build_context(path: str) -> bool:
    """Whether .dockerignore lets ``path`` into the build context (the last matching
    pattern decides; a pattern also matches everything below it)."""
    import fnmatch

    keep = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            keep = negated
    return keep


def test_runtime_lock_is_the_locked_closure() -> None:
    """runtime_lock.py keeps what [server,redis,nats] needs, hash-pinned, and nothing of
    the test or other extras. (Installing its output with --require-hashes --no-deps and
    running `pip check` succeeds: done when this was written, needs PyPI, not in CI.)"""
    script = ROOT / "deploy" / "docker" / "runtime_lock.py"
    lock = ROOT / "requirements" / "dev.txt"
    out = subprocess.run(
        [sys.executable, str(script), str(lock), "--extras", "server,redis,nats"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {m.group(1) for m in re.finditer(r"^([a-z0-9-]+)==", out, re.M)}
    assert {"uvicorn", "redis", "nats-py", "pyyaml", "msgspec", "starlette", "uvloop"} <= names
    assert not names & {"pytest", "fastapi", "grpcio", "asyncpg", "centrifuge-python", "mypy"}
    entries = re.split(r"\n(?=\S)", out.strip())
    assert len(entries) == len(names)
    assert all(re.search(r"==\S+", e) and "--hash=sha256:" in e for e in entries), entries


async def test_image_command_serves_heals_and_stops_with_3001(
    tmp_path: Path, processes: Processes
) -> None:
    """ENTRYPOINT + CMD as the image runs them, configured only by compose.yaml's
    CENTRIFUGO_* environment (the CMD's config file does not exist here, as in an image
    without a mounted file); HEALTHCHECK passes; STOPSIGNAL (what `docker stop` sends)
    gives a connected centrifuge-python client 3001 and the process exits with 0."""
    require_main_redis()
    stage = dockerfile_stage("server")
    port, internal = free_port(), free_port()
    config = node_environment("127.0.0.1:6379", port, internal)
    config["CENTRIFUGO_ENGINE_REDIS_PREFIX"] = unique_prefix()
    env = image_env(stage, config)
    proc = processes.start(image_command(stage, stage["entrypoint"] + stage["cmd"]), env, tmp_path)
    wait_for(lambda: healthcheck(stage, env) == 0, "the image's HEALTHCHECK", proc)
    events, sub_events = ClientEvents(), SubEvents()
    secret = config["CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY"]
    client = Client(
        f"ws://127.0.0.1:{port}/connection/websocket",
        events=events,
        token=connection_token("u1", secret),
        max_reconnect_delay=0.5,
    )
    sub = client.new_subscription("chat:lobby", events=sub_events)
    try:
        await client.connect()
        await sub.subscribe()
        await sub_events.rec.wait("subscribed", within=WAIT)
        proc.send_signal(getattr(signal, stage["stopsignal"]))
        await until(lambda: any(c.code == 3001 for c in events.rec.of("connecting")), WAIT)
    finally:
        with anyio.move_on_after(5, shield=True):
            await client.disconnect()
    out = proc.communicate(timeout=WAIT)[0]
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "unknown environment variable" not in out, out
    assert healthcheck(stage, env) == 1  # nothing listens any more


# ------------------------------------------------------------------ compose


def nginx_config(tmp: Path, listen: int, upstreams: dict[str, str]) -> Path:
    """deploy/compose/nginx.conf inside a minimal main config, service names -> loopback."""
    server = (ROOT / "deploy" / "compose" / "nginx.conf").read_text()
    server = server.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    for name, address in upstreams.items():
        server, count = re.subn(rf"server {re.escape(name)}:\d+;", f"server {address};", server)
        assert count == 1, name
    (tmp / "site.conf").write_text(server)
    temp = {k: tmp / k for k in ("client", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    main = f"""
daemon off;
master_process off;  # one process: the test stops it with SIGKILL
pid {tmp}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp["client"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {tmp}/site.conf;
}}
"""
    path = tmp / "nginx.conf"
    path.write_text(main)
    return path


@pytest.fixture
def compose_topology(processes: Processes) -> Iterator[tuple[str, list[Any]]]:
    """compose.yaml without Docker: two nodes and the chat example on a private Redis,
    behind nginx with deploy/compose/nginx.conf; yields nginx's URL and the nodes."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not nginx:
        unavailable("nginx is not installed (apt-get install nginx-light)")
    assert nginx is not None
    redis = RedisProcess().start()
    tmp = Path(tempfile.mkdtemp(prefix="compose-"))
    try:
        stage = dockerfile_stage("server")
        nodes = []
        for _ in range(2):
            port, internal = free_port(), free_port()
            env = image_env(stage, node_environment(redis.address, port, internal))
            command = image_command(stage, stage["entrypoint"] + stage["cmd"])
            nodes.append((processes.start(command, env, tmp), port, internal))
        chat_port = free_port()
        chat_env = dict(os.environ)
        for key, value in compose()["services"]["chat"]["environment"].items():
            chat_env[key] = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
        chat_env.update(CHAT_REDIS_ADDRESS=redis.address, HOST="127.0.0.1", PORT=str(chat_port))
        chat_stage = dockerfile_stage("chat")
        python = [sys.executable if w == "python" else w for w in chat_stage["cmd"]]
        chat = processes.start(image_command(chat_stage, python), chat_env, tmp)
        listen = free_port()
        upstreams = {f"centrifuge-{n + 1}": f"127.0.0.1:{p}" for n, (_, p, _) in enumerate(nodes)}
        upstreams["chat"] = f"127.0.0.1:{chat_port}"
        conf = nginx_config(tmp, listen, upstreams)
        check = subprocess.run(
            [nginx, "-t", "-c", str(conf)], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stderr
        proxy = processes.start([nginx, "-c", str(conf)], dict(os.environ), tmp)
        for proc, _, internal in nodes:
            wait_for(lambda i=internal: status(f"http://127.0.0.1:{i}/health") == 200, "node", proc)
        wait_for(lambda: status(f"http://127.0.0.1:{chat_port}/health") == 200, "chat", chat)
        base = f"http://127.0.0.1:{listen}"
        wait_for(lambda: status(f"{base}/") == 200, "nginx", proxy)
        yield base, nodes
    finally:
        processes.stop_all()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def test_compose_topology_behind_nginx(compose_topology: tuple[str, list[Any]]) -> None:
    """Through nginx: the page and a token from the chat app, WebSocket clients spread
    over both nodes, an announcement published by the chat app's node (over Redis)
    reaching all of them, and an SSE stream answered at once (proxy_buffering off)."""
    await through_nginx(*compose_topology)


async def through_nginx(base: str, nodes: list[Any]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "centrifuge" in page.text.lower()
        tokens = [(await http.get("/token", params={"user": f"u{n}"})).text for n in range(6)]
    clients = []
    try:
        for token in tokens:
            sub_events = SubEvents()
            client = Client(
                f"ws://{base.removeprefix('http://')}/connection/websocket",
                token=token,
                headers={"Origin": "http://localhost:8080"},
            )
            sub = client.new_subscription("chat:lobby", events=sub_events)
            await client.connect()
            await sub.subscribe()
            await sub_events.rec.wait("subscribed", within=WAIT)
            clients.append((client, sub_events))
        per_node = []
        for _, _, internal in nodes:
            async with httpx.AsyncClient(timeout=5) as http:
                reply = await http.post(
                    f"http://127.0.0.1:{internal}/api/info",
                    json={},
                    headers={"X-API-Key": "compose-demo-api-key"},
                )
            info = reply.json()["result"]["nodes"]
            per_node.append(info)
        assert len(per_node[0]) == 3  # two nodes and the chat app's node, over Redis
        counts = sorted(n["num_clients"] for n in per_node[0])
        assert counts[0] == 0 and counts[1] > 0, counts  # the chat app holds no client
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            announced = await http.post("/announce", json={"text": "hello"})
            assert announced.status_code == 200, announced.text
            await sse_connect_reply(http, tokens[0])
        for _, sub_events in clients:
            pubs = await sub_events.rec.wait("publication", within=WAIT)
            assert pubs[0].pub.data == {"user": "server", "text": "hello"}
    finally:
        for client, _ in clients:
            with anyio.move_on_after(5, shield=True):
                await client.disconnect()


async def sse_connect_reply(http: httpx.AsyncClient, token: str) -> None:
    """An SSE connection through nginx gets its connect reply while the stream stays open."""
    connect = json.dumps({"id": 1, "connect": {"token": token}})
    with anyio.fail_after(5):
        async with http.stream(
            "GET",
            "/connection/sse",
            params={"cf_connect": connect},
            headers={"Origin": "http://localhost:8080"},
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    reply = json.loads(line[5:])
                    assert reply["id"] == 1 and reply["connect"]["client"], reply
                    return
