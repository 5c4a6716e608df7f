"""URLs: the WebSocket integration endpoints and the token endpoint."""

from django.urls import include, path

from mysite.websocket import ChatView

urlpatterns = [
    # API Gateway's integrations POST here: /ws/connect, /ws/disconnect, /ws/default, /ws/<route>
    path("ws/", include(ChatView.urls())),
    # A logged-in browser POSTs here for a single-use connection token.
    path("ws-token/", include("apigw_ws_django.urls")),
]
