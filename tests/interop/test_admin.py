"""The admin web page (``admin.*``): its endpoints over HTTP, and the page itself in a real
headless Chromium driven by Playwright: two nodes on Redis, a centrifuge-js subscriber
that receives what the page publishes, a wrong password refused, a phone-sized screen.

The browser is Debian's ``/usr/bin/chromium`` (``CHROMIUM`` overrides the path), never a
downloaded one. ``ADMIN_SCREENSHOTS=1`` copies the screenshots into ``docs/images``.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

from centrifuge_asgi import admin
from centrifuge_asgi.app import split_apps
from centrifuge_asgi.node import Node
from centrifuge_asgi.observer import NoObserver
from tests.unit.test_redis_engine import need, require_main_redis, unique_prefix

from .support import BASE_CONFIG, WS_PATH, token

if TYPE_CHECKING:
    from conftest import ARunJs, LiveServerFactory

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

PASSWORD = "admin-password"
SECRET = "admin-secret"
TIMEOUT = 10.0
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def admin_config(**admin_block: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["http_api"] = {"key": "api-key"}
    cfg["admin"] = {"enabled": True, "password": PASSWORD, "secret": SECRET, **admin_block}
    return cfg


# ------------------------------------------------------------------------- endpoints


async def test_login_token_and_api() -> None:
    node = Node(admin_config())
    async with (
        node,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=node.asgi_app()), base_url="http://n"
        ) as http,
    ):
        init = (await http.get("/admin/init")).json()
        assert init == {"insecure": False, "edition": "oss", "authenticated": False}
        assert (await http.post("/admin/auth", data={"password": "nope"})).status_code == 400
        assert (await http.post("/admin/auth", json={"password": "nope"})).status_code == 400
        r = await http.post("/admin/auth", data={"password": PASSWORD})
        tok = r.json()["token"]
        assert (await http.post("/admin/auth", json={"password": PASSWORD})).status_code == 200
        auth = {"Authorization": f"token {tok}"}
        assert (await http.get("/admin/init", headers=auth)).json()["authenticated"] is True

        command = {"method": "publish", "params": {"channel": "news:1", "data": {"n": 1}}}
        assert (await http.post("/admin/api", json=command)).status_code == 401
        bad = {"Authorization": f"token {tok[:-1]}0"}
        assert (await http.post("/admin/api", json=command, headers=bad)).status_code == 401
        # the server API key is not an admin token
        key = {"Authorization": "apikey api-key"}
        assert (await http.post("/admin/api", json=command, headers=key)).status_code == 401
        reply = (await http.post("/admin/api", json=command, headers=auth)).json()
        assert reply["result"]["offset"] == 1
        history = {"method": "history", "params": {"channel": "news:1", "limit": 5}}
        reply = (await http.post("/admin/api", json=history, headers=auth)).json()
        assert [p["data"] for p in reply["result"]["publications"]] == [{"n": 1}]
        for method, params in [
            ("broadcast", {"channels": ["news:1", "news:2"], "data": {"n": 2}}),
            ("disconnect", {"user": "someone"}),
            ("unsubscribe", {"user": "someone", "channel": "news:1"}),
            ("presence", {"channel": "news:1"}),
        ]:
            reply = (
                await http.post(
                    "/admin/api", json={"method": method, "params": params}, headers=auth
                )
            ).json()
            assert "result" in reply, (method, reply)
        errors = [
            ({"method": "publish", "params": {"channel": "zzz:1", "data": 1}}, 102),
            ({"method": "nope", "params": {}}, 104),
            ({"method": "publish", "params": "[]"}, 107),
        ]
        for body, code in errors:
            reply = (await http.post("/admin/api", json=body, headers=auth)).json()
            assert reply["error"]["code"] == code, body
        assert (await http.post("/admin/api", content=b"{", headers=auth)).status_code == 400
        big = b'{"method":"info","params":{"x":"' + b"a" * admin.MAX_BODY + b'"}}'
        assert (await http.post("/admin/api", content=big, headers=auth)).status_code == 413

        page = await http.get("/")
        assert page.status_code == 200
        assert "<title>centrifuge-asgi admin</title>" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert (await http.get("/app.js")).status_code == 200
        assert (await http.get("/app.css")).status_code == 200


def test_token_expires_and_needs_the_secret() -> None:
    tok = admin.issue_token(SECRET, now=1000)
    assert admin.check_token(SECRET, tok, now=1000 + admin.TOKEN_TTL - 1)
    assert not admin.check_token(SECRET, tok, now=1000 + admin.TOKEN_TTL + 1)
    assert not admin.check_token("other", tok, now=1000)
    assert not admin.check_token("", tok, now=1000)
    assert not admin.check_token(SECRET, "garbage", now=1000)
    # the token is the expiry and the hex HMAC-SHA256 of "centrifuge-asgi-admin:<expiry>"
    assert tok == "4600.bbbc370147f9ceaaec2f77014e4415c929b0fddab718bde0e4c5a4163846ea4d"
    for malformed in MALFORMED_TOKENS:
        assert not admin.check_token(SECRET, malformed.decode("latin-1"), now=1000), malformed


# ------------------------------------------------------------------------ bad input

DEEP = b"[" * 100_000  # deeper than any JSON decoder recurses
MALFORMED_TOKENS = [
    b"\xb2",  # "²": str.isdigit() says yes, int() says no
    b"\xb2.abc",
    b"1\xb2.abc",
    b"9" * 5000 + b".abc",  # more digits than int() converts
    b"99999999999.\xe9",  # a non-ASCII signature: compare_digest refuses it
    b"99999999999.",
    b".abc",
    b"-5.abc",
    b"99999999999",
]
JSON, FORM = "application/json", "application/x-www-form-urlencoded"
BAD_LOGINS = [
    (JSON, DEEP),
    (JSON, b'{"password": ' + DEEP),
    (JSON, b""),
    (JSON, b"not json"),
    (JSON, b"[]"),
    (JSON, b"null"),
    (JSON, b'{"password": 5}'),
    (JSON, b'{"password": ["admin-password"]}'),
    (JSON, b'{"password": "\\ud800"}'),  # a lone surrogate, which str.encode() refuses
    (JSON, b'{"password": "\xff"}'),  # not UTF-8
    (FORM, b"password=%ff%fe%ED%A0%80"),
    (FORM, b"\xff\xfe=\x00&&=="),
    # over MAX_BODY: Centrifugo reads no password from it (400, not 413)
    (FORM, f"password={PASSWORD}&pad=".encode() + b"a" * admin.MAX_BODY),
    (JSON, b'{"password": "%s", "pad": "' % PASSWORD.encode() + b"a" * admin.MAX_BODY + b'"}'),
]
BAD_COMMANDS = [
    DEEP,
    b'{"method": "info", "params": ' + DEEP + b"}",
    b"",
    b"not json",
    b"[]",
    b"null",
    b'{"method": 1.5}',
    b'{"id": -1, "method": "info"}',
    b'{"method": "info"} {"method": "info"}',
    b'{"method": "\\ud800"}',
]


def asgi_client(node: Node) -> httpx.AsyncClient:
    """An HTTP client of the node's app, in process (an exception fails the test)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=node.asgi_app()), base_url="http://n"
    )


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    logged = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not logged, "a traceback was logged"


