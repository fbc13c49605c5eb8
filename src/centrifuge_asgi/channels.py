"""Channel rules for client commands: name checks and the permission order.

The server API bypasses all of this. Order and codes follow Centrifugo
(server-api spec §2.4): unknown namespace → 102, invalid name → 107, no permission → 103,
feature off → 108.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from .codes import ErrorCode
from .errors import ClientError

if TYPE_CHECKING:
    from .config import ChannelOptions, Config


def resolve_options(config: Config, channel: str) -> ChannelOptions:
    """Options of the channel's namespace; 102 when the namespace is not configured."""
    opts = config.channel_options(channel)
    if opts is None:
        raise ClientError.of(ErrorCode.UNKNOWN_CHANNEL)
    return opts


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def check_name(config: Config, channel: str, opts: ChannelOptions) -> None:
    """107 when the name is not ASCII (no channel_regex) or channel_regex finds no match."""
    if opts.channel_regex:
        rest = config.resolve_channel(channel)[1]
        if _compiled(opts.channel_regex).search(rest) is None:
            raise ClientError.of(ErrorCode.BAD_REQUEST)
    elif not channel.isascii():
        raise ClientError.of(ErrorCode.BAD_REQUEST)


def user_limited(config: Config, channel: str, opts: ChannelOptions) -> bool:
    """True for a user-limited channel (``chat#42,43``): the namespace enables
    ``allow_user_limited_channels`` and the name holds the user boundary.

    Only its user list lets a client subscribe without a token: neither a subscribe
    proxy, an ``on_subscribe`` handler nor ``allow_subscribe_for_client`` decides for it
    (``client.insecure`` still allows it), as in Centrifugo's ``OnSubscribe``.
    """
    return opts.allow_user_limited_channels and config.user_limited_users(channel) is not None


def user_allowed(config: Config, channel: str, opts: ChannelOptions, user: str) -> bool:
    """True for a user-limited channel (``chat#42,43``) that lists ``user``."""
    if not opts.allow_user_limited_channels or not user:
        return False
    users = config.user_limited_users(channel)
    return users is not None and user in users


def subscribe_allowed_by_flags(
    config: Config, channel: str, opts: ChannelOptions, user: str
) -> bool:
    """The last subscribe checks: ``client.insecure``, else ``allow_subscribe_for_client``
    (with a user, or ``allow_subscribe_for_anonymous``) on a channel that is not
    user-limited."""
    if config.client.insecure:
        return True
    if not opts.allow_subscribe_for_client or not (user or opts.allow_subscribe_for_anonymous):
        return False
    return not user_limited(config, channel, opts)


def allowed_by_flags(
    *,
    for_client: bool,
    for_subscriber: bool,
    for_anonymous: bool,
    user: str,
    subscribed: bool,
    insecure: bool,
) -> bool:
    """The shared ``allow_*_for_client/subscriber/anonymous`` scheme, then insecure mode."""
    if insecure:
        return True
    if user == "" and not for_anonymous:
        return False
    return for_client or (for_subscriber and subscribed)
