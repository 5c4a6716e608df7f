"""The Flask adapter end to end through Flask's test client with API Gateway's headers, on
SQLite, PostgreSQL and MariaDB: connect, handlers, replies, multicast, disconnect, every
rejection path (with the database unchanged), and database round trips per event."""

from __future__ import annotations

import json
import threading

from apigw_ws_core.testing import gateway_headers, new_connection_id
from tests.flask_adapter.conftest import Gateway, build_app, snapshot
from tests.sqla.dbs import Database


def test_connect_with_token_creates_session(env, db: Database):
    _app, _ws, _transport, gw = env
    cid, resp = gw.connect(user="7", channel="room")
    assert resp.status_code == 200
    session = db.storage.get_session(cid)
    assert session is not None and session.connected
    assert session.user_id == "7" and session.channel_name == "room"
    assert session.source_ip == "203.0.113.10" and session.stage == "test"
    assert db.storage.channels_of(cid) == ["room"]


def test_connect_echoes_subprotocol(env):
    _app, _ws, _transport, gw = env
    token = gw.token("1")
    resp = gw.post(
        "connect",
        new_connection_id(),
        query=f"ws_token={token}",
        extra={"Sec-WebSocket-Protocol": "apigw-ws, other"},
    )
    assert resp.status_code == 200
    assert resp.headers["Sec-WebSocket-Protocol"] == "apigw-ws"


def test_handler_return_value_is_the_reply(env):
    _app, _ws, _transport, gw = env
    cid, _ = gw.connect(user="5")
    resp = gw.send(cid, {"handler": "echo", "text": "hi"})
    assert resp.status_code == 200
    assert resp.get_json() == {"type": "echo", "text": "hi", "user": {"id": "5"}}


def test_ctx_reply_pushes_to_the_connection(env):
    _app, _ws, transport, gw = env
    cid, _ = gw.connect()
    resp = gw.send(cid, {"action": "ping"})
    assert resp.status_code == 200 and resp.get_data() == b""
    assert transport.messages_for(cid) == [{"type": "pong"}]


def test_channel_multicast(env):
    _app, _ws, transport, gw = env
    members = [gw.connect(user=str(i), channel="room")[0] for i in range(3)]
    outsider, _ = gw.connect(user="9", channel="other")
    resp = gw.send(members[0], {"handler": "shout", "text": "hello", "room": "room"})
    assert resp.get_json() == {"delivered": 3}
    assert sorted(m.connection_id for m in transport.sent) == sorted(members)
    assert transport.messages_for(outsider) == []
    assert all(m.json() == {"type": "shout", "text": "hello"} for m in transport.sent)


def test_ws_send_targets(env):
    app, ws, transport, gw = env
    a, _ = gw.connect(user="1", channel="room")
    b, _ = gw.connect(user="2", channel="room")

    class User:
        def get_id(self):
            return "2"

    with app.app_context():
        assert ws.send({"n": 1}, user=User()).delivered == 1
        assert ws.send({"n": 2}, everyone=True).delivered == 2
        assert ws.send({"n": 3}, connection_id=a).delivered == 1
        assert ws.presence("room").user_ids == frozenset({"1", "2"})
    assert transport.messages_for(b) == [{"n": 1}, {"n": 2}]
    assert transport.messages_for(a) == [{"n": 2}, {"n": 3}]


def test_send_in_background_runs_in_app_context(env):
    import flask

    app, ws, transport, gw = env
    cid, _ = gw.connect(channel="room")
    seen: list[tuple[str | None, str]] = []
    storage = ws.core.storage
    iter_ids = storage.iter_connection_ids

    def recording_iter(**kw):  # storage work (e.g. Flask-SQLAlchemy) needs the app context
        seen.append(
            (
                flask.current_app.name if flask.has_app_context() else None,
                threading.current_thread().name,
            )
        )
        return iter_ids(**kw)

    storage.iter_connection_ids = recording_iter
    try:
        with app.app_context():
            report = ws.send_in_background({"bg": True}, channel="room").result(10)
    finally:
        del storage.iter_connection_ids
    assert report.delivered == 1 and transport.messages_for(cid) == [{"bg": True}]
    [(app_name, thread)] = seen
    assert app_name == app.name  # the job ran inside this app's context ...
    assert thread != threading.current_thread().name  # ... on a background thread


def test_gone_connections_are_marked_disconnected(env, db: Database):
    app, ws, transport, gw = env
    _a, _ = gw.connect(channel="room")
    b, _ = gw.connect(channel="room")
    transport.gone.add(b)
    with app.app_context():
        report = ws.send({"x": 1}, channel="room")
    assert report.delivered == 1 and report.gone == (b,) and report.marked_disconnected == 1
    assert db.storage.get_session(b).connected is False