def assert_bad_request(r: httpx.Response, case: object) -> None:
    assert (r.status_code, r.text) == (400, "Bad Request"), case
    assert r.headers["content-type"].startswith("text/plain"), case


async def test_bad_login_bodies_are_400(caplog: pytest.LogCaptureFixture) -> None:
    """Whatever the body of ``/admin/auth``: 400 ``Bad Request`` (Centrifugo's answer to a
    body without the password), never a traceback; then the right password still works."""
    node = Node(admin_config())
    async with node, asgi_client(node) as http:
        for content_type, body in BAD_LOGINS:
            headers = {"content-type": content_type}
            r = await http.post("/admin/auth", content=body, headers=headers)
            assert_bad_request(r, (content_type, body[:60]))
        assert (await http.post("/admin/auth", json={"password": PASSWORD})).status_code == 200
        assert (await http.post("/admin/auth", data={"password": PASSWORD})).status_code == 200
    assert_no_traceback(caplog)


async def test_wrong_methods_are_405_and_content_type_is_case_insensitive() -> None:
    """``GET /admin/api`` or ``/admin/auth`` is 405 with ``Allow`` (Centrifugo's POST-only
    handlers), not the page's 404; a JSON login's media type matches in any case."""
    node = Node(admin_config(handler_prefix="/ops"))
    async with node, asgi_client(node) as http:
        for method, path, allow in [
            ("GET", "/ops/admin/api", "POST"),
            ("PUT", "/ops/admin/api", "POST"),
            ("GET", "/ops/admin/auth", "POST"),
            ("POST", "/ops/admin/init", "GET, HEAD"),
        ]:
            r = await http.request(method, path)
            assert (r.status_code, r.headers.get("allow")) == (405, allow), (method, path)
        assert (await http.get("/ops/admin/init")).status_code == 200
        headers = {"content-type": "Application/JSON; charset=UTF-8"}
        body = b'{"password": "' + PASSWORD.encode() + b'"}'
        r = await http.post("/ops/admin/auth", content=body, headers=headers)
        assert r.status_code == 200 and "token" in r.json()


