"""apigw-ws for Django: the ``apigw_ws_django`` app (label ``apigw_ws``).

Install with ``INSTALLED_APPS += ["apigw_ws_django", "apigw_ws_storage.django_orm"]`` and
configure with one ``APIGW_WS = {...}`` setting (see :mod:`apigw_ws_django.conf`). The
public names, importable from here::

    from apigw_ws_django import WebSocketView, handler, websocket_urlpatterns

Everything is loaded lazily so that listing the app in ``INSTALLED_APPS`` imports nothing
that needs the app registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apigw_ws_core.handlers import handler
    from apigw_ws_django.runtime import get_app
    from apigw_ws_django.views import (
        WebSocketTokenView,
        WebSocketView,
        websocket_urlpatterns,
    )

__all__ = [
    "WebSocketTokenView",
    "WebSocketView",
    "get_app",
    "handler",
    "websocket_urlpatterns",
]

_LAZY = {
    "handler": "apigw_ws_core.handlers",
    "get_app": "apigw_ws_django.runtime",
    "WebSocketTokenView": "apigw_ws_django.views",
    "WebSocketView": "apigw_ws_django.views",
    "websocket_urlpatterns": "apigw_ws_django.views",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'apigw_ws_django' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
