"""System checks for ``APIGW_WS`` (``manage.py check``). Ids are stable; see the table in
``docs/quickstart-django.rst``.

=================  ==========================================================================
id                 meaning
=================  ==========================================================================
apigw_ws.E001      ``APIGW_WS`` is invalid (unknown key, wrong type, bad rate limit)
apigw_ws.E002      no ``SECRET``: every call from API Gateway would be rejected (403)
apigw_ws.E003      the default storage is used but ``apigw_ws_storage.django_orm`` is not
                   in ``INSTALLED_APPS``
apigw_ws.E004      ``MANAGEMENT_ENDPOINT`` is not an http(s) URL
apigw_ws.E005      ``USE_TZ`` is ``False`` (stored times must be timezone-aware UTC)
apigw_ws.E006      ``ALLOW_INSECURE_NO_SECRET`` with ``DEBUG = False``
apigw_ws.E007      a dotted path (``STORAGE``, ``TRANSPORT``, ``RATE_LIMITER``,
                   ``CHANNEL_POLICY``, ``AUTHORIZE_CHANNEL``, ``USER_LOADER``) cannot be
                   imported
apigw_ws.W001      ``SECRET`` is shorter than 32 characters
apigw_ws.W002      ``ALLOWED_ORIGINS`` is empty with ``DEBUG = False``: any web page may open
                   connections (tokens still bind users)
apigw_ws.W003      ``REQUIRE_TOKEN`` is ``False`` with ``DEBUG = False``: anonymous
                   connections are accepted
apigw_ws.W004      with ``DEBUG = False``, the storage's database (the default storage's
                   ``using`` alias) has unbounded waits: a hung database would hold
                   requests until API Gateway gives up (29 s); see docs/security.rst,
                   "When a dependency fails"
=================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from apigw_ws_core.errors import ConfigurationError
from apigw_ws_django.conf import DJANGO_DEFAULTS, AdapterSettings, resolve

__all__ = ["check_settings"]

MIN_SECRET_LENGTH = 32
_DOTTED = (
    "STORAGE",
    "TRANSPORT",
    "RATE_LIMITER",
    "CHANNEL_POLICY",
    "AUTHORIZE_CHANNEL",
    "USER_LOADER",
)


@register("apigw_ws")
def check_settings(
    *,
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Check ``settings.APIGW_WS`` and the settings it depends on."""
    errors: list[CheckMessage] = []
    raw = getattr(settings, "APIGW_WS", None)
    try:
        adapter = AdapterSettings.from_mapping(raw)
    except ConfigurationError as exc:
        return [
            Error(
                f"APIGW_WS is invalid: {exc}",
                hint="Fix the key or value; keys are the fields of apigw_ws_core.config.Config "
                f"plus {', '.join(sorted(DJANGO_DEFAULTS))}.",
                id="apigw_ws.E001",
            )
        ]
    cfg = adapter.config
    debug = bool(settings.DEBUG)

    if not cfg.secret and not cfg.allow_insecure_no_secret:
        errors.append(
            Error(
                "APIGW_WS['SECRET'] is not set: every call from API Gateway will be "
                "rejected with 403.",
                hint="Set SECRET to the value of the X-Apigw-Ws-Secret header your API "
                "Gateway integrations send (provisioning generates one; locally, "
                "'manage.py apigw_ws_local' sends it).",
                id="apigw_ws.E002",
            )
        )
    elif cfg.secret and len(cfg.secret) < MIN_SECRET_LENGTH:
        errors.append(
            Warning(
                f"APIGW_WS['SECRET'] is shorter than {MIN_SECRET_LENGTH} characters.",
                hint="Use a long random value, e.g. python -c "
                "'import secrets; print(secrets.token_urlsafe(32))'.",
                id="apigw_ws.W001",
            )
        )

    if adapter.storage == DJANGO_DEFAULTS["STORAGE"] and not apps.is_installed(
        "apigw_ws_storage.django_orm"
    ):
        errors.append(
            Error(
                "The default storage needs the app 'apigw_ws_storage.django_orm'.",
                hint="Add 'apigw_ws_storage.django_orm' to INSTALLED_APPS and run migrate, or "
                "set APIGW_WS['STORAGE'] to another storage.",
                id="apigw_ws.E003",
            )
        )

    endpoint = cfg.management_endpoint
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors.append(
                Error(
                    f"APIGW_WS['MANAGEMENT_ENDPOINT'] is not an http(s) URL: {endpoint!r}.",
                    hint="Use https://{api_id}.execute-api.{region}.amazonaws.com/{stage} "
                    "(or the local gateway's http://127.0.0.1:PORT/STAGE).",
                    id="apigw_ws.E004",
                )
            )

    if not settings.USE_TZ:
        errors.append(
            Error(
                "apigw-ws needs USE_TZ = True.",
                hint="Set USE_TZ = True (the default for new projects).",
                id="apigw_ws.E005",
            )
        )

    if cfg.allow_insecure_no_secret and not debug:
        errors.append(
            Error(
                "APIGW_WS['ALLOW_INSECURE_NO_SECRET'] is on while DEBUG is False: anyone can "
                "call the WebSocket endpoints pretending to be API Gateway.",
                hint="Remove ALLOW_INSECURE_NO_SECRET and set SECRET.",
                id="apigw_ws.E006",
            )
        )

    upper = {str(k).upper(): v for k, v in (raw or {}).items()}
    for key in _DOTTED:
        value = upper.get(key)
        if isinstance(value, str):
            try:
                resolve(value)
            except ConfigurationError as exc:
                errors.append(
                    Error(
                        f"APIGW_WS[{key!r}] cannot be imported: {exc}",
                        hint="Give a dotted path to an importable object.",
                        id="apigw_ws.E007",
                    )
                )

    if not debug and not cfg.allowed_origins:
        errors.append(
            Warning(
                "APIGW_WS['ALLOWED_ORIGINS'] is empty: any web page may open connections.",
                hint="List your site's origins, e.g. ['https://www.example.com'].",
                id="apigw_ws.W002",
            )
        )
    if not debug and not cfg.require_token:
        errors.append(
            Warning(
                "APIGW_WS['REQUIRE_TOKEN'] is False: anonymous connections are accepted.",
                hint="Leave REQUIRE_TOKEN on unless anonymous clients are intended.",
                id="apigw_ws.W003",
            )
        )
    if not debug and adapter.storage == DJANGO_DEFAULTS["STORAGE"]:
        errors.extend(_check_database_timeouts(adapter.storage_options.get("using", "default")))
    return errors