async def test_deep_login_body_over_uvicorn_is_400(
    live_server: LiveServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The reviewer's case on a real uvicorn: 100,000 ``[`` was HTTP 500 and a traceback."""
    node = Node(admin_config())
    srv = live_server(node.asgi_app())
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        r = await http.post(srv.url("/admin/auth"), content=DEEP, headers={"content-type": JSON})
        assert_bad_request(r, "deep")
        r = await http.post(srv.url("/admin/auth"), data={"password": PASSWORD})
        assert r.status_code == 200
    assert_no_traceback(caplog)


async def test_malformed_tokens_are_not_authenticated(caplog: pytest.LogCaptureFixture) -> None:
    """A malformed ``Authorization: token …`` is no login: ``/admin/init`` says so and
    ``/admin/api`` answers 401 (not a ValueError or TypeError out of the token check)."""
    node = Node(admin_config())
    command = {"method": "info", "params": {}}
    async with node, asgi_client(node) as http:
        for malformed in MALFORMED_TOKENS:
            headers = {b"authorization": b"token " + malformed}
            init = await http.get("/admin/init", headers=headers)
            assert init.json()["authenticated"] is False, malformed
            r = await http.post("/admin/api", json=command, headers=headers)
            assert r.status_code == 401, malformed
    assert_no_traceback(caplog)


class _ApiCalls(NoObserver):
    """Records ``(method, error, protocol)`` of every server API call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def api_call(
        self, method: str, duration: float, error: str = "", protocol: str = "http"
    ) -> None:
        self.calls.append((method, error, protocol))


async def test_bad_api_bodies_are_400_and_calls_count_as_admin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``/admin/api`` is one command of the legacy ``/api``: a body that does not decode is
    400 (as Centrifugo's legacy route), the ``id`` comes back, and each call counts in the
    metrics under protocol ``admin``."""
    observer = _ApiCalls()
    node = Node(admin_config(), observer=observer)
    async with node, asgi_client(node) as http:
        tok = (await http.post("/admin/auth", data={"password": PASSWORD})).json()["token"]
        auth = {"Authorization": f"token {tok}"}
        for body in BAD_COMMANDS:
            r = await http.post("/admin/api", content=body, headers=auth)
            assert_bad_request(r, body[:60])
        assert observer.calls == []  # nothing ran
        reply = (
            await http.post("/admin/api", json={"id": 3, "method": "info"}, headers=auth)
        ).json()
        assert reply["id"] == 3 and len(reply["result"]["nodes"]) == 1
        reply = (await http.post("/admin/api", json={"method": 99}, headers=auth)).json()
        assert reply == {"error": {"code": 104, "message": "not found"}}
        publish = {"method": "publish", "params": {"channel": "zzz:1", "data": 1}}
        reply = (await http.post("/admin/api", json=publish, headers=auth)).json()
        assert reply["error"]["code"] == 102
    assert observer.calls == [
        ("info", "", "admin"),
        ("unknown", "104", "admin"),
        ("publish", "102", "admin"),
    ]
    assert_no_traceback(caplog)


async def _stalled() -> AsyncIterator[bytes]:
    """A body that stops half-way: the peer never sends the rest."""
    yield b"password="
    await anyio.sleep(30)


async def test_a_stalled_body_is_408_after_read_timeout() -> None:
    """Admin bodies are read as ``/api`` reads them: within ``http_server.read_timeout``."""
    cfg = admin_config()
    cfg["http_server"] = {"read_timeout": "200ms"}
    node = Node(cfg)
    async with node, asgi_client(node) as http:
        tok = (await http.post("/admin/auth", data={"password": PASSWORD})).json()["token"]
        auth = {"Authorization": f"token {tok}"}
        for path in ("/admin/auth", "/admin/api"):
            with anyio.fail_after(5):
                r = await http.post(path, content=_stalled(), headers=auth)
            assert (r.status_code, r.text) == (408, "Request Timeout"), path
            assert r.headers["connection"] == "close"
        assert len(node.body_reads) == 0


async def test_a_client_gone_mid_body_is_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """The client disconnects before the body is complete: 400, as ``/api``."""
    node = Node(admin_config(insecure=True))
    async with node:
        app = node.asgi_app()
        for path in ("/admin/auth", "/admin/api"):
            incoming: list[dict[str, Any]] = [
                {"type": "http.request", "body": b'{"password', "more_body": True},
                {"type": "http.disconnect"},
            ]
            sent: list[dict[str, Any]] = []

            async def receive(incoming: list[dict[str, Any]] = incoming) -> dict[str, Any]:
                if incoming:
                    return incoming.pop(0)
                await anyio.sleep_forever()
                raise AssertionError("unreachable")

            async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "root_path": "",
                "headers": [(b"host", b"n"), (b"content-type", JSON.encode())],
                "client": ("127.0.0.1", 1),
                "server": ("n", 80),
            }
            with anyio.fail_after(5):
                await app(scope, receive, send)
            assert sent[0]["status"] == 400, path
    assert_no_traceback(caplog)


