"""Property tests for the framework-free entry points: hostile requests through the plain
WSGI app (werkzeug's test client, i.e. a real WSGI environ) and hostile event dicts through
the Lambda handler. Never a 5xx; every call without the secret is 403; a rejected call
leaves sessions, subscriptions and tokens as they were (counters may change by design)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from apigw_ws_core import MemoryStorage, WebSocketApp
from apigw_ws_core.aws_lambda import make_handler
from apigw_ws_core.testing import lambda_event
from apigw_ws_core.tokens import hash_token
from apigw_ws_core.wsgi import make_wsgi_app

from .strategies import (
    ALLOWED_ORIGIN,
    BODIES,
    CHANNELS,
    JSON_VALUES,
    LIVE_CID,
    STABLE_CODES,
    HostileRequest,
    check_reply,
    check_unchanged,
    hostile_requests,
)
from .support import SECRET, connect, make_app

CONFIGS = st.sampled_from(
    [
        {"allowed_origins": [ALLOWED_ORIGIN], "enable_subscribe": True},
        {"require_token": False, "enable_subscribe": True, "message_rate_per_connection": "3/60"},
        {"require_token": False, "connect_rate_per_ip": "2/60", "allowed_stages": ["test"]},
    ]
)


def prepared_app(config: dict[str, Any]) -> tuple[WebSocketApp, str]:
    """An app with one live connection (``LIVE_CID``, user 7) and one unused token."""
    app = make_app(**config)
    live_token, _ = app.issue_token("7")
    reply, _ = connect(app, LIVE_CID, query=f"ws_token={live_token}", origin=ALLOWED_ORIGIN)
    assert reply.status == 200
    token, _ = app.issue_token("7")
    return app, token


def memory_state(storage: MemoryStorage) -> dict[str, Any]:
    """Sessions, subscriptions and token hashes, comparable across calls."""
    with storage._lock:
        return {
            "sessions": dict(storage.sessions),
            "subs": {cid: sorted(subs) for cid, subs in storage.subscriptions.items()},
            "tokens": set(storage.tokens),
        }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=CONFIGS, data=st.data())
def test_wsgi_never_5xx_and_rejections_change_nothing(config, data):
    app, token = prepared_app(config)
    client = Client(make_wsgi_app(app, prefix="/ws"))
    request: HostileRequest = data.draw(hostile_requests(secret=SECRET, token=token))
    before = memory_state(app.storage)
    resp = client.open(
        f"/ws/{quote(request.route, safe='')}",
        method=request.method,
        headers=list(request.headers),
        query_string=request.query,
        data=request.body,
    )
    body = resp.get_data()
    event(
        f"{request.route if request.route in ('connect', 'default') else 'other'} "
        f"-> {resp.status_code} {json.loads(body)['error'] if resp.status_code >= 400 else ''}"
    )
    check_reply(request, resp.status_code, body, dict(resp.headers))
    if resp.status_code >= 400:
        check_unchanged(
            before,
            memory_state(app.storage),
            presented_token_hash=hash_token(token) if request.token_presented else None,
        )
    assert app.transport.sent == [] or resp.status_code == 200


# --- Lambda -------------------------------------------------------------------------------

EVENT_TYPES = st.sampled_from(["CONNECT", "MESSAGE", "DISCONNECT"])


@st.composite
def lambda_events(draw: st.DrawFn, token: str) -> Any:
    """Plausible API Gateway events with random mutations, or arbitrary JSON."""
    if draw(st.integers(0, 5)) == 0:
        return draw(JSON_VALUES)
    kind = draw(EVENT_TYPES)
    cid = draw(st.sampled_from([LIVE_CID, "NewConnBBBBBBB0="]) | st.text(max_size=20))
    query = draw(
        st.dictionaries(
            st.sampled_from(["channel", "ws_token", "x"]),
            CHANNELS | st.sampled_from([token, token + "x"]) | st.text(max_size=10),
            max_size=3,
        )
    )
    headers = draw(
        st.dictionaries(
            st.sampled_from(["Origin", "Sec-WebSocket-Protocol", "User-Agent", "X-Forwarded-For"]),
            st.sampled_from([ALLOWED_ORIGIN]) | st.text(max_size=30),
            max_size=3,
        )
    )
    body = draw(BODIES).decode("utf-8", "surrogateescape")
    event = lambda_event(
        kind,
        cid if isinstance(cid, str) else LIVE_CID,
        body=body,
        query=query or None,
        headers=headers,
        stage=draw(st.sampled_from(["test", "prod", ""])),
    )
    for path, value in draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        ("requestContext", "eventType"),
                        ("requestContext", "connectionId"),
                        ("requestContext", "identity"),
                        ("requestContext", "routeKey"),
                        ("body",),
                        ("isBase64Encoded",),
                        ("headers",),
                        ("queryStringParameters",),
                        ("multiValueQueryStringParameters",),
                        ("requestContext",),
                    ]
                ),
                JSON_VALUES,
            ),
            max_size=2,
        )
    ):
        target = event
        for key in path[:-1]:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target[path[-1]] = value
    return event


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=CONFIGS, data=st.data())
def test_lambda_never_5xx_and_rejections_change_nothing(config, data):
    app, token = prepared_app(config)
    handler = make_handler(app)
    lambda_ev = data.draw(lambda_events(token))
    before = memory_state(app.storage)
    result = handler(lambda_ev, None)
    status = result["statusCode"]
    event(f"{status} {json.loads(result['body'])['error'] if status >= 400 else ''}")
    assert status < 500, result
    for value in result["headers"].values():
        assert "\r" not in value and "\n" not in value
    if status >= 400:
        assert json.loads(result["body"])["error"] in STABLE_CODES
        presented = token in json.dumps(lambda_ev, default=str)
        check_unchanged(
            before,
            memory_state(app.storage),
            presented_token_hash=hash_token(token) if presented else None,
        )
