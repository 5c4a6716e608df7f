"""The ``APIGW_WS`` setting: one dict, documented defaults.

Keys are case-insensitive. Two kinds of keys live in the dict:

* every field of :class:`apigw_ws_core.config.Config` (``SECRET``, ``ALLOWED_ORIGINS``,
  ``REQUIRE_TOKEN``, ``TOKEN_TTL``, rate limits such as ``MESSAGE_RATE_PER_CONNECTION``,
  ``MANAGEMENT_ENDPOINT`` ...), passed to :meth:`Config.from_mapping
  <apigw_ws_core.config.Config.from_mapping>` with the core's defaults;
* the Django-only keys in :data:`DJANGO_DEFAULTS`, which say how to build the objects the
  core app needs. Each ``X`` may be a dotted path or the object itself, and each
  ``X_OPTIONS`` dict is passed as keyword arguments to ``X`` when ``X`` is called.

Example::

    APIGW_WS = {
        "SECRET": env("APIGW_WS_SECRET"),
        "ALLOWED_ORIGINS": ["https://www.example.com"],
        "MANAGEMENT_ENDPOINT": "https://abc123.execute-api.eu-west-1.amazonaws.com/prod",
        "AUTHORIZE_CHANNEL": "chat.permissions.can_join",
    }
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, cast

import attrs
from django.conf import settings as django_settings
from django.utils.module_loading import import_string

from apigw_ws_core.config import Config
from apigw_ws_core.errors import ConfigurationError

__all__ = ["DJANGO_DEFAULTS", "LOCAL_ENDPOINT_ENV", "AdapterSettings", "load_settings", "resolve"]

#: Django-only keys of ``APIGW_WS`` and their defaults.
DJANGO_DEFAULTS: dict[str, Any] = {
    # Storage class or factory, called with STORAGE_OPTIONS (DjangoStorage takes ``using``).
    "STORAGE": "apigw_ws_storage.django_orm.storage.DjangoStorage",
    "STORAGE_OPTIONS": {},
    # Transport class or factory (called with TRANSPORT_OPTIONS). None: the core builds a
    # ManagementApiTransport from MANAGEMENT_ENDPOINT or the stored gateway record.
    "TRANSPORT": None,
    "TRANSPORT_OPTIONS": {},
    # Rate limiter class or factory (called with RATE_LIMITER_OPTIONS). None: counters in
    # the storage. "apigw_ws_django.limits.CacheRateLimiter" uses Django's cache.
    "RATE_LIMITER": None,
    "RATE_LIMITER_OPTIONS": {},
    # A ChannelPolicy, or a callable returning one. None: the core's default_policy()
    # (user.<id> owner-only, private-* asks AUTHORIZE_CHANNEL, presence-* logged in, rest
    # public).
    "CHANNEL_POLICY": None,
    # authorize(user_id: str, channel: str) -> bool for "private-*" channels.
    "AUTHORIZE_CHANNEL": None,
    # user_loader(user_id: str) -> user or None. None: the user model by primary key.
    "USER_LOADER": None,
    # Where send_in_background() runs sends: None = a thread pool in this process;
    # "celery" = durable jobs on Celery (apigw_ws_celery, the [celery] extra); or a
    # factory (dotted path) called with the WebSocketApp, returning the runner.
    "BACKGROUND_RUNNER": None,
}


def resolve(value: Any) -> Any:
    """A dotted path is imported; anything else is returned as it is."""
    if isinstance(value, str):
        try:
            return import_string(value)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import {value!r}: {exc}") from exc
    return value


def _options(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"APIGW_WS[{key!r}] must be a dict of keyword arguments")
    return dict(value)


@attrs.frozen(kw_only=True)
class AdapterSettings:
    """``APIGW_WS`` read and checked: the core :class:`Config` plus the Django-only keys."""

    config: Config
    storage: Any
    storage_options: dict[str, Any]
    transport: Any
    transport_options: dict[str, Any]
    rate_limiter: Any
    rate_limiter_options: dict[str, Any]
    channel_policy: Any
    authorize_channel: Any
    user_loader: Any
    background_runner: Any = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> AdapterSettings:
        """Split ``raw`` into core and Django keys; raise ``ConfigurationError`` for an
        unknown key or a bad value (the system check ``apigw_ws.E001`` reports it)."""
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigurationError("APIGW_WS must be a dict")
        upper = {str(k).upper(): v for k, v in raw.items()}
        django_keys = {k: upper.pop(k) for k in list(upper) if k in DJANGO_DEFAULTS}
        values = {**DJANGO_DEFAULTS, **django_keys}
        config = Config.from_mapping(upper)
        return cls(
            config=config,
            storage=values["STORAGE"],
            storage_options=_options(values, "STORAGE_OPTIONS"),
            transport=values["TRANSPORT"],
            transport_options=_options(values, "TRANSPORT_OPTIONS"),
            rate_limiter=values["RATE_LIMITER"],
            rate_limiter_options=_options(values, "RATE_LIMITER_OPTIONS"),
            channel_policy=values["CHANNEL_POLICY"],
            authorize_channel=values["AUTHORIZE_CHANNEL"],
            user_loader=values["USER_LOADER"],
            background_runner=values["BACKGROUND_RUNNER"],
        )

    def build(self, key: str) -> Any:
        """Call the factory named by ``key`` (``"storage"``, ``"transport"``,
        ``"rate_limiter"``) with its options; ``None`` if the key is unset."""
        factory = resolve(getattr(self, key))
        if factory is None:
            return None
        options = getattr(self, f"{key}_options")
        if not callable(factory):
            if options:
                raise ConfigurationError(f"APIGW_WS {key.upper()} is not callable")
            return factory
        return factory(**options)

    def callable_setting(self, key: str) -> Callable[..., Any] | None:
        """The callable named by ``key`` (``"authorize_channel"``, ``"user_loader"``)."""
        value = resolve(getattr(self, key))
        if value is None:
            return None
        if not callable(value):
            raise ConfigurationError(f"APIGW_WS {key.upper()} must be a callable")
        return cast(Callable[..., Any], value)


#: Set by ``manage.py apigw_ws_local`` for the ``runserver`` it starts: the local
#: gateway's Management API, used instead of ``MANAGEMENT_ENDPOINT``.
LOCAL_ENDPOINT_ENV = "APIGW_WS_LOCAL_MANAGEMENT_ENDPOINT"


def load_settings() -> AdapterSettings:
    """Read ``settings.APIGW_WS`` (``{}`` when absent)."""
    raw = getattr(django_settings, "APIGW_WS", None)
    local = os.environ.get(LOCAL_ENDPOINT_ENV)
    if local and isinstance(raw, Mapping):
        raw = {k: v for k, v in raw.items() if str(k).upper() != "MANAGEMENT_ENDPOINT"}
        raw["MANAGEMENT_ENDPOINT"] = local
    return AdapterSettings.from_mapping(raw)
