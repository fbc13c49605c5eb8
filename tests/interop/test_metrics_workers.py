"""``serve --workers 2`` with Prometheus: whichever worker answers a scrape of the shared
port, ``/metrics`` gives the totals of both (real processes over Redis, centrifuge-python
subscribers spread over the two workers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.unit.test_redis_engine import require_main_redis, unique_prefix

from .test_metrics import parse
from .test_workers import (  # noqa: F401 (serve is a fixture)
    API_KEY,
    WAIT,
    clients_per_node,
    cluster_config,
    serve,
    subscribers,
    write_config,
)

pytestmark = [pytest.mark.interop, pytest.mark.anyio]


async def test_one_scrape_gives_the_totals_of_every_worker(
    tmp_path: Path,
    serve: Any,  # noqa: F811 (the fixture)
) -> None:
    require_main_redis()
    config = cluster_config(unique_prefix())
    config["prometheus"] = {"enabled": True}
    served = serve(write_config(tmp_path, config))
    base = f"http://127.0.0.1:{served.port}"
    async with (
        subscribers(served.ws_url(), "room:m", 4, served.port) as subs,
        httpx.AsyncClient(timeout=5) as http,
    ):
        per_node = await clients_per_node(served.port)
        assert len(per_node) == 2 and min(per_node) > 0, per_node  # both workers hold some
        headers = {"X-API-Key": API_KEY}
        for n in range(3):
            body = {"channel": "room:m", "data": {"n": n}}
            assert (await http.post(f"{base}/api/publish", json=body, headers=headers)).json()

        def totals(samples: dict[Any, float]) -> tuple[float, ...]:
            api = (("method", "publish"), ("protocol", "http"))
            name = "centrifugo_api_command_duration_seconds_histogram_count"
            return (
                samples.get(("centrifugo_node_num_clients", ()), 0),
                samples.get(("centrifugo_node_num_nodes", ()), 0),
                samples.get((name, api), 0),
            )

        expected = (float(len(subs)), 2.0, 3.0)
        # every scrape, whichever worker answers it, shows the totals (files are written
        # every second: wait for the first full picture, then ten scrapes in a row)
        with anyio.fail_after(WAIT):
            while totals(parse((await http.get(f"{base}/metrics")).text)) != expected:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        for _ in range(10):
            samples = parse((await http.get(f"{base}/metrics")).text)
            assert totals(samples) == expected
