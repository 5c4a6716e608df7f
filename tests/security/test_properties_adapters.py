"""Property tests through the framework adapters: hostile gateway calls through Django's
test client (Django ORM storage) and Flask's test client (SQLAlchemy storage), both on
SQLite, plus hostile bodies for each adapter's token endpoint. The same properties run
again, with fewer examples, on PostgreSQL and MariaDB (``*_on_servers``).

Invariants: never a 5xx; every 4xx carries a stable JSON error code; a rejected call
leaves sessions and subscriptions as they were and adds nothing to the spent-token ledger
but the token it presented. The token endpoint answers 200 with a token signed with the
app's key (for the logged-in user), never a 429, and writes nothing to storage.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from apigw_ws_core.tokens import token_keys, verify_token

from .adapters_support import django_reset, django_state, flask_reset, flask_state
from .strategies import (
    JSON_VALUES,
    STABLE_CODES,
    HostileRequest,
    check_reply,
    check_unchanged,
    hostile_requests,
    ledger_key,
)

EXAMPLES = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
#: On PostgreSQL and MariaDB: the same properties, few examples (each one is a few queries
#: on a real server; the SQLite runs above explore the input space).
SERVER_EXAMPLES = settings(
    max_examples=12,
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


def check_token_reply(status: int, body: bytes, config: Any) -> None:
    """The token endpoint answers 200 with a token for user 7 signed with the app's key,
    or a stable 4xx (never 429: issuing is not limited, redeeming is)."""
    assert status < 500, body[:200]
    data = json.loads(body)
    if status == 200:
        assert isinstance(data["token"], str) and len(data["token"]) >= 22
        claims = verify_token(token_keys(config), data["token"], now=datetime.now(UTC))
        assert claims.user_id == "7"
    else:
        assert data["error"] in TOKEN_CODES, data
        assert status != 429 and data["error"] != "rate_limited", data


# --- Django -------------------------------------------------------------------------------


def django_gateway_call(django_env, data):
    token = django_reset(django_env)
    request: HostileRequest = data.draw(
        hostile_requests(secret=django_env["secret"], token=token, origin=django_env["origin"])
    )
    before = django_state()
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
            django_state(),
            presented_token_digest=ledger_key(django_env["app"].config, token)
            if request.token_presented
            else None,
        )


def django_token_call(django_env, body, origin):
    from apigw_ws_storage.django_orm.models import RateLimitCounter

    RateLimitCounter.objects.all().delete()
    client = django_env["client"]
    client.force_login(django_env["user"])
    content_type, raw = body
    headers = {"Origin": origin} if origin else {}
    before = django_state()
    resp = client.post("/ws-token/", data=raw, content_type=content_type, headers=headers)
    event(f"django token -> {resp.status_code}")
    check_token_reply(resp.status_code, resp.content, django_env["app"].config)
    assert django_state() == before  # issuing writes nothing


# --- Flask --------------------------------------------------------------------------------


def flask_gateway_call(flask_env, data):
    token = flask_reset(flask_env)
    request: HostileRequest = data.draw(
        hostile_requests(secret=flask_env["secret"], token=token, origin=flask_env["origin"])
    )
    before = flask_state(flask_env["db"])
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
    # 308: Werkzeug's redirect of a path with an empty segment (a route of "/0" is
    # "/ws//0"), answered by the router before our view runs, like its 404 and 405
    if not request.secret_ok and resp.status_code not in (308, 400, 404, 405, 413):
        assert resp.status_code == 403
    if resp.status_code >= 400 and resp.status_code not in (404, 405):
        check_unchanged(
            before,
            flask_state(flask_env["db"]),
            presented_token_digest=ledger_key(flask_env["core"].config, token)
            if request.token_presented
            else None,
        )


def flask_token_call(flask_env, body, origin, user):
    flask_env["db"].empty()
    content_type, raw = body
    headers = {"Content-Type": content_type}
    if origin:
        headers["Origin"] = origin
    if user:
        headers["X-Test-User"] = user
    before = flask_state(flask_env["db"])
    resp = flask_env["client"].post("/ws/token", data=raw, headers=headers)
    event(f"flask token -> {resp.status_code}")
    check_token_reply(resp.status_code, resp.get_data(), flask_env["core"].config)
    assert flask_state(flask_env["db"]) == before  # issuing writes nothing


# --- the tests: SQLite -------------------------------------------------------------------


@pytest.mark.django_db
@EXAMPLES
@given(data=st.data())
def test_django_adapter_never_5xx_and_rejections_change_nothing(django_env, data):
    django_gateway_call(django_env, data)


@pytest.mark.django_db
@EXAMPLES
@given(body=TOKEN_BODIES, origin=TOKEN_ORIGINS)
def test_django_token_endpoint_never_5xx(django_env, body, origin):
    django_token_call(django_env, body, origin)


@EXAMPLES
@given(data=st.data())
def test_flask_adapter_never_5xx_and_rejections_change_nothing(flask_env, data):
    flask_gateway_call(flask_env, data)


@EXAMPLES
@given(body=TOKEN_BODIES, origin=TOKEN_ORIGINS, user=st.sampled_from(["7", "7", None]))
def test_flask_token_endpoint_never_5xx(flask_env, body, origin, user):
    flask_token_call(flask_env, body, origin, user)


# --- the same on PostgreSQL and MariaDB --------------------------------------------------


@SERVER_EXAMPLES
@given(data=st.data())
def test_django_adapter_property_on_servers(django_server_env, data):
    django_gateway_call(django_server_env, data)


@SERVER_EXAMPLES
@given(body=TOKEN_BODIES, origin=TOKEN_ORIGINS)
def test_django_token_endpoint_on_servers(django_server_env, body, origin):
    django_token_call(django_server_env, body, origin)


@SERVER_EXAMPLES
@given(data=st.data())
def test_flask_adapter_property_on_servers(flask_server_env, data):
    flask_gateway_call(flask_server_env, data)


@SERVER_EXAMPLES
@given(body=TOKEN_BODIES, origin=TOKEN_ORIGINS, user=st.sampled_from(["7", "7", None]))
def test_flask_token_endpoint_on_servers(flask_server_env, body, origin, user):
    flask_token_call(flask_server_env, body, origin, user)
