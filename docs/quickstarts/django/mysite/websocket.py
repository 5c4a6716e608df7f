"""The WebSocket handlers: what clients send, and what they get back."""

from typing import Any

from apigw_ws_django import WebSocketView, handler
from apigw_ws_storage.django_orm.models import WebSocketSession


class ChatView(WebSocketView):
    """Only methods marked @handler can be called, by the message's "action" key."""

    @handler
    def chat_message(self, request: Any, message: dict[str, Any]) -> None:
        """{"action": "chat_message", "text": ...}: send the line to the sender's channel."""
        text = str(message.get("text", "")).strip()[:500]
        if not text:
            return
        channel = self.websocket_session.channel_name  # chosen at connect: ?channel=...
        WebSocketSession.objects.filter(channel_name=channel).send_message(
            {"type": "chat_message", "user": self.websocket_session.user_id, "text": text}
        )

    @handler
    def whoami(self, request: Any, message: dict[str, Any]) -> dict[str, Any]:
        """A returned dict is the reply to the sender (on two-way routes, like $default)."""
        return {"type": "whoami", "user": self.websocket_session.user_id}
