"""Who may join which room: ``APIGW_WS["CHANNEL_POLICY"] = "chat.policy.channel_policy"``."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from apigw_ws_core.channels import AUTHORIZED, ChannelPolicy, ChannelRule
from chat.models import Room


def can_join(user_id: str | None, channel: str) -> bool:
    """Logged-in users may join existing rooms; staff-only rooms need ``is_staff``."""
    room = Room.objects.filter(slug=channel.removeprefix("room-")).first()
    if room is None or user_id is None:
        return False
    if not room.staff_only:
        return True
    return get_user_model().objects.filter(pk=user_id, is_active=True, is_staff=True).exists()


def channel_policy() -> ChannelPolicy:
    """Only ``room-*`` channels exist here (anything else is denied)."""
    return ChannelPolicy([ChannelRule("room-*", AUTHORIZED)], authorize=can_join)
