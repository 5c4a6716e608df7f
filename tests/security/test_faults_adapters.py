"""Issue 12 item 2 through the Django and Flask adapters: a database that fails during an
event, or during a token request (the storage, or the session/user lookup before it), is a
JSON ``503 storage_unavailable`` with ``Retry-After`` — never the framework's HTML error
page — and changes nothing. (Plain WSGI and Lambda: ``tests/core/test_dependency_failures``;
real servers behind a faulty proxy: ``tests/faults``.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from apigw_ws_core.testing import gateway_headers

from .adapters_support import django_reset, django_state, flask_reset, flask_state
from .strategies import LIVE_CID


def _down(exc: BaseException) -> Any:
    def raiser(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return raiser


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
    monkeypatch.setattr(storage, "store_token", _down(OperationalError("server closed")))
    # the token's rate count and the token are stored in one transaction
    monkeypatch.setattr(storage, "store_token_counted", _down(OperationalError("server closed")))
    resp = client.post("/ws-token/", data=b"{}", content_type="application/json")
    _assert_json_503(resp.status_code, resp, resp.content)
    assert resp["Cache-Control"] == "no-store"
    monkeypatch.undo()
    assert django_state() == before
    assert env["transport"].sent == []


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

    monkeypatch.setattr(storage, "store_token", _down(down))
    monkeypatch.setattr(storage, "store_token_counted", _down(down))
    resp = env["client"].post("/ws/token", headers={"X-Test-User": "7"})
    _assert_json_503(resp.status_code, resp.headers, resp.get_data())
    monkeypatch.undo()
    assert flask_state(env["db"]) == before
    assert env["core"].transport.sent == []


def test_flask_token_endpoint_with_the_user_loader_down(
    flask_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from apigw_ws_flask import ApigwWebSocket

    down = OperationalError("SELECT user", {}, ConnectionRefusedError("refused"))
    monkeypatch.setattr(ApigwWebSocket, "current_user_id", _down(down))
    resp = flask_env["client"].post("/ws/token", headers={"X-Test-User": "7"})
    _assert_json_503(resp.status_code, resp.headers, resp.get_data())
