"""Through the local gateway with a real WebSocket client: client → local gateway →
Django (pytest-django's live server) → ORM storage, and back through the Management API
(the real ``ManagementApiTransport`` built from ``MANAGEMENT_ENDPOINT``). On SQLite,
PostgreSQL and MariaDB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from apigw_ws_django.runtime import get_app
from apigw_ws_storage.django_orm import models as m

pytest.importorskip("aiohttp")
websockets_sync = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from apigw_ws_core.local.config import config_from_backend  # noqa: E402
from apigw_ws_core.local.testing import LocalGateway, wait_until  # noqa: E402

ORIGIN = "https://chat.example.com"


@pytest.fixture
def gateway(
    alias: str, live_server: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalGateway]:
    secret = settings.APIGW_WS["SECRET"]
    api = config_from_backend(f"{live_server.url}/ws/", secret=secret, routes=["sendmessage"])
    with LocalGateway(api) as gw:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
        settings.APIGW_WS = {
            **{k: v for k, v in settings.APIGW_WS.items() if k != "TRANSPORT"},
            "MANAGEMENT_ENDPOINT": gw.management_endpoint,
        }
        yield gw


def _recv(conn: Any) -> Any:
    return json.loads(conn.recv(timeout=10))


def test_chat_through_the_local_gateway(gateway: LocalGateway, users: dict[str, Any], alias: str):
    app = get_app()
    url = f"{gateway.ws_url}?channel=lobby&ws_token="
    alice_token, _ = app.issue_token(users["alice"].pk)
    bob_token, _ = app.issue_token(users["bob"].pk)
    with (
        websockets_sync.connect(url + alice_token, origin=ORIGIN, open_timeout=10) as alice,
        websockets_sync.connect(url + bob_token, origin=ORIGIN, open_timeout=10) as bob,
    ):
        rows = m.WebSocketSession.objects.using(alias).filter(connected=True)
        assert {r.user_id for r in rows} == {users["alice"].pk, users["bob"].pk}
        assert all(r.connection_id in gateway.connection_ids() for r in rows)

        # A two-way route: the handler's return value is the reply.
        alice.send(json.dumps({"handler": "echo", "text": "hi"}))
        assert _recv(alice) == {"type": "echo", "text": "hi"}

        # Pushes through the Management API: to the sender, then to the whole room.
        alice.send(json.dumps({"handler": "chat_message", "text": "hello"}))
        chat = {"type": "chat", "text": "hello", "from": str(users["alice"].pk)}
        assert [_recv(alice), _recv(alice)] == [{"type": "ack", "text": "hello"}, chat]
        assert _recv(bob) == chat

        # A custom route key selected by "action".
        bob.send(json.dumps({"action": "sendmessage", "handler": "whoami"}))
        assert _recv(bob) == {
            "user": "bob",
            "request_user": "bob",
            "channel": "lobby",
            "session_user": "bob",
        }

        # Errors come back as the reply.
        bob.send(json.dumps({"handler": "nope"}))
        assert _recv(bob)["error"] == "unknown_handler"

        alice_id = rows.get(user=users["alice"]).connection_id
    # Closing the sockets fires $disconnect (the UPDATE, then the DELETE of subscriptions).
    wait_until(
        lambda: not m.WebSocketSession.objects.using(alias).filter(connected=True).exists()
        and not m.WebSocketSubscription.objects.using(alias).exists(),
        timeout=10,
    )
    assert m.WebSocketSession.objects.using(alias).get(connection_id=alice_id).disconnected_at


def test_handshake_rejections(gateway: LocalGateway, users: dict[str, Any], alias: str):
    def status(url: str, **kwargs: Any) -> int:
        with pytest.raises(InvalidStatus) as info:
            websockets_sync.connect(url, open_timeout=10, **kwargs)
        return int(info.value.response.status_code)

    token, _ = get_app().issue_token(users["alice"].pk)
    assert status(f"{gateway.ws_url}?ws_token=nope", origin=ORIGIN) == 401
    assert status(f"{gateway.ws_url}", origin=ORIGIN) == 401
    assert status(f"{gateway.ws_url}?ws_token={token}", origin="https://evil.example") == 403
    assert status(f"{gateway.ws_url}?ws_token={token}&channel=private-x", origin=ORIGIN) == 403
    assert not m.WebSocketSession.objects.using(alias).exists()


def test_server_side_disconnect(gateway: LocalGateway, users: dict[str, Any], alias: str):
    token, _ = get_app().issue_token(users["alice"].pk)
    with websockets_sync.connect(
        f"{gateway.ws_url}?ws_token={token}", origin=ORIGIN, open_timeout=10
    ) as conn:
        cid = wait_until(lambda: gateway.connection_ids()[0] if gateway.connection_ids() else None)
        row = m.WebSocketSession.objects.using(alias).get(connection_id=cid)
        report = row.send_message({"hello": "you"})
        assert report.delivered == 1 and _recv(conn) == {"hello": "you"}
        assert get_app().disconnect(cid) is True
        with pytest.raises(ConnectionClosed):  # the gateway closed the socket
            conn.recv(timeout=10)
    assert not m.WebSocketSession.objects.using(alias).get(connection_id=cid).connected


def test_token_in_the_subprotocol_through_the_local_gateway(
    gateway: LocalGateway, users: dict[str, Any]
):
    """Issue 17 item 5 through Django: see ``tests/security/test_token_subprotocol.py``."""
    from tests.security.test_token_subprotocol import check_through_gateway

    check_through_gateway(get_app(), gateway, user=users["alice"].pk, origin=ORIGIN, ping=False)
