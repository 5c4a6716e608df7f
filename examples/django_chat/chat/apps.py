"""The chat app."""

from django.apps import AppConfig


class ChatConfig(AppConfig):
    """Rooms, messages and the WebSocket handlers (presence comes from apigw-ws events)."""

    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"
