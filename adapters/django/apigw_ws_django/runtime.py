"""The process-wide apps: one :class:`~apigw_ws_core.app.WebSocketApp` per view class.

Everything is built once per process from ``settings.APIGW_WS`` (no gateway lookup or
settings parsing per request): the storage, the rate limiter, the channel policy, the user
loader and the transport are shared by every app. Apps are rebuilt only when a test
changes ``APIGW_WS`` (or ``DATABASES``/``CACHES``) with ``override_settings``.

``get_app()`` (no view) is the app used for sending from anywhere (querysets, commands,
the token view, the admin); ``get_app(ChatView)`` is the app whose handlers are
``ChatView``'s ``@handler`` methods. All apps send through one transport, so swapping it
(:func:`set_transport`, or :class:`apigw_ws_django.testing.WebSocketTestClient`) affects
them all.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from apigw_ws_core.app import WebSocketApp
from apigw_ws_core.channels import ChannelPolicy, default_policy
from apigw_ws_core.errors import ConfigurationError
from apigw_ws_core.gateways import GatewayStore
from apigw_ws_core.handlers import WebSocketView as CoreWebSocketView
from apigw_ws_core.jobs import build_runner
from apigw_ws_core.storage import Storage
from apigw_ws_core.transport import Transport
from apigw_ws_django import signals
from apigw_ws_django.conf import AdapterSettings, load_settings, resolve

__all__ = [
    "Runtime",
    "SharedTransport",
    "get_app",
    "get_runtime",
    "load_django_user",
    "reset_runtime",
    "set_transport",
]

#: Settings whose change (``override_settings`` in tests) rebuilds the apps.
WATCHED_SETTINGS = frozenset({"APIGW_WS", "DATABASES", "CACHES", "AUTH_USER_MODEL"})


def load_django_user(user_id: str, using: str | None = None) -> Any:
    """The default user loader: the user model by primary key (``None`` if gone), read
    from database ``using`` (the storage's, where the sessions' foreign keys point)."""
    manager = get_user_model()._default_manager
    if using is not None:
        manager = manager.db_manager(using)
    try:
        return manager.filter(pk=user_id).first()
    except (ValueError, TypeError, ValidationError):
        return None


class SharedTransport(Transport):
    """A transport that forwards to whatever ``resolve()`` returns at call time, so that the
    apps of several views share one connection pool (and one test transport)."""

    def __init__(self, resolve: Callable[[], Transport]):
        self._resolve = resolve

    def post(self, connection_id: str, data: bytes) -> None:
        """Forward to the shared transport."""
        self._resolve().post(connection_id, data)

    def delete(self, connection_id: str) -> None:
        """Forward to the shared transport."""
        self._resolve().delete(connection_id)

    def get(self, connection_id: str) -> dict[str, Any]:
        """Forward to the shared transport."""
        return self._resolve().get(connection_id)

    def unwrap(self) -> Transport:
        """The shared transport itself, so that fan-out can use its async engine."""
        return self._resolve().unwrap()


class Runtime:
    """The objects built from one version of the settings, and the apps that use them."""

    def __init__(self, settings: AdapterSettings):
        self.settings = settings
        self.config = settings.config
        storage = settings.build("storage")
        if not isinstance(storage, Storage):
            raise ConfigurationError("APIGW_WS STORAGE must build an apigw_ws_core Storage")
        self.storage: Storage = storage
        self.rate_limiter = settings.build("rate_limiter")
        self.policy = self._policy()
        using = getattr(storage, "using", None)
        self.user_loader: Callable[[str], Any] = settings.callable_setting(
            "user_loader"
        ) or functools.partial(load_django_user, using=using)
        self._lock = threading.Lock()
        self._apps: dict[type[CoreWebSocketView], WebSocketApp] = {}
        self.default_app = self._make_app(None, settings.build("transport"))

    def _policy(self) -> ChannelPolicy:
        value = resolve(self.settings.channel_policy)
        if value is None:
            return default_policy(self.settings.callable_setting("authorize_channel"))
        policy = value() if callable(value) and not isinstance(value, ChannelPolicy) else value
        if not isinstance(policy, ChannelPolicy):
            raise ConfigurationError("APIGW_WS CHANNEL_POLICY must be or give a ChannelPolicy")
        return policy

    def _make_app(
        self, view: type[CoreWebSocketView] | None, transport: Transport | None
    ) -> WebSocketApp:
        app = WebSocketApp(
            storage=self.storage,
            transport=transport,
            config=self.config,
            policy=self.policy,
            user_loader=self.user_loader,
            rate_limiter=self.rate_limiter,
        )
        signals.connect_app(app, view)
        app.background_runner = build_runner(self.settings.background_runner, app)
        return app

    def app_for(self, view: type[CoreWebSocketView] | None = None) -> WebSocketApp:
        """The app for ``view`` (built and cached on first use), or the default app."""
        if view is None:
            return self.default_app
        app = self._apps.get(view)
        if app is not None:
            return app
        with self._lock:
            app = self._apps.get(view)
            if app is None:
                app = self._make_app(view, SharedTransport(lambda: self.default_app.transport))
                app.register_view(view)
                self._apps[view] = app
        return app

    @property
    def gateway_store(self) -> GatewayStore:
        """The storage, as the store of provisioning records (the admin and
        ``apigw_ws_provision`` keep the gateway record in the database)."""
        if not isinstance(self.storage, GatewayStore):
            raise ConfigurationError(
                f"{type(self.storage).__name__} keeps no gateway records (get_gateway/"
                "save_gateway): provision with `apigw-ws provision` and its state file"
            )
        return self.storage

    @property
    def transport(self) -> Transport:
        """The transport every app sends through."""
        return self.default_app.transport

    def set_transport(self, transport: Transport | None) -> Transport | None:
        """Replace the shared transport; returns the previous one (``None`` if it was not
        built yet). ``None`` makes the next send build it again from the settings."""
        previous = self.default_app.swap_transport(transport)
        return previous

    def close(self) -> None:
        """Close the apps (thread pools, transport)."""
        for app in [self.default_app, *self._apps.values()]:
            app.close()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The runtime for the current settings (built once per process)."""
    global _runtime
    runtime = _runtime
    if runtime is None:
        with _runtime_lock:
            runtime = _runtime
            if runtime is None:
                runtime = _runtime = Runtime(load_settings())
    return runtime


def get_app(view: type[CoreWebSocketView] | None = None) -> WebSocketApp:
    """The :class:`WebSocketApp` for ``view`` (or the default app for sending)."""
    return get_runtime().app_for(view)


def set_transport(transport: Transport | None) -> Transport | None:
    """Make every app send through ``transport``; returns the previous transport."""
    return get_runtime().set_transport(transport)


def reset_runtime() -> None:
    """Forget the built apps; the next :func:`get_app` rebuilds them from settings."""
    global _runtime
    with _runtime_lock:
        old, _runtime = _runtime, None
    if old is not None:
        old.close()


def on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver: rebuild after ``override_settings(APIGW_WS=...)``."""
    if setting in WATCHED_SETTINGS:
        reset_runtime()
