"""Attacks that only a real database can answer, on PostgreSQL and MariaDB.

* Collation: MariaDB's default collations fold case, so ``USER.7`` could equal ``user.7``
  in a ``WHERE``. Channel names and connection ids must compare byte for byte, and the
  policy must refuse ``USER.7`` anyway.
* Encodings: PostgreSQL refuses NUL characters in text, MariaDB needs ``utf8mb4`` for
  4-byte characters, columns have lengths. Hostile header content must never turn into a
  database error (a 500 and an e-mail to the admins).
* Hostile requests through the plain WSGI app on the SQLAlchemy storage, as in the
  memory-storage property test, with fewer examples.
* The spent-token ledger on the server: cleanup keeps a spent token's row until its expiry
  + SPENT_GRACE (a replay is refused all along), removes it after, and the replay is still
  refused (the token is expired by then).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from apigw_ws_core import Config, WebSocketApp
from apigw_ws_core.events import from_http
from apigw_ws_core.storage import Session, Storage, Token
from apigw_ws_core.testing import RecordingTransport, gateway_headers, new_connection_id
from apigw_ws_core.tokens import SPENT_GRACE
from apigw_ws_core.wsgi import make_wsgi_app

from .strategies import (
    ALLOWED_ORIGIN,
    LIVE_CID,
    HostileRequest,
    check_reply,
    check_unchanged,
    hostile_requests,
    ledger_key,
)
from .support import SECRET, status_and_code, thread_storage


def _app(storage: Storage, **config: Any) -> WebSocketApp:
    config.setdefault("enable_subscribe", True)
    return WebSocketApp(
        storage=storage, transport=RecordingTransport(), config=Config(secret=SECRET, **config)
    )


def _connect(app: WebSocketApp, query: str = "", **kw: Any) -> tuple[int, str | None, str]:
    cid = kw.pop("cid", None) or new_connection_id()
    reply = app.handle(
        from_http("connect", gateway_headers("connect", cid, secret=SECRET, **kw), query)
    )
    status, code = status_and_code(reply)
    return status, code, cid


def _message(app: WebSocketApp, cid: str, data: Any) -> tuple[int, str | None]:
    raw = json.dumps(data).encode()
    return status_and_code(
        app.handle(from_http("default", gateway_headers("default", cid, secret=SECRET), "", raw))
    )


def channel_case_isolation(storage: Storage) -> None:
    """Byte-for-byte channel names in storage, and the policy on top."""
    app = _app(storage)
    token, _ = app.issue_token("7")
    assert _connect(app, f"channel=user.7&ws_token={token}")[0] == 200
    # the policy refuses case variants of protected channels, at connect and subscribe
    token, _ = app.issue_token("7")
    assert _connect(app, f"channel=USER.7&ws_token={token}")[:2] == (403, "channel_forbidden")
    # storage itself keeps names apart even when something bypasses the policy
    now = app.clock()
    attacker = new_connection_id()
    storage.create_session(Session(connection_id=attacker, channel_name="USER.7", connected_at=now))
    storage.subscribe(attacker, "User.7")
    for name in ("user.7", "USER.7", "User.7"):
        members = [cid for batch in storage.iter_connection_ids(channel=name) for cid in batch]
        expected = {"user.7": 1, "USER.7": 1, "User.7": 1}[name]
        assert len(members) == expected, (name, members)
    assert attacker not in [c for b in storage.iter_connection_ids(channel="user.7") for c in b]
    assert storage.presence("user.7").user_ids == frozenset({"7"})


def hostile_strings_never_reach_the_database_as_errors(storage: Storage) -> None:
    """NUL, control characters, 4-byte characters, over-long values in every header that
    ends up in a column; NUL and huge values in tokens; all answered without a 5xx."""
    app = _app(storage, require_token=False)
    nasty = "\x00\x01\x1b[31m\ud83d\ude00\U0001f600\u202e" + "é" * 300
    status, _, cid = _connect(
        app,
        "channel=lobby",
        source_ip=nasty,
        extra={"User-Agent": nasty, "X-Apigw-Ws-Stage": nasty, "X-Amzn-Apigateway-Api-Id": nasty},
    )
    assert status == 200
    stored = storage.get_session(cid)
    assert stored is not None
    assert "\x00" not in stored.user_agent and len(stored.user_agent) <= 255
    assert "\U0001f600" in stored.user_agent  # 4-byte characters survive (utf8mb4)
    assert stored.stage.startswith("[31m")
    for token in ("\x00", "abc\x00def", "\U0001f600" * 50, "x" * 257, "%00"):
        assert _connect(app, f"ws_token={quote(token)}")[0] == 401
    strict = _app(storage)
    for token in ("\x00", "t" * 256):
        assert _connect(strict, f"ws_token={quote(token)}")[:2] == (401, "invalid_token")
    # channels with NUL or 4-byte characters are refused before any query
    assert _message(app, cid, {"action": "subscribe", "channel": "a\x00b"}) == (
        400,
        "invalid_channel",
    )
    assert _message(app, cid, {"action": "subscribe", "channel": "\U0001f600"}) == (
        400,
        "invalid_channel",
    )
    assert _message(app, cid, {"action": "subscribe", "channel": "Lobby"}) == (200, None)
    assert sorted(storage.channels_of(cid)) == ["Lobby", "lobby"]


def spent_tokens_outlive_cleanup_until_expiry_and_grace(storage: Storage) -> None:
    """A replay after cleanup is still refused: cleanup keeps the ledger row until the
    token's expiry + SPENT_GRACE; once it is gone the token has long expired."""
    t0 = datetime.now(UTC).replace(microsecond=0)
    app = _app(storage, token_ttl=60)
    app.clock = lambda: t0
    token, _ = app.issue_token("7", channel="lobby")
    query = f"channel=lobby&ws_token={token}"
    assert _connect(app, query)[0] == 200
    digest = ledger_key(app.config, token)
    expiry = t0 + timedelta(seconds=60)
    for cleaned_at in (
        t0 + timedelta(seconds=30),
        expiry,
        expiry + SPENT_GRACE - timedelta(seconds=1),
    ):
        app.clock = lambda at=cleaned_at: at
        app.cleanup(heal=False)
        app.clock = lambda: t0 + timedelta(seconds=59)  # a $connect host with a slower clock
        assert _connect(app, query)[:2] == (401, "invalid_token"), cleaned_at
    app.clock = lambda: expiry + SPENT_GRACE
    assert app.cleanup(heal=False).storage.expired_tokens == 1
    assert _connect(app, query)[:2] == (401, "invalid_token")  # expired
    # the row was removed (spending it again records it anew)
    row = Token(token_hash=digest, user_id="7", created_at=t0, expires_at=expiry + SPENT_GRACE)
    assert storage.spend_token(row) is True


