"""Kept so that imports from earlier versions keep working: the channel rules (namespace
resolution, name checks, the ``allow_*`` permission scheme, features and limits) live in
:mod:`.policy`, in :class:`~.policy.ChannelPolicy`, held by the node as ``node.policy``."""

from __future__ import annotations

from .policy import ChannelPolicy, SubscribeAccess, SubscriptionFeatures

__all__ = ["ChannelPolicy", "SubscribeAccess", "SubscriptionFeatures"]
