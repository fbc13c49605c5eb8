"""centrifuge-asgi: Centrifugo-compatible real-time messaging for ASGI applications.

Mount ``Node(config).asgi_app()`` in Starlette/FastAPI (with ``lifespan=node.lifespan``),
publish with ``await node.publish(channel, data)``, and connect with any official
Centrifugo SDK.
"""

from . import config_loader as _config_loader  # noqa: F401  (Config's loading)
from . import edges as _edges  # noqa: F401  (plugs the edges into the node: edges.py)
from ._version import __version__
from .auth import SubscriptionOverride, connection_token, subscription_token
from .codes import DisconnectCode, ErrorCode, UnsubscribeCode
from .config import Config, load_config
from .engines.base import ClientInfo, Publication, StreamPosition
from .errors import CentrifugeError, ClientError, ConfigError, Disconnect, EngineError
from .handlers import (
    ClientRef,
    ConnectEvent,
    ConnectReply,
    DisconnectEvent,
    MapPublishEvent,
    MapPublishReply,
    MapRemoveEvent,
    MapRemoveReply,
    MessageEvent,
    PublishEvent,
    PublishReply,
    RefreshEvent,
    RefreshReply,
    RPCEvent,
    SharedPollItem,
    SharedPollRefreshEvent,
    SharedPollRefreshReply,
    SharedPollResult,
    StreamPublication,
    SubRefreshEvent,
    SubRefreshReply,
    SubscribeEvent,
    SubscribeReply,
    SubscribeStreamEvent,
)
from .node import HistoryPage, Node

__all__ = [
    "CentrifugeError",
    "ClientError",
    "ClientInfo",
    "ClientRef",
    "Config",
    "ConfigError",
    "ConnectEvent",
    "ConnectReply",
    "Disconnect",
    "DisconnectCode",
    "DisconnectEvent",
    "EngineError",
    "ErrorCode",
    "HistoryPage",
    "MapPublishEvent",
    "MapPublishReply",
    "MapRemoveEvent",
    "MapRemoveReply",
    "MessageEvent",
    "Node",
    "Publication",
    "PublishEvent",
    "PublishReply",
    "RPCEvent",
    "RefreshEvent",
    "RefreshReply",
    "SharedPollItem",
    "SharedPollRefreshEvent",
    "SharedPollRefreshReply",
    "SharedPollResult",
    "StreamPosition",
    "StreamPublication",
    "SubRefreshEvent",
    "SubRefreshReply",
    "SubscribeEvent",
    "SubscribeReply",
    "SubscribeStreamEvent",
    "SubscriptionOverride",
    "UnsubscribeCode",
    "__version__",
    "connection_token",
    "load_config",
    "subscription_token",
]
