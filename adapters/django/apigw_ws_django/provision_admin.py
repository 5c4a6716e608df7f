"""Admin actions on gateway records: plan, apply and destroy from the Django admin.

Add them to the admin of :class:`apigw_ws_storage.django_orm.models.GatewayRecord`::

    from apigw_ws_django.provision_admin import PROVISION_ACTIONS

    class GatewayRecordAdmin(admin.ModelAdmin):
        actions = [*PROVISION_ACTIONS]

The gateway spec comes from the TOML file named by the ``APIGW_WS_PROVISION_CONFIG`` setting
(default: ``apigw-ws.toml`` in ``BASE_DIR``, else in the working directory), the same file
``manage.py apigw_ws_provision`` reads; its ``name`` must be the record's name. The app's
``SECRET`` is provisioned. *Plan* shows the diff; *apply* and *destroy* show it and ask for
confirmation first, like Django's own delete action, then show every step's outcome.
*Destroy* works without the config file too (from what the record lists).

Applying runs inside the request; a custom domain with a requested certificate may wait for
ACM for minutes, so prefer ``manage.py apigw_ws_provision apply`` for that first run.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from apigw_ws_core.errors import ApigwWsError
from apigw_ws_core.gateways import GatewayStore
from apigw_ws_core.provision import (
    AwsClients,
    GatewaySpec,
    SpecError,
    apply,
    destroy,
    load_config,
    plan,
    render_changes,
)
from apigw_ws_core.provision_cli import ProgressPrinter
from apigw_ws_django.runtime import get_runtime

__all__ = [
    "CONFIG_SETTING",
    "PROVISION_ACTIONS",
    "apply_gateways",
    "config_path",
    "destroy_gateways",
    "plan_gateways",
]

#: Django setting naming the provisioning config file.
CONFIG_SETTING = "APIGW_WS_PROVISION_CONFIG"
TEMPLATE = "admin/apigw_ws/provision.html"
#: Stands in for what a destroy without a config file does not need.
_PLACEHOLDER_TARGET = "https://placeholder.invalid/"
_PLACEHOLDER_SECRET = "placeholder-secret-not-for-use"


def config_path() -> Path:
    """The provisioning config file: the ``APIGW_WS_PROVISION_CONFIG`` setting, else
    ``apigw-ws.toml`` in ``BASE_DIR`` (or the working directory)."""
    configured = getattr(settings, CONFIG_SETTING, None)
    if configured:
        return Path(configured)
    return Path(getattr(settings, "BASE_DIR", ".")) / "apigw-ws.toml"


def _spec_for(name: str, secret: str | None) -> GatewaySpec:
    path = config_path()
    spec = load_config(path, app_secret=secret).spec
    if spec.name != name:
        raise SpecError(f"{path} describes gateway {spec.name!r}, not {name!r}")
    return spec


def _destroy_spec(name: str, storage: GatewayStore, secret: str | None) -> GatewaySpec:
    """The config's spec, or one rebuilt from the record (destroy needs only ids and names)."""
    try:
        return _spec_for(name, secret)
    except SpecError:
        record = storage.get_gateway(name)
        return GatewaySpec(
            name=name,
            target_base_url=_PLACEHOLDER_TARGET,
            secret=_PLACEHOLDER_SECRET,
            region=(record.region if record else None) or None,
            stage=(record.stage if record else "") or "prod",
        )


def _clients(spec: GatewaySpec) -> AwsClients:
    return AwsClients.create(region=spec.region)


def _context(
    modeladmin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Any],
    **extra: Any,
) -> dict[str, Any]:
    opts = modeladmin.model._meta
    return {
        **modeladmin.admin_site.each_context(request),
        "opts": opts,
        "app_label": opts.app_label,
        "queryset": queryset,
        "selected": [str(pk) for pk in queryset.values_list("pk", flat=True)],
        **extra,
    }


def _run(
    action: str,
    modeladmin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Any],
) -> TemplateResponse:
    runtime = get_runtime()
    storage = runtime.gateway_store
    secret = runtime.config.secret
    confirmed = action != "plan" and request.POST.get("confirm") == "yes"
    results: list[dict[str, Any]] = []
    pending_any = False
    for name in queryset.values_list("name", flat=True):
        result: dict[str, Any] = {"name": name, "text": "", "error": ""}
        try:
            if action == "destroy":
                spec = _destroy_spec(name, storage, secret)
            else:
                spec = _spec_for(name, secret)
            aws = _clients(spec)
            if confirmed:
                log = io.StringIO()
                printer = ProgressPrinter(log)
                try:
                    if action == "apply":
                        outcome = apply(spec, storage=storage, aws=aws, progress=printer)
                    else:
                        outcome = destroy(spec, storage=storage, aws=aws, progress=printer)
                finally:
                    result["text"] = log.getvalue() or "Nothing to do."
                if outcome.drift:
                    result["error"] = "Still differs from the config:\n" + render_changes(
                        outcome.drift
                    )
                else:
                    messages.success(request, f"{action.capitalize()}: gateway {name!r} done.")
            else:
                if action == "destroy":
                    changes = destroy(spec, storage=storage, aws=aws, dry_run=True).changes
                else:
                    changes = plan(spec, storage=storage, aws=aws)
                result["text"] = render_changes(changes)
                result["pending"] = any(c.action != "noop" for c in changes)
                pending_any = pending_any or result["pending"]
        except ApigwWsError as exc:
            result["error"] = str(exc)
            messages.error(request, f"{action.capitalize()} of gateway {name!r} failed: {exc}")
        results.append(result)
    titles = {
        "plan": "Plan: what apply would change",
        "apply": "Applied" if confirmed else "Apply these changes?",
        "destroy": "Destroyed" if confirmed else "Destroy these resources?",
    }
    context = _context(
        modeladmin,
        request,
        queryset,
        title=titles[action],
        results=results,
        verb=action,
        action_name=f"{action}_gateways",
        ask=action != "plan" and not confirmed and pending_any,
        config_file=str(config_path()),
    )
    return TemplateResponse(request, TEMPLATE, context)


@admin.action(description="Plan: show what apply would change", permissions=["view"])
def plan_gateways(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]
) -> TemplateResponse:
    """Show, for each selected gateway, the diff between its config and AWS."""
    return _run("plan", modeladmin, request, queryset)


@admin.action(description="Apply the provisioning config to AWS", permissions=["change"])
def apply_gateways(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]
) -> TemplateResponse:
    """Show the plan and, once confirmed, apply it."""
    return _run("apply", modeladmin, request, queryset)


@admin.action(description="Destroy the AWS resources of the gateway", permissions=["delete"])
def destroy_gateways(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]
) -> TemplateResponse:
    """Show what would be removed and, once confirmed, remove it."""
    return _run("destroy", modeladmin, request, queryset)


#: The three actions, for ``ModelAdmin.actions``.
PROVISION_ACTIONS = (plan_gateways, apply_gateways, destroy_gateways)
