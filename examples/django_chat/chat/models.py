"""Rooms and the messages said in them."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Room(models.Model):
    """A chat room; its WebSocket channel is ``room-<slug>``."""

    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=100)
    description = models.CharField(max_length=200, blank=True)
    staff_only = models.BooleanField(default=False)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.title

    @property
    def channel(self) -> str:
        """The WebSocket channel of the room."""
        return f"room-{self.slug}"


class Message(models.Model):
    """One line said in a room."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    text = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.text

    def as_event(self) -> dict[str, object]:
        """The ``chat_message`` event the page renders."""
        return {
            "type": "chat_message",
            "id": f"line-{self.pk}",
            "room": self.room.channel,
            "user": str(self.user_id),
            "name": self.user.get_username(),
            "text": self.text,
            "ts": self.created_at.isoformat(),
        }
