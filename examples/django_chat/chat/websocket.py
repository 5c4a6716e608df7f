"""The chat's WebSocket handlers: what the page sends, and what it gets back.

The page (``examples/chat_ui``) sends ``{"action": "join"}`` after every (re)connect,
``{"action": "chat_message", "text": ..., "id": ...}``, ``{"action": "$presence", ...}`` (answered
by apigw-ws itself) and keep-alive ``{"action": "ping"}``. Presence changes arrive as apigw-ws's
``member_added`` / ``member_removed`` events (``PRESENCE_CHANNELS`` in settings); rooms are
history channels, so a page that reconnects recovers the lines it missed.
"""

from __future__ import annotations

import re
from typing import Any

from apigw_ws_django import WebSocketView, handler
from chat.models import Message, Room

HISTORY = 20
#: What a page-made line id may look like (a UUID, or the page's fallback).
LINE_ID = re.compile(r"\A[A-Za-z0-9-]{8,64}\Z")


# --8<-- [start:view]
class ChatView(WebSocketView):
    """Handlers are methods marked with @handler, called as (self, request, message)."""

    @handler
    def chat_message(self, request: Any, message: dict[str, Any]) -> None:
        """A line for the sender's room: store it, then send it to everyone in the room but
        the sender (whose page shows it already)."""
        text = str(message.get("text", "")).strip()[:500]
        if not text:
            return
        channel = self.websocket_session.channel_name  # "room-<slug>", chosen at $connect
        room = Room.objects.get(slug=channel.removeprefix("room-"))
        line = Message.objects.create(room=room, user=self.user, text=text)
        given = message.get("id")
        event = line.as_event()
        if isinstance(given, str) and LINE_ID.match(given):
            event["id"] = given  # the page's id: its own copy and this one are the same line
        event["device"] = self.websocket_session.attributes.get("device")
        self.websocket_session.broadcast(event)

    @handler
    def join(self, request: Any, message: dict[str, Any]) -> None:
        """Sent by the page once the socket is open: the room's recent lines. (Not from a
        connect signal: during ``$connect`` API Gateway cannot deliver to the new
        connection yet.)"""
        channel = self.websocket_session.channel_name
        recent = Message.objects.filter(room__slug=channel.removeprefix("room-"))
        lines = recent.select_related("room", "user").order_by("-created_at", "-id")[:HISTORY]
        self.websocket_session.send_message(
            {"type": "history", "room": channel, "messages": [m.as_event() for m in lines][::-1]}
        )

    @handler
    def ping(self, request: Any, message: dict[str, Any]) -> None:
        """The browser client's keep-alive (API Gateway closes idle connections)."""


# --8<-- [end:view]
