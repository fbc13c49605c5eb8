"""The core runs without HTTP: importing the package and using a node load neither an
HTTP framework nor an HTTP client nor Prometheus (the layers themselves are checked by
import-linter in ``nox -s lint``). Each case runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

HEAVY = ("httpx", "starlette", "prometheus_client", "uvicorn")


def loaded_after(code: str) -> dict[str, bool]:
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    import json

    result: dict[str, bool] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_import_loads_no_http() -> None:
    assert loaded_after("import centrifuge_asgi") == dict.fromkeys(HEAVY, False)


def test_node_works_without_http() -> None:
    code = """
        import anyio
        from centrifuge_asgi import Node

        async def main() -> None:
            node = Node({"channel": {"without_namespace": {"history_size": 10,
                                                           "history_ttl": "60s"}}})
            async with node:
                await node.publish("news", {"text": "hi"})
                page = await node.history("news", limit=10)
                assert len(page.publications) == 1, page

        anyio.run(main)
    """
    assert loaded_after(code) == dict.fromkeys(HEAVY, False)


def test_jwks_verifier_loads_httpx_only_when_fetching() -> None:
    code = """
        from centrifuge_asgi import Node

        Node({"client": {"token": {"jwks_public_endpoint": "https://example.invalid/jwks"}}})
    """
    assert loaded_after(code) == dict.fromkeys(HEAVY, False)


@pytest.mark.parametrize(
    ("config", "loaded"),
    [
        ({"prometheus": {"enabled": True}}, {"prometheus_client"}),
        (
            {
                "client": {
                    "proxy": {"connect": {"enabled": True, "endpoint": "http://127.0.0.1:1/"}}
                }
            },
            {"httpx"},
        ),
    ],
)
def test_edges_load_when_configured(config: dict[str, object], loaded: set[str]) -> None:
    code = f"""
        from centrifuge_asgi import Node

        Node({config!r})
    """
    assert loaded_after(code) == {m: m in loaded for m in HEAVY}
