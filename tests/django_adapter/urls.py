"""URLconf of the Django adapter tests: views mounted like a user's project would."""

from django.contrib import admin
from django.urls import include, path

from apigw_ws_django.views import websocket_urlpatterns
from tests.django_adapter.views import ChatView, OtherView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("ws/", include(ChatView.urls())),
    *websocket_urlpatterns(OtherView, prefix="other/", namespace="other"),
    path("ws-token/", include("apigw_ws_django.urls")),
]
