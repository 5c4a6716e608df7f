"""Channel names, the authorization policy, and presence.

One naming rule (:func:`validate_channel`) is shared by every backend: 1 to
:data:`MAX_CHANNEL_LENGTH` characters from ``[A-Za-z0-9_.:@=-]``, which fits the storage
columns.

The :class:`ChannelPolicy` decides who may join a channel. Rules match channel names by
glob pattern, first match wins::

    policy = ChannelPolicy([
        ChannelRule("user.*", OWNER),                 # user.<id>: only that user
        ChannelRule("private-*", AUTHORIZED),         # ask the authorize callback
        ChannelRule("presence-*", AUTHENTICATED),     # any logged-in user
        ChannelRule("*", PUBLIC),
    ], authorize=lambda user_id, channel: ...)

Protected kinds deny by default: ``AUTHORIZED`` without an ``authorize`` callback denies.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import Literal

import attrs

from apigw_ws_core.errors import ChannelForbidden, InvalidChannel

__all__ = [
    "AUTHENTICATED",
    "AUTHORIZED",
    "DENY",
    "MAX_CHANNEL_LENGTH",
    "OWNER",
    "PUBLIC",
    "ChannelPolicy",
    "ChannelRule",
    "default_policy",
    "validate_channel",
]

MAX_CHANNEL_LENGTH = 100
_CHANNEL_RE = re.compile(rf"\A[A-Za-z0-9_.:@=-]{{1,{MAX_CHANNEL_LENGTH}}}\Z")

Kind = Literal["public", "authenticated", "authorized", "owner", "deny"]
PUBLIC: Kind = "public"
AUTHENTICATED: Kind = "authenticated"
AUTHORIZED: Kind = "authorized"
OWNER: Kind = "owner"
DENY: Kind = "deny"

Authorize = Callable[[str | None, str], bool]


def validate_channel(name: object) -> str:
    """Return ``name`` if it is a valid channel name, else raise ``InvalidChannel``."""
    if not isinstance(name, str) or not _CHANNEL_RE.match(name):
        raise InvalidChannel(
            f"Channel names are 1-{MAX_CHANNEL_LENGTH} characters of letters, digits and _.:@=-"
        )
    return name


@attrs.frozen
class ChannelRule:
    """Channels matching the glob ``pattern`` are of ``kind``.

    ``owner`` channels must look like ``<prefix><user_id>`` where the pattern is
    ``<prefix>*``: only that user may join.
    """

    pattern: str
    kind: Kind

    def matches(self, channel: str) -> bool:
        """Whether this rule applies to ``channel``, ignoring case.

        Case-insensitive on purpose: a database with a case-insensitive collation would
        treat ``USER.7`` and ``user.7`` as one channel, so ``USER.7`` must not slip past the
        ``user.*`` rule as "public". (``OWNER`` then compares exactly, so it is denied.)
        """
        return fnmatch.fnmatchcase(channel.lower(), self.pattern.lower())


def _rules(value: Iterable[ChannelRule]) -> tuple[ChannelRule, ...]:
    return tuple(value)


@attrs.frozen
class ChannelPolicy:
    """Ordered rules plus an optional ``authorize(user_id, channel) -> bool`` callback."""

    rules: tuple[ChannelRule, ...] = attrs.field(converter=_rules)
    authorize: Authorize | None = None

    def rule_for(self, channel: str) -> ChannelRule:
        """First matching rule; a name no rule matches is denied."""
        for rule in self.rules:
            if rule.matches(channel):
                return rule
        return ChannelRule("*", DENY)

    def allows(self, user_id: str | None, channel: str) -> bool:
        """Whether ``user_id`` (``None`` for anonymous) may join ``channel``."""
        rule = self.rule_for(channel)
        if rule.kind == PUBLIC:
            return True
        if rule.kind == AUTHENTICATED:
            return user_id is not None
        if rule.kind == OWNER:
            prefix = rule.pattern.rstrip("*")
            return user_id is not None and channel == f"{prefix}{user_id}"
        if rule.kind == AUTHORIZED:
            return (
                user_id is not None
                and self.authorize is not None
                and bool(self.authorize(user_id, channel))
            )
        return False

    def check(self, user_id: str | None, channel: str) -> str:
        """Validate the name and the permission; raise or return the channel name."""
        validate_channel(channel)
        if not self.allows(user_id, channel):
            raise ChannelForbidden()
        return channel


def default_policy(authorize: Authorize | None = None) -> ChannelPolicy:
    """Pusher-style defaults: ``user.<id>`` owner-only, ``private-*`` asks ``authorize``,
    ``presence-*`` needs a logged-in user, everything else public."""
    return ChannelPolicy(
        [
            ChannelRule("user.*", OWNER),
            ChannelRule("private-*", AUTHORIZED),
            ChannelRule("presence-*", AUTHENTICATED),
            ChannelRule("*", PUBLIC),
        ],
        authorize=authorize,
    )
