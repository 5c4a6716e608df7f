"""A second ``$connect`` for a connection id that has a live session never rebinds it
(issue 17, item 1): with another user's valid token, or with none, through every entry
point (plain WSGI and Lambda on memory storage, Django and Flask on SQLite, PostgreSQL and
MariaDB), the answer is ``409 connection_exists`` (or the token refusal) and storage is
unchanged: same owner, same channels, the presented token not even spent."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from apigw_ws_core import Config, MemoryStorage, WebSocketApp
from apigw_ws_core.aws_lambda import make_handler
from apigw_ws_core.testing import RecordingTransport, gateway_headers, lambda_event
from apigw_ws_core.wsgi import make_wsgi_app

from .adapters_support import django_reset, django_state, flask_reset, flask_state
from .strategies import LIVE_CID

SECRET = "rebind-secret-0123456789"


def _assert_refused(status: int, body: bytes | str) -> None:
    assert status == 409, body
    data = json.loads(body)
    assert data["error"] == "connection_exists" and isinstance(data["message"], str)


# --- plain WSGI and Lambda (memory storage) ----------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def _memory_app() -> WebSocketApp:
    return WebSocketApp(
        storage=MemoryStorage(), transport=RecordingTransport(), config=Config(secret=SECRET)
    )


def _memory_state(app: WebSocketApp) -> dict[str, Any]:
    storage = app.storage
    assert isinstance(storage, MemoryStorage)
    return {
        "sessions": dict(storage.sessions),
        "subs": {k: sorted(v) for k, v in storage.subscriptions.items()},
        "tokens": set(storage.tokens),
    }


def _connect_event(cid: str, token: str) -> Any:
    from apigw_ws_core.events import from_http

    return from_http("connect", gateway_headers("connect", cid, secret=SECRET), f"ws_token={token}")


def test_plain_wsgi_second_connect_is_409_and_changes_nothing():
    app = _memory_app()
    server = make_server("127.0.0.1", 0, make_wsgi_app(app, prefix="/ws"), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}/ws"

    def post(query: str) -> tuple[int, bytes]:
        req = urllib.request.Request(
            f"{base}/connect?{query}",
            data=b"",
            headers=gateway_headers("connect", LIVE_CID, secret=SECRET),
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    try:
        alice, _ = app.issue_token("alice")
        assert post(f"channel=alice-room&ws_token={alice}")[0] == 200
        before = _memory_state(app)
        bob, _ = app.issue_token("bob")
        _assert_refused(*post(f"channel=bob-room&ws_token={bob}"))
        after = _memory_state(app)
        assert after["sessions"] == before["sessions"] and after["subs"] == before["subs"]
        assert after["tokens"] == before["tokens"]  # bob's token not spent (alice's was)
        assert len(after["tokens"]) == 1
        # no token at all: the token refusal, nothing changed either
        status, body = post("channel=other")
        assert status == 401 and json.loads(body)["error"] == "token_required"
        assert _memory_state(app)["sessions"] == before["sessions"]
        assert app.storage.get_session(LIVE_CID).user_id == "alice"
        # bob's token still opens bob's own connection (the 409 spent nothing)
        assert app.handle(_connect_event("BobConnAAAAAAA0=", bob)).status == 200
        assert app.storage.get_session("BobConnAAAAAAA0=").user_id == "bob"
    finally:
        server.shutdown()
        server.server_close()


def test_lambda_second_connect_is_409_and_changes_nothing():
    app = _memory_app()
    handler = make_handler(app)
    alice, _ = app.issue_token("alice")
    reply = handler(
        lambda_event("CONNECT", LIVE_CID, query={"channel": "a", "ws_token": alice}), None
    )
    assert reply["statusCode"] == 200
    before = _memory_state(app)
    bob, _ = app.issue_token("bob")
    reply = handler(
        lambda_event("CONNECT", LIVE_CID, query={"channel": "b", "ws_token": bob}), None
    )
    _assert_refused(reply["statusCode"], reply["body"])
    after = _memory_state(app)
    assert after["sessions"] == before["sessions"] and after["subs"] == before["subs"]
    assert app.storage.get_session(LIVE_CID).user_id == "alice"
    assert after["tokens"] == before["tokens"]  # bob's token was not spent
    reply = handler(
        lambda_event("CONNECT", "BobConnAAAAAAA0=", query={"channel": "b", "ws_token": bob}), None
    )
    assert reply["statusCode"] == 200, reply


# --- Django (Django ORM storage) and Flask (SQLAlchemy storage) -----------------------------


def _django_rebind(env: dict[str, Any], make_user: Any) -> None:
    django_reset(env)  # LIVE_CID is user 7's, in the default channel
    make_user("sec-user-8", pk=8)
    before = django_state()
    token, _ = env["app"].issue_token("8")
    headers = gateway_headers("connect", LIVE_CID, secret=env["secret"], origin=env["origin"])
    resp = env["client"].post(f"/ws/connect?channel=lobby&ws_token={token}", headers=headers)
    _assert_refused(resp.status_code, resp.content)
    after = django_state()
    assert after["sessions"] == before["sessions"] and after["subs"] == before["subs"]
    assert after["tokens"] == before["tokens"]  # the token was not spent
    assert after["sessions"][LIVE_CID]["user_id"] == 7
    # it still opens user 8's own connection
    headers = gateway_headers(
        "connect", "EightConnAAAAA0=", secret=env["secret"], origin=env["origin"]
    )
    resp = env["client"].post(f"/ws/connect?channel=lobby&ws_token={token}", headers=headers)
    assert resp.status_code == 200, resp.content
    assert django_state()["sessions"]["EightConnAAAAA0="]["user_id"] == 8


@pytest.mark.django_db
def test_django_second_connect_is_409_and_changes_nothing(django_env, django_user_model):
    _django_rebind(django_env, django_user_model.objects.create_user)


def test_django_on_servers_second_connect_is_409(django_server_env):
    from django.contrib.auth import get_user_model

    manager = get_user_model()._default_manager.db_manager(django_server_env["alias"])
    # django_state() reads the routed alias (tests.django_orm.helpers.AliasRouter)
    _django_rebind(django_server_env, manager.create_user)


def _flask_rebind(env: dict[str, Any]) -> None:
    flask_reset(env)
    before = flask_state(env["db"])
    token, _ = env["core"].issue_token("8")
    assert flask_state(env["db"]) == before  # issuing writes nothing
    headers = gateway_headers("connect", LIVE_CID, secret=env["secret"], origin=env["origin"])
    resp = env["client"].post(f"/ws/connect?channel=lobby&ws_token={token}", headers=headers)
    _assert_refused(resp.status_code, resp.get_data())
    after = flask_state(env["db"])
    assert after["sessions"] == before["sessions"] and after["subs"] == before["subs"]
    assert after["tokens"] == before["tokens"]  # not spent
    resp = env["client"].post("/ws/connect?channel=lobby", headers=headers)
    assert resp.status_code == 401 and resp.get_json()["error"] == "token_required"
    assert flask_state(env["db"])["sessions"] == before["sessions"]
    # the token still opens user 8's own connection
    headers = gateway_headers(
        "connect", "EightConnAAAAA0=", secret=env["secret"], origin=env["origin"]
    )
    resp = env["client"].post(f"/ws/connect?channel=lobby&ws_token={token}", headers=headers)
    assert resp.status_code == 200, resp.get_data()
    assert flask_state(env["db"])["sessions"]["EightConnAAAAA0="][2] == "8"


def test_flask_second_connect_is_409_and_changes_nothing(flask_env):
    _flask_rebind(flask_env)


def test_flask_on_servers_second_connect_is_409(flask_server_env):
    _flask_rebind(flask_server_env)
