"""The chat's WebSocket handlers: what the page sends, and what it gets back.

The page (``examples/chat_ui``) sends ``{"action": "join"}`` after every (re)connect,
``{"action": "chat_message", "text": ...}`` and keep-alive ``{"action": "ping"}``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from apigw_ws_django import WebSocketView, get_app, handler
from apigw_ws_storage.django_orm.models import WebSocketSession
from chat.models import Message, Room

HISTORY = 20


def presence_event(channel: str) -> dict[str, Any]:
    """Who is in ``channel`` now, with their names."""
    user_ids = get_app().storage.presence(channel).user_ids
    users = get_user_model().objects.filter(pk__in=user_ids)
    return {
        "type": "presence",
        "room": channel,
        "users": sorted(
            ({"id": str(u.pk), "name": u.get_username()} for u in users),
            key=lambda u: u["name"],
        ),
    }


def broadcast_presence(channel: str) -> None:
    """Tell everyone in ``channel`` who is there."""
    WebSocketSession.objects.in_channel(channel).send_message(presence_event(channel))


# --8<-- [start:view]
class ChatView(WebSocketView):
    """Handlers are methods marked with @handler, called as (self, request, message)."""

    @handler
    def chat_message(self, request: Any, message: dict[str, Any]) -> None:
        """A line for the sender's room: store it, then send it to everyone in the room."""
        text = str(message.get("text", "")).strip()[:500]
        if not text:
            return
        channel = self.websocket_session.channel_name  # "room-<slug>", chosen at $connect
        room = Room.objects.get(slug=channel.removeprefix("room-"))
        line = Message.objects.create(room=room, user=self.user, text=text)
        WebSocketSession.objects.filter(channel_name=channel).send_message(line.as_event())

    @handler
    def join(self, request: Any, message: dict[str, Any]) -> None:
        """Sent by the page once the socket is open: recent lines to the sender, then the
        room's presence to everyone. (Not from a connect signal: during ``$connect`` API
        Gateway cannot deliver to the new connection yet.)"""
        channel = self.websocket_session.channel_name
        recent = Message.objects.filter(room__slug=channel.removeprefix("room-"))
        lines = recent.select_related("room", "user").order_by("-created_at", "-id")[:HISTORY]
        self.websocket_session.send_message(
            {"type": "history", "room": channel, "messages": [m.as_event() for m in lines][::-1]}
        )
        broadcast_presence(channel)

    @handler
    def ping(self, request: Any, message: dict[str, Any]) -> None:
        """The browser client's keep-alive (API Gateway closes idle connections)."""


# --8<-- [end:view]
