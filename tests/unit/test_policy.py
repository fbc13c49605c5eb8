"""ChannelPolicy: every channel question over tables of configs, channels and users.

No node, no session, no engine: the policy is built from a Config and answers
synchronously. Errors are given by their code (102 unknown namespace, 107 bad name,
108 feature off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from centrifuge_asgi import Config, SubscriptionOverride
from centrifuge_asgi.config import ChannelOptions
from centrifuge_asgi.errors import ClientError
from centrifuge_asgi.policy import (
    DEFAULT_META_TTL,
    Action,
    ChannelPolicy,
    SubscribeAccess,
    SubscriptionFeatures,
)

DENIED, GRANTED, ASK = SubscribeAccess.DENIED, SubscribeAccess.GRANTED, SubscribeAccess.ASK

NAMESPACES: list[dict[str, Any]] = [
    {"name": "chat", "allow_subscribe_for_client": True},
    {"name": "anon", "allow_subscribe_for_client": True, "allow_subscribe_for_anonymous": True},
    {"name": "rx", "channel_regex": "^[a-z]+$"},
    {"name": "uni", "channel_regex": "^.+$"},
    {
        "name": "dm",
        "allow_user_limited_channels": True,
        "allow_subscribe_for_client": True,
        "allow_subscribe_for_anonymous": True,
    },
    {"name": "closed"},
    {"name": "hist", "history_size": 10, "history_ttl": "60s", "history_meta_ttl": "2h"},
    {"name": "pres", "presence": True},
    {"name": "bin", "publication_data_format": "binary"},
]


def make(insecure: bool = False, **extra: Any) -> ChannelPolicy:
    data: dict[str, Any] = {
        "client": {"insecure": insecure},
        "channel": {"namespaces": NAMESPACES, "max_length": 12},
    }
    for key, value in extra.items():
        section, _, name = key.partition("__")
        data.setdefault(section, {})[name] = value
    return ChannelPolicy(Config.from_dict(data, source="<test>"))


POLICY = make()
INSECURE = make(insecure=True)


def with_zero(section: str, **values: Any) -> ChannelPolicy:
    """A policy whose config holds zeros that a config file would read as defaults."""
    config = Config()
    part = msgspec.structs.replace(getattr(config, section), **values)
    return ChannelPolicy(msgspec.structs.replace(config, **{section: part}))


def outcome(fn: Callable[[], Any]) -> Any:
    """The call's result, or the code of the ClientError it raised."""
    try:
        return fn()
    except ClientError as exc:
        return int(exc.code)


def ns_name(policy: ChannelPolicy, opts: ChannelOptions) -> str:
    if opts is policy.config.channel.without_namespace:
        return "<top>"
    return str(getattr(opts, "name", "?"))


def opts(**flags: Any) -> ChannelOptions:
    return ChannelOptions(**flags)


# ------------------------------------------------------------------ namespaces (102)


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("chat:room", "chat"),
        ("$chat:room", "chat"),  # one private prefix is stripped
        ("chat:a:b", "chat"),  # the first boundary decides
        ("room", "<top>"),
        ("$room", "<top>"),
        (":room", "<top>"),  # an empty namespace is no namespace
        ("nope:room", 102),
        ("$$chat:room", 102),
        ("chat", "<top>"),
    ],
)
def test_resolve(channel: str, expected: object) -> None:
    got = outcome(lambda: POLICY.resolve(channel))
    assert (got if isinstance(got, int) else ns_name(POLICY, got)) == expected
    options = POLICY.options(channel)
    assert (102 if options is None else ns_name(POLICY, options)) == expected


# ---------------------------------------------------------------------- names (107)


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("chat:room", "chat"),
        ("chat:rüm", 107),  # without channel_regex a name must be ASCII
        ("rüm", 107),
        ("rx:abc", "rx"),
        ("$rx:abc", "rx"),  # the regex sees the part after the namespace
        ("rx:ab1", 107),
        ("rx:", 107),
        ("rx:rüm", 107),
        ("uni:rüm", "uni"),  # a channel_regex replaces the ASCII rule
        ("nope:rüm", 102),  # the namespace is resolved first
    ],
)
def test_name(channel: str, expected: object) -> None:
    got = outcome(lambda: POLICY.checked(channel))
    assert (got if isinstance(got, int) else ns_name(POLICY, got)) == expected
    if expected != 102:  # check_name alone gives the same answer
        resolved = POLICY.resolve(channel)
        assert outcome(lambda: POLICY.check_name(channel, resolved)) == (
            None if isinstance(expected, str) else expected
        )