def test_disconnect_twice(env, db: Database):
    _app, ws, _transport, gw = env
    seen = []
    ws.on_disconnect(lambda cid, event: seen.append(cid))
    cid, _ = gw.connect()
    assert gw.post("disconnect", cid).status_code == 200
    assert gw.post("disconnect", cid).status_code == 200
    assert seen == [cid]
    session = db.storage.get_session(cid)
    assert session is not None and not session.connected and session.disconnected_at
    assert db.storage.channels_of(cid) == []
    assert gw.send(cid, {"handler": "echo"}).status_code == 404


# --- rejections: right status, stable code, nothing written -------------------------


def _error(resp) -> str:
    return resp.get_json()["error"]


def test_wrong_secret_is_403_and_writes_nothing(env, db: Database):
    _app, _ws, _transport, gw = env
    cid, _ = gw.connect()
    token = gw.token("1")
    before = snapshot(db, counters=True)
    for route, body, query in [
        ("connect", b"", f"ws_token={token}"),
        ("default", b'{"handler": "echo"}', ""),
        ("disconnect", b"", ""),
    ]:
        resp = gw.post(route, cid, body, query=query, secret="wrong")
        assert resp.status_code == 403 and _error(resp) == "forbidden"
        resp = gw.post(route, cid, body, query=query, secret=None)
        assert resp.status_code == 403
    assert snapshot(db, counters=True) == before


def test_bad_token_is_401(env, db: Database):
    _app, _ws, _transport, gw = env
    before = snapshot(db)
    resp = gw.post("connect", new_connection_id(), query="channel=room&ws_token=not-a-token")
    assert resp.status_code == 401 and _error(resp) == "invalid_token"
    resp = gw.post("connect", new_connection_id(), query="channel=room")
    assert resp.status_code == 401 and _error(resp) == "token_required"
    assert snapshot(db) == before


def test_used_token_is_401(env, db: Database):
    _app, _ws, _transport, gw = env
    token = gw.token("1")
    assert gw.post("connect", new_connection_id(), query=f"ws_token={token}").status_code == 200
    before = snapshot(db)
    resp = gw.post("connect", new_connection_id(), query=f"ws_token={token}")
    assert resp.status_code == 401 and _error(resp) == "invalid_token"
    assert snapshot(db) == before


def test_forbidden_channel_is_403(env, db: Database):
    _app, _ws, _transport, gw = env
    token = gw.token("1")
    before = snapshot(db)
    resp = gw.post("connect", new_connection_id(), query=f"channel=user.2&ws_token={token}")
    assert resp.status_code == 403 and _error(resp) == "channel_forbidden"
    after = snapshot(db)
    # The token is spent (single use, even on failure: its digest is in the spent-token
    # ledger); no session or membership appeared.
    token_table = db.models.token_table.name
    assert len(after.pop(token_table)) == len(before.pop(token_table)) + 1
    assert after == before
    resp = gw.post("connect", new_connection_id(), query=f"channel=room&ws_token={token}")
    assert resp.status_code == 401 and _error(resp) == "invalid_token"


