"""Settings of the chat example: SQLite, the local gateway in development.

Environment variables (``scripts/demo`` sets them; every one has a development default):

* ``APIGW_WS_SECRET`` - the gateway secret (``X-Apigw-Ws-Secret``);
* ``APIGW_WS_MANAGEMENT_ENDPOINT`` - where to send messages (the local gateway by default;
  ``manage.py apigw_ws_local`` points its runserver at the gateway it starts anyway);
* ``CHAT_WS_URL`` - the WebSocket URL the page connects to;
* ``CHAT_DATABASE`` - the SQLite file;
* ``CHAT_ALLOWED_ORIGINS`` - comma-separated browser origins allowed to connect.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "dev-only-change-me"  # a real project reads this from the environment
DEBUG = os.environ.get("CHAT_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

# --8<-- [start:apps]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "apigw_ws_django",  # views, token endpoint, admin, commands (label "apigw_ws")
    "apigw_ws_storage.django_orm",  # sessions, tokens, counters (label "apigw_ws_storage")
    "chat",
]
# --8<-- [end:apps]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chat_project.urls"
WSGI_APPLICATION = "chat_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHAT_DATABASE") or BASE_DIR / "db.sqlite3",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True  # apigw-ws stores timezone-aware UTC times
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"

STATIC_URL = "/static/"
# The page's JavaScript and CSS, shared with the Flask example. The browser client itself
# is the static file "apigw_ws/apigw-ws.js" of the apigw_ws_django app.
STATICFILES_DIRS = [BASE_DIR.parent / "chat_ui" / "static"]

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# --8<-- [start:apigw_ws]
APIGW_WS = {
    # The value API Gateway sends in X-Apigw-Ws-Secret (provisioning generates one).
    "SECRET": os.environ.get("APIGW_WS_SECRET", "dev-secret-change-me-0123456789abcdef"),
    # Where messages to browsers go: the Management API of your API (here: the local gateway).
    "MANAGEMENT_ENDPOINT": os.environ.get(
        "APIGW_WS_MANAGEMENT_ENDPOINT", "http://127.0.0.1:8001/local"
    ),
    # The page's origin(s), e.g. ["https://chat.example.com"]; empty allows any origin.
    "ALLOWED_ORIGINS": [o for o in os.environ.get("CHAT_ALLOWED_ORIGINS", "").split(",") if o],
    # Who may join which room (chat/policy.py).
    "CHANNEL_POLICY": "chat.policy.channel_policy",
    # Rooms keep their last 200 messages for a day: a page that reconnects recovers them.
    "HISTORY": [{"pattern": "room-*", "size": 200, "ttl": 86400}],
    # Rooms tell their members who comes and goes (member_added / member_removed).
    "PRESENCE_CHANNELS": ["room-*"],
    # ?device=mobile|desktop from the page, validated and kept with the connection.
    "CONNECTION_ATTRIBUTES": [
        {"name": "device", "choices": ["mobile", "desktop"], "default": "desktop"}
    ],
}
# The WebSocket URL the page connects to: your API's wss:// URL in production.
CHAT_WS_URL = os.environ.get("CHAT_WS_URL", "ws://127.0.0.1:8001/local")
# --8<-- [end:apigw_ws]

if DEBUG:
    # The local gateway accepts any well-formed SigV4 signature: let commands such as
    # "manage.py apigw_ws_send" sign with dummy credentials when none are configured.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
