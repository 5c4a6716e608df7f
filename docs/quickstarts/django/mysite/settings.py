"""Settings of the quickstart project: a minimal Django project with apigw-ws."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-not-for-production")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "apigw_ws_django",  # views, token endpoint, commands, the browser client
    "apigw_ws_storage.django_orm",  # sessions, subscriptions, tokens: `migrate` creates them
    "mysite",  # for `manage.py test` to find mysite/tests.py
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "mysite.urls"
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True  # required by apigw-ws
STATIC_URL = "static/"
TEMPLATES = [
    {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
]

APIGW_WS = {
    # The value API Gateway sends in the X-Apigw-Ws-Secret header of every call: provisioning
    # generates one; locally, `manage.py apigw_ws_local` hands this one to the gateway.
    "SECRET": os.environ.get("APIGW_WS_SECRET", "dev-secret-change-me-0123456789abcdef"),
    # In production, also list the pages that may open the WebSocket:
    # "ALLOWED_ORIGINS": ["https://www.example.com"],
}
