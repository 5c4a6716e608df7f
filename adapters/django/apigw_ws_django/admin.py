"""Django admin for the ORM storage's models.

* WebSocket sessions: filters (connected, channel, user), search, read-only rows (API
  Gateway creates them), a subscriptions inline, and two actions: **send a message** (an
  intermediate form) and **disconnect** (closes the connections through the Management
  API). Both need the ``change`` permission on sessions.
* Tokens: read-only; only the first characters of the SHA-256 hash are shown (the token
  itself is never stored). Deleting a token revokes it.
* Send jobs: the parts of durable background sends (read-only): status, counts, first
  error, with the whole job's progress on each part's page.
* Gateway records: a plain, extensible admin (:class:`GatewayRecordAdmin`; provisioning adds
  actions by subclassing or by ``GatewayRecordAdmin.actions``).

Registered only when ``apigw_ws_storage.django_orm`` is installed.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from apigw_ws_core.errors import PayloadTooLarge, TransportError
from apigw_ws_core.fanout import check_size
from apigw_ws_core.reply import encode_payload
from apigw_ws_django.runtime import get_app


def _provision_actions() -> list[Any]:
    """Plan/apply/destroy actions (they need the provisioning extra: boto3)."""
    try:
        from apigw_ws_django.provision_admin import PROVISION_ACTIONS
    except ImportError:  # pragma: no cover - boto3 missing
        return []
    return list(PROVISION_ACTIONS)


__all__ = ["GatewayRecordAdmin", "SendMessageForm", "WebSocketSessionAdmin", "WebSocketTokenAdmin"]


class SendMessageForm(forms.Form):
    """The message to send: JSON (sent as JSON) or plain text."""

    message = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80}),
        help_text='For example {"type": "notice", "text": "Maintenance at 18:00"}',
    )
    as_json = forms.BooleanField(
        required=False, initial=True, label="Parse as JSON", help_text="Untick to send text."
    )

    def clean(self) -> dict[str, Any]:
        """Decode JSON when asked, and refuse payloads over API Gateway's 128 KiB."""
        data: dict[str, Any] = super().clean() or {}
        text = data.get("message")
        if text is None:
            return data
        payload: Any = text
        if data.get("as_json"):
            try:
                payload = json.loads(text)
            except ValueError as exc:
                raise forms.ValidationError(f"Not valid JSON: {exc}") from exc
        try:
            check_size(encode_payload(payload))
        except PayloadTooLarge as exc:
            raise forms.ValidationError(str(exc)) from exc
        data["payload"] = payload
        return data


class _SendPermission:
    """``has_send_permission``: the ``change`` permission on the model."""

    def has_send_permission(self, request: HttpRequest) -> bool:
        """Who may send messages to and disconnect sessions."""
        opts = self.model._meta  # type: ignore[attr-defined]
        return bool(request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}"))


