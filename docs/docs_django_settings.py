"""Minimal Django settings so that autodoc can import the Django adapter's modules."""

SECRET_KEY = "docs-only"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "apigw_ws_django",
    "apigw_ws_storage.django_orm",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
APIGW_WS = {"SECRET": "docs-only"}
