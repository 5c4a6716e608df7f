"""App configuration of the Django ORM storage."""

from __future__ import annotations

from django.apps import AppConfig


class ApigwWsStorageConfig(AppConfig):
    """``apigw_ws_storage.django_orm``: sessions, subscriptions, tokens, counters, gateways."""

    name = "apigw_ws_storage.django_orm"
    label = "apigw_ws_storage"
    verbose_name = "WebSockets (API Gateway)"
    default_auto_field = "django.db.models.BigAutoField"