async def test_insecure_prefix_external_and_unset_password() -> None:
    node = Node(admin_config(insecure=True, handler_prefix="/adm/", password=""))
    async with (
        node,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=node.asgi_app()), base_url="http://n"
        ) as http,
    ):
        assert (await http.get("/adm/admin/init")).json()["authenticated"] is True
        info = await http.post("/adm/admin/api", json={"method": "info", "params": {}})
        assert len(info.json()["result"]["nodes"]) == 1
        # no password configured: nobody logs in (as Centrifugo)
        assert (await http.post("/adm/admin/auth", data={"password": ""})).status_code == 400
        assert (await http.get("/adm/")).status_code == 200
        assert (await http.get("/admin/init")).status_code == 404

    cfg = admin_config(external=False)
    cfg["http_server"] = {"internal_port": 9999}

    main, internal = split_apps(Node(cfg))

    def paths(app: Any) -> set[str | None]:
        return {getattr(r, "path", None) for r in app.routes}

    assert "/admin/api" in paths(internal) and "/admin/api" not in paths(main)
    cfg["admin"]["external"] = True
    main, internal = split_apps(Node(cfg))
    assert "/admin/api" in paths(main) and "/admin/api" not in paths(internal)


async def test_disabled_by_default() -> None:
    cfg = admin_config()
    del cfg["admin"]
    node = Node(cfg)
    async with (
        node,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=node.asgi_app()), base_url="http://n"
        ) as http,
    ):
        assert (await http.get("/admin/init")).status_code == 404
        assert (await http.get("/")).status_code == 404


