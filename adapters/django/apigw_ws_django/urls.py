"""URLs of the token endpoint: ``path("ws-token/", include("apigw_ws_django.urls"))``.

Gives ``POST ws-token/`` named ``apigw_ws_token``. The WebSocket endpoints themselves come
from your view: ``path("ws/", include(ChatView.urls()))``.
"""

from __future__ import annotations

from django.urls import path

from apigw_ws_django.views import WebSocketTokenView

urlpatterns = [path("", WebSocketTokenView.as_view(), name="apigw_ws_token")]
