"""What a session sees of the node that hosts it: :class:`SessionHost`.

``session.py``, ``subscriptions.py`` and the proxy hooks use the node only through this
Protocol, never through :class:`~centrifuge_asgi.node.Node` itself, so the core below the
node does not import it (not even for type checking). ``Node`` satisfies it structurally;
``node.py`` checks that with mypy. A test double needs only these members.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .auth import TokenVerifier
    from .config import Config
    from .engines.base import Broker, ClientInfo, PresenceManager, PublishResult, StreamPosition
    from .engines.map_base import MapBroker
    from .handlers import Handlers
    from .observer import NodeObserver, Tracing
    from .op_limits import OperationLimits
    from .pacing import Pacer
    from .pending import Pending
    from .policy import ChannelPolicy
    from .registry import Registry
    from .shared_poll import SharedPollManager
    from .timers import Scheduler, Wheel


class SessionHost(Protocol):
    """The node as its sessions use it: config, handlers, engines, timers and tasks."""

    # identity and config
    node_id: str
    version: str
    config: Config
    policy: ChannelPolicy  # every channel rule: namespaces, names, permissions, features
    handlers: Handlers
    rate_limits: OperationLimits | None  # client.rate_limit (Centrifugo PRO semantics)
    # connection index and fan-out
    registry: Registry[Any]  # of sessions: session.py imports this module
    metrics: NodeObserver
    counting: bool  # False for the default NoObserver: per-message counts are skipped
    shared_poll: SharedPollManager  # shared poll channels: tracked keys, polling
    # engines
    broker: Broker
    presence_manager: PresenceManager
    map_broker: MapBroker  # map subscriptions
    # tokens
    token_verifier: TokenVerifier
    subscription_token_verifier: TokenVerifier
    # timers, pacing and back-pressure
    pings: Wheel[Any]
    stale_checks: Wheel[Any]
    pacer: Pacer
    outbox_pressure: bool  # a session sets it when its outbox passes half of its limit
    tracing: Tracing | None  # OpenTelemetry spans, None when off

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def closing(self) -> bool: ...

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run ``fn(*args)`` as a node-owned task (False when the node is not running)."""
        ...

    def metrics_command(self, method: str, duration: float, error_code: int = 0) -> None: ...

    def metrics_disconnect(self, code: int) -> None: ...

    async def map_presence_update(
        self, channel: str, key: str, data: bytes, info: ClientInfo
    ) -> None: ...

    async def map_remove_quietly(self, channel: str, key: str) -> None: ...

    async def map_presence_join(
        self, channel: str, client_id: str, user: str, info: ClientInfo
    ) -> None: ...

    async def disconnect(
        self,
        user: str,
        *,
        client: str = "",
        session: str = "",
        code: int = ...,
        reason: str = "",
        whitelist: list[str] | None = None,
    ) -> None: ...

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        idempotency_key: str = "",
        skip_history: bool = False,
        tags: Mapping[str, str] | None = None,
        client_info: ClientInfo | None = None,
        version: int = 0,
        version_epoch: str = "",
    ) -> StreamPosition: ...

    async def publish_pipelined(
        self,
        channel: str,
        data: Any,
        *,
        client_info: ClientInfo | None = None,
        skip_history: bool = False,
    ) -> Pending[PublishResult] | None: ...

    def publish_outcome(self, channel: str, pending: Pending[PublishResult]) -> StreamPosition: ...
