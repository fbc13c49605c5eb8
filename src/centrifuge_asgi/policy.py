"""The channel rules, in one place: a pure, synchronous answer to every channel question.

:class:`ChannelPolicy` is built once from a :class:`~.config.Config` (the node holds it as
``node.policy``). It does no I/O and knows no node, session or engine: given a channel
name, its options, a user and a few request flags, it says which namespace applies, whether
the name is valid, who may do what, which features are on and what a subscription gets.

Errors follow Centrifugo (server-api spec §2.4): unknown namespace → 102, invalid name →
107, no permission → 103, feature off → 108. The server API bypasses permissions, not
namespaces or features. The order in which a client command asks these questions is
written in docs/configuration.md ("Permission order") and kept by ``subscriptions.py``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from .codes import ErrorCode
from .errors import ClientError
from .tagfilter import InvalidFilter, TagsFilter, compile_filter

if TYPE_CHECKING:
    from .config import ChannelOptions, Config
    from .protocol.messages import FilterNode

Action = Literal["publish", "presence", "history"]
"""A command that the ``allow_<action>_for_client/subscriber/anonymous`` options govern."""

Feature = Literal["presence", "history"]
"""A namespace feature that is either on or answers 108."""

DEFAULT_META_TTL = 30 * 24 * 3600.0
"""Stream metadata lifetime when neither the namespace nor ``channel.history_meta_ttl``
sets one."""

_FLAGS: dict[str, tuple[str, str, str]] = {
    action: (
        f"allow_{action}_for_client",
        f"allow_{action}_for_subscriber",
        f"allow_{action}_for_anonymous",
    )
    for action in ("publish", "presence", "history")
}


class SubscribeAccess(enum.Enum):
    """What decides a client-side subscribe that carries no subscription token."""

    DENIED = "denied"
    """A private channel, or a user-limited channel whose list lacks the user: 103."""
    GRANTED = "granted"
    """A user-limited channel that lists the user (or insecure mode on one)."""
    ASK = "ask"
    """Any other channel: the subscribe proxy or handler decides, else
    :meth:`ChannelPolicy.subscribe_allowed`."""


class FeatureOverride(Protocol):
    """Per-subscription overrides (a token's ``override`` claim, a handler's reply);
    ``None`` keeps the namespace's value. :class:`~.auth.SubscriptionOverride` is one."""

    @property
    def presence(self) -> bool | None: ...
    @property
    def join_leave(self) -> bool | None: ...
    @property
    def force_push_join_leave(self) -> bool | None: ...
    @property
    def force_positioning(self) -> bool | None: ...
    @property
    def force_recovery(self) -> bool | None: ...


@dataclass(frozen=True, slots=True)
class SubscriptionFeatures:
    """What one subscription gets."""

    presence: bool
    """The subscriber is added to the channel's presence."""
    emit_join_leave: bool
    """Its subscribe and unsubscribe are published as join and leave."""
    push_join_leave: bool
    """It receives the channel's join and leave pushes."""
    positioned: bool
    """Its stream position is tracked (gaps are detected)."""
    recoverable: bool
    """It may recover missed publications on resubscribe."""
    cache_recovery: bool = False
    """Its recovery returns only the latest publication (``force_recovery_mode: cache``)."""
    auto_recover: bool = False
    """It recovers without asking for it (``auto_cache_recover``, cache mode only)."""


@dataclass(frozen=True, slots=True)
class _NoOverride:
    presence: bool | None = None
    join_leave: bool | None = None
    force_push_join_leave: bool | None = None
    force_positioning: bool | None = None
    force_recovery: bool | None = None


_NO_OVERRIDE = _NoOverride()


def _pick(value: bool | None, default: bool) -> bool:
    return default if value is None else bool(value)


def _check_name(channel: str, rest: str, opts: ChannelOptions) -> None:
    regex = opts.compiled_channel_regex  # compiled once per namespace
    if regex is not None:
        if regex.search(rest) is None:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
    elif not channel.isascii():
        raise ClientError.of(ErrorCode.BAD_REQUEST)