# --- SQLAlchemy storage ------------------------------------------------------------------


def test_sqla_spent_tokens_outlive_cleanup(sqla):
    spent_tokens_outlive_cleanup_until_expiry_and_grace(sqla.storage)


def test_sqla_channel_case_isolation(sqla):
    channel_case_isolation(sqla.storage)


def test_sqla_hostile_strings(sqla):
    hostile_strings_never_reach_the_database_as_errors(sqla.storage)


def _sqla_state(db: Any) -> dict[str, Any]:
    from sqlalchemy import select

    m = db.models
    with db.engine.connect() as conn:
        return {
            "sessions": {r.connection_id: tuple(r) for r in conn.execute(select(m.session_table))},
            "subs": sorted(tuple(map(str, r)) for r in conn.execute(select(m.subscription_table))),
            "tokens": set(conn.execute(select(m.token_table.c.token_hash)).scalars()),
        }


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_sqla_wsgi_property_on_the_server(sqla_db, data):
    sqla_db.empty()
    app = _app(sqla_db.storage, allowed_origins=[ALLOWED_ORIGIN])
    live, _ = app.issue_token("7")
    status, _, _ = _connect(app, f"ws_token={live}", cid=LIVE_CID, origin=ALLOWED_ORIGIN)
    assert status == 200
    token, _ = app.issue_token("7")
    request: HostileRequest = data.draw(hostile_requests(secret=SECRET, token=token))
    before = _sqla_state(sqla_db)
    resp = Client(make_wsgi_app(app, prefix="/ws")).open(
        f"/ws/{quote(request.route, safe='')}",
        method=request.method,
        headers=list(request.headers),
        query_string=request.query,
        data=request.body,
    )
    check_reply(request, resp.status_code, resp.get_data(), dict(resp.headers))
    if resp.status_code >= 400:
        check_unchanged(
            before,
            _sqla_state(sqla_db),
            presented_token_digest=ledger_key(app.config, token)
            if request.token_presented
            else None,
        )


# --- Django ORM storage --------------------------------------------------------------------


def test_django_spent_tokens_outlive_cleanup(django_alias):
    spent_tokens_outlive_cleanup_until_expiry_and_grace(thread_storage(django_alias))


def test_django_channel_case_isolation(django_alias):
    channel_case_isolation(thread_storage(django_alias))


def test_django_hostile_strings(django_alias):
    hostile_strings_never_reach_the_database_as_errors(thread_storage(django_alias))
