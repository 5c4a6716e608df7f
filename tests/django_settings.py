"""Django settings for the apigw-ws test suite (``DJANGO_SETTINGS_MODULE``) and for mypy's
django-stubs plugin.

``default`` is SQLite (a file, so that threads share it and wait on its lock). The
``postgres`` and ``mariadb`` aliases exist when ``APIGW_WS_TEST_POSTGRES_URL`` /
``APIGW_WS_TEST_MARIADB_URL`` are set; Django then creates ``test_apigw_ws_<pid>`` databases
on those servers (never touching the shared ``test`` database) and drops them afterwards.
MariaDB runs on PyMySQL (no mysqlclient headers needed).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql

pymysql.install_as_MySQLdb()

SECRET_KEY = "apigw-ws-tests-not-a-real-secret-key"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.django_adapter.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "apigw_ws_django",
    "apigw_ws_storage.django_orm",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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

_SQLITE = os.path.join(tempfile.gettempdir(), f"apigw_ws_django_{os.getpid()}.sqlite3")
DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _SQLITE,
        "OPTIONS": {"timeout": 30, "init_command": "PRAGMA synchronous=OFF"},
        "TEST": {"NAME": _SQLITE.replace(".sqlite3", "_test.sqlite3")},
    }
}


def _server_database(url: str, engine: str, **extra: Any) -> dict[str, Any]:
    parts = urlsplit(url)
    return {
        "ENGINE": engine,
        "NAME": "apigw_ws",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or ""),
        "TEST": {"NAME": f"test_apigw_ws_{os.getpid()}", **extra.pop("TEST", {})},
        **extra,
    }


if os.environ.get("APIGW_WS_TEST_POSTGRES_URL"):
    DATABASES["postgres"] = _server_database(
        os.environ["APIGW_WS_TEST_POSTGRES_URL"],
        "django.db.backends.postgresql",
        OPTIONS={"options": "-c synchronous_commit=off"},  # test speed only
    )
if os.environ.get("APIGW_WS_TEST_MARIADB_URL"):
    DATABASES["mariadb"] = _server_database(
        os.environ["APIGW_WS_TEST_MARIADB_URL"],
        "django.db.backends.mysql",
        OPTIONS={"charset": "utf8mb4"},
        TEST={"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
    )

DATABASE_ROUTERS = ["tests.django_orm.helpers.AliasRouter"]

CACHES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}
if os.environ.get("APIGW_WS_TEST_REDIS_URL"):
    CACHES["redis"] = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["APIGW_WS_TEST_REDIS_URL"],
        "KEY_PREFIX": f"apigw-ws-test-{os.getpid()}",
    }

#: Tests never reach AWS: everything is sent to a RecordingTransport.
APIGW_WS: dict[str, Any] = {
    "SECRET": "test-gateway-secret-0123456789abcdefghij",
    "ALLOWED_ORIGINS": ["https://chat.example.com"],
    "TRANSPORT": "apigw_ws_core.transport.RecordingTransport",
}

LOGIN_URL = "/login/"
STATIC_URL = "/static/"
