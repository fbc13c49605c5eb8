"""Loading grpcio lazily, with an error that says how to get it."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ConfigError


def load_grpc(feature: str) -> ModuleType:
    """The ``grpc`` module, or a :class:`ConfigError` naming ``feature`` (a config key)."""
    try:
        return importlib.import_module("grpc")
    except ImportError:
        raise ConfigError(
            f"{feature} needs grpcio, which is not installed: pip install 'centrifuge-asgi[grpc]'"
        ) from None