def test_unknown_handler_and_malformed_json_are_400(env, db: Database):
    _app, _ws, transport, gw = env
    cid, _ = gw.connect()
    before = snapshot(db)
    cases = [
        ({"handler": "nope"}, "unknown_handler"),
        ({"handler": "_private"}, "invalid_handler_name"),
        ({"text": "no handler key"}, "invalid_message"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_message"),
        (b"\xff\xfe", "invalid_json"),
    ]
    for message, code in cases:
        resp = gw.send(cid, message)
        assert resp.status_code == 400, (message, resp.get_json())
        assert _error(resp) == code
    assert snapshot(db) == before
    assert transport.sent == []


def test_body_too_large_is_413(env, db: Database):
    _app, _ws, _transport, gw = env
    cid, _ = gw.connect()
    before = snapshot(db, counters=True)
    body = json.dumps({"handler": "echo", "text": "x" * 131072}).encode()
    resp = gw.send(cid, body)
    assert resp.status_code == 413 and _error(resp) == "body_too_large"
    assert snapshot(db, counters=True) == before


def test_message_rate_limit_is_429_with_retry_after(db: Database):
    app, _ws, _transport = build_app(db, APIGW_WS_MESSAGE_RATE_PER_CONNECTION="2/60")
    with app.test_client() as client:
        gw = Gateway(client)
        cid, _ = gw.connect()
        assert gw.send(cid, {"handler": "echo"}).status_code == 200
        assert gw.send(cid, {"handler": "echo"}).status_code == 200
        before = snapshot(db)
        resp = gw.send(cid, {"handler": "echo"})
        assert resp.status_code == 429 and _error(resp) == "rate_limited"
        assert 1 <= int(resp.headers["Retry-After"]) <= 61
        assert snapshot(db) == before


def test_connect_rate_limit_is_429(db: Database):
    app, _ws, _transport = build_app(db, APIGW_WS_CONNECT_RATE_PER_IP="1/60")
    with app.test_client() as client:
        gw = Gateway(client)
        assert gw.connect()[1].status_code == 200
        token = gw.token("1")
        before = snapshot(db)
        resp = gw.post("connect", new_connection_id(), query=f"ws_token={token}")
        assert resp.status_code == 429 and "Retry-After" in resp.headers
        assert snapshot(db) == before  # the token was not spent


def test_malformed_gateway_calls(env, db: Database):
    _app, _ws, _transport, gw = env
    before = snapshot(db, counters=True)
    resp = gw.client.post("/ws/default", data=b"{}", headers={"X-Apigw-Ws-Secret": gw.secret})
    assert resp.status_code == 400 and _error(resp) == "invalid_connection_id"
    # without the secret, a malformed call learns nothing about what would be accepted
    resp = gw.client.post("/ws/default", data=b"{}", headers={"X-Apigw-Ws-Secret": "x"})
    assert resp.status_code == 403 and _error(resp) == "forbidden"
    resp = gw.post("connect", new_connection_id(), extra={"X-Apigw-Ws-Event-Type": "MESSAGE"})
    assert resp.status_code == 400
    assert gw.client.get("/ws/connect").status_code == 403  # secret first
    resp = gw.client.get("/ws/connect", headers={"X-Apigw-Ws-Secret": gw.secret})
    assert resp.status_code == 405 and _error(resp) == "method_not_allowed"
    assert snapshot(db, counters=True) == before


# --- database round trips ------------------------------------------------------------


def test_round_trips_per_event(env, db: Database, record_property):
    _app, _ws, _transport, gw = env
    with db.count_statements() as issue:
        token = gw.token("1")
    assert issue == []  # a token is signed, not stored
    cid = new_connection_id()
    with db.count_statements() as connect:
        assert gw.post("connect", cid, query=f"channel=room&ws_token={token}").status_code == 200
    with db.count_statements() as message:
        assert gw.send(cid, {"handler": "ping"}).status_code == 200
    with db.count_statements() as disconnect:
        assert gw.post("disconnect", cid).status_code == 200
    counts = {"connect": len(connect), "message": len(message), "disconnect": len(disconnect)}
    record_property("round_trips", counts)
    print(f"\n{db.name} round trips: {counts}")
    # one transaction: IP count, spent token (ledger insert), redemption count
    # (token_rate_per_user), session, subscriptions (MariaDB adds a SAVEPOINT/RELEASE pair
    # around the session insert; PostgreSQL and SQLite use ON CONFLICT DO NOTHING instead)
    data = [q for q in connect if not str(q).upper().lstrip().startswith(("SAVEPOINT", "RELEASE"))]
    assert len(data) <= 5, connect
    assert counts["message"] <= 2, message
    assert counts["disconnect"] <= 2, disconnect


def test_chunked_bodies_are_read_bounded(env, db: Database):
    """A body without Content-Length (chunked) is read at most limit + 1 bytes: 413, not
    held in memory; a small chunked message still works."""
    import io

    _app, _ws, _transport, gw = env
    cid = new_connection_id()
    assert gw.post("connect", cid, query=f"ws_token={gw.token('1')}").status_code == 200
    headers = gateway_headers("default", cid, secret=gw.secret)
    headers["Transfer-Encoding"] = "chunked"
    big = io.BytesIO(b"x" * 1_000_000)
    # as werkzeug's server marks a chunked request: the input ends where the body ends
    terminated = {"wsgi.input_terminated": True}
    resp = gw.client.post(
        "/ws/default", input_stream=big, headers=headers, environ_overrides=terminated
    )
    assert resp.status_code == 413 and _error(resp) == "body_too_large"
    assert big.tell() <= 131073  # never read past the limit
    small = io.BytesIO(b'{"handler": "ping"}')
    resp = gw.client.post(
        "/ws/default", input_stream=small, headers=headers, environ_overrides=terminated
    )
    assert resp.status_code == 200