if apps.is_installed("apigw_ws_storage.django_orm"):
    from apigw_ws_storage.django_orm.models import (
        GatewayRecord,
        SendJobPart,
        WebSocketSession,
        WebSocketSubscription,
        WebSocketToken,
    )

    class SubscriptionInline(admin.TabularInline):  # type: ignore[type-arg]
        """The channels of a session (read-only)."""

        model = WebSocketSubscription
        fields = ("channel_name", "created_at")
        readonly_fields = fields
        extra = 0
        max_num = 0
        can_delete = False

    @admin.register(WebSocketSession)
    class WebSocketSessionAdmin(_SendPermission, admin.ModelAdmin):  # type: ignore[type-arg]
        """Sessions: filter, search, send a message, disconnect."""

        list_display = (
            "connection_id",
            "channel_name",
            "user",
            "connected",
            "connected_at",
            "disconnected_at",
            "source_ip",
        )
        list_filter = (
            "connected",
            "channel_name",
            ("user", admin.RelatedOnlyFieldListFilter),
            "connected_at",
        )
        search_fields = ("connection_id", "channel_name", "source_ip")
        list_select_related = ("user",)
        date_hierarchy = "connected_at"
        readonly_fields = (
            "connection_id",
            "channel_name",
            "user",
            "connected",
            "source_ip",
            "user_agent",
            "stage",
            "api_id",
            "connected_at",
            "disconnected_at",
        )
        inlines = (SubscriptionInline,)
        actions = ("send_message", "disconnect")

        def has_add_permission(self, request: HttpRequest) -> bool:
            """Sessions are created by API Gateway only."""
            return False

        @admin.action(description="Send a message to the selected sessions", permissions=["send"])
        def send_message(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
            """Ask for the message on an intermediate page, then send it to the connected
            sessions among the selection."""
            form = SendMessageForm(request.POST if "apply" in request.POST else None)
            if "apply" in request.POST and form.is_valid():
                report = queryset.send_message(form.cleaned_data["payload"])  # type: ignore[attr-defined]
                level = messages.SUCCESS if report.ok else messages.WARNING
                self.message_user(
                    request,
                    f"Message delivered to {report.delivered} connection(s); "
                    f"{len(report.gone)} gone, {len(report.failed)} failed.",
                    level,
                )
                return None
            context = {
                **self.admin_site.each_context(request),
                "title": "Send a message",
                "opts": self.model._meta,
                "form": form,
                "queryset": queryset,
                "connected": queryset.filter(connected=True).count(),
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
                "select_across": request.POST.get("select_across", "0"),
            }
            return TemplateResponse(request, "admin/apigw_ws/send_message.html", context)

        @admin.action(description="Disconnect the selected sessions", permissions=["send"])
        def disconnect(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
            """Close the connections through the Management API and mark them gone."""
            app = get_app()
            closed = gone = failed = 0
            for batch in queryset.iter_connection_ids():  # type: ignore[attr-defined]
                for cid in batch:
                    try:
                        if app.disconnect(cid):
                            closed += 1
                        else:
                            gone += 1
                    except TransportError:
                        failed += 1
            level = messages.SUCCESS if not failed else messages.WARNING
            self.message_user(
                request,
                f"Closed {closed} connection(s); {gone} already gone, {failed} failed.",
                level,
            )

    @admin.register(WebSocketToken)
    class WebSocketTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
        """Outstanding connection tokens (read-only; delete to revoke)."""

        list_display = ("hash_prefix", "user", "channel", "origin", "created_at", "expires_at")
        list_filter = ("created_at", "expires_at")
        list_select_related = ("user",)
        fields = ("hash_prefix", "user", "channel", "origin", "created_at", "expires_at")
        readonly_fields = fields

        @admin.display(description="token hash")
        def hash_prefix(self, obj: WebSocketToken) -> str:
            """Only the first characters of the SHA-256 hash (enough to tell rows apart)."""
            return f"{obj.token_hash[:10]}…"

        def has_add_permission(self, request: HttpRequest) -> bool:
            """Tokens are issued by the token endpoint only."""
            return False

        def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
            """Tokens cannot be edited."""
            return False

    @admin.register(SendJobPart)
    class SendJobPartAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
        """Parts of durable send jobs (read-only): one row per shard; part 0 plans."""

        list_display = (
            "job_id",
            "part",
            "status",
            "expected",
            "delivered",
            "gone",
            "failed",
            "ambiguous",
            "retried",
            "runs",
            "updated_at",
        )
        list_filter = ("status", "created_at")
        search_fields = ("job_id",)
        ordering = ("-created_at", "job_id", "part")
        readonly_fields = (
            "job_summary",
            *[f.name for f in SendJobPart._meta.get_fields() if f.name != "id"],
        )
        fields = readonly_fields

        @admin.display(description="whole job")
        def job_summary(self, obj: SendJobPart) -> str:
            """The job's aggregated status (every part added up)."""
            from apigw_ws_core.jobs import describe, job_status

            status = job_status(get_app().storage, obj.job_id)
            return describe(status) if status is not None else "-"

        def has_add_permission(self, request: HttpRequest) -> bool:
            """Jobs are made by background sends only."""
            return False

        def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
            """Job parts are written by workers only."""
            return False

    @admin.register(GatewayRecord)
    class GatewayRecordAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
        """Provisioned API Gateway records. Extend ``actions`` (or subclass and
        re-register) to add provisioning actions."""

        list_display = ("name", "api_id", "region", "stage", "status", "updated_at")
        list_filter = ("status", "region")
        search_fields = ("name", "api_id", "custom_domain")
        readonly_fields = ("updated_at",)
        actions: list[Any] = list(_provision_actions())
