"""Forged calls through the framework adapters: Django (Django ORM storage) and Flask
(SQLAlchemy storage), on SQLite. Without the secret a well-formed call is 403 on every
route, stores nothing, runs no handler and logs no secret; with the secret but a forged
connection-id header it is 400."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apigw_ws_core.testing import gateway_headers

from .adapters_support import django_reset, django_state, flask_reset, flask_state
from .strategies import LIVE_CID
from .support import capture_logs

LEGACY_PROOF = {
    "X-Amzn-Apigateway-Api-Id": "abcdef1234",
    "User-Agent": "AmazonAPIGateway_abcdef1234",
}
FORGERIES = [None, "", "wrong", "PREFIX", "SWAPCASE"]


def _forged(secret: str, presented: str | None) -> str | None:
    if presented == "PREFIX":
        return secret[:-1]
    if presented == "SWAPCASE":
        return secret.swapcase()
    return presented


@pytest.mark.django_db
@pytest.mark.parametrize("presented", FORGERIES)
@pytest.mark.parametrize("route", ["connect", "default", "disconnect", "chat_message"])
def test_django_forged_calls_are_403_and_change_nothing(django_env, route, presented):
    token = django_reset(django_env)
    secret = django_env["secret"]
    before = django_state()
    headers = gateway_headers(
        route, LIVE_CID, secret=_forged(secret, presented), origin=django_env["origin"]
    )
    headers.update(LEGACY_PROOF)
    body = json.dumps({"action": "chat_message", "text": "forged"}).encode()
    with capture_logs() as logs:
        resp = django_env["client"].post(
            f"/ws/{route}?channel=lobby&ws_token={token}",
            data=body,
            content_type="application/json",
            headers=headers,
        )
    assert resp.status_code == 403
    assert resp.json()["error"] == "forbidden"
    assert django_state() == before
    assert django_env["transport"].sent == []
    logs.assert_absent(secret, token)


@pytest.mark.parametrize("presented", FORGERIES)
@pytest.mark.parametrize("route", ["connect", "default", "disconnect", "chat_message"])
def test_flask_forged_calls_are_403_and_change_nothing(flask_env, route, presented):
    token = flask_reset(flask_env)
    secret = flask_env["secret"]
    before = flask_state(flask_env["db"])
    headers = gateway_headers(
        route, LIVE_CID, secret=_forged(secret, presented), origin=flask_env["origin"]
    )
    headers.update(LEGACY_PROOF)
    body = json.dumps({"action": "chat_message", "text": "forged"}).encode()
    with capture_logs() as logs:
        resp = flask_env["client"].post(
            f"/ws/{route}?channel=lobby&ws_token={token}", data=body, headers=headers
        )
    assert resp.status_code == 403
    assert resp.get_json()["error"] == "forbidden"
    assert flask_state(flask_env["db"]) == before
    logs.assert_absent(secret, token)


def _conflicting(env: dict[str, Any]) -> dict[str, str]:
    headers = gateway_headers(
        "connect", "RealConnCCCCCC0=", secret=env["secret"], origin=env["origin"]
    )
    headers["connectionId"] = LIVE_CID  # a client-added header naming the victim
    return headers


@pytest.mark.django_db
def test_django_conflicting_connection_ids_are_400(django_env):
    token = django_reset(django_env)
    before = django_state()
    resp = django_env["client"].post(
        f"/ws/connect?ws_token={token}", headers=_conflicting(django_env)
    )
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_connection_id")
    assert django_state() == before


def test_flask_conflicting_connection_ids_are_400(flask_env):
    token = flask_reset(flask_env)
    before = flask_state(flask_env["db"])
    resp = flask_env["client"].post(
        f"/ws/connect?ws_token={token}", headers=_conflicting(flask_env)
    )
    assert (resp.status_code, resp.get_json()["error"]) == (400, "invalid_connection_id")
    assert flask_state(flask_env["db"]) == before
