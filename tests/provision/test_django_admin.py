"""Admin actions on gateway records: plan, apply (after confirmation), destroy."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

pytest.importorskip("django")
pytest.importorskip("apigw_ws_django.runtime")

from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from apigw_ws_core.gateways import GatewayRecord
from apigw_ws_core.provision import AwsClients
from apigw_ws_django.runtime import get_runtime
from apigw_ws_storage.django_orm.models import GatewayRecord as GatewayRow
from tests.provision.conftest import REGION, AwsEnv

CONFIG = f"""
name = "admin-chat"
region = "{REGION}"
target_base_url = "https://app.example.com/ws/"
"""

CHANGELIST = "/admin/apigw_ws_storage/gatewayrecord/"


@pytest.fixture
def admin_client(
    aws: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: object
) -> Client:
    monkeypatch.delenv("APIGW_WS_SECRET", raising=False)
    monkeypatch.setattr(AwsClients, "create", classmethod(lambda cls, **kw: aws.clients))
    path = tmp_path / "apigw-ws.toml"
    path.write_text(CONFIG)
    settings.APIGW_WS_PROVISION_CONFIG = str(path)  # type: ignore[attr-defined]
    user = get_user_model().objects.create_superuser("admin", "a@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def _action(client: Client, action: str, pk: int, **extra: str) -> str:
    response = client.post(CHANGELIST, {"action": action, "_selected_action": [str(pk)], **extra})
    assert response.status_code == 200, response.content[:2000]
    return html.unescape(response.content.decode())


@pytest.mark.django_db
@override_settings(ROOT_URLCONF="tests.provision.django_admin_urls")
def test_plan_apply_destroy_from_the_admin(admin_client: Client, aws: AwsEnv) -> None:
    get_runtime().storage.save_gateway(GatewayRecord(name="admin-chat"))
    pk = GatewayRow.objects.get(name="admin-chat").pk
    assert admin_client.get(CHANGELIST).status_code == 200

    page = _action(admin_client, "plan_gateways", pk)
    assert "+ api admin-chat" in page and "Plan: 10 to create" in page
    assert 'name="confirm"' not in page

    page = _action(admin_client, "apply_gateways", pk)
    assert "Apply these changes?" in page and 'name="confirm" value="yes"' in page
    assert aws.client("apigatewayv2").get_apis()["Items"] == []  # not before confirming

    page = _action(admin_client, "apply_gateways", pk, confirm="yes")
    assert "[ 1/10] + api admin-chat ... created" in page
    record = get_runtime().storage.get_gateway("admin-chat")
    assert record is not None and record.status == "ready"
    assert len(aws.client("apigatewayv2").get_apis()["Items"]) == 1

    page = _action(admin_client, "plan_gateways", pk)
    assert "No changes" in page

    page = _action(admin_client, "destroy_gateways", pk)
    assert "Destroy these resources?" in page and "- api admin-chat" in page
    page = _action(admin_client, "destroy_gateways", pk, confirm="yes")
    assert aws.client("apigatewayv2").get_apis()["Items"] == []
    assert get_runtime().storage.get_gateway("admin-chat").status == "destroyed"


@pytest.mark.django_db
@override_settings(ROOT_URLCONF="tests.provision.django_admin_urls")
def test_record_without_matching_config_is_an_error(admin_client: Client) -> None:
    get_runtime().storage.save_gateway(GatewayRecord(name="someone-else"))
    pk = GatewayRow.objects.get(name="someone-else").pk
    page = _action(admin_client, "plan_gateways", pk)
    assert "describes gateway 'admin-chat', not 'someone-else'" in page
