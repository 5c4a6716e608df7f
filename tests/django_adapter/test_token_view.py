"""The token endpoint: POST only, CSRF-protected, login required, JSON; its tokens are
signed, not stored (the ledger records them when $connect spends them), and limited where
they are redeemed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from apigw_ws_core.tokens import TokenClaims, token_keys, verify_token
from apigw_ws_django import get_app
from apigw_ws_django.testing import WebSocketTestClient
from apigw_ws_storage.django_orm import models as m

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/ws-token/"


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password="pw")


def _claims(token: str) -> TokenClaims:
    """What the token says, verified with the app's key (no storage involved)."""
    app = get_app()
    return verify_token(token_keys(app.config), token, now=app.clock())


def _csrf_client(user: Any) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/admin/login/")  # any page that sets the CSRF cookie
    return client, client.cookies["csrftoken"].value


def test_issues_a_token_that_opens_one_connection(alice: Any):
    client, csrf = _csrf_client(alice)
    response = client.post(URL, {}, headers={"X-CSRFToken": csrf})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"token", "expires_in"} and body["expires_in"] == 60
    assert not m.WebSocketToken.objects.exists()  # signed, not stored
    claims = _claims(body["token"])
    assert claims.user_id == str(alice.pk)
    with WebSocketTestClient() as ws:
        conn = ws.connect(token=body["token"])
        assert conn.accepted
        assert conn.send({"handler": "whoami"}).json()["user"] == "alice"
        assert not ws.connect(token=body["token"]).accepted
    row = m.WebSocketToken.objects.get()  # the spent-token ledger: its digest, never itself
    assert row.user_id == alice.pk and row.token_hash == claims.digest
    assert body["token"] not in row.token_hash


def test_binds_channel_and_origin_from_json_body(alice: Any):
    client, csrf = _csrf_client(alice)
    response = client.post(
        URL,
        {"channel": "room-7", "origin": "https://chat.example.com"},
        content_type="application/json",
        headers={"X-CSRFToken": csrf},
    )
    token = response.json()["token"]
    claims = _claims(token)
    assert claims.channel_bound and claims.origin_bound
    assert claims.binds("room-7", "https://chat.example.com")
    assert not claims.binds("room-8", "https://chat.example.com")
    assert not claims.binds("room-7", "https://evil.example")
    with WebSocketTestClient() as ws:
        assert ws.connect(token=token, channel="room-8").response.status_code == 401
        assert not ws.connect(token=token, channel="room-7").accepted  # burnt by the attempt
    response = client.post(URL, {"channel": "room-7"}, headers={"X-CSRFToken": csrf})
    with WebSocketTestClient() as ws:
        assert ws.connect(token=response.json()["token"], channel="room-7").accepted


def test_requires_login(alice: Any):
    response = Client().post(URL)
    assert response.status_code == 401
    assert response.json()["error"] == "login_required"
    assert not m.WebSocketToken.objects.exists()


def test_requires_csrf(alice: Any):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(URL).status_code == 403
    assert not m.WebSocketToken.objects.exists()


def test_post_only(alice: Any):
    client = Client()
    client.force_login(alice)
    assert client.get(URL).status_code == 405


def test_bad_input(alice: Any):
    client = Client()
    client.force_login(alice)
    r = client.post(URL, b"{nope", content_type="application/json")
    assert r.status_code == 400 and r.json()["error"] == "invalid_json"
    r = client.post(URL, {"channel": "bad channel"}, content_type="application/json")
    assert r.status_code == 400 and r.json()["error"] == "invalid_channel"
    r = client.post(URL, {"channel": 5}, content_type="application/json")
    assert r.status_code == 400 and r.json()["error"] == "invalid_channel"
    r = client.post(URL, [1], content_type="application/json")
    assert r.status_code == 400
    deep = b'{"channel": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    r = client.post(URL, deep, content_type="application/json")
    assert r.status_code == 400 and r.json()["error"] == "invalid_json"
    r = client.post(URL, b'{"channel": "a", "channel": "b"}', content_type="application/json")
    assert r.status_code == 400 and r.json()["error"] == "invalid_json"
    r = client.post(URL, {"channel": "x", "pad": "a" * 5000}, content_type="application/json")
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert not m.WebSocketToken.objects.exists()


def test_binds_the_request_origin_by_default(settings: Any, alice: Any):
    # two origins pass the allowlist, so only the token's binding tells them apart
    settings.APIGW_WS = {
        **settings.APIGW_WS,
        "ALLOWED_ORIGINS": ["https://chat.example.com", "https://evil.example"],
    }
    client = Client()
    client.force_login(alice)
    page = {"Origin": "https://chat.example.com"}
    token = client.post(URL, headers=page).json()["token"]
    claims = _claims(token)
    assert claims.origin_bound and not claims.channel_bound
    assert claims.binds(None, "https://chat.example.com")
    assert not claims.binds(None, "https://evil.example")
    with WebSocketTestClient() as ws:  # used from another site's page: refused
        conn = ws.connect(token=token, origin="https://evil.example")
        assert conn.response.status_code == 401
        assert json.loads(conn.response.content)["error"] == "invalid_token"
    r = client.post(
        URL, {"origin": "https://other.example"}, content_type="application/json", headers=page
    )
    assert r.status_code == 400 and r.json()["error"] == "bad_request"
    settings.APIGW_WS = {**settings.APIGW_WS, "TOKEN_BIND_ORIGIN": False}
    r = client.post(URL, headers=page)
    assert r.status_code == 200
    assert not _claims(r.json()["token"]).origin_bound


def test_rate_limited_at_redemption(settings: Any, alice: Any):
    """TOKEN_RATE_PER_USER counts tokens redeemed at $connect: the endpoint keeps issuing
    (an HMAC, nothing stored), the third token connect in the window is 429."""
    settings.APIGW_WS = {**settings.APIGW_WS, "TOKEN_RATE_PER_USER": "2/60"}
    client = Client()
    client.force_login(alice)
    responses = [client.post(URL) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert not m.WebSocketToken.objects.exists()
    tokens = [r.json()["token"] for r in responses]
    with WebSocketTestClient() as ws:
        assert ws.connect(token=tokens[0]).accepted
        assert ws.connect(token=tokens[1]).accepted
        refused = ws.connect(token=tokens[2]).response
    assert refused.status_code == 429
    assert json.loads(refused.content)["error"] == "rate_limited"
    assert int(refused["Retry-After"]) >= 1
