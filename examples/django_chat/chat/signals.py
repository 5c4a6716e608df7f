"""Presence on leave: when a connection goes away, tell the rest of its room."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from apigw_ws_django.signals import websocket_disconnected
from apigw_ws_storage.django_orm.models import WebSocketSession
from chat.websocket import ChatView, broadcast_presence


@receiver(websocket_disconnected, sender=ChatView)
def left(sender: Any, connection_id: str, **kwargs: Any) -> None:
    """Send the room's new presence list."""
    channel = (
        WebSocketSession.objects.filter(connection_id=connection_id)
        .values_list("channel_name", flat=True)
        .first()
    )
    if channel:
        broadcast_presence(channel)