class ChannelPolicy:
    """Every channel rule of one config. Pure and synchronous; cheap to call per command."""

    __slots__ = (
        "_default_data_format",
        "_history_cap",
        "_personal",
        "_single_connection",
        "channel_limit",
        "config",
        "insecure",
        "max_length",
        "recovery_limit",
    )

    def __init__(self, config: Config) -> None:
        self.config = config
        client, channel = config.client, config.channel
        self.insecure: bool = client.insecure
        """``client.insecure``: every client may subscribe, publish and read."""
        self.max_length: int = channel.max_length
        """Longest channel name a client may subscribe to (longer → 107)."""
        self.channel_limit: int = client.channel_limit
        """Most channels one connection may be subscribed to."""
        limit = client.recovery_max_publication_limit
        self.recovery_limit: int = limit if limit > 0 else -1
        """History limit of a recovery read (-1: every missed publication)."""
        self._history_cap = client.history_max_publication_limit
        self._default_data_format = channel.publication_data_format
        personal = client.subscribe_to_user_personal_channel
        self._personal: str | None = None
        if personal.enabled:
            ns = personal.personal_channel_namespace
            sep = channel.namespace_boundary if ns else ""
            self._personal = f"{ns}{sep}{channel.user_boundary}"
        self._single_connection: bool = personal.enabled and personal.single_connection

    # ------------------------------------------------------------- namespaces and names

    def options(self, channel: str) -> ChannelOptions | None:
        """The options of the channel's namespace, or None when it is not configured."""
        return self.config.channel_options(channel)

    def resolve(self, channel: str) -> ChannelOptions:
        """The options of the channel's namespace; 102 when it is not configured."""
        opts = self.config.channel_options(channel)
        if opts is None:
            raise ClientError.of(ErrorCode.UNKNOWN_CHANNEL)
        return opts

    def check_length(self, channel: str) -> None:
        """107 when the name is longer than ``channel.max_length`` (checked on subscribe)."""
        if len(channel) > self.max_length:
            raise ClientError.of(ErrorCode.BAD_REQUEST)

    def check_name(self, channel: str, opts: ChannelOptions) -> None:
        """107 when ``channel_regex`` finds no match in the part after the namespace, or,
        without a ``channel_regex``, when the name is not ASCII."""
        rest = self.config.resolve_channel(channel)[1] if opts.channel_regex else channel
        _check_name(channel, rest, opts)

    def checked(self, channel: str) -> ChannelOptions:
        """:meth:`resolve` then :meth:`check_name` (102, then 107) with one lookup."""
        _, rest, opts = self.config.resolve_channel(channel)
        return self.checked_resolved(channel, rest, opts)

    def checked_resolved(
        self, channel: str, rest: str, opts: ChannelOptions | None
    ) -> ChannelOptions:
        """:meth:`checked` of a channel already resolved by ``config.resolve_channel``."""
        if opts is None:
            raise ClientError.of(ErrorCode.UNKNOWN_CHANNEL)
        _check_name(channel, rest, opts)
        return opts

    def is_private(self, channel: str) -> bool:
        """True when the name starts with ``channel.private_prefix`` (a token is needed)."""
        return self.config.is_private(channel)

    def user_limited(self, channel: str, opts: ChannelOptions) -> bool:
        """True for a user-limited channel (``chat#42,43``): the namespace enables
        ``allow_user_limited_channels`` and the name holds the user boundary."""
        return (
            opts.allow_user_limited_channels and self.config.user_limited_users(channel) is not None
        )

    def user_listed(self, channel: str, opts: ChannelOptions, user: str) -> bool:
        """True for a user-limited channel whose user list holds ``user`` (never anonymous)."""
        if not opts.allow_user_limited_channels or not user:
            return False
        users = self.config.user_limited_users(channel)
        return users is not None and user in users

    def personal_channel(self, user: str) -> str | None:
        """The user's personal channel when ``client.subscribe_to_user_personal_channel``
        is enabled and the connection has a user, else None."""
        if self._personal is None or not user:
            return None
        return self._personal + user

    def single_connection_channel(self, user: str) -> str | None:
        """The personal channel whose presence tells whether ``user`` is connected
        elsewhere, when ``subscribe_to_user_personal_channel.single_connection`` is on."""
        return self.personal_channel(user) if self._single_connection else None

    # ------------------------------------------------------------------- permissions

    def subscribe_access(self, channel: str, opts: ChannelOptions, user: str) -> SubscribeAccess:
        """The checks of a subscribe without a token that come before any handler.

        A private channel is denied. On a user-limited channel only its user list decides
        (or ``client.insecure``): neither a subscribe proxy, an ``on_subscribe`` handler
        nor ``allow_subscribe_for_client`` sees it, as in Centrifugo's ``OnSubscribe``.
        """
        if self.config.is_private(channel):
            return SubscribeAccess.DENIED
        if self.user_limited(channel, opts):
            if self.user_listed(channel, opts, user) or self.insecure:
                return SubscribeAccess.GRANTED
            return SubscribeAccess.DENIED
        return SubscribeAccess.ASK

    def subscribe_allowed(self, channel: str, opts: ChannelOptions, user: str) -> bool:
        """The last subscribe checks, when no handler decided: ``client.insecure``, else
        ``allow_subscribe_for_client`` (with a user, or ``allow_subscribe_for_anonymous``)
        on a channel that is not user-limited."""
        if self.insecure:
            return True
        if not opts.allow_subscribe_for_client or not (user or opts.allow_subscribe_for_anonymous):
            return False
        return not self.user_limited(channel, opts)

    def subscribe_allowed_without_handler(
        self, channel: str, opts: ChannelOptions, user: str
    ) -> bool:
        """Whether a client may subscribe with neither a token nor a handler's answer
        (the ``subs`` of a unidirectional connect): :meth:`subscribe_access`, then
        :meth:`subscribe_allowed`."""
        access = self.subscribe_access(channel, opts, user)
        if access is SubscribeAccess.ASK:
            return self.subscribe_allowed(channel, opts, user)
        return access is SubscribeAccess.GRANTED

    def allowed(self, opts: ChannelOptions, action: Action, user: str, *, subscribed: bool) -> bool:
        """The ``allow_<action>_for_client/subscriber/anonymous`` scheme: insecure mode
        allows; an anonymous client needs ``…_for_anonymous``; then ``…_for_client``, or
        ``…_for_subscriber`` while subscribed. A user-limited channel's list is not read."""
        if self.insecure:
            return True
        for_client, for_subscriber, for_anonymous = _FLAGS[action]
        if not user and not getattr(opts, for_anonymous):
            return False
        return bool(getattr(opts, for_client) or (subscribed and getattr(opts, for_subscriber)))

    # ---------------------------------------------------------------------- features

    @staticmethod
    def history_on(opts: ChannelOptions) -> bool:
        """History is kept only when both ``history_size`` and ``history_ttl`` are > 0."""
        return opts.history_enabled

    @staticmethod
    def presence_on(opts: ChannelOptions) -> bool:
        return opts.presence

    def require(self, opts: ChannelOptions, feature: Feature) -> None:
        """108 when ``feature`` is off in the namespace."""
        on = opts.presence if feature == "presence" else opts.history_enabled
        if not on:
            raise ClientError.of(ErrorCode.NOT_AVAILABLE)

    def tags_filter(self, opts: ChannelOptions, tf: FilterNode) -> TagsFilter:
        """A subscribe's tags filter, compiled; 107 when the namespace does not
        ``allow_tags_filter`` or the tree is invalid (Centrifugo answers both with 107)."""
        if not opts.allow_tags_filter:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
        try:
            return compile_filter(tf)
        except InvalidFilter:
            raise ClientError.of(ErrorCode.BAD_REQUEST) from None

    def features(
        self,
        opts: ChannelOptions,
        user: str,
        override: FeatureOverride | None = None,
        *,
        recoverable: bool = False,
        positioned: bool = False,
        join_leave: bool = False,
    ) -> SubscriptionFeatures:
        """What a subscription gets, from the namespace, the grant's ``override`` and the
        request's ``recoverable``, ``positioned`` and ``join_leave`` flags.

        Recovery and positioning need history. A client may ask for them when the
        namespace allows it (``allow_recovery``, ``allow_positioning``) or lets it read
        the history; ``force_*`` turns them on regardless. A recoverable subscription is
        positioned. Join and leave pushes need ``join_leave``, then
        ``force_push_join_leave`` or a request by a client allowed to read presence.
        A recoverable subscription of a ``force_recovery_mode: cache`` namespace recovers
        only the latest publication, and with ``auto_cache_recover`` does so unasked.
        """
        o: FeatureOverride = _NO_OVERRIDE if override is None else override
        history = opts.history_enabled
        reads_history = self.allowed(opts, "history", user, subscribed=True)
        recover = history and (
            _pick(o.force_recovery, opts.force_recovery)
            or (recoverable and (opts.allow_recovery or reads_history))
        )
        position = recover or (
            history
            and (
                _pick(o.force_positioning, opts.force_positioning)
                or (positioned and (opts.allow_positioning or reads_history))
            )
        )
        cache = recover and opts.force_recovery_mode == "cache"
        emit = _pick(o.join_leave, opts.join_leave)
        push = emit and (
            _pick(o.force_push_join_leave, opts.force_push_join_leave)
            or (join_leave and self.allowed(opts, "presence", user, subscribed=True))
        )
        return SubscriptionFeatures(
            presence=_pick(o.presence, opts.presence),
            emit_join_leave=emit,
            push_join_leave=push,
            positioned=position,
            recoverable=recover,
            cache_recovery=cache,
            auto_recover=cache and opts.auto_cache_recover,
        )

    # ------------------------------------------------------------- limits and values

    def history_limit(self, requested: int) -> int:
        """The number of publications a client's history read returns at most: its
        ``limit`` (-1 all, 0 none), capped by ``client.history_max_publication_limit``."""
        limit = max(requested, -1)
        cap = self._history_cap
        if cap > 0 and (limit < 0 or limit > cap):
            return cap
        return limit

    def history_kept(self, opts: ChannelOptions) -> tuple[int, float]:
        """``(history_size, history_ttl)`` for a publication: zeros when history is off."""
        if opts.history_enabled:
            return opts.history_size, opts.history_ttl
        return 0, 0.0

    def meta_ttl(self, opts: ChannelOptions) -> float:
        """Seconds a stream's metadata outlives its last use: the namespace's
        ``history_meta_ttl``, else ``channel.history_meta_ttl``, else 30 days."""
        return self.config.effective_history_meta_ttl(opts) or DEFAULT_META_TTL

    def data_format(self, opts: ChannelOptions) -> str:
        """The ``publication_data_format`` of the namespace, else of ``channel``."""
        return opts.publication_data_format or self._default_data_format


__all__ = [
    "DEFAULT_META_TTL",
    "Action",
    "ChannelPolicy",
    "Feature",
    "FeatureOverride",
    "SubscribeAccess",
    "SubscriptionFeatures",
]
