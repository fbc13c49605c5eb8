"""Operation rate limits: the in-memory ``client_command`` and ``user_command`` limits of
Centrifugo PRO (``client.rate_limit.*``). Centrifugo OSS has none of this.

Sans-I/O: every call is given the current time and nothing here sleeps or schedules.

Each operation resolves to one bucket set: the namespace override of a channel command,
else the rpc method override, else the command's own buckets, else the shared
``default`` ones (no set: not limited). A set allows an operation when every bucket in
it has a token, and then takes one from each. ``total`` is checked after that and only
for operations that passed. A bucket of ``rate`` per ``interval`` holds at most ``rate``
tokens, starts full and regains ``rate / interval`` tokens a second.

Memory is bounded: a connection keeps at most one bucket set per configured key, and
the per-user limiter keeps the :data:`MAX_USERS` most recently active users (a user
pushed out starts again with full buckets).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .config import (
    ClientRateLimitConfig,
    CommandRateLimit,
    RateLimitBuckets,
    UserCommandRateLimit,
)
from .token_bucket import TokenBucket

MAX_USERS = 100_000  # users whose buckets the node keeps

# (capacity, tokens regained per second) of each bucket in a set
Spec = tuple[tuple[float, float], ...]

# what a connection may be limited on (``connect`` only per user)
CHANNEL_COMMANDS = (
    "subscribe",
    "unsubscribe",
    "publish",
    "history",
    "presence",
    "presence_stats",
    "sub_refresh",
)
COMMANDS = (*CHANNEL_COMMANDS, "refresh", "rpc")


class Buckets:
    """The token buckets of one key (see the module docstring)."""

    __slots__ = ("_all", "_one")

    def __init__(self, spec: Spec, now: float) -> None:
        self._all = tuple(TokenBucket(capacity, refill, now=now) for capacity, refill in spec)
        self._one = self._all[0] if len(self._all) == 1 else None

    def allow(self, now: float) -> bool:
        """Take a token from every bucket if each has one (True); else take none."""
        if self._one is not None:
            return self._one.take(now)
        ready = True
        for bucket in self._all:
            ready = bucket.fill(now) and ready  # every bucket is filled, ready or not
        if ready:
            for bucket in self._all:
                bucket.take(now)
        return ready


def _spec(cfg: RateLimitBuckets) -> Spec | None:
    """The buckets of an enabled entry that has any; None otherwise."""
    if not cfg.enabled or not cfg.buckets:
        return None
    return tuple((float(b.rate), b.rate / b.interval) for b in cfg.buckets)


@dataclass(frozen=True, slots=True)
class Rules:
    """One limiter's configuration, resolved to bucket keys."""

    total: Spec | None
    default: Spec | None
    commands: Mapping[str, Spec]
    namespaces: Mapping[tuple[str, str], Spec]  # (command, namespace)
    rpc_methods: Mapping[str, Spec]

    @classmethod
    def of(cls, cfg: CommandRateLimit) -> Rules | None:
        """The rules of an enabled limiter; None when it is off."""
        if not cfg.enabled:
            return None
        commands: dict[str, Spec] = {}
        namespaces: dict[tuple[str, str], Spec] = {}
        rpc_methods: dict[str, Spec] = {}
        names = (*COMMANDS, "connect") if isinstance(cfg, UserCommandRateLimit) else COMMANDS
        for name in names:
            entry: RateLimitBuckets = getattr(cfg, name)
            if (spec := _spec(entry)) is not None:
                commands[name] = spec
        for name in CHANNEL_COMMANDS:
            for ns in getattr(cfg, name).namespace_overrides:
                if (spec := _spec(ns)) is not None:
                    namespaces[(name, ns.namespace_name)] = spec
        for override in cfg.rpc.method_overrides:
            if (spec := _spec(override)) is not None:
                rpc_methods[override.method] = spec
        return cls(_spec(cfg.total), _spec(cfg.default), commands, namespaces, rpc_methods)

    def resolve(self, command: str, namespace: str | None, rpc_method: str) -> tuple[str, Spec]:
        """The bucket key and buckets of one operation ("" when it is not limited)."""
        if namespace is not None:
            spec = self.namespaces.get((command, namespace))
            if spec is not None:
                return f"{command}@{namespace}", spec
        elif command == "rpc":
            spec = self.rpc_methods.get(rpc_method)
            if spec is not None:
                return f"rpc#{rpc_method}", spec
        spec = self.commands.get(command)
        if spec is not None:
            return command, spec
        if self.default is not None:
            return "default", self.default
        return "", ()


def _allow(
    rules: Rules,
    held: dict[str, Buckets],
    command: str,
    namespace: str | None,
    rpc_method: str,
    now: float,
) -> bool:
    key, spec = rules.resolve(command, namespace, rpc_method)
    if key:
        buckets = held.get(key)
        if buckets is None:
            buckets = held[key] = Buckets(spec, now)
        if not buckets.allow(now):
            return False
    total = rules.total
    if total is None or command == "connect":  # connect is never under total
        return True
    buckets = held.get("total")
    if buckets is None:
        buckets = held["total"] = Buckets(total, now)
    return buckets.allow(now)


class OperationLimits:
    """The node's operation limits: per connection (``client_command``) and per user
    (``user_command``)."""

    __slots__ = ("_per_user", "client", "user")

    def __init__(self, client: Rules | None, user: Rules | None) -> None:
        self.client = client
        self.user = user
        self._per_user: dict[str, dict[str, Buckets]] = {}

    @classmethod
    def of(cls, cfg: ClientRateLimitConfig) -> OperationLimits | None:
        """The limits of ``client.rate_limit``; None when neither limiter is enabled."""
        client, user = Rules.of(cfg.client_command), Rules.of(cfg.user_command)
        if client is None and user is None:
            return None
        return cls(client, user)

    def allow(
        self,
        connection: dict[str, Buckets],
        user: str,
        command: str,
        namespace: str | None,
        rpc_method: str,
        now: float,
    ) -> bool:
        """Whether one operation may run; ``connection`` holds that connection's buckets.

        ``namespace`` is the channel's namespace for a channel command (None otherwise).
        Anonymous connections are never limited per user.
        """
        client = self.client
        if (
            client is not None
            and command != "connect"
            and not _allow(client, connection, command, namespace, rpc_method, now)
        ):
            return False
        rules = self.user
        if rules is None or not user:
            return True
        per_user = self._per_user
        held = per_user.pop(user, None)  # re-inserted last: the most recently active
        if held is None:
            held = {}
            if len(per_user) >= MAX_USERS:
                del per_user[next(iter(per_user))]
        per_user[user] = held
        return _allow(rules, held, command, namespace, rpc_method, now)

    @property
    def users_held(self) -> int:
        return len(self._per_user)


__all__ = ["MAX_USERS", "Buckets", "OperationLimits", "Rules"]
