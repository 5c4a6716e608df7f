"""End to end through Django's URL resolver and middleware, with API Gateway's headers:
connect with a token, class-based handlers, replies, multicast, disconnect, and every
rejection path (with the database unchanged). Each test runs on SQLite, PostgreSQL and
MariaDB."""

from __future__ import annotations

import json
from typing import Any

from django.db import connections
from django.test.utils import CaptureQueriesContext

from apigw_ws_core.testing import new_connection_id
from apigw_ws_django import signals
from apigw_ws_django.runtime import get_app
from apigw_ws_django.testing import WebSocketTestClient
from apigw_ws_storage.django_orm import models as m
from tests.django_adapter.conftest import snapshot

ORIGIN = "https://chat.example.com"


# --- the happy path -------------------------------------------------------------------


def test_connect_message_disconnect(ws: WebSocketTestClient, users: dict[str, Any], alias: str):
    alice = users["alice"]
    conn = ws.connect(user=alice, channel="lobby")
    assert conn.response.status_code == 200, conn.response.content
    row = m.WebSocketSession.objects.using(alias).get(connection_id=conn.connection_id)
    assert row.user_id == alice.pk and row.channel_name == "lobby" and row.connected
    assert row.source_ip == "203.0.113.10" and row.stage == "test"
    assert list(row.subscriptions.values_list("channel_name", flat=True)) == ["lobby"]

    reply = conn.send({"handler": "echo", "text": "hi"})
    assert reply.status_code == 200
    assert reply.json() == {"type": "echo", "text": "hi"}

    who = conn.send({"action": "whoami"})
    assert who.json() == {
        "user": "alice",
        "request_user": "alice",
        "channel": "lobby",
        "session_user": "alice",
    }

    assert conn.disconnect().status_code == 200
    row.refresh_from_db()
    assert row.connected is False and row.disconnected_at is not None
    assert not row.subscriptions.exists()
    # $disconnect may arrive twice: still 200, nothing changes.
    assert conn.disconnect().status_code == 200
    # Messages after disconnect are refused.
    assert conn.send({"handler": "echo"}).status_code == 404


def test_push_and_multicast(ws: WebSocketTestClient, users: dict[str, Any], alias: str):
    a = ws.connect(user=users["alice"], channel="room-1")
    b = ws.connect(user=users["bob"], channel="room-1")
    c = ws.connect(user=users["bob"], channel="room-2")
    gone = ws.connect(user=users["alice"], channel="room-1")
    gone.disconnect()
    response = a.send({"handler": "chat_message", "text": "hello"})
    assert response.status_code == 200 and response.content == b""
    chat = {"type": "chat", "text": "hello", "from": str(users["alice"].pk)}
    assert a.received == [{"type": "ack", "text": "hello"}, chat]
    assert b.received == [chat]
    assert c.received == [] and gone.received == []


def test_queryset_send_message_prunes_gone_connections(
    ws: WebSocketTestClient, users: dict[str, Any], alias: str
):
    a = ws.connect(user=users["alice"], channel="news")
    b = ws.connect(user=users["bob"], channel="news")
    ws.transport.gone.add(b.connection_id)
    report = (
        m.WebSocketSession.objects.using(alias)
        .filter(channel_name="news")
        .send_message({"headline": "x"})
    )
    assert report.delivered == 1 and report.gone == (b.connection_id,)
    assert a.received == [{"headline": "x"}]
    assert not m.WebSocketSession.objects.using(alias).get(connection_id=b.connection_id).connected


def test_instance_send_message_and_in_channel(
    ws: WebSocketTestClient, users: dict[str, Any], alias: str
):
    a = ws.connect(user=users["alice"], channel="one")
    row = m.WebSocketSession.objects.using(alias).get(connection_id=a.connection_id)
    row.send_message("plain text")
    assert ws.transport.sent[-1].data == b"plain text"
    get_app().storage.subscribe(a.connection_id, "two")
    qs = m.WebSocketSession.objects.using(alias).in_channel("two")
    assert [s.connection_id for s in qs] == [a.connection_id]


