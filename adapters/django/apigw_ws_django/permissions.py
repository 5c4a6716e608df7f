"""Ready-made handler permissions (``permission(context) -> bool``) using Django users.

::

    class ChatView(WebSocketView):
        @handler(permission=has_perms("chat.add_message"))
        def chat_message(self, request, message): ...

A failing check answers 403 ``handler_forbidden``. Checks that look at the user load it
once per message (one query), and only when the check runs.
"""

from __future__ import annotations

from apigw_ws_core.context import HandlerContext
from apigw_ws_core.handlers import Permission

__all__ = ["has_any_perm", "has_perms", "is_authenticated", "is_staff", "is_superuser"]


def is_authenticated(context: HandlerContext) -> bool:
    """The connection was opened with a token (no query)."""
    return context.user_id is not None


def is_staff(context: HandlerContext) -> bool:
    """The connection's user is staff."""
    user = context.user
    return bool(user is not None and user.is_active and user.is_staff)


def is_superuser(context: HandlerContext) -> bool:
    """The connection's user is a superuser."""
    user = context.user
    return bool(user is not None and user.is_active and user.is_superuser)


def has_perms(*perms: str) -> Permission:
    """The connection's user has **all** of these Django permissions."""

    def check(context: HandlerContext) -> bool:
        user = context.user
        return bool(user is not None and user.has_perms(list(perms)))

    return check


def has_any_perm(*perms: str) -> Permission:
    """The connection's user has **at least one** of these Django permissions."""

    def check(context: HandlerContext) -> bool:
        user = context.user
        return bool(user is not None and any(user.has_perm(p) for p in perms))

    return check