@pytest.mark.parametrize(
    ("channel", "expected"),
    [("a" * 12, None), ("a" * 13, 107), ("", None), ("é" * 12, None)],
)
def test_length(channel: str, expected: object) -> None:
    assert outcome(lambda: POLICY.check_length(channel)) == expected


@pytest.mark.parametrize(
    ("channel", "private", "users", "limited"),
    [
        ("$chat:x", True, None, False),
        ("chat:$x", False, None, False),
        ("dm:#42,43", False, ["42", "43"], True),
        ("dm:room#42", False, ["42"], True),
        ("chat:#42", False, ["42"], False),  # the namespace does not allow it
        ("dm:room", False, None, False),
    ],
)
def test_private_and_user_limited(
    channel: str, private: bool, users: list[str] | None, limited: bool
) -> None:
    options = POLICY.resolve(channel)
    assert POLICY.is_private(channel) is private
    assert POLICY.user_limited(channel, options) is limited
    for user in ("42", "43", "7", ""):
        listed = limited and users is not None and user != "" and user in users
        assert POLICY.user_listed(channel, options, user) is listed


# ------------------------------------------------------------------ subscribe (103)

# channel, user → (access, subscribe_allowed, allowed without a handler), then insecure
SUBSCRIBE: list[tuple[str, str, tuple[Any, bool, bool], tuple[Any, bool, bool]]] = [
    ("chat:x", "u", (ASK, True, True), (ASK, True, True)),
    ("chat:x", "", (ASK, False, False), (ASK, True, True)),  # anonymous needs …_anonymous
    ("anon:x", "", (ASK, True, True), (ASK, True, True)),
    ("closed:x", "u", (ASK, False, False), (ASK, True, True)),
    ("$chat:x", "u", (DENIED, True, False), (DENIED, True, False)),  # a token is needed
    ("dm:#u,v", "u", (GRANTED, False, True), (GRANTED, True, True)),
    ("dm:#u,v", "w", (DENIED, False, False), (GRANTED, True, True)),
    ("dm:#u,v", "", (DENIED, False, False), (GRANTED, True, True)),
    ("dm:room", "w", (ASK, True, True), (ASK, True, True)),  # no user boundary
    ("chat:#w", "u", (ASK, True, True), (ASK, True, True)),  # not a user-limited namespace
]


@pytest.mark.parametrize(("channel", "user", "secure", "insecure"), SUBSCRIBE)
def test_subscribe(
    channel: str,
    user: str,
    secure: tuple[SubscribeAccess, bool, bool],
    insecure: tuple[SubscribeAccess, bool, bool],
) -> None:
    for policy, expected in ((POLICY, secure), (INSECURE, insecure)):
        options = policy.resolve(channel)
        assert (
            policy.subscribe_access(channel, options, user),
            policy.subscribe_allowed(channel, options, user),
            policy.subscribe_allowed_without_handler(channel, options, user),
        ) == expected


# ------------------------------------------------- publish, presence, history (103)

# the flags set, user, subscribed → allowed (secure mode; insecure always allows)
ALLOWED: list[tuple[set[str], str, bool, bool]] = [
    (set(), "u", True, False),
    ({"client"}, "u", False, True),
    ({"client"}, "", False, False),  # anonymous needs …_for_anonymous
    ({"client", "anonymous"}, "", False, True),
    ({"subscriber"}, "u", False, False),
    ({"subscriber"}, "u", True, True),
    ({"subscriber"}, "", True, False),
    ({"subscriber", "anonymous"}, "", True, True),
    ({"anonymous"}, "", True, False),  # …_for_anonymous alone allows nothing
]


@pytest.mark.parametrize("action", ["publish", "presence", "history"])
@pytest.mark.parametrize(("flags", "user", "subscribed", "expected"), ALLOWED)
def test_allowed(
    action: Action, flags: set[str], user: str, subscribed: bool, expected: bool
) -> None:
    options = opts(**{f"allow_{action}_for_{who}": True for who in flags})
    assert POLICY.allowed(options, action, user, subscribed=subscribed) is expected
    assert INSECURE.allowed(options, action, user, subscribed=subscribed) is True
    # another action's flags never count
    other: Action = "history" if action != "history" else "publish"
    assert POLICY.allowed(options, other, user, subscribed=subscribed) is False


