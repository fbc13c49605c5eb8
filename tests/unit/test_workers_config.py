"""``http_server.workers`` and the engines ``serve --workers`` accepts (workers.py);
the processes themselves are tested in tests/interop/test_workers.py."""

from __future__ import annotations

import logging

import pytest

from centrifuge_asgi import Config, ConfigError
from centrifuge_asgi.config import load_config
from centrifuge_asgi.workers import check_engine, worker_count


def test_worker_count_from_file_env_and_defaults() -> None:
    assert worker_count(Config()) == 1
    assert worker_count(Config.from_dict({"http_server": {"workers": 0}})) == 1  # 0: default
    assert worker_count(Config.from_dict({"http_server": {"workers": 4}})) == 4
    env = load_config(None, env={"CENTRIFUGO_HTTP_SERVER_WORKERS": "3"})
    assert worker_count(env) == 3
    with pytest.raises(ConfigError, match=r"http_server\.workers"):
        worker_count(Config.from_dict({"http_server": {"workers": -2}}))


@pytest.mark.parametrize(
    "engine",
    [
        {"engine": {"type": "redis"}},
        {"broker": {"enabled": True, "type": "redis"}},
        {"broker": {"enabled": True, "type": "nats"}, "presence_manager": {"enabled": True}},
    ],
)
def test_shared_engines_are_accepted(engine: dict[str, object]) -> None:
    check_engine(Config.from_dict(engine), 8)


@pytest.mark.parametrize(
    "engine",
    [{}, {"engine": {"type": "redis"}, "broker": {"enabled": True, "type": "memory"}}],
)
def test_a_memory_broker_is_refused_with_more_than_one_worker(engine: dict[str, object]) -> None:
    config = Config.from_dict(engine)
    check_engine(config, 1)  # one worker: nothing to share
    with pytest.raises(ConfigError, match=r"configure Redis \(engine.type: redis\)"):
        check_engine(config, 2)


def test_nats_without_shared_presence_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="centrifuge_asgi.workers"):
        check_engine(Config.from_dict({"broker": {"enabled": True, "type": "nats"}}), 2)
    assert "presence stays in each worker's memory" in caplog.text
