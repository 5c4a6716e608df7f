"""A URLconf with an admin site whose gateway record admin has the provisioning actions."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from apigw_ws_django.provision_admin import PROVISION_ACTIONS
from apigw_ws_storage.django_orm.models import GatewayRecord

site = admin.AdminSite(name="admin")


class GatewayRecordAdmin(admin.ModelAdmin):
    list_display = ("name", "api_id", "status")
    actions = [*PROVISION_ACTIONS]


site.register(GatewayRecord, GatewayRecordAdmin)

urlpatterns = [path("admin/", site.urls)]
