"""Rooms and messages in the admin (sessions and tokens come from apigw_ws_django)."""

from django.contrib import admin

from chat.models import Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    """Rooms: add one here and it appears on the page."""

    list_display = ("slug", "title", "staff_only")
    prepopulated_fields = {"slug": ("title",)}


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """What was said."""

    list_display = ("created_at", "room", "user", "text")
    list_filter = ("room",)
    list_select_related = ("room", "user")