def test_signals(ws: WebSocketTestClient, users: dict[str, Any]):
    seen: list[tuple[str, Any]] = []

    def on_connect(sender: Any, session: Any, request: Any, **kw: Any) -> None:
        seen.append(("connect", session.connection_id))
        assert request.path == "/ws/connect"

    def on_message(sender: Any, message: Any, **kw: Any) -> None:
        seen.append(("message", message["handler"]))

    def on_disconnect(sender: Any, connection_id: str, **kw: Any) -> None:
        seen.append(("disconnect", connection_id))

    signals.websocket_connected.connect(on_connect)
    signals.websocket_message.connect(on_message)
    signals.websocket_disconnected.connect(on_disconnect)
    try:
        conn = ws.connect(user=users["alice"])
        conn.send({"handler": "echo"})
        conn.disconnect()
        conn.disconnect()
    finally:
        signals.websocket_connected.disconnect(on_connect)
        signals.websocket_message.disconnect(on_message)
        signals.websocket_disconnected.disconnect(on_disconnect)
    cid = conn.connection_id
    assert seen == [("connect", cid), ("message", "echo"), ("disconnect", cid)]


def test_custom_route_and_legacy_connection_id_header(
    ws: WebSocketTestClient, users: dict[str, Any]
):
    conn = ws.connect(user=users["alice"], channel="x")
    # A custom route slug reaches the same pipeline.
    assert conn.send({"handler": "echo", "text": 1}, route="sendmessage").json()["text"] == 1
    # Only the legacy connectionId header (django-aws-api-gateway-websockets setups).
    response = ws.client.post(
        "/ws/default",
        json.dumps({"handler": "echo", "text": "legacy"}),
        content_type="application/json",
        headers={"connectionId": conn.connection_id, "X-Apigw-Ws-Secret": ws.secret or ""},
    )
    assert response.status_code == 200 and response.json()["text"] == "legacy"


def test_subprotocol_is_echoed(ws: WebSocketTestClient, users: dict[str, Any]):
    conn = ws.connect(user=users["alice"], headers={"Sec-WebSocket-Protocol": "chat.v1, chat.v0"})
    assert conn.response.status_code == 200
    assert conn.response["Sec-WebSocket-Protocol"] == "chat.v1"


def test_second_view_has_its_own_app_and_view_permissions(users: dict[str, Any], alias: str):
    with WebSocketTestClient(namespace="other") as other:
        assert other.prefix == "/other/"
        alice = other.connect(user=users["alice"])
        bob = other.connect(user=users["bob"])
        assert alice.send({"handler": "ping"}).status_code == 403
        assert bob.send({"handler": "ping"}).json() == {"type": "pong"}
        # ChatView's handlers do not exist on OtherView.
        assert bob.send({"handler": "echo"}).status_code == 400


def test_handler_permissions(settings: Any, ws: WebSocketTestClient, users: dict[str, Any]):
    settings.APIGW_WS = {**settings.APIGW_WS, "REQUIRE_TOKEN": False}
    anon = ws.connect()
    alice = ws.connect(user=users["alice"])
    bob = ws.connect(user=users["bob"])
    assert anon.accepted
    assert anon.send({"handler": "members_only"}).status_code == 403
    assert alice.send({"handler": "members_only"}).json() == {"ok": "yes"}
    assert alice.send({"handler": "moderate"}).status_code == 403
    assert bob.send({"handler": "moderate"}).json() == {"ok": "admin"}


# --- rejections: status, code, and nothing written ------------------------------------