# ----------------------------------------------------------------- features (108)


@pytest.mark.parametrize(
    ("flags", "history", "presence"),
    [
        ({"history_size": 10, "history_ttl": 60.0}, True, False),
        ({"history_size": 10}, False, False),  # both are needed (a hand-built config)
        ({"history_ttl": 60.0}, False, False),
        ({"presence": True}, False, True),
        ({}, False, False),
    ],
)
def test_features_on(flags: dict[str, Any], history: bool, presence: bool) -> None:
    options = opts(**flags)
    assert POLICY.history_on(options) is history
    assert POLICY.presence_on(options) is presence
    assert outcome(lambda: POLICY.require(options, "history")) == (None if history else 108)
    assert outcome(lambda: POLICY.require(options, "presence")) == (None if presence else 108)
    assert POLICY.history_kept(options) == ((10, 60.0) if history else (0, 0.0))


H = {"history_size": 10, "history_ttl": 60.0}
OFF = SubscriptionFeatures(False, False, False, False, False)


def gets(
    presence: bool = False,
    emit: bool = False,
    push: bool = False,
    positioned: bool = False,
    recoverable: bool = False,
) -> SubscriptionFeatures:
    return SubscriptionFeatures(presence, emit, push, positioned, recoverable)


# namespace options, user, override, request flags → what the subscription gets
FEATURES: list[tuple[dict[str, Any], str, SubscriptionOverride | None, set[str], Any]] = [
    ({}, "u", None, {"recoverable", "positioned", "join_leave"}, OFF),
    # recovery and positioning need history, whatever is asked or forced
    ({"force_recovery": True, "force_positioning": True}, "u", None, set(), OFF),
    ({**H, "force_recovery": True}, "u", None, set(), gets(positioned=True, recoverable=True)),
    ({**H, "force_positioning": True}, "u", None, set(), gets(positioned=True)),
    ({**H}, "u", None, {"recoverable", "positioned"}, OFF),  # asked, not allowed
    (
        {**H, "allow_recovery": True},
        "u",
        None,
        {"recoverable"},
        gets(positioned=True, recoverable=True),
    ),
    ({**H, "allow_positioning": True}, "u", None, {"positioned"}, gets(positioned=True)),
    ({**H, "allow_positioning": True}, "u", None, {"recoverable"}, OFF),
    # a client that may read the history may ask for both
    (
        {**H, "allow_history_for_subscriber": True},
        "u",
        None,
        {"recoverable"},
        gets(positioned=True, recoverable=True),
    ),
    ({**H, "allow_history_for_client": True}, "", None, {"positioned"}, OFF),  # anonymous
    # an override replaces the namespace's force_* in both directions
    (
        {**H},
        "u",
        SubscriptionOverride(force_recovery=True),
        set(),
        gets(positioned=True, recoverable=True),
    ),
    ({**H, "force_recovery": True}, "u", SubscriptionOverride(force_recovery=False), set(), OFF),
    ({}, "u", SubscriptionOverride(force_recovery=True), set(), OFF),
    # presence and join/leave
    ({"presence": True}, "u", None, set(), gets(presence=True)),
    ({"presence": True}, "u", SubscriptionOverride(presence=False), set(), OFF),
    ({}, "u", SubscriptionOverride(presence=True), set(), gets(presence=True)),
    ({"join_leave": True}, "u", None, set(), gets(emit=True)),
    ({"join_leave": True}, "u", None, {"join_leave"}, gets(emit=True)),  # not permitted
    (
        {"join_leave": True, "allow_presence_for_subscriber": True},
        "u",
        None,
        {"join_leave"},
        gets(emit=True, push=True),
    ),
    (
        {"join_leave": True, "force_push_join_leave": True},
        "u",
        None,
        set(),
        gets(emit=True, push=True),
    ),
    ({"force_push_join_leave": True}, "u", None, set(), OFF),  # pushes need join_leave
    (
        {},
        "u",
        SubscriptionOverride(join_leave=True, force_push_join_leave=True),
        set(),
        gets(emit=True, push=True),
    ),
    ({"join_leave": True}, "u", SubscriptionOverride(join_leave=False), {"join_leave"}, OFF),
]


