"""URLs of the chat example."""

from chat import views
from chat.websocket import ChatView
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

# --8<-- [start:urls]
urlpatterns = [
    path("", views.chat_page, name="chat"),
    # API Gateway's integrations call /ws/connect, /ws/disconnect, /ws/default, /ws/<route>.
    path("ws/", include(ChatView.urls())),
    # The browser POSTs here (logged in, with the CSRF token) for a single-use token.
    path("ws-token/", include("apigw_ws_django.urls")),
    # --8<-- [end:urls]
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
