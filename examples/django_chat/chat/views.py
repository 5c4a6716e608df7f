"""The chat page: the shared chat UI with its settings."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import reverse

from chat.models import Room


@login_required
def chat_page(request: HttpRequest) -> HttpResponse:
    """Rooms, who is here, messages: rendered by ``chat_ui/chat.js`` from this config."""
    rooms = list(Room.objects.all())
    wanted = request.GET.get("room", "")
    initial = next((r for r in rooms if r.slug == wanted), rooms[0] if rooms else None)
    csrf = get_token(request)
    config = {
        "user": {"id": str(request.user.pk), "name": request.user.get_username()},
        "wsUrl": settings.CHAT_WS_URL,
        "tokenUrl": reverse("apigw_ws_token"),
        "clientUrl": static("apigw_ws/apigw-ws.js"),
        "csrfToken": csrf,
        "rooms": [
            {
                "name": r.channel,
                "title": r.title,
                "description": r.description,
                "private": r.staff_only,
            }
            for r in rooms
        ],
        "initialRoom": initial.channel if initial else "",
        # names for the presence list (apigw-ws's presence events carry user ids)
        "people": {
            str(pk): name for pk, name in get_user_model().objects.values_list("pk", "username")
        },
        "logout": {"url": reverse("logout"), "method": "post", "csrfToken": csrf},
    }
    return render(request, "chat/chat.html", {"chat_config": config})