@pytest.mark.parametrize(("flags", "user", "override", "asked", "expected"), FEATURES)
def test_subscription_features(
    flags: dict[str, Any],
    user: str,
    override: SubscriptionOverride | None,
    asked: set[str],
    expected: SubscriptionFeatures,
) -> None:
    got = POLICY.features(
        opts(**flags),
        user,
        override,
        recoverable="recoverable" in asked,
        positioned="positioned" in asked,
        join_leave="join_leave" in asked,
    )
    assert got == expected


def test_insecure_features() -> None:
    """Insecure mode lets a client ask for recovery and join/leave pushes."""
    got = INSECURE.features(opts(**H, join_leave=True), "", None, recoverable=True, join_leave=True)
    assert got == gets(emit=True, push=True, positioned=True, recoverable=True)


# --------------------------------------------------------------- limits and values


@pytest.mark.parametrize(
    ("cap", "requested", "expected"),
    [
        (0, 0, 0),
        (0, 5, 5),
        (0, -1, -1),
        (0, -7, -1),
        (10, 5, 5),
        (10, 50, 10),
        (10, -1, 10),  # "all" is capped too
        (10, 0, 0),
    ],
)
def test_history_limit(cap: int, requested: int, expected: int) -> None:
    policy = with_zero("client", history_max_publication_limit=cap)
    assert policy.history_limit(requested) == expected


@pytest.mark.parametrize(("limit", "expected"), [(0, -1), (300, 300)])
def test_recovery_limit(limit: int, expected: int) -> None:
    policy = with_zero("client", recovery_max_publication_limit=limit)
    assert policy.recovery_limit == expected


def test_limits() -> None:
    policy = make(client__channel_limit=7)
    assert (policy.channel_limit, policy.max_length) == (7, 12)


@pytest.mark.parametrize(
    ("channel", "default", "expected"),
    [
        ("hist:x", None, 7200.0),  # the namespace's own
        ("chat:x", None, 720 * 3600.0),  # channel.history_meta_ttl
        ("chat:x", "1h", 3600.0),
    ],
)
def test_meta_ttl(channel: str, default: str | None, expected: float) -> None:
    policy = make() if default is None else make(channel__history_meta_ttl=default)
    assert policy.meta_ttl(policy.resolve(channel)) == expected


def test_meta_ttl_default() -> None:
    """A hand-built config without any metadata lifetime gets 30 days."""
    policy = with_zero("channel", history_meta_ttl=0.0)
    assert policy.meta_ttl(opts()) == DEFAULT_META_TTL


@pytest.mark.parametrize(
    ("default", "channel", "expected"),
    [("", "chat:x", ""), ("json_object", "chat:x", "json_object"), ("json", "bin:x", "binary")],
)
def test_data_format(default: str, channel: str, expected: str) -> None:
    policy = make(channel__publication_data_format=default) if default else make()
    assert policy.data_format(policy.resolve(channel)) == expected


@pytest.mark.parametrize(
    ("personal", "user", "expected"),
    [
        ({}, "42", None),
        ({"enabled": True}, "42", "#42"),
        ({"enabled": True}, "", None),  # anonymous connections have none
        ({"enabled": True, "personal_channel_namespace": "dm"}, "42", "dm:#42"),
    ],
)
def test_personal_channel(personal: dict[str, Any], user: str, expected: str | None) -> None:
    policy = make(client__subscribe_to_user_personal_channel=personal)
    assert policy.personal_channel(user) == expected


def test_custom_boundaries() -> None:
    config = Config.from_dict(
        {
            "client": {"subscribe_to_user_personal_channel": {"enabled": True}},
            "channel": {
                "private_prefix": "~",
                "namespace_boundary": "/",
                "user_boundary": "@",
                "user_separator": ";",
                "namespaces": [{"name": "room", "allow_user_limited_channels": True}],
            },
        },
        source="<test>",
    )
    policy = ChannelPolicy(config)
    room = policy.resolve("~room/a")
    assert policy.is_private("~room/a") and not policy.is_private("$room/a")
    assert policy.user_listed("room/x@1;2", room, "2")
    assert policy.subscribe_access("room/x@1;2", room, "3") is DENIED
    assert policy.personal_channel("9") == "@9"
    assert outcome(lambda: policy.resolve("other/x")) == 102
