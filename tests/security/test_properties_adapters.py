"""Property tests through the framework adapters: hostile gateway calls through Django's
test client (Django ORM storage) and Flask's test client (SQLAlchemy storage), both on
SQLite, plus hostile bodies for each adapter's token endpoint.

Invariants: never a 5xx; every 4xx carries a stable JSON error code; a rejected call
leaves sessions, subscriptions and tokens as they were (a presented token may be spent).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from apigw_ws_core.testing import RecordingTransport, gateway_headers
from apigw_ws_core.tokens import hash_token

from .strategies import (
    JSON_VALUES,
    LIVE_CID,
    STABLE_CODES,
    HostileRequest,
    check_reply,
    check_unchanged,
    hostile_requests,
)

EXAMPLES = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

#: What a token endpoint may answer besides the core's codes.
TOKEN_CODES = STABLE_CODES | {"login_required", "csrf_failed"}

TOKEN_BODIES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "channel": st.sampled_from(["lobby", "user.7", "user.8", "private-x", "", "a b"])
            | JSON_VALUES,
            "origin": st.sampled_from(
                ["https://chat.example.com", "null", "https://a:1:2", "x" * 400, ""]
            )
            | JSON_VALUES,
        },
    ).map(lambda d: ("application/json", json.dumps(d).encode())),
    JSON_VALUES.map(lambda v: ("application/json", json.dumps(v).encode())),
    st.binary(max_size=80).map(lambda b: ("application/json", b)),
    st.text(max_size=40).map(
        lambda t: ("application/x-www-form-urlencoded", f"channel={quote(t)}".encode())
    ),
)
TOKEN_ORIGINS = st.sampled_from(
    [None, "https://chat.example.com", "https://app.example.com", "null", "https://a:bad"]
)


def check_token_reply(status: int, body: bytes) -> None:
    """The token endpoint answers 200 with a token, or a stable 4xx."""
    assert status < 500, body[:200]
    data = json.loads(body)
    if status == 200:
        assert isinstance(data["token"], str) and len(data["token"]) >= 22
    else:
        assert data["error"] in TOKEN_CODES, data


# --- Django -------------------------------------------------------------------------------


def _django_state() -> dict[str, Any]:
    from apigw_ws_storage.django_orm.models import (
        WebSocketSession,
        WebSocketSubscription,
        WebSocketToken,
    )

    return {
        "sessions": {
            row["connection_id"]: row
            for row in WebSocketSession.objects.values(
                "connection_id", "channel_name", "user_id", "connected", "disconnected_at"
            )
        },
        "subs": sorted(
            WebSocketSubscription.objects.values_list("session__connection_id", "channel_name")
        ),
        "tokens": set(WebSocketToken.objects.values_list("token_hash", flat=True)),
    }


@pytest.fixture
def django_env(django_user_model: Any) -> Iterator[dict[str, Any]]:
    """The Django adapter's app for the test ``ChatView``, a user, a recording transport."""
    from django.conf import settings as dj_settings
    from django.test import Client

    from apigw_ws_django.runtime import get_app, reset_runtime, set_transport
    from tests.django_adapter.views import ChatView

    reset_runtime()
    transport = RecordingTransport()
    set_transport(transport)
    user = django_user_model.objects.create_user("sec-user-7", pk=7)
    yield {
        "app": get_app(ChatView),
        "client": Client(),
        "secret": dj_settings.APIGW_WS["SECRET"],
        "origin": dj_settings.APIGW_WS["ALLOWED_ORIGINS"][0],
        "user": user,
        "transport": transport,
    }
    reset_runtime()


def _django_reset(env: dict[str, Any]) -> str:
    """Empty tables, one live connection for user 7, and one unused token (returned)."""
    from apigw_ws_storage.django_orm.models import (
        RateLimitCounter,
        WebSocketSession,
        WebSocketToken,
    )

    WebSocketSession.objects.all().delete()
    WebSocketToken.objects.all().delete()
    RateLimitCounter.objects.all().delete()
    app = env["app"]
    live, _ = app.issue_token("7")
    headers = gateway_headers("connect", LIVE_CID, secret=env["secret"], origin=env["origin"])
    resp = env["client"].post(f"/ws/connect?ws_token={live}", headers=headers)
    assert resp.status_code == 200, resp.content
    token, _ = app.issue_token("7")
    return token


@pytest.mark.django_db
@EXAMPLES
@given(data=st.data())
def test_django_adapter_never_5xx_and_rejections_change_nothing(django_env, data):
    token = _django_reset(django_env)
    request: HostileRequest = data.draw(
        hostile_requests(secret=django_env["secret"], token=token, origin=django_env["origin"])
    )
    before = _django_state()
    resp = django_env["client"].generic(
        request.method,
        f"/ws/{quote(request.route, safe='')}" + (f"?{request.query}" if request.query else ""),
        data=request.body,
        content_type=request.header_dict().get("Content-Type", "application/octet-stream"),
        headers={k: v for k, v in request.headers if k.lower() != "content-type"},
    )
    event(f"django {request.route[:10]} -> {resp.status_code}")
    # The adapter answers a malformed call before checking the secret (it does not pass
    # the headers to app.reject), so "no secret ⇒ 403" is asserted for parsed calls only.
    check_reply(
        request,
        resp.status_code,
        resp.content,
        dict(resp.headers),
        secret_checked=False,
        framework_statuses=frozenset({404, 405}),
    )
    if not request.secret_ok and resp.status_code not in (400, 404, 405, 413):
        assert resp.status_code == 403
    if resp.status_code >= 400:
        check_unchanged(
            before,
            _django_state(),
            presented_token_hash=hash_token(token) if request.token_presented else None,
        )


