"""App configuration of the Django adapter."""

from __future__ import annotations

from django.apps import AppConfig


class ApigwWsConfig(AppConfig):
    """``apigw_ws_django``: views, token endpoint, settings, checks, admin, commands."""

    name = "apigw_ws_django"
    label = "apigw_ws"
    verbose_name = "apigw-ws"

    def ready(self) -> None:
        """Register the system checks, drop cached apps when settings change, and make
        the adapter's app the one ``WebSocketSession.objects...send_message()`` uses."""
        from django.core.signals import setting_changed

        from apigw_ws_django import checks  # noqa: F401  (registers the checks)
        from apigw_ws_django.runtime import get_app, on_setting_changed
        from apigw_ws_storage.django_orm.models import set_default_app

        set_default_app(get_app)
        setting_changed.connect(on_setting_changed, dispatch_uid="apigw_ws_setting_changed")
