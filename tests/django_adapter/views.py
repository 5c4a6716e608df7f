"""Class-based handlers used by the Django adapter tests."""

from __future__ import annotations

from typing import Any

from apigw_ws_core.errors import InvalidMessage
from apigw_ws_django import WebSocketView, handler
from apigw_ws_django.permissions import has_perms, is_authenticated
from apigw_ws_storage.django_orm.models import WebSocketSession


class ChatView(WebSocketView):
    """A small chat: echo, room broadcast, who-am-I, permission-guarded handlers."""

    @handler
    def echo(self, request: Any, message: dict[str, Any]) -> dict[str, Any]:
        """Reply with the message (reaches the client on two-way routes)."""
        return {"type": "echo", "text": message.get("text")}

    @handler
    def chat_message(self, request: Any, message: dict[str, Any]) -> None:
        """Push to the sender, then multicast to the room."""
        text = message.get("text")
        if not isinstance(text, str):
            raise InvalidMessage("text must be a string")
        self.websocket_session.send_message({"type": "ack", "text": text})
        WebSocketSession.objects.filter(
            channel_name=self.websocket_session.channel_name
        ).send_message({"type": "chat", "text": text, "from": self.websocket_session.user_id})

    @handler
    def to_others(self, request: Any, message: dict[str, Any]) -> dict[str, int]:
        """Everyone in the room but the sender, twice: the queryset and the shortcut."""
        me = self.websocket_session
        one = WebSocketSession.objects.filter(channel_name=me.channel_name).send_message(
            {"type": "qs", "text": message.get("text")}, exclude=me.connection_id
        )
        two = me.broadcast({"type": "shortcut", "text": message.get("text")})
        return {"queryset": one.delivered, "shortcut": two.delivered}

    @handler
    def my_attributes(self, request: Any, message: dict[str, Any]) -> dict[str, str]:
        """The connection attributes stored at $connect."""
        return self.websocket_session.attributes

    @handler
    def whoami(self, request: Any, message: dict[str, Any]) -> dict[str, Any]:
        """The user as seen through self.user and request.user."""
        return {
            "user": self.user.get_username() if self.user.is_authenticated else None,
            "request_user": (
                request.user.get_username() if request.user.is_authenticated else None
            ),
            "channel": self.websocket_session.channel_name,
            "session_user": getattr(self.websocket_session.user, "username", None),
        }

    @handler(permission=is_authenticated)
    def members_only(self, request: Any, message: dict[str, Any]) -> dict[str, str]:
        """Only for connections opened with a token."""
        return {"ok": "yes"}

    @handler(name="moderate", permission=has_perms("auth.delete_user"))
    def admin_action(self, request: Any, message: dict[str, Any]) -> dict[str, str]:
        """Needs a Django permission."""
        return {"ok": "admin"}

    @handler
    def boom(self, request: Any, message: dict[str, Any]) -> None:
        """A handler bug: answers 500 without leaking details."""
        raise RuntimeError("secret detail")

    def not_a_handler(self, request: Any, message: dict[str, Any]) -> None:
        """Unmarked: unreachable from the wire."""


class OtherView(WebSocketView):
    """A second view with its own app and view-level permission list."""

    permissions_required = ("auth.view_user",)

    @handler
    def ping(self, request: Any, message: dict[str, Any]) -> dict[str, str]:
        """Needs auth.view_user through the view's permissions_required."""
        return {"type": "pong"}