#: Django's PostgreSQL backends: its own, and ours with a read deadline.
_BOUNDED_POSTGRES = "apigw_ws_storage.django_orm.postgresql"


def _check_database_timeouts(
    alias: str, databases: dict[str, Any] | None = None
) -> list[CheckMessage]:
    """``apigw_ws.W004`` for each unbounded wait of the storage's database (``databases``:
    ``settings.DATABASES`` unless given)."""
    entry = (settings.DATABASES if databases is None else databases).get(alias)
    if not entry:
        return []
    engine = str(entry.get("ENGINE", ""))
    options = entry.get("OPTIONS") or {}
    problems = []
    if (entry.get("CONN_MAX_AGE") or 0) != 0 and not entry.get("CONN_HEALTH_CHECKS"):
        problems.append(
            "persistent connections (CONN_MAX_AGE) without CONN_HEALTH_CHECKS: a restarted "
            "database fails one request per worker"
        )
    if engine.endswith("mysql") and not {"connect_timeout", "read_timeout"} <= set(options):
        problems.append("no connect_timeout/read_timeout in OPTIONS")
    if engine == _BOUNDED_POSTGRES and "connect_timeout" not in options:
        problems.append("no connect_timeout in OPTIONS")
    if engine.endswith("postgresql") and engine != _BOUNDED_POSTGRES:
        problems.append(
            "Django's PostgreSQL backend has no read timeout (libpq has none); use "
            f"ENGINE '{_BOUNDED_POSTGRES}' with OPTIONS connect_timeout and read_timeout"
        )
    return [
        Warning(
            f"DATABASES[{alias!r}] (apigw-ws storage): {problem}.",
            hint="A hung or restarted database must cost a request seconds; see "
            "docs/security.rst, 'When a dependency fails'.",
            id="apigw_ws.W004",
        )
        for problem in problems
    ]
