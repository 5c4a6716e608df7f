"""Admin: session filters, the send-message action (intermediate form), disconnect, tokens
read-only without usable secrets, gateway records."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import Client

from apigw_ws_django.testing import WebSocketTestClient
from apigw_ws_storage.django_orm import models as m

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/apigw_ws_storage/websocketsession/"


@pytest.fixture
def admin_client_(django_user_model: Any) -> Client:
    admin = django_user_model.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def ws() -> Any:
    with WebSocketTestClient() as client:
        yield client


@pytest.fixture
def sessions(ws: WebSocketTestClient, django_user_model: Any) -> list[Any]:
    alice = django_user_model.objects.create_user("alice")
    conns = [ws.connect(user=alice, channel=c) for c in ("lobby", "lobby", "news")]
    conns[1].disconnect()
    return conns


def test_changelist_and_filters(admin_client_: Client, sessions: list[Any]):
    page = admin_client_.get(CHANGELIST)
    assert page.status_code == 200
    for conn in sessions:
        assert conn.connection_id in page.content.decode()
    lobby = admin_client_.get(CHANGELIST, {"channel_name": "lobby", "connected__exact": "1"})
    assert lobby.context["cl"].result_count == 1
    user = m.WebSocketSession.objects.first().user  # type: ignore[union-attr]
    assert (
        admin_client_.get(CHANGELIST, {"user__id__exact": user.pk}).context["cl"].result_count == 3
    )
    detail = admin_client_.get(f"{CHANGELIST}{m.WebSocketSession.objects.first().pk}/change/")  # type: ignore[union-attr]
    assert detail.status_code == 200 and b"lobby" in detail.content
    assert admin_client_.get(f"{CHANGELIST}add/").status_code == 403


def test_send_message_action(admin_client_: Client, sessions: list[Any], ws: WebSocketTestClient):
    pks = [str(pk) for pk in m.WebSocketSession.objects.values_list("pk", flat=True)]
    data = {"action": "send_message", ACTION_CHECKBOX_NAME: pks, "index": "0"}
    form_page = admin_client_.post(CHANGELIST, data)
    assert form_page.status_code == 200
    assert b"Send a message" in form_page.content and b"<strong>2</strong>" in form_page.content
    bad = admin_client_.post(
        CHANGELIST, {**data, "apply": "1", "message": "{oops", "as_json": "on"}
    )
    assert bad.status_code == 200 and b"Not valid JSON" in bad.content
    assert ws.transport.sent == []
    done = admin_client_.post(
        CHANGELIST,
        {**data, "apply": "1", "message": '{"type": "notice"}', "as_json": "on"},
        follow=True,
    )
    assert b"Message delivered to 2 connection(s)" in done.content
    assert sorted(cid for cid, _ in ws.sent) == sorted(
        c.connection_id for c in (sessions[0], sessions[2])
    )
    assert all(payload == {"type": "notice"} for _, payload in ws.sent)
    ws.transport.clear()
    admin_client_.post(CHANGELIST, {**data, "apply": "1", "message": "plain"}, follow=True)
    assert [msg.data for msg in ws.transport.sent] == [b"plain", b"plain"]


def test_disconnect_action(admin_client_: Client, sessions: list[Any], ws: WebSocketTestClient):
    pks = [str(pk) for pk in m.WebSocketSession.objects.values_list("pk", flat=True)]
    ws.transport.gone.add(sessions[2].connection_id)
    done = admin_client_.post(
        CHANGELIST,
        {"action": "disconnect", ACTION_CHECKBOX_NAME: pks, "index": "0"},
        follow=True,
    )
    assert b"Closed 1 connection(s); 1 already gone, 0 failed." in done.content
    assert ws.transport.deleted == [sessions[0].connection_id]
    assert not m.WebSocketSession.objects.filter(connected=True).exists()


def test_actions_need_change_permission(sessions: list[Any], django_user_model: Any):
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("viewer", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_websocketsession"))
    client = Client()
    client.force_login(staff)
    page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert b"send_message" not in page.content and b'value="disconnect"' not in page.content


def test_tokens_are_read_only_and_hidden(
    admin_client_: Client, ws: WebSocketTestClient, django_user_model: Any
):
    alice = django_user_model.objects.create_user("alice")
    token = ws.token_for(alice, channel="lobby")
    assert not m.WebSocketToken.objects.exists()  # signed, not stored
    assert ws.connect(token=token, channel="lobby").accepted  # spent: in the ledger now
    row = m.WebSocketToken.objects.get()
    page = admin_client_.get("/admin/apigw_ws_storage/websockettoken/")
    body = page.content.decode()
    assert page.status_code == 200
    assert token not in body and row.token_hash not in body and row.token_hash[:10] in body
    detail = admin_client_.get(f"/admin/apigw_ws_storage/websockettoken/{row.pk}/change/")
    assert detail.status_code == 200
    assert token not in detail.content.decode() and row.token_hash not in detail.content.decode()
    assert b'name="_save"' not in detail.content
    assert admin_client_.get("/admin/apigw_ws_storage/websockettoken/add/").status_code == 403


def test_gateway_records(admin_client_: Client):
    m.GatewayRecord.objects.create(name="main", api_id="abc123", status="ready")
    page = admin_client_.get("/admin/apigw_ws_storage/gatewayrecord/")
    assert page.status_code == 200 and b"abc123" in page.content
    from django.contrib import admin as django_admin

    from apigw_ws_django.admin import GatewayRecordAdmin

    assert isinstance(django_admin.site._registry[m.GatewayRecord], GatewayRecordAdmin)
