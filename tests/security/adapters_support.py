"""The Django and Flask apps the adapter security tests run against (SQLite), how to reset
them to a known state (one live connection, one unused token), and how to snapshot what a
refused call must not change (``tokens``: the spent-token ledger; an unused token is signed,
not stored, so it is not in it)."""

from __future__ import annotations

from typing import Any

from apigw_ws_core.testing import gateway_headers

from .strategies import LIVE_CID

#: The Flask test app's gateway secret and allowed origin.
FLASK_SECRET = "flask-gateway-secret-0123456789"
FLASK_ORIGIN = "https://flask.example.com"


def django_state() -> dict[str, Any]:
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


def django_reset(env: dict[str, Any]) -> str:
    """Empty tables, one live connection for user 7 (its token spent), and one unused token
    (returned)."""
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


def flask_state(db: Any) -> dict[str, Any]:
    from sqlalchemy import select

    m = db.models
    with db.engine.connect() as conn:
        return {
            "sessions": {r.connection_id: tuple(r) for r in conn.execute(select(m.session_table))},
            "subs": sorted(tuple(map(str, r)) for r in conn.execute(select(m.subscription_table))),
            "tokens": set(conn.execute(select(m.token_table.c.token_hash)).scalars()),
        }


def flask_reset(env: dict[str, Any]) -> str:
    env["db"].empty()
    core = env["core"]
    live, _ = core.issue_token("7")
    headers = gateway_headers("connect", LIVE_CID, secret=env["secret"], origin=env["origin"])
    resp = env["client"].post(f"/ws/connect?ws_token={live}", headers=headers)
    assert resp.status_code == 200, resp.get_data()
    token, _ = core.issue_token("7")
    return token
