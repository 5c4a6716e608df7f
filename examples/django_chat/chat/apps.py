"""The chat app."""

from django.apps import AppConfig


class ChatConfig(AppConfig):
    """Rooms, messages, the WebSocket handlers and the presence signals."""

    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Connect the presence receivers."""
        from chat import signals  # noqa: F401