def _rejected(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response.json()["error"] == code


def test_wrong_or_missing_secret_is_403(ws: WebSocketTestClient, users: dict[str, Any], alias):
    conn = ws.connect(user=users["alice"])
    before = snapshot(alias)
    token = ws.token_for(users["alice"])
    cid = new_connection_id()
    for secret in ("wrong-secret", None):
        _rejected(
            ws.post("connect", cid, query={"ws_token": token}, secret=secret), 403, "forbidden"
        )
        _rejected(
            ws.message(conn.connection_id, {"handler": "echo"}, secret=secret), 403, "forbidden"
        )
        _rejected(ws.disconnect(conn.connection_id, secret=secret), 403, "forbidden")
    assert snapshot(alias) == before  # nothing written: not even the token spent
    assert conn.send({"handler": "echo"}).status_code == 200
    assert ws.connect(token=token).accepted  # the refused calls did not burn it


def test_bad_token_is_401(ws: WebSocketTestClient, users: dict[str, Any], alias: str):
    token = ws.token_for(users["alice"])
    before = snapshot(alias)
    _rejected(ws.connect(token="not-a-real-token").response, 401, "invalid_token")
    _rejected(ws.connect().response, 401, "token_required")
    _rejected(ws.connect(token="").response, 401, "token_required")
    assert snapshot(alias) == before
    # A token works once.
    assert ws.connect(token=token).accepted
    after_use = snapshot(alias)
    _rejected(ws.connect(token=token).response, 401, "invalid_token")
    assert snapshot(alias) == after_use


def test_token_bound_to_channel(ws: WebSocketTestClient, users: dict[str, Any], alias: str):
    token = ws.token_for(users["alice"], channel="room-1")
    before = snapshot(alias)
    _rejected(ws.connect(token=token, channel="room-2").response, 401, "invalid_token")
    sessions, subs, _ = snapshot(alias)
    assert (sessions, subs) == before[:2]


def test_forbidden_channel_is_403(ws: WebSocketTestClient, users: dict[str, Any], alias: str):
    alice, bob = users["alice"], users["bob"]
    before = snapshot(alias)
    # user.<id> channels are owner-only; private-* needs AUTHORIZE_CHANNEL (unset: deny).
    _rejected(ws.connect(user=alice, channel=f"user.{bob.pk}").response, 403, "channel_forbidden")
    _rejected(ws.connect(user=alice, channel="private-x").response, 403, "channel_forbidden")
    _rejected(ws.connect(channel="presence-lobby").response, 401, "token_required")
    _rejected(ws.connect(user=alice, channel="bad channel!").response, 400, "invalid_channel")
    sessions, subs, _ = snapshot(alias)
    assert (sessions, subs) == before[:2]
    assert ws.connect(user=alice, channel=f"user.{alice.pk}").accepted


def test_origin_not_allowed_is_403(ws: WebSocketTestClient, users: dict[str, Any], alias: str):
    before = snapshot(alias)
    _rejected(
        ws.connect(user=users["alice"], origin="https://evil.example.net").response,
        403,
        "origin_not_allowed",
    )
    assert snapshot(alias)[:2] == before[:2]


def test_message_rejections(ws: WebSocketTestClient, users: dict[str, Any], alias: str):
    conn = ws.connect(user=users["alice"])
    before = snapshot(alias)
    _rejected(conn.send({"handler": "nope"}), 400, "unknown_handler")
    _rejected(conn.send({"handler": "not_a_handler"}), 400, "unknown_handler")
    _rejected(conn.send({"handler": "__init__"}), 400, "invalid_handler_name")
    _rejected(conn.send({"handler": "invoke"}), 400, "invalid_handler_name")
    _rejected(conn.send(b"{not json"), 400, "invalid_json")
    _rejected(conn.send(b"\xff\xfe"), 400, "invalid_json")
    _rejected(conn.send([1, 2]), 400, "invalid_message")
    _rejected(conn.send({"text": "no handler key"}), 400, "invalid_message")
    _rejected(conn.send(b"x" * 131073), 413, "body_too_large")
    boom = conn.send({"handler": "boom"})
    _rejected(boom, 500, "handler_failed")
    assert b"secret detail" not in boom.content
    _rejected(ws.message(new_connection_id(), {"handler": "echo"}), 404, "unknown_connection")
    _rejected(ws.message("bad id!", {"handler": "echo"}), 400, "invalid_connection_id")
    assert snapshot(alias) == before


def test_get_is_405(ws: WebSocketTestClient):
    response = ws.client.get("/ws/default", headers={"X-Apigw-Ws-Secret": ws.secret})
    _rejected(response, 405, "method_not_allowed")
    # without the secret a malformed call learns nothing about what would be accepted
    response = ws.client.get("/ws/default")
    _rejected(response, 403, "forbidden")


def test_message_rate_limit_is_429(
    settings: Any, ws: WebSocketTestClient, users: dict[str, Any], alias: str
):
    settings.APIGW_WS = {**settings.APIGW_WS, "MESSAGE_RATE_PER_CONNECTION": "3/60"}
    conn = ws.connect(user=users["alice"])
    for _ in range(3):
        assert conn.send({"handler": "echo"}).status_code == 200
    before = snapshot(alias)
    response = conn.send({"handler": "echo"})
    _rejected(response, 429, "rate_limited")
    assert 1 <= int(response["Retry-After"]) <= 61
    assert snapshot(alias) == before


def test_connect_rate_limit_is_429(settings: Any, ws: WebSocketTestClient, alias: str):
    settings.APIGW_WS = {**settings.APIGW_WS, "CONNECT_RATE_PER_IP": "2/60", "REQUIRE_TOKEN": False}
    assert ws.connect().accepted and ws.connect().accepted
    before = snapshot(alias)
    response = ws.connect().response
    _rejected(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1
    assert snapshot(alias) == before
    # Another IP is not limited.
    ws.source_ip = "198.51.100.99"
    assert ws.connect().accepted


# --- query budget ---------------------------------------------------------------------

#: What one call may cost (our code only, measured on the storage's connection).
BUDGET = {"token": 0, "connect": 5, "message": 2, "disconnect": 2}
#: Transaction control Django logs (SQLite logs BEGIN/COMMIT; savepoints everywhere).
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def _data(sql: list[str]) -> list[str]:
    return [q for q in sql if not q.upper().lstrip().startswith(_CONTROL)]


MEASURED: dict[str, dict[str, int]] = {}


def test_query_budget(ws: WebSocketTestClient, users: dict[str, Any], alias: str):
    # A query on any other database would raise: the test may only use ``alias``.

    def count(call: Any) -> tuple[Any, int, list[str]]:
        with CaptureQueriesContext(connections[alias]) as ctx:
            result = call()
        sql = [q["sql"] for q in ctx.captured_queries]
        return result, len(_data(sql)), sql

    # a token is signed, not stored: issuing it costs nothing
    token, n_token, sql = count(lambda: ws.token_for(users["alice"], channel="lobby"))
    assert n_token <= BUDGET["token"], sql
    # IP counter, spend (ledger insert), redemption counter, session, subscription
    conn, n_connect, sql = count(lambda: ws.connect(token=token, channel="lobby"))
    assert conn.accepted
    assert n_connect <= BUDGET["connect"], sql
    response, n_message, sql = count(lambda: conn.send({"handler": "echo", "text": "x"}))
    assert response.status_code == 200
    assert n_message <= BUDGET["message"], sql
    response, n_push, sql = count(lambda: conn.send({"handler": "chat_message", "text": "x"}))
    assert response.status_code == 200
    response, n_disconnect, sql = count(conn.disconnect)
    assert n_disconnect <= BUDGET["disconnect"], sql
    _, n_again, _ = count(conn.disconnect)
    assert n_again <= 1
    MEASURED[alias] = {
        "token": n_token,
        "connect": n_connect,
        "message": n_message,
        "message+multicast": n_push,
        "disconnect": n_disconnect,
        "disconnect again": n_again,
    }
    print(f"\nqueries on {alias}: {MEASURED[alias]}")


def test_endpoints_never_run_in_atomic_requests(
    ws: WebSocketTestClient, users: dict[str, Any], alias: str, monkeypatch: Any
):
    """ATOMIC_REQUESTS=True must not wrap the gateway endpoints (no BEGIN/SAVEPOINT)."""
    monkeypatch.setitem(connections[alias].settings_dict, "ATOMIC_REQUESTS", True)
    token = ws.token_for(users["alice"])
    with CaptureQueriesContext(connections[alias]) as ctx:
        conn = ws.connect(token=token)
        conn.send({"handler": "echo"})
        conn.disconnect()
    assert conn.accepted
    sql = [q["sql"].upper() for q in ctx.captured_queries]
    # connect 5 (IP counter, spent token, redemption counter, session, subscription) in
    # ONE transaction of its own, message 1 (the session: the message limit counts in
    # process by default), disconnect 2
    assert len(_data(sql)) == 8, sql
    assert sum(q.startswith("BEGIN") for q in sql) <= 1  # only SQLite logs its BEGIN
    # the request is not wrapped: the only savepoint is MariaDB's around the session insert
    savepoints = [q for q in sql if q.startswith("SAVEPOINT")]
    assert len(savepoints) == (1 if connections[alias].vendor == "mysql" else 0), sql
