"""Reading a gateway spec from a TOML file (``apigw-ws.toml``) or a plain dict.

The file's top-level keys are :class:`~apigw_ws_core.provision.spec.GatewaySpec` fields, with
``[stage_variables]``, ``[throttling]``, ``[tags]``, ``[domain]``, ``[authorizer]`` tables and
``[[routes]]`` entries. The secret is never written in the file: ``secret_env`` names the
environment variable holding it (default ``APIGW_WS_SECRET``). ``state_file`` (relative to
the config file) is where the command line keeps the gateway record when no database is used.
Unknown keys are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from apigw_ws_core.provision.errors import SpecError
from apigw_ws_core.provision.spec import (
    AuthorizerSpec,
    DomainSpec,
    GatewaySpec,
    RouteSpec,
    Throttling,
)

__all__ = ["DEFAULT_SECRET_ENV", "ProvisionConfig", "load_config", "spec_from_dict"]

#: Where the secret is read from when the config does not say.
DEFAULT_SECRET_ENV = "APIGW_WS_SECRET"

_SPEC_KEYS = {
    "name": str,
    "target_base_url": str,
    "region": str,
    "api_name": str,
    "description": str,
    "route_selection_expression": str,
    "default_two_way": bool,
    "stage": str,
    "timeout_ms": int,
}
_ROUTE_KEYS = {"key": str, "target_url": str, "two_way": bool, "slug": str}
_THROTTLE_KEYS = {"burst_limit": int, "rate_limit": (int, float)}
_DOMAIN_KEYS = {
    "name": str,
    "certificate_arn": str,
    "hosted_zone_id": str,
    "manage_dns": bool,
    "base_path": str,
    "certificate_timeout": int,
}
_AUTHORIZER_KEYS = {"function_arn": str, "name": str, "credentials_arn": str}
_AUTHORIZER_LISTS = ("identity_sources", "context_keys")
_OTHER_KEYS = {
    "authorizer",
    "secret_env",
    "secret",
    "state_file",
    "stage_variables",
    "throttling",
    "tags",
    "domain",
    "routes",
}


@attrs.frozen(kw_only=True)
class ProvisionConfig:
    """A loaded config file: the spec and where its state file is."""

    spec: GatewaySpec
    state_file: Path | None = None
    source: Path | None = None


def _take(table: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, kind in allowed.items():
        if key not in table:
            continue
        value = table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise SpecError(
                f"{where}{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}"
            )
        out[key] = value
    return out


def _unknown(table: Mapping[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise SpecError(f"unknown key(s) in {where or 'the config'}: {', '.join(extra)}")


def _str_table(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SpecError(f"[{where}] must map names to strings")
    return dict(value)


#: Stands in for the secret when only the spec's shape matters (IAM policies).
_PLACEHOLDER_SECRET = "placeholder-secret-not-for-use"


def spec_from_dict(
    data: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    need_secret: bool = True,
    app_secret: str | None = None,
) -> GatewaySpec:
    """Build a :class:`GatewaySpec` from config data (the parsed TOML file).

    ``secret`` may be given directly (in code; never commit it to a file) or read from the
    environment variable named by ``secret_env``. ``app_secret`` is the secret the app
    checks (framework commands pass it): it is used when the config gives none, and a
    config secret that differs from it is an error, since the app would reject every call.
    With ``need_secret=False`` a missing secret is replaced by a placeholder: for commands
    that only look at the spec's shape.
    """
    env = os.environ if environ is None else environ
    _unknown(data, set(_SPEC_KEYS) | _OTHER_KEYS, "")
    values = _take(data, _SPEC_KEYS, "")
    for required in ("name", "target_base_url"):
        if required not in values:
            raise SpecError(f"the config needs {required!r}")
    secret = data.get("secret")
    if secret is None:
        var = data.get("secret_env", DEFAULT_SECRET_ENV)
        secret = env.get(str(var)) or app_secret
        if not secret and not need_secret:
            secret = _PLACEHOLDER_SECRET
        if not secret:
            raise SpecError(
                f"the shared secret is read from the environment variable {var}, which is not "
                "set (generate one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
    if app_secret and str(secret) != app_secret:
        raise SpecError(
            "the provisioning secret differs from the secret the app is configured with; "
            "the app would reject every call from API Gateway"
        )
    values["secret"] = str(secret)
    values["stage_variables"] = _str_table(data.get("stage_variables"), "stage_variables")
    values["tags"] = _str_table(data.get("tags"), "tags")
    routes = data.get("routes", [])
    if not isinstance(routes, list):
        raise SpecError("routes must be an array of tables ([[routes]])")
    built_routes = []
    for index, route in enumerate(routes):
        where = f"routes[{index}]."
        if not isinstance(route, Mapping):
            raise SpecError(f"{where[:-1]} must be a table")
        _unknown(route, set(_ROUTE_KEYS), f"routes[{index}]")
        if "key" not in route:
            raise SpecError(f"{where}key is required")
        built_routes.append(RouteSpec(**_take(route, _ROUTE_KEYS, where)))
    values["routes"] = built_routes
    throttling = data.get("throttling")
    if throttling is not None:
        _unknown(throttling, set(_THROTTLE_KEYS), "[throttling]")
        values["throttling"] = Throttling(**_take(throttling, _THROTTLE_KEYS, "throttling."))
    domain = data.get("domain")
    if domain is not None:
        _unknown(domain, set(_DOMAIN_KEYS), "[domain]")
        if "name" not in domain:
            raise SpecError("[domain] needs a name")
        values["domain"] = DomainSpec(**_take(domain, _DOMAIN_KEYS, "domain."))
    authorizer = data.get("authorizer")
    if authorizer is not None:
        if not isinstance(authorizer, Mapping):
            raise SpecError("[authorizer] must be a table")
        _unknown(authorizer, set(_AUTHORIZER_KEYS) | set(_AUTHORIZER_LISTS), "[authorizer]")
        if "function_arn" not in authorizer:
            raise SpecError("[authorizer] needs a function_arn")
        auth_values: dict[str, Any] = _take(authorizer, _AUTHORIZER_KEYS, "authorizer.")
        for key in _AUTHORIZER_LISTS:
            if key in authorizer:
                items = authorizer[key]
                if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                    raise SpecError(f"authorizer.{key}: expected a list of strings")
                auth_values[key] = tuple(items)
        values["authorizer"] = AuthorizerSpec(**auth_values)
    return GatewaySpec(**values)


def load_config(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    need_secret: bool = True,
    app_secret: str | None = None,
) -> ProvisionConfig:
    """Read and validate a TOML config file (see :func:`spec_from_dict` for the secret)."""
    source = Path(path)
    try:
        with source.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise SpecError(f"config file {source} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"config file {source} is not valid TOML: {exc}") from exc
    spec = spec_from_dict(data, environ=environ, need_secret=need_secret, app_secret=app_secret)
    state = data.get("state_file")
    if state is not None and not isinstance(state, str):
        raise SpecError("state_file must be a path string")
    state_path = (source.parent / state) if state else None
    return ProvisionConfig(spec=spec, state_file=state_path, source=source)