@pytest.mark.django_db
@EXAMPLES
@given(body=TOKEN_BODIES, origin=TOKEN_ORIGINS)
def test_django_token_endpoint_never_5xx(django_env, body, origin):
    from apigw_ws_storage.django_orm.models import RateLimitCounter

    RateLimitCounter.objects.all().delete()
    client = django_env["client"]
    client.force_login(django_env["user"])
    content_type, raw = body
    headers = {"Origin": origin} if origin else {}
    resp = client.post("/ws-token/", data=raw, content_type=content_type, headers=headers)
    event(f"django token -> {resp.status_code}")
    check_token_reply(resp.status_code, resp.content)


# --- Flask --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flask_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.sqla.dbs import Database

    db = Database(
        "sqlite", f"sqlite:///{Path(tmp_path_factory.mktemp('sec-flask')) / 'db.sqlite3'}"
    )
    yield db
    db.close()


@pytest.fixture
def flask_env(flask_db: Any) -> Iterator[dict[str, Any]]:
    from flask import Flask

    from apigw_ws_flask import ApigwWebSocket

    secret = "flask-gateway-secret-0123456789"
    origin = "https://flask.example.com"
    app = Flask("apigw_ws_security_props")
    app.config.update(
        TESTING=True,
        SECRET_KEY="k",
        APIGW_WS_SECRET=secret,
        APIGW_WS_ALLOWED_ORIGINS=[origin],
        APIGW_WS_ENABLE_SUBSCRIBE=True,
        APIGW_WS_TOKEN_CSRF=False,
    )
    transport = RecordingTransport()
    ws = ApigwWebSocket(storage=flask_db.storage, transport=transport)

    @ws.handler("echo")
    def echo(ctx: Any, message: dict[str, Any]) -> Any:
        return message

    @ws.handler("chat_message")
    def chat(ctx: Any, message: dict[str, Any]) -> Any:
        ctx.send({"type": "chat", "text": message.get("text")}, channel=ctx.session.channel_name)

    @ws.current_user_loader
    def current_user() -> Any:
        from flask import request

        return request.headers.get("X-Test-User")

    ws.init_app(app)
    with app.test_client() as client:
        yield {
            "db": flask_db,
            "core": app.extensions["apigw_ws"].core,
            "client": client,
            "secret": secret,
            "origin": origin,
        }


def _flask_state(db: Any) -> dict[str, Any]:
    from sqlalchemy import select

    m = db.models
    with db.engine.connect() as conn:
        return {
            "sessions": {r.connection_id: tuple(r) for r in conn.execute(select(m.session_table))},
            "subs": sorted(tuple(map(str, r)) for r in conn.execute(select(m.subscription_table))),
            "tokens": set(conn.execute(select(m.token_table.c.token_hash)).scalars()),
        }


def _flask_reset(env: dict[str, Any]) -> str:
    env["db"].empty()
    core = env["core"]
    live, _ = core.issue_token("7")
    headers = gateway_headers("connect", LIVE_CID, secret=env["secret"], origin=env["origin"])
    resp = env["client"].post(f"/ws/connect?ws_token={live}", headers=headers)
    assert resp.status_code == 200, resp.get_data()
    token, _ = core.issue_token("7")
    return token


@EXAMPLES
@given(data=st.data())
def test_flask_adapter_never_5xx_and_rejections_change_nothing(flask_env, data):
    token = _flask_reset(flask_env)
    request: HostileRequest = data.draw(
        hostile_requests(secret=flask_env["secret"], token=token, origin=flask_env["origin"])
    )
    before = _flask_state(flask_env["db"])
    resp = flask_env["client"].open(
        f"/ws/{quote(request.route, safe='')}",
        method=request.method,
        headers=list(request.headers),
        query_string=request.query,
        data=request.body,
    )
    event(f"flask {request.route[:10]} -> {resp.status_code}")
    check_reply(
        request,
        resp.status_code,
        resp.get_data(),
        dict(resp.headers),
        secret_checked=False,
        framework_statuses=frozenset({404, 405}),
    )
    if not request.secret_ok and resp.status_code not in (400, 404, 405, 413):
        assert resp.status_code == 403
    if resp.status_code >= 400 and resp.status_code not in (404, 405):
        check_unchanged(
            before,
            _flask_state(flask_env["db"]),
            presented_token_hash=hash_token(token) if request.token_presented else None,
        )


@EXAMPLES
@given(body=TOKEN_BODIES, origin=TOKEN_ORIGINS, user=st.sampled_from(["7", "7", None]))
def test_flask_token_endpoint_never_5xx(flask_env, body, origin, user):
    flask_env["db"].empty()
    content_type, raw = body
    headers = {"Content-Type": content_type}
    if origin:
        headers["Origin"] = origin
    if user:
        headers["X-Test-User"] = user
    resp = flask_env["client"].post("/ws/token", data=raw, headers=headers)
    event(f"flask token -> {resp.status_code}")
    check_token_reply(resp.status_code, resp.get_data())
