"""Issue 12 item 2 through the Django and Flask adapters: a database that fails during an
event, during the ``$connect`` that redeems a token, or during a token request's
session/user lookup, is a JSON ``503 storage_unavailable`` with ``Retry-After`` — never the
framework's HTML error page — and changes nothing. The token endpoint itself makes no
storage call (tokens are signed): with the apigw-ws storage down it still answers 200 with a
token, and that token is not spent by the ``$connect`` that failed. (Plain WSGI and Lambda:
``tests/core/test_dependency_failures``; real servers behind a faulty proxy:
``tests/faults``.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from apigw_ws_core.testing import gateway_headers

from .adapters_support import django_reset, django_state, flask_reset, flask_state
from .strategies import LIVE_CID

NEW_CID = "NewConnCCCCCCC0="


def _down(exc: BaseException) -> Any:
    def raiser(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return raiser


def _storage_down(monkeypatch: pytest.MonkeyPatch, storage: Any, exc: BaseException) -> None:
    """Every public method of ``storage`` that reaches the database raises ``exc`` (it is
    unreachable); ``is_unavailable`` (which classifies the failure) still answers."""
    for name in dir(type(storage)):
        if name.startswith("_") or name == "is_unavailable":
            continue
        if callable(getattr(type(storage), name, None)):
            monkeypatch.setattr(storage, name, _down(exc))


def _assert_json_503(status: int, headers: Any, body: bytes) -> None:
    assert status == 503, body[:300]
    assert headers["Content-Type"] == "application/json"
    assert headers["Retry-After"] == "2"
    data = json.loads(body)
    assert data["error"] == "storage_unavailable" and data["message"]


@pytest.mark.django_db
def test_django_event_and_token_view_with_the_database_down(
    django_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import OperationalError
    from django.test import Client

    env = django_env
    django_reset(env)
    before = django_state()
    storage = env["app"].storage
    monkeypatch.setattr(storage, "get_session", _down(OperationalError("server closed")))
    resp = env["client"].post(
        "/ws/default",
        data=b'{"action": "chat_message", "text": "hi"}',
        content_type="application/json",
        headers=gateway_headers("default", LIVE_CID, secret=env["secret"]),
    )
    _assert_json_503(resp.status_code, resp, resp.content)

    client = Client()
    client.force_login(env["user"])
    _storage_down(monkeypatch, storage, OperationalError("server closed"))
    # the token endpoint needs no storage: still a token (a feature)
    resp = client.post("/ws-token/", data=b'{"channel": "lobby"}', content_type="application/json")
    assert resp.status_code == 200, resp.content
    assert resp["Cache-Control"] == "no-store"
    token = json.loads(resp.content)["token"]
    # the $connect that redeems it needs the ledger: 503, and the token is not spent
    headers = gateway_headers("connect", NEW_CID, secret=env["secret"], origin=env["origin"])
    resp = env["client"].post(f"/ws/connect?channel=lobby&ws_token={token}", headers=headers)
    _assert_json_503(resp.status_code, resp, resp.content)
    monkeypatch.undo()
    assert django_state() == before
    assert env["transport"].sent == []
    resp = env["client"].post(f"/ws/connect?channel=lobby&ws_token={token}", headers=headers)
    assert resp.status_code == 200, resp.content
    assert django_state()["sessions"][NEW_CID]["user_id"] == 7


@pytest.mark.django_db
def test_django_token_view_with_the_session_store_down(
    django_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user comes from the session and user tables before the core sees the request."""
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import OperationalError
    from django.test import Client

    client = Client()
    client.force_login(django_env["user"])
    monkeypatch.setattr(SessionStore, "load", _down(OperationalError("connection refused")))
    resp = client.post("/ws-token/", data=b"{}", content_type="application/json")
    _assert_json_503(resp.status_code, resp, resp.content)


def test_flask_event_and_token_endpoint_with_the_database_down(
    flask_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    env = flask_env
    flask_reset(env)
    before = flask_state(env["db"])
    storage = env["core"].storage
    down = OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
    monkeypatch.setattr(storage, "get_session", _down(down))
    resp = env["client"].post(
        "/ws/default",
        data=b'{"action": "chat_message", "text": "hi"}',
        headers=gateway_headers("default", LIVE_CID, secret=env["secret"]),
    )
    _assert_json_503(resp.status_code, resp.headers, resp.get_data())

    _storage_down(monkeypatch, storage, down)
    # the token endpoint needs no storage: still a token (a feature)
    resp = env["client"].post("/ws/token", headers={"X-Test-User": "7"})
    assert resp.status_code == 200, resp.get_data()
    assert resp.headers["Cache-Control"] == "no-store"
    token = resp.get_json()["token"]
    # the $connect that redeems it needs the ledger: 503, and the token is not spent
    headers = gateway_headers("connect", NEW_CID, secret=env["secret"], origin=env["origin"])
    resp = env["client"].post(f"/ws/connect?ws_token={token}", headers=headers)
    _assert_json_503(resp.status_code, resp.headers, resp.get_data())
    monkeypatch.undo()
    assert flask_state(env["db"]) == before
    assert env["core"].transport.sent == []
    resp = env["client"].post(f"/ws/connect?ws_token={token}", headers=headers)
    assert resp.status_code == 200, resp.get_data()
    assert NEW_CID in flask_state(env["db"])["sessions"]


def test_flask_token_endpoint_with_the_user_loader_down(
    flask_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from apigw_ws_flask import ApigwWebSocket

    down = OperationalError("SELECT user", {}, ConnectionRefusedError("refused"))
    monkeypatch.setattr(ApigwWebSocket, "current_user_id", _down(down))
    resp = flask_env["client"].post("/ws/token", headers={"X-Test-User": "7"})
    _assert_json_503(resp.status_code, resp.headers, resp.get_data())