def test_page_files_ship_in_the_package() -> None:
    names = {p.name for p in admin.WEB_DIR.iterdir()}
    assert {"index.html", "app.js", "app.css"} <= names
    html = (admin.WEB_DIR / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # no CDN


def test_the_wheel_carries_the_page(tmp_path: Path) -> None:
    """The built wheel (not only the source tree) holds the page's files, the protocol's
    .proto files and the type marker (built with the locked hatchling, no download)."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[2]
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    proc = subprocess.run(
        [*pip_wheel, "--wheel-dir", str(tmp_path), str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("centrifuge_asgi-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in [
        "centrifuge_asgi/admin/web/index.html",
        "centrifuge_asgi/admin/web/app.js",
        "centrifuge_asgi/admin/web/app.css",
        "centrifuge_asgi/grpc/api.proto",
        "centrifuge_asgi/protocol/client.proto",
        "centrifuge_asgi/py.typed",
    ]:
        assert shipped in names, shipped


# ---------------------------------------------------------------------------- browser


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A fresh Chromium profile per test (headless, the system browser)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        need("playwright is not installed (the test dependencies)")
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (once, before the browser starts)
        need(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="admin-chromium-") as profile:
        async with async_playwright() as p:
            context = await p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 860},
            )
            try:
                yield context
            finally:
                await context.close()


def shot(path: Path) -> None:
    if os.environ.get("ADMIN_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMAGES / path.name)


async def test_page_in_chromium_two_nodes_publish_to_centrifuge_js(
    browser: Any, live_server: LiveServerFactory, arun_js: ARunJs, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    require_main_redis()
    prefix = unique_prefix()
    nodes, servers = [], []
    for _ in range(2):
        cfg = admin_config()
        cfg["engine"] = {"type": "redis", "redis": {"address": "127.0.0.1:6379", "prefix": prefix}}
        node = Node(cfg)
        nodes.append(node)
        servers.append(live_server(node.asgi_app()))
    channel = "news:admin"
    received: dict[str, Any] = {}

    async def subscriber() -> None:
        ws = servers[1].ws_url(WS_PATH)
        result = await arun_js(
            "admin_receive.mjs", ws, token("js-user"), channel, "4000", timeout=40
        )
        received.update(result)

    page = await browser.new_page()
    async with anyio.create_task_group() as tg:
        tg.start_soon(subscriber)
        await page.goto(servers[0].url("/"))
        # a wrong password is refused and the page stays on the login form
        await page.fill("#password", "wrong")
        await page.click("#login-form button")
        await expect(page.locator("#login-error")).to_have_text("Wrong password.")
        await expect(page.locator("#app")).to_be_hidden()
        await page.fill("#password", PASSWORD)
        await page.click("#login-form button")
        await expect(page.locator("#app")).to_be_visible()
        # both nodes of the cluster, refreshed live: the js client shows up on node B
        rows = page.locator("#nodes tbody tr")
        await expect(rows).to_have_count(2, timeout=TIMEOUT * 1000)
        await expect(page.locator("#node-count")).to_have_text("2")
        row_b = page.locator(f'#nodes tbody tr[data-node="{nodes[1].node_id}"]')
        await expect(row_b.locator("td").nth(3)).to_have_text("1", timeout=TIMEOUT * 1000)
        await expect(row_b.locator("td").nth(1)).to_have_text(nodes[1].version)

        # the channel's presence shows the centrifuge-js subscriber
        await page.fill("#channel", channel)
        await page.click('#channel-form button[data-view="presence"]')
        count = page.locator('[data-testid="presence-count"]')
        await expect(count).to_have_text(f"1 connected to {channel}")
        await expect(page.locator("#channel-view li")).to_contain_text("js-user")

        # publish from the page: the result is shown, and the js client receives it
        await page.select_option("#method", "publish")
        await page.fill("#f-channel", channel)
        await page.fill("#f-data", '{"text": "from the admin page"}')
        await page.click("#run")
        await expect(page.locator("#result-status")).to_have_text("publish ok")
        await expect(page.locator("#result")).to_contain_text('"offset": 1')
        # the subscriber stays a few seconds: what the docs show, desktop and phone
        await page.click('#channel-form button[data-view="presence"]')
        await expect(count).to_have_text(f"1 connected to {channel}")
        await expect(row_b.locator("td").nth(3)).to_have_text("1")
        desktop = tmp_path / "admin-desktop.png"
        await page.screenshot(path=str(desktop), full_page=True)
        shot(desktop)
        # a phone-sized screen: one column, nothing wider than the screen
        await page.set_viewport_size({"width": 390, "height": 844})
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        await expect(row_b.locator("td").nth(3)).to_be_visible()
        phone = tmp_path / "admin-phone.png"
        await page.screenshot(path=str(phone), full_page=True)
        shot(phone)
        await page.set_viewport_size({"width": 1280, "height": 860})
        with anyio.fail_after(30):
            while not received:  # noqa: ASYNC110 (the subprocess returns)
                await anyio.sleep(0.05)
    assert received["data"] == {"text": "from the admin page"}

    # the history view lists it
    await page.click('#channel-form button[data-view="history"]')
    await expect(page.locator("#channel-view li")).to_contain_text("from the admin page")
    # an action's error is shown with its code
    await page.select_option("#method", "disconnect")
    await expect(page.locator("#f-channel")).to_be_hidden()
    await page.fill("#f-user", "js-user")
    await page.click("#run")
    await expect(page.locator("#result-status")).to_have_text("disconnect ok")
    await page.select_option("#method", "publish")
    await page.fill("#f-channel", "unknown:1")
    await page.click("#run")
    await expect(page.locator("#result-status")).to_have_text("error 102")
    await page.select_option("#method", "publish")
    await page.fill("#f-channel", channel)
    await page.click('#channel-form button[data-view="history"]')
    await expect(page.locator("#channel-view li")).to_have_count(1)

    # logging out returns to the login form
    await page.click("#logout")
    await expect(page.locator("#login")).to_be_visible()
